//! The gRPC server in-process on 127.0.0.1:0, driven by the generated tonic clients: a whole
//! small sweep, refused result streams, expiry through the reaper, and the Sweeps API.

use std::time::Duration;

use herd_coordinator::config::{Limits, ServerConfig};
use herd_coordinator::domain::{
    CheckpointFormat, ExampleScores, PlannedCheckpoint, PlannedExample, TaskState,
};
use herd_coordinator::scheduler::Policy;
use herd_coordinator::security::{RoleTokens, SecurityConfig};
use herd_coordinator::server::{spawn, ServerHandle};
use herd_rpc::security::{AuthChannel as Channel, ClientSecurity};
use herd_rpc::v1::{
    lease_response::Outcome, sweeps_client::SweepsClient, workers_client::WorkersClient,
    CancelRequest, Capabilities, CompleteRequest, ExampleReward, FailRequest, FailureKind,
    HeartbeatRequest, Lease, LeaseRef, LeaseRequest, RegisterRequest, ResultBatch, ResultsRequest,
    StatusRequest, SubmitRequest, SweepSpec,
};
use herd_rpc::v1::{CheckpointState, SweepState};
use tonic::Code;

fn args(dir: &std::path::Path, lease_timeout_ms: u64) -> ServerConfig {
    ServerConfig {
        state: dir.join("state.db"),
        listen: "127.0.0.1:0".parse().unwrap(),
        out_dir: dir.join("out"),
        policy: Policy {
            lease_timeout_ms,
            heartbeat_interval_ms: 50,
            max_attempts: 3,
            retry_backoff_ms: 20,
            stragglers: true,
            max_leases_per_task: 2,
            ..Policy::default()
        },
        exit_when_done: true,
        metrics_listen: None,
        security: SecurityConfig::with_tokens(&tokens()),
        // the retry loops here lease every 20 ms; the lease rate limit is tested in auth.rs
        limits: Limits {
            lease_rate: 0.0,
            ..Limits::default()
        },
    }
}

/// Every call carries its role's token (the server refuses calls without it: tests/auth.rs).
fn tokens() -> RoleTokens {
    RoleTokens {
        worker: "service-test-worker-token".into(),
        operator: "service-test-operator-token".into(),
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

/// Plans a sweep straight through the store (the planner is tested on its own).
fn plan(handle: &ServerHandle, name: &str, checkpoints: &[&str], examples: u32, shard_size: u32) {
    let checkpoints: Vec<PlannedCheckpoint> = checkpoints
        .iter()
        .map(|n| PlannedCheckpoint {
            uri: format!("/ckpts/{n}"),
            name: format!("rm-eval-{n}"),
            format: CheckpointFormat::HuggingFace,
            size_bytes: 10,
            param_bytes: 0,
        })
        .collect();
    // every RewardBench subset, so the sweep CSV can be built
    let subsets = herd_rewardbench::v1::SUBSETS;
    let examples: Vec<PlannedExample> = (0..examples)
        .map(|i| PlannedExample {
            index: i,
            id: format!("{i}"),
            subset: subsets[i as usize % subsets.len()].into(),
            pair_json: format!(
                r#"{{"id":"{i}","prompt":"question {i}","chosen":"good","rejected":"bad","subset":"{}"}}"#,
                subsets[i as usize % subsets.len()]
            ),
            completions: None,
        })
        .collect();
    handle
        .store()
        .submit(
            &SweepSpec {
                shard_size,
                ..spec(name)
            },
            &checkpoints,
            &examples,
            1,
        )
        .unwrap();
}

async fn clients(handle: &ServerHandle) -> (WorkersClient<Channel>, SweepsClient<Channel>) {
    let channel = tonic::transport::Endpoint::from_shared(handle.url())
        .unwrap()
        .connect()
        .await
        .unwrap();
    let tokens = tokens();
    (
        WorkersClient::new(ClientSecurity::token(Some(&tokens.worker)).intercept(channel.clone())),
        SweepsClient::new(ClientSecurity::token(Some(&tokens.operator)).intercept(channel)),
    )
}

/// A registration: the id and secret Register answered.
#[derive(Clone, Debug)]
struct Me {
    id: String,
    secret: String,
}

async fn register(workers: &mut WorkersClient<Channel>, name: &str) -> Me {
    let answer = workers
        .register(RegisterRequest {
            name: name.into(),
            capabilities: Some(Capabilities {
                device: "cpu".into(),
                ..Capabilities::default()
            }),
        })
        .await
        .unwrap()
        .into_inner();
    Me {
        id: answer.worker_id,
        secret: answer.worker_secret,
    }
}

async fn lease(workers: &mut WorkersClient<Channel>, me: &Me) -> Option<Outcome> {
    workers
        .lease(LeaseRequest {
            worker_id: me.id.clone(),
            worker_secret: me.secret.clone(),
            cached_checkpoints: vec![],
        })
        .await
        .unwrap()
        .into_inner()
        .outcome
}

fn rewards(lease: &Lease) -> Vec<ExampleReward> {
    lease
        .examples
        .iter()
        .map(|e| ExampleReward {
            example_id: e.id.clone(),
            // chosen wins on even indices
            scores_chosen: vec![if e.index % 2 == 0 { 1.0 } else { -1.0 }],
            scores_rejected: vec![0.0],
            index: e.index,
            texts: Vec::new(),
        })
        .collect()
}

fn batch(me: &Me, lease: LeaseRef, rewards: Vec<ExampleReward>) -> ResultBatch {
    ResultBatch {
        worker_id: me.id.clone(),
        worker_secret: me.secret.clone(),
        lease: Some(lease),
        rewards,
    }
}

#[tokio::test]
async fn a_small_sweep_end_to_end() {
    let dir = tempfile::tempdir().unwrap();
    let handle = spawn(args(dir.path(), 5_000)).await.unwrap();
    plan(&handle, "tiny", &["a", "b"], 46, 23);
    let (mut workers, mut sweeps) = clients(&handle).await;

    // the planner's errors come back as INVALID_ARGUMENT
    let err = sweeps
        .submit(SubmitRequest {
            spec: Some(SweepSpec {
                checkpoints: vec![dir.path().join("nothing-here").display().to_string()],
                eval_dataset: dir.path().join("missing.jsonl").display().to_string(),
                ..spec("broken")
            }),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");

    // unknown workers must register
    let err = workers
        .lease(LeaseRequest {
            worker_id: "w404".into(),
            worker_secret: "no-such-registration".into(),
            cached_checkpoints: vec![],
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound);

    let me = register(&mut workers, "test-worker").await;
    let mut completed = 0;
    let mut first_lease = true;
    let shutdown = loop {
        match lease(&mut workers, &me).await {
            Some(Outcome::Lease(l)) => {
                let lref = l.lease.unwrap();
                assert_eq!(l.examples.len(), 23);
                assert_eq!(l.sweep, "tiny");
                if first_lease {
                    first_lease = false;
                    assert_eq!(l.prefetch_uri, "/ckpts/b");
                    // an index outside the shard ends the stream, nothing of it stored
                    let mut bad = rewards(&l);
                    bad.push(ExampleReward {
                        example_id: "40".into(),
                        scores_chosen: vec![1.0],
                        scores_rejected: vec![0.0],
                        index: 40,
                        texts: Vec::new(),
                    });
                    let err = workers
                        .stream_results(tokio_stream::iter(vec![batch(&me, lref, bad)]))
                        .await
                        .unwrap_err();
                    assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
                    assert!(err.message().contains("outside the shard"), "{err:?}");
                    // an unknown epoch: FAILED_PRECONDITION
                    let stale = LeaseRef {
                        task_id: lref.task_id,
                        epoch: lref.epoch + 1,
                    };
                    let err = workers
                        .stream_results(tokio_stream::iter(vec![batch(&me, stale, rewards(&l))]))
                        .await
                        .unwrap_err();
                    assert_eq!(err.code(), Code::FailedPrecondition, "{err:?}");
                    // Complete before the results: FAILED_PRECONDITION naming what is missing
                    let err = workers
                        .complete(CompleteRequest {
                            worker_id: me.id.clone(),
                            worker_secret: me.secret.clone(),
                            lease: Some(lref),
                            model_type: "Seq. Classifier".into(),
                            chat_template: "tokenizer".into(),
                            scalar_output: false,
                        })
                        .await
                        .unwrap_err();
                    assert_eq!(err.code(), Code::FailedPrecondition);
                    assert!(err.message().contains("23 of the 23 examples"), "{err:?}");
                }
                let hb = workers
                    .heartbeat(HeartbeatRequest {
                        worker_id: me.id.clone(),
                        worker_secret: me.secret.clone(),
                        leases: vec![lref],
                        draining: false,
                        stats: None,
                    })
                    .await
                    .unwrap()
                    .into_inner();
                assert!(hb.revoked.is_empty());
                // two messages, the second repeating the first example
                let all = rewards(&l);
                let counts = workers
                    .stream_results(tokio_stream::iter(vec![
                        batch(&me, lref, all[..1].to_vec()),
                        batch(&me, lref, all.clone()),
                    ]))
                    .await
                    .unwrap()
                    .into_inner();
                assert_eq!((counts.stored, counts.duplicates), (23, 1));
                let done = workers
                    .complete(CompleteRequest {
                        worker_id: me.id.clone(),
                        worker_secret: me.secret.clone(),
                        lease: Some(lref),
                        model_type: "Seq. Classifier".into(),
                        chat_template: "tokenizer".into(),
                        scalar_output: false,
                    })
                    .await
                    .unwrap()
                    .into_inner();
                assert!(done.first);
                completed += 1;
            }
            Some(Outcome::RetryAfterMs(ms)) => panic!("idle ({ms} ms) with work left"),
            Some(Outcome::Shutdown(s)) => break s,
            None => panic!("empty lease answer"),
        }
    };
    assert!(shutdown);
    assert_eq!(completed, 4);
    tokio::time::timeout(Duration::from_secs(20), handle.finished())
        .await
        .expect("the server signals every sweep finished");

    let status = sweeps
        .status(StatusRequest {
            sweep: String::new(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(status.sweeps.len(), 1);
    let s = &status.sweeps[0];
    assert_eq!(s.state(), SweepState::Done);
    assert_eq!((s.tasks_total, s.tasks_done, s.tasks_failed), (4, 4, 0));
    assert!(
        dir.path().join("out").join("tiny").exists(),
        "the report folder is written"
    );
    assert_eq!((s.examples_total, s.examples_stored), (92, 92));
    assert!(s
        .checkpoints
        .iter()
        .all(|c| c.state() == CheckpointState::Done));
    assert_eq!(status.workers.len(), 1);
    assert_eq!(status.workers[0].name, "test-worker");

    let results = sweeps
        .results(ResultsRequest {
            sweep: "tiny".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(results.complete);
    assert_eq!(results.output_csv, "tiny.csv");
    assert_eq!(results.checkpoints.len(), 2, "{:?}", results.notes);
    assert!(!results.csv.is_empty(), "{:?}", results.notes);

    let err = sweeps
        .cancel(CancelRequest {
            sweep: "nope".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound);
    handle.shutdown().await.unwrap();
}

#[tokio::test]
async fn expired_leases_are_reaped_and_old_epochs_refused() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = args(dir.path(), 300);
    config.policy.stragglers = false;
    let handle = spawn(config).await.unwrap();
    plan(&handle, "s", &["a"], 2, 2);
    let (mut workers, mut sweeps) = clients(&handle).await;
    let gone = register(&mut workers, "gone").await;
    let other = register(&mut workers, "other").await;

    let Some(Outcome::Lease(old)) = lease(&mut workers, &gone).await else {
        panic!("expected a lease");
    };
    let old_ref = old.lease.unwrap();
    // `gone` never heartbeats: the reaper expires its lease and the task comes back (after
    // the backoff) with a new epoch
    let new = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            match lease(&mut workers, &other).await {
                Some(Outcome::Lease(l)) => break l,
                Some(Outcome::RetryAfterMs(_)) => {
                    tokio::time::sleep(Duration::from_millis(20)).await
                }
                other => panic!("unexpected {other:?}"),
            }
        }
    })
    .await
    .expect("the task is leased again");
    assert_eq!(new.lease.unwrap().task_id, old_ref.task_id);
    assert_eq!(new.lease.unwrap().epoch, old_ref.epoch + 1);
    let new_ref = new.lease.unwrap();

    let err = workers
        .stream_results(tokio_stream::iter(vec![batch(
            &gone,
            old_ref,
            rewards(&old),
        )]))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition, "{err:?}");
    let hb = workers
        .heartbeat(HeartbeatRequest {
            worker_id: gone.id.clone(),
            worker_secret: gone.secret.clone(),
            leases: vec![old_ref],
            draining: false,
            stats: None,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(hb.revoked, vec![old_ref]);

    let status = sweeps
        .status(StatusRequest { sweep: "s".into() })
        .await
        .unwrap()
        .into_inner();
    let failure = &status.sweeps[0].failures[0];
    assert!(
        failure.reason.contains("stopped heartbeating"),
        "{failure:?}"
    );
    assert_eq!(failure.worker, format!("gone ({})", gone.id));

    // a transient failure is recorded with its reason and retried
    workers
        .fail(FailRequest {
            worker_id: other.id.clone(),
            worker_secret: other.secret.clone(),
            lease: Some(new_ref),
            kind: FailureKind::Transient as i32,
            reason: "CUDA out of memory".into(),
        })
        .await
        .unwrap();
    let status = sweeps
        .status(StatusRequest { sweep: "s".into() })
        .await
        .unwrap()
        .into_inner();
    assert!(status.sweeps[0].failures[0]
        .reason
        .contains("CUDA out of memory"));
    let tasks = handle.store().tasks("s").unwrap();
    assert_eq!((tasks[0].state, tasks[0].attempts), (TaskState::Pending, 2));

    // cancelling finishes the sweep: idle workers are told to shut down
    let cancelled = sweeps
        .cancel(CancelRequest { sweep: "s".into() })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(cancelled.tasks_cancelled, 1);
    assert_eq!(
        lease(&mut workers, &other).await,
        Some(Outcome::Shutdown(true))
    );
    handle.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_restarted_coordinator_resumes_from_its_file() {
    // the coordinator stays down longer than a lease timeout: the restart must not cost the
    // worker its lease nor the task an attempt
    const LEASE_MS: u64 = 2_000;
    let dir = tempfile::tempdir().unwrap();
    let handle = spawn(args(dir.path(), LEASE_MS)).await.unwrap();
    plan(&handle, "s", &["a"], 4, 4);
    let (mut workers, _) = clients(&handle).await;
    let me = register(&mut workers, "survivor").await;
    let Some(Outcome::Lease(l)) = lease(&mut workers, &me).await else {
        panic!("expected a lease");
    };
    let lref = l.lease.unwrap();
    let all = rewards(&l);
    let counts = workers
        .stream_results(tokio_stream::iter(vec![batch(
            &me,
            lref,
            all[..2].to_vec(),
        )]))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(counts.stored, 2);
    handle.shutdown().await.unwrap();
    tokio::time::sleep(Duration::from_millis(LEASE_MS + 500)).await;

    // same file, new process state, new port: the worker's id and lease are still good
    let handle = spawn(args(dir.path(), LEASE_MS)).await.unwrap();
    // a reaper pass before the worker's first call (the server's own first pass races it)
    // expires nothing: the lease got its grace at start-up
    let reaped = handle
        .store()
        .reap(herd_coordinator::app::now_ms())
        .unwrap();
    assert_eq!(reaped.leases, 0, "the restart expired a live lease");
    let (mut workers, mut sweeps) = clients(&handle).await;
    let hb = workers
        .heartbeat(HeartbeatRequest {
            worker_id: me.id.clone(),
            worker_secret: me.secret.clone(),
            leases: vec![lref],
            draining: false,
            stats: None,
        })
        .await
        .unwrap()
        .into_inner();
    assert!(hb.revoked.is_empty());
    let counts = workers
        .stream_results(tokio_stream::iter(vec![batch(&me, lref, all.clone())]))
        .await
        .unwrap()
        .into_inner();
    assert_eq!((counts.stored, counts.duplicates), (2, 2));
    let done = workers
        .complete(CompleteRequest {
            worker_id: me.id.clone(),
            worker_secret: me.secret.clone(),
            lease: Some(lref),
            model_type: "Seq. Classifier".into(),
            chat_template: "tokenizer".into(),
            scalar_output: false,
        })
        .await
        .unwrap()
        .into_inner();
    assert!(done.first);
    tokio::time::timeout(Duration::from_secs(20), handle.finished())
        .await
        .expect("finished");
    let status = sweeps
        .status(StatusRequest { sweep: "s".into() })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(status.sweeps[0].state(), SweepState::Done);
    assert_eq!(status.sweeps[0].examples_stored, 4);
    assert!(
        status.sweeps[0].failures.is_empty(),
        "{:?}",
        status.sweeps[0].failures
    );
    handle.shutdown().await.unwrap();
    let db = rusqlite::Connection::open(dir.path().join("state.db")).unwrap();
    let (attempts, expired): (i64, i64) = db
        .query_row(
            "SELECT (SELECT SUM(attempts) FROM tasks),
                    (SELECT COUNT(*) FROM leases WHERE state = 'expired')",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .unwrap();
    assert_eq!(
        (attempts, expired),
        (0, 0),
        "the restart counted an attempt"
    );
}

#[tokio::test]
async fn serve_exits_when_done_and_writes_a_missing_report() {
    let dir = tempfile::tempdir().unwrap();
    // a sweep finished by an earlier coordinator that stopped before writing its report
    {
        let handle = spawn(ServerConfig {
            exit_when_done: false,
            ..args(dir.path(), 60_000)
        })
        .await
        .unwrap();
        plan(&handle, "old", &["a"], 46, 46);
        let store = handle.store();
        let w = store
            .register("w", &Capabilities::default(), "a-secret", 1)
            .unwrap();
        let herd_coordinator::state::LeaseOutcome::Leased(l) = store.lease(&w, &[], 2).unwrap()
        else {
            panic!("expected a lease");
        };
        let scores: Vec<ExampleScores> = rewards(&herd_coordinator::service::convert::lease(&l))
            .into_iter()
            .map(ExampleScores::from)
            .collect();
        store.store_results(&w, &l.lease, &scores, 3).unwrap();
        handle.shutdown().await.unwrap();
        // completed behind the server's back: no report was written
        let store =
            herd_coordinator::state::Store::open(&dir.path().join("state.db"), Policy::default())
                .unwrap();
        let done = store
            .complete(&w, &l.lease, "Seq. Classifier", "tokenizer", 4)
            .unwrap();
        assert_eq!(done.finished_sweeps, vec!["old".to_string()]);
    }
    assert!(!dir.path().join("out").join("old").exists());
    tokio::time::timeout(
        Duration::from_secs(20),
        herd_coordinator::server::serve(args(dir.path(), 60_000)),
    )
    .await
    .expect("serve returns once every sweep is finished")
    .unwrap();
    assert!(dir.path().join("out").join("old").exists());
}
