//! Durable coordinator state: one SQLite file (WAL, synchronous=NORMAL) holding sweeps, their
//! evaluation sets, checkpoints, tasks, leases, attempts, workers and per-example results.
//!
//! Two connections: every write is one IMMEDIATE transaction on the write connection, entered
//! through the [`gate`] (scheduling writes ahead of result ingestion); reads run in one read
//! transaction each on a read-only connection, so they see a consistent snapshot and never wait
//! for a writer (WAL). Every method is synchronous and short (call it from `spawn_blocking` in
//! async code). Times are passed in (unix ms) so the lease logic can be tested without sleeping.

mod gate;
mod resubmit;
mod schema;

use std::collections::{HashMap, HashSet};
use std::ops::{Deref, Range};
use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use herd_rpc::v1::{
    Capabilities, Checkpoint, CheckpointStatus, Example, ExampleReward, FailureKind, Lease,
    LeaseRef, StatusResponse, SweepSpec, SweepStatus, TaskFailure, WorkerStats, WorkerStatus,
};
use prost::Message;
use rusqlite::{
    params, Connection, OpenFlags, OptionalExtension, Transaction, TransactionBehavior,
};

use crate::model::{
    CheckpointFormat, PlannedCheckpoint, PlannedExample, ScoredCheckpoint, StoredReward,
};
use crate::scheduler::Policy;

use gate::{Lane, WriteGate};
pub use resubmit::{changed_settings, ChangedSetting};
pub use schema::SCHEMA_VERSION;

/// Failures shown by `status`, newest first.
const RECENT_FAILURES: u32 = 20;

/// Shards whose examples [`Store::shard_examples`] keeps in memory; past this it starts over.
const SHARDS_KEPT: usize = 256;

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
    Db(#[from] rusqlite::Error),
    #[error("state file: {0}")]
    Corrupt(String),
}

pub type Result<T, E = StoreError> = std::result::Result<T, E>;

/// What `submit` did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SubmitOutcome {
    pub sweep: String,
    /// true when the sweep did not exist before
    pub created: bool,
    pub checkpoints_added: u32,
    pub checkpoints_skipped: u32,
    pub tasks_added: u32,
    pub examples: u32,
}

/// What [`Store::retry_failed`] planned again.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RetryOutcome {
    pub checkpoints: u32,
    pub tasks: u32,
}

/// What `lease` answers.
#[derive(Clone, Debug, PartialEq)]
pub enum LeaseOutcome {
    Leased(Box<Lease>),
    /// nothing can be leased now; `all_finished`: every sweep is done or cancelled (and there
    /// is at least one)
    Idle {
        all_finished: bool,
    },
    /// the worker is draining: it gets nothing new
    Draining,
}

/// Counts from one `store_results` call.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct IngestCounts {
    pub stored: u64,
    pub duplicates: u64,
}

/// What `complete` did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CompleteOutcome {
    /// false: the task had already been completed by another lease
    pub first: bool,
    pub checkpoint_done: bool,
    /// sweeps that finished because of this call (their reports are due)
    pub finished_sweeps: Vec<String>,
}

/// What `fail`, `reap` and `cancel` changed.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Transition {
    /// leases expired (reap) or ended (fail)
    pub leases: u32,
    /// tasks that failed for good
    pub tasks_failed: u32,
    /// sweeps that finished because of this call (their reports are due)
    pub finished_sweeps: Vec<String>,
}

/// One task as stored (for status tools and tests).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TaskInfo {
    pub id: i64,
    pub sweep: String,
    pub checkpoint_uri: String,
    pub shard: Range<u32>,
    pub state: String,
    pub attempts: u32,
    pub next_eligible_ms: i64,
    pub last_epoch: u64,
    pub failure: Option<String>,
}

/// One lease as stored.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LeaseInfo {
    pub task_id: i64,
    pub epoch: u64,
    pub worker_id: String,
    pub created_ms: i64,
    pub deadline_ms: i64,
    pub state: String,
}

/// One checkpoint as stored.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CheckpointInfo {
    pub id: i64,
    pub uri: String,
    pub name: String,
    pub state: String,
    pub failure: Option<String>,
    pub model_type: Option<String>,
    pub chat_template: Option<String>,
}

/// Everything a report is built from.
#[derive(Clone, Debug, PartialEq)]
pub struct ReportInputs {
    pub spec: SweepSpec,
    /// the sweep is done (every task done or failed)
    pub complete: bool,
    pub examples: Vec<PlannedExample>,
    /// checkpoints with every example scored
    pub scored: Vec<ScoredCheckpoint>,
    /// checkpoints left out and why
    pub notes: Vec<String>,
}

/// The coordinator's state file.
pub struct Store {
    /// the write connection; locked only by a writer inside `gate`
    conn: Mutex<Connection>,
    gate: WriteGate,
    /// read-only connection for the reading methods
    reader: Mutex<Connection>,
    /// see [`Store::shard_examples`]
    shards: Mutex<HashMap<ShardKey, Arc<[Example]>>>,
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

struct TaskRow {
    id: i64,
    sweep_id: i64,
    checkpoint_id: i64,
    start: u32,
    end: u32,
    state: String,
}

/// id, name, last_seen_ms, draining, stats
type WorkerRow = (String, String, i64, bool, Option<Vec<u8>>);

struct LeaseRow {
    worker_id: String,
    state: String,
}

fn to_i64(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

fn encode_scores(values: &[f64]) -> Vec<u8> {
    values.iter().flat_map(|v| v.to_le_bytes()).collect()
}

fn decode_scores(bytes: &[u8]) -> Result<Vec<f64>> {
    if !bytes.len().is_multiple_of(8) {
        return Err(StoreError::Corrupt(format!(
            "a score array of {} bytes is not a whole number of f64",
            bytes.len()
        )));
    }
    Ok(bytes
        .chunks_exact(8)
        .map(|c| f64::from_le_bytes(c.try_into().expect("8 bytes")))
        .collect())
}

fn lease_name(task_id: i64, epoch: u64) -> String {
    format!("lease {task_id}/{epoch}")
}

impl Store {
    /// Opens (or creates) the state file.
    pub fn open(path: &Path, policy: Policy) -> Result<Store> {
        let conn = Connection::open(path)?;
        conn.busy_timeout(Duration::from_secs(10))?;
        conn.execute_batch(schema::PRAGMAS)?;
        conn.execute_batch(schema::TABLES)?;
        for (table, column, kind) in schema::ADDED_COLUMNS {
            let present: bool = conn.query_row(
                "SELECT COUNT(*) > 0 FROM pragma_table_info(?1) WHERE name = ?2",
                params![table, column],
                |r| r.get(0),
            )?;
            if !present {
                conn.execute_batch(&format!("ALTER TABLE {table} ADD COLUMN {column} {kind}"))?;
            }
        }
        let version: Option<String> = conn
            .query_row(
                "SELECT value FROM meta WHERE key = 'schema_version'",
                [],
                |r| r.get(0),
            )
            .optional()?;
        match version {
            None => {
                conn.execute(
                    "INSERT INTO meta(key, value) VALUES ('schema_version', ?1)",
                    params![SCHEMA_VERSION.to_string()],
                )?;
            }
            Some(v) if v == SCHEMA_VERSION.to_string() => {}
            Some(v) => {
                return Err(StoreError::Corrupt(format!(
                    "{} has schema version {v}; this coordinator reads version {SCHEMA_VERSION}",
                    path.display()
                )))
            }
        }
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

    // --------------------------------------------------------------------------------------------
    // Sweeps
    // --------------------------------------------------------------------------------------------

    /// Plans a sweep: stores the spec, the evaluation set, the checkpoints and their tasks. A sweep
    /// name already present gets only the checkpoints it does not have yet; its evaluation set
    /// must be the same.
    pub fn submit(
        &self,
        spec: &SweepSpec,
        checkpoints: &[PlannedCheckpoint],
        examples: &[PlannedExample],
        now: i64,
    ) -> Result<SubmitOutcome> {
        crate::model::check_sweep_name(&spec.name).map_err(StoreError::Invalid)?;
        if examples.is_empty() {
            return Err(StoreError::Invalid(format!(
                "sweep {}: the evaluation set {} has no examples",
                spec.name, spec.eval_dataset
            )));
        }
        if let Some((pos, e)) = examples
            .iter()
            .enumerate()
            .find(|(pos, e)| e.index as usize != *pos)
        {
            return Err(StoreError::Invalid(format!(
                "sweep {}: example {} ({}) has index {}; indices must be 0..{}",
                spec.name,
                pos,
                e.id,
                e.index,
                examples.len()
            )));
        }
        let examples_len = u32::try_from(examples.len())
            .map_err(|_| StoreError::Invalid("too many examples".into()))?;
        self.write(|tx| {
            let existing: Option<(i64, Vec<u8>, String)> = tx
                .query_row(
                    "SELECT id, spec, state FROM sweeps WHERE name = ?1",
                    params![spec.name],
                    |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
                )
                .optional()?;
            let (sweep_id, shard_size, created, old_state) = match existing {
                Some((id, spec_bytes, state)) => {
                    let stored = decode_spec(&spec_bytes)?;
                    resubmit::check_same_settings(&stored, spec)?;
                    resubmit::check_same_examples(tx, id, &spec.name, examples)?;
                    (id, stored.shard_size, false, Some(state))
                }
                None => {
                    tx.execute(
                        "INSERT INTO sweeps(name, spec, state, created_ms) VALUES (?1, ?2, 'active', ?3)",
                        params![spec.name, spec.encode_to_vec(), now],
                    )?;
                    let id = tx.last_insert_rowid();
                    let mut insert = tx.prepare_cached(
                        "INSERT INTO examples(sweep_id, idx, example_id, subset, pair_json) VALUES (?1, ?2, ?3, ?4, ?5)",
                    )?;
                    for e in examples {
                        insert.execute(params![id, e.index, e.id, e.subset, e.pair_json])?;
                    }
                    (id, spec.shard_size, true, None)
                }
            };
            let shards = crate::planner::shard_ranges(examples_len, shard_size);
            let mut out = SubmitOutcome {
                sweep: spec.name.clone(),
                created,
                examples: examples_len,
                ..SubmitOutcome::default()
            };
            let mut seen = HashSet::new();
            for c in checkpoints {
                let known: bool = tx
                    .query_row(
                        "SELECT 1 FROM checkpoints WHERE sweep_id = ?1 AND uri = ?2",
                        params![sweep_id, c.uri],
                        |_| Ok(()),
                    )
                    .optional()?
                    .is_some();
                if known || !seen.insert(c.uri.as_str()) {
                    out.checkpoints_skipped += 1;
                    continue;
                }
                tx.execute(
                    "INSERT INTO checkpoints(sweep_id, uri, name, format, size_bytes, state)
                     VALUES (?1, ?2, ?3, ?4, ?5, 'pending')",
                    params![sweep_id, c.uri, c.name, c.format.as_str(), to_i64(c.size_bytes)],
                )?;
                let checkpoint_id = tx.last_insert_rowid();
                let mut insert = tx.prepare_cached(
                    "INSERT INTO tasks(sweep_id, checkpoint_id, shard_start, shard_end, state)
                     VALUES (?1, ?2, ?3, ?4, 'pending')",
                )?;
                for shard in &shards {
                    insert.execute(params![sweep_id, checkpoint_id, shard.start, shard.end])?;
                    out.tasks_added += 1;
                }
                out.checkpoints_added += 1;
            }
            if created && out.checkpoints_added == 0 {
                return Err(StoreError::Invalid(format!(
                    "sweep {}: no checkpoints found in {}",
                    spec.name,
                    spec.checkpoints.join(", ")
                )));
            }
            if out.tasks_added > 0 && old_state.as_deref().is_some_and(|s| s != "active") {
                tx.execute(
                    "UPDATE sweeps SET state = 'active', finished_ms = NULL WHERE id = ?1",
                    params![sweep_id],
                )?;
            }
            Ok(out)
        })
    }

    /// Plans a sweep's failed and cancelled checkpoints again, on purpose: their failed and
    /// cancelled tasks become pending with no attempts counted, done tasks and every stored
    /// result stay, and a finished sweep becomes active again.
    pub fn retry_failed(&self, sweep: &str, now: i64) -> Result<RetryOutcome> {
        self.write(|tx| {
            let sweep_id = sweep_id(tx, sweep)?;
            let checkpoints: Vec<i64> = {
                let mut stmt = tx.prepare(
                    "SELECT id FROM checkpoints
                     WHERE sweep_id = ?1 AND state IN ('failed', 'cancelled') ORDER BY id",
                )?;
                let rows = stmt.query_map(params![sweep_id], |r| r.get(0))?;
                rows.collect::<Result<_, _>>()?
            };
            let mut out = RetryOutcome::default();
            for checkpoint_id in checkpoints {
                let tasks = tx.execute(
                    "UPDATE tasks SET state = 'pending', attempts = 0, next_eligible_ms = ?2,
                                      failure = NULL
                     WHERE checkpoint_id = ?1 AND state IN ('failed', 'cancelled')",
                    params![checkpoint_id, now],
                )?;
                tx.execute(
                    "UPDATE checkpoints SET state = 'pending', failure = NULL WHERE id = ?1",
                    params![checkpoint_id],
                )?;
                out.checkpoints += 1;
                out.tasks += tasks as u32;
            }
            if out.tasks > 0 {
                tx.execute(
                    "UPDATE sweeps SET state = 'active', finished_ms = NULL WHERE id = ?1",
                    params![sweep_id],
                )?;
            }
            Ok(out)
        })
    }

    /// Cancels a sweep: pending and leased tasks are cancelled, live leases revoked.
    pub fn cancel(&self, sweep: &str, now: i64) -> Result<u32> {
        self.write(|tx| {
            let sweep_id = sweep_id(tx, sweep)?;
            let leases: Vec<(i64, i64)> = {
                let mut stmt = tx.prepare(
                    "SELECT l.task_id, l.epoch FROM leases l JOIN tasks t ON t.id = l.task_id
                     WHERE t.sweep_id = ?1 AND l.state = 'active'",
                )?;
                let rows = stmt.query_map(params![sweep_id], |r| Ok((r.get(0)?, r.get(1)?)))?;
                rows.collect::<Result<_, _>>()?
            };
            for (task_id, epoch) in leases {
                end_lease(tx, task_id, epoch, "revoked", "cancelled", Some("sweep cancelled"), None, now)?;
            }
            let cancelled = tx.execute(
                "UPDATE tasks SET state = 'cancelled' WHERE sweep_id = ?1 AND state IN ('pending', 'leased')",
                params![sweep_id],
            )?;
            tx.execute(
                "UPDATE checkpoints SET state = 'cancelled'
                 WHERE sweep_id = ?1 AND state IN ('pending', 'running')",
                params![sweep_id],
            )?;
            tx.execute(
                "UPDATE sweeps SET state = 'cancelled', finished_ms = ?2 WHERE id = ?1 AND state = 'active'",
                params![sweep_id, now],
            )?;
            Ok(cancelled as u32)
        })
    }

    /// True when there is at least one sweep and every sweep is done or cancelled.
    pub fn all_finished(&self) -> Result<bool> {
        let conn = self.snapshot()?;
        all_finished(&conn)
    }

    /// Names of every sweep, oldest first.
    pub fn sweeps(&self) -> Result<Vec<(String, String)>> {
        let conn = self.snapshot()?;
        let mut stmt = conn.prepare("SELECT name, state FROM sweeps ORDER BY created_ms, id")?;
        let rows = stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    // --------------------------------------------------------------------------------------------
    // Workers
    // --------------------------------------------------------------------------------------------

    /// Registers a worker and returns its new id. Ids are never reused, and only `secret`'s
    /// digest is kept: the (id, secret) pair never changes, so [`Store::check_worker`] once per
    /// call is enough to bind every lease of the id to this registration.
    pub fn register(
        &self,
        name: &str,
        capabilities: &Capabilities,
        secret: &str,
        now: i64,
    ) -> Result<String> {
        let digest = crate::security::secret_digest(secret);
        let id = self.write(|tx| {
            let cached =
                serde_json::to_string(&capabilities.cached_checkpoints).expect("strings serialise");
            tx.execute(
                "INSERT INTO workers(name, capabilities, cached, registered_ms, last_seen_ms,
                                     secret_digest)
                 VALUES (?1, ?2, ?3, ?4, ?4, ?5)",
                params![name, capabilities.encode_to_vec(), cached, now, &digest[..]],
            )?;
            let seq = tx.last_insert_rowid();
            let id = format!("w{seq}");
            tx.execute(
                "UPDATE workers SET id = ?1 WHERE seq = ?2",
                params![id, seq],
            )?;
            Ok(id)
        })?;
        // committed: the worker's first calls need not read it back
        lock(&self.secrets).insert(id.clone(), digest.to_vec());
        Ok(id)
    }

    /// Checks that `secret` is the one `worker_id` registered with (constant time). An unknown
    /// id, or one registered before secrets existed, is UnknownWorker (the worker registers
    /// again); a wrong secret is Forbidden.
    pub fn check_worker(&self, worker_id: &str, secret: &str) -> Result<()> {
        let known = lock(&self.secrets).get(worker_id).cloned();
        let stored: Option<Option<Vec<u8>>> = match known {
            Some(digest) => Some(Some(digest)),
            None => {
                let stored: Option<Option<Vec<u8>>> = self
                    .snapshot()?
                    .query_row(
                        "SELECT secret_digest FROM workers WHERE id = ?1",
                        params![worker_id],
                        |r| r.get(0),
                    )
                    .optional()?;
                if let Some(Some(digest)) = &stored {
                    lock(&self.secrets).insert(worker_id.to_string(), digest.clone());
                }
                stored
            }
        };
        match stored {
            None => Err(StoreError::UnknownWorker(worker_id.to_string())),
            Some(None) => Err(StoreError::UnknownWorker(format!(
                "{worker_id} (registered without a secret)"
            ))),
            Some(Some(digest)) if crate::security::secret_matches(secret, &digest) => Ok(()),
            Some(Some(_)) => Err(StoreError::Forbidden(format!(
                "the worker secret does not match the registration of worker {worker_id}"
            ))),
        }
    }

    /// Leases one task to `worker_id` (see [`crate::scheduler`] for the order).
    pub fn lease(&self, worker_id: &str, cached: &[String], now: i64) -> Result<LeaseOutcome> {
        let policy = self.policy.clone();
        let mut shard = None;
        let mut outcome = self.write(|tx| {
            let (draining, last_checkpoint, stored_cached): (bool, Option<i64>, String) = tx
                .query_row(
                    "SELECT draining, last_checkpoint_id, cached FROM workers WHERE id = ?1",
                    params![worker_id],
                    |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
                )
                .optional()?
                .ok_or_else(|| StoreError::UnknownWorker(worker_id.to_string()))?;
            // an empty list in the request keeps what the worker said before (at Register)
            let cached: Vec<String> = if cached.is_empty() {
                serde_json::from_str(&stored_cached).unwrap_or_default()
            } else {
                cached.to_vec()
            };
            let cached_json = serde_json::to_string(&cached).expect("strings serialise");
            tx.execute(
                "UPDATE workers SET last_seen_ms = ?2, cached = ?3 WHERE id = ?1",
                params![worker_id, now, cached_json],
            )?;
            if draining {
                return Ok(LeaseOutcome::Draining);
            }

            // checkpoints this worker holds
            let mut held: Vec<i64> = last_checkpoint.into_iter().collect();
            {
                let mut stmt = tx.prepare_cached("SELECT id FROM checkpoints WHERE uri = ?1")?;
                for uri in &cached {
                    let ids = stmt.query_map(params![uri], |r| r.get::<_, i64>(0))?;
                    for id in ids {
                        held.push(id?);
                    }
                }
            }
            held.sort_unstable();
            held.dedup();

            // sweep ids grow with creation: the lowest is the oldest sweep
            let mut best: Option<(i64, i64)> = None;
            {
                // the checkpoint's few tasks, not a scan of the whole queue for them
                let mut stmt = tx.prepare_cached(
                    "SELECT t.sweep_id, t.id FROM tasks t INDEXED BY tasks_checkpoint
                     JOIN sweeps s ON s.id = t.sweep_id
                     WHERE t.checkpoint_id = ?1 AND t.state = 'pending' AND t.next_eligible_ms <= ?2
                       AND s.state = 'active'
                     ORDER BY t.sweep_id, t.id LIMIT 1",
                )?;
                for checkpoint_id in &held {
                    let found: Option<(i64, i64)> = stmt
                        .query_row(params![checkpoint_id, now], |r| Ok((r.get(0)?, r.get(1)?)))
                        .optional()?;
                    if let Some(found) = found {
                        if best.is_none_or(|b| found < b) {
                            best = Some(found);
                        }
                    }
                }
            }
            let mut task_id = best.map(|b| b.1);
            if task_id.is_none() {
                task_id = tx
                    .query_row(
                        "SELECT t.id FROM tasks t INDEXED BY tasks_queue
                         WHERE t.state = 'pending' AND t.next_eligible_ms <= ?1
                           AND EXISTS (SELECT 1 FROM sweeps s WHERE s.id = t.sweep_id AND s.state = 'active')
                         ORDER BY t.sweep_id, t.id LIMIT 1",
                        params![now],
                        |r| r.get(0),
                    )
                    .optional()?;
            }
            let mut straggler = false;
            if task_id.is_none() && policy.stragglers {
                task_id = tx
                    .query_row(
                        "SELECT t.id FROM tasks t
                         JOIN sweeps s ON s.id = t.sweep_id
                         JOIN leases l ON l.task_id = t.id AND l.state = 'active'
                         WHERE t.state = 'leased' AND s.state = 'active'
                           AND NOT EXISTS (SELECT 1 FROM tasks p
                                           WHERE p.sweep_id = t.sweep_id AND p.state = 'pending')
                           AND NOT EXISTS (SELECT 1 FROM leases m
                                           WHERE m.task_id = t.id AND m.state = 'active'
                                             AND m.worker_id = ?1)
                         GROUP BY t.id
                         HAVING COUNT(*) < ?2
                         ORDER BY MIN(l.created_ms), t.id LIMIT 1",
                        params![worker_id, policy.max_leases_per_task],
                        |r| r.get(0),
                    )
                    .optional()?;
                straggler = task_id.is_some();
            }
            let Some(task_id) = task_id else {
                return Ok(LeaseOutcome::Idle {
                    all_finished: all_finished(tx)?,
                });
            };

            let task = task_row(tx, task_id)?;
            let epoch: i64 = tx.query_row(
                "SELECT last_epoch + 1 FROM tasks WHERE id = ?1",
                params![task_id],
                |r| r.get(0),
            )?;
            let deadline = now.saturating_add(to_i64(policy.lease_timeout_ms));
            tx.execute(
                "UPDATE tasks SET state = 'leased', last_epoch = ?2 WHERE id = ?1",
                params![task_id, epoch],
            )?;
            tx.execute(
                "INSERT INTO leases(task_id, epoch, worker_id, created_ms, deadline_ms, state)
                 VALUES (?1, ?2, ?3, ?4, ?5, 'active')",
                params![task_id, epoch, worker_id, now, deadline],
            )?;
            tx.execute(
                "INSERT INTO attempts(task_id, epoch, worker_id, outcome, started_ms)
                 VALUES (?1, ?2, ?3, 'running', ?4)",
                params![task_id, epoch, worker_id, now],
            )?;
            tx.execute(
                "UPDATE workers SET last_checkpoint_id = ?2 WHERE id = ?1",
                params![worker_id, task.checkpoint_id],
            )?;
            tx.execute(
                "UPDATE checkpoints SET state = 'running' WHERE id = ?1 AND state = 'pending'",
                params![task.checkpoint_id],
            )?;

            let (sweep_name, spec_bytes): (String, Vec<u8>) = tx.query_row(
                "SELECT name, spec FROM sweeps WHERE id = ?1",
                params![task.sweep_id],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )?;
            let spec = decode_spec(&spec_bytes)?;
            let checkpoint = checkpoint_proto(tx, task.checkpoint_id)?;
            shard = Some(self.shard_examples(tx, task.sweep_id, task.start..task.end)?);
            // prefetch: the next checkpoint in queue order nobody is working on (else any other)
            let mut prefetch_uri = String::new();
            for untouched in [true, false] {
                let found: Option<String> = tx
                    .prepare_cached(
                        "SELECT c.uri FROM tasks t INDEXED BY tasks_queue
                         JOIN checkpoints c ON c.id = t.checkpoint_id
                         WHERE t.state = 'pending' AND t.checkpoint_id != ?1 AND c.uri != ?2
                           AND (?3 = 0 OR NOT EXISTS (SELECT 1 FROM tasks u
                                WHERE u.checkpoint_id = t.checkpoint_id AND u.state = 'leased'))
                           AND EXISTS (SELECT 1 FROM sweeps s WHERE s.id = t.sweep_id AND s.state = 'active')
                         ORDER BY t.sweep_id, t.id LIMIT 1",
                    )?
                    .query_row(params![task.checkpoint_id, checkpoint.uri, untouched], |r| {
                        r.get(0)
                    })
                    .optional()?;
                if let Some(uri) = found {
                    prefetch_uri = uri;
                    break;
                }
            }
            tracing::info!(
                worker = worker_id,
                task = task_id,
                epoch,
                sweep = %sweep_name,
                checkpoint = %checkpoint.name,
                shard_start = task.start,
                shard_end = task.end,
                straggler,
                "lease"
            );
            Ok(LeaseOutcome::Leased(Box::new(Lease {
                lease: Some(LeaseRef {
                    task_id,
                    epoch: epoch as u64,
                }),
                sweep: sweep_name,
                deadline_unix_ms: deadline,
                checkpoint: Some(checkpoint),
                scoring: spec.scoring,
                shard_start: task.start,
                shard_end: task.end,
                // filled in below
                examples: Vec::new(),
                prefetch_uri,
                // set by the service from its lease span
                traceparent: String::new(),
            })))
        })?;
        // copied after the write, outside the gate: the examples are most of a lease's bytes
        if let (LeaseOutcome::Leased(lease), Some(shard)) = (&mut outcome, shard) {
            lease.examples = shard.to_vec();
        }
        Ok(outcome)
    }

    /// Refreshes the deadlines of the worker's listed active leases and returns the listed leases
    /// it must drop (no longer active, or not its own).
    pub fn heartbeat(
        &self,
        worker_id: &str,
        leases: &[LeaseRef],
        draining: bool,
        stats: Option<&WorkerStats>,
        now: i64,
    ) -> Result<Vec<LeaseRef>> {
        let deadline = now.saturating_add(to_i64(self.policy.lease_timeout_ms));
        self.write(|tx| {
            let updated = tx.execute(
                "UPDATE workers SET last_seen_ms = ?2, draining = ?3,
                        stats = COALESCE(?4, stats) WHERE id = ?1",
                params![worker_id, now, draining, stats.map(|s| s.encode_to_vec())],
            )?;
            if updated == 0 {
                return Err(StoreError::UnknownWorker(worker_id.to_string()));
            }
            let mut revoked = Vec::new();
            for lease in leases {
                let row = lease_row(tx, lease.task_id, to_i64(lease.epoch))?;
                match row {
                    Some(row) if row.state == "active" && row.worker_id == worker_id => {
                        tx.execute(
                            "UPDATE leases SET deadline_ms = MAX(deadline_ms, ?3)
                             WHERE task_id = ?1 AND epoch = ?2",
                            params![lease.task_id, to_i64(lease.epoch), deadline],
                        )?;
                    }
                    _ => revoked.push(*lease),
                }
            }
            Ok(revoked)
        })
    }

    /// A lease's examples, as sent on the wire, read once per shard and then kept: a sweep's
    /// examples are written when it is created and never change.
    fn shard_examples(
        &self,
        conn: &Connection,
        sweep_id: i64,
        shard: Range<u32>,
    ) -> Result<Arc<[Example]>> {
        let key: ShardKey = (sweep_id, shard.start, shard.end);
        if let Some(examples) = lock(&self.shards).get(&key) {
            return Ok(examples.clone());
        }
        let examples: Arc<[Example]> = examples_in(conn, sweep_id, shard)?
            .into_iter()
            .map(|e| Example {
                index: e.index,
                id: e.id,
                subset: e.subset,
                pair_json: e.pair_json,
            })
            .collect();
        let mut shards = lock(&self.shards);
        if shards.len() >= SHARDS_KEPT {
            shards.clear();
        }
        shards.insert(key, examples.clone());
        Ok(examples)
    }

    // --------------------------------------------------------------------------------------------
    // Results
    // --------------------------------------------------------------------------------------------

    /// Stores one batch of results of a lease, in one transaction. The lease must be active and
    /// held by `worker_id`; every reward must be inside the task's shard and name the stored
    /// example id. On any error nothing of the batch is stored.
    pub fn store_results(
        &self,
        worker_id: &str,
        lease: &LeaseRef,
        rewards: &[ExampleReward],
        now: i64,
    ) -> Result<IngestCounts> {
        let deadline = now.saturating_add(to_i64(self.policy.lease_timeout_ms));
        self.write_in(Lane::Ingest, |tx| {
            let epoch = to_i64(lease.epoch);
            let task = check_active_lease(tx, worker_id, lease.task_id, epoch)?;
            {
                let mut id_of = tx.prepare_cached(
                    "SELECT example_id FROM examples WHERE sweep_id = ?1 AND idx = ?2",
                )?;
                // every example of a checkpoint has as many labels as its first stored result
                let mut labels: Option<usize> = tx
                    .query_row(
                        "SELECT length(chosen) FROM results WHERE checkpoint_id = ?1 LIMIT 1",
                        params![task.checkpoint_id],
                        |r| r.get::<_, i64>(0),
                    )
                    .optional()?
                    .map(|bytes| bytes as usize / 8);
                for reward in rewards {
                    if reward.index < task.start || reward.index >= task.end {
                        return Err(StoreError::Invalid(format!(
                            "example index {} is outside the shard [{}, {}) of {}",
                            reward.index,
                            task.start,
                            task.end,
                            lease_name(lease.task_id, lease.epoch)
                        )));
                    }
                    let stored: String =
                        id_of.query_row(params![task.sweep_id, reward.index], |r| r.get(0))?;
                    if stored != reward.example_id {
                        return Err(StoreError::Invalid(format!(
                            "example {} is {stored:?} in this sweep, not {:?}",
                            reward.index, reward.example_id
                        )));
                    }
                    if reward.scores_chosen.is_empty() || reward.scores_rejected.is_empty() {
                        return Err(StoreError::Invalid(format!(
                            "example {} ({stored}) has no chosen or no rejected score",
                            reward.index
                        )));
                    }
                    if let Some(x) = reward
                        .scores_chosen
                        .iter()
                        .chain(&reward.scores_rejected)
                        .find(|x| !x.is_finite())
                    {
                        return Err(StoreError::Invalid(format!(
                            "example {} ({stored}) has a non-finite score ({x}); nothing of this \
                             message was stored",
                            reward.index
                        )));
                    }
                    let (chosen, rejected) =
                        (reward.scores_chosen.len(), reward.scores_rejected.len());
                    let expected = *labels.get_or_insert(chosen);
                    if chosen != expected || rejected != expected {
                        return Err(StoreError::Invalid(format!(
                            "example {} ({stored}) has {chosen} chosen and {rejected} rejected \
                             scores where this checkpoint has {expected} label(s); nothing of \
                             this message was stored",
                            reward.index
                        )));
                    }
                }
            }
            let mut counts = IngestCounts::default();
            let mut insert = tx.prepare_cached(
                "INSERT OR IGNORE INTO results(checkpoint_id, idx, chosen, rejected, task_id, epoch)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            )?;
            for reward in rewards {
                let n = insert.execute(params![
                    task.checkpoint_id,
                    reward.index,
                    encode_scores(&reward.scores_chosen),
                    encode_scores(&reward.scores_rejected),
                    lease.task_id,
                    epoch
                ])?;
                if n == 1 {
                    counts.stored += 1;
                } else {
                    counts.duplicates += 1;
                }
            }
            // results are a sign of life: keep the lease alive
            tx.execute(
                "UPDATE leases SET deadline_ms = MAX(deadline_ms, ?3) WHERE task_id = ?1 AND epoch = ?2",
                params![lease.task_id, epoch, deadline],
            )?;
            tx.execute(
                "UPDATE workers SET last_seen_ms = ?2 WHERE id = ?1",
                params![worker_id, now],
            )?;
            Ok(counts)
        })
    }

    /// Marks a task done once every example of its shard has a result.
    pub fn complete(
        &self,
        worker_id: &str,
        lease: &LeaseRef,
        model_type: &str,
        chat_template: &str,
        now: i64,
    ) -> Result<CompleteOutcome> {
        self.write(|tx| {
            let epoch = to_i64(lease.epoch);
            let row = lease_row(tx, lease.task_id, epoch)?;
            let task = task_row_opt(tx, lease.task_id)?;
            match (&row, &task) {
                (Some(row), Some(task))
                    if row.worker_id == worker_id
                        && row.state == "revoked"
                        && task.state == "done" =>
                {
                    // a straggler duplicate finished second: its results were duplicates
                    tx.execute(
                        "UPDATE attempts SET outcome = 'duplicate', ended_ms = ?3
                         WHERE task_id = ?1 AND epoch = ?2",
                        params![lease.task_id, epoch, now],
                    )?;
                    tracing::info!(
                        worker = worker_id,
                        task = lease.task_id,
                        epoch,
                        "complete (duplicate)"
                    );
                    return Ok(CompleteOutcome::default());
                }
                _ => {}
            }
            let task = check_active_lease(tx, worker_id, lease.task_id, epoch)?;
            let have: u32 = tx.query_row(
                "SELECT COUNT(*) FROM results WHERE checkpoint_id = ?1 AND idx >= ?2 AND idx < ?3",
                params![task.checkpoint_id, task.start, task.end],
                |r| r.get(0),
            )?;
            let want = task.end - task.start;
            if have < want {
                return Err(StoreError::Precondition(format!(
                    "{}: {} of the {want} examples of shard [{}, {}) have no result",
                    lease_name(lease.task_id, lease.epoch),
                    want - have,
                    task.start,
                    task.end
                )));
            }
            end_lease(tx, task.id, epoch, "done", "done", None, None, now)?;
            // other live leases of this task (stragglers) lose
            let others: Vec<i64> = {
                let mut stmt =
                    tx.prepare("SELECT epoch FROM leases WHERE task_id = ?1 AND state = 'active'")?;
                let rows = stmt.query_map(params![task.id], |r| r.get(0))?;
                rows.collect::<Result<_, _>>()?
            };
            for other in others {
                end_lease(
                    tx,
                    task.id,
                    other,
                    "revoked",
                    "revoked",
                    Some("completed by another lease"),
                    None,
                    now,
                )?;
            }
            tx.execute(
                "UPDATE tasks SET state = 'done' WHERE id = ?1",
                params![task.id],
            )?;
            tx.execute(
                "UPDATE checkpoints SET model_type = ?2, chat_template = ?3 WHERE id = ?1",
                params![task.checkpoint_id, model_type, chat_template],
            )?;
            let checkpoint_state = refresh_checkpoint(tx, task.checkpoint_id)?;
            let finished_sweeps = refresh_sweep(tx, task.sweep_id, now)?.into_iter().collect();
            tracing::info!(worker = worker_id, task = task.id, epoch, "complete");
            Ok(CompleteOutcome {
                first: true,
                checkpoint_done: checkpoint_state == "done",
                finished_sweeps,
            })
        })
    }

    /// A worker gives up a lease: TRANSIENT counts an attempt (retry with backoff, or fail at
    /// max_attempts), CHECKPOINT counts an attempt and at max_attempts fails the checkpoint and
    /// all its unfinished tasks, RELEASED hands the task back at once without counting.
    pub fn fail(
        &self,
        worker_id: &str,
        lease: &LeaseRef,
        kind: FailureKind,
        reason: &str,
        now: i64,
    ) -> Result<Transition> {
        let policy = self.policy.clone();
        self.write(|tx| {
            let epoch = to_i64(lease.epoch);
            let task = check_active_lease(tx, worker_id, lease.task_id, epoch)?;
            let worker = worker_label(tx, worker_id)?;
            let reason = if reason.trim().is_empty() { "no reason given" } else { reason };
            let mut out = Transition {
                leases: 1,
                ..Transition::default()
            };
            match kind {
                FailureKind::Released => {
                    end_lease(tx, task.id, epoch, "released", "released", Some(reason), None, now)?;
                    if live_leases(tx, task.id)? == 0 {
                        tx.execute(
                            "UPDATE tasks SET state = 'pending', next_eligible_ms = ?2 WHERE id = ?1 AND state = 'leased'",
                            params![task.id, now],
                        )?;
                    }
                    tracing::info!(worker = worker_id, task = task.id, epoch, "lease released");
                }
                FailureKind::Checkpoint => {
                    let full = format!("{reason} (worker {worker})");
                    let attempts = bump_attempts(tx, task.id)?;
                    end_lease(tx, task.id, epoch, "failed", "checkpoint", Some(&full), Some(attempts), now)?;
                    tracing::info!(worker = worker_id, task = task.id, epoch, attempts, "checkpoint failure");
                    if attempts >= policy.max_attempts {
                        out.tasks_failed += fail_checkpoint(tx, task.checkpoint_id, &full, now)?;
                        out.finished_sweeps.extend(refresh_sweep(tx, task.sweep_id, now)?);
                    } else {
                        retry_or_fail(tx, &policy, &task, attempts, &full, now, &mut out)?;
                    }
                }
                FailureKind::Transient | FailureKind::Unspecified => {
                    let full = format!("{reason} (worker {worker})");
                    let attempts = bump_attempts(tx, task.id)?;
                    end_lease(tx, task.id, epoch, "failed", "transient", Some(&full), Some(attempts), now)?;
                    tracing::info!(worker = worker_id, task = task.id, epoch, attempts, "transient failure");
                    retry_or_fail(tx, &policy, &task, attempts, &full, now, &mut out)?;
                }
            }
            Ok(out)
        })
    }

    /// On start-up, before the reaper first runs: every live lease gets one lease timeout from
    /// `now`. Workers kept scoring while the coordinator was down and could not heartbeat; their
    /// leases expire only if they stay silent for a whole timeout after the restart, so a restart
    /// costs no attempt. Returns the number of leases extended.
    pub fn grace_live_leases(&self, now: i64) -> Result<usize> {
        let deadline = now.saturating_add(to_i64(self.policy.lease_timeout_ms));
        self.write(|tx| {
            Ok(tx.execute(
                "UPDATE leases SET deadline_ms = MAX(deadline_ms, ?1) WHERE state = 'active'",
                params![deadline],
            )?)
        })
    }

    /// Expires active leases past their deadline; a task left with no live lease goes back to
    /// pending with backoff, or fails at max_attempts.
    pub fn reap(&self, now: i64) -> Result<Transition> {
        let policy = self.policy.clone();
        self.write(|tx| {
            let expired: Vec<(i64, i64, String)> = {
                let mut stmt = tx.prepare(
                    "SELECT task_id, epoch, worker_id FROM leases
                     WHERE state = 'active' AND deadline_ms < ?1 ORDER BY task_id, epoch",
                )?;
                let rows =
                    stmt.query_map(params![now], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?;
                rows.collect::<Result<_, _>>()?
            };
            let mut out = Transition::default();
            for (task_id, epoch, worker_id) in expired {
                let task = task_row(tx, task_id)?;
                let worker = worker_label(tx, &worker_id)?;
                let reason = format!("lease expired (worker {worker} stopped heartbeating)");
                tracing::warn!(worker = %worker_id, task = task_id, epoch, "lease expired");
                out.leases += 1;
                // an attempt is lost only when this was the task's one live lease (not when the
                // task is already done elsewhere, or a straggler duplicate is still alive)
                let attempt_lost = task.state == "leased" && live_leases(tx, task_id)? <= 1;
                let attempts = if attempt_lost {
                    Some(bump_attempts(tx, task_id)?)
                } else {
                    None
                };
                end_lease(
                    tx,
                    task_id,
                    epoch,
                    "expired",
                    "expired",
                    Some(&reason),
                    attempts,
                    now,
                )?;
                if let Some(attempts) = attempts {
                    retry_or_fail(tx, &policy, &task, attempts, &reason, now, &mut out)?;
                }
            }
            Ok(out)
        })
    }

    // --------------------------------------------------------------------------------------------
    // Reading
    // --------------------------------------------------------------------------------------------

    /// `coord status`: every sweep (or one) and every worker.
    pub fn status(&self, sweep: Option<&str>, now: i64) -> Result<StatusResponse> {
        let conn = self.snapshot()?;
        let sweeps: Vec<(i64, String, String)> = {
            let mut stmt = conn.prepare(
                "SELECT id, name, state FROM sweeps WHERE ?1 IS NULL OR name = ?1 ORDER BY created_ms, id",
            )?;
            let rows = stmt.query_map(params![sweep], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?;
            rows.collect::<Result<_, _>>()?
        };
        if let (Some(name), true) = (sweep, sweeps.is_empty()) {
            return Err(StoreError::NotFound(format!("no sweep named {name}")));
        }
        let mut out = StatusResponse::default();
        for (sweep_id, name, state) in sweeps {
            out.sweeps.push(sweep_status(&conn, sweep_id, name, state)?);
        }
        let mut stmt = conn
            .prepare("SELECT id, name, last_seen_ms, draining, stats FROM workers ORDER BY seq")?;
        let workers: Vec<WorkerRow> = stmt
            .query_map([], |r| {
                Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?))
            })?
            .collect::<Result<_, _>>()?;
        let mut lease_stmt = conn.prepare(
            "SELECT task_id, epoch FROM leases WHERE worker_id = ?1 AND state = 'active' ORDER BY task_id",
        )?;
        for (id, name, last_seen, draining, stats) in workers {
            let leases: Vec<LeaseRef> = lease_stmt
                .query_map(params![id], |r| {
                    Ok(LeaseRef {
                        task_id: r.get(0)?,
                        epoch: r.get::<_, i64>(1)? as u64,
                    })
                })?
                .collect::<Result<_, _>>()?;
            let lost = now - last_seen > to_i64(self.policy.lease_timeout_ms);
            let state = if lost {
                "lost"
            } else if draining {
                "draining"
            } else if leases.is_empty() {
                "idle"
            } else {
                "busy"
            };
            if lost
                && leases.is_empty()
                && now - last_seen > 10 * to_i64(self.policy.lease_timeout_ms)
            {
                continue; // long gone
            }
            let stats = match stats {
                Some(bytes) => Some(
                    WorkerStats::decode(&bytes[..])
                        .map_err(|e| StoreError::Corrupt(format!("worker stats: {e}")))?,
                ),
                None => None,
            };
            out.workers.push(WorkerStatus {
                id,
                name,
                state: state.into(),
                last_seen_unix_ms: last_seen,
                leases,
                stats,
            });
        }
        Ok(out)
    }

    /// The spec, evaluation set and fully scored checkpoints of a sweep.
    pub fn report_inputs(&self, sweep: &str) -> Result<ReportInputs> {
        let conn = self.snapshot()?;
        let (sweep_id, spec_bytes, state): (i64, Vec<u8>, String) = conn
            .query_row(
                "SELECT id, spec, state FROM sweeps WHERE name = ?1",
                params![sweep],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
            )
            .optional()?
            .ok_or_else(|| StoreError::NotFound(format!("no sweep named {sweep}")))?;
        let spec = decode_spec(&spec_bytes)?;
        let examples = all_examples(&conn, sweep_id)?;
        let checkpoints = checkpoints_of(&conn, sweep_id)?;
        let mut scored = Vec::new();
        let mut notes = Vec::new();
        let mut rewards_stmt = conn.prepare(
            "SELECT idx, chosen, rejected FROM results WHERE checkpoint_id = ?1 ORDER BY idx",
        )?;
        for c in checkpoints {
            match c.state.as_str() {
                "done" => {
                    let rows: Vec<(u32, Vec<u8>, Vec<u8>)> = rewards_stmt
                        .query_map(params![c.id], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?
                        .collect::<Result<_, _>>()?;
                    let mut rewards = Vec::with_capacity(rows.len());
                    for (index, chosen, rejected) in rows {
                        rewards.push(StoredReward {
                            index,
                            chosen: decode_scores(&chosen)?,
                            rejected: decode_scores(&rejected)?,
                        });
                    }
                    scored.push(ScoredCheckpoint {
                        name: c.name,
                        uri: c.uri,
                        model_type: c.model_type.unwrap_or_default(),
                        chat_template: c.chat_template.unwrap_or_default(),
                        rewards,
                    });
                }
                "failed" => notes.push(format!(
                    "{}: failed: {}",
                    c.name,
                    c.failure.unwrap_or_else(|| "no reason recorded".into())
                )),
                "cancelled" => notes.push(format!("{}: cancelled", c.name)),
                _ => {
                    let stored: i64 = conn.query_row(
                        "SELECT COUNT(*) FROM results WHERE checkpoint_id = ?1",
                        params![c.id],
                        |r| r.get(0),
                    )?;
                    notes.push(format!(
                        "{}: incomplete ({stored} of {} examples scored)",
                        c.name,
                        examples.len()
                    ));
                }
            }
        }
        Ok(ReportInputs {
            spec,
            complete: state == "done",
            examples,
            scored,
            notes,
        })
    }

    /// Workers heard from within the lease timeout, not draining.
    pub fn live_workers(&self, now: i64) -> Result<Vec<String>> {
        let conn = self.snapshot()?;
        let mut stmt = conn.prepare(
            "SELECT id FROM workers WHERE last_seen_ms >= ?1 AND draining = 0 ORDER BY seq",
        )?;
        let since = now.saturating_sub(to_i64(self.policy.lease_timeout_ms));
        let rows = stmt.query_map(params![since], |r| r.get(0))?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Every task of a sweep, by id.
    pub fn tasks(&self, sweep: &str) -> Result<Vec<TaskInfo>> {
        let conn = self.snapshot()?;
        let mut stmt = conn.prepare(
            "SELECT t.id, s.name, c.uri, t.shard_start, t.shard_end, t.state, t.attempts,
                    t.next_eligible_ms, t.last_epoch, t.failure
             FROM tasks t JOIN sweeps s ON s.id = t.sweep_id JOIN checkpoints c ON c.id = t.checkpoint_id
             WHERE s.name = ?1 ORDER BY t.id",
        )?;
        let rows = stmt.query_map(params![sweep], |r| {
            Ok(TaskInfo {
                id: r.get(0)?,
                sweep: r.get(1)?,
                checkpoint_uri: r.get(2)?,
                shard: r.get(3)?..r.get(4)?,
                state: r.get(5)?,
                attempts: r.get(6)?,
                next_eligible_ms: r.get(7)?,
                last_epoch: r.get::<_, i64>(8)? as u64,
                failure: r.get(9)?,
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Every lease ever given, by task and epoch.
    pub fn leases(&self) -> Result<Vec<LeaseInfo>> {
        let conn = self.snapshot()?;
        let mut stmt = conn.prepare(
            "SELECT task_id, epoch, worker_id, created_ms, deadline_ms, state FROM leases
             ORDER BY task_id, epoch",
        )?;
        let rows = stmt.query_map([], |r| {
            Ok(LeaseInfo {
                task_id: r.get(0)?,
                epoch: r.get::<_, i64>(1)? as u64,
                worker_id: r.get(2)?,
                created_ms: r.get(3)?,
                deadline_ms: r.get(4)?,
                state: r.get(5)?,
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Every checkpoint of a sweep, by id.
    pub fn checkpoints(&self, sweep: &str) -> Result<Vec<CheckpointInfo>> {
        let conn = self.snapshot()?;
        let id = sweep_id(&conn, sweep)?;
        checkpoints_of(&conn, id)
    }

    /// Stored results of one checkpoint (by uri) of a sweep, by example index.
    pub fn results(&self, sweep: &str, checkpoint_uri: &str) -> Result<Vec<StoredReward>> {
        let conn = self.snapshot()?;
        let mut stmt = conn.prepare(
            "SELECT r.idx, r.chosen, r.rejected FROM results r
             JOIN checkpoints c ON c.id = r.checkpoint_id JOIN sweeps s ON s.id = c.sweep_id
             WHERE s.name = ?1 AND c.uri = ?2 ORDER BY r.idx",
        )?;
        let rows: Vec<(u32, Vec<u8>, Vec<u8>)> = stmt
            .query_map(params![sweep, checkpoint_uri], |r| {
                Ok((r.get(0)?, r.get(1)?, r.get(2)?))
            })?
            .collect::<Result<_, _>>()?;
        rows.into_iter()
            .map(|(index, c, r)| {
                Ok(StoredReward {
                    index,
                    chosen: decode_scores(&c)?,
                    rejected: decode_scores(&r)?,
                })
            })
            .collect()
    }
}

// ------------------------------------------------------------------------------------------------
// helpers (all inside a transaction or under the connection lock)
// ------------------------------------------------------------------------------------------------

fn decode_spec(bytes: &[u8]) -> Result<SweepSpec> {
    SweepSpec::decode(bytes).map_err(|e| StoreError::Corrupt(format!("sweep spec: {e}")))
}

fn sweep_id(conn: &Connection, name: &str) -> Result<i64> {
    conn.query_row(
        "SELECT id FROM sweeps WHERE name = ?1",
        params![name],
        |r| r.get(0),
    )
    .optional()?
    .ok_or_else(|| StoreError::NotFound(format!("no sweep named {name}")))
}

fn all_finished(conn: &Connection) -> Result<bool> {
    let (total, active): (i64, i64) = conn.query_row(
        "SELECT COUNT(*), COALESCE(SUM(state = 'active'), 0) FROM sweeps",
        [],
        |r| Ok((r.get(0)?, r.get(1)?)),
    )?;
    Ok(total > 0 && active == 0)
}

fn all_examples(conn: &Connection, sweep_id: i64) -> Result<Vec<PlannedExample>> {
    examples_in(conn, sweep_id, 0..u32::MAX)
}

/// The stored examples with index in `range`, in index order.
fn examples_in(conn: &Connection, sweep_id: i64, range: Range<u32>) -> Result<Vec<PlannedExample>> {
    let mut stmt = conn.prepare_cached(
        "SELECT idx, example_id, subset, pair_json FROM examples
         WHERE sweep_id = ?1 AND idx >= ?2 AND idx < ?3 ORDER BY idx",
    )?;
    let rows = stmt.query_map(params![sweep_id, range.start, range.end], |r| {
        Ok(PlannedExample {
            index: r.get(0)?,
            id: r.get(1)?,
            subset: r.get(2)?,
            pair_json: r.get(3)?,
        })
    })?;
    Ok(rows.collect::<Result<_, _>>()?)
}

fn checkpoint_proto(conn: &Connection, id: i64) -> Result<Checkpoint> {
    let (uri, name, format, size): (String, String, String, i64) = conn.query_row(
        "SELECT uri, name, format, size_bytes FROM checkpoints WHERE id = ?1",
        params![id],
        |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
    )?;
    if CheckpointFormat::parse(&format).is_none() {
        return Err(StoreError::Corrupt(format!(
            "checkpoint {uri} has format {format:?}"
        )));
    }
    Ok(Checkpoint {
        id,
        uri,
        name,
        format,
        size_bytes: size.max(0) as u64,
    })
}

fn checkpoints_of(conn: &Connection, sweep_id: i64) -> Result<Vec<CheckpointInfo>> {
    let mut stmt = conn.prepare_cached(
        "SELECT id, uri, name, state, failure, model_type, chat_template FROM checkpoints
         WHERE sweep_id = ?1 ORDER BY id",
    )?;
    let rows = stmt.query_map(params![sweep_id], |r| {
        Ok(CheckpointInfo {
            id: r.get(0)?,
            uri: r.get(1)?,
            name: r.get(2)?,
            state: r.get(3)?,
            failure: r.get(4)?,
            model_type: r.get(5)?,
            chat_template: r.get(6)?,
        })
    })?;
    Ok(rows.collect::<Result<_, _>>()?)
}

fn task_row_opt(conn: &Connection, id: i64) -> Result<Option<TaskRow>> {
    Ok(conn
        .query_row(
            "SELECT id, sweep_id, checkpoint_id, shard_start, shard_end, state FROM tasks WHERE id = ?1",
            params![id],
            |r| {
                Ok(TaskRow {
                    id: r.get(0)?,
                    sweep_id: r.get(1)?,
                    checkpoint_id: r.get(2)?,
                    start: r.get(3)?,
                    end: r.get(4)?,
                    state: r.get(5)?,
                })
            },
        )
        .optional()?)
}

fn task_row(conn: &Connection, id: i64) -> Result<TaskRow> {
    task_row_opt(conn, id)?.ok_or_else(|| StoreError::Corrupt(format!("task {id} is missing")))
}

fn lease_row(conn: &Connection, task_id: i64, epoch: i64) -> Result<Option<LeaseRow>> {
    Ok(conn
        .query_row(
            "SELECT worker_id, state FROM leases WHERE task_id = ?1 AND epoch = ?2",
            params![task_id, epoch],
            |r| {
                Ok(LeaseRow {
                    worker_id: r.get(0)?,
                    state: r.get(1)?,
                })
            },
        )
        .optional()?)
}

/// The task of an active lease held by `worker_id`; Forbidden when another worker holds it (whom
/// is not said), else StaleLease saying why not.
fn check_active_lease(
    conn: &Connection,
    worker_id: &str,
    task_id: i64,
    epoch: i64,
) -> Result<TaskRow> {
    let name = lease_name(task_id, epoch.max(0) as u64);
    match lease_row(conn, task_id, epoch)? {
        None => Err(StoreError::StaleLease(format!("{name} is unknown"))),
        Some(row) if row.worker_id != worker_id => Err(StoreError::Forbidden(format!(
            "{name} is not held by worker {worker_id}"
        ))),
        Some(row) if row.state != "active" => Err(StoreError::StaleLease(format!(
            "{name} is no longer active ({})",
            row.state
        ))),
        Some(_) => task_row(conn, task_id),
    }
}

fn worker_label(conn: &Connection, worker_id: &str) -> Result<String> {
    let name: Option<String> = conn
        .query_row(
            "SELECT name FROM workers WHERE id = ?1",
            params![worker_id],
            |r| r.get(0),
        )
        .optional()?;
    Ok(match name {
        Some(name) if !name.is_empty() => format!("{name} ({worker_id})"),
        _ => worker_id.to_string(),
    })
}

fn live_leases(conn: &Connection, task_id: i64) -> Result<u32> {
    Ok(conn.query_row(
        "SELECT COUNT(*) FROM leases WHERE task_id = ?1 AND state = 'active'",
        params![task_id],
        |r| r.get(0),
    )?)
}

fn bump_attempts(conn: &Connection, task_id: i64) -> Result<u32> {
    conn.execute(
        "UPDATE tasks SET attempts = attempts + 1 WHERE id = ?1",
        params![task_id],
    )?;
    Ok(conn.query_row(
        "SELECT attempts FROM tasks WHERE id = ?1",
        params![task_id],
        |r| r.get(0),
    )?)
}

#[allow(clippy::too_many_arguments)]
fn end_lease(
    conn: &Connection,
    task_id: i64,
    epoch: i64,
    lease_state: &str,
    outcome: &str,
    reason: Option<&str>,
    attempt: Option<u32>,
    now: i64,
) -> Result<()> {
    conn.execute(
        "UPDATE leases SET state = ?3 WHERE task_id = ?1 AND epoch = ?2",
        params![task_id, epoch, lease_state],
    )?;
    conn.execute(
        "UPDATE attempts SET outcome = ?3, reason = ?4, attempt = ?5, ended_ms = ?6
         WHERE task_id = ?1 AND epoch = ?2",
        params![task_id, epoch, outcome, reason, attempt, now],
    )?;
    Ok(())
}

/// After a counted failed attempt of `task` whose lease just ended: back to pending with backoff
/// (unless another lease is still live), or failed for good at max_attempts.
fn retry_or_fail(
    tx: &Connection,
    policy: &Policy,
    task: &TaskRow,
    attempts: u32,
    reason: &str,
    now: i64,
    out: &mut Transition,
) -> Result<()> {
    if live_leases(tx, task.id)? > 0 {
        return Ok(());
    }
    if attempts >= policy.max_attempts {
        let failure = format!("{reason}; gave up after {attempts} attempts");
        tx.execute(
            "UPDATE tasks SET state = 'failed', failure = ?2 WHERE id = ?1 AND state = 'leased'",
            params![task.id, failure],
        )?;
        tracing::warn!(task = task.id, attempts, "task failed");
        out.tasks_failed += 1;
        refresh_checkpoint(tx, task.checkpoint_id)?;
        out.finished_sweeps
            .extend(refresh_sweep(tx, task.sweep_id, now)?);
    } else {
        let eligible = now.saturating_add(to_i64(policy.backoff_ms(attempts)));
        tx.execute(
            "UPDATE tasks SET state = 'pending', next_eligible_ms = ?2, failure = ?3
             WHERE id = ?1 AND state = 'leased'",
            params![task.id, eligible, reason],
        )?;
    }
    Ok(())
}

/// The checkpoint is bad: it and every task of it not done fail with `reason`.
fn fail_checkpoint(tx: &Connection, checkpoint_id: i64, reason: &str, now: i64) -> Result<u32> {
    let live: Vec<(i64, i64)> = {
        let mut stmt = tx.prepare(
            "SELECT l.task_id, l.epoch FROM leases l JOIN tasks t ON t.id = l.task_id
             WHERE t.checkpoint_id = ?1 AND l.state = 'active'",
        )?;
        let rows = stmt.query_map(params![checkpoint_id], |r| Ok((r.get(0)?, r.get(1)?)))?;
        rows.collect::<Result<_, _>>()?
    };
    for (task_id, epoch) in live {
        end_lease(
            tx,
            task_id,
            epoch,
            "revoked",
            "revoked",
            Some("checkpoint failed"),
            None,
            now,
        )?;
    }
    let failed = tx.execute(
        "UPDATE tasks SET state = 'failed', failure = ?2
         WHERE checkpoint_id = ?1 AND state IN ('pending', 'leased')",
        params![checkpoint_id, reason],
    )?;
    tx.execute(
        "UPDATE checkpoints SET state = 'failed', failure = ?2 WHERE id = ?1",
        params![checkpoint_id, reason],
    )?;
    tracing::warn!(
        checkpoint = checkpoint_id,
        tasks = failed,
        "checkpoint failed"
    );
    Ok(failed as u32)
}

/// Derives a checkpoint's state from its tasks; returns it.
fn refresh_checkpoint(tx: &Connection, checkpoint_id: i64) -> Result<String> {
    let (total, done, failed, live): (i64, i64, i64, i64) = tx.query_row(
        "SELECT COUNT(*), COALESCE(SUM(state = 'done'), 0), COALESCE(SUM(state = 'failed'), 0),
                COALESCE(SUM(state IN ('pending', 'leased')), 0)
         FROM tasks WHERE checkpoint_id = ?1",
        params![checkpoint_id],
        |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
    )?;
    if live == 0 {
        if done == total {
            tx.execute(
                "UPDATE checkpoints SET state = 'done' WHERE id = ?1",
                params![checkpoint_id],
            )?;
        } else if failed > 0 {
            tx.execute(
                "UPDATE checkpoints SET state = 'failed', failure = COALESCE(failure,
                    (SELECT 'examples [' || shard_start || ', ' || shard_end || '): ' || failure
                     FROM tasks WHERE checkpoint_id = ?1 AND state = 'failed' ORDER BY id LIMIT 1))
                 WHERE id = ?1",
                params![checkpoint_id],
            )?;
        }
    }
    Ok(tx.query_row(
        "SELECT state FROM checkpoints WHERE id = ?1",
        params![checkpoint_id],
        |r| r.get(0),
    )?)
}

/// Marks an active sweep done when no task is pending or leased; returns its name if it was.
fn refresh_sweep(tx: &Connection, sweep_id: i64, now: i64) -> Result<Option<String>> {
    // EXISTS stops at the first live task; a COUNT would walk all of a large sweep's queue
    let live: bool = tx.query_row(
        "SELECT EXISTS (SELECT 1 FROM tasks WHERE sweep_id = ?1 AND state IN ('pending', 'leased'))",
        params![sweep_id],
        |r| r.get(0),
    )?;
    if live {
        return Ok(None);
    }
    let changed = tx.execute(
        "UPDATE sweeps SET state = 'done', finished_ms = ?2 WHERE id = ?1 AND state = 'active'",
        params![sweep_id, now],
    )?;
    if changed == 0 {
        return Ok(None);
    }
    let name: String = tx.query_row(
        "SELECT name FROM sweeps WHERE id = ?1",
        params![sweep_id],
        |r| r.get(0),
    )?;
    tracing::info!(sweep = %name, "sweep done");
    Ok(Some(name))
}

fn sweep_status(
    conn: &Connection,
    sweep_id: i64,
    name: String,
    state: String,
) -> Result<SweepStatus> {
    let (total, done, failed, leased): (u32, u32, u32, u32) = conn.query_row(
        "SELECT COUNT(*), COALESCE(SUM(state = 'done'), 0), COALESCE(SUM(state = 'failed'), 0),
                COALESCE(SUM(state = 'leased'), 0)
         FROM tasks WHERE sweep_id = ?1",
        params![sweep_id],
        |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
    )?;
    let examples: i64 = conn.query_row(
        "SELECT COUNT(*) FROM examples WHERE sweep_id = ?1",
        params![sweep_id],
        |r| r.get(0),
    )?;
    let examples = examples.max(0) as u64;
    let mut status = SweepStatus {
        name,
        state,
        tasks_total: total,
        tasks_done: done,
        tasks_failed: failed,
        tasks_leased: leased,
        ..SweepStatus::default()
    };
    let mut stmt = conn.prepare_cached(
        "SELECT c.name, c.uri, c.state, c.failure,
                (SELECT COUNT(*) FROM tasks t WHERE t.checkpoint_id = c.id),
                (SELECT COUNT(*) FROM tasks t WHERE t.checkpoint_id = c.id AND t.state = 'done'),
                (SELECT COUNT(*) FROM results r WHERE r.checkpoint_id = c.id)
         FROM checkpoints c WHERE c.sweep_id = ?1 ORDER BY c.id",
    )?;
    let rows = stmt.query_map(params![sweep_id], |r| {
        Ok(CheckpointStatus {
            name: r.get(0)?,
            uri: r.get(1)?,
            state: r.get(2)?,
            failure: r.get::<_, Option<String>>(3)?.unwrap_or_default(),
            tasks_total: r.get(4)?,
            tasks_done: r.get(5)?,
            examples_total: examples,
            examples_stored: r.get::<_, i64>(6)?.max(0) as u64,
        })
    })?;
    for row in rows {
        let row = row?;
        status.examples_total += row.examples_total;
        status.examples_stored += row.examples_stored;
        status.checkpoints.push(row);
    }
    let mut stmt = conn.prepare_cached(
        "SELECT c.name, a.task_id, COALESCE(a.attempt, 0), COALESCE(w.name || ' (' || a.worker_id || ')', a.worker_id),
                COALESCE(a.reason, ''), COALESCE(a.ended_ms, a.started_ms)
         FROM attempts a JOIN tasks t ON t.id = a.task_id JOIN checkpoints c ON c.id = t.checkpoint_id
         LEFT JOIN workers w ON w.id = a.worker_id
         WHERE t.sweep_id = ?1 AND a.outcome IN ('expired', 'transient', 'checkpoint')
         ORDER BY a.ended_ms DESC, a.id DESC LIMIT ?2",
    )?;
    let rows = stmt.query_map(params![sweep_id, RECENT_FAILURES], |r| {
        Ok(TaskFailure {
            checkpoint: r.get(0)?,
            task_id: r.get(1)?,
            attempt: r.get(2)?,
            worker: r.get(3)?,
            reason: r.get(4)?,
            at_unix_ms: r.get(5)?,
        })
    })?;
    for row in rows {
        status.failures.push(row?);
    }
    Ok(status)
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::thread;

    use super::*;

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
            })
            .to_vec();
        let examples = (0..n)
            .map(|i| PlannedExample {
                index: i,
                id: format!("ex{i}"),
                subset: "alpacaeval-easy".into(),
                pair_json: "{}".into(),
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
        let rewards: Vec<ExampleReward> = first
            .examples
            .iter()
            .map(|e| ExampleReward {
                index: e.index,
                example_id: e.id.clone(),
                scores_chosen: vec![1.0],
                scores_rejected: vec![0.0],
            })
            .collect();
        // a write in progress; results queue behind it, then the same worker asks for more work
        let held = store.gate.enter(Lane::Ingest);
        let ingest = {
            let (store, worker, lease) = (store.clone(), worker.clone(), first.lease.unwrap());
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
        assert_eq!(status.workers[0].last_seen_unix_ms, 200);
    }
}
