//! The SQLite store on its own: planning, lease order, fencing, idempotent results, expiry and
//! retries, checkpoint failures, stragglers and resuming from the file. Times are passed in, so
//! nothing sleeps.

use herd_coordinator::domain::{
    CheckpointFormat, CheckpointState, ExampleScores, FailureKind, Grant, LeaseId, LeaseState,
    PlannedCheckpoint, PlannedExample, SweepState, TaskState,
};
use herd_coordinator::scheduler::Policy;
use herd_coordinator::state::{LeaseOutcome, Store, StoreError};
use herd_rpc::v1::{Capabilities, EasyLmConfig, Scoring, SweepSpec};

fn policy() -> Policy {
    Policy {
        lease_timeout_ms: 1_000,
        heartbeat_interval_ms: 100,
        max_attempts: 3,
        retry_backoff_ms: 100,
        stragglers: true,
        max_leases_per_task: 2,
        ..Policy::default()
    }
}

fn spec(name: &str, shard_size: u32) -> SweepSpec {
    SweepSpec {
        name: name.into(),
        checkpoints: vec!["/ckpts".into()],
        eval_dataset: "eval.jsonl".into(),
        shard_size,
        output_csv: format!("{name}.csv"),
        ..SweepSpec::default()
    }
}

fn checkpoints(names: &[&str]) -> Vec<PlannedCheckpoint> {
    names
        .iter()
        .map(|n| PlannedCheckpoint {
            uri: format!("/ckpts/{n}"),
            name: format!("rm-eval-{n}"),
            format: CheckpointFormat::HuggingFace,
            size_bytes: 1_000,
            param_bytes: 0,
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

struct Fixture {
    _dir: tempfile::TempDir,
    path: std::path::PathBuf,
    store: Store,
}

fn fixture(policy: Policy) -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state.db");
    let store = Store::open(&path, policy).unwrap();
    Fixture {
        _dir: dir,
        path,
        store,
    }
}

fn register(store: &Store, name: &str, cached: &[&str]) -> String {
    let caps = Capabilities {
        device: "cpu".into(),
        cached_checkpoints: cached.iter().map(|s| s.to_string()).collect(),
        ..Capabilities::default()
    };
    store
        .register(name, &caps, &format!("secret-of-{name}"), 0)
        .unwrap()
}

fn lease(store: &Store, worker: &str, cached: &[&str], now: i64) -> Box<Grant> {
    let cached: Vec<String> = cached.iter().map(|s| s.to_string()).collect();
    match store.lease(worker, &cached, now).unwrap() {
        LeaseOutcome::Leased(lease) => lease,
        other => panic!("expected a lease, got {other:?}"),
    }
}

fn lease_ref(lease: &Grant) -> LeaseId {
    lease.lease
}

fn rewards(lease: &Grant, score: f64) -> Vec<ExampleScores> {
    lease
        .examples
        .iter()
        .map(|e| ExampleScores {
            example_id: e.id.clone(),
            chosen: vec![score + e.index as f64],
            rejected: vec![-1.0],
            index: e.index,
            texts: Vec::new(),
        })
        .collect()
}

fn uri(lease: &Grant) -> &str {
    &lease.checkpoint.uri
}

#[test]
fn submit_plans_tasks_and_resubmit_adds_only_new_checkpoints() {
    let f = fixture(policy());
    let out = f
        .store
        .submit(&spec("s", 4), &checkpoints(&["a", "b"]), &examples(10), 1)
        .unwrap();
    assert!(out.created);
    assert_eq!(
        (
            out.checkpoints_added,
            out.checkpoints_skipped,
            out.tasks_added,
            out.examples
        ),
        (2, 0, 6, 10)
    );
    let tasks = f.store.tasks("s").unwrap();
    let shards: Vec<_> = tasks.iter().take(3).map(|t| t.shard.clone()).collect();
    assert_eq!(shards, vec![0..4, 4..8, 8..10]);
    assert!(tasks
        .iter()
        .all(|t| t.state == TaskState::Pending && t.attempts == 0));

    // the same name again: only the new checkpoint is planned
    let out = f
        .store
        .submit(
            &spec("s", 4),
            &checkpoints(&["a", "b", "c"]),
            &examples(10),
            2,
        )
        .unwrap();
    assert!(!out.created);
    assert_eq!(
        (
            out.checkpoints_added,
            out.checkpoints_skipped,
            out.tasks_added
        ),
        (1, 2, 3)
    );
    assert_eq!(f.store.tasks("s").unwrap().len(), 9);

    // a changed evaluation set is refused, naming the first difference
    let mut changed = examples(10);
    changed[3].id = "other".into();
    let err = f
        .store
        .submit(&spec("s", 4), &checkpoints(&["d"]), &changed, 3)
        .unwrap_err();
    assert!(matches!(err, StoreError::Invalid(_)), "{err:?}");
    assert!(
        err.to_string().contains("different evaluation set"),
        "{err}"
    );
    assert!(err.to_string().contains("\"ex3\""), "{err}");
    let err = f
        .store
        .submit(&spec("s", 4), &checkpoints(&["d"]), &examples(9), 3)
        .unwrap_err();
    assert!(err.to_string().contains("10 examples"), "{err}");
    assert_eq!(f.store.checkpoints("s").unwrap().len(), 3);

    // shard_size 0 means 500
    let out = f
        .store
        .submit(&spec("t", 0), &checkpoints(&["a"]), &examples(1_200), 4)
        .unwrap();
    assert_eq!(out.tasks_added, 3);
}

#[test]
fn resubmit_with_changed_settings_is_refused_naming_them_and_plans_nothing() {
    let f = fixture(policy());
    let mut original = spec("s", 0);
    original.scoring = Some(Scoring {
        tokenizer: "gs://b/tok/".into(),
        chat_template: "tulu".into(),
        max_length: 2048,
        easylm: Some(EasyLmConfig {
            size: "8b".into(),
            ..EasyLmConfig::default()
        }),
        ..Scoring::default()
    });
    f.store
        .submit(&original, &checkpoints(&["a"]), &examples(4), 1)
        .unwrap();

    // the same settings from another evaluation-set path, shard size 500 spelled out: accepted
    let mut same = original.clone();
    same.eval_dataset = "/elsewhere/eval.jsonl".into();
    same.shard_size = 500;
    let out = f
        .store
        .submit(&same, &checkpoints(&["a", "b"]), &examples(4), 2)
        .unwrap();
    assert_eq!((out.checkpoints_added, out.checkpoints_skipped), (1, 1));

    let mut changed = original.clone();
    changed.scoring.as_mut().unwrap().chat_template = "llama-3".into();
    changed
        .scoring
        .as_mut()
        .unwrap()
        .easylm
        .as_mut()
        .unwrap()
        .num_heads = Some(8);
    changed.output_csv = "other.csv".into();
    let err = f
        .store
        .submit(&changed, &checkpoints(&["c"]), &examples(4), 3)
        .unwrap_err();
    assert!(matches!(err, StoreError::Invalid(_)), "{err:?}");
    let text = err.to_string();
    for named in [
        r#"chat_template is "tulu" there, "llama-3" here"#,
        "easylm.num_heads is None there, Some(8) here",
        r#"output_csv is "s.csv" there, "other.csv" here"#,
        "new sweep name",
    ] {
        assert!(text.contains(named), "{named:?} missing from: {text}");
    }
    assert!(!text.contains("tokenizer"), "unchanged field named: {text}");
    // nothing of the refused submit was planned
    let uris: Vec<_> = f
        .store
        .checkpoints("s")
        .unwrap()
        .into_iter()
        .map(|c| c.uri)
        .collect();
    assert_eq!(uris, ["/ckpts/a", "/ckpts/b"]);
}

#[test]
fn lease_prefers_held_checkpoints_then_the_oldest_sweep() {
    let f = fixture(policy());
    f.store
        .submit(
            &spec("old", 2),
            &checkpoints(&["a1", "a2"]),
            &examples(6),
            1,
        )
        .unwrap();
    f.store
        .submit(&spec("new", 2), &checkpoints(&["b1"]), &examples(6), 2)
        .unwrap();
    let w1 = register(&f.store, "w1", &[]);
    let w2 = register(&f.store, "w2", &[]);

    // nothing held: the oldest sweep's first task
    let l1 = lease(&f.store, &w1, &[], 10);
    assert_eq!(l1.sweep, "old");
    assert_eq!(uri(&l1), "/ckpts/a1");
    assert_eq!((l1.shard.start, l1.shard.end), (0, 2));
    assert_eq!(l1.examples.len(), 2);
    assert_eq!(l1.examples[1].id, "ex1");
    assert_eq!(l1.lease.epoch, 1);
    assert_eq!(l1.deadline_ms, 10 + 1_000);
    assert_eq!(l1.checkpoint.format, CheckpointFormat::HuggingFace);
    // prefetch: the next checkpoint nobody works on
    assert_eq!(l1.prefetch_uri, "/ckpts/a2");

    // a cached checkpoint of the newer sweep wins over the older sweep
    let l2 = lease(&f.store, &w2, &["/ckpts/b1"], 11);
    assert_eq!(l2.sweep, "new");
    assert_eq!(uri(&l2), "/ckpts/b1");

    // the checkpoint of the last lease counts as held
    let l3 = lease(&f.store, &w1, &[], 12);
    assert_eq!(uri(&l3), "/ckpts/a1");
    assert_eq!((l3.shard.start, l3.shard.end), (2, 4));
    let l4 = lease(&f.store, &w2, &[], 13);
    assert_eq!(uri(&l4), "/ckpts/b1");
    assert_eq!(l4.shard.start, 2);

    // unknown workers are told so
    let err = f.store.lease("w999", &[], 14).unwrap_err();
    assert!(matches!(err, StoreError::UnknownWorker(_)), "{err:?}");

    // draining workers get nothing new
    f.store.heartbeat(&w1, &[], true, None, 15).unwrap();
    assert_eq!(f.store.lease(&w1, &[], 16).unwrap(), LeaseOutcome::Draining);
}

#[test]
fn epochs_fence_stale_leases_and_results_are_stored_once() {
    let f = fixture(policy());
    f.store
        .submit(&spec("s", 4), &checkpoints(&["a"]), &examples(4), 1)
        .unwrap();
    let w1 = register(&f.store, "w1", &[]);
    let w2 = register(&f.store, "w2", &[]);

    let first = lease(&f.store, &w1, &[], 10);
    assert_eq!(first.lease.epoch, 1);
    f.store
        .fail(
            &w1,
            &lease_ref(&first),
            FailureKind::Released,
            "draining",
            11,
        )
        .unwrap();
    // released: back at once, no attempt counted
    let task = &f.store.tasks("s").unwrap()[0];
    assert_eq!((task.state, task.attempts), (TaskState::Pending, 0));

    let second = lease(&f.store, &w2, &[], 12);
    assert_eq!(second.lease.epoch, 2);
    assert_eq!(second.lease.task_id, first.lease.task_id);

    // the old epoch is refused and nothing of it is stored
    let err = f
        .store
        .store_results(&w1, &lease_ref(&first), &rewards(&first, 1.0), 13)
        .unwrap_err();
    assert!(matches!(err, StoreError::StaleLease(_)), "{err:?}");
    assert!(f.store.results("s", "/ckpts/a").unwrap().is_empty());
    // the right epoch from the wrong worker: forbidden, without naming the holder
    let err = f
        .store
        .store_results(&w1, &lease_ref(&second), &rewards(&second, 1.0), 13)
        .unwrap_err();
    assert!(matches!(err, StoreError::Forbidden(_)), "{err:?}");
    assert!(!err.to_string().contains(&w2), "{err}");
    assert!(f.store.results("s", "/ckpts/a").unwrap().is_empty());
    // heartbeats tell w1 to drop its old lease
    let revoked = f
        .store
        .heartbeat(&w1, &[lease_ref(&first)], false, None, 14)
        .unwrap();
    assert_eq!(revoked, vec![lease_ref(&first)]);

    // duplicates: stored once, the first result wins
    let counts = f
        .store
        .store_results(&w2, &lease_ref(&second), &rewards(&second, 5.0)[..3], 15)
        .unwrap();
    assert_eq!((counts.stored, counts.duplicates), (3, 0));
    let counts = f
        .store
        .store_results(&w2, &lease_ref(&second), &rewards(&second, 9.0), 16)
        .unwrap();
    assert_eq!((counts.stored, counts.duplicates), (1, 3));
    let stored = f.store.results("s", "/ckpts/a").unwrap();
    assert_eq!(stored.len(), 4);
    assert_eq!(stored[0].chosen, vec![5.0]);
    assert_eq!(stored[3].chosen, vec![9.0 + 3.0]);
    assert_eq!(stored[0].rejected, vec![-1.0]);

    let done = f
        .store
        .complete(&w2, &lease_ref(&second), "Seq. Classifier", "tokenizer", 17)
        .unwrap();
    assert!(done.first && done.checkpoint_done);
    assert_eq!(done.finished_sweeps, vec!["s".to_string()]);
    let ckpt = &f.store.checkpoints("s").unwrap()[0];
    assert_eq!(ckpt.state, CheckpointState::Done);
    assert_eq!(ckpt.model_type.as_deref(), Some("Seq. Classifier"));
    assert!(f.store.all_finished().unwrap());
    let inputs = f.store.report_inputs("s").unwrap();
    assert!(inputs.complete);
    assert_eq!(inputs.scored.len(), 1);
    assert_eq!(inputs.scored[0].rewards.len(), 4);
    assert_eq!(inputs.examples.len(), 4);
}

#[test]
fn results_outside_the_shard_or_with_a_wrong_id_are_refused_whole() {
    let f = fixture(policy());
    f.store
        .submit(&spec("s", 2), &checkpoints(&["a"]), &examples(4), 1)
        .unwrap();
    let w = register(&f.store, "w", &[]);
    let l = lease(&f.store, &w, &[], 10);
    assert_eq!((l.shard.start, l.shard.end), (0, 2));

    let mut batch = rewards(&l, 1.0);
    batch.push(ExampleScores {
        example_id: "ex2".into(),
        chosen: vec![1.0],
        rejected: vec![0.0],
        index: 2,
        texts: Vec::new(),
    });
    let err = f
        .store
        .store_results(&w, &lease_ref(&l), &batch, 11)
        .unwrap_err();
    assert!(matches!(err, StoreError::Invalid(_)), "{err:?}");
    assert!(
        err.to_string().contains("outside the shard [0, 2)"),
        "{err}"
    );

    let mut batch = rewards(&l, 1.0);
    batch[1].example_id = "ex7".into();
    let err = f
        .store
        .store_results(&w, &lease_ref(&l), &batch, 11)
        .unwrap_err();
    assert!(matches!(err, StoreError::Invalid(_)), "{err:?}");
    assert!(f.store.results("s", "/ckpts/a").unwrap().is_empty());

    // completing with results missing names how many
    f.store
        .store_results(&w, &lease_ref(&l), &rewards(&l, 1.0)[..1], 12)
        .unwrap();
    let err = f
        .store
        .complete(&w, &lease_ref(&l), "Seq. Classifier", "tokenizer", 13)
        .unwrap_err();
    assert!(matches!(err, StoreError::Precondition(_)), "{err:?}");
    assert!(err.to_string().contains("1 of the 2 examples"), "{err}");
}

#[test]
fn expired_leases_retry_with_backoff_then_fail_at_max_attempts() {
    let f = fixture(Policy {
        max_attempts: 2,
        ..policy()
    });
    f.store
        .submit(&spec("s", 4), &checkpoints(&["a"]), &examples(4), 1)
        .unwrap();
    let w = register(&f.store, "gpu-7", &[]);
    let l = lease(&f.store, &w, &[], 0);

    // a heartbeat keeps it alive past the first deadline
    assert!(f
        .store
        .heartbeat(&w, &[lease_ref(&l)], false, None, 900)
        .unwrap()
        .is_empty());
    assert_eq!(f.store.reap(1_500).unwrap().leases, 0);
    // then the worker goes silent
    let reaped = f.store.reap(1_901).unwrap();
    assert_eq!((reaped.leases, reaped.tasks_failed), (1, 0));
    let task = &f.store.tasks("s").unwrap()[0];
    assert_eq!(task.state, TaskState::Pending);
    assert_eq!(task.attempts, 1);
    assert_eq!(task.next_eligible_ms, 1_901 + 100);
    assert!(task
        .failure
        .as_deref()
        .unwrap()
        .contains("lease expired (worker gpu-7 (w1) stopped heartbeating)"));
    // an expired lease is revoked at the next heartbeat
    assert_eq!(
        f.store
            .heartbeat(&w, &[lease_ref(&l)], false, None, 1_902)
            .unwrap(),
        vec![lease_ref(&l)]
    );

    // backoff: not before next_eligible_ms (and no straggler, the task is pending)
    assert_eq!(
        f.store.lease(&w, &[], 1_950).unwrap(),
        LeaseOutcome::Idle {
            all_finished: false
        }
    );
    let l2 = lease(&f.store, &w, &[], 2_001);
    assert_eq!(l2.lease.epoch, 2);

    // second expiry: max_attempts reached, the task, checkpoint and sweep are finished
    let reaped = f.store.reap(3_002).unwrap();
    assert_eq!((reaped.leases, reaped.tasks_failed), (1, 1));
    assert_eq!(reaped.finished_sweeps, vec!["s".to_string()]);
    let task = &f.store.tasks("s").unwrap()[0];
    assert_eq!((task.state, task.attempts), (TaskState::Failed, 2));
    assert!(task
        .failure
        .as_deref()
        .unwrap()
        .contains("gave up after 2 attempts"));
    let ckpt = &f.store.checkpoints("s").unwrap()[0];
    assert_eq!(ckpt.state, CheckpointState::Failed);
    assert!(ckpt
        .failure
        .as_deref()
        .unwrap()
        .contains("stopped heartbeating"));

    let status = f.store.status(Some("s"), 3_003).unwrap();
    let sweep = &status.sweeps[0];
    assert_eq!((sweep.state, sweep.tasks_failed), (SweepState::Done, 1));
    assert_eq!(sweep.failures.len(), 2);
    assert_eq!(sweep.failures[0].attempt, 2);
    assert!(sweep.failures[0].reason.contains("stopped heartbeating"));
    assert_eq!(sweep.failures[0].worker, "gpu-7 (w1)");
    let inputs = f.store.report_inputs("s").unwrap();
    assert!(inputs.scored.is_empty());
    assert!(inputs.notes[0].contains("failed"), "{:?}", inputs.notes);
}

#[test]
fn transient_failures_back_off_and_checkpoint_failures_fail_the_checkpoint() {
    let f = fixture(Policy {
        max_attempts: 2,
        ..policy()
    });
    f.store
        .submit(
            &spec("s", 2),
            &checkpoints(&["bad", "good"]),
            &examples(6),
            1,
        )
        .unwrap();
    let w1 = register(&f.store, "w1", &[]);
    let w2 = register(&f.store, "w2", &[]);

    let l1 = lease(&f.store, &w1, &[], 10);
    assert_eq!(uri(&l1), "/ckpts/bad");
    f.store
        .fail(
            &w1,
            &lease_ref(&l1),
            FailureKind::Transient,
            "CUDA out of memory",
            11,
        )
        .unwrap();
    let task = &f.store.tasks("s").unwrap()[0];
    assert_eq!(
        (task.state, task.attempts, task.next_eligible_ms),
        (TaskState::Pending, 1, 111)
    );

    // w2 holds another shard of the bad checkpoint while w1 fails it for good
    let l2 = lease(&f.store, &w2, &["/ckpts/bad"], 12);
    assert_eq!(uri(&l2), "/ckpts/bad");
    let l3 = lease(&f.store, &w1, &[], 200);
    assert_eq!(uri(&l3), "/ckpts/bad");
    assert_eq!(l3.lease.task_id, l1.lease.task_id);
    let out = f
        .store
        .fail(
            &w1,
            &lease_ref(&l3),
            FailureKind::Checkpoint,
            "/ckpts/bad/config.json: missing field hidden_size",
            201,
        )
        .unwrap();
    // the failing task, w2's leased shard and the pending one
    assert_eq!(out.tasks_failed, 3);
    let tasks = f.store.tasks("s").unwrap();
    for t in &tasks[..3] {
        assert_eq!(t.state, TaskState::Failed, "{t:?}");
        assert!(
            t.failure.as_deref().unwrap().contains("hidden_size"),
            "{t:?}"
        );
    }
    assert!(tasks[3..].iter().all(|t| t.state == TaskState::Pending));
    let ckpt = &f.store.checkpoints("s").unwrap()[0];
    assert_eq!(ckpt.state, CheckpointState::Failed);
    assert!(ckpt.failure.as_deref().unwrap().contains("hidden_size"));
    // w2's lease on the failed checkpoint is revoked
    assert_eq!(
        f.store
            .heartbeat(&w2, &[lease_ref(&l2)], false, None, 202)
            .unwrap(),
        vec![lease_ref(&l2)]
    );
    // the sweep goes on with the other checkpoint
    let next = lease(&f.store, &w2, &[], 203);
    assert_eq!(uri(&next), "/ckpts/good");
    let status = f.store.status(None, 204).unwrap();
    assert_eq!(status.sweeps[0].state, SweepState::Active);
    assert_eq!(status.sweeps[0].tasks_failed, 3);
    assert!(status.sweeps[0].failures[0].reason.contains("hidden_size"));
}

#[test]
fn stragglers_get_a_duplicate_lease_and_the_first_complete_wins() {
    let f = fixture(policy());
    f.store
        .submit(&spec("s", 4), &checkpoints(&["a"]), &examples(4), 1)
        .unwrap();
    let slow = register(&f.store, "slow", &[]);
    let fast = register(&f.store, "fast", &[]);
    let third = register(&f.store, "third", &[]);
    let l1 = lease(&f.store, &slow, &[], 10);
    // the slow worker does not get a duplicate of its own task
    assert_eq!(
        f.store.lease(&slow, &[], 11).unwrap(),
        LeaseOutcome::Idle {
            all_finished: false
        }
    );
    let l2 = lease(&f.store, &fast, &[], 12);
    assert_eq!(l2.lease.task_id, l1.lease.task_id);
    assert_eq!(l2.lease.epoch, 2);
    // at most two live leases per task
    assert!(matches!(
        f.store.lease(&third, &[], 13).unwrap(),
        LeaseOutcome::Idle { .. }
    ));

    // both stream; the first result of each example wins
    f.store
        .store_results(&slow, &lease_ref(&l1), &rewards(&l1, 1.0)[..2], 14)
        .unwrap();
    let counts = f
        .store
        .store_results(&fast, &lease_ref(&l2), &rewards(&l2, 2.0), 15)
        .unwrap();
    assert_eq!((counts.stored, counts.duplicates), (2, 2));
    assert!(
        f.store
            .complete(&fast, &lease_ref(&l2), "Seq. Classifier", "tokenizer", 16)
            .unwrap()
            .first
    );
    // the slow one is told to stop, and its late Complete is not first
    assert_eq!(
        f.store
            .heartbeat(&slow, &[lease_ref(&l1)], false, None, 17)
            .unwrap(),
        vec![lease_ref(&l1)]
    );
    let late = f
        .store
        .complete(&slow, &lease_ref(&l1), "Seq. Classifier", "tokenizer", 18)
        .unwrap();
    assert!(!late.first);
    let stored = f.store.results("s", "/ckpts/a").unwrap();
    assert_eq!(stored[0].chosen, vec![1.0]);
    assert_eq!(stored[3].chosen, vec![2.0 + 3.0]);

    // a duplicate lease expiring while the other is alive costs no attempt
    let f = fixture(policy());
    f.store
        .submit(&spec("s", 4), &checkpoints(&["a"]), &examples(4), 1)
        .unwrap();
    let a = register(&f.store, "a", &[]);
    let b = register(&f.store, "b", &[]);
    let la = lease(&f.store, &a, &[], 0);
    let _lb = lease(&f.store, &b, &[], 500);
    f.store.reap(1_001).unwrap();
    let task = &f.store.tasks("s").unwrap()[0];
    assert_eq!((task.state, task.attempts), (TaskState::Leased, 0));
    assert_eq!(
        f.store
            .heartbeat(&a, &[lease_ref(&la)], false, None, 1_002)
            .unwrap(),
        vec![lease_ref(&la)]
    );
}

#[test]
fn cancel_revokes_leases_and_finishes_the_sweep() {
    let f = fixture(policy());
    f.store
        .submit(&spec("s", 2), &checkpoints(&["a"]), &examples(6), 1)
        .unwrap();
    let w = register(&f.store, "w", &[]);
    let l = lease(&f.store, &w, &[], 10);
    assert_eq!(f.store.cancel("s", 11).unwrap(), 3);
    assert_eq!(
        f.store
            .heartbeat(&w, &[lease_ref(&l)], false, None, 12)
            .unwrap(),
        vec![lease_ref(&l)]
    );
    let err = f
        .store
        .store_results(&w, &lease_ref(&l), &rewards(&l, 1.0), 13)
        .unwrap_err();
    assert!(matches!(err, StoreError::StaleLease(_)), "{err:?}");
    assert!(f.store.all_finished().unwrap());
    assert_eq!(
        f.store.lease(&w, &[], 14).unwrap(),
        LeaseOutcome::Idle { all_finished: true }
    );
    assert!(matches!(
        f.store.cancel("nope", 15).unwrap_err(),
        StoreError::NotFound(_)
    ));
}

#[test]
fn a_reopened_file_resumes_exactly() {
    let f = fixture(policy());
    f.store
        .submit(&spec("s", 2), &checkpoints(&["a", "b"]), &examples(6), 1)
        .unwrap();
    let w1 = register(&f.store, "w1", &["/ckpts/b"]);
    let w2 = register(&f.store, "w2", &[]);
    let l1 = lease(&f.store, &w1, &["/ckpts/b"], 10);
    let l2 = lease(&f.store, &w2, &[], 11);
    f.store
        .store_results(&w1, &lease_ref(&l1), &rewards(&l1, 1.0), 12)
        .unwrap();
    f.store
        .complete(&w1, &lease_ref(&l1), "Seq. Classifier", "tokenizer", 13)
        .unwrap();
    let l3 = lease(&f.store, &w1, &[], 14);
    f.store
        .store_results(&w1, &lease_ref(&l3), &rewards(&l3, 1.0)[..1], 15)
        .unwrap();
    f.store
        .fail(
            &w2,
            &lease_ref(&l2),
            FailureKind::Transient,
            "preempted",
            16,
        )
        .unwrap();

    let status = f.store.status(None, 20).unwrap();
    let tasks = f.store.tasks("s").unwrap();
    let leases = f.store.leases().unwrap();
    let results = f.store.results("s", "/ckpts/b").unwrap();
    let path = f.path.clone();
    let Fixture { _dir, store, .. } = f;
    drop(store);

    let store = Store::open(&path, policy()).unwrap();
    assert_eq!(store.status(None, 20).unwrap(), status);
    assert_eq!(store.tasks("s").unwrap(), tasks);
    assert_eq!(store.leases().unwrap(), leases);
    assert_eq!(store.results("s", "/ckpts/b").unwrap(), results);
    // the live lease keeps its absolute deadline and its holder can go on
    let live: Vec<_> = leases
        .iter()
        .filter(|l| l.state == LeaseState::Active)
        .collect();
    assert_eq!(live.len(), 1);
    // (results count as a sign of life: the deadline moved with them)
    assert_eq!(live[0].deadline_ms, 15 + 1_000);
    let counts = store
        .store_results(&w1, &lease_ref(&l3), &rewards(&l3, 1.0), 21)
        .unwrap();
    assert_eq!((counts.stored, counts.duplicates), (1, 1));
    assert!(
        store
            .complete(&w1, &lease_ref(&l3), "Seq. Classifier", "tokenizer", 22)
            .unwrap()
            .first
    );
    // epochs continue from the file
    let next = lease(&store, &w2, &[], 1_000);
    assert_eq!(next.lease.task_id, l2.lease.task_id);
    assert_eq!(next.lease.epoch, 2);
}

#[test]
fn non_finite_scores_and_wrong_label_counts_are_refused_whole() {
    let f = fixture(policy());
    f.store
        .submit(&spec("s", 4), &checkpoints(&["a"]), &examples(4), 1)
        .unwrap();
    let w = register(&f.store, "w", &[]);
    let l = lease(&f.store, &w, &[], 10);
    assert_eq!((l.shard.start, l.shard.end), (0, 4));

    // one bad number refuses the whole message: the finite rows before it are not stored
    for bad in [f64::NAN, f64::INFINITY, f64::NEG_INFINITY] {
        let mut batch = rewards(&l, 1.0);
        batch[2].rejected = vec![bad];
        let err = f
            .store
            .store_results(&w, &lease_ref(&l), &batch, 11)
            .unwrap_err();
        assert!(matches!(err, StoreError::Invalid(_)), "{err:?}");
        assert!(
            err.to_string()
                .contains("example 2 (ex2) has a non-finite score"),
            "{err}"
        );
        assert!(f.store.results("s", "/ckpts/a").unwrap().is_empty());
    }

    // labels: chosen and rejected agree, and every message agrees with what is stored
    let mut batch = rewards(&l, 1.0);
    batch[1].chosen = vec![1.0, 2.0];
    let err = f
        .store
        .store_results(&w, &lease_ref(&l), &batch, 12)
        .unwrap_err();
    assert!(
        err.to_string()
            .contains("2 chosen and 1 rejected scores where this checkpoint has 1 label(s)"),
        "{err}"
    );
    assert!(f.store.results("s", "/ckpts/a").unwrap().is_empty());
    f.store
        .store_results(&w, &lease_ref(&l), &rewards(&l, 1.0)[..2], 13)
        .unwrap();
    let mut later: Vec<ExampleScores> = rewards(&l, 1.0)[2..].to_vec();
    for r in &mut later {
        r.chosen = vec![1.0, 2.0];
        r.rejected = vec![0.0, 3.0];
    }
    let err = f
        .store
        .store_results(&w, &lease_ref(&l), &later, 14)
        .unwrap_err();
    assert!(
        err.to_string()
            .contains("2 chosen and 2 rejected scores where this checkpoint has 1 label(s)"),
        "{err}"
    );
    assert_eq!(f.store.results("s", "/ckpts/a").unwrap().len(), 2);
    // the right shape completes the shard
    f.store
        .store_results(&w, &lease_ref(&l), &rewards(&l, 1.0)[2..], 15)
        .unwrap();
    assert_eq!(f.store.results("s", "/ckpts/a").unwrap().len(), 4);
}

#[test]
fn retry_failed_plans_failed_and_cancelled_checkpoints_again_keeping_results() {
    let f = fixture(Policy {
        max_attempts: 1,
        ..policy()
    });
    f.store
        .submit(&spec("s", 2), &checkpoints(&["bad"]), &examples(4), 1)
        .unwrap();
    let w = register(&f.store, "w", &[]);
    // the first shard is scored, then the checkpoint fails on the second
    let l1 = lease(&f.store, &w, &[], 10);
    f.store
        .store_results(&w, &lease_ref(&l1), &rewards(&l1, 1.0), 11)
        .unwrap();
    f.store
        .complete(&w, &lease_ref(&l1), "Seq. Classifier", "tokenizer", 12)
        .unwrap();
    let l2 = lease(&f.store, &w, &[], 13);
    let out = f
        .store
        .fail(&w, &lease_ref(&l2), FailureKind::Checkpoint, "bad", 14)
        .unwrap();
    assert_eq!(out.finished_sweeps, vec!["s".to_string()]);
    // nothing to retry in a sweep without failures; an unknown sweep is an error
    assert!(f.store.retry_failed("nope", 15).is_err());

    let retried = f.store.retry_failed("s", 15).unwrap();
    assert_eq!((retried.checkpoints, retried.tasks), (1, 1));
    let tasks = f.store.tasks("s").unwrap();
    assert_eq!(
        tasks
            .iter()
            .map(|t| (t.state, t.attempts))
            .collect::<Vec<_>>(),
        vec![(TaskState::Done, 0), (TaskState::Pending, 0)]
    );
    let status = f.store.status(Some("s"), 16).unwrap();
    assert_eq!(status.sweeps[0].state, SweepState::Active);
    assert_eq!(
        f.store.checkpoints("s").unwrap()[0].state,
        CheckpointState::Pending
    );
    // the first shard's results are kept, only the failed shard runs again
    assert_eq!(f.store.results("s", "/ckpts/bad").unwrap().len(), 2);
    let again = lease(&f.store, &w, &[], 17);
    assert_eq!((again.shard.start, again.shard.end), (2, 4));
    f.store
        .store_results(&w, &lease_ref(&again), &rewards(&again, 1.0), 18)
        .unwrap();
    let done = f
        .store
        .complete(&w, &lease_ref(&again), "Seq. Classifier", "tokenizer", 19)
        .unwrap();
    assert_eq!(done.finished_sweeps, vec!["s".to_string()]);
    assert_eq!(
        f.store.checkpoints("s").unwrap()[0].state,
        CheckpointState::Done
    );
    assert_eq!(f.store.retry_failed("s", 20).unwrap().tasks, 0);

    // a cancelled sweep comes back the same way
    f.store
        .submit(&spec("c", 2), &checkpoints(&["x"]), &examples(4), 21)
        .unwrap();
    f.store.cancel("c", 22).unwrap();
    let retried = f.store.retry_failed("c", 23).unwrap();
    assert_eq!((retried.checkpoints, retried.tasks), (1, 2));
    assert_eq!(
        f.store.status(Some("c"), 24).unwrap().sweeps[0].state,
        SweepState::Active
    );
}

#[test]
fn a_worker_is_its_registration_secret() {
    let f = fixture(policy());
    let w1 = register(&f.store, "gpu", &[]);
    // the same name again is another registration: a new id, its own secret
    let w2 = register(&f.store, "gpu", &[]);
    assert_ne!(w1, w2);
    f.store.check_worker(&w1, "secret-of-gpu").unwrap();
    f.store.check_worker(&w2, "secret-of-gpu").unwrap();
    for wrong in ["", "secret-of-gp", "secret-of-gpu ", "SECRET-OF-GPU"] {
        let err = f.store.check_worker(&w1, wrong).unwrap_err();
        assert!(
            matches!(err, StoreError::Forbidden(_)),
            "{wrong:?}: {err:?}"
        );
    }
    let err = f.store.check_worker("w999", "secret-of-gpu").unwrap_err();
    assert!(matches!(err, StoreError::UnknownWorker(_)), "{err:?}");

    // only the secret's digest is in the file
    drop(f.store);
    let bytes = std::fs::read(&f.path).unwrap();
    let wal = std::fs::read(f.path.with_extension("db-wal")).unwrap_or_default();
    for file in [&bytes, &wal] {
        assert!(
            !file.windows(13).any(|w| w == b"secret-of-gpu"),
            "the secret is stored in clear"
        );
    }
}

#[test]
fn a_file_from_before_worker_secrets_gets_the_column_and_its_workers_register_again() {
    let f = fixture(policy());
    let old = register(&f.store, "old", &[]);
    drop(f.store);
    // the version-1 layout: no secret_digest column
    {
        let conn = rusqlite::Connection::open(&f.path).unwrap();
        conn.execute_batch("ALTER TABLE workers DROP COLUMN secret_digest")
            .unwrap();
    }
    let store = Store::open(&f.path, policy()).unwrap();
    // a worker registered without a secret cannot act: it is told to register again
    let err = store.check_worker(&old, "").unwrap_err();
    assert!(matches!(err, StoreError::UnknownWorker(_)), "{err:?}");
    let new = register(&store, "new", &[]);
    store.check_worker(&new, "secret-of-new").unwrap();
}

#[test]
fn a_state_name_the_store_does_not_know_is_a_corrupt_file_naming_column_and_text() {
    let f = fixture(policy());
    f.store
        .submit(&spec("s", 2), &checkpoints(&["a"]), &examples(4), 1)
        .unwrap();
    let w = register(&f.store, "w", &[]);
    let held = lease(&f.store, &w, &[], 10);
    {
        let conn = rusqlite::Connection::open(&f.path).unwrap();
        conn.execute("UPDATE tasks SET state = 'leasd' WHERE id = 2", [])
            .unwrap();
        conn.execute("UPDATE leases SET state = 'gone'", [])
            .unwrap();
    }
    // a reading call
    let err = f.store.tasks("s").unwrap_err();
    assert!(matches!(err, StoreError::Corrupt(_)), "{err:?}");
    let text = err.to_string();
    assert!(
        text.contains("tasks.state") && text.contains("\"leasd\""),
        "{text}"
    );
    // a writing call: refused whole, nothing changes
    let err = f
        .store
        .store_results(&w, &lease_ref(&held), &rewards(&held, 1.0), 11)
        .unwrap_err();
    assert!(matches!(err, StoreError::Corrupt(_)), "{err:?}");
    assert!(
        err.to_string().contains("leases.state holds \"gone\""),
        "{err}"
    );
    assert!(f.store.results("s", "/ckpts/a").unwrap().is_empty());
}

/// The texts a worker sends for pair `i` (the same for every checkpoint with one tokenizer and
/// chat template).
fn texts_of(i: u32) -> Vec<String> {
    vec![
        format!("<|user|>\np{i}\n<|assistant|>\nc</s>"),
        format!("<|user|>\np{i}\n<|assistant|>\nr</s>"),
    ]
}

/// [`texts_of`] of pairs `0..n`, as the store reads them back.
fn stored_texts_of(n: u32) -> Vec<Vec<std::sync::Arc<str>>> {
    (0..n)
        .map(|i| texts_of(i).into_iter().map(Into::into).collect())
        .collect()
}

/// Scores `worker`'s next lease (with texts when `with_texts`) and completes it.
fn score_next(store: &Store, worker: &str, now: i64, with_texts: bool) {
    let held = lease(store, worker, &[], now);
    let mut batch = rewards(&held, 1.0);
    if with_texts {
        for reward in &mut batch {
            reward.texts = texts_of(reward.index);
        }
    }
    store
        .store_results(worker, &lease_ref(&held), &batch, now + 1)
        .unwrap();
    store
        .complete(
            worker,
            &lease_ref(&held),
            "Seq. Classifier",
            "tulu",
            now + 2,
        )
        .unwrap();
}

fn count_texts(path: &std::path::Path) -> i64 {
    let conn = rusqlite::Connection::open(path).unwrap();
    conn.query_row("SELECT COUNT(*) FROM texts", [], |r| r.get(0))
        .unwrap()
}

#[test]
fn texts_are_stored_once_and_read_back_with_each_checkpoints_scores() {
    let f = fixture(policy());
    f.store
        .submit(&spec("s", 4), &checkpoints(&["a", "b"]), &examples(4), 1)
        .unwrap();
    let w = register(&f.store, "w", &[]);
    // a pair has 0, 2 or 3 texts: one text is refused whole
    let held = lease(&f.store, &w, &[], 5);
    let mut bad = rewards(&held, 1.0);
    bad[3].texts = vec!["only one".into()];
    let err = f
        .store
        .store_results(&w, &lease_ref(&held), &bad, 6)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("example 3 (ex3) has 1 texts") && err.contains("nothing of this message"),
        "{err}"
    );
    assert!(f.store.results("s", "/ckpts/a").unwrap().is_empty());
    for reward in &mut bad {
        reward.texts = texts_of(reward.index);
    }
    f.store
        .store_results(&w, &lease_ref(&held), &bad, 7)
        .unwrap();
    f.store
        .complete(&w, &lease_ref(&held), "Seq. Classifier", "tulu", 8)
        .unwrap();
    score_next(&f.store, &w, 20, true);
    let inputs = f.store.report_inputs("s").unwrap();
    assert_eq!(inputs.scored.len(), 2);
    let want = stored_texts_of(4);
    for scored in &inputs.scored {
        assert_eq!(scored.texts.as_ref(), Some(&want), "{}", scored.name);
    }
    // read once for both checkpoints
    let (a, b) = (&inputs.scored[0].texts, &inputs.scored[1].texts);
    assert!(std::sync::Arc::ptr_eq(
        &a.as_ref().unwrap()[2][1],
        &b.as_ref().unwrap()[2][1]
    ));
    // 4 pairs x 2 texts, kept once for both checkpoints
    assert_eq!(count_texts(&f.path), 8);
}

#[test]
fn a_file_from_before_texts_keeps_its_results_and_stores_texts_from_then_on() {
    let f = fixture(policy());
    f.store
        .submit(&spec("s", 4), &checkpoints(&["a", "b"]), &examples(4), 1)
        .unwrap();
    let w = register(&f.store, "w", &[]);
    score_next(&f.store, &w, 10, false);
    let before = f.store.report_inputs("s").unwrap();
    assert_eq!(before.scored.len(), 1);
    assert_eq!(before.scored[0].texts, None);
    drop(f.store);
    // the layout before texts were kept: no results.texts column, no texts table
    {
        let conn = rusqlite::Connection::open(&f.path).unwrap();
        conn.execute_batch("ALTER TABLE results DROP COLUMN texts; DROP TABLE texts;")
            .unwrap();
        let has_column: bool = conn
            .query_row(
                "SELECT COUNT(*) > 0 FROM pragma_table_info('results') WHERE name = 'texts'",
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert!(!has_column);
    }
    let store = Store::open(&f.path, policy()).unwrap();
    // every stored row is still there, read as before (no texts)
    let after = store.report_inputs("s").unwrap();
    assert_eq!(after.scored, before.scored);
    assert_eq!(after.notes, before.notes);
    // the rest of the sweep is scored with texts, by the worker registered before
    score_next(&store, &w, 20, true);
    let inputs = store.report_inputs("s").unwrap();
    assert_eq!(inputs.scored.len(), 2);
    assert_eq!(inputs.scored[0], before.scored[0]);
    assert_eq!(inputs.scored[1].texts, Some(stored_texts_of(4)));
    drop(store);
    assert_eq!(count_texts(&f.path), 8);
}

/// Scores the next task's shard (one float per example) and completes it, saying whether the
/// model's pipeline returns one float per sequence.
fn score_next_scalar(store: &Store, worker: &str, now: i64, scalar_output: bool) {
    let grant = lease(store, worker, &[], now);
    store
        .store_results(worker, &lease_ref(&grant), &rewards(&grant, 1.0), now + 1)
        .unwrap();
    store
        .complete_with(
            worker,
            &lease_ref(&grant),
            "Seq. Classifier",
            "tulu",
            scalar_output,
            now + 2,
        )
        .unwrap();
}

#[test]
fn a_scalar_pipelines_flag_is_stored_per_checkpoint_and_old_rows_read_false() {
    let f = fixture(policy());
    f.store
        .submit(
            &spec("s", 4),
            &checkpoints(&["a", "b", "c"]),
            &examples(4),
            1,
        )
        .unwrap();
    let w = register(&f.store, "w", &[]);
    score_next_scalar(&f.store, &w, 10, true);
    score_next_scalar(&f.store, &w, 20, false);
    let inputs = f.store.report_inputs("s").unwrap();
    let flags: Vec<bool> = inputs.scored.iter().map(|c| c.scalar_output).collect();
    assert_eq!(flags, vec![true, false]);
    drop(f.store);
    // the layout before the column: the file opens, its rows read as lists (false)
    {
        let conn = rusqlite::Connection::open(&f.path).unwrap();
        conn.execute_batch("ALTER TABLE checkpoints DROP COLUMN scalar_output")
            .unwrap();
    }
    let store = Store::open(&f.path, policy()).unwrap();
    let before = store.report_inputs("s").unwrap();
    let flags: Vec<bool> = before.scored.iter().map(|c| c.scalar_output).collect();
    assert_eq!(flags, vec![false, false]);
    // and the column is back for what is scored from then on
    score_next_scalar(&store, &w, 30, true);
    let after = store.report_inputs("s").unwrap();
    let flags: Vec<bool> = after.scored.iter().map(|c| c.scalar_output).collect();
    assert_eq!(flags, vec![false, false, true]);
}
