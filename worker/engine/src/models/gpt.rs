//! What GPT-NeoX (gpt_neox.rs) and GPT-2 (gpt2.rs) share and the Llama family does not:
//! LayerNorm with a bias, biased dense layers, the gelu activations, and the config fields the
//! shared decoder shape has no place for.

use tch::Tensor;

use super::config::ConfigJson;
use crate::error::LoadError;
use crate::weights::VarBuilder;

/// transformers' `ACT2FN` entries these models use.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Activation {
    /// `gelu`: the exact erf form (`nn.GELU()`)
    Gelu,
    /// `gelu_new` / `gelu_pytorch_tanh`: the tanh approximation. transformers' `NewGELUActivation`
    /// writes the formula out and `gelu_pytorch_tanh` calls `gelu(approximate="tanh")`; both are
    /// the same function, and fp32 results agree to rounding.
    GeluTanh,
    /// `relu`
    Relu,
    /// `silu` / `swish`
    Silu,
}

impl Activation {
    pub fn parse(field: &str, name: &str) -> Result<Self, LoadError> {
        match name {
            "gelu" => Ok(Self::Gelu),
            "gelu_new" | "gelu_pytorch_tanh" | "gelu_fast" => Ok(Self::GeluTanh),
            "relu" => Ok(Self::Relu),
            "silu" | "swish" => Ok(Self::Silu),
            other => Err(LoadError::Config {
                field: field.to_string(),
                reason: format!(
                    "{other:?} is not supported (supported: gelu, gelu_new, gelu_pytorch_tanh, \
                     gelu_fast, relu, silu, swish)"
                ),
            }),
        }
    }

    pub fn forward(self, x: &Tensor) -> Tensor {
        match self {
            Self::Gelu => x.gelu("none"),
            Self::GeluTanh => x.gelu("tanh"),
            Self::Relu => x.relu(),
            Self::Silu => x.silu(),
        }
    }
}

/// The config fields of GPT-NeoX and GPT-2 beyond the shared decoder shape.
#[derive(Clone, Debug, PartialEq)]
pub struct GptOptions {
    pub activation: Activation,
    pub layer_norm_eps: f64,
    /// GPT-NeoX: how many leading dimensions of each head rotate (`int(head_size * rotary_pct)`);
    /// the rest pass through unchanged. 0 for GPT-2, which has learned absolute positions.
    pub rotary_ndims: i64,
    /// GPT-NeoX `use_parallel_residual`: attention and MLP both read the layer's input
    pub parallel_residual: bool,
}

/// A string field of config.json, `default` when absent.
pub fn string_or<'a>(
    json: &'a ConfigJson<'a>,
    name: &str,
    default: &'a str,
) -> Result<&'a str, LoadError> {
    match json.0.get(name).filter(|v| !v.is_null()) {
        None => Ok(default),
        Some(v) => v.as_str().ok_or_else(|| LoadError::Config {
            field: name.to_string(),
            reason: format!("expected a string, found {v}"),
        }),
    }
}

/// `nn.LayerNorm` with its bias: normalise over the last dimension, scale and shift.
pub struct LayerNorm {
    weight: Tensor,
    bias: Tensor,
    eps: f64,
}

impl LayerNorm {
    pub fn load(w: &VarBuilder, dim: i64, eps: f64) -> Result<Self, LoadError> {
        Ok(Self {
            weight: w.take("weight", &[dim])?,
            bias: w.take("bias", &[dim])?,
            eps,
        })
    }

    pub fn forward(&self, x: &Tensor) -> Tensor {
        let width = self.weight.size()[0];
        x.layer_norm(
            [width],
            Some(&self.weight),
            Some(&self.bias),
            self.eps,
            false,
        )
    }
}

/// A dense layer `x W^T + b`, its weight stored as [out, in].
pub struct Dense {
    weight: Tensor,
    bias: Option<Tensor>,
}

impl Dense {
    /// `nn.Linear`: `weight` [out, in], and `bias` [out] when `bias` is set.
    pub fn linear(
        w: &VarBuilder,
        out_dim: i64,
        in_dim: i64,
        bias: bool,
    ) -> Result<Self, LoadError> {
        let weight = w.take("weight", &[out_dim, in_dim])?;
        let bias = if bias {
            Some(w.take("bias", &[out_dim])?)
        } else {
            None
        };
        Ok(Self { weight, bias })
    }

    /// GPT-2's `Conv1D`: `weight` stored [in, out] (transposed against `nn.Linear`) and a bias;
    /// transformers computes `addmm(bias, x, weight)`, the same product.
    pub fn conv1d(w: &VarBuilder, out_dim: i64, in_dim: i64) -> Result<Self, LoadError> {
        let weight = w
            .take("weight", &[in_dim, out_dim])?
            .transpose(0, 1)
            .contiguous();
        let bias = Some(w.take("bias", &[out_dim])?);
        Ok(Self { weight, bias })
    }

    pub fn forward(&self, x: &Tensor) -> Tensor {
        x.linear(&self.weight, self.bias.as_ref())
    }
}

/// Scaled dot-product attention over [batch, heads, len, head_dim] with the default scale
/// 1/sqrt(head_dim): causal when `mask` is `None` (right padding needs no padding mask), else
/// the boolean mask of forked rows. Returns [batch, len, heads * head_dim].
pub fn attend(q: &Tensor, k: &Tensor, v: &Tensor, mask: Option<&Tensor>) -> Tensor {
    let size = q.size();
    let (batch, heads, len, head_dim) = (size[0], size[1], size[2], size[3]);
    Tensor::scaled_dot_product_attention(q, k, v, mask, 0.0, mask.is_none(), None, false)
        .transpose(1, 2)
        .reshape([batch, len, heads * head_dim])
}
