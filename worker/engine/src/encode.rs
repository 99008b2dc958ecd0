//! From preference pairs to the token ids a reward model scores, exactly as RewardBench's
//! run_rm.py + RewardBenchPipeline prepare them.

use herd_rewardbench::chat::{rewardbench_messages, ChatFormatter};
use herd_rewardbench::dataset::PreferencePair;

use crate::tokenizer::{RewardTokenizer, TruncationSide};

/// The chosen and rejected texts of one pair after the chat template.
#[derive(Clone, Debug, PartialEq)]
pub struct FormattedPair {
    pub chosen: String,
    pub rejected: String,
}

pub fn format_pair(
    formatter: &ChatFormatter,
    pair: &PreferencePair,
) -> anyhow::Result<FormattedPair> {
    let render = |response: &str| -> anyhow::Result<String> {
        let messages = rewardbench_messages(&pair.prompt, Some(response))?;
        Ok(formatter.render(&messages)?)
    };
    Ok(FormattedPair {
        chosen: render(&pair.chosen)?,
        rejected: render(&pair.rejected)?,
    })
}

/// Tokenizes with special tokens, truncating from the left to `max_length`.
///
/// When a chat template already emits BOS and the tokenizer adds another, RewardBench masks the
/// first of the two (PR #166). Dropping it instead is exact for rotary models: every remaining
/// token keeps its relative position, and the masked token contributes nothing either way.
pub fn classifier_inputs(
    tokenizer: &RewardTokenizer,
    texts: Vec<String>,
    max_length: usize,
) -> anyhow::Result<Vec<Vec<u32>>> {
    classifier_inputs_from(tokenizer, texts, max_length, TruncationSide::Left)
}

/// [`classifier_inputs`] truncated from `side`: run_rm.py sets `truncation_side = "left"`
/// (scripts/run_rm.py L175 at 05a9005); run_v2.py keeps the tokenizer's own side.
pub fn classifier_inputs_from(
    tokenizer: &RewardTokenizer,
    texts: Vec<String>,
    max_length: usize,
    side: TruncationSide,
) -> anyhow::Result<Vec<Vec<u32>>> {
    Ok(classifier_inputs_masked(tokenizer, texts, max_length, side)?.0)
}

/// [`classifier_inputs_from`] and, per row, how many leading tokens RewardBench masks that were
/// dropped (0 or 1): its padded batches are still that much wider (`pooling::Pooling::Legacy`).
///
/// With a reward token (InternLM2) every row not already ending with it gets it appended, after
/// truncation, as RewardBench's InternLMPipeline does (rewardbench/models/internlm.py: encode
/// without special tokens, the template writing BOS, then `torch.cat` the reward token; that
/// pipeline does not truncate, so a row cut at `max_length` is one token longer here).
pub fn classifier_inputs_masked(
    tokenizer: &RewardTokenizer,
    texts: Vec<String>,
    max_length: usize,
    side: TruncationSide,
) -> anyhow::Result<(Vec<Vec<u32>>, Vec<usize>)> {
    let mut encoded = tokenizer
        .encode_truncated_from(texts, max_length, side)
        .map_err(|e| anyhow::anyhow!("tokenizing: {e}"))?;
    let mut masked = vec![0; encoded.len()];
    if let Some(bos) = tokenizer.bos_id() {
        for (ids, masked) in encoded.iter_mut().zip(&mut masked) {
            if ids.len() >= 2 && ids[0] == bos && ids[1] == bos {
                ids.remove(0);
                *masked = 1;
            }
        }
    }
    if let Some(token) = tokenizer.reward_token() {
        for ids in &mut encoded {
            if ids.last() != Some(&token) {
                ids.push(token);
            }
        }
    }
    Ok((encoded, masked))
}

/// Where transformers' `*ForSequenceClassification` reads the score: the rightmost token that
/// is not the pad id (so a trailing EOS equal to pad is skipped), or 0 if there is none.
pub fn pooled_position(ids: &[u32], pad_id: u32) -> usize {
    ids.iter().rposition(|&id| id != pad_id).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::pooled_position;

    #[test]
    fn pools_rightmost_non_pad_token() {
        assert_eq!(pooled_position(&[1, 5, 6, 2], 2), 2);
        assert_eq!(pooled_position(&[1, 5, 6, 2, 2], 2), 2);
        assert_eq!(pooled_position(&[1, 5, 6], 0), 2);
        assert_eq!(pooled_position(&[2, 2], 2), 0);
    }
}
