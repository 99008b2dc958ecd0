//! Qwen2: a Llama with biases on the q, k and v projections (not on o or the MLP).
//! Its optional sliding window applies only when `use_sliding_window` is set.

use serde_json::Value;

use super::config::{Biases, ConfigJson, DecoderConfig};
use super::Family;
use crate::error::LoadError;

pub fn config(json: &Value, architecture: &str) -> Result<DecoderConfig, LoadError> {
    let json = ConfigJson(json);
    let biases = Biases {
        qkv: true,
        output: false,
        mlp: false,
    };
    let mut config = json.decoder(Family::Qwen2, architecture, biases)?;
    if json.bool_or("use_sliding_window", false)? {
        config.attention_window = json.optional_int("sliding_window")?;
    }
    Ok(config)
}
