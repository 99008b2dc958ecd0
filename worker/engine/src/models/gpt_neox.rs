//! GPT-NeoX (Pythia, OpenAssistant's pythia reward models) as transformers 4.57.6 computes it
//! (transformers/models/gpt_neox/modeling_gpt_neox.py): a fused `query_key_value` projection laid
//! out per head ([q | k | v] of head 0, then head 1, ...), rotary embeddings over the first
//! `rotary_ndims` dimensions of each head only, LayerNorm with bias, a gelu MLP
//! (`dense_h_to_4h`, `dense_4h_to_h`), and either the parallel residual
//! (`x + attn(ln1(x)) + mlp(ln2(x))`) or the sequential one. Weights live under `gpt_neox.`;
//! the causal LM's head is `embed_out`.

use serde_json::Value;
use tch::Tensor;

use super::backbone::Backbone;
use super::config::{Biases, ConfigJson, DecoderConfig};
use super::gpt::{attend, string_or, Activation, Dense, GptOptions, LayerNorm};
use super::rope::{inverse_frequencies, RotaryTables};
use super::Family;
use crate::batching::{Batch, Layout};
use crate::error::LoadError;
use crate::weights::VarBuilder;

/// OpenAssistant's pythia reward models: rewardbench 0.1.4 registers `GPTNeoXRewardModel`
/// (rewardbench/models/openassistant.py) for `AutoModelForSequenceClassification`: a
/// GPTNeoXModel, its final-normed hidden state at the last attended token (`pooling: "last"`),
/// and `out_proj`, one logit with a bias. The last attended token is a row's last token even
/// when it is the pad id (oasst_pythia ends every turn with <|endoftext|>), so the scorer pools
/// this class at the last token (`scorer::classifier_pads`), not at the rightmost non-pad.
pub const REWARD_MODEL: &str = "GPTNeoXRewardModel";

/// The decoder shape of a GPTNeoXConfig (configuration_gpt_neox.py defaults where a field is
/// absent).
pub fn config(json: &Value, architecture: &str) -> Result<DecoderConfig, LoadError> {
    let json = ConfigJson(json);
    let hidden_size = json.int("hidden_size")?;
    let num_heads = json.int("num_attention_heads")?;
    if num_heads <= 0 || hidden_size % num_heads != 0 {
        return Err(LoadError::Config {
            field: "num_attention_heads".to_string(),
            reason: format!("{num_heads} does not divide hidden_size {hidden_size}"),
        });
    }
    let head_dim = hidden_size / num_heads;
    let rotary_pct = json.float_or("rotary_pct", 0.25)?;
    if !(0.0..=1.0).contains(&rotary_pct) {
        return Err(LoadError::Config {
            field: "rotary_pct".to_string(),
            reason: format!("{rotary_pct} is outside 0..=1"),
        });
    }
    // GPTNeoXAttention: `int(self.head_size * config.rotary_pct)`, truncated
    let rotary_ndims = (head_dim as f64 * rotary_pct) as i64;
    if rotary_ndims % 2 != 0 {
        return Err(LoadError::Config {
            field: "rotary_pct".to_string(),
            reason: format!(
                "{rotary_pct} of head size {head_dim} gives {rotary_ndims} rotary dimensions; \
                 rotary needs pairs"
            ),
        });
    }
    // `rope_theta` is set from `rotary_emb_base` in GPTNeoXConfig.__init__; a `rope_theta` in
    // config.json alone is overwritten (transformers 4.57.6 reads 10000 then), so only
    // `rotary_emb_base` counts
    let rope_theta = json.float_or("rotary_emb_base", 10000.0)?;
    let num_labels = if architecture == REWARD_MODEL {
        // `pooling or "last"`; "mean" multiplies [batch, len, hidden] by the [batch, len] mask,
        // which broadcasts only by accident, so it is refused
        let pooling = string_or(&json, "pooling", "last")?;
        if !pooling.is_empty() && pooling != "last" {
            return Err(LoadError::Config {
                field: "pooling".to_string(),
                reason: format!(
                    "{pooling:?} is not supported for {REWARD_MODEL} (supported: last)"
                ),
            });
        }
        1 // `out_proj = nn.Linear(config.hidden_size, 1)`
    } else {
        json.num_labels()?
    };
    let attention_bias = json.bool_or("attention_bias", true)?;
    let options = GptOptions {
        activation: Activation::parse("hidden_act", string_or(&json, "hidden_act", "gelu")?)?,
        layer_norm_eps: json.float_or("layer_norm_eps", 1e-5)?,
        rotary_ndims,
        parallel_residual: json.bool_or("use_parallel_residual", true)?,
    };
    Ok(DecoderConfig {
        family: Family::GptNeox,
        architecture: architecture.to_string(),
        vocab_size: json.int("vocab_size")?,
        hidden_size,
        intermediate_size: json.int("intermediate_size")?,
        num_layers: json.int("num_hidden_layers")?,
        num_heads,
        num_kv_heads: num_heads,
        head_dim,
        rms_norm_eps: options.layer_norm_eps,
        rope_theta,
        rope_scaling: json.rope_scaling()?,
        biases: Biases {
            qkv: attention_bias,
            output: attention_bias,
            mlp: true,
        },
        tie_word_embeddings: json.bool_or("tie_word_embeddings", false)?,
        max_position_embeddings: json
            .optional_int("max_position_embeddings")?
            .unwrap_or(2048),
        attention_window: None,
        pad_token_id: json.optional_int("pad_token_id")?,
        num_labels,
        deberta: None,
        gemma2: None,
        gpt: Some(options),
        moe: None,
    })
}

struct Attention {
    query_key_value: Dense,
    dense: Dense,
    num_heads: i64,
    head_dim: i64,
    rotary_ndims: i64,
}

impl Attention {
    fn load(c: &DecoderConfig, o: &GptOptions, w: &VarBuilder) -> Result<Self, LoadError> {
        let hidden = c.hidden_size;
        Ok(Self {
            query_key_value: Dense::linear(
                &w.pp("query_key_value"),
                3 * hidden,
                hidden,
                c.biases.qkv,
            )?,
            dense: Dense::linear(&w.pp("dense"), hidden, hidden, c.biases.output)?,
            num_heads: c.num_heads,
            head_dim: c.head_dim,
            rotary_ndims: o.rotary_ndims,
        })
    }

    /// Rotary over the first `rotary_ndims` of each head, the rest passed through
    /// (`apply_rotary_pos_emb`: `cat([q_rot * cos + rotate_half(q_rot) * sin, q_pass])`).
    fn rotate(&self, x: &Tensor, rotary: &RotaryTables) -> Tensor {
        if self.rotary_ndims == self.head_dim {
            return rotary.apply(x);
        }
        let rotated = rotary.apply(&x.narrow(-1, 0, self.rotary_ndims));
        let passed = x.narrow(-1, self.rotary_ndims, self.head_dim - self.rotary_ndims);
        Tensor::cat(&[rotated, passed], -1)
    }

    fn forward(&self, x: &Tensor, rotary: &RotaryTables, mask: Option<&Tensor>) -> Tensor {
        let size = x.size(); // [batch, len, hidden]
        let (batch, len) = (size[0], size[1]);
        // `.view(*input_shape, -1, 3 * head_size).transpose(1, 2)` then `chunk(3, dim=-1)`
        let qkv = self
            .query_key_value
            .forward(x)
            .view([batch, len, self.num_heads, 3 * self.head_dim])
            .transpose(1, 2);
        let parts = qkv.chunk(3, -1);
        let q = self.rotate(&parts[0], rotary);
        let k = self.rotate(&parts[1], rotary);
        self.dense.forward(&attend(&q, &k, &parts[2], mask))
    }
}

struct Mlp {
    dense_h_to_4h: Dense,
    dense_4h_to_h: Dense,
    activation: Activation,
}

impl Mlp {
    fn load(c: &DecoderConfig, o: &GptOptions, w: &VarBuilder) -> Result<Self, LoadError> {
        let (hidden, inter) = (c.hidden_size, c.intermediate_size);
        Ok(Self {
            dense_h_to_4h: Dense::linear(&w.pp("dense_h_to_4h"), inter, hidden, true)?,
            dense_4h_to_h: Dense::linear(&w.pp("dense_4h_to_h"), hidden, inter, true)?,
            activation: o.activation,
        })
    }

    fn forward(&self, x: &Tensor) -> Tensor {
        self.dense_4h_to_h
            .forward(&self.activation.forward(&self.dense_h_to_4h.forward(x)))
    }
}

struct Layer {
    input_layernorm: LayerNorm,
    post_attention_layernorm: LayerNorm,
    attention: Attention,
    mlp: Mlp,
    parallel_residual: bool,
}

impl Layer {
    fn load(c: &DecoderConfig, o: &GptOptions, w: &VarBuilder) -> Result<Self, LoadError> {
        let (hidden, eps) = (c.hidden_size, o.layer_norm_eps);
        Ok(Self {
            input_layernorm: LayerNorm::load(&w.pp("input_layernorm"), hidden, eps)?,
            post_attention_layernorm: LayerNorm::load(
                &w.pp("post_attention_layernorm"),
                hidden,
                eps,
            )?,
            attention: Attention::load(c, o, &w.pp("attention"))?,
            mlp: Mlp::load(c, o, &w.pp("mlp"))?,
            parallel_residual: o.parallel_residual,
        })
    }

    /// GPTNeoXLayer.forward, additions in its order.
    fn forward(&self, x: &Tensor, rotary: &RotaryTables, mask: Option<&Tensor>) -> Tensor {
        let attended = self
            .attention
            .forward(&self.input_layernorm.forward(x), rotary, mask);
        if self.parallel_residual {
            // `mlp_output + attn_output + hidden_states`
            let mlp = self.mlp.forward(&self.post_attention_layernorm.forward(x));
            mlp + attended + x
        } else {
            // `attn_output + hidden_states`, then `mlp_output + attn_output`
            let attended = attended + x;
            let mlp = self
                .mlp
                .forward(&self.post_attention_layernorm.forward(&attended));
            mlp + attended
        }
    }
}

pub struct GptNeox {
    embed_in: Tensor,
    layers: Vec<Layer>,
    final_layer_norm: LayerNorm,
    inv_freq: Tensor,
}

impl GptNeox {
    /// The model from `w`, the checkpoint's `gpt_neox` scope.
    pub fn load(c: &DecoderConfig, w: &VarBuilder) -> Result<Self, LoadError> {
        let o = c.gpt.as_ref().ok_or_else(|| LoadError::Config {
            field: "architectures".to_string(),
            reason: format!("{} was not read as a GPT-NeoX config", c.architecture),
        })?;
        let embed_in = w
            .pp("embed_in")
            .take("weight", &[c.vocab_size, c.hidden_size])?;
        let layers = (0..c.num_layers)
            .map(|i| Layer::load(c, o, &w.pp("layers").pp(i)))
            .collect::<Result<Vec<_>, _>>()?;
        let final_layer_norm =
            LayerNorm::load(&w.pp("final_layer_norm"), c.hidden_size, o.layer_norm_eps)?;
        // rope_init_fn over `int(head_dim * partial_rotary_factor)` dimensions
        let rotary_shape = DecoderConfig {
            head_dim: o.rotary_ndims,
            ..c.clone()
        };
        let inv_freq = inverse_frequencies(&rotary_shape, embed_in.device());
        Ok(Self {
            embed_in,
            layers,
            final_layer_norm,
            inv_freq,
        })
    }
}

impl Backbone for GptNeox {
    fn forward(&self, batch: &Batch) -> Tensor {
        let len = batch.padded_len as i64;
        let mut x = Tensor::embedding(&self.embed_in, &batch.ids, -1, false, false);
        let (rotary, mask) = match &batch.layout {
            Layout::Causal => (RotaryTables::new(&self.inv_freq, len, x.kind()), None),
            Layout::Masked { positions, mask } => (
                RotaryTables::for_positions(&self.inv_freq, positions, x.kind()),
                Some(mask),
            ),
        };
        for layer in &self.layers {
            x = layer.forward(&x, &rotary, mask);
        }
        x
    }

    fn final_norm(&self, hidden: &Tensor) -> Tensor {
        self.final_layer_norm.forward(hidden)
    }

    fn embed_tokens(&self) -> &Tensor {
        &self.embed_in
    }

    fn lm_head_scope(&self) -> &'static str {
        "embed_out"
    }
}

/// OpenAssistant's `GPTNeoXRewardModel` head (rewardbench/models/openassistant.py): `out_proj`,
/// `nn.Linear(hidden_size, 1)` with its bias.
pub fn load_out_proj(
    ctx: &super::registry::HeadContext,
) -> Result<Box<dyn super::heads::RewardHead>, LoadError> {
    Ok(Box::new(super::heads::LinearHead::load(
        ctx.config,
        &ctx.w.pp("out_proj"),
        true,
    )?))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn neox(extra: Value) -> Result<DecoderConfig, LoadError> {
        let mut json = serde_json::json!({
            "vocab_size": 100, "hidden_size": 64, "num_attention_heads": 4,
            "intermediate_size": 256, "num_hidden_layers": 2,
        });
        json.as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        config(&json, "GPTNeoXForCausalLM")
    }

    #[test]
    fn defaults_are_configuration_gpt_neox_defaults() {
        let c = neox(serde_json::json!({})).unwrap();
        let o = c.gpt.as_ref().unwrap();
        // head size 16, rotary_pct 0.25: int(16 * 0.25) = 4
        assert_eq!((c.head_dim, o.rotary_ndims), (16, 4));
        assert!(o.parallel_residual);
        assert_eq!(o.activation, Activation::Gelu);
        assert_eq!((o.layer_norm_eps, c.rope_theta), (1e-5, 10000.0));
        assert!(c.biases.qkv && c.biases.output && !c.tie_word_embeddings);
    }

    #[test]
    fn rotary_emb_base_counts_and_a_bare_rope_theta_does_not() {
        // GPTNeoXConfig.__init__ sets rope_theta from rotary_emb_base (transformers 4.57.6)
        let c = neox(serde_json::json!({"rope_theta": 700.0})).unwrap();
        assert_eq!(c.rope_theta, 10000.0);
        let c = neox(serde_json::json!({"rope_theta": 700.0, "rotary_emb_base": 500})).unwrap();
        assert_eq!(c.rope_theta, 500.0);
    }

    #[test]
    fn the_openassistant_reward_model_has_one_label_and_last_pooling() {
        let reward = |pooling: Value| {
            let json = serde_json::json!({
                "vocab_size": 100, "hidden_size": 64, "num_attention_heads": 4,
                "intermediate_size": 256, "num_hidden_layers": 2, "pooling": pooling,
                "id2label": {"0": "a", "1": "b"},
            });
            config(&json, REWARD_MODEL)
        };
        assert_eq!(reward(serde_json::json!("last")).unwrap().num_labels, 1);
        assert_eq!(reward(Value::Null).unwrap().num_labels, 1);
        let error = reward(serde_json::json!("mean")).err().unwrap().to_string();
        assert!(
            error.contains("pooling") && error.contains("mean"),
            "{error}"
        );
    }

    #[test]
    fn bad_fields_are_named() {
        for (extra, field) in [
            (serde_json::json!({"rotary_pct": 0.1}), "rotary_pct"), // int(1.6) = 1: odd
            (serde_json::json!({"rotary_pct": 1.5}), "rotary_pct"),
            (
                serde_json::json!({"num_attention_heads": 5}),
                "num_attention_heads",
            ),
            (
                serde_json::json!({"hidden_act": "quick_gelu"}),
                "hidden_act",
            ),
        ] {
            let error = neox(extra).err().unwrap().to_string();
            assert!(error.contains(field), "{error}");
        }
    }
}
