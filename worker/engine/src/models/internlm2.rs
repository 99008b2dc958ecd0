//! InternLM2 (internlm2-1_8b/7b/20b-reward: `InternLM2ForRewardModel`; `InternLM2ForCausalLM`), whose
//! modeling file is remote code on the hub, not part of transformers. Its decoder is a Llama under
//! other names with q, k and v fused into one `wqkv` projection, so herd renames the checkpoint's
//! tensors and splits `wqkv` at load ([`rename_weights`]) and runs the shared decoder. The reward
//! model's quirks: the score is `v_head` (hidden -> 1, no bias) at the last attended token, and
//! every input ends with the reward token `reward_token_id` (92527), which RewardBench's
//! InternLMPipeline appends when the text does not already end with it
//! (rewardbench/models/internlm.py, rewardbench 0.1.4); herd does the same in
//! `encode::classifier_inputs_masked` through [`ModelSpec::reward_token`](super::ModelSpec)
//! (the registry entry's `Appends::RewardToken`).

use std::collections::HashMap;

use serde_json::Value;
use tch::Tensor;

use super::config::{Biases, ConfigJson, DecoderConfig};
use super::heads::RewardHead;
use super::registry::HeadContext;
use super::reward_heads::Mlp;
use super::Family;
use crate::error::LoadError;
use crate::weights::Weights;

/// InternLM2's reward token, `[UNUSED_TOKEN_130]`, when config.json does not name one.
pub const DEFAULT_REWARD_TOKEN: i64 = 92527;

pub fn config(json: &Value, architecture: &str) -> Result<DecoderConfig, LoadError> {
    // dynamic NTK scaling (the 7b/20b configs) changes the rotary base only for sequences longer
    // than max_position_embeddings (InternLM2DynamicNTKScalingRotaryEmbedding._set_cos_sin_cache),
    // so below that it is the plain rotary; longer inputs are refused (`attention_window`)
    let dynamic = json
        .get("rope_scaling")
        .and_then(|s| s.get("type").or_else(|| s.get("rope_type")))
        .and_then(Value::as_str)
        == Some("dynamic");
    let mut plain = json.clone();
    if dynamic {
        if let Some(object) = plain.as_object_mut() {
            object.remove("rope_scaling");
        }
    }
    let json = ConfigJson(&plain);
    // InternLM2Config's `bias` (default true) covers wqkv and wo; the MLP has none
    let bias = json.bool_or("bias", true)?;
    let biases = Biases {
        qkv: bias,
        output: bias,
        mlp: false,
    };
    let mut config = json.decoder(Family::InternLM2, architecture, biases)?;
    if dynamic {
        // one slot is kept for the appended reward token
        config.attention_window = Some(config.max_position_embeddings - 1);
    }
    Ok(config)
}

/// The reward token of a reward model's config.json: `reward_token_id`, else 92527. It must be a
/// token of the vocabulary and differ from the pad id (the score is read at it, and pooling skips
/// pad ids).
pub fn reward_token(json: &Value, config: &DecoderConfig) -> Result<u32, LoadError> {
    let id = ConfigJson(json)
        .optional_int("reward_token_id")?
        .unwrap_or(DEFAULT_REWARD_TOKEN);
    let bad = |reason: String| LoadError::Config {
        field: "reward_token_id".to_string(),
        reason,
    };
    if id < 0 || id >= config.vocab_size {
        return Err(bad(format!(
            "{id} is outside the vocabulary (vocab_size {})",
            config.vocab_size
        )));
    }
    if config.pad_token_id == Some(id) {
        return Err(bad(format!(
            "{id} is also pad_token_id; the score is read at the reward token"
        )));
    }
    Ok(id as u32)
}

/// `InternLM2ForRewardModel.v_head`: hidden -> 1, no bias (the registry fixes one label).
pub fn load_v_head(ctx: &HeadContext) -> Result<Box<dyn RewardHead>, LoadError> {
    Ok(Box::new(Mlp::linear(ctx, &ctx.w.pp("v_head"), 1, false)?))
}

/// The shared decoder's name for an InternLM2 tensor name (`None`: `wqkv`, which is split, or a
/// name it does not know, kept as is and reported unused).
fn renamed(name: &str) -> Option<String> {
    const TOP: [(&str, &str); 4] = [
        ("model.tok_embeddings.weight", "model.embed_tokens.weight"),
        ("model.norm.weight", "model.norm.weight"),
        ("output.weight", "lm_head.weight"),
        ("v_head.weight", "v_head.weight"),
    ];
    if let Some((_, to)) = TOP.iter().find(|(from, _)| *from == name) {
        return Some(to.to_string());
    }
    const LAYER: [(&str, &str); 8] = [
        ("attention.wo.weight", "self_attn.o_proj.weight"),
        ("attention.wo.bias", "self_attn.o_proj.bias"),
        ("attention_norm.weight", "input_layernorm.weight"),
        ("ffn_norm.weight", "post_attention_layernorm.weight"),
        ("feed_forward.w1.weight", "mlp.gate_proj.weight"),
        ("feed_forward.w3.weight", "mlp.up_proj.weight"),
        ("feed_forward.w2.weight", "mlp.down_proj.weight"),
        ("attention.wqkv.weight", ""),
    ];
    let rest = name.strip_prefix("model.layers.")?;
    let (index, tail) = rest.split_once('.')?;
    index.parse::<u64>().ok()?;
    let (_, to) = LAYER.iter().find(|(from, _)| *from == tail)?;
    (!to.is_empty()).then(|| format!("model.layers.{index}.{to}"))
}

/// Splits a fused `wqkv` weight [(heads + 2 kv) * d, hidden] (or bias [(heads + 2 kv) * d]) into
/// q, k and v. modeling_internlm2.py reads its output as `rearrange("b q (h gs d) -> b q h gs d",
/// gs = 2 + groups)`: per kv head, `groups` query heads, then the key, then the value; the query
/// heads are then `(h gs)`, i.e. kv head major, as the shared decoder's grouped attention expects.
fn split_wqkv(name: &str, fused: &Tensor, c: &DecoderConfig) -> Result<[Tensor; 3], LoadError> {
    let groups = c.num_heads / c.num_kv_heads;
    let rows = (c.num_heads + 2 * c.num_kv_heads) * c.head_dim;
    let size = fused.size();
    let trailing: Vec<i64> = size.iter().skip(1).copied().collect();
    if size.first() != Some(&rows) || trailing.len() > 1 {
        return Err(LoadError::tensor(
            name,
            format!(
                "shape {size:?} is not [(num_attention_heads {} + 2 x num_key_value_heads {}) x \
                 head_dim {}{}]",
                c.num_heads,
                c.num_kv_heads,
                c.head_dim,
                if trailing.is_empty() { "" } else { ", hidden" }
            ),
        ));
    }
    let mut grouped = vec![c.num_kv_heads, groups + 2, c.head_dim];
    grouped.extend(&trailing);
    let grouped = fused.view(grouped.as_slice());
    let flat = |t: Tensor, n: i64| {
        let mut shape = vec![n * c.head_dim];
        shape.extend(&trailing);
        t.reshape(shape.as_slice()).contiguous()
    };
    Ok([
        flat(grouped.narrow(1, 0, groups), c.num_heads),
        flat(grouped.select(1, groups), c.num_kv_heads),
        flat(grouped.select(1, groups + 1), c.num_kv_heads),
    ])
}

/// The checkpoint's tensors under the names the shared decoder and heads take, `wqkv` split.
pub fn rename_weights(weights: Weights, config: &DecoderConfig) -> Result<Weights, LoadError> {
    let mut out = HashMap::new();
    for (name, tensor) in weights.into_tensors()? {
        let fused = ["weight", "bias"].into_iter().find(|kind| {
            name.strip_prefix("model.layers.")
                .and_then(|rest| rest.split_once('.'))
                .is_some_and(|(_, tail)| tail == format!("attention.wqkv.{kind}"))
        });
        if let Some(kind) = fused {
            let layer = name.trim_end_matches(&format!("attention.wqkv.{kind}"));
            let [q, k, v] = split_wqkv(&name, &tensor, config)?;
            for (projection, part) in [("q_proj", q), ("k_proj", k), ("v_proj", v)] {
                out.insert(format!("{layer}self_attn.{projection}.{kind}"), part);
            }
            continue;
        }
        let target = renamed(&name).unwrap_or(name);
        out.insert(target, tensor);
    }
    Ok(Weights::from_tensors(out))
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::{Device, Kind};

    fn config() -> DecoderConfig {
        let json = serde_json::json!({
            "architectures": ["InternLM2ForRewardModel"],
            "vocab_size": 100, "hidden_size": 8, "intermediate_size": 16,
            "num_hidden_layers": 1, "num_attention_heads": 4, "num_key_value_heads": 2,
            "bias": false, "rope_scaling": {"type": "dynamic", "factor": 2.0},
            "max_position_embeddings": 64, "pad_token_id": 0, "reward_token_id": 99
        });
        super::config(&json, "InternLM2ForRewardModel").unwrap()
    }

    #[test]
    fn wqkv_rows_split_per_kv_head() {
        // rows are numbered so each part's rows can be checked: head_dim 2, 2 groups of 2 queries
        let c = config();
        assert_eq!(c.head_dim, 2);
        assert_eq!(c.attention_window, Some(63));
        let fused = Tensor::arange(16 * 8, (Kind::Float, Device::Cpu)).view([16, 8]);
        let [q, k, v] = split_wqkv("wqkv", &fused, &c).unwrap();
        let first_column =
            |t: &Tensor| -> Vec<f32> { Vec::<f32>::try_from(&(t.select(1, 0) / 8.0)).unwrap() };
        // per kv head: rows [q q q q k k v v] (2 query heads of 2 rows, then key, then value)
        assert_eq!(first_column(&q), [0., 1., 2., 3., 8., 9., 10., 11.]);
        assert_eq!(first_column(&k), [4., 5., 12., 13.]);
        assert_eq!(first_column(&v), [6., 7., 14., 15.]);
        let bias = Tensor::arange(16, (Kind::Float, Device::Cpu));
        let [_, k, _] = split_wqkv("wqkv.bias", &bias, &c).unwrap();
        assert_eq!(Vec::<f32>::try_from(&k).unwrap(), [4., 5., 12., 13.]);
        let wrong = Tensor::zeros([9, 8], (Kind::Float, Device::Cpu));
        let error = split_wqkv("layers.0.wqkv", &wrong, &c)
            .unwrap_err()
            .to_string();
        assert!(
            error.contains("layers.0.wqkv") && error.contains("[9, 8]"),
            "{error}"
        );
    }

    #[test]
    fn names_map_onto_the_shared_decoder() {
        assert_eq!(
            renamed("model.layers.3.feed_forward.w1.weight").as_deref(),
            Some("model.layers.3.mlp.gate_proj.weight")
        );
        assert_eq!(
            renamed("model.layers.0.ffn_norm.weight").as_deref(),
            Some("model.layers.0.post_attention_layernorm.weight")
        );
        assert_eq!(renamed("output.weight").as_deref(), Some("lm_head.weight"));
        assert_eq!(renamed("model.layers.x.ffn_norm.weight"), None);
        assert_eq!(renamed("something.else"), None);
    }

    #[test]
    fn reward_token_is_checked() {
        let c = config();
        let json = |id: i64| serde_json::json!({ "reward_token_id": id });
        assert_eq!(reward_token(&json(99), &c).unwrap(), 99);
        assert_eq!(
            reward_token(
                &serde_json::json!({}),
                &DecoderConfig {
                    vocab_size: 92544,
                    ..c.clone()
                }
            )
            .unwrap(),
            92527
        );
        let error = reward_token(&json(100), &c).unwrap_err().to_string();
        assert!(
            error.contains("reward_token_id") && error.contains("vocab_size 100"),
            "{error}"
        );
        let error = reward_token(&json(0), &c).unwrap_err().to_string();
        assert!(error.contains("pad_token_id"), "{error}");
    }
}
