//! Llama 1/2/3 (incl. GQA and llama3 rope scaling): config.json → decoder shape.

use serde_json::Value;

use super::config::{Biases, ConfigJson, DecoderConfig};
use super::Family;
use crate::error::LoadError;

pub fn config(json: &Value, architecture: &str) -> Result<DecoderConfig, LoadError> {
    let json = ConfigJson(json);
    // one switch biases q, k, v and o; `mlp_bias` the three MLP projections
    let attention_bias = json.bool_or("attention_bias", false)?;
    let biases = Biases {
        qkv: attention_bias,
        output: attention_bias,
        mlp: json.bool_or("mlp_bias", false)?,
    };
    json.decoder(Family::Llama, architecture, biases)
}
