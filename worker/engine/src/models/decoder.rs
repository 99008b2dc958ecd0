//! The Llama-family decoder stack shared by Llama, Mistral and Qwen2 (they differ only in
//! config: biases, rotary scaling, windows). It runs a padded [`Batch`]: right padding with causal
//! attention needs no padding mask, so SDPA may use its fused kernels while the outputs at real
//! positions stay exact; a batch of forked rows (two sequences sharing a prefix, see
//! `batching`) brings explicit positions and a mask, and the shared prefix is computed once at no
//! cost in exactness.

use tch::{Kind, Tensor};

use super::config::DecoderConfig;
use super::rope::{inverse_frequencies, RotaryTables};
use crate::batching::{Batch, Layout};
use crate::error::LoadError;
use crate::weights::VarBuilder;

struct Linear {
    weight: Tensor,
    bias: Option<Tensor>,
}

impl Linear {
    fn load(w: &VarBuilder, out_dim: i64, in_dim: i64, bias: bool) -> Result<Self, LoadError> {
        let weight = w.take("weight", &[out_dim, in_dim])?;
        let bias = if bias {
            Some(w.take("bias", &[out_dim])?)
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
    pub fn load(w: &VarBuilder, dim: i64, eps: f64) -> Result<Self, LoadError> {
        Ok(Self {
            weight: w.take("weight", &[dim])?,
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
    /// `q_proj`, `k_proj`, `v_proj` and `o_proj` of `w` (a layer's `self_attn`).
    fn load(c: &DecoderConfig, w: &VarBuilder) -> Result<Self, LoadError> {
        let (hidden, b) = (c.hidden_size, c.biases);
        let q_dim = c.num_heads * c.head_dim;
        let kv_dim = c.num_kv_heads * c.head_dim;
        Ok(Self {
            q: Linear::load(&w.pp("q_proj"), q_dim, hidden, b.qkv)?,
            k: Linear::load(&w.pp("k_proj"), kv_dim, hidden, b.qkv)?,
            v: Linear::load(&w.pp("v_proj"), kv_dim, hidden, b.qkv)?,
            o: Linear::load(&w.pp("o_proj"), hidden, q_dim, b.output)?,
            num_heads: c.num_heads,
            num_kv_heads: c.num_kv_heads,
            head_dim: c.head_dim,
        })
    }

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
    /// `gate_proj`, `up_proj` and `down_proj` of `w` (a layer's `mlp`).
    fn load(c: &DecoderConfig, w: &VarBuilder) -> Result<Self, LoadError> {
        let (hidden, inter, bias) = (c.hidden_size, c.intermediate_size, c.biases.mlp);
        Ok(Self {
            gate: Linear::load(&w.pp("gate_proj"), inter, hidden, bias)?,
            up: Linear::load(&w.pp("up_proj"), inter, hidden, bias)?,
            down: Linear::load(&w.pp("down_proj"), hidden, inter, bias)?,
        })
    }

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

impl Layer {
    /// One decoder layer from `w` (`model.layers.N`).
    fn load(c: &DecoderConfig, w: &VarBuilder) -> Result<Self, LoadError> {
        let (hidden, eps) = (c.hidden_size, c.rms_norm_eps);
        Ok(Self {
            attention: Attention::load(c, &w.pp("self_attn"))?,
            mlp: Mlp::load(c, &w.pp("mlp"))?,
            input_norm: RmsNorm::load(&w.pp("input_layernorm"), hidden, eps)?,
            post_attention_norm: RmsNorm::load(&w.pp("post_attention_layernorm"), hidden, eps)?,
        })
    }
}

impl Decoder {
    /// Builds the stack from `w` (the checkpoint's `model` scope).
    pub fn load(config: &DecoderConfig, w: &VarBuilder) -> Result<Self, LoadError> {
        let c = config;
        let embed_tokens = w
            .pp("embed_tokens")
            .take("weight", &[c.vocab_size, c.hidden_size])?;
        let layers = (0..c.num_layers)
            .map(|i| Layer::load(c, &w.pp("layers").pp(i)))
            .collect::<Result<Vec<_>, _>>()?;
        let final_norm = RmsNorm::load(&w.pp("norm"), c.hidden_size, c.rms_norm_eps)?;
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

    /// Hidden states [rows, padded_len, hidden] before the final norm.
    pub fn forward(&self, batch: &Batch) -> Tensor {
        let len = batch.padded_len as i64;
        let mut x = Tensor::embedding(&self.embed_tokens, &batch.ids, -1, false, false);
        let (rotary, mask) = match &batch.layout {
            Layout::Causal => (RotaryTables::new(&self.inv_freq, len, x.kind()), None),
            Layout::Masked { positions, mask } => (
                RotaryTables::for_positions(&self.inv_freq, positions, x.kind()),
                Some(mask),
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
