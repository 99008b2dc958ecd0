//! Sweeps: planning (submit, retry), cancelling, and the rules that derive a checkpoint's and a
//! sweep's state from their tasks.

use std::collections::HashSet;

use herd_rpc::v1::SweepSpec;
use prost::Message;
use rusqlite::{params, Connection, OptionalExtension};

use super::states::StoredFormat;
use super::{attempts, resubmit, to_i64, Result, Store, StoreError};
use crate::domain::{
    check_sweep_name, AttemptOutcome, CheckpointState, PlannedCheckpoint, PlannedExample,
    SweepState, TaskState,
};

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

impl Store {
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
        check_sweep_name(&spec.name).map_err(StoreError::Invalid)?;
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
            let existing: Option<(i64, Vec<u8>, SweepState)> = tx
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
                        "INSERT INTO sweeps(name, spec, state, created_ms) VALUES (?1, ?2, ?3, ?4)",
                        params![spec.name, spec.encode_to_vec(), SweepState::Active, now],
                    )?;
                    let id = tx.last_insert_rowid();
                    let mut insert = tx.prepare_cached(
                        "INSERT INTO examples(sweep_id, idx, example_id, subset, pair_json, n_chosen, n_rejected)
                         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                    )?;
                    for e in examples {
                        insert.execute(params![
                            id,
                            e.index,
                            e.id,
                            e.subset,
                            e.pair_json,
                            e.completions.map(|c| c.chosen),
                            e.completions.map(|c| c.rejected)
                        ])?;
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
                    "INSERT INTO checkpoints(sweep_id, uri, name, format, size_bytes, state,
                                             param_bytes)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                    params![
                        sweep_id,
                        c.uri,
                        c.name,
                        StoredFormat(c.format),
                        to_i64(c.size_bytes),
                        CheckpointState::Pending,
                        to_i64(c.param_bytes)
                    ],
                )?;
                let checkpoint_id = tx.last_insert_rowid();
                let mut insert = tx.prepare_cached(
                    "INSERT INTO tasks(sweep_id, checkpoint_id, shard_start, shard_end, state)
                     VALUES (?1, ?2, ?3, ?4, ?5)",
                )?;
                for shard in &shards {
                    insert.execute(params![
                        sweep_id,
                        checkpoint_id,
                        shard.start,
                        shard.end,
                        TaskState::Pending
                    ])?;
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
            if out.tasks_added > 0 && old_state.is_some_and(|s| s != SweepState::Active) {
                reactivate(tx, sweep_id)?;
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
                     WHERE sweep_id = ?1 AND state IN (?2, ?3) ORDER BY id",
                )?;
                let rows = stmt.query_map(
                    params![
                        sweep_id,
                        CheckpointState::Failed,
                        CheckpointState::Cancelled
                    ],
                    |r| r.get(0),
                )?;
                rows.collect::<Result<_, _>>()?
            };
            let mut out = RetryOutcome::default();
            for checkpoint_id in checkpoints {
                let tasks = tx.execute(
                    "UPDATE tasks SET state = ?3, attempts = 0, next_eligible_ms = ?2,
                                      failure = NULL
                     WHERE checkpoint_id = ?1 AND state IN (?4, ?5)",
                    params![
                        checkpoint_id,
                        now,
                        TaskState::Pending,
                        TaskState::Failed,
                        TaskState::Cancelled
                    ],
                )?;
                tx.execute(
                    "UPDATE checkpoints SET state = ?2, failure = NULL WHERE id = ?1",
                    params![checkpoint_id, CheckpointState::Pending],
                )?;
                out.checkpoints += 1;
                out.tasks += tasks as u32;
            }
            if out.tasks > 0 {
                reactivate(tx, sweep_id)?;
            }
            Ok(out)
        })
    }

    /// Cancels a sweep: pending and leased tasks are cancelled, live leases revoked.
    pub fn cancel(&self, sweep: &str, now: i64) -> Result<u32> {
        self.write(|tx| {
            let sweep_id = sweep_id(tx, sweep)?;
            attempts::end_live_leases(
                tx,
                attempts::LiveLeasesOf::Sweep(sweep_id),
                &attempts::LeaseEnd {
                    outcome: AttemptOutcome::Cancelled,
                    reason: Some("sweep cancelled"),
                    attempt: None,
                },
                now,
            )?;
            let cancelled = tx.execute(
                "UPDATE tasks SET state = ?2 WHERE sweep_id = ?1 AND state IN (?3, ?4)",
                params![
                    sweep_id,
                    TaskState::Cancelled,
                    TaskState::Pending,
                    TaskState::Leased
                ],
            )?;
            tx.execute(
                "UPDATE checkpoints SET state = ?2 WHERE sweep_id = ?1 AND state IN (?3, ?4)",
                params![
                    sweep_id,
                    CheckpointState::Cancelled,
                    CheckpointState::Pending,
                    CheckpointState::Running
                ],
            )?;
            tx.execute(
                "UPDATE sweeps SET state = ?3, finished_ms = ?2 WHERE id = ?1 AND state = ?4",
                params![sweep_id, now, SweepState::Cancelled, SweepState::Active],
            )?;
            Ok(cancelled as u32)
        })
    }
}

/// A finished sweep that got new pending tasks is active again.
fn reactivate(tx: &Connection, sweep_id: i64) -> Result<()> {
    tx.execute(
        "UPDATE sweeps SET state = ?2, finished_ms = NULL WHERE id = ?1",
        params![sweep_id, SweepState::Active],
    )?;
    Ok(())
}

pub(super) fn decode_spec(bytes: &[u8]) -> Result<SweepSpec> {
    SweepSpec::decode(bytes).map_err(|e| StoreError::Corrupt(format!("sweep spec: {e}")))
}

pub(super) fn sweep_id(conn: &Connection, name: &str) -> Result<i64> {
    conn.query_row(
        "SELECT id FROM sweeps WHERE name = ?1",
        params![name],
        |r| r.get(0),
    )
    .optional()?
    .ok_or_else(|| StoreError::NotFound(format!("no sweep named {name}")))
}

/// Derives a checkpoint's state from its tasks; returns it.
pub(super) fn refresh_checkpoint(tx: &Connection, checkpoint_id: i64) -> Result<CheckpointState> {
    let (total, done, failed, live): (i64, i64, i64, i64) = tx.query_row(
        "SELECT COUNT(*), COALESCE(SUM(state = ?2), 0), COALESCE(SUM(state = ?3), 0),
                COALESCE(SUM(state IN (?4, ?5)), 0)
         FROM tasks WHERE checkpoint_id = ?1",
        params![
            checkpoint_id,
            TaskState::Done,
            TaskState::Failed,
            TaskState::Pending,
            TaskState::Leased
        ],
        |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
    )?;
    if live == 0 {
        if done == total {
            tx.execute(
                "UPDATE checkpoints SET state = ?2 WHERE id = ?1",
                params![checkpoint_id, CheckpointState::Done],
            )?;
        } else if failed > 0 {
            tx.execute(
                "UPDATE checkpoints SET state = ?2, failure = COALESCE(failure,
                    (SELECT 'examples [' || shard_start || ', ' || shard_end || '): ' || failure
                     FROM tasks WHERE checkpoint_id = ?1 AND state = ?3 ORDER BY id LIMIT 1))
                 WHERE id = ?1",
                params![checkpoint_id, CheckpointState::Failed, TaskState::Failed],
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
pub(super) fn refresh_sweep(tx: &Connection, sweep_id: i64, now: i64) -> Result<Option<String>> {
    // EXISTS stops at the first live task; a COUNT would walk all of a large sweep's queue
    let live: bool = tx.query_row(
        "SELECT EXISTS (SELECT 1 FROM tasks WHERE sweep_id = ?1 AND state IN (?2, ?3))",
        params![sweep_id, TaskState::Pending, TaskState::Leased],
        |r| r.get(0),
    )?;
    if live {
        return Ok(None);
    }
    let changed = tx.execute(
        "UPDATE sweeps SET state = ?3, finished_ms = ?2 WHERE id = ?1 AND state = ?4",
        params![sweep_id, now, SweepState::Done, SweepState::Active],
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
