//! GPT-2 as transformers 4.57.6 computes it (transformers/models/gpt2/modeling_gpt2.py): token
//! plus learned absolute position embeddings (`wte`, `wpe`), pre-LayerNorm blocks (`ln_1`,
//! `ln_2`, final `ln_f`), a fused `c_attn` whose output is [q of all heads | k | v], `Conv1D`
//! weights stored [in, out], and a `gelu_new` MLP (`c_fc`, `c_proj`). Weights live under
//! `transformer.`. Positions follow the batch: 0..len per row, or a forked row's explicit
//! positions, so a shared prefix and each tail read the embeddings of their own positions.

use serde_json::Value;
use tch::{Kind, Tensor};

use super::backbone::Backbone;
use super::config::{Biases, ConfigJson, DecoderConfig, RopeScaling};
use super::gpt::{attend, string_or, Activation, Dense, GptOptions, LayerNorm};
use super::Family;
use crate::batching::{Batch, Layout};
use crate::error::LoadError;
use crate::weights::VarBuilder;

/// The decoder shape of a GPT2Config (configuration_gpt2.py defaults where a field is absent).
pub fn config(json: &Value, architecture: &str) -> Result<DecoderConfig, LoadError> {
    let json = ConfigJson(json);
    let hidden_size = json.optional_int("n_embd")?.unwrap_or(768);
    let num_heads = json.optional_int("n_head")?.unwrap_or(12);
    if num_heads <= 0 || hidden_size % num_heads != 0 {
        return Err(LoadError::Config {
            field: "n_head".to_string(),
            reason: format!("{num_heads} does not divide n_embd {hidden_size}"),
        });
    }
    // transformers' default (sdpa) attention scales by 1/sqrt(head_dim) whatever these say,
    // its eager attention follows them: refused rather than picking one of the two
    if !json.bool_or("scale_attn_weights", true)? {
        return Err(LoadError::Config {
            field: "scale_attn_weights".to_string(),
            reason: "false is not supported: transformers' sdpa attention scales anyway and \
                     its eager attention does not, so the reference score is ambiguous"
                .to_string(),
        });
    }
    if json.bool_or("scale_attn_by_inverse_layer_idx", false)? {
        return Err(LoadError::Config {
            field: "scale_attn_by_inverse_layer_idx".to_string(),
            reason: "true is not supported: transformers applies it in eager attention only, \
                     not in its default sdpa attention, so the reference score is ambiguous"
                .to_string(),
        });
    }
    let options = GptOptions {
        activation: Activation::parse(
            "activation_function",
            string_or(&json, "activation_function", "gelu_new")?,
        )?,
        layer_norm_eps: json.float_or("layer_norm_epsilon", 1e-5)?,
        rotary_ndims: 0,
        parallel_residual: false,
    };
    Ok(DecoderConfig {
        family: Family::Gpt2,
        architecture: architecture.to_string(),
        vocab_size: json.optional_int("vocab_size")?.unwrap_or(50257),
        hidden_size,
        // GPT2MLP: `inner_dim = config.n_inner if config.n_inner is not None else 4 * hidden_size`
        intermediate_size: json.optional_int("n_inner")?.unwrap_or(4 * hidden_size),
        num_layers: json.optional_int("n_layer")?.unwrap_or(12),
        num_heads,
        num_kv_heads: num_heads,
        head_dim: hidden_size / num_heads,
        rms_norm_eps: options.layer_norm_eps,
        rope_theta: 0.0,
        rope_scaling: RopeScaling::None,
        biases: Biases {
            qkv: true,
            output: true,
            mlp: true,
        },
        // GPT2LMHeadModel ties lm_head to wte unless the config says otherwise
        tie_word_embeddings: json.bool_or("tie_word_embeddings", true)?,
        max_position_embeddings: json.optional_int("n_positions")?.unwrap_or(1024),
        attention_window: None,
        pad_token_id: json.optional_int("pad_token_id")?,
        num_labels: json.num_labels()?,
        deberta: None,
        gemma2: None,
        gpt: Some(options),
        moe: None,
    })
}

struct Block {
    ln_1: LayerNorm,
    c_attn: Dense,
    attn_c_proj: Dense,
    ln_2: LayerNorm,
    c_fc: Dense,
    mlp_c_proj: Dense,
    activation: Activation,
    num_heads: i64,
    head_dim: i64,
}

impl Block {
    /// One block from `w` (`transformer.h.N`).
    fn load(c: &DecoderConfig, o: &GptOptions, w: &VarBuilder) -> Result<Self, LoadError> {
        let (hidden, inner, eps) = (c.hidden_size, c.intermediate_size, o.layer_norm_eps);
        let (attn, mlp) = (w.pp("attn"), w.pp("mlp"));
        Ok(Self {
            ln_1: LayerNorm::load(&w.pp("ln_1"), hidden, eps)?,
            c_attn: Dense::conv1d(&attn.pp("c_attn"), 3 * hidden, hidden)?,
            attn_c_proj: Dense::conv1d(&attn.pp("c_proj"), hidden, hidden)?,
            ln_2: LayerNorm::load(&w.pp("ln_2"), hidden, eps)?,
            c_fc: Dense::conv1d(&mlp.pp("c_fc"), inner, hidden)?,
            mlp_c_proj: Dense::conv1d(&mlp.pp("c_proj"), hidden, inner)?,
            activation: o.activation,
            num_heads: c.num_heads,
            head_dim: c.head_dim,
        })
    }

    fn attention(&self, x: &Tensor, mask: Option<&Tensor>) -> Tensor {
        let size = x.size(); // [batch, len, hidden]
        let (batch, len, hidden) = (size[0], size[1], size[2]);
        // `c_attn(hidden_states).split(split_size, dim=2)`, then each viewed per head
        let parts = self.c_attn.forward(x).split(hidden, 2);
        let heads = |t: &Tensor| {
            t.view([batch, len, self.num_heads, self.head_dim])
                .transpose(1, 2)
        };
        let attended = attend(
            &heads(&parts[0]),
            &heads(&parts[1]),
            &heads(&parts[2]),
            mask,
        );
        self.attn_c_proj.forward(&attended)
    }

    /// GPT2Block.forward: `attn_output + residual`, then `residual + feed_forward`.
    fn forward(&self, x: &Tensor, mask: Option<&Tensor>) -> Tensor {
        let x = self.attention(&self.ln_1.forward(x), mask) + x;
        let fed = self.mlp_c_proj.forward(
            &self
                .activation
                .forward(&self.c_fc.forward(&self.ln_2.forward(&x))),
        );
        &x + fed
    }
}

pub struct Gpt2 {
    wte: Tensor,
    wpe: Tensor,
    blocks: Vec<Block>,
    ln_f: LayerNorm,
}

impl Gpt2 {
    /// The model from `w`, the checkpoint's `transformer` scope.
    pub fn load(c: &DecoderConfig, w: &VarBuilder) -> Result<Self, LoadError> {
        let o = c.gpt.as_ref().ok_or_else(|| LoadError::Config {
            field: "architectures".to_string(),
            reason: format!("{} was not read as a GPT-2 config", c.architecture),
        })?;
        let wte = w.pp("wte").take("weight", &[c.vocab_size, c.hidden_size])?;
        let wpe = w
            .pp("wpe")
            .take("weight", &[c.max_position_embeddings, c.hidden_size])?;
        let blocks = (0..c.num_layers)
            .map(|i| Block::load(c, o, &w.pp("h").pp(i)))
            .collect::<Result<Vec<_>, _>>()?;
        let ln_f = LayerNorm::load(&w.pp("ln_f"), c.hidden_size, o.layer_norm_eps)?;
        Ok(Self {
            wte,
            wpe,
            blocks,
            ln_f,
        })
    }
}

impl Backbone for Gpt2 {
    fn forward(&self, batch: &Batch) -> Tensor {
        let tokens = Tensor::embedding(&self.wte, &batch.ids, -1, false, false);
        // `inputs_embeds + position_embeds`
        let (mut x, mask) = match &batch.layout {
            Layout::Causal => {
                let len = batch.padded_len as i64;
                let positions = Tensor::arange(len, (Kind::Int64, batch.ids.device()));
                let placed = Tensor::embedding(&self.wpe, &positions, -1, false, false);
                (tokens + placed.unsqueeze(0), None)
            }
            Layout::Masked { positions, mask } => {
                let placed = Tensor::embedding(&self.wpe, positions, -1, false, false);
                (tokens + placed, Some(mask))
            }
        };
        for block in &self.blocks {
            x = block.forward(&x, mask);
        }
        x
    }

    fn final_norm(&self, hidden: &Tensor) -> Tensor {
        self.ln_f.forward(hidden)
    }

    fn embed_tokens(&self) -> &Tensor {
        &self.wte
    }

    fn max_positions(&self) -> Option<usize> {
        Some(self.wpe.size()[0] as usize)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_configuration_gpt2_defaults() {
        let c = config(&serde_json::json!({}), "GPT2ForSequenceClassification").unwrap();
        assert_eq!(
            (
                c.vocab_size,
                c.hidden_size,
                c.num_layers,
                c.num_heads,
                c.head_dim
            ),
            (50257, 768, 12, 12, 64)
        );
        // n_inner None: 4 x n_embd; n_positions 1024; lm_head tied to wte
        assert_eq!(
            (c.intermediate_size, c.max_position_embeddings),
            (3072, 1024)
        );
        assert!(c.tie_word_embeddings);
        let o = c.gpt.as_ref().unwrap();
        assert_eq!(
            (o.activation, o.layer_norm_eps),
            (Activation::GeluTanh, 1e-5)
        );
    }

    #[test]
    fn an_odd_head_size_is_fine_without_rotary() {
        let json = serde_json::json!({"n_embd": 12, "n_head": 4});
        let c = config(&json, "GPT2ForSequenceClassification").unwrap();
        assert_eq!(c.head_dim, 3);
        c.validate().unwrap();
    }

    #[test]
    fn ambiguous_attention_scaling_is_refused() {
        for (json, field) in [
            (
                serde_json::json!({"scale_attn_by_inverse_layer_idx": true}),
                "scale_attn_by_inverse_layer_idx",
            ),
            (
                serde_json::json!({"scale_attn_weights": false}),
                "scale_attn_weights",
            ),
            (serde_json::json!({"n_head": 7}), "n_head"),
            (
                serde_json::json!({"activation_function": "quick_gelu"}),
                "activation_function",
            ),
        ] {
            let error = config(&json, "GPT2ForSequenceClassification")
                .err()
                .unwrap()
                .to_string();
            assert!(error.contains(field), "{error}");
        }
    }
}
