//! The contract between an architecture's body and the heads on top of it. Every backbone turns
//! a padded [`Batch`] into hidden states; the heads pick the positions they read and apply the
//! final norm only to those. One module per architecture implements it; [`load`] picks the
//! module from the config's family.

use tch::Tensor;

use super::config::DecoderConfig;
use super::decoder::Decoder;
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
}

/// The backbone `config` describes, its weights taken from the checkpoint's root scope `w` (each
/// module knows its own prefix: `model`, `transformer`, `gpt_neox`, ...).
pub fn load(config: &DecoderConfig, w: &VarBuilder) -> Result<Box<dyn Backbone>, LoadError> {
    match config.family {
        Family::Llama | Family::Mistral | Family::Qwen2 | Family::Gemma2 => {
            Ok(Box::new(Decoder::load(config, &w.pp("model"))?))
        }
    }
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
}
