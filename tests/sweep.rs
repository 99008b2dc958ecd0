//! A sweep of tiny EasyLM checkpoints on the real fake-gcs-server, scored by real worker
//! processes: three workers give the same CSV as one, and each checkpoint's RewardBench numbers
//! are what `worker score` gives for the same file on its own.

use std::process::Command;
use std::time::Duration;

use herd_rpc::v1::{CheckpointState, SweepState};
use herd_storage::gcs::GcsClient;
use herd_testkit::shared;
use herd_tests::bins::binary;
use herd_tests::easylm::NUM_HEADS;
use herd_tests::fixture::{SweepFixture, BUCKET};
use herd_tests::procs::CoordSettings;
use herd_tests::scenario::{start_gcs, SweepRun};

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
    let status = run.finish(TIMEOUT, |_| {}).await;
    assert_eq!(
        status.state(),
        SweepState::Done,
        "{status:?}\n{}",
        run.logs()
    );
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

    // one checkpoint scored alone by `worker score` gives the same subset accuracies
    let ckpt = &fixture.checkpoints[2];
    let model = tmp.path().join("streaming_params_437");
    std::fs::write(&model, &ckpt.bytes).unwrap();
    let out = tmp.path().join("alone.jsonl");
    let status = Command::new(binary("worker"))
        .arg("score")
        .arg("--model")
        .arg(&model)
        .arg("--tokenizer")
        .arg(shared().join("data/tokenizers/llama2"))
        .arg("--num-heads")
        .arg(NUM_HEADS.to_string())
        .arg("--dataset")
        .arg(&fixture.eval_set)
        .args(["--max-length", "512", "--device", "cpu", "-o"])
        .arg(&out)
        .status()
        .unwrap();
    assert!(status.success());
    let summary: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.with_extension("json")).unwrap())
            .unwrap();
    let response = single_run.coord.results("helpsteer2").await.unwrap();
    let result = response
        .checkpoints
        .iter()
        .find(|c| c.name.contains(&ckpt.uuid))
        .expect("the checkpoint's results");
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
}
