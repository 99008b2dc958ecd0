//! Result ingestion: a worker's per-example scores, stored idempotently (the first result of an
//! example wins) through the gate's ingest lane.

use std::collections::HashMap;
use std::sync::Arc;

use rusqlite::{params, OptionalExtension};
use sha2::{Digest, Sha256};

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
    /// held by `worker_id`; every reward must be inside the task's shard, name the stored example
    /// id and hold finite scores: one per completion for a RewardBench 2 row (as many chosen and
    /// rejected scores as the row has completions), else as many labels as every other result of
    /// the checkpoint (the same count chosen and rejected). On any error nothing of the batch is
    /// stored.
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
                    "SELECT example_id, n_chosen, n_rejected FROM examples
                     WHERE sweep_id = ?1 AND idx = ?2",
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
                    let (stored, completions): (String, (Option<u32>, Option<u32>)) = id_of
                        .query_row(params![task.sweep_id, reward.index], |r| {
                            Ok((r.get(0)?, (r.get(1)?, r.get(2)?)))
                        })?;
                    if stored != reward.example_id {
                        return Err(StoreError::Invalid(format!(
                            "example {} is {stored:?} in this sweep, not {:?}",
                            reward.index, reward.example_id
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
                    if let (Some(want_chosen), Some(want_rejected)) = completions {
                        // a RewardBench 2 row: one score per completion
                        if chosen != want_chosen as usize || rejected != want_rejected as usize {
                            return Err(StoreError::Invalid(format!(
                                "example {} ({stored}) is a RewardBench 2 row with \
                                 {want_chosen} chosen and {want_rejected} rejected completions, \
                                 but the result has {chosen} chosen and {rejected} rejected \
                                 scores (one per completion expected); nothing of this message \
                                 was stored",
                                reward.index
                            )));
                        }
                        let completions = (want_chosen + want_rejected) as usize;
                        if !reward.texts.is_empty() && reward.texts.len() != completions {
                            return Err(StoreError::Invalid(format!(
                                "example {} ({stored}) is a RewardBench 2 row with {completions} \
                                 completions, but the result has {} texts (none, or one per \
                                 completion expected); nothing of this message was stored",
                                reward.index,
                                reward.texts.len()
                            )));
                        }
                        continue;
                    }
                    if !matches!(reward.texts.len(), 0 | 2 | 3) {
                        return Err(StoreError::Invalid(format!(
                            "example {} ({stored}) has {} texts; a preference pair has none, 2 \
                             (chosen, rejected) or 3 (chosen, rejected, prompt); nothing of this \
                             message was stored",
                            reward.index,
                            reward.texts.len()
                        )));
                    }
                    if chosen == 0 || rejected == 0 {
                        return Err(StoreError::Invalid(format!(
                            "example {} ({stored}) has no chosen or no rejected score",
                            reward.index
                        )));
                    }
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
                "INSERT OR IGNORE INTO results(checkpoint_id, idx, chosen, rejected, task_id, epoch,
                                               texts)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            )?;
            // each distinct text once (see the `texts` table): a result names its texts by digest
            let mut insert_text =
                tx.prepare_cached("INSERT OR IGNORE INTO texts(digest, text) VALUES (?1, ?2)")?;
            for reward in rewards {
                let digests: Vec<[u8; 32]> = reward.texts.iter().map(|t| text_digest(t)).collect();
                let n = insert.execute(params![
                    task.checkpoint_id,
                    reward.index,
                    encode_scores(&reward.chosen),
                    encode_scores(&reward.rejected),
                    lease.task_id,
                    epoch,
                    (!digests.is_empty()).then(|| digests.concat()),
                ])?;
                if n == 1 {
                    for (digest, text) in digests.iter().zip(&reward.texts) {
                        insert_text.execute(params![&digest[..], text])?;
                    }
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

/// The key of a text in the `texts` table: the SHA-256 of its UTF-8 bytes.
pub(super) fn text_digest(text: &str) -> [u8; 32] {
    Sha256::digest(text.as_bytes()).into()
}

/// The texts of a result's `texts` column (digests, 32 bytes each), read from the `texts` table
/// through `lookup` (a prepared `SELECT text FROM texts WHERE digest = ?1`) unless `seen`
/// already holds them: each distinct text is read and kept once.
pub(super) fn stored_texts(
    digests: &[u8],
    lookup: &mut rusqlite::CachedStatement<'_>,
    seen: &mut HashMap<[u8; 32], Arc<str>>,
) -> Result<Vec<Arc<str>>> {
    if !digests.len().is_multiple_of(32) {
        return Err(StoreError::Corrupt(format!(
            "a text digest list of {} bytes is not a whole number of SHA-256 digests",
            digests.len()
        )));
    }
    digests
        .chunks_exact(32)
        .map(|digest| {
            let key: [u8; 32] = digest.try_into().expect("32 bytes");
            if let Some(text) = seen.get(&key) {
                return Ok(text.clone());
            }
            let text: Arc<str> = lookup
                .query_row(params![digest], |r| r.get::<_, String>(0))
                .optional()?
                .ok_or_else(|| {
                    StoreError::Corrupt(format!(
                        "a result names the text {} that the texts table lacks",
                        digest
                            .iter()
                            .map(|b| format!("{b:02x}"))
                            .collect::<String>()
                    ))
                })?
                .into();
            seen.insert(key, text.clone());
            Ok(text)
        })
        .collect()
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

#[cfg(test)]
mod tests {
    use herd_rpc::v1::{Capabilities, Scoring, SweepSpec};

    use super::super::{LeaseOutcome, Policy};
    use super::*;
    use crate::domain::{CheckpointFormat, Completions, PlannedCheckpoint, PlannedExample};

    /// A sweep of schema rb2 with two rows: 1 chosen + 3 rejected, and 2 chosen + 1 rejected.
    fn rb2_sweep(store: &Store) {
        let spec = SweepSpec {
            name: "rb2".into(),
            scoring: Some(Scoring {
                schema: "rb2".into(),
                ..Scoring::default()
            }),
            shard_size: 2,
            ..SweepSpec::default()
        };
        let checkpoint = PlannedCheckpoint {
            uri: "/ckpts/a".into(),
            name: "a".into(),
            format: CheckpointFormat::HuggingFace,
            size_bytes: 1,
            param_bytes: 0,
        };
        let examples = [(1, 3), (2, 1)]
            .iter()
            .enumerate()
            .map(|(i, &(chosen, rejected))| PlannedExample {
                index: i as u32,
                id: format!("tied:{i}"),
                subset: "Ties".into(),
                pair_json: "{}".into(),
                completions: Some(Completions { chosen, rejected }),
            })
            .collect::<Vec<_>>();
        store.submit(&spec, &[checkpoint], &examples, 0).unwrap();
    }

    fn reward(index: u32, chosen: &[f64], rejected: &[f64]) -> ExampleScores {
        ExampleScores {
            index,
            example_id: format!("tied:{index}"),
            chosen: chosen.to_vec(),
            rejected: rejected.to_vec(),
            texts: Vec::new(),
        }
    }

    #[test]
    fn a_best_of_n_result_needs_one_score_per_completion() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("state.db"), Policy::default()).unwrap();
        rb2_sweep(&store);
        let worker = store
            .register("w", &Capabilities::default(), "secret", 0)
            .unwrap();
        let LeaseOutcome::Leased(grant) = store.lease(&worker, &[], 1).unwrap() else {
            panic!("expected a lease");
        };
        assert_eq!(
            grant.examples[1].completions,
            Some(Completions {
                chosen: 2,
                rejected: 1
            }),
            "the counts are stored with the rows"
        );
        // one rejected score short on the second row: the whole message is refused
        let short = [
            reward(0, &[0.5], &[0.1, 0.2, 0.3]),
            reward(1, &[0.4, 0.6], &[]),
        ];
        let err = store
            .store_results(&worker, &grant.lease, &short, 2)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("example 1 (tied:1)")
                && err.contains("2 chosen and 1 rejected completions")
                && err.contains("2 chosen and 0 rejected scores")
                && err.contains("nothing of this message was stored"),
            "{err}"
        );
        // a pair-style result (one score per side) is refused too
        let err = store
            .store_results(&worker, &grant.lease, &[reward(0, &[0.5], &[0.1])], 3)
            .unwrap_err()
            .to_string();
        assert!(err.contains("1 chosen and 3 rejected completions"), "{err}");
        let inputs = store.report_inputs("rb2").unwrap();
        assert!(inputs.scored.is_empty());
        // texts, when sent, are one per completion
        let mut short_texts = [
            reward(0, &[0.5], &[0.1, 0.2, 0.3]),
            reward(1, &[0.4, 0.6], &[0.7]),
        ];
        short_texts[0].texts = vec!["a".into(), "b".into(), "c".into()];
        let err = store
            .store_results(&worker, &grant.lease, &short_texts, 3)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("example 0 (tied:0)")
                && err.contains("4 completions")
                && err.contains("has 3 texts"),
            "{err}"
        );
        // nothing was stored: the full, right-sized batch stores both rows
        let good = [
            reward(0, &[0.5], &[0.1, 0.2, 0.3]),
            reward(1, &[0.4, 0.6], &[0.7]),
        ];
        let counts = store
            .store_results(&worker, &grant.lease, &good, 4)
            .unwrap();
        assert_eq!(
            counts,
            IngestCounts {
                stored: 2,
                duplicates: 0
            }
        );
        store
            .complete(&worker, &grant.lease, "Seq. Classifier", "tulu", 5)
            .unwrap();
        let inputs = store.report_inputs("rb2").unwrap();
        assert_eq!(inputs.scored.len(), 1);
        let rows: Vec<Vec<f64>> = inputs.scored[0]
            .rewards
            .iter()
            .map(|r| r.completion_scores())
            .collect();
        assert_eq!(rows, [vec![0.5, 0.1, 0.2, 0.3], vec![0.4, 0.6, 0.7]]);
    }
}
