//! Qwen3 (Skywork-Reward-V2-Qwen3 and the Qwen3 chat models): a Llama whose queries and keys pass an
//! RMSNorm over each head (`q_norm`, `k_norm`, over `head_dim`) before rotary, with `head_dim`
//! taken from the config (Qwen3's is not hidden_size / heads), and one `attention_bias` switch for
//! q, k, v and o (modeling_qwen3.py Qwen3Attention, transformers 4.57.6).

use serde_json::Value;

use super::config::{Biases, ConfigJson, DecoderConfig};
use super::Family;
use crate::error::LoadError;

pub fn config(json: &Value, architecture: &str) -> Result<DecoderConfig, LoadError> {
    let json_ref = json;
    let json = ConfigJson(json);
    let attention_bias = json.bool_or("attention_bias", false)?;
    let biases = Biases {
        qkv: attention_bias,
        output: attention_bias,
        mlp: false,
    };
    let mut config = json.decoder(Family::Qwen3, architecture, biases)?;
    // sliding layers exist only with `use_sliding_window` (or explicit `layer_types`); herd
    // attends in full, which is exact for inputs no longer than the window
    let sliding_layers = json_ref
        .get("layer_types")
        .and_then(Value::as_array)
        .is_some_and(|types| types.iter().any(|t| t == "sliding_attention"));
    if json.bool_or("use_sliding_window", false)? || sliding_layers {
        config.attention_window = json.optional_int("sliding_window")?;
    }
    Ok(config)
}
