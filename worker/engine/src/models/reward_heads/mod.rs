//! The custom reward heads of RewardBench's model code (rewardbench/models/ in rewardbench 0.1.4,
//! and hub-only code transcribed where RewardBench has none), one file per head family. Each
//! is a [`RewardHead`] on the final-normed hidden state of the pooled token, built by a
//! [`registry`](super::registry) entry's loader.

pub mod athene;
pub mod beaver;
pub mod grm;
pub mod inform;
pub mod ldl;
pub mod nemotron;
pub mod starling;
pub mod ultrarm;

use tch::{Kind, Tensor};

use super::heads::RewardHead;
use super::registry::HeadContext;
use crate::error::LoadError;
use crate::weights::VarBuilder;

/// Linear layers with a ReLU between each two (`nn.Sequential(Linear, ReLU, ..., Linear)`), or
/// a single `nn.Linear`.
pub struct Mlp {
    layers: Vec<(Tensor, Option<Tensor>)>,
}

impl Mlp {
    /// Layer `k` maps `dims[k]` to `dims[k + 1]`, its weights under `scopes[k]` of `w`
    /// (`weight` [out, in], and `bias` [out] when `bias`).
    pub fn load(
        ctx: &HeadContext,
        scopes: &[VarBuilder],
        dims: &[i64],
        bias: bool,
    ) -> Result<Self, LoadError> {
        assert_eq!(scopes.len() + 1, dims.len(), "one scope per layer");
        let mut layers = Vec::with_capacity(scopes.len());
        for (k, w) in scopes.iter().enumerate() {
            let (input, output) = (dims[k], dims[k + 1]);
            let weight = ctx.take(w, "weight", &[output, input])?;
            let bias = if bias {
                Some(ctx.take(w, "bias", &[output])?)
            } else {
                None
            };
            layers.push((weight, bias));
        }
        Ok(Self { layers })
    }

    /// The layers as given: `(weight [out, in], bias)` each.
    pub fn from_layers(layers: Vec<(Tensor, Option<Tensor>)>) -> Self {
        Self { layers }
    }

    /// One linear layer `w` of shape [outputs, hidden].
    pub fn linear(
        ctx: &HeadContext,
        w: &VarBuilder,
        outputs: i64,
        bias: bool,
    ) -> Result<Self, LoadError> {
        Self::load(
            ctx,
            std::slice::from_ref(w),
            &[ctx.config.hidden_size, outputs],
            bias,
        )
    }

    /// `Sequential` children `0, 2, 4, ...` of `w` (the ReLUs at the odd indices hold no
    /// weights) through the widths `dims`.
    pub fn sequential(
        ctx: &HeadContext,
        w: &VarBuilder,
        dims: &[i64],
        bias: bool,
    ) -> Result<Self, LoadError> {
        let scopes: Vec<VarBuilder> = (0..dims.len() - 1).map(|k| w.pp(2 * k)).collect();
        Self::load(ctx, &scopes, dims, bias)
    }
}

impl RewardHead for Mlp {
    fn forward(&self, hidden: &Tensor) -> Tensor {
        let mut x = hidden.shallow_clone();
        for (k, (weight, bias)) in self.layers.iter().enumerate() {
            if k > 0 {
                x = x.relu();
            }
            x = x.linear(weight, bias.as_ref());
        }
        x.to_kind(Kind::Float)
    }
}

/// An integer field of config.json, `default` when absent.
fn int_or(ctx: &HeadContext, field: &str, default: i64) -> Result<i64, LoadError> {
    Ok(super::config::ConfigJson(ctx.json)
        .optional_int(field)?
        .unwrap_or(default))
}
