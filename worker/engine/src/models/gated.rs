//! Gated multi-objective reward heads: a regression layer scores several objectives at the pooled
//! token, a gating network conditioned on the prompt weighs them.
//!
//! * ArmoRM (RLHFlow/ArmoRM-Llama3-8B-v0.1, class `LlamaForRewardModelWithGating`, the hub's
//!   remote code `modeling_custom.py`): `rewards = regression_layer(h)` (objectives, no bias),
//!   `gate = softmax(mlp(p) / temperature) * logit_scale` with ReLU between biased linear layers,
//!   `score = sum(gate * (rewards @ reward_transform_matrix))`. Everything runs in the model's
//!   dtype (the package loads it in bf16 and the remote code never upcasts).
//! * QRM (nicolinho/QRM-Llama3-8B and QRM-Llama3.1-8B, classes `LlamaForRewardModelWithGating3`
//!   and `LlamaForRewardModelWithGating31`, rewardbench/models/qrm.py): the regression layer
//!   gives `num_quantiles` per objective, the score reads their mean; the gating network is
//!   Linear (no bias) → ReLU → BatchNorm1d (eval: running statistics) per hidden layer; the head
//!   reads `hidden_states.float()` and `prompt_embedding.float()`, so it computes in float32
//!   (its weights upcast) whatever the backbone's dtype.
//!
//! `h` is the final-normed hidden state at the pooled token, `p` the one at the gate position:
//! the LAST occurrence in the sequence of the prompt-end pattern
//! `<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n` (Llama-3 ids
//! [`LLAMA3_GATE_PATTERN`], `find_token_for_gating` in both files), i.e. the `<|eot_id|>` that
//! closes the last user turn. A sequence without the pattern is an error, as in the reference
//! (`ValueError("Token pattern not found in the list.")`).

use serde_json::Value;
use tch::{Kind, Tensor};

use super::config::ConfigJson;
use super::heads::RewardHead;
use super::registry::HeadContext;
use crate::error::LoadError;
use crate::weights::VarBuilder;

/// `token_pattern` of ArmoRM's and QRM's `find_token_for_gating`:
/// `<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n` in the Llama-3 tokenizer.
pub const LLAMA3_GATE_PATTERN: [u32; 5] = [128009, 128006, 78191, 128007, 271];

/// BatchNorm1d's default `eps`.
const BATCH_NORM_EPS: f64 = 1e-5;

/// The gated reward models herd runs, by their `architectures` class.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GatedKind {
    /// `LlamaForRewardModelWithGating` (ArmoRM)
    ArmoRm,
    /// `LlamaForRewardModelWithGating3` (QRM-Llama3-8B)
    Qrm3,
    /// `LlamaForRewardModelWithGating31` (QRM-Llama3.1-8B)
    Qrm31,
}

impl GatedKind {
    pub const ALL: [GatedKind; 3] = [GatedKind::ArmoRm, GatedKind::Qrm3, GatedKind::Qrm31];

    /// The transformers class in config.json's `architectures`.
    pub fn class(self) -> &'static str {
        match self {
            GatedKind::ArmoRm => "LlamaForRewardModelWithGating",
            GatedKind::Qrm3 => "LlamaForRewardModelWithGating3",
            GatedKind::Qrm31 => "LlamaForRewardModelWithGating31",
        }
    }

    pub fn of_class(class: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|kind| kind.class() == class)
    }

    fn quantiles(self) -> bool {
        self != GatedKind::ArmoRm
    }
}

/// Where the gate reads: the start of the last occurrence of `pattern` in `ids`.
pub fn gate_position(ids: &[u32], pattern: &[u32]) -> Option<usize> {
    if pattern.is_empty() || ids.len() < pattern.len() {
        return None;
    }
    (0..=ids.len() - pattern.len())
        .rev()
        .find(|&j| ids[j..j + pattern.len()] == *pattern)
}

/// The gating network's shape from config.json (the remote code's `config_dict.get` defaults).
#[derive(Clone, Debug, PartialEq)]
pub struct GatedConfig {
    pub kind: GatedKind,
    pub num_objectives: i64,
    /// 1 for ArmoRM (one reward per objective)
    pub num_quantiles: i64,
    pub temperature: f64,
    pub hidden_dim: i64,
    pub n_hidden: i64,
}

impl GatedConfig {
    pub fn of(kind: GatedKind, json: &Value) -> Result<Self, LoadError> {
        let json = ConfigJson(json);
        let positive = |field: &str, value: i64| {
            if value > 0 {
                Ok(value)
            } else {
                Err(LoadError::Config {
                    field: field.to_string(),
                    reason: format!("{value}: must be positive"),
                })
            }
        };
        let num_objectives = json.optional_int("num_objectives")?.unwrap_or(19);
        let num_quantiles = if kind.quantiles() {
            json.int("num_quantiles")?
        } else {
            1
        };
        let hidden_dim = json.optional_int("gating_hidden_dim")?.unwrap_or(1024);
        let n_hidden = json.optional_int("gating_n_hidden")?.unwrap_or(3);
        let temperature = json.float_or("gating_temperature", 10.0)?;
        if temperature == 0.0 || !temperature.is_finite() {
            return Err(LoadError::Config {
                field: "gating_temperature".to_string(),
                reason: format!("{temperature}: must be a finite non-zero number"),
            });
        }
        if n_hidden < 0 {
            return Err(LoadError::Config {
                field: "gating_n_hidden".to_string(),
                reason: format!("{n_hidden}: must not be negative"),
            });
        }
        Ok(Self {
            kind,
            num_objectives: positive("num_objectives", num_objectives)?,
            num_quantiles: positive("num_quantiles", num_quantiles)?,
            temperature,
            hidden_dim: positive("gating_hidden_dim", hidden_dim)?,
            n_hidden,
        })
    }
}

struct Linear {
    weight: Tensor,
    bias: Option<Tensor>,
}

impl Linear {
    fn load(
        w: &VarBuilder,
        out: i64,
        input: i64,
        bias: bool,
        kind: Kind,
    ) -> Result<Self, LoadError> {
        let weight = w.take("weight", &[out, input])?.to_kind(kind);
        let bias = match bias {
            true => Some(w.take("bias", &[out])?.to_kind(kind)),
            false => None,
        };
        Ok(Self { weight, bias })
    }

    fn forward(&self, x: &Tensor) -> Tensor {
        x.linear(&self.weight, self.bias.as_ref())
    }
}

/// `nn.BatchNorm1d` in eval mode: the running statistics, not the batch's.
struct BatchNorm {
    weight: Tensor,
    bias: Tensor,
    mean: Tensor,
    var: Tensor,
}

impl BatchNorm {
    fn load(w: &VarBuilder, width: i64, kind: Kind) -> Result<Self, LoadError> {
        let take = |name: &str| Ok::<_, LoadError>(w.take(name, &[width])?.to_kind(kind));
        // the training step counter: only used in training mode (momentum None)
        let _ = w.take("num_batches_tracked", &[])?;
        Ok(Self {
            weight: take("weight")?,
            bias: take("bias")?,
            mean: take("running_mean")?,
            var: take("running_var")?,
        })
    }

    fn forward(&self, x: &Tensor) -> Tensor {
        x.batch_norm(
            Some(&self.weight),
            Some(&self.bias),
            Some(&self.mean),
            Some(&self.var),
            false,
            0.1,
            BATCH_NORM_EPS,
            false,
        )
    }
}

/// `GatingNetwork`: hidden layers, then a biased output layer, a softmax at `temperature`,
/// times the learned `logit_scale`.
struct GatingNetwork {
    hidden: Vec<(Linear, Option<BatchNorm>)>,
    output: Linear,
    temperature: f64,
    logit_scale: Tensor,
}

impl GatingNetwork {
    /// ArmoRM's `layers` are `Linear` (biased) only, ReLU applied in `forward`; QRM's are
    /// `Linear(bias=False), ReLU, BatchNorm1d` per hidden layer, so its indices step by 3.
    fn load(
        config: &GatedConfig,
        input: i64,
        w: &VarBuilder,
        kind: Kind,
    ) -> Result<Self, LoadError> {
        let layers = w.pp("layers");
        let batch_norm = config.kind.quantiles();
        let step = if batch_norm { 3 } else { 1 };
        let mut hidden = Vec::new();
        let mut width = input;
        for i in 0..config.n_hidden {
            let linear = Linear::load(
                &layers.pp(i * step),
                config.hidden_dim,
                width,
                !batch_norm,
                kind,
            )?;
            let norm = match batch_norm {
                true => Some(BatchNorm::load(
                    &layers.pp(i * step + 2),
                    config.hidden_dim,
                    kind,
                )?),
                false => None,
            };
            hidden.push((linear, norm));
            width = config.hidden_dim;
        }
        let output = Linear::load(
            &layers.pp(config.n_hidden * step),
            config.num_objectives,
            width,
            true,
            kind,
        )?;
        let logit_scale = w.take("logit_scale", &[1])?.to_kind(kind);
        Ok(Self {
            hidden,
            output,
            temperature: config.temperature,
            logit_scale,
        })
    }

    fn forward(&self, x: &Tensor) -> Tensor {
        let mut x = x.shallow_clone();
        for (linear, norm) in &self.hidden {
            x = linear.forward(&x).relu();
            if let Some(norm) = norm {
                x = norm.forward(&x);
            }
        }
        let x = self.output.forward(&x) / self.temperature;
        x.softmax(1, x.kind()) * &self.logit_scale
    }
}

/// ArmoRM's and QRM's head: see the module documentation.
pub struct GatedHead {
    config: GatedConfig,
    regression: Tensor,
    gating: GatingNetwork,
    transform: Tensor,
    /// the dtype the head computes in
    kind: Kind,
    pattern: Vec<u32>,
}

impl GatedHead {
    /// `regression_layer`, `gating` and `reward_transform_matrix` at the checkpoint's root,
    /// computing in float32 when `float32` is set, else in the dtype the weights were loaded in
    /// (the backbone's).
    pub fn load(
        config: &GatedConfig,
        hidden_size: i64,
        w: &VarBuilder,
        float32: bool,
    ) -> Result<Self, LoadError> {
        let outputs = config.num_objectives * config.num_quantiles;
        let regression = w
            .pp("regression_layer")
            .take("weight", &[outputs, hidden_size])?;
        let kind = if float32 {
            Kind::Float
        } else {
            regression.kind()
        };
        let regression = regression.to_kind(kind);
        let gating = GatingNetwork::load(config, hidden_size, &w.pp("gating"), kind)?;
        let k = config.num_objectives;
        let transform = w.take("reward_transform_matrix", &[k, k])?.to_kind(kind);
        Ok(Self {
            config: config.clone(),
            regression,
            gating,
            transform,
            kind,
            pattern: LLAMA3_GATE_PATTERN.to_vec(),
        })
    }

    /// Per-objective rewards [n, objectives]: QRM's is the mean over its quantiles
    /// (`rewards.float().mean(dim=2)`).
    fn objective_rewards(&self, hidden: &Tensor) -> Tensor {
        let rewards = hidden
            .to_kind(self.kind)
            .linear(&self.regression, None::<Tensor>);
        if !self.config.kind.quantiles() {
            return rewards;
        }
        rewards
            .view([-1, self.config.num_objectives, self.config.num_quantiles])
            .mean_dim(2, false, self.kind)
    }
}

impl RewardHead for GatedHead {
    fn forward(&self, hidden: &Tensor) -> Tensor {
        // without its gate position the head has no score: NaN rows, which the scorer and the
        // coordinator refuse, rather than a plausible score gated at the wrong token (only a
        // caller that ignores `gate_position` gets here; `SequenceClassifier` never does)
        Tensor::full(
            [hidden.size()[0], 1],
            f64::NAN,
            (Kind::Float, hidden.device()),
        )
    }

    fn gate_position(&self, ids: &[u32]) -> Result<Option<usize>, String> {
        match gate_position(ids, &self.pattern) {
            Some(position) => Ok(Some(position)),
            None => Err(format!(
                "{} reads its gate at the last prompt-end token pattern {:?} \
                 (`<|eot_id|><|start_header_id|>assistant<|end_header_id|>\\n\\n` in the Llama-3 \
                 tokenizer), which is not among the sequence's {} tokens (not the Llama-3 chat \
                 template, or truncated away)",
                self.config.kind.class(),
                self.pattern,
                ids.len()
            )),
        }
    }

    fn forward_gated(&self, hidden: &Tensor, gate: &Tensor) -> Tensor {
        let rewards = self.objective_rewards(hidden).matmul(&self.transform);
        let weights = self.gating.forward(&gate.to_kind(self.kind));
        (weights * rewards)
            .sum_dim_intlist(1, true, self.kind)
            .to_kind(Kind::Float)
    }
}

/// The registry's head loader for ArmoRM (`LlamaForRewardModelWithGating`).
pub fn load_armorm(ctx: &HeadContext) -> Result<Box<dyn RewardHead>, LoadError> {
    load_head(GatedKind::ArmoRm, ctx)
}

/// The registry's head loader for QRM-Llama3 (`LlamaForRewardModelWithGating3`).
pub fn load_qrm3(ctx: &HeadContext) -> Result<Box<dyn RewardHead>, LoadError> {
    load_head(GatedKind::Qrm3, ctx)
}

/// The registry's head loader for QRM-Llama3.1 (`LlamaForRewardModelWithGating31`).
pub fn load_qrm31(ctx: &HeadContext) -> Result<Box<dyn RewardHead>, LoadError> {
    load_head(GatedKind::Qrm31, ctx)
}

fn load_head(kind: GatedKind, ctx: &HeadContext) -> Result<Box<dyn RewardHead>, LoadError> {
    let config = GatedConfig::of(kind, ctx.json)?;
    Ok(Box::new(GatedHead::load(
        &config,
        ctx.config.hidden_size,
        ctx.w,
        ctx.float32,
    )?))
}

/// What the three classes' pipelines do around the forward pass (rewardbench/models/__init__.py
/// REWARD_MODEL_CONFIG and the pipelines named there).
pub mod quirks {
    use super::super::registry::{Appends, DoubleBos, HeadDtype, Output, Pooled, Quirks};

    /// ArmoRMPipeline: the tokenizer's batch forwarded as is (a duplicated BOS included), the
    /// remote code's own `argmax(ids == pad) - 1` pooling, `outputs.logits` of shape [B], the
    /// head in the model's dtype (REWARD_MODEL_CONFIG: bfloat16).
    pub const ARMORM: Quirks = Quirks {
        pooled: Pooled::FirstPadMinusOne,
        negate: false,
        output: Output::Scalar,
        head_dtype: HeadDtype::Model,
        double_bos: DoubleBos::Forwarded,
        dtype: Some("bfloat16"),
        appends: Appends::Nothing,
    };

    /// RewardBenchPipeline (double BOS masked) over qrm.py's forward: the same pooling rule,
    /// logits [B, 1], the head on `.float()` hidden states. REWARD_MODEL_CONFIG says bfloat16 but
    /// the classes' own `from_pretrained` drops the `torch_dtype` it is given.
    pub const QRM: Quirks = Quirks {
        pooled: Pooled::FirstPadMinusOne,
        negate: false,
        output: Output::Row,
        head_dtype: HeadDtype::Float32,
        double_bos: DoubleBos::Masked,
        dtype: Some("bfloat16"),
        appends: Appends::Nothing,
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_gate_reads_the_last_occurrence_of_the_pattern() {
        let p = LLAMA3_GATE_PATTERN;
        let mut ids = vec![128000, 128006, 882, 128007, 271, 10, 11];
        ids.extend(p);
        ids.extend([20, 21]);
        assert_eq!(gate_position(&ids, &p), Some(7));
        // a second (later) assistant turn wins
        let second = ids.len();
        ids.extend(p);
        ids.push(30);
        assert_eq!(gate_position(&ids, &p), Some(second));
        // the pattern ending the sequence still counts
        assert_eq!(gate_position(&ids[..second + 5], &p), Some(second));
        // missing, cut, or a sequence shorter than the pattern
        assert_eq!(gate_position(&ids[..11], &p), None);
        assert_eq!(gate_position(&[128009, 128006], &p), None);
        assert_eq!(gate_position(&[], &p), None);
    }

    #[test]
    fn classes_and_config_defaults() {
        for kind in GatedKind::ALL {
            assert_eq!(GatedKind::of_class(kind.class()), Some(kind));
        }
        assert_eq!(GatedKind::of_class("LlamaForSequenceClassification"), None);
        let armo = GatedConfig::of(GatedKind::ArmoRm, &serde_json::json!({})).unwrap();
        assert_eq!(
            (
                armo.num_objectives,
                armo.num_quantiles,
                armo.hidden_dim,
                armo.n_hidden
            ),
            (19, 1, 1024, 3)
        );
        assert_eq!(armo.temperature, 10.0);
        // QRM needs its quantile count
        let error = GatedConfig::of(GatedKind::Qrm31, &serde_json::json!({}))
            .unwrap_err()
            .to_string();
        assert!(error.contains("num_quantiles"), "{error}");
        let error = GatedConfig::of(
            GatedKind::ArmoRm,
            &serde_json::json!({"gating_temperature": 0}),
        )
        .unwrap_err()
        .to_string();
        assert!(error.contains("gating_temperature"), "{error}");
    }
}
