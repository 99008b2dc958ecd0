//! The architecture-independent shape of a Llama-family decoder, filled in from each
//! architecture's config.json by its own module (llama.rs, mistral.rs, qwen2.rs).

use serde_json::Value;

use super::Family;
use crate::error::LoadError;

/// How rotary position frequencies are derived.
#[derive(Clone, Debug, PartialEq)]
pub enum RopeScaling {
    None,
    /// Llama 3.1 style: low frequencies divided by `factor`, a smooth band in between.
    Llama3 {
        factor: f64,
        low_freq_factor: f64,
        high_freq_factor: f64,
        original_max_position_embeddings: f64,
    },
    /// Positions divided by `factor` (transformers' "linear").
    Linear {
        factor: f64,
    },
}

/// Which projections carry a bias: Llama has one switch for all attention projections,
/// Qwen2 biases q/k/v only.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Biases {
    pub qkv: bool,
    pub output: bool,
    pub mlp: bool,
}

#[derive(Clone, Debug, PartialEq)]
pub struct DecoderConfig {
    /// which backbone runs this shape (`backbone::load` dispatches on it)
    pub family: Family,
    pub architecture: String,
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
    pub biases: Biases,
    pub tie_word_embeddings: bool,
    pub max_position_embeddings: i64,
    /// Longest input the model scores exactly (Mistral's and Qwen's sliding window, InternLM2's
    /// dynamic-NTK limit); inputs longer than this are refused rather than scored wrongly.
    pub attention_window: Option<i64>,
    /// Gemma 2's switches (norms, soft caps, windows per layer); none for other families
    pub gemma2: Option<super::gemma2::Gemma2Options>,
    pub pad_token_id: Option<i64>,
    pub num_labels: i64,
    /// the encoder settings of a DeBERTa-v2/v3 config (`deberta_v2::config`), else `None`
    pub deberta: Option<super::deberta_v2::Settings>,
    /// GPT-NeoX and GPT-2 only: what their configs add (LayerNorm eps, activation, rotary share)
    pub gpt: Option<super::gpt::GptOptions>,
    /// Mixtral only: the sparse mixture of experts that replaces each layer's MLP
    pub moe: Option<super::moe::MoeOptions>,
}

/// Upper bounds that refuse absurd configs before anything is allocated.
const MAX_DIM: i64 = 1 << 20;
const MAX_LAYERS: i64 = 1024;

impl DecoderConfig {
    pub fn validate(&self) -> Result<(), LoadError> {
        let bad = |field: &str, reason: String| LoadError::Config {
            field: field.to_string(),
            reason,
        };
        for (field, value) in [
            ("vocab_size", self.vocab_size),
            ("hidden_size", self.hidden_size),
            ("intermediate_size", self.intermediate_size),
            ("num_attention_heads", self.num_heads),
            ("num_key_value_heads", self.num_kv_heads),
            ("head_dim", self.head_dim),
        ] {
            if value <= 0 || value > MAX_DIM {
                return Err(bad(field, format!("{value} is outside 1..={MAX_DIM}")));
            }
        }
        if self.num_layers <= 0 || self.num_layers > MAX_LAYERS {
            return Err(bad(
                "num_hidden_layers",
                format!("{} is outside 1..={MAX_LAYERS}", self.num_layers),
            ));
        }
        if self.num_heads % self.num_kv_heads != 0 {
            return Err(bad(
                "num_key_value_heads",
                format!(
                    "{} does not divide num_attention_heads {}",
                    self.num_kv_heads, self.num_heads
                ),
            ));
        }
        // rotary only: DeBERTa has relative positions, GPT-2 learned ones
        let rotary = !matches!(self.family, Family::DebertaV2 | Family::Gpt2);
        if self.head_dim % 2 != 0 && rotary {
            return Err(bad(
                "head_dim",
                format!("{} is odd; rotary needs pairs", self.head_dim),
            ));
        }
        if self.num_labels <= 0 || self.num_labels > MAX_DIM {
            return Err(bad(
                "num_labels",
                format!("{} is outside 1..={MAX_DIM}", self.num_labels),
            ));
        }
        Ok(())
    }
}

/// Typed access to config.json fields with errors that name the field.
pub struct ConfigJson<'a>(pub &'a Value);

impl ConfigJson<'_> {
    fn field(&self, name: &str) -> Option<&Value> {
        self.0.get(name).filter(|v| !v.is_null())
    }

    pub fn int(&self, name: &str) -> Result<i64, LoadError> {
        self.optional_int(name)?.ok_or_else(|| LoadError::Config {
            field: name.to_string(),
            reason: "missing".to_string(),
        })
    }

    pub fn optional_int(&self, name: &str) -> Result<Option<i64>, LoadError> {
        match self.field(name) {
            None => Ok(None),
            Some(v) => v.as_i64().map(Some).ok_or_else(|| LoadError::Config {
                field: name.to_string(),
                reason: format!("expected an integer, found {v}"),
            }),
        }
    }

    pub fn float_or(&self, name: &str, default: f64) -> Result<f64, LoadError> {
        match self.field(name) {
            None => Ok(default),
            Some(v) => v.as_f64().ok_or_else(|| LoadError::Config {
                field: name.to_string(),
                reason: format!("expected a number, found {v}"),
            }),
        }
    }

    pub fn bool_or(&self, name: &str, default: bool) -> Result<bool, LoadError> {
        match self.field(name) {
            None => Ok(default),
            Some(v) => v.as_bool().ok_or_else(|| LoadError::Config {
                field: name.to_string(),
                reason: format!("expected true or false, found {v}"),
            }),
        }
    }

    /// `num_labels` is implied by `id2label` in transformers' configs.
    pub fn num_labels(&self) -> Result<i64, LoadError> {
        if let Some(n) = self.optional_int("num_labels")? {
            return Ok(n);
        }
        Ok(match self.field("id2label").and_then(Value::as_object) {
            Some(labels) => labels.len() as i64,
            None => 2, // transformers' PretrainedConfig default
        })
    }

    pub fn rope_scaling(&self) -> Result<RopeScaling, LoadError> {
        let Some(scaling) = self.field("rope_scaling") else {
            return Ok(RopeScaling::None);
        };
        let sub = ConfigJson(scaling);
        let kind = scaling
            .get("rope_type")
            .or_else(|| scaling.get("type"))
            .and_then(Value::as_str)
            .unwrap_or("default");
        let factor = || sub.float_or("factor", 1.0);
        match kind {
            "default" => Ok(RopeScaling::None),
            "linear" => Ok(RopeScaling::Linear { factor: factor()? }),
            "llama3" => Ok(RopeScaling::Llama3 {
                factor: factor()?,
                low_freq_factor: sub.float_or("low_freq_factor", 1.0)?,
                high_freq_factor: sub.float_or("high_freq_factor", 4.0)?,
                original_max_position_embeddings: sub
                    .float_or("original_max_position_embeddings", 8192.0)?,
            }),
            other => Err(LoadError::Config {
                field: "rope_scaling.rope_type".to_string(),
                reason: format!("{other:?} is not supported (supported: default, linear, llama3)"),
            }),
        }
    }

    /// The fields every Llama-family config shares; architectures adjust biases and windows.
    pub fn decoder(
        &self,
        family: Family,
        architecture: &str,
        biases: Biases,
    ) -> Result<DecoderConfig, LoadError> {
        let hidden_size = self.int("hidden_size")?;
        let num_heads = self.int("num_attention_heads")?;
        let head_dim = match self.optional_int("head_dim")? {
            Some(d) => d,
            // transformers refuses a remainder too (`hidden_size must be divisible by num_heads`);
            // dividing down would only fail later as a confusing weight-shape mismatch
            None if num_heads > 0 && hidden_size % num_heads != 0 => {
                return Err(LoadError::Config {
                    field: "num_attention_heads".to_string(),
                    reason: format!(
                        "{num_heads} does not divide hidden_size {hidden_size} (and no head_dim is set)"
                    ),
                })
            }
            None if num_heads > 0 => hidden_size / num_heads,
            None => 0,
        };
        let config = DecoderConfig {
            family,
            architecture: architecture.to_string(),
            vocab_size: self.int("vocab_size")?,
            hidden_size,
            intermediate_size: self.int("intermediate_size")?,
            num_layers: self.int("num_hidden_layers")?,
            num_heads,
            num_kv_heads: self
                .optional_int("num_key_value_heads")?
                .unwrap_or(num_heads),
            head_dim,
            rms_norm_eps: self.float_or("rms_norm_eps", 1e-6)?,
            rope_theta: self.float_or("rope_theta", 10000.0)?,
            rope_scaling: self.rope_scaling()?,
            biases,
            tie_word_embeddings: self.bool_or("tie_word_embeddings", false)?,
            max_position_embeddings: self
                .optional_int("max_position_embeddings")?
                .unwrap_or(2048),
            attention_window: None,
            gemma2: None,
            pad_token_id: self.optional_int("pad_token_id")?,
            num_labels: self.num_labels()?,
            deberta: None,
            gpt: None,
            moe: None,
        };
        Ok(config)
    }
}
