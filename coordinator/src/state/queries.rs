//! Everything read-only: `coord status`, report inputs, live workers, and the row listings status
//! tools and tests read. Each method reads one snapshot (see [`Store::snapshot`]).

use std::ops::Range;

use herd_rpc::v1::{SweepSpec, WorkerStats};
use prost::Message;
use rusqlite::{params, Connection, OptionalExtension};

use super::ingest::{decode_scores, stored_texts};
use super::leasing::live_rooms;
use super::sweeps::{decode_spec, sweep_id};
use super::{to_i64, Result, Store, StoreError};
use crate::domain::{
    AttemptFailure, AttemptOutcome, CheckpointProgress, CheckpointState, Completions, LeaseId,
    LeaseState, Overview, PlannedExample, ScoredCheckpoint, StoredReward, SweepProgress,
    SweepState, TaskState, WorkerState, WorkerView,
};

/// Failures shown by `status`, newest first.
const RECENT_FAILURES: u32 = 20;

/// One task as stored (for status tools and tests).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TaskInfo {
    pub id: i64,
    pub sweep: String,
    pub checkpoint_uri: String,
    pub shard: Range<u32>,
    pub state: TaskState,
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
    pub state: LeaseState,
}

/// One checkpoint as stored.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CheckpointInfo {
    pub id: i64,
    pub uri: String,
    pub name: String,
    pub state: CheckpointState,
    pub failure: Option<String>,
    pub model_type: Option<String>,
    pub chat_template: Option<String>,
    /// CompleteRequest.scalar_output (NULL before the column: false)
    pub scalar_output: bool,
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

/// id, name, last_seen_ms, draining, stats
type WorkerRow = (String, String, i64, bool, Option<Vec<u8>>);

impl Store {
    /// True when there is at least one sweep and every sweep is done or cancelled.
    pub fn all_finished(&self) -> Result<bool> {
        let conn = self.snapshot()?;
        all_finished(&conn)
    }

    /// Names and states of every sweep, oldest first.
    pub fn sweeps(&self) -> Result<Vec<(String, SweepState)>> {
        let conn = self.snapshot()?;
        let mut stmt = conn.prepare("SELECT name, state FROM sweeps ORDER BY created_ms, id")?;
        let rows = stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// `coord status`: every sweep (or one) and every worker.
    pub fn status(&self, sweep: Option<&str>, now: i64) -> Result<Overview> {
        let conn = self.snapshot()?;
        let sweeps: Vec<(i64, String, SweepState)> = {
            let mut stmt = conn.prepare(
                "SELECT id, name, state FROM sweeps WHERE ?1 IS NULL OR name = ?1 ORDER BY created_ms, id",
            )?;
            let rows = stmt.query_map(params![sweep], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?;
            rows.collect::<Result<_, _>>()?
        };
        if let (Some(name), true) = (sweep, sweeps.is_empty()) {
            return Err(StoreError::NotFound(format!("no sweep named {name}")));
        }
        let mut out = Overview::default();
        let rooms = live_rooms(
            &conn,
            now,
            to_i64(self.policy.lease_timeout_ms),
            self.policy.memory_headroom_bytes,
        )?;
        for (sweep_id, name, state) in sweeps {
            out.sweeps
                .push(sweep_progress(&conn, sweep_id, name, state, &rooms)?);
        }
        let mut stmt = conn
            .prepare("SELECT id, name, last_seen_ms, draining, stats FROM workers ORDER BY seq")?;
        let workers: Vec<WorkerRow> = stmt
            .query_map([], |r| {
                Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?))
            })?
            .collect::<Result<_, _>>()?;
        let mut lease_stmt = conn.prepare(
            "SELECT task_id, epoch FROM leases WHERE worker_id = ?1 AND state = ?2 ORDER BY task_id",
        )?;
        for (id, name, last_seen, draining, stats) in workers {
            let leases: Vec<LeaseId> = lease_stmt
                .query_map(params![id, LeaseState::Active], |r| {
                    Ok(LeaseId {
                        task_id: r.get(0)?,
                        epoch: r.get::<_, i64>(1)? as u64,
                    })
                })?
                .collect::<Result<_, _>>()?;
            let lost = now - last_seen > to_i64(self.policy.lease_timeout_ms);
            let state = if lost {
                WorkerState::Lost
            } else if draining {
                WorkerState::Draining
            } else if leases.is_empty() {
                WorkerState::Idle
            } else {
                WorkerState::Busy
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
            out.workers.push(WorkerView {
                id,
                name,
                state,
                last_seen_ms: last_seen,
                leases,
                stats,
            });
        }
        Ok(out)
    }

    /// The spec, evaluation set and fully scored checkpoints of a sweep.
    pub fn report_inputs(&self, sweep: &str) -> Result<ReportInputs> {
        let conn = self.snapshot()?;
        let (sweep_id, spec_bytes, state): (i64, Vec<u8>, SweepState) = conn
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
            "SELECT idx, chosen, rejected, texts FROM results WHERE checkpoint_id = ?1
             ORDER BY idx",
        )?;
        let mut text_stmt = conn.prepare_cached("SELECT text FROM texts WHERE digest = ?1")?;
        // each distinct text once, however many checkpoints scored it
        let mut seen_texts = std::collections::HashMap::new();
        for c in checkpoints {
            match c.state {
                CheckpointState::Done => {
                    let mut rows = Vec::new();
                    let mut digests = Vec::new();
                    let mut rewards_rows = rewards_stmt.query(params![c.id])?;
                    while let Some(r) = rewards_rows.next()? {
                        rows.push((r.get(0)?, r.get(1)?, r.get(2)?));
                        digests.push(r.get::<_, Option<Vec<u8>>>(3)?);
                    }
                    // every result's texts, or none when any result lacks them
                    let texts = if digests.iter().all(Option::is_some) {
                        Some(
                            digests
                                .iter()
                                .flatten()
                                .map(|d| stored_texts(d, &mut text_stmt, &mut seen_texts))
                                .collect::<Result<Vec<_>>>()?,
                        )
                    } else {
                        None
                    };
                    scored.push(ScoredCheckpoint {
                        name: c.name,
                        uri: c.uri,
                        model_type: c.model_type.unwrap_or_default(),
                        chat_template: c.chat_template.unwrap_or_default(),
                        scalar_output: c.scalar_output,
                        rewards: stored_rewards(rows)?,
                        texts,
                    });
                }
                CheckpointState::Failed => notes.push(format!(
                    "{}: failed: {}",
                    c.name,
                    c.failure.unwrap_or_else(|| "no reason recorded".into())
                )),
                CheckpointState::Cancelled => notes.push(format!("{}: cancelled", c.name)),
                CheckpointState::Pending | CheckpointState::Running => {
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
            complete: state == SweepState::Done,
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
        stored_rewards(rows)
    }
}

/// (index, chosen, rejected) rows of the `results` table as rewards.
fn stored_rewards(rows: Vec<(u32, Vec<u8>, Vec<u8>)>) -> Result<Vec<StoredReward>> {
    rows.into_iter()
        .map(|(index, chosen, rejected)| {
            Ok(StoredReward {
                index,
                chosen: decode_scores(&chosen)?,
                rejected: decode_scores(&rejected)?,
            })
        })
        .collect()
}

pub(super) fn all_finished(conn: &Connection) -> Result<bool> {
    let (total, active): (i64, i64) = conn.query_row(
        "SELECT COUNT(*), COALESCE(SUM(state = ?1), 0) FROM sweeps",
        params![SweepState::Active],
        |r| Ok((r.get(0)?, r.get(1)?)),
    )?;
    Ok(total > 0 && active == 0)
}

pub(super) fn all_examples(conn: &Connection, sweep_id: i64) -> Result<Vec<PlannedExample>> {
    examples_in(conn, sweep_id, 0..u32::MAX)
}

/// The stored examples with index in `range`, in index order.
pub(super) fn examples_in(
    conn: &Connection,
    sweep_id: i64,
    range: Range<u32>,
) -> Result<Vec<PlannedExample>> {
    let mut stmt = conn.prepare_cached(
        "SELECT idx, example_id, subset, pair_json, n_chosen, n_rejected FROM examples
         WHERE sweep_id = ?1 AND idx >= ?2 AND idx < ?3 ORDER BY idx",
    )?;
    let rows = stmt.query_map(params![sweep_id, range.start, range.end], |r| {
        let counts: (Option<u32>, Option<u32>) = (r.get(4)?, r.get(5)?);
        Ok(PlannedExample {
            index: r.get(0)?,
            id: r.get(1)?,
            subset: r.get(2)?,
            pair_json: r.get(3)?,
            completions: match counts {
                (Some(chosen), Some(rejected)) => Some(Completions { chosen, rejected }),
                _ => None,
            },
        })
    })?;
    Ok(rows.collect::<Result<_, _>>()?)
}

fn checkpoints_of(conn: &Connection, sweep_id: i64) -> Result<Vec<CheckpointInfo>> {
    let mut stmt = conn.prepare_cached(
        "SELECT id, uri, name, state, failure, model_type, chat_template, scalar_output
         FROM checkpoints WHERE sweep_id = ?1 ORDER BY id",
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
            scalar_output: r.get::<_, Option<bool>>(7)?.unwrap_or(false),
        })
    })?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// `rooms`: what each live worker holds ([`crate::scheduler::max_param_bytes`]), to say which
/// checkpoints with pending tasks none of them can.
fn sweep_progress(
    conn: &Connection,
    sweep_id: i64,
    name: String,
    state: SweepState,
    rooms: &[Option<u64>],
) -> Result<SweepProgress> {
    let (total, done, failed, leased): (u32, u32, u32, u32) = conn.query_row(
        "SELECT COUNT(*), COALESCE(SUM(state = ?2), 0), COALESCE(SUM(state = ?3), 0),
                COALESCE(SUM(state = ?4), 0)
         FROM tasks WHERE sweep_id = ?1",
        params![
            sweep_id,
            TaskState::Done,
            TaskState::Failed,
            TaskState::Leased
        ],
        |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
    )?;
    let examples: i64 = conn.query_row(
        "SELECT COUNT(*) FROM examples WHERE sweep_id = ?1",
        params![sweep_id],
        |r| r.get(0),
    )?;
    let examples = examples.max(0) as u64;
    let mut progress = SweepProgress {
        name,
        state,
        tasks_total: total,
        tasks_done: done,
        tasks_failed: failed,
        tasks_leased: leased,
        examples_total: 0,
        examples_stored: 0,
        checkpoints: Vec::new(),
        failures: Vec::new(),
    };
    let mut stmt = conn.prepare_cached(
        "SELECT c.name, c.uri, c.state, c.failure,
                (SELECT COUNT(*) FROM tasks t WHERE t.checkpoint_id = c.id),
                (SELECT COUNT(*) FROM tasks t WHERE t.checkpoint_id = c.id AND t.state = ?2),
                (SELECT COUNT(*) FROM results r WHERE r.checkpoint_id = c.id),
                COALESCE(c.param_bytes, 0),
                EXISTS (SELECT 1 FROM tasks t WHERE t.checkpoint_id = c.id AND t.state = ?3)
         FROM checkpoints c WHERE c.sweep_id = ?1 ORDER BY c.id",
    )?;
    let rows = stmt.query_map(
        params![sweep_id, TaskState::Done, TaskState::Pending],
        |r| {
            let param_bytes = r.get::<_, i64>(7)?.max(0) as u64;
            let pending: bool = r.get(8)?;
            Ok(CheckpointProgress {
                unschedulable: if pending && state == SweepState::Active {
                    crate::scheduler::unschedulable_reason(param_bytes, rooms)
                } else {
                    None
                },
                name: r.get(0)?,
                uri: r.get(1)?,
                state: r.get(2)?,
                failure: r.get(3)?,
                tasks_total: r.get(4)?,
                tasks_done: r.get(5)?,
                examples_total: examples,
                examples_stored: r.get::<_, i64>(6)?.max(0) as u64,
            })
        },
    )?;
    for row in rows {
        let row = row?;
        progress.examples_total += row.examples_total;
        progress.examples_stored += row.examples_stored;
        progress.checkpoints.push(row);
    }
    let [expired, transient, checkpoint] = AttemptOutcome::FAILURES;
    let mut stmt = conn.prepare_cached(
        "SELECT c.name, a.task_id, COALESCE(a.attempt, 0), COALESCE(w.name || ' (' || a.worker_id || ')', a.worker_id),
                COALESCE(a.reason, ''), COALESCE(a.ended_ms, a.started_ms)
         FROM attempts a JOIN tasks t ON t.id = a.task_id JOIN checkpoints c ON c.id = t.checkpoint_id
         LEFT JOIN workers w ON w.id = a.worker_id
         WHERE t.sweep_id = ?1 AND a.outcome IN (?3, ?4, ?5)
         ORDER BY a.ended_ms DESC, a.id DESC LIMIT ?2",
    )?;
    let rows = stmt.query_map(
        params![sweep_id, RECENT_FAILURES, expired, transient, checkpoint],
        |r| {
            Ok(AttemptFailure {
                checkpoint: r.get(0)?,
                task_id: r.get(1)?,
                attempt: r.get(2)?,
                worker: r.get(3)?,
                reason: r.get(4)?,
                at_ms: r.get(5)?,
            })
        },
    )?;
    for row in rows {
        progress.failures.push(row?);
    }
    Ok(progress)
}
