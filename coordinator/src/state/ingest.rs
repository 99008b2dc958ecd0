//! Result ingestion: a worker's per-example scores, stored idempotently (the first result of an
//! example wins) through the gate's ingest lane.

use rusqlite::{params, OptionalExtension};

use super::gate::Lane;
use super::leasing::check_active_lease;
use super::{to_i64, Result, Store, StoreError};
use crate::domain::{ExampleScores, LeaseId};

/// Counts from one `store_results` call.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct IngestCounts {
    pub stored: u64,
    pub duplicates: u64,
}

impl Store {
    /// Stores one batch of results of a lease, in one transaction. The lease must be active and
    /// held by `worker_id`; every reward must be inside the task's shard and name the stored
    /// example id. On any error nothing of the batch is stored.
    pub fn store_results(
        &self,
        worker_id: &str,
        lease: &LeaseId,
        rewards: &[ExampleScores],
        now: i64,
    ) -> Result<IngestCounts> {
        let deadline = now.saturating_add(to_i64(self.policy.lease_timeout_ms));
        self.write_in(Lane::Ingest, |tx| {
            let epoch = to_i64(lease.epoch);
            let task = check_active_lease(tx, worker_id, lease)?;
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
                            "example index {} is outside the shard [{}, {}) of {lease}",
                            reward.index, task.start, task.end
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
                    if reward.chosen.is_empty() || reward.rejected.is_empty() {
                        return Err(StoreError::Invalid(format!(
                            "example {} ({stored}) has no chosen or no rejected score",
                            reward.index
                        )));
                    }
                    if let Some(x) = reward
                        .chosen
                        .iter()
                        .chain(&reward.rejected)
                        .find(|x| !x.is_finite())
                    {
                        return Err(StoreError::Invalid(format!(
                            "example {} ({stored}) has a non-finite score ({x}); nothing of this \
                             message was stored",
                            reward.index
                        )));
                    }
                    let (chosen, rejected) =
                        (reward.chosen.len(), reward.rejected.len());
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
                    encode_scores(&reward.chosen),
                    encode_scores(&reward.rejected),
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
}

/// Scores as the `results` table keeps them: little-endian f64s, exact.
fn encode_scores(values: &[f64]) -> Vec<u8> {
    values.iter().flat_map(|v| v.to_le_bytes()).collect()
}

/// The scores [`encode_scores`] wrote.
pub(super) fn decode_scores(bytes: &[u8]) -> Result<Vec<f64>> {
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
