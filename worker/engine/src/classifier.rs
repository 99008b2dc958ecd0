//! Reward models: token sequences through a sequence classifier, in the batching loop, with the
//! logits returned in the caller's order. A preference pair's chosen and rejected sequences can
//! share one forked row, so their common prefix (the prompt) is computed once.

use tch::{Device, Kind, Tensor};

use crate::batching::{self, BatchSettings, Fork, Row};
use crate::models::SequenceClassifier;

/// The logits of a batch's pooled slots, on the host.
fn logits(tensor: Tensor) -> anyhow::Result<Vec<Vec<f32>>> {
    Ok(Vec::<Vec<f32>>::try_from(&tensor.to_device(Device::Cpu))?)
}

/// Logits of every sequence at its pooled position, in input order. `on_batch` is told how
/// many sequences each finished batch held (progress reporting).
pub fn score_sequences(
    model: &SequenceClassifier,
    sequences: &[Vec<u32>],
    pooled: &[usize],
    settings: BatchSettings,
    on_batch: impl FnMut(usize),
) -> anyhow::Result<Vec<Vec<f32>>> {
    let device = settings.device;
    let mut scores = vec![Vec::new(); sequences.len()];
    batching::run(
        sequences,
        settings,
        |batch| {
            let positions: Vec<i64> = batch.members.iter().map(|&m| pooled[m] as i64).collect();
            let positions = Tensor::from_slice(&positions).to_device(device);
            logits(model.forward(batch, &positions))
        },
        |batch, logits| {
            for (&member, row) in batch.members.iter().zip(logits) {
                scores[member] = row;
            }
        },
        on_batch,
    )?;
    Ok(scores)
}

/// A preference pair packed into one row: `chosen ++ rejected[shared..]`.
struct ForkedRow<'a> {
    chosen: &'a [u32],
    rejected: &'a [u32],
    shared: usize,
}

impl<'a> ForkedRow<'a> {
    fn new(chosen: &'a [u32], rejected: &'a [u32]) -> Self {
        let shared = chosen
            .iter()
            .zip(rejected)
            .take_while(|(a, b)| a == b)
            .count();
        Self {
            chosen,
            rejected,
            shared,
        }
    }

    fn split(&self) -> Fork {
        Fork {
            first_len: self.chosen.len(),
            shared: self.shared,
        }
    }
}

impl Row for ForkedRow<'_> {
    fn tokens(&self) -> usize {
        self.chosen.len() + self.rejected.len() - self.shared
    }

    fn ids(&self) -> impl Iterator<Item = u32> + '_ {
        self.chosen
            .iter()
            .chain(&self.rejected[self.shared..])
            .copied()
    }

    fn sequences(&self) -> usize {
        2
    }

    fn fork(&self) -> Option<Fork> {
        Some(self.split())
    }
}

/// Scores preference pairs (`sequences[2k]` chosen, `sequences[2k + 1]` rejected) with each
/// pair in one row, so their shared prefix (the prompt) is computed once. Returns the logits in
/// input order, like [`score_sequences`].
pub fn score_sequence_pairs(
    model: &SequenceClassifier,
    sequences: &[Vec<u32>],
    pooled: &[usize],
    settings: BatchSettings,
    on_batch: impl FnMut(usize),
) -> anyhow::Result<Vec<Vec<f32>>> {
    anyhow::ensure!(
        sequences.len().is_multiple_of(2),
        "pairs need an even number of sequences"
    );
    let rows: Vec<ForkedRow> = sequences
        .chunks_exact(2)
        .map(|pair| ForkedRow::new(&pair[0], &pair[1]))
        .collect();
    let device = settings.device;
    let mut scores = vec![Vec::new(); sequences.len()];
    batching::run(
        &rows,
        settings,
        |batch| {
            // each row is pooled twice: chosen at its position, rejected in the row's tail
            let slots: Vec<i64> = batch
                .members
                .iter()
                .flat_map(|&pair| {
                    let fork = rows[pair].split();
                    [pooled[2 * pair], fork.second_slot(pooled[2 * pair + 1])]
                })
                .map(|slot| slot as i64)
                .collect();
            let row_of_slot = Tensor::arange(batch.rows(), (Kind::Int64, device))
                .repeat_interleave_self_int(2, 0, None);
            let slots = Tensor::from_slice(&slots).to_device(device);
            logits(model.forward_rows(batch, &row_of_slot, &slots))
        },
        |batch, logits| {
            for (slot, row) in logits.into_iter().enumerate() {
                let pair = batch.members[slot / 2];
                scores[2 * pair + slot % 2] = row;
            }
        },
        on_batch,
    )?;
    Ok(scores)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forked_row_shares_the_common_prefix() {
        let (chosen, rejected) = (vec![1, 2, 3, 4], vec![1, 2, 5]);
        let row = ForkedRow::new(&chosen, &rejected);
        assert_eq!(row.shared, 2);
        assert_eq!(row.ids().collect::<Vec<_>>(), vec![1, 2, 3, 4, 5]);
        let fork = Fork {
            first_len: 4,
            shared: 2,
        };
        assert_eq!(row.fork(), Some(fork));
        assert_eq!(row.sequences(), 2);
    }

    #[test]
    fn identical_sequences_share_everything() {
        let seq = vec![7, 8, 9];
        let row = ForkedRow::new(&seq, &seq);
        assert_eq!(row.tokens(), 3);
        assert_eq!(row.split().second_slot(2), 2);
    }
}
