//! Shared by the engine's integration tests: the committed fixtures and the EasyLM record writer
//! (herd-testkit), and the EasyLM options and tiny models they are read with.
// each test uses a part of it
#![allow(dead_code, unused_imports)]

use herd_engine::easylm::sizes::Overrides;
use herd_engine::easylm::EasyLmOptions;
pub use herd_testkit::easylm_records::*;
pub use herd_testkit::fixtures::*;
pub use herd_testkit::workspace_root as repo;
use serde_json::Value;

/// The options a fixture needs (its shapes are outside the size table).
pub fn options(golden: &Value) -> EasyLmOptions {
    let o = &golden["options"];
    EasyLmOptions {
        size: None,
        overrides: Overrides {
            num_heads: o["num_heads"].as_i64(),
            rope_theta: o["rope_theta"].as_f64(),
            rms_norm_eps: o["rms_norm_eps"].as_f64(),
            ..Overrides::default()
        },
    }
}

/// A valid tiny LLaMA reward model (hidden 16, 2 heads / 1 kv head of 8, ffn 24, vocab 40,
/// `layers` layers), as a list of tensors to edit before encoding.
pub fn tiny_model(layers: u32) -> Vec<Tensor> {
    let shape = LlamaShape {
        vocab: 40,
        hidden: 16,
        kv: 8,
        ffn: 24,
        layers,
    };
    llama_reward_model(&shape, |tensor| tensor)
}

pub fn tiny_options() -> EasyLmOptions {
    EasyLmOptions {
        size: None,
        overrides: Overrides {
            num_heads: Some(2),
            ..Overrides::default()
        },
    }
}
