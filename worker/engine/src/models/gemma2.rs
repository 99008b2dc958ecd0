//! Gemma 2 (Gemma2ForSequenceClassification, Gemma2ForCausalLM): the shared decoder with the
//! switches of transformers 4.57.6 `models/gemma2/modeling_gemma2.py`:
//!
//! - RMSNorm scaling by `(1 + w)` in float32 before the cast back (`Gemma2RMSNorm.forward`);
//! - a norm on the attention output and one on the MLP output before each residual add, the MLP
//!   normed by `pre_feedforward_layernorm` (`Gemma2DecoderLayer.forward`);
//! - embeddings times `sqrt(hidden_size)` rounded to the embedding dtype first
//!   (`normalizer = torch.tensor(hidden_size**0.5, dtype=hidden_states.dtype)` in `Gemma2Model`);
//! - a GeGLU MLP (`hidden_activation`, gelu with the tanh approximation by default);
//! - attention scaled by `query_pre_attn_scalar**-0.5`, logits soft-capped
//!   (`tanh(x / c) * c` before the mask, `eager_attention_forward`), a sliding window on the
//!   layers `layer_types` marks `sliding_attention` (by default the even ones: `(i + 1) % 2` in
//!   `Gemma2Config`), a key visible when `q - k < sliding_window` (`sliding_window_overlay` in
//!   masking_utils.py);
//! - the causal LM's logits soft-capped by `final_logit_softcapping`; the sequence classifier's
//!   score head is not (`GenericForSequenceClassification`).
//!
//! Missing config.json keys take `Gemma2Config`'s defaults, which differ from the Llama family's
//! (head_dim 256, tied embeddings, pad id 0, ...), and an explicit `null` soft cap or window
//! turns it off, as in transformers.

use serde_json::{json, Value};

use super::config::{Biases, ConfigJson, DecoderConfig};
use super::Family;
use crate::error::LoadError;

/// The activation of the gated MLP.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Activation {
    /// SwiGLU (Llama family)
    Silu,
    /// `gelu_pytorch_tanh`: `torch.nn.functional.gelu(x, approximate="tanh")`
    GeluTanh,
    /// `gelu`: the exact erf form
    Gelu,
}

/// What Gemma 2 changes in the shared decoder; `DecoderConfig.gemma2` holds it.
#[derive(Clone, Debug, PartialEq)]
pub struct Gemma2Options {
    pub activation: Activation,
    /// attention logits are scaled by `query_pre_attn_scalar ** -0.5` instead of head_dim's
    pub query_pre_attn_scalar: f64,
    pub attn_logit_softcapping: Option<f64>,
    pub final_logit_softcapping: Option<f64>,
    /// the window of the sliding layers (none when config.json sets it to null)
    pub sliding_window: Option<i64>,
    /// per layer: whether it attends through the sliding window
    pub sliding_layers: Vec<bool>,
}

impl Gemma2Options {
    /// The window layer `index` attends through, if any.
    pub fn window_of(&self, index: usize) -> Option<i64> {
        match self.sliding_layers.get(index) {
            Some(true) => self.sliding_window,
            _ => None,
        }
    }
}

/// `Gemma2Config.__init__`'s defaults for keys a config.json may leave out; only a missing key
/// takes one (an explicit null is kept: for the soft caps and the window it means "off").
fn defaults() -> [(&'static str, Value); 14] {
    [
        ("vocab_size", json!(256000)),
        ("hidden_size", json!(2304)),
        ("intermediate_size", json!(9216)),
        ("num_hidden_layers", json!(26)),
        ("num_attention_heads", json!(8)),
        ("num_key_value_heads", json!(4)),
        ("head_dim", json!(256)),
        ("max_position_embeddings", json!(8192)),
        ("rms_norm_eps", json!(1e-6)),
        ("pad_token_id", json!(0)),
        ("tie_word_embeddings", json!(true)),
        ("rope_theta", json!(10000.0)),
        ("query_pre_attn_scalar", json!(256)),
        ("sliding_window", json!(4096)),
    ]
}

/// A float field that is off when null, `default` when missing.
fn optional_float(json: &Value, name: &str, default: f64) -> Result<Option<f64>, LoadError> {
    match json.get(name) {
        None => Ok(Some(default)),
        Some(Value::Null) => Ok(None),
        Some(v) => match v.as_f64() {
            Some(x) if x > 0.0 && x.is_finite() => Ok(Some(x)),
            _ => Err(LoadError::Config {
                field: name.to_string(),
                reason: format!("expected a positive number or null, found {v}"),
            }),
        },
    }
}

pub fn config(json: &Value, architecture: &str) -> Result<DecoderConfig, LoadError> {
    let mut filled = json.clone();
    if let Some(object) = filled.as_object_mut() {
        for (key, value) in defaults() {
            object.entry(key).or_insert(value);
        }
    }
    let raw = &filled;
    let json = ConfigJson(raw);
    let attention_bias = json.bool_or("attention_bias", false)?;
    let biases = Biases {
        qkv: attention_bias,
        output: attention_bias,
        mlp: false,
    };
    let mut config = json.decoder(Family::Gemma2, architecture, biases)?;
    let activation = match raw.get("hidden_activation").and_then(Value::as_str) {
        None | Some("gelu_pytorch_tanh") => Activation::GeluTanh,
        Some("gelu") => Activation::Gelu,
        Some(other) => {
            return Err(LoadError::Config {
                field: "hidden_activation".to_string(),
                reason: format!("{other:?} is not supported (supported: gelu_pytorch_tanh, gelu)"),
            })
        }
    };
    let query_pre_attn_scalar = json.float_or("query_pre_attn_scalar", 256.0)?;
    if !(query_pre_attn_scalar > 0.0 && query_pre_attn_scalar.is_finite()) {
        return Err(LoadError::Config {
            field: "query_pre_attn_scalar".to_string(),
            reason: format!("{query_pre_attn_scalar} is not a positive number"),
        });
    }
    let sliding_window = match raw.get("sliding_window") {
        Some(Value::Null) | None => None,
        Some(_) => match json.int("sliding_window")? {
            w if w > 0 => Some(w),
            w => {
                return Err(LoadError::Config {
                    field: "sliding_window".to_string(),
                    reason: format!("{w} is not a positive window"),
                })
            }
        },
    };
    let sliding_layers = sliding_layers(raw, config.num_layers)?;
    config.gemma2 = Some(Gemma2Options {
        activation,
        query_pre_attn_scalar,
        attn_logit_softcapping: optional_float(raw, "attn_logit_softcapping", 50.0)?,
        final_logit_softcapping: optional_float(raw, "final_logit_softcapping", 30.0)?,
        sliding_window,
        sliding_layers,
    });
    Ok(config)
}

/// `layer_types` ("sliding_attention" / "full_attention", one per layer), or Gemma2Config's
/// default: sliding on the even layers.
fn sliding_layers(json: &Value, num_layers: i64) -> Result<Vec<bool>, LoadError> {
    let bad = |reason: String| LoadError::Config {
        field: "layer_types".to_string(),
        reason,
    };
    let Some(types) = json.get("layer_types").filter(|v| !v.is_null()) else {
        return Ok((0..num_layers).map(|i| (i + 1) % 2 == 1).collect());
    };
    let types = types
        .as_array()
        .ok_or_else(|| bad(format!("expected a list, found {types}")))?;
    if types.len() as i64 != num_layers {
        return Err(bad(format!(
            "{} entries for {num_layers} layers (num_hidden_layers)",
            types.len()
        )));
    }
    types
        .iter()
        .map(|t| match t.as_str() {
            Some("sliding_attention") => Ok(true),
            Some("full_attention") => Ok(false),
            _ => Err(bad(format!(
                "{t} is not \"sliding_attention\" or \"full_attention\""
            ))),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tiny() -> Value {
        json!({
            "architectures": ["Gemma2ForSequenceClassification"],
            "vocab_size": 100, "hidden_size": 16, "intermediate_size": 32,
            "num_hidden_layers": 3, "num_attention_heads": 4, "num_key_value_heads": 2,
            "head_dim": 8,
        })
    }

    #[test]
    fn missing_keys_take_gemma2_defaults() {
        let c = config(&tiny(), "Gemma2ForSequenceClassification").unwrap();
        let g = c.gemma2.as_ref().unwrap();
        assert_eq!(c.pad_token_id, Some(0));
        assert!(c.tie_word_embeddings);
        assert_eq!(g.activation, Activation::GeluTanh);
        assert_eq!(g.query_pre_attn_scalar, 256.0);
        assert_eq!(g.attn_logit_softcapping, Some(50.0));
        assert_eq!(g.final_logit_softcapping, Some(30.0));
        assert_eq!(g.sliding_layers, vec![true, false, true]);
        assert_eq!((g.window_of(0), g.window_of(1)), (Some(4096), None));
        let mut no_head_dim = tiny();
        no_head_dim.as_object_mut().unwrap().remove("head_dim");
        let c = config(&no_head_dim, "Gemma2ForCausalLM").unwrap();
        assert_eq!(c.head_dim, 256);
    }

    #[test]
    fn null_turns_soft_caps_and_window_off_and_layer_types_are_read() {
        let mut j = tiny();
        let o = j.as_object_mut().unwrap();
        o.insert("attn_logit_softcapping".into(), Value::Null);
        o.insert("final_logit_softcapping".into(), Value::Null);
        o.insert("sliding_window".into(), Value::Null);
        o.insert(
            "layer_types".into(),
            json!(["full_attention", "sliding_attention", "full_attention"]),
        );
        let c = config(&j, "Gemma2ForCausalLM").unwrap();
        let g = c.gemma2.unwrap();
        assert_eq!(g.attn_logit_softcapping, None);
        assert_eq!(g.final_logit_softcapping, None);
        assert_eq!(g.sliding_layers, vec![false, true, false]);
        assert_eq!(g.window_of(1), None);
    }

    #[test]
    fn bad_fields_are_named() {
        for (key, value, field) in [
            ("layer_types", json!(["full_attention"]), "layer_types"),
            ("layer_types", json!(["a", "b", "c"]), "layer_types"),
            ("hidden_activation", json!("relu"), "hidden_activation"),
            (
                "attn_logit_softcapping",
                json!(-1.0),
                "attn_logit_softcapping",
            ),
            ("sliding_window", json!(0), "sliding_window"),
        ] {
            let mut j = tiny();
            j.as_object_mut().unwrap().insert(key.into(), value);
            let error = config(&j, "Gemma2ForCausalLM").unwrap_err().to_string();
            assert!(error.contains(field), "{key}: {error}");
        }
    }
}
