//! Leasing: which task an asking worker gets (the order is described in [`crate::scheduler`]),
//! heartbeats that keep leases alive, and the grace a restart gives live leases. Also the row
//! readers and the lease check the other aggregates share.

use std::ops::Range;
use std::sync::Arc;

use herd_rpc::v1::{Capabilities, WorkerStats};
use prost::Message;
use rusqlite::{params, Connection, OptionalExtension};

use super::queries::{all_finished, examples_in};
use super::states::StoredFormat;
use super::sweeps::decode_spec;
use super::{lock, to_i64, Result, ShardKey, Store, StoreError};
use crate::domain::{
    AttemptOutcome, CheckpointState, Grant, LeaseId, LeaseState, PlannedCheckpoint, PlannedExample,
    SweepState, TaskState,
};
use crate::scheduler;

/// Shards whose examples [`Store::shard_examples`] keeps in memory; past this it starts over.
const SHARDS_KEPT: usize = 256;

/// What `lease` answers (`L`: the lease, a [`Grant`] as the store answers it).
#[derive(Clone, Debug, PartialEq)]
pub enum LeaseOutcome<L = Box<Grant>> {
    Leased(L),
    /// nothing can be leased now; `all_finished`: every sweep is done or cancelled (and there
    /// is at least one)
    Idle {
        all_finished: bool,
    },
    /// the worker is draining: it gets nothing new
    Draining,
}

impl<L> LeaseOutcome<L> {
    /// The same answer with the lease converted by `f`.
    pub fn map<M>(self, f: impl FnOnce(L) -> M) -> LeaseOutcome<M> {
        match self {
            LeaseOutcome::Leased(lease) => LeaseOutcome::Leased(f(lease)),
            LeaseOutcome::Idle { all_finished } => LeaseOutcome::Idle { all_finished },
            LeaseOutcome::Draining => LeaseOutcome::Draining,
        }
    }
}

impl Store {
    /// Leases one task to `worker_id` (see [`crate::scheduler`] for the order).
    pub fn lease(&self, worker_id: &str, cached: &[String], now: i64) -> Result<LeaseOutcome> {
        let policy = self.policy.clone();
        self.write(|tx| {
            let (draining, last_checkpoint, stored_cached, capabilities): (
                bool,
                Option<i64>,
                String,
                Option<Vec<u8>>,
            ) = tx
                .query_row(
                    "SELECT draining, last_checkpoint_id, cached, capabilities FROM workers
                     WHERE id = ?1",
                    params![worker_id],
                    |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
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
            // the memory rule: what this worker holds, and what the smallest live worker holds
            let headroom = policy.memory_headroom_bytes;
            let room = |caps: Option<Vec<u8>>| {
                caps.and_then(|bytes| Capabilities::decode(&bytes[..]).ok())
                    .and_then(|caps| scheduler::max_param_bytes(&caps, headroom))
                    .map_or(i64::MAX, to_i64)
            };
            let own_room = room(capabilities);
            let smallest_room = live_rooms(tx, now, to_i64(policy.lease_timeout_ms), headroom)?
                .into_iter()
                .map(|r| r.map_or(i64::MAX, to_i64))
                .min()
                .unwrap_or(i64::MAX)
                .min(own_room);

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

            // rule 0 (big tasks that fit, when this worker holds more than the smallest), then
            // rules 1-2 for every task that fits
            let mut task_id = None;
            if own_room > smallest_room {
                task_id = pending_task(tx, &held, now, smallest_room, own_room)?;
            }
            if task_id.is_none() {
                task_id = pending_task(tx, &held, now, -1, own_room)?;
            }
            let mut straggler = false;
            if task_id.is_none() && policy.stragglers {
                task_id = tx
                    .query_row(
                        "SELECT t.id FROM tasks t
                         JOIN sweeps s ON s.id = t.sweep_id
                         JOIN checkpoints c ON c.id = t.checkpoint_id
                         JOIN leases l ON l.task_id = t.id AND l.state = ?3
                         WHERE t.state = ?4 AND s.state = ?5
                           AND COALESCE(c.param_bytes, 0) <= ?7
                           AND NOT EXISTS (SELECT 1 FROM tasks p
                                           WHERE p.sweep_id = t.sweep_id AND p.state = ?6)
                           AND NOT EXISTS (SELECT 1 FROM leases m
                                           WHERE m.task_id = t.id AND m.state = ?3
                                             AND m.worker_id = ?1)
                         GROUP BY t.id
                         HAVING COUNT(*) < ?2
                         ORDER BY MIN(l.created_ms), t.id LIMIT 1",
                        params![
                            worker_id,
                            policy.max_leases_per_task,
                            LeaseState::Active,
                            TaskState::Leased,
                            SweepState::Active,
                            TaskState::Pending,
                            own_room
                        ],
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
                "UPDATE tasks SET state = ?3, last_epoch = ?2 WHERE id = ?1",
                params![task_id, epoch, TaskState::Leased],
            )?;
            tx.execute(
                "INSERT INTO leases(task_id, epoch, worker_id, created_ms, deadline_ms, state)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                params![task_id, epoch, worker_id, now, deadline, LeaseState::Active],
            )?;
            tx.execute(
                "INSERT INTO attempts(task_id, epoch, worker_id, outcome, started_ms)
                 VALUES (?1, ?2, ?3, ?4, ?5)",
                params![task_id, epoch, worker_id, AttemptOutcome::Running, now],
            )?;
            tx.execute(
                "UPDATE workers SET last_checkpoint_id = ?2 WHERE id = ?1",
                params![worker_id, task.checkpoint_id],
            )?;
            tx.execute(
                "UPDATE checkpoints SET state = ?2 WHERE id = ?1 AND state = ?3",
                params![
                    task.checkpoint_id,
                    CheckpointState::Running,
                    CheckpointState::Pending
                ],
            )?;

            let (sweep_name, spec_bytes): (String, Vec<u8>) = tx.query_row(
                "SELECT name, spec FROM sweeps WHERE id = ?1",
                params![task.sweep_id],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )?;
            let spec = decode_spec(&spec_bytes)?;
            let checkpoint = checkpoint_of(tx, task.checkpoint_id)?;
            let examples = self.shard_examples(tx, task.sweep_id, task.start..task.end)?;
            // prefetch: the next checkpoint in queue order nobody is working on (else any other)
            let mut prefetch_uri = String::new();
            for untouched in [true, false] {
                let found: Option<String> = tx
                    .prepare_cached(
                        "SELECT c.uri FROM tasks t INDEXED BY tasks_queue
                         JOIN checkpoints c ON c.id = t.checkpoint_id
                         WHERE t.state = ?4 AND t.checkpoint_id != ?1 AND c.uri != ?2
                           AND (?3 = 0 OR NOT EXISTS (SELECT 1 FROM tasks u
                                WHERE u.checkpoint_id = t.checkpoint_id AND u.state = ?5))
                           AND EXISTS (SELECT 1 FROM sweeps s WHERE s.id = t.sweep_id AND s.state = ?6)
                           AND COALESCE(c.param_bytes, 0) <= ?7
                         ORDER BY t.sweep_id, t.id LIMIT 1",
                    )?
                    .query_row(
                        params![
                            task.checkpoint_id,
                            checkpoint.uri,
                            untouched,
                            TaskState::Pending,
                            TaskState::Leased,
                            SweepState::Active,
                            own_room
                        ],
                        |r| r.get(0),
                    )
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
            Ok(LeaseOutcome::Leased(Box::new(Grant {
                lease: LeaseId {
                    task_id,
                    epoch: epoch as u64,
                },
                sweep: sweep_name,
                deadline_ms: deadline,
                checkpoint_id: task.checkpoint_id,
                checkpoint,
                scoring: spec.scoring,
                shard: task.start..task.end,
                // shared with the cache: the copy for the wire is made outside the gate
                examples,
                prefetch_uri,
            })))
        })
    }

    /// Refreshes the deadlines of the worker's listed active leases and returns the listed leases
    /// it must drop (no longer active, or not its own).
    pub fn heartbeat(
        &self,
        worker_id: &str,
        leases: &[LeaseId],
        draining: bool,
        stats: Option<&WorkerStats>,
        now: i64,
    ) -> Result<Vec<LeaseId>> {
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
                    Some(row) if row.state == LeaseState::Active && row.worker_id == worker_id => {
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

    /// On start-up, before the reaper first runs: every live lease gets one lease timeout from
    /// `now`. Workers kept scoring while the coordinator was down and could not heartbeat; their
    /// leases expire only if they stay silent for a whole timeout after the restart, so a restart
    /// costs no attempt. Returns the number of leases extended.
    pub fn grace_live_leases(&self, now: i64) -> Result<usize> {
        let deadline = now.saturating_add(to_i64(self.policy.lease_timeout_ms));
        self.write(|tx| {
            Ok(tx.execute(
                "UPDATE leases SET deadline_ms = MAX(deadline_ms, ?1) WHERE state = ?2",
                params![deadline, LeaseState::Active],
            )?)
        })
    }

    /// A lease's examples, read once per shard and then kept: a sweep's examples are written when
    /// it is created and never change.
    fn shard_examples(
        &self,
        conn: &Connection,
        sweep_id: i64,
        shard: Range<u32>,
    ) -> Result<Arc<[PlannedExample]>> {
        let key: ShardKey = (sweep_id, shard.start, shard.end);
        if let Some(examples) = lock(&self.shards).get(&key) {
            return Ok(examples.clone());
        }
        let examples: Arc<[PlannedExample]> = examples_in(conn, sweep_id, shard)?.into();
        let mut shards = lock(&self.shards);
        if shards.len() >= SHARDS_KEPT {
            shards.clear();
        }
        shards.insert(key, examples.clone());
        Ok(examples)
    }
}

/// The first eligible pending task (rules 1-2 of [`crate::scheduler`]) whose checkpoint's
/// `param_bytes` (unknown: 0) lies in `(above, at_most]`: of a checkpoint in `held` first (oldest
/// sweep, lowest id among them), else of any checkpoint in queue order.
fn pending_task(
    tx: &Connection,
    held: &[i64],
    now: i64,
    above: i64,
    at_most: i64,
) -> Result<Option<i64>> {
    // sweep ids grow with creation: the lowest is the oldest sweep
    let mut best: Option<(i64, i64)> = None;
    {
        // the checkpoint's few tasks, not a scan of the whole queue for them
        let mut stmt = tx.prepare_cached(
            "SELECT t.sweep_id, t.id FROM tasks t INDEXED BY tasks_checkpoint
             JOIN sweeps s ON s.id = t.sweep_id
             JOIN checkpoints c ON c.id = t.checkpoint_id
             WHERE t.checkpoint_id = ?1 AND t.state = ?3 AND t.next_eligible_ms <= ?2
               AND s.state = ?4
               AND COALESCE(c.param_bytes, 0) > ?5 AND COALESCE(c.param_bytes, 0) <= ?6
             ORDER BY t.sweep_id, t.id LIMIT 1",
        )?;
        for checkpoint_id in held {
            let found: Option<(i64, i64)> = stmt
                .query_row(
                    params![
                        checkpoint_id,
                        now,
                        TaskState::Pending,
                        SweepState::Active,
                        above,
                        at_most
                    ],
                    |r| Ok((r.get(0)?, r.get(1)?)),
                )
                .optional()?;
            if let Some(found) = found {
                if best.is_none_or(|b| found < b) {
                    best = Some(found);
                }
            }
        }
    }
    if let Some((_, id)) = best {
        return Ok(Some(id));
    }
    Ok(tx
        .query_row(
            "SELECT t.id FROM tasks t INDEXED BY tasks_queue
             WHERE t.state = ?2 AND t.next_eligible_ms <= ?1
               AND EXISTS (SELECT 1 FROM sweeps s WHERE s.id = t.sweep_id AND s.state = ?3)
               AND EXISTS (SELECT 1 FROM checkpoints c WHERE c.id = t.checkpoint_id
                           AND COALESCE(c.param_bytes, 0) > ?4
                           AND COALESCE(c.param_bytes, 0) <= ?5)
             ORDER BY t.sweep_id, t.id LIMIT 1",
            params![now, TaskState::Pending, SweepState::Active, above, at_most],
            |r| r.get(0),
        )
        .optional()?)
}

/// [`crate::scheduler::max_param_bytes`] of every live worker (heard from within the lease
/// timeout, not draining): `None` for one that registered no memory.
pub(super) fn live_rooms(
    conn: &Connection,
    now: i64,
    lease_timeout_ms: i64,
    headroom: u64,
) -> Result<Vec<Option<u64>>> {
    let mut stmt = conn.prepare_cached(
        "SELECT capabilities FROM workers WHERE last_seen_ms >= ?1 AND draining = 0",
    )?;
    let rows = stmt.query_map(params![now.saturating_sub(lease_timeout_ms)], |r| {
        r.get::<_, Option<Vec<u8>>>(0)
    })?;
    let mut out = Vec::new();
    for caps in rows {
        out.push(
            caps?
                .and_then(|bytes| Capabilities::decode(&bytes[..]).ok())
                .and_then(|caps| scheduler::max_param_bytes(&caps, headroom)),
        );
    }
    Ok(out)
}

pub(super) struct TaskRow {
    pub id: i64,
    pub sweep_id: i64,
    pub checkpoint_id: i64,
    pub start: u32,
    pub end: u32,
    pub state: TaskState,
}

pub(super) struct LeaseRow {
    pub worker_id: String,
    pub state: LeaseState,
}

pub(super) fn task_row_opt(conn: &Connection, id: i64) -> Result<Option<TaskRow>> {
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

pub(super) fn task_row(conn: &Connection, id: i64) -> Result<TaskRow> {
    task_row_opt(conn, id)?.ok_or_else(|| StoreError::Corrupt(format!("task {id} is missing")))
}

pub(super) fn lease_row(conn: &Connection, task_id: i64, epoch: i64) -> Result<Option<LeaseRow>> {
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

/// The task of `lease` when it is active and held by `worker_id`; Forbidden when another worker
/// holds it (whom is not said), else StaleLease saying why not.
pub(super) fn check_active_lease(
    conn: &Connection,
    worker_id: &str,
    lease: &LeaseId,
) -> Result<TaskRow> {
    let epoch = to_i64(lease.epoch);
    let name = LeaseId {
        task_id: lease.task_id,
        epoch: epoch.max(0) as u64,
    };
    match lease_row(conn, lease.task_id, epoch)? {
        None => Err(StoreError::StaleLease(format!("{name} is unknown"))),
        Some(row) if row.worker_id != worker_id => Err(StoreError::Forbidden(format!(
            "{name} is not held by worker {worker_id}"
        ))),
        Some(row) if row.state != LeaseState::Active => Err(StoreError::StaleLease(format!(
            "{name} is no longer active ({})",
            row.state
        ))),
        Some(_) => task_row(conn, lease.task_id),
    }
}

fn checkpoint_of(conn: &Connection, id: i64) -> Result<PlannedCheckpoint> {
    let (uri, name, StoredFormat(format), size, param_bytes): (
        String,
        String,
        StoredFormat,
        i64,
        Option<i64>,
    ) = conn.query_row(
        "SELECT uri, name, format, size_bytes, param_bytes FROM checkpoints WHERE id = ?1",
        params![id],
        |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?)),
    )?;
    Ok(PlannedCheckpoint {
        uri,
        name,
        format,
        size_bytes: size.max(0) as u64,
        param_bytes: param_bytes.unwrap_or(0).max(0) as u64,
    })
}
