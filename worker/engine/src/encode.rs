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
/// With a reward token (`RewardTokenizer::reward_token`) the rows are its pipeline's instead:
/// InternLM2Pipeline (rewardbench/models/internlm.py, rewardbench 0.1.4) encodes without special
/// tokens (the chat template writes BOS) and appends the reward token unless the row already
/// ends with it; Athene's AtheneRewardPipeline (model card) tokenizes `text + cls_token` with the
/// special tokens, which is the text's ids with the tokenizer's BOS (a second one before the
/// template's, kept: nothing is masked) and the cls id appended. Neither pipeline keeps the token
/// on a row cut to `max_length` (InternLM2's does not truncate; Athene's cuts the cls token off
/// with the row's end); herd cuts the text from `side` to `max_length` with the token kept, so
/// rows that fit are exact.
pub fn classifier_inputs_masked(
    tokenizer: &RewardTokenizer,
    texts: Vec<String>,
    max_length: usize,
    side: TruncationSide,
) -> anyhow::Result<(Vec<Vec<u32>>, Vec<usize>)> {
    if let Some(token) = tokenizer.reward_token() {
        let keep = max_length.max(1) - 1;
        let mut encoded = if token.special_tokens {
            // truncated as transformers truncates: the special tokens kept
            tokenizer.encode_truncated_from(texts, keep, side)
        } else {
            tokenizer.encode_plain(texts)
        }
        .map_err(|e| anyhow::anyhow!("tokenizing: {e}"))?;
        for ids in &mut encoded {
            if !token.always && ids.last() == Some(&token.id) {
                ids.pop();
            }
            if ids.len() > keep {
                match side {
                    TruncationSide::Left => drop(ids.drain(..ids.len() - keep)),
                    TruncationSide::Right => ids.truncate(keep),
                }
            }
            ids.push(token.id);
        }
        let masked = vec![0; encoded.len()];
        return Ok((encoded, masked));
    }
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
