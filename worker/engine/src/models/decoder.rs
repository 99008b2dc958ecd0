//! The Llama-family decoder stack shared by Llama, Mistral and Qwen2 (they differ only in
//! config: biases, rotary scaling, windows). Inputs are right-padded: with causal attention a
//! real token never sees a later pad, so no padding mask is needed and SDPA may use its fused
//! kernels while the outputs at real positions stay exact.
//!
//! A row may also hold two sequences that share a prefix (a preference pair's chosen and rejected
//! texts share their prompt): `chosen ++ rejected[shared..]`, with the rejected tail attending
//! to the shared prefix and itself but not to the chosen tail, and its positions continuing from
//! the prefix. Every token then sees exactly the context it has alone, so the shared prefix is
//! computed once at no cost in exactness.

use tch::{Kind, Tensor};

use super::config::DecoderConfig;
use super::rope::{inverse_frequencies, RotaryTables};
use crate::error::LoadError;
use crate::weights::Weights;

struct Linear {
    weight: Tensor,
    bias: Option<Tensor>,
}

impl Linear {
    fn load(
        weights: &mut Weights,
        prefix: &str,
        out_dim: i64,
        in_dim: i64,
        bias: bool,
    ) -> Result<Self, LoadError> {
        let weight = weights.take(&format!("{prefix}.weight"), &[out_dim, in_dim])?;
        let bias = if bias {
            Some(weights.take(&format!("{prefix}.bias"), &[out_dim])?)
        } else {
            None
        };
        Ok(Self { weight, bias })
    }

    fn forward(&self, x: &Tensor) -> Tensor {
        x.linear(&self.weight, self.bias.as_ref())
    }
}

/// RMSNorm as transformers computes it: normalise in float32, cast back, then scale.
pub struct RmsNorm {
    weight: Tensor,
    eps: f64,
}

impl RmsNorm {
    pub fn load(weights: &mut Weights, name: &str, dim: i64, eps: f64) -> Result<Self, LoadError> {
        Ok(Self {
            weight: weights.take(name, &[dim])?,
            eps,
        })
    }

    pub fn forward(&self, x: &Tensor) -> Tensor {
        let kind = x.kind();
        let x32 = x.to_kind(Kind::Float);
        let variance = x32.pow_tensor_scalar(2).mean_dim(-1, true, Kind::Float);
        let normed = x32 * (variance + self.eps).rsqrt();
        &self.weight * normed.to_kind(kind)
    }
}

/// How the tokens of a batch attend to each other.
pub enum Layout<'a> {
    /// one sequence per row, causal, positions 0..len
    Causal,
    /// explicit positions [batch, len] and a boolean mask [batch, 1, len, len] (true = attend)
    Masked {
        positions: &'a Tensor,
        mask: &'a Tensor,
    },
}

struct Attention {
    q: Linear,
    k: Linear,
    v: Linear,
    o: Linear,
    num_heads: i64,
    num_kv_heads: i64,
    head_dim: i64,
}

impl Attention {
    fn forward(&self, x: &Tensor, rotary: &RotaryTables, mask: Option<&Tensor>) -> Tensor {
        let size = x.size(); // [batch, len, hidden]
        let (batch, len) = (size[0], size[1]);
        let heads = |t: Tensor, n: i64| t.view([batch, len, n, self.head_dim]).transpose(1, 2);
        let q = rotary.apply(&heads(self.q.forward(x), self.num_heads));
        let k = rotary.apply(&heads(self.k.forward(x), self.num_kv_heads));
        let v = heads(self.v.forward(x), self.num_kv_heads);
        let grouped = self.num_kv_heads != self.num_heads;
        let attended = Tensor::scaled_dot_product_attention(
            &q,
            &k,
            &v,
            mask,
            0.0,
            mask.is_none(),
            None,
            grouped,
        );
        let merged = attended
            .transpose(1, 2)
            .reshape([batch, len, self.num_heads * self.head_dim]);
        self.o.forward(&merged)
    }
}

struct Mlp {
    gate: Linear,
    up: Linear,
    down: Linear,
}

impl Mlp {
    fn forward(&self, x: &Tensor) -> Tensor {
        self.down
            .forward(&(self.gate.forward(x).silu() * self.up.forward(x)))
    }
}

struct Layer {
    input_norm: RmsNorm,
    attention: Attention,
    post_attention_norm: RmsNorm,
    mlp: Mlp,
}

pub struct Decoder {
    embed_tokens: Tensor,
    layers: Vec<Layer>,
    /// applied by the heads, only to the positions they read
    pub final_norm: RmsNorm,
    inv_freq: Tensor,
    pub config: DecoderConfig,
}

impl Decoder {
    /// Builds the stack from `model.*` weights.
    pub fn load(weights: &mut Weights, config: &DecoderConfig) -> Result<Self, LoadError> {
        let c = config;
        let hidden = c.hidden_size;
        let q_dim = c.num_heads * c.head_dim;
        let kv_dim = c.num_kv_heads * c.head_dim;
        let embed_tokens = weights.take("model.embed_tokens.weight", &[c.vocab_size, hidden])?;
        let mut layers = Vec::with_capacity(c.num_layers as usize);
        for i in 0..c.num_layers {
            let p = format!("model.layers.{i}");
            let b = c.biases;
            let attention = Attention {
                q: Linear::load(
                    weights,
                    &format!("{p}.self_attn.q_proj"),
                    q_dim,
                    hidden,
                    b.qkv,
                )?,
                k: Linear::load(
                    weights,
                    &format!("{p}.self_attn.k_proj"),
                    kv_dim,
                    hidden,
                    b.qkv,
                )?,
                v: Linear::load(
                    weights,
                    &format!("{p}.self_attn.v_proj"),
                    kv_dim,
                    hidden,
                    b.qkv,
                )?,
                o: Linear::load(
                    weights,
                    &format!("{p}.self_attn.o_proj"),
                    hidden,
                    q_dim,
                    b.output,
                )?,
                num_heads: c.num_heads,
                num_kv_heads: c.num_kv_heads,
                head_dim: c.head_dim,
            };
            let inter = c.intermediate_size;
            let mlp = Mlp {
                gate: Linear::load(weights, &format!("{p}.mlp.gate_proj"), inter, hidden, b.mlp)?,
                up: Linear::load(weights, &format!("{p}.mlp.up_proj"), inter, hidden, b.mlp)?,
                down: Linear::load(weights, &format!("{p}.mlp.down_proj"), hidden, inter, b.mlp)?,
            };
            layers.push(Layer {
                input_norm: RmsNorm::load(
                    weights,
                    &format!("{p}.input_layernorm.weight"),
                    hidden,
                    c.rms_norm_eps,
                )?,
                attention,
                post_attention_norm: RmsNorm::load(
                    weights,
                    &format!("{p}.post_attention_layernorm.weight"),
                    hidden,
                    c.rms_norm_eps,
                )?,
                mlp,
            });
        }
        let final_norm = RmsNorm::load(weights, "model.norm.weight", hidden, c.rms_norm_eps)?;
        let inv_freq = inverse_frequencies(c, embed_tokens.device());
        Ok(Self {
            embed_tokens,
            layers,
            final_norm,
            inv_freq,
            config: c.clone(),
        })
    }

    pub fn embed_tokens(&self) -> &Tensor {
        &self.embed_tokens
    }

    /// Hidden states before the final norm for right-padded ids [batch, len].
    pub fn forward(&self, input_ids: &Tensor, layout: &Layout) -> Tensor {
        let len = input_ids.size()[1];
        let mut x = Tensor::embedding(&self.embed_tokens, input_ids, -1, false, false);
        let (rotary, mask) = match layout {
            Layout::Causal => (RotaryTables::new(&self.inv_freq, len, x.kind()), None),
            Layout::Masked { positions, mask } => (
                RotaryTables::for_positions(&self.inv_freq, positions, x.kind()),
                Some(*mask),
            ),
        };
        for layer in &self.layers {
            let attended = layer
                .attention
                .forward(&layer.input_norm.forward(&x), &rotary, mask);
            x += attended;
            let mlp_out = layer.mlp.forward(&layer.post_attention_norm.forward(&x));
            x += mlp_out;
        }
        x
    }
}
