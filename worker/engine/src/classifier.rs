//! Runs token sequences through a sequence classifier in packed, right-padded batches and
//! returns the logits in the caller's order.

use tch::{Device, Tensor};

use tch::Kind;

use crate::batching::{self, Batch, BatchLimits};
use crate::models::decoder::Layout;
use crate::models::SequenceClassifier;

/// A right-padded [rows, len] id tensor for the members of `batch`.
pub fn padded_ids(sequences: &[Vec<u32>], batch: &Batch, pad_id: u32, device: Device) -> Tensor {
    let len = batch.padded_len;
    let mut flat = Vec::with_capacity(batch.members.len() * len);
    for &member in &batch.members {
        let ids = &sequences[member];
        flat.extend(ids.iter().map(|&id| i64::from(id)));
        flat.extend(std::iter::repeat_n(i64::from(pad_id), len - ids.len()));
    }
    Tensor::from_slice(&flat)
        .view([batch.members.len() as i64, len as i64])
        .to_device(device)
}

/// Logits of every sequence at its pooled position, in input order. `on_batch` is told how
/// many sequences each finished batch held (progress reporting).
pub fn score_sequences(
    model: &SequenceClassifier,
    sequences: &[Vec<u32>],
    pooled: &[usize],
    pad_id: u32,
    limits: BatchLimits,
    device: Device,
    mut on_batch: impl FnMut(usize),
) -> anyhow::Result<Vec<Vec<f32>>> {
    let _no_grad = tch::no_grad_guard();
    let lengths: Vec<usize> = sequences.iter().map(Vec::len).collect();
    let mut scores = vec![Vec::new(); sequences.len()];
    for batch in batching::plan(&lengths, limits.max_batch_tokens, limits.max_batch_rows) {
        let ids = padded_ids(sequences, &batch, pad_id, device);
        let positions: Vec<i64> = batch.members.iter().map(|&m| pooled[m] as i64).collect();
        let positions = Tensor::from_slice(&positions).to_device(device);
        let logits = model
            .forward(&ids, &Layout::Causal, &positions)
            .to_device(Device::Cpu);
        let logits: Vec<Vec<f32>> = Vec::<Vec<f32>>::try_from(&logits)?;
        for (&member, row) in batch.members.iter().zip(logits) {
            scores[member] = row;
        }
        on_batch(batch.members.len());
    }
    Ok(scores)
}

/// A preference pair packed into one row: `chosen ++ rejected[shared..]` (see models::decoder).
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

    fn len(&self) -> usize {
        self.chosen.len() + self.rejected.len() - self.shared
    }

    fn ids(&self) -> impl Iterator<Item = u32> + '_ {
        self.chosen
            .iter()
            .chain(&self.rejected[self.shared..])
            .copied()
    }

    /// Position ids for `padded_len` slots: the rejected tail continues from the prefix.
    fn positions(&self, padded_len: usize) -> impl Iterator<Item = i64> + '_ {
        let chosen_len = self.chosen.len();
        (0..padded_len).map(move |i| {
            if i < chosen_len {
                i as i64
            } else {
                (i - chosen_len + self.shared) as i64
            }
        })
    }

    /// Where a position of the rejected sequence sits in the row.
    fn rejected_slot(&self, position: usize) -> usize {
        if position < self.shared {
            position
        } else {
            self.chosen.len() + position - self.shared
        }
    }
}

/// The attention mask of forked rows: causal, except that the rejected tail (row positions from
/// `chosen_len`) does not see the chosen tail (`shared..chosen_len`).
fn forked_mask(chosen_lens: &[i64], shared: &[i64], padded_len: i64, device: Device) -> Tensor {
    let rows = chosen_lens.len() as i64;
    let column = |values: &[i64]| {
        Tensor::from_slice(values)
            .to_device(device)
            .view([rows, 1, 1])
    };
    let (chosen_len, shared) = (column(chosen_lens), column(shared));
    let i = Tensor::arange(padded_len, (Kind::Int64, device)).view([1, padded_len, 1]);
    let j = Tensor::arange(padded_len, (Kind::Int64, device)).view([1, 1, padded_len]);
    let causal = j.le_tensor(&i);
    let blocked = i
        .ge_tensor(&chosen_len)
        .logical_and(&j.ge_tensor(&shared))
        .logical_and(&j.lt_tensor(&chosen_len));
    causal.logical_and(&blocked.logical_not()).unsqueeze(1)
}

/// Scores preference pairs (`sequences[2k]` chosen, `sequences[2k + 1]` rejected) with each
/// pair in one row, so their shared prefix (the prompt) is computed once. Returns the logits in
/// input order, like [`score_sequences`].
pub fn score_sequence_pairs(
    model: &SequenceClassifier,
    sequences: &[Vec<u32>],
    pooled: &[usize],
    pad_id: u32,
    limits: BatchLimits,
    device: Device,
    mut on_batch: impl FnMut(usize),
) -> anyhow::Result<Vec<Vec<f32>>> {
    anyhow::ensure!(
        sequences.len().is_multiple_of(2),
        "pairs need an even number of sequences"
    );
    let _no_grad = tch::no_grad_guard();
    let rows: Vec<ForkedRow> = sequences
        .chunks_exact(2)
        .map(|pair| ForkedRow::new(&pair[0], &pair[1]))
        .collect();
    let lengths: Vec<usize> = rows.iter().map(ForkedRow::len).collect();
    let mut scores = vec![Vec::new(); sequences.len()];
    for batch in batching::plan(&lengths, limits.max_batch_tokens, limits.max_batch_rows) {
        let len = batch.padded_len;
        let mut ids = Vec::with_capacity(batch.members.len() * len);
        let mut positions = Vec::with_capacity(batch.members.len() * len);
        let mut pooled_slots = Vec::with_capacity(batch.members.len() * 2);
        let (mut chosen_lens, mut shared) = (Vec::new(), Vec::new());
        for &pair in &batch.members {
            let row = &rows[pair];
            ids.extend(row.ids().map(i64::from));
            ids.extend(std::iter::repeat_n(i64::from(pad_id), len - row.len()));
            positions.extend(row.positions(len));
            chosen_lens.push(row.chosen.len() as i64);
            shared.push(row.shared as i64);
            pooled_slots.push(pooled[2 * pair] as i64);
            pooled_slots.push(row.rejected_slot(pooled[2 * pair + 1]) as i64);
        }
        let count = batch.members.len() as i64;
        let ids = Tensor::from_slice(&ids)
            .view([count, len as i64])
            .to_device(device);
        let positions = Tensor::from_slice(&positions)
            .view([count, len as i64])
            .to_device(device);
        let mask = forked_mask(&chosen_lens, &shared, len as i64, device);
        // each row is pooled twice: duplicate rows so the head reads (row, slot) pairs
        let row_of_slot =
            Tensor::arange(count, (Kind::Int64, device)).repeat_interleave_self_int(2, 0, None);
        let layout = Layout::Masked {
            positions: &positions,
            mask: &mask,
        };
        let logits = model
            .forward_rows(
                &ids,
                &layout,
                &row_of_slot,
                &Tensor::from_slice(&pooled_slots).to_device(device),
            )
            .to_device(Device::Cpu);
        let logits: Vec<Vec<f32>> = Vec::<Vec<f32>>::try_from(&logits)?;
        for (slot, row) in logits.into_iter().enumerate() {
            let pair = batch.members[slot / 2];
            scores[2 * pair + slot % 2] = row;
        }
        on_batch(2 * batch.members.len());
    }
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
        assert_eq!(row.positions(6).collect::<Vec<_>>(), vec![0, 1, 2, 3, 2, 3]);
        assert_eq!(row.rejected_slot(1), 1);
        assert_eq!(row.rejected_slot(2), 4);
    }

    #[test]
    fn rejected_tail_does_not_see_the_chosen_tail() {
        let mask = forked_mask(&[4], &[2], 5, Device::Cpu);
        let mask: Vec<Vec<bool>> = Vec::try_from(&mask.view([5, 5])).unwrap();
        assert_eq!(mask[3], vec![true, true, true, true, false]); // chosen: causal
        assert_eq!(mask[4], vec![true, true, false, false, true]); // rejected tail: prefix + itself
    }

    #[test]
    fn identical_sequences_share_everything() {
        let seq = vec![7, 8, 9];
        let row = ForkedRow::new(&seq, &seq);
        assert_eq!(row.len(), 3);
        assert_eq!(row.rejected_slot(2), 2);
    }
}
