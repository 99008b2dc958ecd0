//! OLMo 2: a Llama whose norms come after attention and after the MLP (`post_attention_layernorm`,
//! `post_feedforward_layernorm`, no input norms), with `q_norm`/`k_norm` over the full projection
//! width (`num_heads * head_dim`) before the heads split, and RMSNorms that scale in float32
//! (modeling_olmo2.py Olmo2Attention / Olmo2DecoderLayer / Olmo2RMSNorm, transformers 4.57.6).

use serde_json::Value;

use super::config::{Biases, ConfigJson, DecoderConfig};
use super::Family;
use crate::error::LoadError;

pub fn config(json: &Value, architecture: &str) -> Result<DecoderConfig, LoadError> {
    let json = ConfigJson(json);
    let attention_bias = json.bool_or("attention_bias", false)?;
    let biases = Biases {
        qkv: attention_bias,
        output: attention_bias,
        mlp: false,
    };
    json.decoder(Family::Olmo2, architecture, biases)
}
