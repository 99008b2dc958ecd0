//! One `worker` process with several scorers: `--devices cpu,cpu --devices-per-scorer 1` runs two
//! lease loops (CPU "devices" stand in for GPUs), each registered as its own worker with its
//! device group, and both lease shards of one sweep from a real `coord serve`.

use std::process::Command;
use std::time::Duration;

use herd_rpc::v1::Capabilities;
use herd_testkit::fixtures::copy_files;
use herd_testkit::process::Proc;
use herd_tests::bins::binary;
use herd_tests::procs::CoordSettings;
use herd_tests::scenario::{local_presets, SweepRun};
use prost::Message;

const TIMEOUT: Duration = Duration::from_secs(300);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_worker_runs_a_scorer_per_device_group_and_each_leases() {
    let tmp = tempfile::tempdir().unwrap();
    let fixture = herd_testkit::workspace_root().join("tests/golden/fixtures/models/llama-gqa-rm");
    let ckpts = tmp.path().join("ckpts");
    copy_files(&fixture, &ckpts.join("rm-a"));
    // 16 short pairs in shards of one: enough tasks that both loops lease while the other scores
    let eval_set = tmp.path().join("pairs.jsonl");
    let rows: Vec<String> = (0..16)
        .map(|i| {
            serde_json::json!({
                "id": i,
                "subset": "llmbar-natural",
                "prompt": format!("Question {i}: what is {i} + 1?"),
                "chosen": format!("{}", i + 1),
                "rejected": format!("{}", i + 2),
            })
            .to_string()
        })
        .collect();
    std::fs::write(&eval_set, rows.join("\n") + "\n").unwrap();
    let presets = local_presets(tmp.path(), &ckpts, &eval_set, "scorers", 256, 1);
    let dir = tmp.path().join("run");
    let mut run = SweepRun::start(&dir, "http://127.0.0.1:9", CoordSettings::default());
    run.submit(&presets);
    let mut command = Command::new(binary("worker"));
    command
        .arg("--coordinator")
        .arg(&run.worker_target)
        .args(["--name", "multi", "--cache-dir"])
        .arg(dir.join("cache"))
        .args(["--devices", "cpu,cpu", "--devices-per-scorer", "1"])
        .args(["--threads", "1", "--stream-batch", "8"])
        .envs(run.env.iter().map(|(k, v)| (k, v)));
    run.workers
        .push(Proc::spawn("multi", command, &dir.join("logs")));
    let status = run.finish_done(TIMEOUT).await;
    assert_eq!(status.tasks_failed, 0, "{status:?}\n{}", run.logs());
    assert_eq!(status.examples_stored, 16, "{status:?}");

    // the coordinator's own record: two registrations, one device each, both took leases
    let db = rusqlite::Connection::open_with_flags(
        &run.coord.state,
        rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
    )
    .unwrap();
    let mut stmt = db
        .prepare(
            "SELECT w.name, w.capabilities, (SELECT COUNT(*) FROM attempts a \
             WHERE a.worker_id = w.id) FROM workers w ORDER BY w.name",
        )
        .unwrap();
    let workers: Vec<(String, Option<Vec<u8>>, i64)> = stmt
        .query_map([], |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?)))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    let names: Vec<&str> = workers.iter().map(|w| w.0.as_str()).collect();
    assert_eq!(names, ["multi/0", "multi/1"], "{}", run.logs());
    for (name, caps, leases) in &workers {
        let caps = Capabilities::decode(&caps.clone().unwrap()[..]).unwrap();
        assert_eq!(
            (caps.device.as_str(), caps.scorer_devices),
            ("cpu", 1),
            "{name}"
        );
        assert!(*leases >= 1, "{name} never leased:\n{}", run.logs());
    }
    let total: i64 = workers.iter().map(|w| w.2).sum();
    assert!(total >= 16, "{workers:?}");
}
