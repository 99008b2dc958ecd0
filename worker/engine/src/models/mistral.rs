//! Mistral: a Llama without biases whose attention is limited to a sliding window. herd scores
//! full causal attention, which is exact as long as no input is longer than the window, so the
//! window becomes the longest input accepted.

use serde_json::Value;

use super::config::{Biases, ConfigJson, DecoderConfig};
use super::Family;
use crate::error::LoadError;

pub fn config(json: &Value, architecture: &str) -> Result<DecoderConfig, LoadError> {
    let json = ConfigJson(json);
    let no_biases = Biases {
        qkv: false,
        output: false,
        mlp: false,
    };
    let mut config = json.decoder(Family::Mistral, architecture, no_biases)?;
    config.attention_window = json.optional_int("sliding_window")?;
    Ok(config)
}
