//! The coordinator's inputs as sequences: decoded Workers/Sweeps requests driven against a real
//! Store in a temporary folder, with the invariants checked after every step. Shared by the
//! `coordinator_requests` fuzz target (fuzz/) and its stable replay in coordinator/tests/fuzz_replay.rs;
//! compiled only with the `fuzzing` feature.
//!
//! Input: records `<op byte><clock byte><len: u16 little-endian><len bytes of protobuf>`, repeated. The op picks
//! the request type; the bytes are that request decoded with prost (undecodable ones are skipped,
//! as tonic would refuse them). So that arbitrary bytes reach deep states, an empty worker id means
//! "the last registered worker", an empty worker secret "that worker's own secret" and a missing
//! lease "the last lease granted". As the Workers service does, a lease-bound request goes to the
//! store only after its (worker id, secret) pair is checked.
//!
//! Invariants (a violation panics):
//! - no panic anywhere in the store;
//! - no result outside a live lease's shard: every stored row lies in its task's shard, and a
//!   result call that succeeded was made under a lease that was active for that worker;
//! - no result stored twice: a (checkpoint, example) keeps the scores it was first stored with,
//!   and the rows are exactly the distinct ones acknowledged;
//! - no file outside the output folder: every finished sweep's report is written through the
//!   coordinator's report writer, and the temporary folder holds nothing but the state file and
//!   the output folder.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::domain::{
    CheckpointFormat, ExampleScores, FailureKind as Kind, LeaseId, PlannedCheckpoint,
    PlannedExample,
};
use crate::scheduler::Policy;
use crate::state::{LeaseOutcome, Store};
use herd_rewardbench::v1::SUBSETS;
use herd_rpc::v1::{
    CancelRequest, CompleteRequest, FailRequest, FailureKind, HeartbeatRequest, LeaseRef,
    LeaseRequest, RegisterRequest, ResultBatch, SubmitRequest,
};
use prost::Message;

/// Every RewardBench subset appears, so a finished sweep's CSV can be built.
const EXAMPLES: u32 = 24;
const SHARD: u32 = 12;

fn policy() -> Policy {
    Policy {
        lease_timeout_ms: 1_000,
        heartbeat_interval_ms: 100,
        max_attempts: 2,
        retry_backoff_ms: 10,
        stragglers: true,
        max_leases_per_task: 2,
        ..Policy::default()
    }
}

fn examples(n: u32) -> Vec<PlannedExample> {
    (0..n)
        .map(|i| PlannedExample {
            index: i,
            id: format!("ex{i}"),
            subset: SUBSETS[i as usize % SUBSETS.len()].into(),
            pair_json: format!(r#"{{"id":"ex{i}","prompt":"p","chosen":"c","rejected":"r"}}"#),
            completions: None,
        })
        .collect()
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

struct Driver {
    dir: PathBuf,
    out: PathBuf,
    store: Store,
    db: rusqlite::Connection,
    now: i64,
    /// registered ids and their secrets
    workers: Vec<(String, String)>,
    last_lease: Option<LeaseId>,
    /// (checkpoint id, example index) -> the scores first stored
    stored: BTreeMap<(i64, i64), (Vec<u8>, Vec<u8>)>,
}

impl Driver {
    fn new(dir: &Path) -> Driver {
        let state = dir.join("state.db");
        let store = Store::open(&state, policy()).expect("open the store");
        let spec = herd_rpc::v1::SweepSpec {
            name: "s".into(),
            checkpoints: vec!["/ckpts".into()],
            eval_dataset: "eval.jsonl".into(),
            shard_size: SHARD,
            output_csv: "s.csv".into(),
            ..Default::default()
        };
        store
            .submit(&spec, &checkpoints(&["a", "b"]), &examples(EXAMPLES), 0)
            .expect("plan the first sweep");
        let db = rusqlite::Connection::open_with_flags(
            &state,
            rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
        )
        .expect("a reading connection");
        Driver {
            dir: dir.to_path_buf(),
            out: dir.join("out"),
            store,
            db,
            now: 1,
            workers: Vec::new(),
            last_lease: None,
            stored: BTreeMap::new(),
        }
    }

    /// The worker a request acts as, if its (id, secret) pair passes the store's check.
    fn worker(&self, id: &str, secret: &str) -> Option<String> {
        let id = if id.is_empty() {
            self.workers
                .last()
                .map(|(id, _)| id.clone())
                .unwrap_or_default()
        } else {
            id.to_string()
        };
        let secret = if secret.is_empty() {
            let own = self.workers.iter().find(|(w, _)| *w == id);
            own.map(|(_, s)| s.clone()).unwrap_or_default()
        } else {
            secret.to_string()
        };
        self.store.check_worker(&id, &secret).ok().map(|()| id)
    }

    fn lease_ref(&self, lease: Option<LeaseRef>) -> LeaseId {
        lease
            .map(LeaseId::from)
            .or(self.last_lease)
            .unwrap_or_default()
    }

    fn lease_active_for(&self, worker: &str, lease: &LeaseId) -> bool {
        let epoch = i64::try_from(lease.epoch).unwrap_or(-1);
        self.db
            .query_row(
                "SELECT COUNT(*) FROM leases
                 WHERE task_id = ?1 AND epoch = ?2 AND worker_id = ?3 AND state = 'active'",
                rusqlite::params![lease.task_id, epoch, worker],
                |r| r.get::<_, i64>(0),
            )
            .expect("read leases")
            > 0
    }

    fn step(&mut self, op: u8, clock: u8, bytes: &[u8]) {
        self.now += i64::from(clock) * 10;
        let now = self.now;
        let mut finished: Vec<String> = Vec::new();
        match op % 10 {
            0 => {
                let Ok(r) = RegisterRequest::decode(bytes) else {
                    return;
                };
                let caps = r.capabilities.unwrap_or_default();
                let secret = format!("secret-{}", self.workers.len());
                if let Ok(id) = self.store.register(&r.name, &caps, &secret, now) {
                    self.workers.push((id, secret));
                }
            }
            1 => {
                let Ok(r) = LeaseRequest::decode(bytes) else {
                    return;
                };
                let Some(worker) = self.worker(&r.worker_id, &r.worker_secret) else {
                    return;
                };
                if let Ok(LeaseOutcome::Leased(lease)) =
                    self.store.lease(&worker, &r.cached_checkpoints, now)
                {
                    self.last_lease = Some(lease.lease);
                }
            }
            2 => {
                let Ok(r) = ResultBatch::decode(bytes) else {
                    return;
                };
                let Some(worker) = self.worker(&r.worker_id, &r.worker_secret) else {
                    return;
                };
                let lease = self.lease_ref(r.lease);
                let active = self.lease_active_for(&worker, &lease);
                let before = self.rows();
                let rewards: Vec<ExampleScores> =
                    r.rewards.into_iter().map(ExampleScores::from).collect();
                match self.store.store_results(&worker, &lease, &rewards, now) {
                    Ok(_) => assert!(
                        active,
                        "results stored under lease {lease:?}, not active for worker {worker}"
                    ),
                    Err(_) => assert_eq!(self.rows(), before, "a refused message stored rows"),
                }
            }
            3 => {
                let Ok(r) = CompleteRequest::decode(bytes) else {
                    return;
                };
                let Some(worker) = self.worker(&r.worker_id, &r.worker_secret) else {
                    return;
                };
                let lease = self.lease_ref(r.lease);
                if let Ok(done) =
                    self.store
                        .complete(&worker, &lease, &r.model_type, &r.chat_template, now)
                {
                    finished = done.finished_sweeps;
                }
            }
            4 => {
                let Ok(r) = FailRequest::decode(bytes) else {
                    return;
                };
                let Some(worker) = self.worker(&r.worker_id, &r.worker_secret) else {
                    return;
                };
                let lease = self.lease_ref(r.lease);
                let kind = FailureKind::try_from(r.kind).unwrap_or(FailureKind::Unspecified);
                if let Ok(t) = self
                    .store
                    .fail(&worker, &lease, Kind::from(kind), &r.reason, now)
                {
                    finished = t.finished_sweeps;
                }
            }
            5 => {
                let Ok(r) = HeartbeatRequest::decode(bytes) else {
                    return;
                };
                let Some(worker) = self.worker(&r.worker_id, &r.worker_secret) else {
                    return;
                };
                let leases: Vec<LeaseId> = r.leases.into_iter().map(LeaseId::from).collect();
                let _ = self
                    .store
                    .heartbeat(&worker, &leases, r.draining, r.stats.as_ref(), now);
            }
            6 => {
                if let Ok(t) = self.store.reap(now) {
                    finished = t.finished_sweeps;
                }
            }
            7 => {
                let Ok(r) = CancelRequest::decode(bytes) else {
                    return;
                };
                if self.store.cancel(&r.sweep, now).is_ok() {
                    finished.push(r.sweep);
                }
            }
            8 => {
                let Ok(r) = SubmitRequest::decode(bytes) else {
                    return;
                };
                let Some(spec) = r.spec else { return };
                let names: Vec<&str> = spec.checkpoints.iter().map(String::as_str).collect();
                let n = spec.shard_size % (EXAMPLES + 1);
                let _ = self
                    .store
                    .submit(&spec, &checkpoints(&names), &examples(n), now);
                if r.retry_failed {
                    let _ = self.store.retry_failed(&spec.name, now);
                }
            }
            _ => {
                if let Ok(r) = herd_rpc::v1::ResultsRequest::decode(bytes) {
                    // reports of any sweep, as `coord results` builds them
                    self.report(&r.sweep);
                }
            }
        }
        for sweep in finished {
            self.report(&sweep);
        }
        self.check();
    }

    /// A sweep's report through the writer the coordinator uses when a sweep finishes.
    fn report(&self, sweep: &str) {
        let Ok(inputs) = self.store.report_inputs(sweep) else {
            return;
        };
        if let Ok(report) = crate::app::reports::build(&inputs) {
            let _ = crate::app::reports::write(&self.out, sweep, &inputs, &report);
        }
    }

    fn rows(&self) -> i64 {
        self.db
            .query_row("SELECT COUNT(*) FROM results", [], |r| r.get(0))
            .expect("count results")
    }

    fn check(&mut self) {
        // every stored row lies in its task's shard
        let outside: i64 = self
            .db
            .query_row(
                "SELECT COUNT(*) FROM results r JOIN tasks t ON t.id = r.task_id
                 WHERE r.idx < t.shard_start OR r.idx >= t.shard_end
                    OR t.checkpoint_id != r.checkpoint_id",
                [],
                |r| r.get(0),
            )
            .expect("read results");
        assert_eq!(outside, 0, "a result outside its lease's shard");
        // a stored result keeps its first scores; no row appears or disappears unseen
        let mut stmt = self
            .db
            .prepare("SELECT checkpoint_id, idx, chosen, rejected FROM results")
            .expect("read results");
        let rows = stmt
            .query_map([], |r| Ok(((r.get(0)?, r.get(1)?), (r.get(2)?, r.get(3)?))))
            .expect("read results")
            .collect::<Result<Vec<((i64, i64), (Vec<u8>, Vec<u8>))>, _>>()
            .expect("read results");
        let rows: BTreeMap<(i64, i64), (Vec<u8>, Vec<u8>)> = rows.into_iter().collect();
        for (key, first) in &self.stored {
            match rows.get(key) {
                Some(now) => assert_eq!(now, first, "result {key:?} was overwritten"),
                None => panic!("stored result {key:?} disappeared"),
            }
        }
        self.stored = rows;
        // nothing but the state file (and its journal) and the output folder
        for entry in std::fs::read_dir(&self.dir).expect("list the folder") {
            let name = entry.expect("an entry").file_name();
            let name = name.to_string_lossy();
            assert!(
                name == "out" || name.starts_with("state.db"),
                "{name} appeared outside the output folder"
            );
        }
    }
}

/// Runs one input in a fresh temporary folder; panics on a violated invariant.
pub fn run(data: &[u8]) {
    let dir = tempfile::tempdir().expect("a temporary folder");
    run_in(dir.path(), data);
}

/// Runs one input with the state and output folder in `dir` (empty).
pub fn run_in(dir: &Path, data: &[u8]) {
    let mut driver = Driver::new(dir);
    let mut rest = data;
    // bounded: a long input is cut after 64 requests
    for _ in 0..64 {
        let [op, clock, lo, hi, tail @ ..] = rest else {
            break;
        };
        let len = usize::from(u16::from_le_bytes([*lo, *hi])).min(tail.len());
        let (bytes, next) = tail.split_at(len);
        driver.step(*op, *clock, bytes);
        rest = next;
    }
}

/// Encodes requests as a driver input (seeds and tests).
pub fn encode(steps: &[(u8, u8, Vec<u8>)]) -> Vec<u8> {
    let mut out = Vec::new();
    for (op, clock, bytes) in steps {
        let len = u16::try_from(bytes.len()).expect("a request under 64 KiB");
        out.extend([*op, *clock]);
        out.extend(len.to_le_bytes());
        out.extend(bytes);
    }
    out
}
