//! The prior preference sets against the published package, byte for byte.
//!
//! `tests/golden/prior-sets/` comes from `tests/golden/make_prior_sets_golden.py`: a fixture in
//! the layout of `allenai/pref-test-sets` (real RewardBench rows repackaged; the prior sets
//! themselves are not available offline), synthetic per-example scores, and what rewardbench
//! 0.1.4 makes of them (its real `load_eval_dataset(core_set=False)` and `save_to_hub`, the
//! `run_rm.py` lines transcribed). Here the same fixture goes through herd's loader, formatter
//! and writers, and the files must be identical.

use std::path::{Path, PathBuf};

use herd_rewardbench::chat::{rewardbench_messages, FastChatTemplate};
use herd_rewardbench::dataset::prior_sets::load_dir;
use herd_rewardbench::files::{
    read_py_json, results_path, EvalSetResults, ResultsKind, ScoredPair,
};
use herd_rewardbench::pyjson::{self, PyValue};
use herd_rewardbench::v1::prior_sets::{overall, write_pref_sets, PrefSetsRun};
use herd_rewardbench::v1::{is_win, XstestWeighting, PREF_TEST_SETS};

const MODEL: &str = "prior-sets-fixture/tiny-rm";

fn golden() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden/prior-sets")
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn scored_pairs() -> Vec<ScoredPair> {
    let rows = load_dir(&golden().join("pref-test-sets")).expect("the fixture loads");
    // Python's json (exact float parsing): one [[chosen], [rejected]] per row
    let floats = |v: &PyValue| -> Vec<f64> {
        match v {
            PyValue::List(xs) => xs.iter().map(|x| x.as_f64().unwrap()).collect(),
            other => panic!("expected a list, found {}", other.type_name()),
        }
    };
    let scores: Vec<[Vec<f64>; 2]> =
        match pyjson::loads(&read(&golden().join("scores.json"))).unwrap() {
            PyValue::List(rows) => rows
                .iter()
                .map(|row| match row {
                    PyValue::List(pair) if pair.len() == 2 => [floats(&pair[0]), floats(&pair[1])],
                    _ => panic!("scores.json: expected [[chosen], [rejected]]"),
                })
                .collect(),
            _ => panic!("scores.json: expected a list"),
        };
    assert_eq!(rows.len(), scores.len());
    let tulu = FastChatTemplate::by_name("tulu").unwrap();
    let render = |prompt: &herd_rewardbench::dataset::Prompt, response: &str| {
        tulu.render(&rewardbench_messages(prompt, Some(response)).unwrap())
            .unwrap()
    };
    rows.iter()
        .zip(scores)
        .map(|(row, [chosen, rejected])| ScoredPair {
            id: row.pair.id.clone(),
            subset: row.pair.subset.clone().unwrap(),
            text_chosen: render(&row.pair.prompt, &row.pair.chosen),
            text_rejected: render(&row.pair.prompt, &row.pair.rejected),
            win: is_win(&chosen, &rejected),
            scores_chosen: chosen,
            scores_rejected: rejected,
        })
        .collect()
}

#[test]
fn loader_renames_subsets_and_drops_the_pku_splits() {
    let rows = load_dir(&golden().join("pref-test-sets")).unwrap();
    let splits: Vec<&str> = rows
        .iter()
        .map(|r| r.pair.subset.as_deref().unwrap())
        .collect();
    let mut distinct = splits.clone();
    distinct.dedup();
    // every split once, in the order `datasets` infers them (alphabetical), pku_* dropped
    assert_eq!(distinct, PREF_TEST_SETS);
    // each row's own subset became its sub-subset
    assert!(rows.iter().all(|r| r
        .subsubset
        .as_deref()
        .is_some_and(|s| s.starts_with("llmbar-") || s.starts_with("hep-"))));
}

#[test]
fn result_files_match_the_reference() {
    let pairs = scored_pairs();
    let run = PrefSetsRun {
        model: MODEL.into(),
        model_type: "Seq. Classifier".into(),
        chat_template_used: "tulu".into(),
        chat_template_arg: "tulu".into(),
        scalar_scores: false,
    };
    let dir = tempfile::tempdir().unwrap();
    let (results, scores) = write_pref_sets(dir.path(), &run, &pairs).unwrap();
    let expected = golden().join("results");
    for (kind, ours) in [
        (ResultsKind::PrefSets, results),
        (ResultsKind::PrefSetsScores, scores),
    ] {
        assert_eq!(ours, results_path(dir.path(), kind, MODEL));
        let theirs = results_path(&expected, kind, MODEL);
        assert!(
            read(&ours) == read(&theirs),
            "{} differs from {}",
            ours.display(),
            theirs.display()
        );
    }
}

#[test]
fn overall_with_prior_sets_matches_the_reference() {
    let summary = read_py_json(&golden().join("summary.json")).unwrap();
    let num = |path: &[&str]| -> f64 {
        let mut v = &summary;
        for key in path {
            v = pyjson::dict_get(v.as_dict().unwrap(), key).unwrap();
        }
        let hex = pyjson::dict_get(v.as_dict().unwrap(), "hex")
            .and_then(|h| h.as_str())
            .unwrap()
            .to_owned();
        f64::from_bits(u64::from_str_radix(&hex, 16).unwrap())
    };
    let core = EvalSetResults::read(&results_path(
        &golden().join("results"),
        ResultsKind::EvalSet,
        MODEL,
    ))
    .unwrap();
    let prior = EvalSetResults::read(&results_path(
        &golden().join("results"),
        ResultsKind::PrefSets,
        MODEL,
    ))
    .unwrap();
    let o = overall(
        &core.accuracies,
        &prior.accuracies,
        XstestWeighting::Current,
    );
    assert!(o.missing_prior_sets.is_empty());
    assert_eq!(o.prior_sets.to_bits(), num(&["prior_sets"]).to_bits());
    for (name, ours) in [
        ("Chat", o.sections.chat),
        ("Chat Hard", o.sections.chat_hard),
        ("Safety", o.sections.safety),
        ("Reasoning", o.sections.reasoning),
    ] {
        assert_eq!(ours.to_bits(), num(&["sections", name]).to_bits(), "{name}");
    }
    assert_eq!(o.score.to_bits(), num(&["score_mean_of_4"]).to_bits());
    assert_eq!(o.weighted.to_bits(), num(&["overall_weighted"]).to_bits());
}
