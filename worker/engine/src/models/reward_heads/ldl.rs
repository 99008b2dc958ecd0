//! LDL-Reward (ShikaiChen/LDL-Reward-Gemma-2-27B-v0.1, `LDLRewardModel27B` of
//! rewardbench/models/ldlreward.py in rewardbench 0.1.4): a label-distribution head on a Gemma 2
//! body, read at `argmax(ids == pad) - 1` (`Pooled::FirstPadMinusOne`), in float32
//! (`from_pretrained` calls `.float()` on both head networks; the forward runs them under a float32
//! autocast).
//!
//! * `regression_layer` (`MultiOutputNN`): `Linear` layers at `network.0, 2, 4, ...` with
//!   `LeakyReLU` (slope 0.01) between them, its output viewed as `[n, groups, 10]` and softmaxed
//!   over the last axis: one distribution over 10 bins per objective group.
//! * `gating_layer` (`GatingNN`): `Linear, LeakyReLU, Dropout` per hidden layer (indices step by 3),
//!   then a final `Linear` to `groups` weights, softmaxed at config.json `temperature` only when
//!   config.json `softmax` is true (both `config_dict.get` defaults: 1.0, false).
//! * `score = sum_b (weights @ distributions)[b] * linspace(0, 1, 10)[b]`; `logits = score`, a
//!   `[batch]` tensor, so RewardBench stores one float per row.
//!
//! The package builds both networks with widths it does not take from config.json (4096, 4096);
//! herd reads every width from the tensors. The heads are NOT in the model's safetensors: the
//! package's `save_pretrained` writes them with `torch.save` as `regression_layer.pt` and
//! `gating_layer.pt` (each a `state_dict()`, names without the layer's prefix) beside the body
//! (whose tensor names carry no `model.` prefix: it saves the `Gemma2Model` alone); herd reads
//! them as they are ([`crate::torch_save`]), each under its layer's scope.

use std::path::{Path, PathBuf};

use serde_json::Value;
use tch::{Kind, Tensor};

use super::{HeadContext, RewardHead};
use crate::error::LoadError;
use crate::weights::VarBuilder;

/// The RewardBench model name (REWARD_MODEL_CONFIG key) of LDL-Reward.
pub const NAME: &str = "ShikaiChen/LDL-Reward-Gemma-2-27B-v0.1";

/// The side files, by the scope their tensors are renamed under.
pub const SIDE_FILES: [&str; 2] = ["regression_layer", "gating_layer"];

/// The bins of each objective's distribution (`x.view(x.size(0), -1, 10)` in `MultiOutputNN`).
const BINS: i64 = 10;

/// The side files of the model folder `dir`, each with the scope its tensors go under, or an
/// error naming the one that is missing.
pub fn side_files(dir: &Path) -> Result<Vec<(&'static str, PathBuf)>, LoadError> {
    SIDE_FILES
        .iter()
        .map(|&side| {
            let path = dir.join(format!("{side}.pt"));
            if path.is_file() {
                Ok((side, path))
            } else {
                Err(LoadError::file(
                    path,
                    "missing: LDL-Reward's head is not in model.safetensors but in the \
                     regression_layer.pt and gating_layer.pt its package saves beside it",
                ))
            }
        })
        .collect()
}

/// `Linear` layers at `indices` of `w`'s `network`, their widths read from the tensors.
fn linears(
    ctx: &HeadContext,
    w: &VarBuilder,
    step: i64,
    input: i64,
) -> Result<Vec<(Tensor, Tensor)>, LoadError> {
    let network = w.pp("network");
    let mut layers = Vec::new();
    let mut width = input;
    let mut index = 0;
    while let Some(shape) = network.pp(index).shape("weight") {
        let [out, inp] = shape[..] else {
            return Err(LoadError::tensor(
                &format!("network.{index}.weight"),
                format!("shape {shape:?}: expected [out, in]"),
            ));
        };
        if inp != width || out <= 0 {
            return Err(LoadError::tensor(
                &format!("network.{index}.weight"),
                format!("shape {shape:?} does not take the previous layer's width {width}"),
            ));
        }
        let layer = network.pp(index);
        let weight = ctx.take(&layer, "weight", &[out, inp])?;
        let bias = ctx.take(&layer, "bias", &[out])?;
        layers.push((weight.to_kind(Kind::Float), bias.to_kind(Kind::Float)));
        width = out;
        index += step;
    }
    if layers.is_empty() {
        // `take` names the missing tensor in full
        let _ = network.pp(0).take("weight", &[-1, input])?;
    }
    Ok(layers)
}

/// `Linear` layers with LeakyReLU between each two.
fn forward(layers: &[(Tensor, Tensor)], x: &Tensor) -> Tensor {
    let mut x = x.shallow_clone();
    for (k, (weight, bias)) in layers.iter().enumerate() {
        if k > 0 {
            x = x.leaky_relu();
        }
        x = x.linear(weight, Some(bias));
    }
    x
}

/// See the module documentation.
pub struct LdlHead {
    regression: Vec<(Tensor, Tensor)>,
    gating: Vec<(Tensor, Tensor)>,
    /// `Some(temperature)` when the gate is softmaxed
    softmax: Option<f64>,
    groups: i64,
}

pub fn load(ctx: &HeadContext) -> Result<Box<dyn RewardHead>, LoadError> {
    let hidden = ctx.config.hidden_size;
    let regression = linears(ctx, &ctx.w.pp("regression_layer"), 2, hidden)?;
    let gating = linears(ctx, &ctx.w.pp("gating_layer"), 3, hidden)?;
    let objectives = regression.last().map_or(0, |(w, _)| w.size()[0]);
    let groups = gating.last().map_or(0, |(w, _)| w.size()[0]);
    if objectives != groups * BINS {
        return Err(LoadError::Config {
            field: "num_objectives".to_string(),
            reason: format!(
                "regression_layer gives {objectives} outputs but gating_layer weighs {groups} \
                 groups of {BINS} bins"
            ),
        });
    }
    if let Some(n) = super::super::config::ConfigJson(ctx.json).optional_int("num_objectives")? {
        if n != objectives {
            return Err(LoadError::Config {
                field: "num_objectives".to_string(),
                reason: format!("{n}, but regression_layer gives {objectives} outputs"),
            });
        }
    }
    let softmax = match ctx.json.get("softmax") {
        None | Some(Value::Null) | Some(Value::Bool(false)) => None,
        Some(Value::Bool(true)) => {
            Some(super::super::config::ConfigJson(ctx.json).float_or("temperature", 1.0)?)
        }
        Some(other) => {
            return Err(LoadError::Config {
                field: "softmax".to_string(),
                reason: format!("expected true or false, found {other}"),
            })
        }
    };
    if softmax.is_some_and(|t| t == 0.0 || !t.is_finite()) {
        return Err(LoadError::Config {
            field: "temperature".to_string(),
            reason: "must be a finite non-zero number".to_string(),
        });
    }
    Ok(Box::new(LdlHead {
        regression,
        gating,
        softmax,
        groups,
    }))
}

impl RewardHead for LdlHead {
    fn forward(&self, hidden: &Tensor) -> Tensor {
        let x = hidden.to_kind(Kind::Float);
        let n = x.size()[0];
        let distributions = forward(&self.regression, &x)
            .view([n, self.groups, BINS])
            .softmax(-1, Kind::Float);
        let mut weights = forward(&self.gating, &x);
        if let Some(temperature) = self.softmax {
            weights = (weights / temperature).softmax(1, Kind::Float);
        }
        let total = weights.unsqueeze(1).bmm(&distributions).squeeze_dim(1);
        let bins = Tensor::linspace(0.0, 1.0, BINS, (Kind::Float, x.device()));
        (total * bins).sum_dim_intlist(-1, true, Kind::Float)
    }
}
