//! The scheduler's memory rule on the SQLite store with simulated workers of different sizes: a
//! checkpoint goes only to a worker that holds its parameters, a big task is not overtaken by
//! small ones, a checkpoint nobody can hold is reported by status, and a state file from before
//! the size column keeps working. Times are passed in, so nothing sleeps.

use herd_coordinator::domain::{
    CheckpointFormat, ExampleScores, Grant, PlannedCheckpoint, PlannedExample, TaskState,
};
use herd_coordinator::scheduler::Policy;
use herd_coordinator::state::{LeaseOutcome, Store};
use herd_rpc::v1::{Capabilities, SweepSpec};

const GIB: u64 = 1 << 30;

fn policy() -> Policy {
    Policy {
        lease_timeout_ms: 1_000,
        stragglers: false,
        ..Policy::default()
    }
}

fn spec(name: &str) -> SweepSpec {
    SweepSpec {
        name: name.into(),
        checkpoints: vec!["/ckpts".into()],
        eval_dataset: "eval.jsonl".into(),
        shard_size: 2,
        output_csv: format!("{name}.csv"),
        ..SweepSpec::default()
    }
}

/// `(name, param_bytes)`
fn checkpoints(list: &[(&str, u64)]) -> Vec<PlannedCheckpoint> {
    list.iter()
        .map(|(n, param_bytes)| PlannedCheckpoint {
            uri: format!("/ckpts/{n}"),
            name: format!("rm-eval-{n}"),
            format: CheckpointFormat::HuggingFace,
            size_bytes: *param_bytes,
            param_bytes: *param_bytes,
        })
        .collect()
}

fn examples(n: u32) -> Vec<PlannedExample> {
    (0..n)
        .map(|i| PlannedExample {
            index: i,
            id: format!("ex{i}"),
            subset: "alpacaeval-easy".into(),
            pair_json: format!(r#"{{"id":"ex{i}","prompt":"p{i}","chosen":"c","rejected":"r"}}"#),
            completions: None,
        })
        .collect()
}

fn open(dir: &tempfile::TempDir) -> Store {
    Store::open(&dir.path().join("state.db"), policy()).unwrap()
}

/// A bf16 GPU worker whose one GPU has `gpu_gib` GiB.
fn gpu_worker(store: &Store, name: &str, gpu_gib: u64, now: i64) -> String {
    let caps = Capabilities {
        device: "cuda".into(),
        gpus: 1,
        gpu_memory_bytes: gpu_gib * GIB,
        host_memory_bytes: 256 * GIB,
        bytes_per_parameter: 2,
        ..Capabilities::default()
    };
    store
        .register(name, &caps, &format!("secret-of-{name}"), now)
        .unwrap()
}

/// A bf16 GPU worker scoring with a group of `devices` GPUs of `gpu_gib` GiB each (a model split
/// by layers over them: `worker --devices-per-scorer`).
fn gpu_group_worker(store: &Store, name: &str, gpu_gib: u64, devices: u32, now: i64) -> String {
    let caps = Capabilities {
        device: "cuda".into(),
        gpus: devices,
        gpu_memory_bytes: gpu_gib * GIB,
        host_memory_bytes: 256 * GIB,
        bytes_per_parameter: 2,
        scorer_devices: devices,
        ..Capabilities::default()
    };
    store
        .register(name, &caps, &format!("secret-of-{name}"), now)
        .unwrap()
}

fn try_lease(store: &Store, worker: &str, now: i64) -> Option<Box<Grant>> {
    match store.lease(worker, &[], now).unwrap() {
        LeaseOutcome::Leased(grant) => Some(grant),
        LeaseOutcome::Idle { .. } => None,
        other => panic!("unexpected {other:?}"),
    }
}

fn finish(store: &Store, worker: &str, grant: &Grant, now: i64) {
    let rewards: Vec<ExampleScores> = grant
        .examples
        .iter()
        .map(|e| ExampleScores {
            example_id: e.id.clone(),
            chosen: vec![1.0],
            rejected: vec![0.0],
            index: e.index,
            texts: Vec::new(),
        })
        .collect();
    store
        .store_results(worker, &grant.lease, &rewards, now)
        .unwrap();
    store
        .complete(worker, &grant.lease, "seq", "tulu", now)
        .unwrap();
}

fn name(grant: &Grant) -> &str {
    grant.checkpoint.uri.trim_start_matches("/ckpts/")
}

#[test]
fn a_checkpoint_goes_only_to_workers_that_hold_it_and_the_sweep_finishes() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir);
    // 8B-sized (16 GB), 13B-sized (26 GB) and 70B-sized (140 GB) reward models
    store
        .submit(
            &spec("mixed"),
            &checkpoints(&[
                ("a-8b", 16 * GIB),
                ("b-13b", 26 * GIB),
                ("c-70b", 140 * GIB),
                ("d-8b", 16 * GIB),
            ]),
            &examples(6),
            0,
        )
        .unwrap();
    // a 24 GiB card holds 20 GiB, an 80 GiB card 76 GiB, a 192 GiB card 188 GiB
    let workers = [
        (gpu_worker(&store, "l4", 24, 0), 20 * GIB),
        (gpu_worker(&store, "h100", 80, 0), 76 * GIB),
        (gpu_worker(&store, "b200", 192, 0), 188 * GIB),
    ];
    let param_bytes = |n: &str| match n {
        "a-8b" | "d-8b" => 16 * GIB,
        "b-13b" => 26 * GIB,
        _ => 140 * GIB,
    };
    let mut done = 0;
    for tick in 1..100 {
        let mut leased = Vec::new();
        for (worker, room) in &workers {
            if let Some(grant) = try_lease(&store, worker, tick) {
                assert!(
                    param_bytes(name(&grant)) <= *room,
                    "{worker} (room {room}) was leased {}",
                    name(&grant)
                );
                leased.push((worker, grant));
            }
        }
        for (worker, grant) in leased {
            finish(&store, worker, &grant, tick);
            done += 1;
        }
        if store.all_finished().unwrap() {
            break;
        }
    }
    assert_eq!(done, 12, "4 checkpoints x 3 shards");
    assert!(store
        .tasks("mixed")
        .unwrap()
        .iter()
        .all(|t| t.state == TaskState::Done));
}

#[test]
fn a_big_task_is_not_overtaken_by_small_ones() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir);
    // the small sweep is older: queue order alone would give every worker its tasks first
    store
        .submit(
            &spec("small"),
            &checkpoints(&[("s1", 16 * GIB), ("s2", 16 * GIB), ("s3", 16 * GIB)]),
            &examples(6),
            0,
        )
        .unwrap();
    store
        .submit(
            &spec("big"),
            &checkpoints(&[("b1", 60 * GIB)]),
            &examples(4),
            1,
        )
        .unwrap();
    let big = gpu_worker(&store, "h100", 80, 2);
    let small: Vec<String> = (0..3)
        .map(|i| gpu_worker(&store, &format!("l4-{i}"), 24, 2))
        .collect();

    // the big worker, holding a small checkpoint in its cache, still takes the big task first
    let first = match store.lease(&big, &["/ckpts/s1".to_string()], 3).unwrap() {
        LeaseOutcome::Leased(grant) => grant,
        other => panic!("expected a lease, got {other:?}"),
    };
    assert_eq!(name(&first), "b1");
    finish(&store, &big, &first, 3);
    // the small workers take the small tasks meanwhile, never the big one
    for worker in &small {
        let grant = try_lease(&store, worker, 3).unwrap();
        assert_ne!(name(&grant), "b1");
        finish(&store, worker, &grant, 3);
    }
    let second = try_lease(&store, &big, 4).unwrap();
    assert_eq!(name(&second), "b1", "the big checkpoint's last shard");
    finish(&store, &big, &second, 4);
    // nothing big is left: the big worker helps with the small tasks
    let third = try_lease(&store, &big, 5).unwrap();
    assert!(name(&third).starts_with('s'), "{}", name(&third));

    // with only big workers alive (the small ones silent past the lease timeout), every
    // checkpoint fits the smallest live worker: plain queue order again
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir);
    store
        .submit(
            &spec("small"),
            &checkpoints(&[("s1", 16 * GIB)]),
            &examples(2),
            0,
        )
        .unwrap();
    store
        .submit(
            &spec("big"),
            &checkpoints(&[("b1", 60 * GIB)]),
            &examples(2),
            0,
        )
        .unwrap();
    gpu_worker(&store, "l4", 24, 0);
    let big = gpu_worker(&store, "h100", 80, 5_000);
    assert_eq!(name(&try_lease(&store, &big, 5_000).unwrap()), "s1");
}

#[test]
fn status_reports_a_checkpoint_no_live_worker_can_hold() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir);
    store
        .submit(
            &spec("s"),
            &checkpoints(&[("huge", 140 * GIB), ("fine", 16 * GIB)]),
            &examples(2),
            0,
        )
        .unwrap();
    // no worker yet: nothing to say (one may come)
    let status = store.status(None, 0).unwrap();
    assert!(status.sweeps[0]
        .checkpoints
        .iter()
        .all(|c| c.unschedulable.is_none()));

    let h100 = gpu_worker(&store, "h100", 80, 0);
    let grant = try_lease(&store, &h100, 1).unwrap();
    assert_eq!(name(&grant), "fine");
    finish(&store, &h100, &grant, 1);
    // the huge one is not leased: the worker is told to ask again later
    assert!(try_lease(&store, &h100, 2).is_none());
    let status = store.status(None, 2).unwrap();
    let huge = &status.sweeps[0].checkpoints[0];
    let reason = huge
        .unschedulable
        .as_deref()
        .expect("huge is unschedulable");
    assert!(reason.contains("140.0 GiB"), "{reason}");
    assert!(reason.contains("76.0 GiB"), "{reason}");
    assert!(status.sweeps[0].checkpoints[1].unschedulable.is_none());

    // a bigger worker comes: the reason goes away and it gets the task
    let big = gpu_worker(&store, "b200", 192, 3);
    assert!(store.status(None, 3).unwrap().sweeps[0].checkpoints[0]
        .unschedulable
        .is_none());
    assert_eq!(name(&try_lease(&store, &big, 3).unwrap()), "huge");
}

#[test]
fn a_state_file_from_before_the_size_column_keeps_its_rows() {
    let dir = tempfile::tempdir().unwrap();
    {
        let store = open(&dir);
        store
            .submit(
                &spec("old"),
                &checkpoints(&[("a", 140 * GIB)]),
                &examples(2),
                0,
            )
            .unwrap();
    }
    // the layout before the column: drop it again
    let conn = rusqlite::Connection::open(dir.path().join("state.db")).unwrap();
    conn.execute_batch("ALTER TABLE checkpoints DROP COLUMN param_bytes")
        .unwrap();
    drop(conn);
    // reopened: the column is back, NULL (unknown size), so even a small worker is leased it
    let store = open(&dir);
    let l4 = gpu_worker(&store, "l4", 24, 0);
    let grant = try_lease(&store, &l4, 1).unwrap();
    assert_eq!((name(&grant), grant.checkpoint.param_bytes), ("a", 0));
}

#[test]
fn a_model_too_big_for_one_gpu_goes_to_a_scorer_with_a_group_of_gpus() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir);
    store
        .submit(
            &spec("split"),
            &checkpoints(&[("a-70b", 140 * GIB), ("b-8b", 16 * GIB)]),
            &examples(2),
            0,
        )
        .unwrap();
    // one machine of 8 x 80 GiB registered as eight one-GPU scorers, and another as one scorer
    // over two of its GPUs
    let singles: Vec<String> = (0..8)
        .map(|i| gpu_worker(&store, &format!("h100-{i}"), 80, 0))
        .collect();
    let pair = gpu_group_worker(&store, "h100-pair", 80, 2, 0);
    // the 70B task waits for the pair; the one-GPU scorers take the 8B
    let mut leased = Vec::new();
    for worker in &singles {
        if let Some(grant) = try_lease(&store, worker, 1) {
            assert_eq!(name(&grant), "b-8b", "{worker}");
            leased.push((worker.clone(), grant));
        }
    }
    assert_eq!(leased.len(), 1, "one shard of 2 examples: one lease");
    let grant = try_lease(&store, &pair, 1).expect("the pair holds the 70B model");
    assert_eq!(name(&grant), "a-70b");
    finish(&store, &pair, &grant, 2);
    let (worker, small) = leased.pop().unwrap();
    finish(&store, &worker, &small, 2);
    // nothing left for anyone
    assert!(singles.iter().all(|w| try_lease(&store, w, 3).is_none()));
    assert!(try_lease(&store, &pair, 3).is_none());
}
