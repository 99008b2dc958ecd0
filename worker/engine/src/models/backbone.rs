//! The contract between an architecture's body and the heads on top of it. Every backbone turns
//! a padded [`Batch`] into hidden states; the heads pick the positions they read and apply the
//! final norm only to those. One module per architecture implements it; [`load`] picks the
//! module from the config's family.

use tch::Tensor;

use super::config::DecoderConfig;
use super::deberta_v2::DebertaV2;
use super::decoder::Decoder;
use super::gpt2::Gpt2;
use super::gpt_neox::GptNeox;
use super::Family;
use crate::batching::Batch;
use crate::error::LoadError;
use crate::weights::VarBuilder;

pub trait Backbone: Send {
    /// Hidden states [rows, padded_len, hidden] of `batch`, before the final norm.
    fn forward(&self, batch: &Batch) -> Tensor;

    /// The final norm applied to picked hidden rows [n, hidden].
    fn final_norm(&self, hidden: &Tensor) -> Tensor;

    /// The input embeddings [vocab, hidden], which a tied language-model head reads.
    fn embed_tokens(&self) -> &Tensor;

    /// Whether a position never sees the positions after it. Only then may several sequences
    /// share one row with their common prefix computed once (`batching::Fork`), and only then
    /// are the outputs at real positions independent of right padding.
    fn causal(&self) -> bool {
        true
    }

    /// The checkpoint scope of an untied language-model head (`lm_head`; GPT-NeoX `embed_out`).
    fn lm_head_scope(&self) -> &'static str {
        "lm_head"
    }

    /// The longest sequence the model has positions for (GPT-2's learned `wpe` table); `None`
    /// when positions are computed (rotary). Longer sequences are refused before scoring.
    fn max_positions(&self) -> Option<usize> {
        None
    }

    /// Holds the body's linear weights in int8 from now on (`--weights int8`, models/quant.rs)
    /// and says what that saved; `None` for an architecture without it (only the shared
    /// Llama-family decoder has it).
    fn quantize_int8(&mut self) -> Option<super::quant::Quantized> {
        None
    }
}

/// The backbone `config` describes, its weights taken from the checkpoint's root scope `w` (each
/// module knows its own prefix: `model`, `transformer`, `gpt_neox`, ...).
pub fn load(config: &DecoderConfig, w: &VarBuilder) -> Result<Box<dyn Backbone>, LoadError> {
    load_at(config, w, "model")
}

/// [`load`] with the backbone's weights under `scope` of the root (a registry entry's `body`:
/// `model` for Llama-family classes, `gpt_neox`, `transformer` for GPT-2 and Starling-RM-34B).
pub fn load_at(
    config: &DecoderConfig,
    w: &VarBuilder,
    scope: &str,
) -> Result<Box<dyn Backbone>, LoadError> {
    match config.family {
        Family::Llama
        | Family::Mistral
        | Family::Qwen2
        | Family::Qwen3
        | Family::Olmo2
        | Family::InternLM2
        | Family::Gemma2
        | Family::Mixtral => Ok(Box::new(Decoder::load(config, &w.pp(scope))?)),
        Family::DebertaV2 => Ok(Box::new(DebertaV2::load(config, &w.pp(scope))?)),
        Family::GptNeox => Ok(Box::new(GptNeox::load(config, &w.pp(scope))?)),
        Family::Gpt2 => Ok(Box::new(Gpt2::load(config, &w.pp(scope))?)),
    }
}

/// Refuses a sequence longer than `backbone` has positions for (GPT-2's learned table), naming
/// the sequence; transformers stops on it with an index error.
pub fn check_lengths(
    backbone: &dyn Backbone,
    lengths: impl IntoIterator<Item = usize>,
) -> anyhow::Result<()> {
    let Some(limit) = backbone.max_positions() else {
        return Ok(());
    };
    for (i, len) in lengths.into_iter().enumerate() {
        anyhow::ensure!(
            len <= limit,
            "sequence {i} has {len} tokens but the model has {limit} positions \
             (n_positions); lower --max-length to {limit} or less"
        );
    }
    Ok(())
}

impl Backbone for Decoder {
    fn forward(&self, batch: &Batch) -> Tensor {
        Decoder::forward(self, batch)
    }

    fn final_norm(&self, hidden: &Tensor) -> Tensor {
        self.final_norm.forward(hidden)
    }

    fn embed_tokens(&self) -> &Tensor {
        Decoder::embed_tokens(self)
    }

    fn quantize_int8(&mut self) -> Option<super::quant::Quantized> {
        Some(Decoder::quantize_int8(self))
    }
}
