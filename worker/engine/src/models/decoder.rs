//! The Llama-family decoder stack shared by Llama, Mistral, Mixtral, Qwen2, Qwen3, OLMo2 and
//! InternLM2 (they differ only in config: biases, rotary scaling, windows, q/k norms, where the
//! norms sit, Mixtral's sparse experts in place of the MLP;
//! InternLM2's fused weights are renamed and split at load, see internlm2.rs). It runs a padded [`Batch`]: right padding with causal
//! attention needs no padding mask, so SDPA may use its fused kernels while the outputs at real
//! positions stay exact; a batch of forked rows (two sequences sharing a prefix, see
//! `batching`) brings explicit positions and a mask, and the shared prefix is computed once at no
//! cost in exactness.

use tch::{Kind, Tensor};

use super::config::DecoderConfig;
use super::gemma2::Activation;
use super::moe::SparseMoe;
use super::quant::{LinearWeight, Quantized};
use super::rope::{inverse_frequencies, RotaryTables};
use crate::batching::{Batch, Layout};
use crate::error::LoadError;
use crate::weights::VarBuilder;

struct Linear {
    weight: LinearWeight,
    bias: Option<Tensor>,
}

impl Linear {
    fn load(w: &VarBuilder, out_dim: i64, in_dim: i64, bias: bool) -> Result<Self, LoadError> {
        let weight = LinearWeight::Full(w.take("weight", &[out_dim, in_dim])?);
        let bias = if bias {
            Some(w.take("bias", &[out_dim])?)
        } else {
            None
        };
        Ok(Self { weight, bias })
    }

    fn forward(&self, x: &Tensor) -> Tensor {
        x.linear(&self.weight.dense(), self.bias.as_ref())
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
    /// Gemma 2: scale by `1 + w` in float32 before the cast back (`Gemma2RMSNorm.forward`:
    /// `output * (1.0 + self.weight.float())`, then `type_as(x)`)
    unit_offset: Option<Tensor>,
}

impl RmsNorm {
    pub fn load(w: &VarBuilder, dim: i64, eps: f64) -> Result<Self, LoadError> {
        Ok(Self {
            weight: w.take("weight", &[dim])?,
            eps,
            scale_in_float32: false,
            unit_offset: None,
        })
    }

    /// Gemma 2's form of the norm when `on` (the weight then holds `w` of `1 + w`).
    pub fn with_unit_offset(mut self, on: bool) -> Self {
        self.unit_offset = on.then(|| self.weight.to_kind(Kind::Float) + 1.0);
        self
    }

    /// The norm `family` uses (OLMo2's scales in float32, Gemma 2's by `1 + w`).
    fn load_for(
        family: super::Family,
        w: &VarBuilder,
        dim: i64,
        eps: f64,
    ) -> Result<Self, LoadError> {
        let mut norm = Self::load(w, dim, eps)?;
        norm.scale_in_float32 = family == super::Family::Olmo2;
        Ok(norm.with_unit_offset(family == super::Family::Gemma2))
    }

    pub fn forward(&self, x: &Tensor) -> Tensor {
        let kind = x.kind();
        let x32 = x.to_kind(Kind::Float);
        let variance = x32.pow_tensor_scalar(2).mean_dim(-1, true, Kind::Float);
        let normed = x32 * (variance + self.eps).rsqrt();
        if let Some(scale) = &self.unit_offset {
            return (normed * scale).to_kind(kind);
        }
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
    /// logits scale when not 1/sqrt(head_dim) (Gemma 2: `query_pre_attn_scalar**-0.5`)
    scaling: Option<f64>,
    /// `tanh(logits / c) * c` before the mask (Gemma 2), which needs the explicit path
    softcap: Option<f64>,
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
            scaling: c
                .gemma2
                .as_ref()
                .map(|g| g.query_pre_attn_scalar.powf(-0.5)),
            softcap: c.gemma2.as_ref().and_then(|g| g.attn_logit_softcapping),
        })
    }

    fn forward(&self, x: &Tensor, rotary: &RotaryTables, sees: Sees) -> Tensor {
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
        let attended = match self.softcap {
            Some(cap) => self.softcapped(&q, &k, &v, cap, sees, SCORE_ELEMENTS_PER_CHUNK),
            None => {
                let window_mask;
                let mask = match sees {
                    Sees::Causal(None) => None,
                    Sees::Causal(Some(window)) => {
                        window_mask = causal_window_mask(0, len, 0, len, window, x.device());
                        Some(&window_mask)
                    }
                    Sees::Mask(mask) => Some(mask),
                };
                self.sdpa(&q, k, v, mask)
            }
        };
        let merged = attended
            .transpose(1, 2)
            .reshape([batch, len, self.num_heads * self.head_dim]);
        self.o.forward(&merged)
    }

    /// SDPA over [batch, heads, len, head_dim] (k and v with `num_kv_heads` heads): causal
    /// without a mask (right padding needs none), else exactly the boolean `mask`.
    fn sdpa(&self, q: &Tensor, k: Tensor, v: Tensor, mask: Option<&Tensor>) -> Tensor {
        let (k, v, grouped) = self.expand_for_mask(k, v, mask.is_some());
        Tensor::scaled_dot_product_attention(
            q,
            &k,
            &v,
            mask,
            0.0,
            mask.is_none(),
            self.scaling,
            grouped,
        )
    }

    /// Keys and values as SDPA gets them, and whether SDPA must group query heads over them
    /// (`enable_gqa`). Unmasked, grouped k/v go in as they are: the causal fused kernel (flash)
    /// takes unequal head counts itself. With an explicit mask, torch 2.11's flash kernel is
    /// excluded (it takes no mask) and its memory-efficient kernel rejects unequal head counts,
    /// which would leave the math kernel and its float32 [rows, heads, len, len] scores; so k
    /// and v are expanded to the query heads first, kv head h serving query heads
    /// h*groups..(h+1)*groups as transformers' `repeat_kv` (`repeat_interleave` on the head
    /// axis) lays them out. The expanded and the grouped products are the same numbers.
    fn expand_for_mask(&self, k: Tensor, v: Tensor, masked: bool) -> (Tensor, Tensor, bool) {
        let groups = self.num_heads / self.num_kv_heads;
        match (groups > 1, masked) {
            (false, _) => (k, v, false),
            (true, false) => (k, v, true),
            (true, true) => (
                k.repeat_interleave_self_int(groups, 1, None),
                v.repeat_interleave_self_int(groups, 1, None),
                false,
            ),
        }
    }

    /// Attention with soft-capped logits, as transformers' `eager_attention_forward`: logits
    /// `q k^T * scaling`, then `tanh(. / cap) * cap`, then the mask, softmax in float32 cast back
    /// to the input dtype, times v. SDPA's fused kernels cannot cap, so this path computes the
    /// logits itself; queries go in chunks so the logits in memory stay under
    /// `budget` logits (`SCORE_ELEMENTS_PER_CHUNK`), and each chunk reads only the keys it may see (causal: none
    /// after its last query; a causal window: none before its first query's window). Keys it
    /// skips would have weight exactly 0 after the softmax.
    fn softcapped(
        &self,
        q: &Tensor,
        k: &Tensor,
        v: &Tensor,
        cap: f64,
        sees: Sees,
        budget: i64,
    ) -> Tensor {
        let size = q.size(); // [batch, heads, len, head_dim]
        let (batch, len) = (size[0], size[2]);
        let groups = self.num_heads / self.num_kv_heads;
        let scaling = self
            .scaling
            .unwrap_or_else(|| (self.head_dim as f64).powf(-0.5));
        let per_query = (batch * self.num_heads * len).max(1);
        let chunk = (budget / per_query).clamp(1, len.max(1));
        let mut pieces = Vec::new();
        let mut start = 0;
        while start < len {
            let rows = chunk.min(len - start);
            let end = start + rows; // keys at columns >= end are never visible (causal)
            let key_start = match sees {
                Sees::Causal(Some(window)) => (start + 1 - window).max(0),
                _ => 0,
            };
            let keys = end - key_start;
            // kv head h serves query heads h*groups .. (h+1)*groups (transformers' repeat_kv),
            // so the grouped query heads ride along the query axis instead of copying k and v
            let q_chunk = q.narrow(2, start, rows).reshape([
                batch,
                self.num_kv_heads,
                groups * rows,
                self.head_dim,
            ]);
            let k_chunk = k.narrow(2, key_start, keys);
            let v_chunk = v.narrow(2, key_start, keys);
            let logits = q_chunk.matmul(&k_chunk.transpose(2, 3)) * scaling;
            let logits = ((logits / cap).tanh() * cap).view([batch, self.num_heads, rows, keys]);
            let visible = match sees {
                Sees::Causal(window) => causal_window_mask(
                    start,
                    rows,
                    key_start,
                    keys,
                    window.unwrap_or(i64::MAX),
                    q.device(),
                ),
                Sees::Mask(mask) => mask.narrow(2, start, rows).narrow(3, key_start, keys),
            };
            let weights = logits
                .masked_fill(&visible.logical_not(), f64::NEG_INFINITY)
                .softmax(-1, Kind::Float)
                .to_kind(q.kind())
                .view([batch, self.num_kv_heads, groups * rows, keys]);
            let out = weights
                .matmul(&v_chunk)
                .view([batch, self.num_heads, rows, self.head_dim]);
            pieces.push(out);
            start = end;
        }
        Tensor::cat(&pieces, 2)
    }
}

/// How many logits (batch x heads x queries x keys) the soft-capped attention holds at once:
/// 2^24 floats, 64 MiB in float32.
const SCORE_ELEMENTS_PER_CHUNK: i64 = 1 << 24;

/// Which keys each query of one layer sees.
#[derive(Clone, Copy)]
enum Sees<'a> {
    /// causal over the columns (positions 0..len), and with `Some(w)` only keys less than `w`
    /// positions back (transformers' `sliding_window_overlay`: `kv_idx > q_idx - w`)
    Causal(Option<i64>),
    /// an explicit boolean mask [rows, 1, len, len] (true = attend)
    Mask(&'a Tensor),
}

/// The causal (windowed) mask [1, 1, rows, keys] of queries `start..start+rows` over keys
/// `key_start..key_start+keys`.
fn causal_window_mask(
    start: i64,
    rows: i64,
    key_start: i64,
    keys: i64,
    window: i64,
    device: tch::Device,
) -> Tensor {
    let i = Tensor::arange_start(start, start + rows, (Kind::Int64, device)).view([1, 1, rows, 1]);
    let j = Tensor::arange_start(key_start, key_start + keys, (Kind::Int64, device))
        .view([1, 1, 1, keys]);
    let distance = &i - &j;
    distance.ge(0).logical_and(&distance.lt(window))
}

struct Mlp {
    gate: Linear,
    up: Linear,
    down: Linear,
    activation: Activation,
}

impl Mlp {
    /// `gate_proj`, `up_proj` and `down_proj` of `w` (a layer's `mlp`).
    fn load(c: &DecoderConfig, w: &VarBuilder) -> Result<Self, LoadError> {
        let (hidden, inter, bias) = (c.hidden_size, c.intermediate_size, c.biases.mlp);
        Ok(Self {
            gate: Linear::load(&w.pp("gate_proj"), inter, hidden, bias)?,
            up: Linear::load(&w.pp("up_proj"), inter, hidden, bias)?,
            down: Linear::load(&w.pp("down_proj"), hidden, inter, bias)?,
            activation: c.gemma2.as_ref().map_or(Activation::Silu, |g| g.activation),
        })
    }

    fn forward(&self, x: &Tensor) -> Tensor {
        let gate = self.gate.forward(x);
        let gate = match self.activation {
            Activation::Silu => gate.silu(),
            Activation::GeluTanh => gate.gelu("tanh"),
            Activation::Gelu => gate.gelu("none"),
        };
        self.down.forward(&(gate * self.up.forward(x)))
    }
}

/// A layer's feed-forward block: the dense gated MLP (`mlp`), or Mixtral's sparse mixture of
/// experts (`block_sparse_moe`, see moe.rs) when the config has `moe`.
enum FeedForward {
    Dense(Mlp),
    Sparse(SparseMoe),
}

impl FeedForward {
    fn load(c: &DecoderConfig, w: &VarBuilder) -> Result<Self, LoadError> {
        Ok(match c.moe {
            Some(options) => Self::Sparse(SparseMoe::load(
                options,
                c.hidden_size,
                c.intermediate_size,
                &w.pp("block_sparse_moe"),
            )?),
            None => Self::Dense(Mlp::load(c, &w.pp("mlp"))?),
        })
    }

    fn forward(&self, x: &Tensor) -> Tensor {
        match self {
            Self::Dense(mlp) => mlp.forward(x),
            Self::Sparse(moe) => moe.forward(x),
        }
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
    /// before the MLP (`Before`: `post_attention_layernorm`, Gemma 2's
    /// `pre_feedforward_layernorm`) or after attention (`After`)
    post_attention_norm: RmsNorm,
    /// after the MLP (`After` only)
    post_feedforward_norm: Option<RmsNorm>,
    mlp: FeedForward,
    /// Gemma 2: `post_attention_layernorm` on the attention output and
    /// `post_feedforward_layernorm` on the MLP output, each before its residual add
    output_norms: Option<(RmsNorm, RmsNorm)>,
    /// the sliding window this layer attends through (Gemma 2's sliding layers)
    window: Option<i64>,
}

pub struct Decoder {
    embed_tokens: Tensor,
    layers: Vec<Layer>,
    /// the device each layer's weights are on (`placement`: all the embeddings' device unless
    /// the model is split by layers)
    layer_devices: Vec<tch::Device>,
    /// applied by the heads, only to the positions they read
    pub final_norm: RmsNorm,
    inv_freq: Tensor,
    /// Gemma 2's embedding scale, sqrt(hidden) rounded to the embedding dtype (`Gemma2Model`:
    /// `torch.tensor(self.config.hidden_size**0.5, dtype=hidden_states.dtype)`), made once on
    /// the device so a forward pass copies nothing from the host
    embed_scale: Option<Tensor>,
    pub config: DecoderConfig,
}

impl Layer {
    /// One decoder layer from `w` (`model.layers.N`).
    fn load(c: &DecoderConfig, w: &VarBuilder, index: usize) -> Result<Self, LoadError> {
        let (hidden, eps) = (c.hidden_size, c.rms_norm_eps);
        let norm = |name: &str| RmsNorm::load_for(c.family, &w.pp(name), hidden, eps);
        let after = c.family.norm_placement() == NormPlacement::After;
        let (post_attention_norm, output_norms) = if c.gemma2.is_some() {
            let outputs = (
                norm("post_attention_layernorm")?,
                norm("post_feedforward_layernorm")?,
            );
            (norm("pre_feedforward_layernorm")?, Some(outputs))
        } else {
            (norm("post_attention_layernorm")?, None)
        };
        Ok(Self {
            attention: Attention::load(c, &w.pp("self_attn"))?,
            mlp: FeedForward::load(c, w)?,
            input_norm: if after {
                None
            } else {
                Some(norm("input_layernorm")?)
            },
            post_attention_norm,
            post_feedforward_norm: if after {
                Some(norm("post_feedforward_layernorm")?)
            } else {
                None
            },
            output_norms,
            window: c.gemma2.as_ref().and_then(|g| g.window_of(index)),
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
        let layer_devices: Vec<tch::Device> = (0..c.num_layers.max(0) as usize)
            .map(|i| w.placement().device_of(i))
            .collect();
        let layers = layer_devices
            .iter()
            .enumerate()
            .map(|(i, &device)| Layer::load(c, &w.pp("layers").pp(i).on(device), i))
            .collect::<Result<Vec<_>, _>>()?;
        let final_norm = RmsNorm::load_for(c.family, &w.pp("norm"), c.hidden_size, c.rms_norm_eps)?;
        let inv_freq = inverse_frequencies(c, embed_tokens.device());
        let embed_scale = c.gemma2.as_ref().map(|_| {
            Tensor::from((c.hidden_size as f64).sqrt())
                .to_kind(embed_tokens.kind())
                .to_device(embed_tokens.device())
        });
        Ok(Self {
            embed_tokens,
            layers,
            layer_devices,
            final_norm,
            inv_freq,
            embed_scale,
            config: c.clone(),
        })
    }

    pub fn embed_tokens(&self) -> &Tensor {
        &self.embed_tokens
    }

    /// Every layer's attention and MLP projections in int8 (models/quant.rs); embeddings, norms
    /// and whatever head reads the hidden states stay as loaded.
    pub fn quantize_int8(&mut self) -> Quantized {
        let mut saved = Quantized::default();
        for layer in &mut self.layers {
            let a = &mut layer.attention;
            let mut linears = vec![&mut a.q, &mut a.k, &mut a.v, &mut a.o];
            // a sparse MoE block's experts are plain tensors and stay as loaded
            if let FeedForward::Dense(m) = &mut layer.mlp {
                linears.extend([&mut m.gate, &mut m.up, &mut m.down]);
            }
            for linear in linears {
                saved.add(linear.weight.quantize());
            }
        }
        saved
    }

    /// Hidden states [rows, padded_len, hidden] before the final norm.
    pub fn forward(&self, batch: &Batch) -> Tensor {
        let len = batch.padded_len as i64;
        let mut x = Tensor::embedding(&self.embed_tokens, &batch.ids, -1, false, false);
        if let Some(scale) = &self.embed_scale {
            // Gemma2Model: the factor is rounded to the embedding dtype before the product
            x *= scale;
        }
        let (rotary, mask) = match &batch.layout {
            Layout::Causal => (RotaryTables::new(&self.inv_freq, len, x.kind()), None),
            Layout::Masked { positions, mask } => (
                RotaryTables::for_positions(&self.inv_freq, positions, x.kind()),
                Some(mask),
            ),
        };
        // sliding layers of a masked batch: the fork mask, and keys less than the window back
        // in sequence positions (a forked tail's positions continue from its prefix, so this is
        // the window each sequence has alone in its row)
        let windowed = match (&batch.layout, self.layers.iter().find_map(|l| l.window)) {
            (Layout::Masked { positions, mask }, Some(window)) => {
                let distance = positions.unsqueeze(2) - positions.unsqueeze(1);
                Some(mask.logical_and(&distance.lt(window).unsqueeze(1)))
            }
            _ => None,
        };
        // a model split by layers: the tables and masks are copied once to each further device
        // (bit for bit), and the hidden states move at each stage boundary
        let home = x.device();
        let mut stages = vec![StageInputs {
            device: home,
            rotary,
            mask: mask.map(Tensor::shallow_clone),
            windowed,
        }];
        for &device in &self.layer_devices {
            if stages.iter().all(|s| s.device != device) {
                let copy = stages[0].to_device(device);
                stages.push(copy);
            }
        }
        for (layer, &device) in self.layers.iter().zip(&self.layer_devices) {
            if x.device() != device {
                x = x.to_device(device);
            }
            let stage = stages
                .iter()
                .find(|s| s.device == device)
                .unwrap_or_else(|| unreachable!("inputs are built for every layer's device"));
            let (mask, windowed) = (stage.mask.as_ref(), &stage.windowed);
            let rotary = RotaryTables {
                cos: stage.rotary.cos.shallow_clone(),
                sin: stage.rotary.sin.shallow_clone(),
            };
            let sees = match (mask, layer.window) {
                (None, Some(window)) if window < len => Sees::Causal(Some(window)),
                (None, _) => Sees::Causal(None),
                (Some(_), Some(_)) => Sees::Mask(windowed.as_ref().unwrap_or_else(|| {
                    unreachable!("a windowed mask is built when a layer has a window")
                })),
                (Some(mask), None) => Sees::Mask(mask),
            };
            if let Some(post_feedforward_norm) = &layer.post_feedforward_norm {
                let attended = layer.attention.forward(&x, &rotary, sees);
                x += layer.post_attention_norm.forward(&attended);
                let mlp_out = layer.mlp.forward(&x);
                x += post_feedforward_norm.forward(&mlp_out);
                continue;
            }
            let input = match &layer.input_norm {
                Some(norm) => norm.forward(&x),
                None => x.shallow_clone(),
            };
            let attended = layer.attention.forward(&input, &rotary, sees);
            match &layer.output_norms {
                Some((after_attention, after_mlp)) => {
                    x += after_attention.forward(&attended);
                    let mlp_out = layer.mlp.forward(&layer.post_attention_norm.forward(&x));
                    x += after_mlp.forward(&mlp_out);
                }
                None => {
                    x += attended;
                    let mlp_out = layer.mlp.forward(&layer.post_attention_norm.forward(&x));
                    x += mlp_out;
                }
            }
        }
        // the final norm and the heads read the hidden states where the batch is
        if x.device() != home {
            x = x.to_device(home);
        }
        x
    }
}

/// What every layer of one stage reads besides the hidden states, on the stage's device.
struct StageInputs {
    device: tch::Device,
    rotary: RotaryTables,
    mask: Option<Tensor>,
    windowed: Option<Tensor>,
}

impl StageInputs {
    fn to_device(&self, device: tch::Device) -> Self {
        Self {
            device,
            rotary: RotaryTables {
                cos: self.rotary.cos.to_device(device),
                sin: self.rotary.sin.to_device(device),
            },
            mask: self.mask.as_ref().map(|m| m.to_device(device)),
            windowed: self.windowed.as_ref().map(|m| m.to_device(device)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::Device;

    fn attention(num_heads: i64, num_kv_heads: i64, head_dim: i64) -> Attention {
        let linear = || Linear {
            weight: LinearWeight::Full(Tensor::zeros([1, 1], (Kind::Float, Device::Cpu))),
            bias: None,
        };
        Attention {
            q: linear(),
            k: linear(),
            v: linear(),
            o: linear(),
            num_heads,
            num_kv_heads,
            head_dim,
            scaling: Some(0.3),
            softcap: Some(2.0),
            qk_norms: None,
        }
    }

    /// transformers' eager attention written out whole: repeat_kv, logits, cap, additive mask
    /// of the dtype's minimum, softmax in float32.
    fn eager(a: &Attention, q: &Tensor, k: &Tensor, v: &Tensor, visible: &Tensor) -> Tensor {
        let groups = a.num_heads / a.num_kv_heads;
        let k = k.repeat_interleave_self_int(groups, 1, None);
        let v = v.repeat_interleave_self_int(groups, 1, None);
        let logits = q.matmul(&k.transpose(2, 3)) * a.scaling.unwrap();
        let logits = (logits / 2.0).tanh() * 2.0;
        let additive =
            Tensor::zeros_like(&logits).masked_fill(&visible.logical_not(), f32::MIN as f64);
        (logits + additive).softmax(-1, Kind::Float).matmul(&v)
    }

    /// transformers' eager attention without a cap: repeat_kv, logits, additive mask, softmax.
    fn eager_uncapped(
        a: &Attention,
        q: &Tensor,
        k: &Tensor,
        v: &Tensor,
        visible: &Tensor,
    ) -> Tensor {
        let groups = a.num_heads / a.num_kv_heads;
        let k = k.repeat_interleave_self_int(groups, 1, None);
        let v = v.repeat_interleave_self_int(groups, 1, None);
        let logits = q.matmul(&k.transpose(2, 3)) * a.scaling.unwrap();
        let additive =
            Tensor::zeros_like(&logits).masked_fill(&visible.logical_not(), f32::MIN as f64);
        (logits + additive).softmax(-1, Kind::Float).matmul(&v)
    }

    #[test]
    fn grouped_attention_with_a_mask_expands_kv_and_matches_eager_attention() {
        tch::manual_seed(11);
        let (batch, len, head_dim) = (2, 23, 8);
        let q = Tensor::randn([batch, 6, len, head_dim], (Kind::Float, Device::Cpu));
        let causal = causal_window_mask(0, len, 0, len, i64::MAX, Device::Cpu);
        // a forked row's mask: row 1's later queries do not see columns 4..10
        let forked = causal.repeat([batch, 1, 1, 1]);
        let _ = forked
            .get(1)
            .narrow(1, 12, len - 12)
            .narrow(2, 4, 6)
            .fill_(0);
        for (heads, kv_heads) in [(6, 2), (6, 6), (6, 3)] {
            let mut a = attention(heads, kv_heads, head_dim);
            a.softcap = None;
            let kv = || Tensor::randn([batch, kv_heads, len, head_dim], (Kind::Float, Device::Cpu));
            let (k, v) = (kv(), kv());
            // the masked path hands SDPA as many kv heads as query heads
            let (ek, ev, grouped) = a.expand_for_mask(k.shallow_clone(), v.shallow_clone(), true);
            assert_eq!((ek.size()[1], ev.size()[1], grouped), (heads, heads, false));
            // the unmasked path leaves grouping to SDPA
            let (uk, _, grouped) = a.expand_for_mask(k.shallow_clone(), v.shallow_clone(), false);
            assert_eq!((uk.size()[1], grouped), (kv_heads, kv_heads != heads));
            for (what, mask) in [("explicit", Some(&forked)), ("causal", None)] {
                let got = a.sdpa(&q, k.shallow_clone(), v.shallow_clone(), mask);
                let want = eager_uncapped(&a, &q, &k, &v, mask.unwrap_or(&causal));
                let diff = (&got - &want).abs().max().double_value(&[]);
                assert!(diff < 1e-5, "{heads}/{kv_heads} heads, {what} mask: {diff}");
            }
            // and the expanded masked product is the grouped one
            let grouped = Tensor::scaled_dot_product_attention(
                &q,
                &k,
                &v,
                Some(&forked),
                0.0,
                false,
                a.scaling,
                kv_heads != heads,
            );
            let expanded = a.sdpa(&q, k.shallow_clone(), v.shallow_clone(), Some(&forked));
            let diff = (&grouped - &expanded).abs().max().double_value(&[]);
            assert!(
                diff < 1e-6,
                "{heads}/{kv_heads}: grouped vs expanded {diff}"
            );
        }
    }

    #[test]
    fn chunked_softcapped_attention_is_eager_attention_for_every_chunk_size() {
        tch::manual_seed(7);
        let (batch, len, head_dim) = (2, 37, 8);
        let a = attention(4, 2, head_dim);
        let q = Tensor::randn([batch, 4, len, head_dim], (Kind::Float, Device::Cpu)) * 2.0;
        let k = Tensor::randn([batch, 2, len, head_dim], (Kind::Float, Device::Cpu)) * 2.0;
        let v = Tensor::randn([batch, 2, len, head_dim], (Kind::Float, Device::Cpu));
        // an explicit mask: causal, and row 1 hides columns 5..9 from the later queries
        let explicit =
            causal_window_mask(0, len, 0, len, i64::MAX, Device::Cpu).repeat([batch, 1, 1, 1]);
        let _ = explicit
            .get(1)
            .narrow(1, 10, len - 10)
            .narrow(2, 5, 4)
            .fill_(0);
        for window in [None, Some(5), Some(len)] {
            let visible =
                causal_window_mask(0, len, 0, len, window.unwrap_or(i64::MAX), Device::Cpu);
            let want = eager(&a, &q, &k, &v, &visible);
            for budget in [1, 4 * 8 * len, 4 * 8 * len * 7, i64::MAX] {
                let got = a.softcapped(&q, &k, &v, 2.0, Sees::Causal(window), budget);
                let diff = (&got - &want).abs().max().double_value(&[]);
                assert!(diff < 1e-5, "window {window:?} budget {budget}: {diff}");
            }
        }
        let want = eager(&a, &q, &k, &v, &explicit);
        for budget in [1, 4 * 8 * len * 3, i64::MAX] {
            let got = a.softcapped(&q, &k, &v, 2.0, Sees::Mask(&explicit), budget);
            let diff = (&got - &want).abs().max().double_value(&[]);
            assert!(diff < 1e-5, "explicit mask, budget {budget}: {diff}");
        }
    }
}
