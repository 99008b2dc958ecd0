//! A sweep of tiny EasyLM checkpoints on the real fake-gcs-server, scored by real worker
//! processes: three workers give the same CSV as one, and each checkpoint's RewardBench numbers
//! are what `worker score` gives for the same file on its own; its eval-set-scores/ files are
//! what `worker score --eval-set-dir` writes. And a sweep of a local DPO model (a Hugging Face
//! folder, scored reference-free) writes run_dpo.py's files as `worker score` does.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use herd_rpc::v1::CheckpointState;
use herd_storage::gcs::GcsClient;
use herd_testkit::fixtures::copy_files;
use herd_testkit::shared;
use herd_tests::bins::binary;
use herd_tests::easylm::NUM_HEADS;
use herd_tests::fixture::{SweepFixture, BUCKET, SWEEP};
use herd_tests::procs::CoordSettings;
use herd_tests::scenario::{local_presets, start_gcs, SweepRun};
use herd_tests::scores_file::assert_same_scores_file;

const TIMEOUT: Duration = Duration::from_secs(300);

async fn run_sweep(
    dir: &std::path::Path,
    gcs_endpoint: &str,
    presets: &std::path::Path,
    workers: usize,
) -> (String, SweepRun) {
    let mut run = SweepRun::start(dir, gcs_endpoint, CoordSettings::default());
    run.submit(presets);
    for _ in 0..workers {
        run.add_worker();
    }
    let status = run.finish_done(TIMEOUT).await;
    assert_eq!(status.tasks_failed, 0, "{status:?}\n{}", run.logs());
    // every checkpoint in the bucket was planned and scored
    assert_eq!(status.checkpoints.len(), 6, "{status:?}");
    assert!(
        status
            .checkpoints
            .iter()
            .all(|c| c.state() == CheckpointState::Done),
        "{status:?}"
    );
    assert_eq!(
        status.examples_stored,
        status.examples_total,
        "{status:?}\n{}",
        run.logs()
    );
    (run.results_csv(), run)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_workers_write_the_csv_one_worker_writes() {
    let Some(gcs) = start_gcs() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let fixture = SweepFixture::new(&tmp.path().join("fixture"), 6, 15).unwrap();
    let client = GcsClient::with_endpoint(&gcs.endpoint()).await.unwrap();
    fixture.upload(&client, BUCKET).await.unwrap();
    // 30 examples in shards of 8: 4 tasks per checkpoint, 24 in all
    let presets = fixture.write_presets(BUCKET, 8).unwrap();

    let (single, single_run) =
        run_sweep(&tmp.path().join("one"), &gcs.endpoint(), &presets, 1).await;
    let (multi, multi_run) =
        run_sweep(&tmp.path().join("three"), &gcs.endpoint(), &presets, 3).await;
    assert_eq!(single, multi, "one worker vs three workers");

    // the reference layout: unnamed index, then model_type, chat_template, the sections, uuid
    let header = single.lines().next().unwrap();
    assert!(
        header.starts_with(
            ",model_type,chat_template,Chat,Chat Hard,Safety,Reasoning,Overall,uuid,budget,"
        ),
        "{header}"
    );
    assert!(
        header.contains("bertscore::min_val=0.0|max_val=0.33"),
        "{header}"
    );
    assert_eq!(
        single.lines().count(),
        1 + fixture.checkpoints.len(),
        "{single}"
    );
    for ckpt in &fixture.checkpoints {
        assert!(
            single.contains(&ckpt.uuid),
            "{} missing:\n{single}",
            ckpt.uuid
        );
    }
    // all three workers took part
    let three_logs: Vec<String> = multi_run.workers.iter().map(|w| w.log_text()).collect();
    for (i, log) in three_logs.iter().enumerate() {
        assert!(log.contains("lease"), "worker {i} never leased:\n{log}");
    }

    // the server wrote the same CSV into its output folder when the sweep completed
    let served = std::fs::read_to_string(
        single_run
            .coord
            .out_dir
            .join("helpsteer2")
            .join("helpsteer2-counts-runs.csv"),
    )
    .unwrap_or_else(|e| panic!("server-side CSV: {e}\n{}", single_run.logs()));
    assert_eq!(served, single);

    // every checkpoint's eval-set-scores/ file beside eval-set/ and metrics/, the same from one
    // worker and from three (scores within float noise of other batch layouts)
    let response = single_run.coord.results("helpsteer2").await.unwrap();
    assert_eq!(response.checkpoints.len(), fixture.checkpoints.len());
    let served = |run: &SweepRun, folder: &str, name: &str| {
        let path = run
            .coord
            .out_dir
            .join("helpsteer2")
            .join(folder)
            .join(format!("{name}.json"));
        std::fs::read_to_string(&path)
            .unwrap_or_else(|e| panic!("{}: {e}\n{}", path.display(), run.logs()))
    };
    for result in &response.checkpoints {
        let one = served(&single_run, "eval-set-scores", &result.name);
        let three = served(&multi_run, "eval-set-scores", &result.name);
        assert_same_scores_file(&result.name, &three, &one, 1e-4);
    }
    assert!(
        response
            .notes
            .iter()
            .all(|n| !n.contains("eval-set-scores")),
        "{:?}",
        response.notes
    );

    // one checkpoint scored alone by `worker score` gives the same subset accuracies, and with
    // --eval-set-dir run_rm.py's files: eval-set/ byte for byte, eval-set-scores/ byte for byte
    // but for the last bits of the scores. The model file is named as the experiment, so the
    // `model` both write is the same.
    let ckpt = &fixture.checkpoints[2];
    let result = response
        .checkpoints
        .iter()
        .find(|c| c.name.contains(&ckpt.uuid))
        .expect("the checkpoint's results");
    let alone_dir = tmp.path().join("alone");
    std::fs::create_dir_all(&alone_dir).unwrap();
    std::fs::write(alone_dir.join(&result.experiment), &ckpt.bytes).unwrap();
    let out = tmp.path().join("alone.jsonl");
    let status = Command::new(binary("worker"))
        .current_dir(&alone_dir)
        .arg("score")
        .arg("--model")
        .arg(&result.experiment)
        .arg("--tokenizer")
        .arg(shared().join("data/tokenizers/llama2"))
        .arg("--num-heads")
        .arg(NUM_HEADS.to_string())
        .arg("--dataset")
        .arg(&fixture.eval_set)
        .args([
            "--max-length",
            "512",
            "--device",
            "cpu",
            "--eval-set-dir",
            "results",
            "-o",
        ])
        .arg(&out)
        .status()
        .unwrap();
    assert!(status.success());
    let summary: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.with_extension("json")).unwrap())
            .unwrap();
    let metrics: serde_json::Value = serde_json::from_str(&result.metrics_json).unwrap();
    let alone = summary["extra_results"].as_object().unwrap();
    assert!(!alone.is_empty());
    for (subset, accuracy) in alone {
        assert_eq!(
            metrics[subset].as_f64(),
            accuracy.as_f64(),
            "{subset}: sweep {} vs worker score {accuracy}",
            metrics[subset]
        );
    }
    let alone_file = |folder: &str| {
        let path = alone_dir
            .join("results")
            .join(folder)
            .join(format!("{}.json", result.experiment));
        std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
    };
    assert_eq!(
        served(&single_run, "eval-set", &result.name),
        alone_file("eval-set")
    );
    let (compared, worst) = assert_same_scores_file(
        &result.name,
        &served(&single_run, "eval-set-scores", &result.name),
        &alone_file("eval-set-scores"),
        1e-4,
    );
    // one logit per side of every pair
    let pairs = std::fs::read_to_string(&fixture.eval_set)
        .unwrap()
        .lines()
        .filter(|l| !l.trim().is_empty())
        .count();
    assert_eq!(compared, 2 * pairs);
    eprintln!(
        "{}: {compared} scores, largest difference {worst:e}",
        result.name
    );
}

/// The first `n` LLMBar rows of the shared data that are short (no text near --max-length).
fn short_llmbar_rows(llmbar: &Path, n: usize) -> String {
    let text = std::fs::read_to_string(llmbar).unwrap();
    let rows: Vec<&str> = text
        .lines()
        .filter(|l| {
            let row: serde_json::Value = serde_json::from_str(l).unwrap();
            ["prompt", "chosen", "rejected"]
                .iter()
                .all(|f| row[*f].as_str().is_some_and(|t| t.len() < 400))
        })
        .take(n)
        .collect();
    assert_eq!(rows.len(), n);
    rows.join("\n") + "\n"
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dpo_sweep_writes_run_dpo_files_as_worker_score_does() {
    let Some(llmbar) = herd_testkit::shared_path("data/rewardbench-llmbar.jsonl") else {
        return;
    };
    let policy = herd_testkit::workspace_root().join("tests/golden/fixtures/models/llama-policy");
    let tmp = tempfile::tempdir().unwrap();
    let eval_set = tmp.path().join("pairs.jsonl");
    std::fs::write(&eval_set, short_llmbar_rows(&llmbar, 12)).unwrap();
    // the committed tiny causal LM (its own tokenizer, no chat template: tulu) as a run folder
    let ckpts = tmp.path().join("ckpts");
    copy_files(&policy, &ckpts.join("policy-a"));
    let presets = local_presets(tmp.path(), &ckpts, &eval_set, "dpo", 512, 5);
    let mut run = SweepRun::start(
        &tmp.path().join("run"),
        "http://127.0.0.1:9",
        CoordSettings::default(),
    );
    run.submit(&presets);
    run.add_worker();
    let status = run.finish_done(TIMEOUT).await;
    assert_eq!(status.tasks_failed, 0, "{status:?}\n{}", run.logs());
    let response = run.coord.results(SWEEP).await.unwrap();
    assert_eq!(response.checkpoints.len(), 1, "{response:?}");
    let result = &response.checkpoints[0];
    let experiment = "rm-eval-dpo-policy-a";
    assert_eq!(result.experiment, experiment);
    // run_dpo.py saves a reference-free model's files as <model>_ref_free
    assert_eq!(result.name, format!("{experiment}_ref_free"));

    // the same model scored alone, the folder named as the experiment so both name it alike
    let alone_dir = tmp.path().join("alone");
    copy_files(&policy, &alone_dir.join(experiment));
    let status = Command::new(binary("worker"))
        .current_dir(&alone_dir)
        .args(["score", "--model", experiment, "--dataset"])
        .arg(&eval_set)
        .args([
            "--max-length",
            "512",
            "--device",
            "cpu",
            "--eval-set-dir",
            "results",
            "-o",
            "alone.jsonl",
        ])
        .status()
        .unwrap();
    assert!(status.success());
    let read = |path: std::path::PathBuf| {
        std::fs::read_to_string(&path)
            .unwrap_or_else(|e| panic!("{}: {e}\n{}", path.display(), run.logs()))
    };
    let served = run.coord.out_dir.join(SWEEP);
    let alone = alone_dir.join("results");
    let file = format!("{}.json", result.name);
    assert_eq!(
        read(served.join("eval-set").join(&file)),
        read(alone.join("eval-set").join(&file))
    );
    let sweep_scores = read(served.join("eval-set-scores").join(&file));
    let (compared, worst) = assert_same_scores_file(
        &result.name,
        &sweep_scores,
        &read(alone.join("eval-set-scores").join(&file)),
        1e-3,
    );
    // one reward per side of each of the 12 pairs
    assert_eq!(compared, 24);
    eprintln!(
        "{}: {compared} scores, largest difference {worst:e}",
        result.name
    );
    // run_dpo.py's layout: the templated prompt, no id column
    let value = herd_rewardbench::pyjson::loads(&sweep_scores).unwrap();
    let dict = value.as_dict().unwrap();
    let keys: Vec<&str> = dict.iter().map(|(k, _)| k.as_str()).collect();
    assert!(
        keys.contains(&"prompt") && !keys.contains(&"id"),
        "{keys:?}"
    );
}

/// A sweep of a model whose pipeline returns one float per sequence (GRM's value head, on the
/// committed tiny GRM-Gemma2 fixture): the worker reports it (`CompleteRequest.scalar_output`),
/// the coordinator stores it, and the sweep's eval-set-scores file holds `x`, not `[x]`, as
/// run_rm.py and `worker score` write it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_scalar_pipeline_sweep_writes_floats_as_worker_score_does() {
    let (Some(llmbar), Some(tokenizer)) = (
        herd_testkit::shared_path("data/rewardbench-llmbar.jsonl"),
        herd_testkit::shared_path("data/tokenizers/llama2"),
    ) else {
        return;
    };
    let fixture = herd_testkit::workspace_root()
        .join("tests/golden/fixtures/heads2/Ray2333/GRM-Gemma2-2B-sftreg");
    let tmp = tempfile::tempdir().unwrap();
    let eval_set = tmp.path().join("pairs.jsonl");
    std::fs::write(&eval_set, short_llmbar_rows(&llmbar, 12)).unwrap();
    // the fixture with the shared Llama-2 tokenizer its golden was made with, as a run folder
    let ckpts = tmp.path().join("ckpts");
    for from in [&fixture, &tokenizer] {
        copy_files(from, &ckpts.join("grm-a"));
    }
    let presets = local_presets(tmp.path(), &ckpts, &eval_set, "grm", 512, 5);
    let mut run = SweepRun::start(
        &tmp.path().join("run"),
        "http://127.0.0.1:9",
        CoordSettings::default(),
    );
    run.submit(&presets);
    run.add_worker();
    run.finish_done(TIMEOUT).await;
    let response = run.coord.results(SWEEP).await.unwrap();
    assert_eq!(response.checkpoints.len(), 1, "{response:?}");
    let result = &response.checkpoints[0];

    // the same model scored alone, the folder named as the experiment
    let alone_dir = tmp.path().join("alone");
    for from in [&fixture, &tokenizer] {
        copy_files(from, &alone_dir.join(&result.name));
    }
    let status = Command::new(binary("worker"))
        .current_dir(&alone_dir)
        .args(["score", "--model", &result.name, "--dataset"])
        .arg(&eval_set)
        .args([
            "--max-length",
            "512",
            "--device",
            "cpu",
            "--eval-set-dir",
            "results",
            "-o",
            "alone.jsonl",
        ])
        .status()
        .unwrap();
    assert!(status.success());
    let read = |path: std::path::PathBuf| {
        std::fs::read_to_string(&path)
            .unwrap_or_else(|e| panic!("{}: {e}\n{}", path.display(), run.logs()))
    };
    let file = format!("{}.json", result.name);
    let sweep_scores = read(
        run.coord
            .out_dir
            .join(SWEEP)
            .join("eval-set-scores")
            .join(&file),
    );
    let alone_scores = read(
        alone_dir
            .join("results")
            .join("eval-set-scores")
            .join(&file),
    );
    let (compared, _) = assert_same_scores_file(&result.name, &sweep_scores, &alone_scores, 1e-3);
    assert_eq!(compared, 24);
    // both files hold one float per score, not a one-element list
    for text in [&sweep_scores, &alone_scores] {
        let value = herd_rewardbench::pyjson::loads(text).unwrap();
        let dict = value.as_dict().unwrap();
        for column in ["scores_chosen", "scores_rejected"] {
            let Some(herd_rewardbench::pyjson::PyValue::List(items)) =
                herd_rewardbench::pyjson::dict_get(dict, column)
            else {
                panic!("{column}: not a list");
            };
            assert_eq!(items.len(), 12, "{column}");
            assert!(
                items
                    .iter()
                    .all(|v| matches!(v, herd_rewardbench::pyjson::PyValue::Float(_))),
                "{column}: {items:?}"
            );
        }
    }
}
