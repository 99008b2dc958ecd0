//! Durable coordinator state: one SQLite file (WAL, synchronous=NORMAL) holding sweeps, their
//! evaluation sets, checkpoints, tasks, leases, attempts, workers and per-example results.
//!
//! Two connections: every write is one IMMEDIATE transaction on the write connection, entered
//! through the [`gate`] (scheduling writes ahead of result ingestion); reads run in one read
//! transaction each on a read-only connection, so they see a consistent snapshot and never wait
//! for a writer (WAL). Every method is synchronous and short (call it from `spawn_blocking` in
//! async code). Times are passed in (unix ms) so the lease logic can be tested without sleeping.
//!
//! The [`Store`]'s methods live with their aggregate: `sweeps` (submit, retry, cancel, and the
//! rules that derive a checkpoint's and a sweep's state from their tasks), `workers`
//! (registration and secrets), `leasing` (lease, heartbeat, the restart grace), `attempts` (how a
//! lease ends: complete, fail, expiry, retries), `ingest` (results) and `queries` (everything
//! read-only). They take and answer [`crate::domain`] types; states are typed and stored as their
//! names (`states`).

mod attempts;
mod gate;
mod ingest;
mod leasing;
mod queries;
mod resubmit;
mod schema;
mod states;
mod sweeps;
mod workers;

use std::collections::HashMap;
use std::ops::Deref;
use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use rusqlite::{Connection, OpenFlags, Transaction, TransactionBehavior};

use crate::domain::PlannedExample;
use crate::scheduler::Policy;

pub use attempts::{CompleteOutcome, Transition};
use gate::{Lane, WriteGate};
pub use ingest::IngestCounts;
pub use leasing::LeaseOutcome;
pub use queries::{CheckpointInfo, LeaseInfo, ReportInputs, TaskInfo};
pub use resubmit::{changed_settings, ChangedSetting};
pub use schema::SCHEMA_VERSION;
pub use sweeps::{RetryOutcome, SubmitOutcome};

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// the worker id is not known (the state file is new, or it never registered): register again
    #[error("unknown worker {0}: register again")]
    UnknownWorker(String),
    /// no such sweep
    #[error("{0}")]
    NotFound(String),
    /// the lease is not active
    #[error("{0}")]
    StaleLease(String),
    /// the caller is not who it claims: a worker secret that does not match, or another
    /// worker's lease
    #[error("{0}")]
    Forbidden(String),
    /// the request itself is wrong (outside the shard, changed evaluation set, ...)
    #[error("{0}")]
    Invalid(String),
    /// the request is right but the state does not allow it (results missing at Complete)
    #[error("{0}")]
    Precondition(String),
    #[error("state file: {0}")]
    Db(rusqlite::Error),
    /// the file holds what this coordinator cannot read (a state name it does not know, a
    /// truncated score array, another schema version)
    #[error("state file: {0}")]
    Corrupt(String),
}

impl From<rusqlite::Error> for StoreError {
    /// A stored name that is no value of its state enum is Corrupt (naming the column and the
    /// text); every other SQLite error is Db.
    fn from(e: rusqlite::Error) -> Self {
        if let rusqlite::Error::FromSqlConversionFailure(_, _, inner) = &e {
            if let Some(unknown) = inner.downcast_ref::<states::UnknownName>() {
                return StoreError::Corrupt(unknown.to_string());
            }
        }
        StoreError::Db(e)
    }
}

pub type Result<T, E = StoreError> = std::result::Result<T, E>;

/// The coordinator's state file.
pub struct Store {
    /// the write connection; locked only by a writer inside `gate`
    conn: Mutex<Connection>,
    gate: WriteGate,
    /// read-only connection for the reading methods
    reader: Mutex<Connection>,
    /// see [`Store::shard_examples`]
    shards: Mutex<HashMap<ShardKey, Arc<[PlannedExample]>>>,
    /// secret digests of registered workers, by id: an (id, secret) pair never changes, so
    /// [`Store::check_worker`] reads the file once per worker, not on every call
    secrets: Mutex<HashMap<String, Vec<u8>>>,
    policy: Policy,
}

/// (sweep id, shard start, shard end)
type ShardKey = (i64, u32, u32);

/// See [`Store::snapshot`]; the read transaction ends when this is dropped.
struct Snapshot<'a>(MutexGuard<'a, Connection>);

impl Deref for Snapshot<'_> {
    type Target = Connection;

    fn deref(&self) -> &Connection {
        &self.0
    }
}

impl Drop for Snapshot<'_> {
    fn drop(&mut self) {
        // a read transaction: ending it loses nothing; were it to fail, the next BEGIN says so
        let _ = self.0.execute_batch("ROLLBACK");
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

fn to_i64(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

impl Store {
    /// Opens (or creates) the state file.
    pub fn open(path: &Path, policy: Policy) -> Result<Store> {
        let conn = Connection::open(path)?;
        conn.busy_timeout(Duration::from_secs(10))?;
        schema::prepare(&conn, path)?;
        // opened after the writer has set WAL mode and made the tables
        let reader = Connection::open_with_flags(
            path,
            OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )?;
        reader.busy_timeout(Duration::from_secs(10))?;
        Ok(Store {
            conn: Mutex::new(conn),
            gate: WriteGate::default(),
            reader: Mutex::new(reader),
            shards: Mutex::new(HashMap::new()),
            secrets: Mutex::new(HashMap::new()),
            policy,
        })
    }

    pub fn policy(&self) -> &Policy {
        &self.policy
    }

    /// One scheduling write: one IMMEDIATE transaction, ahead of queued ingestion.
    fn write<T>(&self, f: impl FnOnce(&Transaction<'_>) -> Result<T>) -> Result<T> {
        self.write_in(Lane::Scheduling, f)
    }

    /// One write of `lane` in one IMMEDIATE transaction; an error rolls all of it back.
    fn write_in<T>(&self, lane: Lane, f: impl FnOnce(&Transaction<'_>) -> Result<T>) -> Result<T> {
        let _pass = self.gate.enter(lane);
        let mut conn = lock(&self.conn);
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let out = f(&tx)?;
        tx.commit()?;
        Ok(out)
    }

    /// The read-only connection inside a read transaction: every query through it sees the
    /// file as of its first query.
    fn snapshot(&self) -> Result<Snapshot<'_>> {
        let conn = lock(&self.reader);
        conn.execute_batch("BEGIN DEFERRED")?;
        Ok(Snapshot(conn))
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::thread;

    use herd_rpc::v1::{Capabilities, SweepSpec};

    use super::*;
    use crate::domain::{CheckpointFormat, ExampleScores, PlannedCheckpoint};

    fn planned(n: u32) -> (SweepSpec, Vec<PlannedCheckpoint>, Vec<PlannedExample>) {
        let spec = SweepSpec {
            name: "lanes".into(),
            shard_size: n,
            ..SweepSpec::default()
        };
        let checkpoints = ["a", "b"]
            .map(|c| PlannedCheckpoint {
                uri: format!("/ckpts/{c}"),
                name: c.into(),
                format: CheckpointFormat::HuggingFace,
                size_bytes: 1,
                param_bytes: 0,
            })
            .to_vec();
        let examples = (0..n)
            .map(|i| PlannedExample {
                index: i,
                id: format!("ex{i}"),
                subset: "alpacaeval-easy".into(),
                pair_json: "{}".into(),
                completions: None,
            })
            .collect();
        (spec, checkpoints, examples)
    }

    #[test]
    fn a_lease_is_written_ahead_of_result_ingestion_queued_before_it() {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(Store::open(&dir.path().join("state.db"), Policy::default()).unwrap());
        let (spec, checkpoints, examples) = planned(4);
        store.submit(&spec, &checkpoints, &examples, 0).unwrap();
        let worker = store
            .register("w", &Capabilities::default(), "secret", 0)
            .unwrap();
        let LeaseOutcome::Leased(first) = store.lease(&worker, &[], 1).unwrap() else {
            panic!("expected a lease");
        };
        let rewards: Vec<ExampleScores> = first
            .examples
            .iter()
            .map(|e| ExampleScores {
                index: e.index,
                example_id: e.id.clone(),
                chosen: vec![1.0],
                rejected: vec![0.0],
                texts: Vec::new(),
            })
            .collect();
        // a write in progress; results queue behind it, then the same worker asks for more work
        let held = store.gate.enter(Lane::Ingest);
        let ingest = {
            let (store, worker, lease) = (store.clone(), worker.clone(), first.lease);
            thread::spawn(move || store.store_results(&worker, &lease, &rewards, 200))
        };
        assert_eq!(
            store.gate.until_queued(1),
            (0, 1),
            "results wait in the ingest lane"
        );
        let second = {
            let (store, worker) = (store.clone(), worker.clone());
            thread::spawn(move || store.lease(&worker, &[], 300))
        };
        assert_eq!(
            store.gate.until_queued(2),
            (1, 1),
            "a lease waits in the scheduling lane"
        );
        drop(held);
        assert_eq!(ingest.join().unwrap().unwrap().stored, 4);
        assert!(matches!(
            second.join().unwrap().unwrap(),
            LeaseOutcome::Leased(_)
        ));
        // both writes set the worker's last_seen_ms to their own time: the last one written wins,
        // and that is the ingestion (200), queued first but let in after the lease (300)
        let status = store.status(None, 300).unwrap();
        assert_eq!(status.workers[0].last_seen_ms, 200);
    }
}
