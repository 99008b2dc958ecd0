//! DPO (implicit reward) scoring as rewardbench/dpo.py does it: response-only summed
//! log-probabilities, policy minus reference, or reference-free aggregates.

use tch::{Device, Tensor};

use herd_rewardbench::chat::{rewardbench_messages, ChatFormatter};
use herd_rewardbench::dataset::PreferencePair;

use crate::batching::{self, BatchSettings, Row};
use crate::models::backbone::check_lengths;
use crate::models::CausalLm;
use crate::tokenizer::RewardTokenizer;

/// How a reference-free run turns token log-probs into a reward (run_dpo.py `--ref_free_type`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum RefFreeType {
    /// mean log-prob over response tokens (run_dpo.py's default)
    Avg,
    /// summed log-prob
    Sum,
    /// minus the L2 norm of the response log-probs
    Norm,
}

#[derive(Clone, Copy, Debug)]
pub struct DpoLimits {
    pub max_length: usize,
    pub max_prompt_length: usize,
}

impl Default for DpoLimits {
    fn default() -> Self {
        Self {
            max_length: 2048,
            max_prompt_length: 128,
        }
    }
}

/// One scored sequence: prompt ids then response ids; only the response is scored.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DpoSequence {
    pub prompt: Vec<u32>,
    pub response: Vec<u32>,
}

impl Row for DpoSequence {
    fn tokens(&self) -> usize {
        self.prompt.len() + self.response.len()
    }

    fn ids(&self) -> impl Iterator<Item = u32> + '_ {
        self.prompt.iter().chain(&self.response).copied()
    }
}

/// TRL's build_tokenized_answer: tokenize prompt+answer together and split where the prompt
/// ends, stepping back one token when the last prompt token merged into the answer.
fn split_prompt_answer(
    tokenizer: &RewardTokenizer,
    prompt: &str,
    answer: &str,
) -> anyhow::Result<(Vec<u32>, Vec<u32>)> {
    let mut encoded = tokenizer
        .encode_plain(vec![format!("{prompt}{answer}"), prompt.to_string()])
        .map_err(|e| anyhow::anyhow!("tokenizing: {e}"))?;
    let prompt_ids = encoded.pop().unwrap_or_default();
    let full = encoded.pop().unwrap_or_default();
    let mut start = prompt_ids.len().min(full.len());
    if full[..start] != prompt_ids[..] {
        start = start.saturating_sub(1);
    }
    Ok((full[..start].to_vec(), full[start..].to_vec()))
}

/// The chosen and rejected sequences of one pair (rewardbench dpo.py tokenize_row).
pub fn pair_sequences(
    tokenizer: &RewardTokenizer,
    formatter: &ChatFormatter,
    pair: &PreferencePair,
    limits: DpoLimits,
) -> anyhow::Result<[DpoSequence; 2]> {
    let prompt_text = formatter.render(&rewardbench_messages(&pair.prompt, None)?)?;
    let bos = tokenizer.bos_id().or(tokenizer.eos_id());
    let eos = tokenizer.eos_id();
    let sequence = |response: &str| -> anyhow::Result<DpoSequence> {
        let full_text = formatter.render(&rewardbench_messages(&pair.prompt, Some(response))?)?;
        // the response is whatever the template adds after the prompt (str.replace semantics)
        let answer = full_text.replace(&prompt_text, "");
        let (prompt, answer_ids) = split_prompt_answer(tokenizer, &prompt_text, &answer)?;
        Ok(DpoSequence {
            prompt: bos.into_iter().chain(prompt).collect(),
            response: answer_ids.into_iter().chain(eos).collect(),
        })
    };
    let mut sequences = [sequence(&pair.chosen)?, sequence(&pair.rejected)?];
    let longest_response = sequences
        .iter()
        .map(|s| s.response.len())
        .max()
        .unwrap_or(0);
    for sequence in &mut sequences {
        if sequence.prompt.len() + longest_response > limits.max_length {
            let keep = sequence.prompt.len().min(limits.max_prompt_length);
            sequence.prompt.drain(..sequence.prompt.len() - keep);
        }
    }
    for sequence in &mut sequences {
        if sequence.prompt.len() + longest_response > limits.max_length {
            sequence
                .response
                .truncate(limits.max_length.saturating_sub(limits.max_prompt_length));
        }
    }
    Ok(sequences)
}

/// Per-sequence response log-probs, summed, counted and squared-summed in f64.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct ResponseLogProbs {
    pub sum: f64,
    pub sum_squares: f64,
    pub tokens: usize,
}

impl ResponseLogProbs {
    pub fn reference_free(&self, kind: RefFreeType) -> f64 {
        match kind {
            RefFreeType::Sum => self.sum,
            RefFreeType::Avg => self.sum / self.tokens.max(1) as f64,
            RefFreeType::Norm => -self.sum_squares.sqrt(),
        }
    }
}

/// Response log-probs of every sequence under `model`, in input order.
pub fn response_logprobs(
    model: &CausalLm,
    sequences: &[DpoSequence],
    settings: BatchSettings,
    on_batch: impl FnMut(usize),
) -> anyhow::Result<Vec<ResponseLogProbs>> {
    check_lengths(
        model.backbone.as_ref(),
        sequences.iter().map(DpoSequence::tokens),
    )?;
    let device = settings.device;
    let mut results = vec![ResponseLogProbs::default(); sequences.len()];
    batching::run(
        sequences,
        settings,
        |batch| {
            let (mut positions, mut targets, mut owners) = (Vec::new(), Vec::new(), Vec::new());
            for (row, &member) in batch.members.iter().enumerate() {
                let sequence = &sequences[member];
                let row_start = (row * batch.padded_len) as i64;
                for (j, &token) in sequence.response.iter().enumerate() {
                    // the logits at position t predict token t + 1; like transformers' shifted
                    // labels, a first token with nothing before it is not scored
                    let Some(predicted_at) = (sequence.prompt.len() + j).checked_sub(1) else {
                        continue;
                    };
                    positions.push(row_start + predicted_at as i64);
                    targets.push(i64::from(token));
                    owners.push(member);
                }
            }
            let logprobs = model.token_logprobs(
                batch,
                &batching::upload(&Tensor::from_slice(&positions), device),
                &batching::upload(&Tensor::from_slice(&targets), device),
            );
            let logprobs = Vec::<f32>::try_from(&logprobs.to_device(Device::Cpu))?;
            Ok((owners, logprobs))
        },
        |_, (owners, logprobs)| {
            for (member, logprob) in owners.into_iter().zip(logprobs) {
                let entry = &mut results[member];
                entry.sum += f64::from(logprob);
                entry.sum_squares += f64::from(logprob) * f64::from(logprob);
                entry.tokens += 1;
            }
        },
        on_batch,
    )?;
    Ok(results)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model_dir::ModelDir;

    fn llama_tokenizer() -> RewardTokenizer {
        let dir = herd_testkit::fixtures::fixture_model("llama-policy");
        RewardTokenizer::load(&ModelDir::open(dir).unwrap()).unwrap()
    }

    #[test]
    fn answer_split_steps_back_when_the_last_prompt_token_merges() {
        let tokenizer = llama_tokenizer();
        let whole = tokenizer
            .encode_plain(vec!["Hello world".to_string()])
            .unwrap()
            .remove(0);
        // "Hello wor" + "ld": the prompt's last token (▁wor) merges into ▁world
        let (prompt, answer) = split_prompt_answer(&tokenizer, "Hello wor", "ld").unwrap();
        assert_eq!(prompt, whole[..whole.len() - 1]);
        assert_eq!(answer, whole[whole.len() - 1..]);
        // a clean boundary keeps every prompt token
        let (prompt, answer) = split_prompt_answer(&tokenizer, "Hello\n", "world").unwrap();
        let prompt_alone = tokenizer
            .encode_plain(vec!["Hello\n".to_string()])
            .unwrap()
            .remove(0);
        assert_eq!(prompt, prompt_alone);
        assert!(!answer.is_empty());
    }
}
