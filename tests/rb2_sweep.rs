//! A RewardBench 2 sweep (schema rb2) of two tiny EasyLM checkpoints, scored by two real worker
//! processes through a real `coord serve`: every completion of every row is scored, and each
//! checkpoint's RewardBench 2 results are herd-rewardbench's `v2` scoring (the Ties composite as
//! run_v2.py at HEAD) of that checkpoint's per-completion scores as `worker score` computes them
//! on its own, each completion as the chosen side of a preference pair; and they equal the
//! subset scores of run_v2.py's files that `worker score --schema rb2` writes for it.
//!
//! The evaluation set is built from real rows of ../shared/data (RewardBench's LLMBar file):
//! each row's prompt and chosen answer, its rejected answer plus answers borrowed from other rows
//! as further incorrect completions, spread over the six RewardBench 2 subsets, with Ties rows
//! (`ref:<n>` with one correct answer, `tied:<n>` with two).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use herd_rewardbench::dataset::ExampleId;
use herd_rewardbench::v2::{rb2_scores, ScoredRow, TiesVariant, SUBSETS_V2};
use herd_rpc::v1::CheckpointState;
use herd_tests::bins::binary;
use herd_tests::easylm::{tiny_reward_model, NUM_HEADS};
use herd_tests::fixture::SWEEP;
use herd_tests::procs::CoordSettings;
use herd_tests::scenario::SweepRun;
use herd_tests::scores_file::assert_same_scores_file;
use serde_json::{json, Value};

const TIMEOUT: Duration = Duration::from_secs(300);

/// One RewardBench 2 row of the fixture.
struct Row {
    id: Value,
    subset: &'static str,
    prompt: String,
    chosen: Vec<String>,
    rejected: Vec<String>,
}

/// 2 rows in each scored subset and 2 Ties prompts (ref and tied each), from LLMBar rows.
fn rb2_rows(llmbar: &Path) -> Vec<Row> {
    let source: Vec<Value> = std::fs::read_to_string(llmbar)
        .unwrap()
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        // short rows only: no text reaches --max-length, where the pair scorer of the
        // independent check (truncating from the left, as run_rm.py) and RewardBench 2 (the
        // tokenizer's own side, as run_v2.py) would cut differently
        .filter(|row| {
            ["prompt", "chosen", "rejected"]
                .iter()
                .all(|f| row[*f].as_str().is_some_and(|t| t.len() < 600))
        })
        .collect();
    assert!(source.len() > 40, "{} short LLMBar rows", source.len());
    let text = |k: usize, field: &str| source[k % source.len()][field].as_str().unwrap().to_owned();
    let mut rows = Vec::new();
    let mut k = 0;
    for subset in SUBSETS_V2.iter().copied().filter(|s| *s != "Ties") {
        for _ in 0..2 {
            rows.push(Row {
                id: json!(rows.len()),
                subset,
                prompt: text(k, "prompt"),
                chosen: vec![text(k, "chosen")],
                // the row's own wrong answer, then two borrowed from other rows
                rejected: vec![
                    text(k, "rejected"),
                    text(k + 1, "rejected"),
                    text(k + 2, "chosen"),
                ],
            });
            k += 3;
        }
    }
    for n in 0..2 {
        rows.push(Row {
            id: json!(format!("ref:{n}")),
            subset: "Ties",
            prompt: text(k, "prompt"),
            chosen: vec![text(k, "chosen")],
            rejected: vec![text(k, "rejected"), text(k + 1, "chosen")],
        });
        rows.push(Row {
            id: json!(format!("tied:{n}")),
            subset: "Ties",
            prompt: text(k, "prompt"),
            chosen: vec![text(k, "chosen"), text(k + 2, "chosen")],
            rejected: vec![text(k + 1, "rejected"), text(k + 3, "rejected")],
        });
        k += 4;
    }
    rows
}

fn write_rb2_set(rows: &[Row], path: &Path) {
    let lines: Vec<String> = rows
        .iter()
        .map(|r| {
            json!({
                "id": r.id,
                "prompt": r.prompt,
                "chosen": r.chosen,
                "rejected": r.rejected,
                "num_correct": r.chosen.len(),
                "num_incorrect": r.rejected.len(),
                "total_completions": r.chosen.len() + r.rejected.len(),
                "models": [],
                "subset": r.subset,
            })
            .to_string()
        })
        .collect();
    std::fs::write(path, lines.join("\n") + "\n").unwrap();
}

/// Every completion as the chosen side of its own preference pair (the rejected side is a fixed
/// text), in row order: what `worker score` scores for the independent check.
fn write_completion_pairs(rows: &[Row], path: &Path) {
    let mut lines = Vec::new();
    for row in rows {
        for completion in row.chosen.iter().chain(&row.rejected) {
            lines.push(
                json!({
                    "id": lines.len(),
                    "prompt": row.prompt,
                    "chosen": completion,
                    "rejected": "No.",
                    "subset": "alpacaeval-easy",
                })
                .to_string(),
            );
        }
    }
    std::fs::write(path, lines.join("\n") + "\n").unwrap();
}

/// `<dir>/<run>--<id>/streaming_params_1` for two seeds: the runs' experiment names are
/// `rm-eval-rb2-<run>`.
fn write_checkpoints(dir: &Path) -> Vec<(String, PathBuf)> {
    [(1u64, "run-a"), (2, "run-b")]
        .iter()
        .map(|&(seed, run)| {
            let folder = dir.join(format!("{run}--{seed:04}"));
            std::fs::create_dir_all(&folder).unwrap();
            let file = folder.join("streaming_params_1");
            std::fs::write(&file, tiny_reward_model(seed)).unwrap();
            (format!("rm-eval-rb2-{run}"), file)
        })
        .collect()
}

fn write_presets(dir: &Path, checkpoints: &Path, eval_set: &Path, tokenizer: &Path) -> PathBuf {
    let path = dir.join("presets.toml");
    let text = format!(
        r#"[{SWEEP}]
checkpoints = ["{checkpoints}"]
eval_dataset = "{eval}"
tokenizer = "{tokenizer}"
chat_template = "tulu"
max_length = 512
output_csv = "rb2-table.csv"
experiment_prefix = "rb2"
shard_size = 5
schema = "rb2"

[{SWEEP}.easylm]
num_heads = {NUM_HEADS}
"#,
        checkpoints = checkpoints.display(),
        eval = eval_set.display(),
        tokenizer = tokenizer.display(),
    );
    std::fs::write(&path, text).unwrap();
    path
}

/// The per-completion scores `worker score` gives `model` on its own, regrouped by row and
/// scored by herd-rewardbench's `v2`: subset → score.
fn independent_scores(
    rows: &[Row],
    model: &Path,
    tokenizer: &Path,
    dir: &Path,
) -> std::collections::BTreeMap<String, f64> {
    let pairs = dir.join("completions.jsonl");
    write_completion_pairs(rows, &pairs);
    let out = dir.join("alone.jsonl");
    let status = Command::new(binary("worker"))
        .arg("score")
        .arg("--model")
        .arg(model)
        .arg("--tokenizer")
        .arg(tokenizer)
        .arg("--num-heads")
        .arg(NUM_HEADS.to_string())
        .arg("--dataset")
        .arg(&pairs)
        .args([
            "--chat-template",
            "tulu",
            "--max-length",
            "512",
            "--device",
            "cpu",
            "-o",
        ])
        .arg(&out)
        .status()
        .unwrap();
    assert!(status.success(), "worker score failed");
    let scores: Vec<f64> = std::fs::read_to_string(&out)
        .unwrap()
        .lines()
        .map(|l| {
            serde_json::from_str::<Value>(l).unwrap()["scores_chosen"][0]
                .as_f64()
                .unwrap()
        })
        .collect();
    let mut next = scores.into_iter();
    let scored: Vec<ScoredRow> = rows
        .iter()
        .map(|row| ScoredRow {
            id: match &row.id {
                Value::String(s) => ExampleId::Str(s.clone()),
                other => ExampleId::Int(other.as_i64().unwrap()),
            },
            subset: row.subset.to_owned(),
            num_correct: row.chosen.len(),
            scores: next
                .by_ref()
                .take(row.chosen.len() + row.rejected.len())
                .collect(),
        })
        .collect();
    assert!(next.next().is_none(), "one score per completion");
    rb2_scores(&scored, TiesVariant::Head).unwrap().subsets
}

/// What `worker score --schema rb2` writes for `model` on the evaluation set: run_v2.py's
/// `eval-set/<name>.json` and `eval-set-scores/<name>.json` (the model copied to a file named
/// `name`, the sweep's experiment name, and run from its folder, so that both name the model
/// alike), as text.
fn worker_score_rb2(
    eval_set: &Path,
    model: &Path,
    name: &str,
    tokenizer: &Path,
    out: &Path,
) -> (String, String) {
    let folder = out.with_extension("model");
    std::fs::create_dir_all(&folder).unwrap();
    std::fs::copy(model, folder.join(name)).unwrap();
    let status = Command::new(binary("worker"))
        .current_dir(&folder)
        .arg("score")
        .arg("--model")
        .arg(name)
        .arg("--tokenizer")
        .arg(tokenizer)
        .arg("--num-heads")
        .arg(NUM_HEADS.to_string())
        .arg("--dataset")
        .arg(eval_set)
        .args([
            "--schema",
            "rb2",
            "--chat-template",
            "tulu",
            "--max-length",
            "512",
            "--device",
            "cpu",
            "-o",
        ])
        .arg(out)
        .status()
        .unwrap();
    assert!(status.success(), "worker score --schema rb2 failed");
    let read = |folder: &str| {
        let path = out.join(folder).join(format!("{name}.json"));
        std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
    };
    (read("eval-set"), read("eval-set-scores"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rewardbench_2_sweep_scores_every_completion_of_every_row() {
    let (Some(llmbar), Some(tokenizer)) = (
        herd_testkit::shared_path("data/rewardbench-llmbar.jsonl"),
        herd_testkit::shared_path("data/tokenizers/llama2"),
    ) else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let rows = rb2_rows(&llmbar);
    let eval_set = tmp.path().join("rb2.jsonl");
    write_rb2_set(&rows, &eval_set);
    let ckpt_dir = tmp.path().join("ckpts");
    let checkpoints = write_checkpoints(&ckpt_dir);
    let presets = write_presets(tmp.path(), &ckpt_dir, &eval_set, &tokenizer);

    // no Google Cloud Storage here: the checkpoints and the tokenizer are local
    let mut run = SweepRun::start(
        &tmp.path().join("run"),
        "http://127.0.0.1:9",
        CoordSettings::default(),
    );
    // read as preference pairs, the rows fail with a pointer to the schema
    let presets_arg = presets.display().to_string();
    let mut wrong = None;
    for _ in 0..100 {
        let out = run.coord.client(&[
            "submit",
            "--dataset",
            SWEEP,
            "--presets",
            &presets_arg,
            "--schema",
            "rb1",
        ]);
        let text = String::from_utf8_lossy(&out.stderr).into_owned();
        if text.contains("connect") || text.contains("unavailable") {
            std::thread::sleep(Duration::from_millis(100));
            continue;
        }
        assert!(!out.status.success());
        wrong = Some(text);
        break;
    }
    let wrong = wrong.expect("coord submit reached the coordinator");
    assert!(
        wrong.contains("RewardBench 2") && wrong.contains("--schema rb2"),
        "{wrong}"
    );

    run.submit(&presets);
    run.add_worker();
    run.add_worker();
    let status = run.finish_done(TIMEOUT).await;
    assert_eq!(status.tasks_failed, 0, "{status:?}\n{}", run.logs());
    assert_eq!(status.checkpoints.len(), 2, "{status:?}");
    assert!(status
        .checkpoints
        .iter()
        .all(|c| c.state() == CheckpointState::Done));
    assert_eq!(status.examples_total, 2 * rows.len() as u64);
    assert_eq!(status.examples_stored, status.examples_total);

    let response = run.coord.results(SWEEP).await.unwrap();
    assert!(response.complete);
    assert_eq!(response.checkpoints.len(), 2);
    let mut overall = Vec::new();
    for (name, model) in &checkpoints {
        let result = response
            .checkpoints
            .iter()
            .find(|c| &c.name == name)
            .unwrap_or_else(|| panic!("{name} missing: {response:?}"));
        let metrics: Value = serde_json::from_str(&result.metrics_json).unwrap();
        assert_eq!(metrics["model"], json!(name));
        let alone = independent_scores(&rows, model, &tokenizer, tmp.path());
        assert_eq!(alone.len(), 6, "{alone:?}");
        for (subset, expected) in &alone {
            let got = metrics[subset]
                .as_f64()
                .unwrap_or_else(|| panic!("{name}: no {subset} in {metrics}"));
            // best-of-N credits are exact; the Ties margin term is continuous in the scores,
            // which may differ in the last bits between batch layouts
            let tolerance = if subset == "Ties" { 1e-6 } else { 0.0 };
            assert!(
                (got - expected).abs() <= tolerance,
                "{name} {subset}: sweep {got} vs worker score {expected}"
            );
        }
        // the same checkpoint through `worker score --schema rb2` (run_v2.py's files): the
        // same subset scores
        let (eval_set_file, scores_file) = worker_score_rb2(
            &eval_set,
            model,
            name,
            &tokenizer,
            &tmp.path().join(format!("rb2-{name}")),
        );
        let files: Value = serde_json::from_str(&eval_set_file).unwrap();
        for subset in SUBSETS_V2 {
            let (got, file) = (metrics[subset].as_f64(), files[subset].as_f64());
            assert!(
                matches!((got, file), (Some(a), Some(b)) if (a - b).abs() <= 1e-6),
                "{name} {subset}: sweep {got:?} vs worker score --schema rb2 {file:?}"
            );
        }
        overall.push(alone.values().sum::<f64>() / 6.0);
        // the server wrote the same results into its output folder
        let served = run
            .coord
            .out_dir
            .join(SWEEP)
            .join("metrics")
            .join(format!("{name}.json"));
        assert_eq!(
            std::fs::read_to_string(&served)
                .unwrap_or_else(|e| panic!("{}: {e}", served.display())),
            result.metrics_json
        );
        // and run_v2.py's eval-set-scores/ beside it: what `worker score --schema rb2` writes,
        // byte for byte but for the last bits of the scores (other batch layouts)
        let served_scores = run
            .coord
            .out_dir
            .join(SWEEP)
            .join("eval-set-scores")
            .join(format!("{name}.json"));
        let served_scores = std::fs::read_to_string(&served_scores)
            .unwrap_or_else(|e| panic!("{}: {e}\n{}", served_scores.display(), run.logs()));
        let (compared, worst) = assert_same_scores_file(name, &served_scores, &scores_file, 1e-4);
        let completions: usize = rows.iter().map(|r| r.chosen.len() + r.rejected.len()).sum();
        assert_eq!(compared, completions);
        eprintln!("{name}: {compared} scores, largest difference {worst:e}");
    }
    assert_ne!(overall[0], overall[1], "the two checkpoints score alike");

    // the sweep-level table: one row per checkpoint, every subset, the RewardBench 2 score
    let table = run.results_csv();
    let mut lines = table.lines();
    assert_eq!(
        lines.next().unwrap(),
        ",model_type,Factuality,Focus,Math,Precise IF,Safety,Ties,score"
    );
    for ((name, _), score) in checkpoints.iter().zip(&overall) {
        let line = lines.next().unwrap();
        let cells: Vec<&str> = line.split(',').collect();
        assert_eq!(cells[0], name, "{table}");
        let got: f64 = cells[8].parse().unwrap();
        assert!(
            (got - score).abs() < 1e-6,
            "{name}: {got} vs {score}\n{table}"
        );
    }
    assert!(
        response.notes.iter().all(|n| !n.contains("NaN")),
        "{:?}",
        response.notes
    );
}
