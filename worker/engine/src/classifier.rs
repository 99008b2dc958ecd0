//! Reward models: token sequences through a sequence classifier, in the batching loop, with the
//! logits returned in the caller's order. Sequences sharing a prompt (a preference pair's chosen
//! and rejected, a RewardBench 2 prompt's completions) can share one forked row, so their common
//! prefix is computed once.

use tch::{Device, Tensor};

use crate::batching::{self, BatchSettings, Fork, Row};
use crate::models::backbone::check_lengths;
use crate::models::SequenceClassifier;

/// The logits of a batch's pooled slots, on the host: the one host synchronisation of a batch.
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
    check_lengths(model.backbone.as_ref(), sequences.iter().map(Vec::len))?;
    let device = settings.device;
    let gates = model.gate_positions(sequences)?;
    let mut scores = vec![Vec::new(); sequences.len()];
    batching::run(
        sequences,
        settings,
        |batch| {
            let tensor = |of: &[usize]| {
                let positions: Vec<i64> = batch.members.iter().map(|&m| of[m] as i64).collect();
                batching::upload(&Tensor::from_slice(&positions), device)
            };
            let rows = Tensor::arange(batch.rows(), (tch::Kind::Int64, device));
            let gate = gates.as_deref().map(tensor);
            logits(model.forward_rows_gated(batch, &rows, &tensor(pooled), gate.as_ref()))
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

/// Most tokens a row of several sequences may hold. Attention over a row costs its length
/// squared and its mask `rows × length²`, so a group whose sequences would make a longer row is
/// cut into several rows (each sharing its own prefix). Two sequences of at most 2048 tokens
/// always fit.
pub const MAX_SHARED_ROW_TOKENS: usize = 4096;

/// Sequences packed into one row: the first whole, then each other's tokens after the prefix all
/// of them share.
struct GroupRow<'a> {
    sequences: Vec<&'a [u32]>,
    /// the index of the row's first sequence in the caller's list (the rest follow in order)
    first: usize,
    fork: Fork,
}

/// The longest common prefix of `a` and `b`.
fn common_prefix(a: &[u32], b: &[u32]) -> usize {
    a.iter().zip(b).take_while(|(x, y)| x == y).count()
}

impl<'a> GroupRow<'a> {
    fn new(first: usize, sequences: Vec<&'a [u32]>) -> Self {
        let shared = sequences
            .iter()
            .skip(1)
            .map(|s| common_prefix(sequences[0], s))
            .fold(sequences[0].len(), usize::min);
        let lengths = sequences.iter().map(|s| s.len()).collect();
        Self {
            sequences,
            first,
            fork: Fork { shared, lengths },
        }
    }
}

impl Row for GroupRow<'_> {
    fn tokens(&self) -> usize {
        self.fork.tokens()
    }

    fn ids(&self) -> impl Iterator<Item = u32> + '_ {
        let shared = self.fork.shared;
        self.sequences
            .iter()
            .enumerate()
            .flat_map(move |(k, s)| if k == 0 { &s[..] } else { &s[shared..] })
            .copied()
    }

    fn sequences(&self) -> usize {
        self.sequences.len()
    }

    fn fork(&self) -> Option<Fork> {
        Some(self.fork.clone())
    }
}

/// Cuts each group (`group_sizes` consecutive sequences) into rows of at most `max_row_tokens`
/// tokens, greedily in order: a sequence joins the current row unless the row would grow past
/// the cap (a sequence longer than the cap gets a row of its own).
fn group_rows<'a>(
    sequences: &'a [Vec<u32>],
    group_sizes: &[usize],
    max_row_tokens: usize,
) -> Vec<GroupRow<'a>> {
    let mut rows = Vec::new();
    let mut start = 0;
    for &size in group_sizes {
        let group = &sequences[start..start + size];
        let mut first = start;
        let mut members: Vec<&[u32]> = Vec::new();
        for (k, seq) in group.iter().enumerate() {
            if !members.is_empty() {
                let mut candidate = members.clone();
                candidate.push(seq.as_slice());
                if GroupRow::new(first, candidate).tokens() > max_row_tokens {
                    rows.push(GroupRow::new(first, std::mem::take(&mut members)));
                    first = start + k;
                }
            }
            members.push(seq.as_slice());
        }
        if !members.is_empty() {
            rows.push(GroupRow::new(first, members));
        }
        start += size;
    }
    rows
}

/// Scores groups of sequences that share a prefix (`group_sizes[g]` consecutive sequences each,
/// e.g. a pair's chosen and rejected, or a RewardBench 2 prompt's completions), each group in one
/// row (cut at [`MAX_SHARED_ROW_TOKENS`]), so the shared prompt is computed once. Returns the
/// logits in input order, like [`score_sequences`], equal to them within float noise.
pub fn score_sequence_groups(
    model: &SequenceClassifier,
    sequences: &[Vec<u32>],
    pooled: &[usize],
    group_sizes: &[usize],
    settings: BatchSettings,
    on_batch: impl FnMut(usize),
) -> anyhow::Result<Vec<Vec<f32>>> {
    anyhow::ensure!(
        group_sizes.iter().sum::<usize>() == sequences.len() && pooled.len() == sequences.len(),
        "groups of {} sequences in all, for {} sequences and {} pooled positions",
        group_sizes.iter().sum::<usize>(),
        sequences.len(),
        pooled.len()
    );
    check_lengths(model.backbone.as_ref(), sequences.iter().map(Vec::len))?;
    let rows = group_rows(sequences, group_sizes, MAX_SHARED_ROW_TOKENS);
    let device = settings.device;
    let gates = model.gate_positions(sequences)?;
    let mut scores = vec![Vec::new(); sequences.len()];
    batching::run(
        &rows,
        settings,
        |batch| {
            // each row is pooled once per sequence: the first at its position, the others in
            // their tails (or in the prefix, for a sequence that is all prefix)
            // (a gate position maps to its slot the same way)
            let mut row_of_slot = Vec::new();
            let mut slots = Vec::new();
            let mut gate_slots = Vec::new();
            for (r, &member) in batch.members.iter().enumerate() {
                let row = &rows[member];
                for k in 0..row.sequences.len() {
                    row_of_slot.push(r as i64);
                    slots.push(row.fork.slot(k, pooled[row.first + k]) as i64);
                    if let Some(gates) = &gates {
                        gate_slots.push(row.fork.slot(k, gates[row.first + k]) as i64);
                    }
                }
            }
            let row_of_slot = batching::upload(&Tensor::from_slice(&row_of_slot), device);
            let slots = batching::upload(&Tensor::from_slice(&slots), device);
            let gate_slots = gates
                .as_ref()
                .map(|_| batching::upload(&Tensor::from_slice(&gate_slots), device));
            logits(model.forward_rows_gated(batch, &row_of_slot, &slots, gate_slots.as_ref()))
        },
        |batch, logits| {
            let targets = batch.members.iter().flat_map(|&member| {
                let row = &rows[member];
                row.first..row.first + row.sequences.len()
            });
            for (target, row) in targets.zip(logits) {
                scores[target] = row;
            }
        },
        on_batch,
    )?;
    Ok(scores)
}

/// Scores preference pairs (`sequences[2k]` chosen, `sequences[2k + 1]` rejected) with each
/// pair in one row: [`score_sequence_groups`] with groups of two.
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
    let groups = vec![2; sequences.len() / 2];
    score_sequence_groups(model, sequences, pooled, &groups, settings, on_batch)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pair_shares_the_common_prefix() {
        let (chosen, rejected) = (vec![1, 2, 3, 4], vec![1, 2, 5]);
        let row = GroupRow::new(0, vec![chosen.as_slice(), rejected.as_slice()]);
        assert_eq!(row.fork.shared, 2);
        assert_eq!(row.ids().collect::<Vec<_>>(), vec![1, 2, 3, 4, 5]);
        assert_eq!(
            row.fork(),
            Some(Fork {
                shared: 2,
                lengths: vec![4, 3]
            })
        );
        assert_eq!(row.sequences(), 2);
    }

    #[test]
    fn rows_of_one_sequence_take_the_unmasked_causal_path() {
        use crate::batching::{Batch, Layout, Plan};
        let long: Vec<u32> = (0..9).collect();
        let (chosen, rejected) = (vec![1, 2, 3], vec![1, 2, 4]);
        // a sequence past the cap is a row of its own: no [rows, len, len] mask for it
        let sequences = [long, vec![5, 6]];
        let rows = group_rows(&sequences, &[2], 8);
        assert_eq!(rows.len(), 2);
        let plan = |members: Vec<usize>, padded_len| Plan {
            members,
            padded_len,
        };
        let alone = Batch::pad(&rows, plan(vec![0, 1], 9), 0, tch::Device::Cpu);
        assert!(matches!(alone.layout, Layout::Causal));
        // a row holding two sequences still needs the mask, and so does its batch
        let pair = GroupRow::new(2, vec![chosen.as_slice(), rejected.as_slice()]);
        let mixed = vec![GroupRow::new(0, vec![&[7, 8, 9][..]]), pair];
        let batch = Batch::pad(&mixed, plan(vec![0, 1], 4), 0, tch::Device::Cpu);
        assert!(matches!(batch.layout, Layout::Masked { .. }));
    }

    #[test]
    fn identical_sequences_share_everything() {
        let seq = vec![7, 8, 9];
        let row = GroupRow::new(0, vec![seq.as_slice(); 3]);
        assert_eq!(row.tokens(), 3);
        assert_eq!(row.fork.slot(2, 2), 2);
    }

    #[test]
    fn a_group_shares_the_prefix_of_all_its_sequences() {
        let seqs = [vec![1, 2, 3, 4], vec![1, 2, 3, 9], vec![1, 2, 8]];
        let row = GroupRow::new(0, seqs.iter().map(Vec::as_slice).collect());
        assert_eq!(row.fork.shared, 2);
        assert_eq!(row.ids().collect::<Vec<_>>(), vec![1, 2, 3, 4, 3, 9, 8]);
    }

    #[test]
    fn groups_are_cut_at_the_row_cap() {
        let seqs: Vec<Vec<u32>> = vec![
            vec![1, 2, 3, 4],
            vec![1, 2, 5, 6],
            vec![1, 2, 7, 8],
            vec![9; 3],
            vec![9, 9, 1],
        ];
        // group 1: 4 + 2 + 2 tokens shared; a cap of 7 cuts it after two sequences
        let rows = group_rows(&seqs, &[3, 2], 7);
        let shape: Vec<(usize, usize, usize)> = rows
            .iter()
            .map(|r| (r.first, r.sequences.len(), r.tokens()))
            .collect();
        assert_eq!(shape, vec![(0, 2, 6), (2, 1, 4), (3, 2, 4)]);
        // without a cap every group is one row
        assert_eq!(group_rows(&seqs, &[3, 2], usize::MAX).len(), 2);
        // a sequence over the cap stands alone
        assert_eq!(group_rows(&seqs, &[3, 2], 1).len(), 5);
    }
}
