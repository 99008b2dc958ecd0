//! How a lease ends: Complete (the task is done, other leases of it lose), Fail (transient,
//! checkpoint, released) and expiry (the reaper). Each ending closes the lease's attempt with an
//! outcome; a failed attempt is retried with backoff or fails the task at max attempts.

use rusqlite::{params, Connection};

use super::leasing::{check_active_lease, lease_row, task_row, task_row_opt, TaskRow};
use super::sweeps::{refresh_checkpoint, refresh_sweep};
use super::workers::worker_label;
use super::{to_i64, Result, Store, StoreError};
use crate::domain::{AttemptOutcome, CheckpointState, FailureKind, LeaseId, LeaseState, TaskState};
use crate::scheduler::Policy;

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

/// How one lease ends; the lease's new state follows from the outcome
/// ([`AttemptOutcome::lease_state`]).
pub(super) struct LeaseEnd<'a> {
    pub outcome: AttemptOutcome,
    pub reason: Option<&'a str>,
    /// the task's failed-attempt count after this attempt, when it counted
    pub attempt: Option<u32>,
}

/// The live leases [`end_live_leases`] ends.
pub(super) enum LiveLeasesOf {
    Sweep(i64),
    Checkpoint(i64),
}

impl Store {
    /// Marks a task done once every example of its shard has a result (a pipeline returning
    /// score lists: [`Store::complete_with`] for the others).
    pub fn complete(
        &self,
        worker_id: &str,
        lease: &LeaseId,
        model_type: &str,
        chat_template: &str,
        now: i64,
    ) -> Result<CompleteOutcome> {
        self.complete_with(worker_id, lease, model_type, chat_template, false, now)
    }

    /// [`Store::complete`], storing whether the model's pipeline returns one float per sequence
    /// (`CompleteRequest.scalar_output`), which the eval-set-scores writer follows.
    pub fn complete_with(
        &self,
        worker_id: &str,
        lease: &LeaseId,
        model_type: &str,
        chat_template: &str,
        scalar_output: bool,
        now: i64,
    ) -> Result<CompleteOutcome> {
        self.write(|tx| {
            let epoch = to_i64(lease.epoch);
            let row = lease_row(tx, lease.task_id, epoch)?;
            let task = task_row_opt(tx, lease.task_id)?;
            match (&row, &task) {
                (Some(row), Some(task))
                    if row.worker_id == worker_id
                        && row.state == LeaseState::Revoked
                        && task.state == TaskState::Done =>
                {
                    // a straggler duplicate finished second: its results were duplicates
                    tx.execute(
                        "UPDATE attempts SET outcome = ?4, ended_ms = ?3
                         WHERE task_id = ?1 AND epoch = ?2",
                        params![lease.task_id, epoch, now, AttemptOutcome::Duplicate],
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
            let task = check_active_lease(tx, worker_id, lease)?;
            let have: u32 = tx.query_row(
                "SELECT COUNT(*) FROM results WHERE checkpoint_id = ?1 AND idx >= ?2 AND idx < ?3",
                params![task.checkpoint_id, task.start, task.end],
                |r| r.get(0),
            )?;
            let want = task.end - task.start;
            if have < want {
                return Err(StoreError::Precondition(format!(
                    "{lease}: {} of the {want} examples of shard [{}, {}) have no result",
                    want - have,
                    task.start,
                    task.end
                )));
            }
            let done = LeaseEnd {
                outcome: AttemptOutcome::Done,
                reason: None,
                attempt: None,
            };
            end_lease(tx, task.id, epoch, &done, now)?;
            // other live leases of this task (stragglers) lose
            let others: Vec<i64> = {
                let mut stmt =
                    tx.prepare("SELECT epoch FROM leases WHERE task_id = ?1 AND state = ?2")?;
                let rows = stmt.query_map(params![task.id, LeaseState::Active], |r| r.get(0))?;
                rows.collect::<Result<_, _>>()?
            };
            let lost = LeaseEnd {
                outcome: AttemptOutcome::Revoked,
                reason: Some("completed by another lease"),
                attempt: None,
            };
            for other in others {
                end_lease(tx, task.id, other, &lost, now)?;
            }
            tx.execute(
                "UPDATE tasks SET state = ?2 WHERE id = ?1",
                params![task.id, TaskState::Done],
            )?;
            tx.execute(
                "UPDATE checkpoints SET model_type = ?2, chat_template = ?3, scalar_output = ?4
                 WHERE id = ?1",
                params![task.checkpoint_id, model_type, chat_template, scalar_output],
            )?;
            let checkpoint_state = refresh_checkpoint(tx, task.checkpoint_id)?;
            let finished_sweeps = refresh_sweep(tx, task.sweep_id, now)?.into_iter().collect();
            tracing::info!(worker = worker_id, task = task.id, epoch, "complete");
            Ok(CompleteOutcome {
                first: true,
                checkpoint_done: checkpoint_state == CheckpointState::Done,
                finished_sweeps,
            })
        })
    }

    /// A worker gives up a lease: Transient counts an attempt (retry with backoff, or fail at
    /// max_attempts), Checkpoint counts an attempt and at max_attempts fails the checkpoint and
    /// all its unfinished tasks, Released hands the task back at once without counting.
    pub fn fail(
        &self,
        worker_id: &str,
        lease: &LeaseId,
        kind: FailureKind,
        reason: &str,
        now: i64,
    ) -> Result<Transition> {
        let policy = self.policy.clone();
        self.write(|tx| {
            let epoch = to_i64(lease.epoch);
            let task = check_active_lease(tx, worker_id, lease)?;
            let worker = worker_label(tx, worker_id)?;
            let reason = if reason.trim().is_empty() {
                "no reason given"
            } else {
                reason
            };
            let mut out = Transition {
                leases: 1,
                ..Transition::default()
            };
            let outcome = match kind {
                FailureKind::Released => {
                    let released = LeaseEnd {
                        outcome: AttemptOutcome::Released,
                        reason: Some(reason),
                        attempt: None,
                    };
                    end_lease(tx, task.id, epoch, &released, now)?;
                    if live_leases(tx, task.id)? == 0 {
                        tx.execute(
                            "UPDATE tasks SET state = ?3, next_eligible_ms = ?2
                             WHERE id = ?1 AND state = ?4",
                            params![task.id, now, TaskState::Pending, TaskState::Leased],
                        )?;
                    }
                    tracing::info!(worker = worker_id, task = task.id, epoch, "lease released");
                    return Ok(out);
                }
                FailureKind::Checkpoint => AttemptOutcome::Checkpoint,
                FailureKind::Transient => AttemptOutcome::Transient,
            };
            let full = format!("{reason} (worker {worker})");
            let attempts = bump_attempts(tx, task.id)?;
            let failed = LeaseEnd {
                outcome,
                reason: Some(&full),
                attempt: Some(attempts),
            };
            end_lease(tx, task.id, epoch, &failed, now)?;
            if outcome == AttemptOutcome::Checkpoint {
                tracing::info!(
                    worker = worker_id,
                    task = task.id,
                    epoch,
                    attempts,
                    "checkpoint failure"
                );
                if attempts >= policy.max_attempts {
                    out.tasks_failed += fail_checkpoint(tx, task.checkpoint_id, &full, now)?;
                    out.finished_sweeps
                        .extend(refresh_sweep(tx, task.sweep_id, now)?);
                    return Ok(out);
                }
            } else {
                tracing::info!(
                    worker = worker_id,
                    task = task.id,
                    epoch,
                    attempts,
                    "transient failure"
                );
            }
            retry_or_fail(tx, &policy, &task, attempts, &full, now, &mut out)?;
            Ok(out)
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
                     WHERE state = ?2 AND deadline_ms < ?1 ORDER BY task_id, epoch",
                )?;
                let rows = stmt.query_map(params![now, LeaseState::Active], |r| {
                    Ok((r.get(0)?, r.get(1)?, r.get(2)?))
                })?;
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
                let attempt_lost =
                    task.state == TaskState::Leased && live_leases(tx, task_id)? <= 1;
                let attempts = if attempt_lost {
                    Some(bump_attempts(tx, task_id)?)
                } else {
                    None
                };
                let expiry = LeaseEnd {
                    outcome: AttemptOutcome::Expired,
                    reason: Some(&reason),
                    attempt: attempts,
                };
                end_lease(tx, task_id, epoch, &expiry, now)?;
                if let Some(attempts) = attempts {
                    retry_or_fail(tx, &policy, &task, attempts, &reason, now, &mut out)?;
                }
            }
            Ok(out)
        })
    }
}

/// Ends lease (`task_id`, `epoch`) and closes its attempt as `end` says.
pub(super) fn end_lease(
    conn: &Connection,
    task_id: i64,
    epoch: i64,
    end: &LeaseEnd<'_>,
    now: i64,
) -> Result<()> {
    conn.execute(
        "UPDATE leases SET state = ?3 WHERE task_id = ?1 AND epoch = ?2",
        params![task_id, epoch, end.outcome.lease_state()],
    )?;
    conn.execute(
        "UPDATE attempts SET outcome = ?3, reason = ?4, attempt = ?5, ended_ms = ?6
         WHERE task_id = ?1 AND epoch = ?2",
        params![task_id, epoch, end.outcome, end.reason, end.attempt, now],
    )?;
    Ok(())
}

/// Ends every live lease of a sweep's or a checkpoint's tasks as `end` says.
pub(super) fn end_live_leases(
    tx: &Connection,
    of: LiveLeasesOf,
    end: &LeaseEnd<'_>,
    now: i64,
) -> Result<()> {
    let (sql, id) = match of {
        LiveLeasesOf::Sweep(id) => (
            "SELECT l.task_id, l.epoch FROM leases l JOIN tasks t ON t.id = l.task_id
             WHERE t.sweep_id = ?1 AND l.state = ?2",
            id,
        ),
        LiveLeasesOf::Checkpoint(id) => (
            "SELECT l.task_id, l.epoch FROM leases l JOIN tasks t ON t.id = l.task_id
             WHERE t.checkpoint_id = ?1 AND l.state = ?2",
            id,
        ),
    };
    let live: Vec<(i64, i64)> = {
        let mut stmt = tx.prepare(sql)?;
        let rows = stmt.query_map(params![id, LeaseState::Active], |r| {
            Ok((r.get(0)?, r.get(1)?))
        })?;
        rows.collect::<Result<_, _>>()?
    };
    for (task_id, epoch) in live {
        end_lease(tx, task_id, epoch, end, now)?;
    }
    Ok(())
}

fn live_leases(conn: &Connection, task_id: i64) -> Result<u32> {
    Ok(conn.query_row(
        "SELECT COUNT(*) FROM leases WHERE task_id = ?1 AND state = ?2",
        params![task_id, LeaseState::Active],
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
            "UPDATE tasks SET state = ?3, failure = ?2 WHERE id = ?1 AND state = ?4",
            params![task.id, failure, TaskState::Failed, TaskState::Leased],
        )?;
        tracing::warn!(task = task.id, attempts, "task failed");
        out.tasks_failed += 1;
        refresh_checkpoint(tx, task.checkpoint_id)?;
        out.finished_sweeps
            .extend(refresh_sweep(tx, task.sweep_id, now)?);
    } else {
        let eligible = now.saturating_add(to_i64(policy.backoff_ms(attempts)));
        tx.execute(
            "UPDATE tasks SET state = ?4, next_eligible_ms = ?2, failure = ?3
             WHERE id = ?1 AND state = ?5",
            params![
                task.id,
                eligible,
                reason,
                TaskState::Pending,
                TaskState::Leased
            ],
        )?;
    }
    Ok(())
}

/// The checkpoint is bad: it and every task of it not done fail with `reason`.
fn fail_checkpoint(tx: &Connection, checkpoint_id: i64, reason: &str, now: i64) -> Result<u32> {
    let revoked = LeaseEnd {
        outcome: AttemptOutcome::Revoked,
        reason: Some("checkpoint failed"),
        attempt: None,
    };
    end_live_leases(tx, LiveLeasesOf::Checkpoint(checkpoint_id), &revoked, now)?;
    let failed = tx.execute(
        "UPDATE tasks SET state = ?3, failure = ?2
         WHERE checkpoint_id = ?1 AND state IN (?4, ?5)",
        params![
            checkpoint_id,
            reason,
            TaskState::Failed,
            TaskState::Pending,
            TaskState::Leased
        ],
    )?;
    tx.execute(
        "UPDATE checkpoints SET state = ?3, failure = ?2 WHERE id = ?1",
        params![checkpoint_id, reason, CheckpointState::Failed],
    )?;
    tracing::warn!(
        checkpoint = checkpoint_id,
        tasks = failed,
        "checkpoint failed"
    );
    Ok(failed as u32)
}
