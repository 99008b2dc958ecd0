//! Reports from known scores on the real RewardBench rows of the shared data (LLMBar + HEP):
//! the sweep CSV must equal `sweep_csv` fed with accuracies computed here from the same wins.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use herd_coordinator::domain::{PlannedExample, ScoredCheckpoint, StoredReward};
use herd_coordinator::planner::examples_from_pairs;
use herd_coordinator::report::{build_report, write_eval_set_scores, write_report};
use herd_rewardbench::dataset::{load_pairs, ExampleId, PreferencePair, Prompt};
use herd_rewardbench::files::EvalSetResults;
use herd_rewardbench::pyjson::{self, PyValue};
use herd_rewardbench::sweep_csv::{read_feature_counts_dir, sweep_csv, Experiment, SweepOptions};
use herd_rewardbench::v1::{XstestWeighting, SUBSET_MAPPING};
use herd_rpc::v1::SweepSpec;
use herd_testkit::shared_path;

/// LLMBar then HEP, ids prefixed (both files number from 0).
fn real_pairs() -> Option<Vec<PreferencePair>> {
    let mut pairs: Vec<PreferencePair> = Vec::new();
    for (file, prefix) in [
        ("rewardbench-llmbar.jsonl", "llmbar"),
        ("rewardbench-hep.jsonl", "hep"),
    ] {
        let path = shared_path(&format!("data/{file}"))?;
        for mut pair in load_pairs(&path).unwrap() {
            pair.id = ExampleId::Str(format!("{prefix}-{}", pair.id));
            pairs.push(pair);
        }
    }
    Some(pairs)
}

/// The real rows only (Chat Hard and Reasoning subsets).
fn real_examples() -> Option<Vec<PlannedExample>> {
    Some(examples_from_pairs("llmbar+hep", &real_pairs()?).unwrap())
}

/// The real rows plus five synthetic pairs for every other RewardBench subset: the reference
/// CSV needs every subset of every section.
fn examples() -> Option<Vec<PlannedExample>> {
    let mut pairs = real_pairs()?;
    let present: std::collections::BTreeSet<String> =
        pairs.iter().filter_map(|p| p.subset.clone()).collect();
    for (_, subsets) in SUBSET_MAPPING.iter() {
        for subset in subsets.iter().filter(|s| !present.contains(**s)) {
            for k in 0..5 {
                pairs.push(PreferencePair {
                    id: ExampleId::Str(format!("synthetic-{subset}-{k}")),
                    prompt: Prompt::Text(format!("question {k} of {subset}")),
                    chosen: "a good answer".into(),
                    rejected: "a bad answer".into(),
                    subset: Some(subset.to_string()),
                    chosen_model: None,
                    rejected_model: None,
                });
            }
        }
    }
    Some(examples_from_pairs("llmbar+hep+synthetic", &pairs).unwrap())
}

const UUIDS: [&str; 4] = [
    "07add08aa33a4fa6a5294c7bc41ae1f9",
    "1b2c3d4e5f60718293a4b5c6d7e8f901",
    "aa00bb11cc22dd33ee44ff5566778899",
    "0123456789abcdef0123456789abcdef",
];
const BUDGETS: [u32; 4] = [4026, 120, 9000, 77];

fn name(i: usize) -> String {
    format!(
        "rm-eval-helpsteer2-counts-tulu2_13b_rm_human_datamodel_counts_7000_ID__{}__SWAPS_{}",
        UUIDS[i], BUDGETS[i]
    )
}

/// Deterministic scores: checkpoint `c` wins roughly a fraction that depends on `c` and the row.
fn scores(c: usize, index: u32) -> (f64, f64) {
    let x = (index as u64 * 2654435761 + c as u64 * 40503) % 1000;
    let chosen = x as f64 / 100.0;
    let rejected = ((c as u64 + 3) * 97 + index as u64 * 31) as f64 % 10.0;
    (chosen, rejected)
}

fn scored(c: usize, examples: &[PlannedExample], nan_every: Option<u32>) -> ScoredCheckpoint {
    ScoredCheckpoint {
        name: name(c),
        uri: format!("gs://bucket/ckpt{c}/streaming_params_1"),
        model_type: "Seq. Classifier".into(),
        chat_template: "tulu".into(),
        // one checkpoint of a `[batch]` pipeline: its eval-set-scores file holds floats
        scalar_output: c == 1,
        texts: Some(
            examples
                .iter()
                .map(|e| {
                    vec![
                        Arc::from(format!("chosen {}", e.index)),
                        Arc::from(format!("rejected {}", e.index)),
                    ]
                })
                .collect(),
        ),
        rewards: examples
            .iter()
            .map(|e| {
                let (mut chosen, rejected) = scores(c, e.index);
                if nan_every.is_some_and(|n| e.index % n == 0) {
                    chosen = if e.index % 2 == 0 {
                        f64::NAN
                    } else {
                        f64::INFINITY
                    };
                }
                StoredReward {
                    index: e.index,
                    chosen: vec![chosen],
                    rejected: vec![rejected],
                }
            })
            .collect(),
    }
}

/// Accuracies computed here: win = both finite and chosen > rejected.
fn accuracies(ckpt: &ScoredCheckpoint, examples: &[PlannedExample]) -> BTreeMap<String, f64> {
    let mut tally: BTreeMap<String, (u32, u32)> = BTreeMap::new();
    for (r, e) in ckpt.rewards.iter().zip(examples) {
        let (c, j) = (r.chosen[0], r.rejected[0]);
        let win = c.is_finite() && j.is_finite() && c > j;
        let t = tally.entry(e.subset.clone()).or_default();
        t.0 += u32::from(win);
        t.1 += 1;
    }
    tally
        .into_iter()
        .map(|(s, (w, n))| (s, w as f64 / n as f64))
        .collect()
}

fn write_features(dir: &Path, which: &[usize]) {
    for &i in which {
        let body = format!(
            "{{\n    \"bertscore::min_val=0.0|max_val=0.33\": {},\n    \"analyzer_closed_set::feature_name=languages|constraints=English\": {}\n}}",
            10 + i,
            200 + 3 * i
        );
        let file = dir.join(format!(
            "regressor_feats_ID__{}__SWAPS_{}.json",
            UUIDS[i], BUDGETS[i]
        ));
        std::fs::write(file, body).unwrap();
    }
}

fn spec(features: &Path) -> SweepSpec {
    SweepSpec {
        name: "helpsteer2".into(),
        feature_counts_dir: features.display().to_string(),
        output_csv: "helpsteer2-counts-runs.csv".into(),
        experiment_prefix: "helpsteer2-counts".into(),
        xstest_weighting: "legacy".into(),
        dataset_total_size: 10160,
        ..Default::default()
    }
}

#[test]
fn csv_matches_sweep_csv_on_independent_accuracies() {
    let Some(examples) = examples() else { return };
    assert_eq!(examples.len(), 419 + 984 + 12 * 5);
    let tmp = tempfile::tempdir().unwrap();
    let features = tmp.path().join("counts");
    std::fs::create_dir(&features).unwrap();
    // checkpoint 3 has no feature file
    write_features(&features, &[0, 1, 2]);
    let scored: Vec<ScoredCheckpoint> = vec![
        scored(0, &examples, None),
        scored(1, &examples, Some(7)),
        scored(2, &examples, None),
        scored(3, &examples, None),
    ];
    let spec = spec(&features);
    let report = build_report(&spec, &examples, &scored).unwrap();

    let experiments: Vec<Experiment> = scored
        .iter()
        .map(|s| {
            let results = EvalSetResults::new(
                s.name.clone(),
                "Seq. Classifier",
                Some("tulu".into()),
                accuracies(s, &examples),
            );
            Experiment::from_results(s.name.clone(), &results)
        })
        .collect();
    let feats = read_feature_counts_dir(&features).unwrap();
    let options = SweepOptions {
        weighting: XstestWeighting::Legacy,
        dataset_total_size: Some(10160),
        label_threshold: None,
    };
    let expected = sweep_csv(&experiments, Some(&feats), &options).unwrap();
    assert_eq!(report.csv, expected);

    let mut lines = report.csv.lines();
    let header = lines.next().unwrap();
    assert!(
        header.starts_with(
            ",model_type,chat_template,Chat,Chat Hard,Safety,Reasoning,Overall,uuid,budget,"
        ),
        "{header}"
    );
    assert!(header.contains("llmbar-natural") && header.contains("hep-rust"));
    assert!(header.ends_with(
        "bertscore::min_val=0.0|max_val=0.33,analyzer_closed_set::feature_name=languages|constraints=English"
    ));
    let rows: Vec<&str> = lines.collect();
    assert_eq!(rows.len(), 3, "the checkpoint without features is dropped");
    for row in &rows {
        assert!(row.contains(",Seq. Classifier,tulu,"), "{row}");
        assert!(!row.contains(UUIDS[3]));
    }
    // the budget is rescaled to a 7000-row dataset: int(4026 * 7000 / 10160) = 2773
    assert!(rows
        .iter()
        .any(|r| r.contains(&format!("{},2773,", UUIDS[0]))));

    // notes: the missing feature file and the non-finite scores
    assert!(
        report
            .notes
            .iter()
            .any(|n| n.contains(&name(3)) && n.contains("no feature-count file")),
        "{:?}",
        report.notes
    );
    let non_finite = examples.iter().filter(|e| e.index % 7 == 0).count();
    assert!(
        report.notes.iter().any(|n| n.starts_with(&name(1))
            && n.contains(&format!("{non_finite} of {}", examples.len()))),
        "{:?}",
        report.notes
    );
    assert_eq!(report.notes.len(), 2, "{:?}", report.notes);

    // per-checkpoint results are RewardBench's files for the model named after the experiment
    assert_eq!(report.checkpoints.len(), 4);
    for (ckpt, s) in report.checkpoints.iter().zip(&scored) {
        assert_eq!(ckpt.name, s.name);
        assert_eq!(ckpt.experiment, s.name);
        let results = EvalSetResults::new(
            s.name.clone(),
            "Seq. Classifier",
            Some("tulu".into()),
            accuracies(s, &examples),
        );
        assert_eq!(ckpt.metrics_json, results.metrics_json());
        assert_eq!(ckpt.eval_set_json, results.eval_set_json());
        assert!(ckpt
            .metrics_json
            .starts_with(&format!("{{\"model\": \"{}\"", s.name)));
    }
    // and run_rm.py's eval-set-scores/ file of each, from the stored texts: the scripts'
    // args.chat_template, the ids as the dataset typed them, one win per example (read as
    // Python reads it: the NaN scores are NaN)
    let out = tmp.path().join("out");
    let skipped = write_eval_set_scores(&out, "s", &spec, &examples, &scored).unwrap();
    assert!(skipped.is_empty(), "{skipped:?}");
    let folder = out.join("s").join("eval-set-scores");
    assert_eq!(std::fs::read_dir(&folder).unwrap().count(), 4);
    for s in &scored {
        let json = std::fs::read_to_string(folder.join(format!("{}.json", s.name))).unwrap();
        let value = pyjson::loads(&json).unwrap();
        let dict = value.as_dict().unwrap();
        let get = |key: &str| pyjson::dict_get(dict, key).unwrap().clone();
        let list = |key: &str| match get(key) {
            PyValue::List(items) => items,
            other => panic!("{key}: {other:?}"),
        };
        assert_eq!(get("model").as_str(), Some(s.name.as_str()));
        assert_eq!(get("model_type").as_str(), Some("Seq. Classifier"));
        assert_eq!(get("chat_template").as_str(), Some("tulu"));
        for column in ["text_chosen", "id", "results", "scores_rejected", "subset"] {
            assert_eq!(list(column).len(), examples.len(), "{column}");
        }
        assert_eq!(list("text_chosen")[3].as_str(), Some("chosen 3"));
        // `x` for a scalar pipeline's checkpoint, `[x]` for the others (CompleteRequest's flag)
        for column in ["scores_chosen", "scores_rejected"] {
            for value in list(column) {
                match (&value, s.scalar_output) {
                    (PyValue::Float(_), true) => {}
                    (PyValue::List(items), false) => assert_eq!(items.len(), 1, "{column}"),
                    other => panic!("{}: {column}: {other:?}", s.name),
                }
            }
        }
        let pair: PreferencePair = serde_json::from_str(&examples[3].pair_json).unwrap();
        assert_eq!(list("id")[3], PyValue::from(&pair.id));
        let wins = list("results");
        let accuracy = accuracies(s, &examples);
        let subset = &examples[0].subset;
        let in_subset: Vec<f64> = examples
            .iter()
            .zip(&wins)
            .filter(|(e, _)| &e.subset == subset)
            .map(|(_, w)| w.as_f64().unwrap())
            .collect();
        let mean = in_subset.iter().sum::<f64>() / in_subset.len() as f64;
        assert_eq!(mean, accuracy[subset]);
    }
}

#[test]
fn name_mode_keeps_every_checkpoint() {
    let Some(examples) = examples() else { return };
    let scored = vec![scored(0, &examples, None), scored(1, &examples, None)];
    let spec = SweepSpec {
        name: "local".into(),
        xstest_weighting: "current".into(),
        ..Default::default()
    };
    let report = build_report(&spec, &examples, &scored).unwrap();
    let lines: Vec<&str> = report.csv.lines().collect();
    assert_eq!(lines.len(), 3);
    assert!(
        lines[0].starts_with(",model_type,chat_template,Chat,Chat Hard,Safety,Reasoning,Overall")
    );
    assert!(lines[1..].iter().any(|l| l.starts_with(&name(0))));
    assert!(lines[1..].iter().any(|l| l.starts_with(&name(1))));
    assert!(report.notes.is_empty(), "{:?}", report.notes);
}

#[test]
fn real_rows_only_give_results_but_no_csv() {
    let Some(examples) = real_examples() else {
        return;
    };
    assert_eq!(examples.len(), 419 + 984);
    let spec = SweepSpec {
        name: "s".into(),
        ..Default::default()
    };
    let scored = vec![scored(0, &examples, None)];
    let report = build_report(&spec, &examples, &scored).unwrap();
    assert!(report.csv.is_empty());
    assert_eq!(report.checkpoints.len(), 1);
    assert!(
        report.notes.iter().any(|n| n.contains("alpacaeval-easy")),
        "{:?}",
        report.notes
    );
    let results = EvalSetResults::new(
        name(0),
        "Seq. Classifier",
        Some("tulu".into()),
        accuracies(&scored[0], &examples),
    );
    assert_eq!(report.checkpoints[0].eval_set_json, results.eval_set_json());
}

#[test]
fn errors_and_empty() {
    let Some(examples) = examples() else { return };
    let spec = SweepSpec {
        name: "s".into(),
        ..Default::default()
    };
    // nothing scored: no CSV, a note
    let report = build_report(&spec, &examples, &[]).unwrap();
    assert!(report.csv.is_empty());
    assert_eq!(report.notes.len(), 1);
    // a checkpoint with a missing reward
    let mut short = scored(0, &examples, None);
    short.rewards.pop();
    let err = build_report(&spec, &examples, &[short]).unwrap_err();
    assert!(err.to_string().contains(&name(0)), "{err}");
    // an unknown weighting
    let bad = SweepSpec {
        xstest_weighting: "newest".into(),
        ..spec.clone()
    };
    let err = build_report(&bad, &examples, &[scored(0, &examples, None)]).unwrap_err();
    assert!(err.to_string().contains("newest"), "{err}");
}

#[test]
fn write_report_files() {
    let Some(examples) = examples() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let features = tmp.path().join("counts");
    std::fs::create_dir(&features).unwrap();
    write_features(&features, &[0, 1]);
    let scored = vec![scored(0, &examples, None), scored(1, &examples, None)];
    let report = build_report(&spec(&features), &examples, &scored).unwrap();
    let root = tmp.path().join("out");
    let out = write_report(&root, "helpsteer2", &report, "helpsteer2-counts-runs.csv").unwrap();
    assert_eq!(out, root.join("helpsteer2"));
    assert_eq!(
        std::fs::read_to_string(out.join("helpsteer2-counts-runs.csv")).unwrap(),
        report.csv
    );
    for ckpt in &report.checkpoints {
        let file = format!("{}.json", ckpt.name);
        assert_eq!(
            std::fs::read_to_string(out.join("metrics").join(&file)).unwrap(),
            ckpt.metrics_json
        );
        assert_eq!(
            std::fs::read_to_string(out.join("eval-set").join(&file)).unwrap(),
            ckpt.eval_set_json
        );
    }
    // no temporary files left behind
    for dir in [out.clone(), out.join("metrics"), out.join("eval-set")] {
        for e in std::fs::read_dir(dir).unwrap() {
            let n = e.unwrap().file_name().to_string_lossy().into_owned();
            assert!(!n.starts_with('.'), "left behind: {n}");
        }
    }
    for bad in ["../x.csv", "a/b.csv", "..", "", "/abs.csv", "a\\b.csv"] {
        let err = write_report(&root, "helpsteer2", &report, bad).unwrap_err();
        assert!(err.to_string().contains("output_csv"), "{bad}: {err}");
    }
    assert!(!tmp.path().join("x.csv").exists());
    for bad in ["../escaped", "/tmp/escaped", "..", "a/b", ".hidden"] {
        let err = write_report(&root, bad, &report, "x.csv").unwrap_err();
        assert!(err.to_string().contains("[A-Za-z0-9]"), "{bad}: {err}");
    }
    assert!(!tmp.path().join("escaped").exists());
    // a link planted in the output folder is not followed out of it
    let outside = tmp.path().join("elsewhere");
    std::fs::create_dir(&outside).unwrap();
    std::os::unix::fs::symlink(&outside, root.join("linked")).unwrap();
    let err = write_report(&root, "linked", &report, "x.csv").unwrap_err();
    assert!(
        err.to_string().contains("outside the output folder"),
        "{err}"
    );
    std::fs::create_dir(root.join("inner")).unwrap();
    std::os::unix::fs::symlink(&outside, root.join("inner").join("metrics")).unwrap();
    let err = write_report(&root, "inner", &report, "x.csv").unwrap_err();
    assert!(
        err.to_string().contains("outside the output folder"),
        "{err}"
    );
    assert_eq!(std::fs::read_dir(&outside).unwrap().count(), 0);
}

/// A RewardBench 2 sweep's report: each checkpoint's results are `v2::rb2_scores` of its
/// per-completion scores (regrouped from the stored chosen / rejected lists), the sweep-level
/// CSV is the RewardBench 2 table, and the hybrid-preferences CSV is skipped with a note.
#[test]
fn rb2_report_scores_every_completion() {
    use herd_coordinator::planner::examples_from_best_of_n;
    use herd_rewardbench::dataset::v2::BestOfNRow;
    use herd_rewardbench::v2::{rb2_scores, ScoredRow, TiesVariant, SUBSETS_V2};
    use herd_rpc::v1::Scoring;

    let mut rows = Vec::new();
    for (s, subset) in SUBSETS_V2.iter().enumerate() {
        for k in 0..3usize {
            let (id, chosen) = if *subset == "Ties" {
                // ref prompts have one correct answer, tied prompts two
                match k {
                    0 => (ExampleId::Str("ref:0".into()), 1),
                    1 => (ExampleId::Str("tied:0".into()), 2),
                    _ => (ExampleId::Str("ref:1".into()), 1),
                }
            } else {
                (ExampleId::Int((s * 10 + k) as i64), 1)
            };
            rows.push(BestOfNRow {
                id,
                prompt: Prompt::Text(format!("q{s}-{k}")),
                chosen: (0..chosen).map(|c| format!("good {c}")).collect(),
                rejected: (0..3).map(|r| format!("bad {r}")).collect(),
                num_correct: chosen,
                subset: Some(subset.to_string()),
            });
        }
    }
    let examples = examples_from_best_of_n("rb2.jsonl", &rows).unwrap();
    assert_eq!(
        examples[0].completions.map(|c| (c.chosen, c.rejected)),
        Some((1, 3))
    );
    // checkpoint c: completion j of row i scores a value that ties now and then
    let score = |c: usize, i: usize, j: usize| ((i * 7 + j * (c + 3)) % 5) as f64 * 0.25;
    let scored: Vec<ScoredCheckpoint> = (0..2)
        .map(|c| ScoredCheckpoint {
            name: format!("rb2-run-{c}"),
            uri: format!("/ckpts/run-{c}"),
            model_type: "Seq. Classifier".into(),
            chat_template: "tulu".into(),
            scalar_output: false,
            texts: None,
            rewards: rows
                .iter()
                .enumerate()
                .map(|(i, row)| {
                    let all: Vec<f64> = (0..row.total_completions())
                        .map(|j| score(c, i, j))
                        .collect();
                    StoredReward {
                        index: i as u32,
                        chosen: all[..row.chosen.len()].to_vec(),
                        rejected: all[row.chosen.len()..].to_vec(),
                    }
                })
                .collect(),
        })
        .collect();
    let spec = SweepSpec {
        name: "rb2".into(),
        scoring: Some(Scoring {
            schema: "rb2".into(),
            ..Scoring::default()
        }),
        feature_counts_dir: "/counts".into(),
        output_csv: "rb2.csv".into(),
        ..SweepSpec::default()
    };
    let report = build_report(&spec, &examples, &scored).unwrap();
    assert_eq!(report.checkpoints.len(), 2);
    let mut header = String::from(",model_type");
    let mut sorted: Vec<&str> = SUBSETS_V2.to_vec();
    sorted.sort();
    for subset in &sorted {
        header.push(',');
        header.push_str(subset);
    }
    header.push_str(",score");
    let mut lines = report.csv.lines();
    assert_eq!(lines.next(), Some(header.as_str()));
    for (c, ckpt) in scored.iter().enumerate() {
        let expected = rb2_scores(
            &rows
                .iter()
                .enumerate()
                .map(|(i, row)| ScoredRow {
                    id: row.id.clone(),
                    subset: row.subset.clone().unwrap(),
                    num_correct: row.num_correct,
                    scores: (0..row.total_completions())
                        .map(|j| score(c, i, j))
                        .collect(),
                })
                .collect::<Vec<_>>(),
            TiesVariant::Head,
        )
        .unwrap();
        let result = &report.checkpoints[c];
        assert_eq!(result.name, ckpt.name);
        let metrics: serde_json::Map<String, serde_json::Value> =
            serde_json::from_str(&result.metrics_json).unwrap();
        let subsets: BTreeMap<String, f64> = metrics
            .iter()
            .filter_map(|(k, v)| Some((k.clone(), v.as_f64()?)))
            .collect();
        assert_eq!(subsets, expected.subsets, "{}", result.metrics_json);
        assert_eq!(metrics["model"], serde_json::json!(ckpt.name));
        let line = lines.next().unwrap();
        assert!(
            line.starts_with(&format!("{},Seq. Classifier,", ckpt.name)),
            "{line}"
        );
        let total: f64 = line.rsplit(',').next().unwrap().parse().unwrap();
        assert_eq!(total, expected.score().unwrap(), "{line}");
    }
    assert!(
        report
            .notes
            .iter()
            .any(|n| n.contains("no hybrid-preferences CSV")),
        "{:?}",
        report.notes
    );
    // a stored result that does not match the row's completions is an error naming it
    let mut bad = scored[0].clone();
    bad.rewards[4].rejected.pop();
    let err = build_report(&spec, &examples, &[bad])
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("example 4") && err.contains("2 rejected scores for 1 chosen and 3 rejected"),
        "{err}"
    );
}

#[test]
fn reference_free_dpo_checkpoints_are_saved_as_run_dpo_saves_them() {
    let Some(examples) = real_examples() else {
        return;
    };
    let spec = SweepSpec {
        name: "s".into(),
        ..Default::default()
    };
    let mut dpo = scored(0, &examples, None);
    dpo.model_type = "DPO Ref. Free".into();
    let report =
        build_report(&spec, &examples, &[dpo.clone(), scored(1, &examples, None)]).unwrap();
    // run_dpo.py: save_to_hub(results_grouped, args.model + "_ref_free", ...), ref_model null,
    // chat_template "tokenizer"; a classifier keeps its own name
    assert_eq!(report.checkpoints[0].name, format!("{}_ref_free", name(0)));
    assert_eq!(report.checkpoints[0].experiment, name(0));
    assert_eq!(report.checkpoints[1].name, name(1));
    let results = EvalSetResults::dpo(name(0), None, accuracies(&dpo, &examples));
    assert_eq!(report.checkpoints[0].eval_set_json, results.eval_set_json());
    let json: serde_json::Value =
        serde_json::from_str(&report.checkpoints[0].metrics_json).unwrap();
    assert_eq!(json["ref_model"], serde_json::Value::Null);
    assert_eq!(json["chat_template"], "tokenizer");
    assert_eq!(json["model_type"], "DPO Ref. Free");
}
