//! The Llama-family decoder stack shared by Llama, Mistral, Qwen2, Qwen3, OLMo2 and InternLM2
//! (they differ only in config: biases, rotary scaling, windows, q/k norms, where the norms sit;
//! InternLM2's fused weights are renamed and split at load, see internlm2.rs). It runs a padded [`Batch`]: right padding with causal
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
    /// OLMo2's variant scales in float32 and casts the product back (`(self.weight *
    /// hidden_states).to(input_dtype)`, modeling_olmo2.py Olmo2RMSNorm) instead of scaling the
    /// cast-back value: the same in float32, a different rounding in bf16
    scale_in_float32: bool,
}

impl RmsNorm {
    pub fn load(w: &VarBuilder, dim: i64, eps: f64) -> Result<Self, LoadError> {
        Ok(Self {
            weight: w.take("weight", &[dim])?,
            eps,
            scale_in_float32: false,
        })
    }

    /// The norm `family` uses (OLMo2's scales in float32).
    fn load_for(
        family: super::Family,
        w: &VarBuilder,
        dim: i64,
        eps: f64,
    ) -> Result<Self, LoadError> {
        let mut norm = Self::load(w, dim, eps)?;
        norm.scale_in_float32 = family == super::Family::Olmo2;
        Ok(norm)
    }

    pub fn forward(&self, x: &Tensor) -> Tensor {
        let kind = x.kind();
        let x32 = x.to_kind(Kind::Float);
        let variance = x32.pow_tensor_scalar(2).mean_dim(-1, true, Kind::Float);
        let normed = x32 * (variance + self.eps).rsqrt();
        if self.scale_in_float32 {
            return (self.weight.to_kind(Kind::Float) * normed).to_kind(kind);
        }
        &self.weight * normed.to_kind(kind)
    }
}

/// Where a family normalises queries and keys (before rotary), if at all.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum QkNorm {
    None,
    /// Qwen3: an RMSNorm over each head's `head_dim` (`q_norm(q_proj(x).view(..., head_dim))`)
    PerHead,
    /// OLMo2: an RMSNorm over the whole projection, `num_heads * head_dim`, before the heads split
    FullWidth,
}

/// `q_norm` and `k_norm` of a layer's attention and the width they normalise.
struct QkNorms {
    q: RmsNorm,
    k: RmsNorm,
    kind: QkNorm,
}

impl QkNorms {
    fn load(c: &DecoderConfig, w: &VarBuilder) -> Result<Option<Self>, LoadError> {
        let kind = c.family.qk_norm();
        let (q_dim, k_dim) = match kind {
            QkNorm::None => return Ok(None),
            QkNorm::PerHead => (c.head_dim, c.head_dim),
            QkNorm::FullWidth => (c.num_heads * c.head_dim, c.num_kv_heads * c.head_dim),
        };
        let norm = |name: &str, dim| RmsNorm::load_for(c.family, &w.pp(name), dim, c.rms_norm_eps);
        Ok(Some(Self {
            q: norm("q_norm", q_dim)?,
            k: norm("k_norm", k_dim)?,
            kind,
        }))
    }
}

struct Attention {
    q: Linear,
    k: Linear,
    v: Linear,
    o: Linear,
    qk_norms: Option<QkNorms>,
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
            qk_norms: QkNorms::load(c, w)?,
            num_heads: c.num_heads,
            num_kv_heads: c.num_kv_heads,
            head_dim: c.head_dim,
        })
    }

    fn forward(&self, x: &Tensor, rotary: &RotaryTables, mask: Option<&Tensor>) -> Tensor {
        let size = x.size(); // [batch, len, hidden]
        let (batch, len) = (size[0], size[1]);
        let split = |t: Tensor, n: i64| t.view([batch, len, n, self.head_dim]);
        let (mut q, mut k) = (self.q.forward(x), self.k.forward(x));
        if let Some(norms) = self
            .qk_norms
            .as_ref()
            .filter(|n| n.kind == QkNorm::FullWidth)
        {
            (q, k) = (norms.q.forward(&q), norms.k.forward(&k));
        }
        let (mut q, mut k) = (split(q, self.num_heads), split(k, self.num_kv_heads));
        if let Some(norms) = self.qk_norms.as_ref().filter(|n| n.kind == QkNorm::PerHead) {
            (q, k) = (norms.q.forward(&q), norms.k.forward(&k));
        }
        let heads = |t: Tensor, n: i64| split(t, n).transpose(1, 2);
        let q = rotary.apply(&q.transpose(1, 2));
        let k = rotary.apply(&k.transpose(1, 2));
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

/// Where a layer's norms sit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NormPlacement {
    /// Llama: `x + attn(input_norm(x))`, then `x + mlp(post_attention_norm(x))`
    Before,
    /// OLMo2: `x + post_attention_norm(attn(x))`, then `x + post_feedforward_norm(mlp(x))`
    /// (modeling_olmo2.py Olmo2DecoderLayer.forward); no input norms
    After,
}

struct Layer {
    /// the norm before attention (`Before`) or none (`After`)
    input_norm: Option<RmsNorm>,
    attention: Attention,
    /// before the MLP (`Before`) or after attention (`After`)
    post_attention_norm: RmsNorm,
    /// after the MLP (`After` only)
    post_feedforward_norm: Option<RmsNorm>,
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
        let norm = |name: &str| RmsNorm::load_for(c.family, &w.pp(name), hidden, eps);
        let after = c.family.norm_placement() == NormPlacement::After;
        Ok(Self {
            attention: Attention::load(c, &w.pp("self_attn"))?,
            mlp: Mlp::load(c, &w.pp("mlp"))?,
            input_norm: if after {
                None
            } else {
                Some(norm("input_layernorm")?)
            },
            post_attention_norm: norm("post_attention_layernorm")?,
            post_feedforward_norm: if after {
                Some(norm("post_feedforward_layernorm")?)
            } else {
                None
            },
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
        let final_norm = RmsNorm::load_for(c.family, &w.pp("norm"), c.hidden_size, c.rms_norm_eps)?;
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
            if let Some(post_feedforward_norm) = &layer.post_feedforward_norm {
                let attended = layer.attention.forward(&x, &rotary, mask);
                x += layer.post_attention_norm.forward(&attended);
                let mlp_out = layer.mlp.forward(&x);
                x += post_feedforward_norm.forward(&mlp_out);
                continue;
            }
            let input = match &layer.input_norm {
                Some(norm) => norm.forward(&x),
                None => x.shallow_clone(),
            };
            let attended = layer.attention.forward(&input, &rotary, mask);
            x += attended;
            let mlp_out = layer.mlp.forward(&layer.post_attention_norm.forward(&x));
            x += mlp_out;
        }
        x
    }
}
