//! The LLaMA sizes EasyLM trains (hamishivi/EasyLM `LLAMA_STANDARD_CONFIGS`) and the model
//! config resolved for a checkpoint: size table (given or recognised from the shapes), cross-checked
//! against the shapes, then the user's overrides.
//!
//! Decisions (shared/reference/easylm-and-peers.md A4): rope_theta 10000 for LLaMA-1/2 sizes (the
//! fork's converter wrote 100000 by mistake since 2024-06), rms_norm_eps as EasyLM trained (1e-6
//! for 1b..30b incl. 7B/13B, 1e-5 for 65b/70b), pad_token_id set (0 = `<unk>` for LLaMA-1/2 as the
//! Tulu runs padded, 128255 for LLaMA-3 as the fork's tokenizer writer does), bos/eos of the
//! family's tokenizer, max_position_embeddings 4096 (LLaMA-1/2), 8192 (LLaMA-3), 131072 with llama3
//! rope scaling (LLaMA-3.1). Every one of them can be overridden.
//!
//! [`Compat::Converter2024`] (`--easylm-compat converter-2024`) gives LLaMA-1/2 sizes the config
//! the fork's `convert_easylm_to_hf.py` wrote instead: `rope_theta=params.get("rope_theta",
//! 100000)` since d0d987a (2024-06-26) and `max_position_embeddings=params.get(..., 8192)` since
//! 2024-08 (HEAD dbf2212). The 2024 sweeps' reward models were scored through that converter, so
//! reproducing their numbers needs it; 10000 stays the default because it is what EasyLM trained
//! with (`LLaMAConfig.rope_theta`).

use serde_json::{json, Map, Value};

use super::EasyLmError;
use crate::models::config::{Biases, DecoderConfig, RopeScaling};
use crate::models::HeadKind;

#[derive(Clone, Copy, Debug, PartialEq)]
pub struct SizeSpec {
    pub name: &'static str,
    pub hidden: i64,
    pub intermediate: i64,
    pub layers: i64,
    pub heads: i64,
    pub kv_heads: i64,
    pub rms_norm_eps: f64,
    pub vocab: i64,
    pub family: Family,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Family {
    Llama2,
    Llama3,
    Llama31,
}

/// Whose defaults a LLaMA-1/2 size gets where EasyLM's training and the fork's converter
/// disagree (rope_theta, max_position_embeddings); LLaMA-3 sizes are the same under both.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Compat {
    /// as EasyLM trained: rope_theta 10000, max_position_embeddings 4096
    #[default]
    Training,
    /// as the fork's converter wrote from 2024: rope_theta 100000, max_position_embeddings 8192
    Converter2024,
}

impl std::str::FromStr for Compat {
    type Err = String;

    /// `training` (or empty) and `converter-2024`.
    fn from_str(text: &str) -> Result<Self, String> {
        match text.trim() {
            "" | "training" => Ok(Self::Training),
            "converter-2024" => Ok(Self::Converter2024),
            other => Err(format!(
                "EasyLM compat {other:?}: expected `training` (rope_theta 10000, as EasyLM \
                 trained LLaMA-1/2) or `converter-2024` (rope_theta 100000 and \
                 max_position_embeddings 8192, as the fork's convert_easylm_to_hf wrote them)"
            )),
        }
    }
}

impl std::fmt::Display for Compat {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Training => "training",
            Self::Converter2024 => "converter-2024",
        })
    }
}

impl Family {
    fn rope_theta(self, compat: Compat) -> f64 {
        match (self, compat) {
            (Self::Llama2, Compat::Training) => 10000.0,
            // hamishivi/EasyLM convert_easylm_to_hf.py: rope_theta=params.get("rope_theta", 100000)
            (Self::Llama2, Compat::Converter2024) => 100000.0,
            (Self::Llama3 | Self::Llama31, _) => 500000.0,
        }
    }

    fn max_position_embeddings(self, compat: Compat) -> i64 {
        match (self, compat) {
            (Self::Llama2, Compat::Training) => 4096,
            // convert_easylm_to_hf.py: max_position_embeddings=params.get(..., 8192)
            (Self::Llama2, Compat::Converter2024) => 8192,
            (Self::Llama3, _) => 8192,
            (Self::Llama31, _) => 131072,
        }
    }

    fn rope_scaling(self) -> RopeScaling {
        match self {
            Self::Llama31 => RopeScaling::Llama3 {
                factor: 8.0,
                low_freq_factor: 1.0,
                high_freq_factor: 4.0,
                original_max_position_embeddings: 8192.0,
            },
            _ => RopeScaling::None,
        }
    }

    /// (bos, eos, pad)
    fn token_ids(self) -> (i64, i64, i64) {
        match self {
            Self::Llama2 => (1, 2, 0),
            Self::Llama3 | Self::Llama31 => (128000, 128001, 128255),
        }
    }
}

#[allow(clippy::too_many_arguments)] // one row of the size table
const fn size(
    name: &'static str,
    hidden: i64,
    intermediate: i64,
    layers: i64,
    heads: i64,
    kv_heads: i64,
    rms_norm_eps: f64,
    vocab: i64,
    family: Family,
) -> SizeSpec {
    SizeSpec {
        name,
        hidden,
        intermediate,
        layers,
        heads,
        kv_heads,
        rms_norm_eps,
        vocab,
        family,
    }
}

use Family::{Llama2, Llama3, Llama31};

pub const SIZES: &[SizeSpec] = &[
    size("1b", 2048, 5504, 22, 16, 16, 1e-6, 32000, Llama2),
    size("3b", 3200, 8640, 26, 32, 32, 1e-6, 32000, Llama2),
    size("7b", 4096, 11008, 32, 32, 32, 1e-6, 32000, Llama2),
    size("13b", 5120, 13824, 40, 40, 40, 1e-6, 32000, Llama2),
    size("30b", 6656, 17920, 60, 52, 52, 1e-6, 32000, Llama2),
    size("65b", 8192, 22016, 80, 64, 64, 1e-5, 32000, Llama2),
    size("70b", 8192, 28672, 80, 64, 8, 1e-5, 32000, Llama2),
    size("8b3", 4096, 14336, 32, 32, 8, 1e-6, 128256, Llama3),
    size("70b3", 8192, 28672, 80, 64, 8, 1e-5, 128256, Llama3),
    size("8b31", 4096, 14336, 32, 32, 8, 1e-6, 128256, Llama31),
    size("70b31", 8192, 28672, 80, 64, 8, 1e-5, 128256, Llama31),
];

pub fn size_names() -> String {
    SIZES.iter().map(|s| s.name).collect::<Vec<_>>().join(", ")
}

pub fn lookup(name: &str) -> Result<&'static SizeSpec, EasyLmError> {
    SIZES
        .iter()
        .find(|s| s.name.eq_ignore_ascii_case(name))
        .ok_or_else(|| {
            EasyLmError::Config(format!(
                "unknown size {name:?} (known: {}; or leave --size out and pass --num-heads for another shape)",
                size_names()
            ))
        })
}

/// Flags that replace what the size table (or the defaults) would give.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Overrides {
    pub num_heads: Option<i64>,
    pub num_kv_heads: Option<i64>,
    /// accept a vocabulary other than the size's (must equal the embedding's rows)
    pub vocab_size: Option<i64>,
    pub rope_theta: Option<f64>,
    pub rms_norm_eps: Option<f64>,
    pub max_position_embeddings: Option<i64>,
    pub rope_scaling: Option<RopeScaling>,
    pub pad_token_id: Option<i64>,
    pub bos_token_id: Option<i64>,
    pub eos_token_id: Option<i64>,
    /// the defaults of LLaMA-1/2 sizes (the explicit values above win over it)
    pub compat: Compat,
}

/// What the checkpoint's shapes say (see `checkpoint::Inventory`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Shapes {
    pub vocab: i64,
    pub hidden: i64,
    pub intermediate: i64,
    pub layers: i64,
    /// columns of wq / wk
    pub q_dim: i64,
    pub kv_dim: i64,
    pub head: HeadKind,
    /// columns of score.kernel (reward models)
    pub num_labels: i64,
}

/// The model config of an EasyLM LLaMA checkpoint.
#[derive(Clone, Debug, PartialEq)]
pub struct ModelConfig {
    /// the size table entry used, if any
    pub size: Option<&'static str>,
    pub vocab_size: i64,
    pub hidden_size: i64,
    pub intermediate_size: i64,
    pub num_layers: i64,
    pub num_heads: i64,
    pub num_kv_heads: i64,
    pub head_dim: i64,
    pub rms_norm_eps: f64,
    pub rope_theta: f64,
    pub rope_scaling: RopeScaling,
    pub max_position_embeddings: i64,
    pub bos_token_id: i64,
    pub eos_token_id: i64,
    pub pad_token_id: i64,
    pub head: HeadKind,
    pub num_labels: i64,
}

fn config_error(reason: String) -> EasyLmError {
    EasyLmError::Config(reason)
}

/// Sizes whose shapes are exactly those of the checkpoint.
fn recognise(shapes: &Shapes, overrides: &Overrides) -> Vec<&'static SizeSpec> {
    SIZES
        .iter()
        .filter(|s| {
            let head_dim = s.hidden / s.heads;
            s.hidden == shapes.hidden
                && s.intermediate == shapes.intermediate
                && s.layers == shapes.layers
                && s.hidden == shapes.q_dim
                && s.kv_heads * head_dim == shapes.kv_dim
                && (s.vocab == shapes.vocab || overrides.vocab_size == Some(shapes.vocab))
        })
        .collect()
}

fn describe(shapes: &Shapes) -> String {
    format!(
        "hidden {}, intermediate {}, {} layers, vocab {}, wq {} / wk {} columns",
        shapes.hidden,
        shapes.intermediate,
        shapes.layers,
        shapes.vocab,
        shapes.q_dim,
        shapes.kv_dim
    )
}

/// Settles the config: the size (`size`, or the one entry of the table the shapes match), checked
/// against the shapes, then `overrides`.
pub fn resolve(
    shapes: &Shapes,
    size: Option<&str>,
    overrides: &Overrides,
) -> Result<ModelConfig, EasyLmError> {
    let spec = match size {
        Some(name) => Some(lookup(name)?),
        None => {
            let matches = recognise(shapes, overrides);
            match matches.as_slice() {
                [] => None,
                [one] => Some(*one),
                many => {
                    return Err(config_error(format!(
                        "the shapes ({}) fit sizes {}; pass --size to choose (they differ in rope settings)",
                        describe(shapes),
                        many.iter().map(|s| s.name).collect::<Vec<_>>().join(" and ")
                    )))
                }
            }
        }
    };
    if let Some(spec) = spec {
        check_against_size(shapes, spec, overrides)?;
    } else if overrides.num_heads.is_none() {
        return Err(config_error(format!(
            "the shapes ({}) match no size in the table ({}); pass --size, or --num-heads (plus \
             --rope-theta, --rms-norm-eps, ... where EasyLM's defaults 10000 and 1e-6 do not apply)",
            describe(shapes),
            size_names()
        )));
    }
    if let Some(vocab) = overrides.vocab_size {
        if vocab != shapes.vocab {
            return Err(config_error(format!(
                "--vocab-size {vocab} but transformer.wte.embedding has {} rows",
                shapes.vocab
            )));
        }
    }

    let num_heads = overrides
        .num_heads
        .or(spec.map(|s| s.heads))
        .unwrap_or_default();
    if num_heads <= 0 || shapes.q_dim % num_heads != 0 {
        return Err(config_error(format!(
            "{num_heads} attention heads do not divide wq's {} columns",
            shapes.q_dim
        )));
    }
    let head_dim = shapes.q_dim / num_heads;
    if head_dim % 2 != 0 {
        return Err(config_error(format!(
            "head size {head_dim} (wq columns {} / {num_heads} heads) is odd; rotary needs pairs",
            shapes.q_dim
        )));
    }
    let num_kv_heads = match overrides.num_kv_heads.or(spec.map(|s| s.kv_heads)) {
        Some(n) => n,
        None => shapes.kv_dim / head_dim,
    };
    if num_kv_heads <= 0 || num_kv_heads * head_dim != shapes.kv_dim {
        return Err(config_error(format!(
            "{num_kv_heads} key/value heads of size {head_dim} need {} wk columns; the checkpoint has {}",
            num_kv_heads * head_dim,
            shapes.kv_dim
        )));
    }
    if num_heads % num_kv_heads != 0 {
        return Err(config_error(format!(
            "{num_kv_heads} key/value heads do not divide {num_heads} attention heads"
        )));
    }
    let family = spec.map_or(Family::Llama2, |s| s.family);
    let (bos, eos, pad) = family.token_ids();
    let config = ModelConfig {
        size: spec.map(|s| s.name),
        vocab_size: shapes.vocab,
        hidden_size: shapes.hidden,
        intermediate_size: shapes.intermediate,
        num_layers: shapes.layers,
        num_heads,
        num_kv_heads,
        head_dim,
        // EasyLM's LLaMAConfig defaults for shapes outside the table
        rms_norm_eps: overrides
            .rms_norm_eps
            .unwrap_or(spec.map_or(1e-6, |s| s.rms_norm_eps)),
        rope_theta: overrides
            .rope_theta
            .unwrap_or(family.rope_theta(overrides.compat)),
        rope_scaling: overrides
            .rope_scaling
            .clone()
            .unwrap_or(family.rope_scaling()),
        max_position_embeddings: overrides
            .max_position_embeddings
            .unwrap_or(family.max_position_embeddings(overrides.compat)),
        bos_token_id: overrides.bos_token_id.unwrap_or(bos),
        eos_token_id: overrides.eos_token_id.unwrap_or(eos),
        pad_token_id: overrides.pad_token_id.unwrap_or(pad),
        head: shapes.head,
        num_labels: shapes.num_labels,
    };
    config
        .decoder_config()
        .validate()
        .map_err(|e| config_error(e.to_string()))?;
    Ok(config)
}

fn check_against_size(
    shapes: &Shapes,
    spec: &SizeSpec,
    overrides: &Overrides,
) -> Result<(), EasyLmError> {
    let mismatch = |what: &str, tensor: &str, found: i64, expected: i64| {
        config_error(format!(
            "size {} has {what} {expected} but {tensor} says {found}; pick the right --size, or leave it \
             out and pass --num-heads to convert this shape as it is",
            spec.name
        ))
    };
    if shapes.hidden != spec.hidden {
        return Err(mismatch(
            "hidden_size",
            "transformer.wte.embedding (columns)",
            shapes.hidden,
            spec.hidden,
        ));
    }
    if shapes.layers != spec.layers {
        return Err(mismatch(
            "num_hidden_layers",
            "the count of transformer.h.N layers",
            shapes.layers,
            spec.layers,
        ));
    }
    if shapes.intermediate != spec.intermediate {
        return Err(mismatch(
            "intermediate_size",
            "transformer.h.0.feed_forward.w1.kernel (columns)",
            shapes.intermediate,
            spec.intermediate,
        ));
    }
    if shapes.q_dim != spec.hidden {
        return Err(mismatch(
            "attention width",
            "transformer.h.0.attention.wq.kernel (columns)",
            shapes.q_dim,
            spec.hidden,
        ));
    }
    let kv_heads = overrides.num_kv_heads.unwrap_or(spec.kv_heads);
    let heads = overrides.num_heads.unwrap_or(spec.heads);
    if heads > 0 && shapes.kv_dim != kv_heads * (spec.hidden / heads) {
        return Err(mismatch(
            "key/value width",
            "transformer.h.0.attention.wk.kernel (columns)",
            shapes.kv_dim,
            kv_heads * (spec.hidden / heads),
        ));
    }
    if shapes.vocab != spec.vocab && overrides.vocab_size != Some(shapes.vocab) {
        return Err(config_error(format!(
            "size {} has vocab_size {} but transformer.wte.embedding has {} rows (an extended \
             vocabulary? pass --vocab-size {} to accept it)",
            spec.name, spec.vocab, shapes.vocab, shapes.vocab
        )));
    }
    Ok(())
}

impl ModelConfig {
    pub fn architecture(&self) -> &'static str {
        match self.head {
            HeadKind::SequenceClassification => "LlamaForSequenceClassification",
            HeadKind::CausalLm => "LlamaForCausalLM",
        }
    }

    /// The decoder shape the worker's libtorch model is built from; equal to what
    /// `models::llama::config` reads from the config.json [`Self::hf_config_json`] writes.
    pub fn decoder_config(&self) -> DecoderConfig {
        DecoderConfig {
            family: crate::models::Family::Llama,
            architecture: self.architecture().to_string(),
            vocab_size: self.vocab_size,
            hidden_size: self.hidden_size,
            intermediate_size: self.intermediate_size,
            num_layers: self.num_layers,
            num_heads: self.num_heads,
            num_kv_heads: self.num_kv_heads,
            head_dim: self.head_dim,
            rms_norm_eps: self.rms_norm_eps,
            rope_theta: self.rope_theta,
            rope_scaling: self.rope_scaling.clone(),
            biases: Biases {
                qkv: false,
                output: false,
                mlp: false,
            },
            tie_word_embeddings: false,
            max_position_embeddings: self.max_position_embeddings,
            attention_window: None,
            deberta: None,
            gemma2: None,
            pad_token_id: Some(self.pad_token_id),
            num_labels: match self.head {
                HeadKind::SequenceClassification => self.num_labels,
                // transformers' PretrainedConfig default; unused by a causal LM
                HeadKind::CausalLm => 2,
            },
            gpt: None,
            moe: None,
        }
    }

    /// config.json for transformers' `LlamaForSequenceClassification` / `LlamaForCausalLM`.
    pub fn hf_config_json(&self, torch_dtype: &str) -> Value {
        let mut config = Map::new();
        config.insert("architectures".into(), json!([self.architecture()]));
        config.insert("attention_bias".into(), json!(false));
        config.insert("attention_dropout".into(), json!(0.0));
        config.insert("bos_token_id".into(), json!(self.bos_token_id));
        config.insert("eos_token_id".into(), json!(self.eos_token_id));
        config.insert("head_dim".into(), json!(self.head_dim));
        config.insert("hidden_act".into(), json!("silu"));
        config.insert("hidden_size".into(), json!(self.hidden_size));
        if self.head == HeadKind::SequenceClassification {
            let id2label: Map<String, Value> = (0..self.num_labels)
                .map(|i| (i.to_string(), json!(format!("LABEL_{i}"))))
                .collect();
            let label2id: Map<String, Value> = (0..self.num_labels)
                .map(|i| (format!("LABEL_{i}"), json!(i)))
                .collect();
            config.insert("id2label".into(), Value::Object(id2label));
            config.insert("label2id".into(), Value::Object(label2id));
        }
        config.insert("initializer_range".into(), json!(0.02));
        config.insert("intermediate_size".into(), json!(self.intermediate_size));
        config.insert(
            "max_position_embeddings".into(),
            json!(self.max_position_embeddings),
        );
        config.insert("mlp_bias".into(), json!(false));
        config.insert("model_type".into(), json!("llama"));
        config.insert("num_attention_heads".into(), json!(self.num_heads));
        config.insert("num_hidden_layers".into(), json!(self.num_layers));
        config.insert("num_key_value_heads".into(), json!(self.num_kv_heads));
        config.insert("pad_token_id".into(), json!(self.pad_token_id));
        config.insert("pretraining_tp".into(), json!(1));
        config.insert("rms_norm_eps".into(), json!(self.rms_norm_eps));
        config.insert("rope_scaling".into(), rope_scaling_json(&self.rope_scaling));
        config.insert("rope_theta".into(), json!(self.rope_theta));
        config.insert("tie_word_embeddings".into(), json!(false));
        config.insert("torch_dtype".into(), json!(torch_dtype));
        config.insert("use_cache".into(), json!(true));
        config.insert("vocab_size".into(), json!(self.vocab_size));
        Value::Object(config)
    }
}

fn rope_scaling_json(scaling: &RopeScaling) -> Value {
    match scaling {
        RopeScaling::None => Value::Null,
        RopeScaling::Linear { factor } => json!({"factor": factor, "rope_type": "linear"}),
        RopeScaling::Llama3 {
            factor,
            low_freq_factor,
            high_freq_factor,
            original_max_position_embeddings,
        } => json!({
            "factor": factor,
            "high_freq_factor": high_freq_factor,
            "low_freq_factor": low_freq_factor,
            "original_max_position_embeddings": *original_max_position_embeddings as i64,
            "rope_type": "llama3",
        }),
    }
}

/// `--rope-scaling`: `none`, or transformers' JSON object (`{"rope_type": "llama3", ...}`).
pub fn parse_rope_scaling(text: &str) -> Result<RopeScaling, String> {
    if text.eq_ignore_ascii_case("none") {
        return Ok(RopeScaling::None);
    }
    let value: Value = serde_json::from_str(text)
        .map_err(|e| format!("not JSON ({e}); expected none or {{...}}"))?;
    let wrapped = json!({ "rope_scaling": value });
    crate::models::config::ConfigJson(&wrapped)
        .rope_scaling()
        .map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shapes_of(spec: &SizeSpec) -> Shapes {
        Shapes {
            vocab: spec.vocab,
            hidden: spec.hidden,
            intermediate: spec.intermediate,
            layers: spec.layers,
            q_dim: spec.hidden,
            kv_dim: spec.kv_heads * spec.hidden / spec.heads,
            head: HeadKind::SequenceClassification,
            num_labels: 1,
        }
    }

    #[test]
    fn recognises_sizes_from_shapes() {
        let none = Overrides::default();
        for name in ["1b", "7b", "13b", "70b", "65b"] {
            let spec = lookup(name).unwrap();
            let config = resolve(&shapes_of(spec), None, &none).unwrap();
            assert_eq!(config.size, Some(name));
        }
        let thirteen = resolve(&shapes_of(lookup("13b").unwrap()), None, &none).unwrap();
        assert_eq!(thirteen.rope_theta, 10000.0);
        assert_eq!(thirteen.rms_norm_eps, 1e-6);
        assert_eq!(thirteen.pad_token_id, 0);
        assert_eq!(thirteen.head_dim, 128);
        let seventy = resolve(&shapes_of(lookup("70b").unwrap()), None, &none).unwrap();
        assert_eq!((seventy.num_heads, seventy.num_kv_heads), (64, 8));
        assert_eq!(seventy.rms_norm_eps, 1e-5);
        // 8b3 and 8b31 share shapes
        let err = resolve(&shapes_of(lookup("8b3").unwrap()), None, &none).unwrap_err();
        assert!(err.to_string().contains("8b3 and 8b31"), "{err}");
        let llama31 = resolve(&shapes_of(lookup("8b31").unwrap()), Some("8b31"), &none).unwrap();
        assert!(matches!(llama31.rope_scaling, RopeScaling::Llama3 { .. }));
        assert_eq!(llama31.rope_theta, 500000.0);
    }

    #[test]
    fn size_must_fit_shapes() {
        let mut shapes = shapes_of(lookup("7b").unwrap());
        let err = resolve(&shapes, Some("13b"), &Overrides::default()).unwrap_err();
        assert!(err.to_string().contains("hidden_size 5120"), "{err}");
        shapes.vocab = 32001;
        let err = resolve(&shapes, Some("7b"), &Overrides::default()).unwrap_err();
        assert!(err.to_string().contains("--vocab-size 32001"), "{err}");
        let accepted = Overrides {
            vocab_size: Some(32001),
            ..Overrides::default()
        };
        assert_eq!(
            resolve(&shapes, Some("7b"), &accepted).unwrap().vocab_size,
            32001
        );
        assert_eq!(resolve(&shapes, None, &accepted).unwrap().size, Some("7b"));
    }

    #[test]
    fn custom_shapes_need_heads() {
        let shapes = Shapes {
            vocab: 96,
            hidden: 32,
            intermediate: 64,
            layers: 2,
            q_dim: 32,
            kv_dim: 16,
            head: HeadKind::SequenceClassification,
            num_labels: 1,
        };
        let err = resolve(&shapes, None, &Overrides::default()).unwrap_err();
        assert!(err.to_string().contains("--num-heads"), "{err}");
        let heads = Overrides {
            num_heads: Some(4),
            ..Overrides::default()
        };
        let config = resolve(&shapes, None, &heads).unwrap();
        assert_eq!((config.head_dim, config.num_kv_heads), (8, 2));
        assert_eq!(config.rope_theta, 10000.0);
    }

    #[test]
    fn compat_changes_only_the_llama2_defaults_it_names() {
        let training = Overrides::default();
        let converter = Overrides {
            compat: Compat::Converter2024,
            ..Overrides::default()
        };
        let thirteen = shapes_of(lookup("13b").unwrap());
        let a = resolve(&thirteen, Some("13b"), &training).unwrap();
        let b = resolve(&thirteen, Some("13b"), &converter).unwrap();
        assert_eq!((a.rope_theta, a.max_position_embeddings), (10000.0, 4096));
        assert_eq!((b.rope_theta, b.max_position_embeddings), (100000.0, 8192));
        // everything else as trained, also in the config.json `worker convert` writes
        assert_eq!(
            ModelConfig {
                rope_theta: a.rope_theta,
                max_position_embeddings: a.max_position_embeddings,
                ..b.clone()
            },
            a
        );
        let json = b.hf_config_json("bfloat16");
        assert_eq!(json["rope_theta"], json!(100000.0));
        assert_eq!(json["max_position_embeddings"], json!(8192));
        assert_eq!(json["rms_norm_eps"], json!(1e-6));
        assert_eq!(b.decoder_config().rope_theta, 100000.0);
        // explicit values win over the profile
        let pinned = Overrides {
            rope_theta: Some(10000.0),
            ..converter.clone()
        };
        assert_eq!(
            resolve(&thirteen, Some("13b"), &pinned).unwrap().rope_theta,
            10000.0
        );
        // LLaMA-3.1 is the same under both
        let llama31 = shapes_of(lookup("8b31").unwrap());
        assert_eq!(
            resolve(&llama31, Some("8b31"), &training).unwrap(),
            resolve(&llama31, Some("8b31"), &converter).unwrap()
        );
        assert_eq!("converter-2024".parse(), Ok(Compat::Converter2024));
        assert_eq!("".parse(), Ok(Compat::Training));
        assert_eq!(Compat::Converter2024.to_string(), "converter-2024");
        let err = "2024".parse::<Compat>().unwrap_err();
        assert!(err.contains("converter-2024"), "{err}");
    }

    #[test]
    fn llama31_8b_has_the_llama31_shapes_and_rope() {
        // meta-llama/Llama-3.1-8B config.json
        let spec = lookup("8b31").unwrap();
        assert_eq!(
            (
                spec.hidden,
                spec.intermediate,
                spec.layers,
                spec.heads,
                spec.kv_heads
            ),
            (4096, 14336, 32, 32, 8)
        );
        let config = resolve(&shapes_of(spec), Some("8b31"), &Overrides::default()).unwrap();
        assert_eq!(config.vocab_size, 128256);
        assert_eq!(config.rope_theta, 500000.0);
        assert_eq!(config.max_position_embeddings, 131072);
        assert_eq!(
            config.rope_scaling,
            RopeScaling::Llama3 {
                factor: 8.0,
                low_freq_factor: 1.0,
                high_freq_factor: 4.0,
                original_max_position_embeddings: 8192.0,
            }
        );
        assert_eq!(
            (
                config.bos_token_id,
                config.eos_token_id,
                config.pad_token_id
            ),
            (128000, 128001, 128255)
        );
    }

    #[test]
    fn rope_scaling_flag() {
        assert_eq!(parse_rope_scaling("none"), Ok(RopeScaling::None));
        assert_eq!(
            parse_rope_scaling(r#"{"rope_type": "linear", "factor": 2.0}"#),
            Ok(RopeScaling::Linear { factor: 2.0 })
        );
        assert!(parse_rope_scaling("{").is_err());
    }
}
