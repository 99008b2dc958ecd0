//! Which token a sequence classifier's score is read at.
//!
//! * [`Pooling::Current`] (the default): transformers since 4.47 reads the rightmost token that
//!   is not `config.pad_token_id` (`encode::pooled_position`); it does not depend on padding.
//! * [`Pooling::Legacy`]: transformers 4.43 (`LlamaForSequenceClassification.forward`,
//!   transformers/models/llama/modeling_llama.py in 4.43.1) reads
//!   `sequence_lengths = torch.eq(input_ids, pad_token_id).int().argmax(-1) - 1` then
//!   `% input_ids.shape[-1]`, over the batch as padded. RewardBench pads on the left, so with
//!   pad = EOS and the EOS it appends, every row shorter than the batch's longest is read at
//!   its appended EOS (its first token is a pad: index -1, the last column), and each longest
//!   row at the token before its first EOS. The published Sep-2024 counts CSVs were made this
//!   way. The result depends on the batches, so legacy pooling replays RewardBench's: run_rm.py's
//!   DataLoader takes [`REFERENCE_BATCH`] examples at a time in dataset order and the pipeline
//!   tokenizes (pads) the chosen texts and the rejected texts of a batch apart. The rows given
//!   here must therefore start at a multiple of [`REFERENCE_BATCH`] examples of the dataset.

use std::fmt;
use std::str::FromStr;

use crate::encode::pooled_position;

/// Examples per RewardBench batch (run_rm.py `--batch_size 8`, the counts runs' setting).
pub const REFERENCE_BATCH: usize = 8;

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Pooling {
    /// the rightmost non-pad token (transformers >= 4.47)
    #[default]
    Current,
    /// `argmax(ids == pad) - 1 (mod L)` over RewardBench's left-padded batches of 8
    /// (transformers 4.43)
    Legacy,
}

impl FromStr for Pooling {
    type Err = String;

    /// `current` (or empty) and `legacy`.
    fn from_str(text: &str) -> Result<Self, String> {
        match text.trim() {
            "" | "current" => Ok(Self::Current),
            "legacy" => Ok(Self::Legacy),
            other => Err(format!(
                "pooling {other:?}: expected `current` (the rightmost non-pad token) or `legacy` \
                 (transformers 4.43: first pad - 1 over RewardBench's batches of {REFERENCE_BATCH})"
            )),
        }
    }
}

impl fmt::Display for Pooling {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Current => "current",
            Self::Legacy => "legacy",
        })
    }
}

impl Pooling {
    /// Pooled positions of classifier rows `chosen, rejected, chosen, ...` (pairs in dataset
    /// order), each position an index into its row. `masked[i]` counts the leading tokens
    /// RewardBench keeps but masks (a duplicated BOS) that herd dropped from row `i`; they still
    /// widen RewardBench's padded batch.
    pub fn positions(self, sequences: &[Vec<u32>], masked: &[usize], pad: u32) -> Vec<usize> {
        match self {
            Self::Current => sequences
                .iter()
                .map(|ids| pooled_position(ids, pad))
                .collect(),
            Self::Legacy => {
                let mut positions = vec![0; sequences.len()];
                for members in reference_batches(sequences.len()) {
                    let batch_rows: Vec<(&[u32], usize)> = members
                        .iter()
                        .map(|&i| (sequences[i].as_slice(), masked.get(i).copied().unwrap_or(0)))
                        .collect();
                    for (&i, pos) in members.iter().zip(legacy_batch(&batch_rows, pad)) {
                        positions[i] = pos;
                    }
                }
                positions
            }
        }
    }
}

/// The rows of each pipeline call RewardBench makes over `rows` classifier rows `chosen,
/// rejected, chosen, ...`: run_rm.py's DataLoader takes [`REFERENCE_BATCH`] examples at a time
/// in dataset order, and the chosen texts and the rejected texts of a batch are separate calls.
pub fn reference_batches(rows: usize) -> impl Iterator<Item = Vec<usize>> {
    (0..rows)
        .step_by(2 * REFERENCE_BATCH)
        .flat_map(move |first| {
            let end = (first + 2 * REFERENCE_BATCH).min(rows);
            (0..2).map(move |side| (first + side..end).step_by(2).collect())
        })
}

/// LDLPipeline's duplicate-BOS strip (rewardbench/models/ldlreward.py, rewardbench 0.1.4): when
/// any row of a left-padded pipeline call starts with two `bos` (its first two attended tokens;
/// the second index clamped to the last column), the call's first COLUMN is dropped: each of its
/// widest rows loses its first BOS, every shorter row a pad, keeping both of its BOS, attended.
/// `rows` are the tokenized texts with nothing dropped, in [`reference_batches`] order.
pub fn strip_double_bos_per_call(rows: &mut [Vec<u32>], bos: u32) {
    for members in reference_batches(rows.len()) {
        let doubled = members.iter().any(|&i| {
            let ids = &rows[i];
            ids.first() == Some(&bos) && ids.get(1).unwrap_or(&bos) == &bos
        });
        if !doubled {
            continue;
        }
        let width = members.iter().map(|&i| rows[i].len()).max().unwrap_or(0);
        for &i in &members {
            if rows[i].len() == width {
                rows[i].remove(0);
            }
        }
    }
}

/// transformers 4.43's pooled index for each row of one left-padded batch, as a position in the
/// row herd scores (without its masked leading tokens).
fn legacy_batch(rows: &[(&[u32], usize)], pad: u32) -> Vec<usize> {
    let width = rows
        .iter()
        .map(|(ids, masked)| ids.len() + masked)
        .max()
        .unwrap_or(0)
        .max(1);
    rows.iter()
        .map(|&(ids, masked)| {
            let offset = width - (ids.len() + masked);
            // the row as RewardBench padded it: pads, the masked copies of the first token, ids
            let first_pad = if offset > 0 {
                Some(0)
            } else {
                let first = ids.first().copied().into_iter().cycle().take(masked);
                first.chain(ids.iter().copied()).position(|id| id == pad)
            };
            // argmax of an all-false row is 0, so a row without pad is read at index -1 too
            let index = (first_pad.unwrap_or(0) as i64 - 1).rem_euclid(width as i64) as usize;
            index.saturating_sub(offset + masked)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const EOS: u32 = 2;

    fn row(len: usize) -> Vec<u32> {
        // BOS, text, appended EOS
        let mut ids = vec![1];
        ids.extend((0..len - 2).map(|i| 10 + i as u32));
        ids.push(EOS);
        ids
    }

    #[test]
    fn names() {
        assert_eq!("legacy".parse(), Ok(Pooling::Legacy));
        assert_eq!("current".parse(), Ok(Pooling::Current));
        assert_eq!("".parse(), Ok(Pooling::Current));
        assert!("last".parse::<Pooling>().unwrap_err().contains("legacy"));
        assert_eq!(Pooling::Legacy.to_string(), "legacy");
    }

    #[test]
    fn legacy_reads_padded_rows_at_eos_and_the_longest_before_it() {
        // one pair per length: chosen rows 5, 7, 7; rejected rows 4, 4, 4
        let sequences = vec![row(5), row(4), row(7), row(4), row(7), row(4)];
        let masked = vec![0; sequences.len()];
        let legacy = Pooling::Legacy.positions(&sequences, &masked, EOS);
        // chosen: the 5-token row is padded (read at its EOS, 4); both 7-token rows are the
        // longest (read before the EOS, 5); rejected: all equally long, all before the EOS
        assert_eq!(legacy, vec![4, 2, 5, 2, 5, 2]);
        let current = Pooling::Current.positions(&sequences, &masked, EOS);
        assert_eq!(current, vec![3, 2, 5, 2, 5, 2]);
    }

    #[test]
    fn legacy_longest_row_reads_before_its_first_pad() {
        // an EOS inside the text of the longest row: transformers reads before the first one
        let mut inner = row(8);
        inner[3] = EOS;
        let sequences = vec![inner, row(3)];
        assert_eq!(
            Pooling::Legacy.positions(&sequences, &[0, 0], EOS),
            vec![2, 1]
        );
        // no pad at all (pad id unused): index -1 wraps to the last token
        let sequences = vec![row(6), row(3)];
        assert_eq!(
            Pooling::Legacy.positions(&sequences, &[0, 0], 99),
            vec![5, 2]
        );
    }

    #[test]
    fn legacy_batches_are_eight_pairs_chosen_and_rejected_apart() {
        // 9 pairs: chosen lengths 4, 5, ..., 11, then 3; rejected all 6
        let mut sequences = Vec::new();
        for i in 0..9 {
            sequences.push(row(if i < 8 { 4 + i } else { 3 }));
            sequences.push(row(6));
        }
        let masked = vec![0; sequences.len()];
        let pos = Pooling::Legacy.positions(&sequences, &masked, EOS);
        // the first batch's chosen rows: 11 is the longest (read at 9), the others at their EOS
        for i in 0..7 {
            assert_eq!(pos[2 * i], 4 + i - 1, "pair {i}");
        }
        assert_eq!(pos[14], 9);
        // the ninth pair is a batch of its own, longest in it: read before its EOS
        assert_eq!(pos[16], 1);
        // rejected rows are never widened by the chosen ones
        assert!((0..9).all(|i| pos[2 * i + 1] == 4));
    }

    #[test]
    fn masked_bos_widens_the_batch() {
        // two 5-token rows, the first had a duplicated BOS that herd dropped: in RewardBench's
        // batch it is 6 wide, so the second row is padded and read at its EOS
        let sequences = vec![row(5), row(5)];
        let legacy = Pooling::Legacy.positions(&sequences, &[1, 0], EOS);
        // chosen batch = rows 0 only, rejected = row 1 only: each the longest of its own
        assert_eq!(legacy, vec![3, 3]);
        let sequences = vec![row(5), row(6), row(5), row(6)];
        let legacy = Pooling::Legacy.positions(&sequences, &[1, 0, 0, 0], EOS);
        // chosen: row 0 is 6 wide with its masked BOS, the longest (before EOS: index 4 of 6,
        // 3 in herd's row); row 2 is padded (its EOS, 4)
        assert_eq!(legacy[0], 3);
        assert_eq!(legacy[2], 4);
    }

    #[test]
    fn ldl_strips_the_first_column_of_a_call_with_a_doubled_bos() {
        const BOS: u32 = 1;
        // pairs in dataset order: row 2k chosen, 2k+1 rejected; one call per side
        let mut rows = vec![
            vec![BOS, BOS, 5, 6, 7], // chosen, widest
            vec![BOS, 8, 9],         // rejected: no row of this call doubles
            vec![BOS, BOS, 5],       // chosen, shorter: keeps both BOS
            vec![BOS, 9],
        ];
        strip_double_bos_per_call(&mut rows, BOS);
        assert_eq!(rows[0], vec![BOS, 5, 6, 7]);
        assert_eq!(rows[1], vec![BOS, 8, 9]);
        assert_eq!(rows[2], vec![BOS, BOS, 5]);
        assert_eq!(rows[3], vec![BOS, 9]);
        // a single BOS at the last column is read twice (the second index is clamped)
        let mut lone = vec![vec![BOS], vec![7]];
        strip_double_bos_per_call(&mut lone, BOS);
        assert_eq!(lone, vec![Vec::<u32>::new(), vec![7]]);
        // the next call starts a new batch of examples
        let mut rows: Vec<Vec<u32>> = (0..2 * REFERENCE_BATCH + 2)
            .map(|i| {
                if i == 2 * REFERENCE_BATCH {
                    vec![BOS, BOS, 3]
                } else {
                    vec![BOS, 3, 4]
                }
            })
            .collect();
        strip_double_bos_per_call(&mut rows, BOS);
        assert!(rows[..2 * REFERENCE_BATCH]
            .iter()
            .all(|r| r == &vec![BOS, 3, 4]));
        assert_eq!(rows[2 * REFERENCE_BATCH], vec![BOS, 3]);
    }
}
