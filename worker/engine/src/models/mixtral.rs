//! Mixtral (mistralai/Mixtral-8x7B-Instruct-v0.1, NousResearch/Nous-Hermes-2-Mixtral-8x7B-DPO): a
//! Mistral whose MLP is a sparse mixture of experts (`block_sparse_moe`, see moe.rs). Attention is
//! Mistral's: no biases, and a sliding window when `sliding_window` is set (herd attends in full,
//! exact for inputs no longer than the window, so the window is the longest input accepted).
//! Defaults are MixtralConfig's where they differ from the shared ones (transformers 4.57.6
//! configuration_mixtral.py: `rms_norm_eps=1e-5`, `rope_theta=1e6`, `max_position_embeddings=4096 *
//! 32`, `num_local_experts=8`, `num_experts_per_tok=2`).

use serde_json::Value;

use super::config::{Biases, ConfigJson, DecoderConfig};
use super::moe::MoeOptions;
use super::Family;
use crate::error::LoadError;

pub fn config(json: &Value, architecture: &str) -> Result<DecoderConfig, LoadError> {
    let raw = json;
    let json = ConfigJson(json);
    let no_biases = Biases {
        qkv: false,
        output: false,
        mlp: false,
    };
    let mut config = json.decoder(Family::Mixtral, architecture, no_biases)?;
    config.rms_norm_eps = json.float_or("rms_norm_eps", 1e-5)?;
    config.rope_theta = json.float_or("rope_theta", 1e6)?;
    config.max_position_embeddings = json
        .optional_int("max_position_embeddings")?
        .unwrap_or(4096 * 32);
    config.attention_window = json.optional_int("sliding_window")?;
    // the experts' activation (MixtralBlockSparseTop2MLP: `act_fn(w1(x)) * w3(x)`); herd's is SiLU
    if let Some(act) = raw.get("hidden_act").filter(|v| !v.is_null()) {
        if act.as_str() != Some("silu") {
            return Err(LoadError::Config {
                field: "hidden_act".to_string(),
                reason: format!("{act} is not supported (Mixtral's experts run silu)"),
            });
        }
    }
    let num_experts = json.optional_int("num_local_experts")?.unwrap_or(8);
    let top_k = json.optional_int("num_experts_per_tok")?.unwrap_or(2);
    config.moe = Some(MoeOptions::new(num_experts, top_k)?);
    Ok(config)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn base() -> Value {
        json!({
            "architectures": ["MixtralForCausalLM"], "model_type": "mixtral",
            "vocab_size": 64, "hidden_size": 16, "intermediate_size": 24,
            "num_hidden_layers": 1, "num_attention_heads": 4, "num_key_value_heads": 2,
        })
    }

    #[test]
    fn mixtral_defaults_are_mixtral_configs() {
        let c = config(&base(), "MixtralForCausalLM").unwrap();
        assert_eq!(c.family, Family::Mixtral);
        assert_eq!(c.moe, Some(MoeOptions::new(8, 2).unwrap()));
        assert_eq!((c.rms_norm_eps, c.rope_theta), (1e-5, 1e6));
        assert_eq!(c.max_position_embeddings, 131072);
        assert_eq!(c.attention_window, None);
        assert!(!c.biases.qkv && !c.biases.output && !c.biases.mlp);
    }

    #[test]
    fn bad_expert_counts_and_activations_name_the_field() {
        for (field, value) in [
            ("num_local_experts", json!(0)),
            ("num_experts_per_tok", json!(0)),
            ("num_experts_per_tok", json!(9)),
            ("num_local_experts", json!("eight")),
            ("hidden_act", json!("gelu")),
        ] {
            let mut j = base();
            j[field] = value.clone();
            let error = config(&j, "MixtralForCausalLM").unwrap_err().to_string();
            assert!(error.contains(field), "{field}={value}: {error}");
        }
    }
}
