//! Llama-3.1-Nemotron-70B-Reward-HF: a `LlamaForCausalLM` whose reward is the language-model
//! logit of token id 0 at the last position. RewardBench 0.1.4 has no code for it; the model
//! card (hub-only) reads `generate(..., max_new_tokens=1, output_scores=True).scores[0][0][0]`,
//! which is `logits[0, -1, 0]` of the unpadded conversation. So the head is row 0 of `lm_head`,
//! read at the last token (`Pooled::LastToken`), one float per conversation.

use super::{HeadContext, Mlp, RewardHead};
use crate::error::LoadError;

pub fn load(ctx: &HeadContext) -> Result<Box<dyn RewardHead>, LoadError> {
    let config = ctx.config;
    if config.tie_word_embeddings {
        // the backbone already took the embeddings; the 70B reward model has its own lm_head
        return Err(LoadError::Config {
            field: "tie_word_embeddings".to_string(),
            reason: "true: the Nemotron reward reads an untied lm_head.weight".to_string(),
        });
    }
    let w = ctx.w.pp("lm_head");
    let full = ctx.take(&w, "weight", &[config.vocab_size, config.hidden_size])?;
    // keep token 0's row only (a copy, so the vocabulary-sized matrix is freed)
    let row = full.narrow(0, 0, 1).copy();
    Ok(Box::new(Mlp::from_layers(vec![(row, None)])))
}
