//! Shared by the integration tests: fixture paths, golden files, datasets made from the golden
//! examples, and a small writer of EasyLM streaming records (flax `to_bytes` framing) for
//! crafting inputs the fixture script does not.
#![allow(dead_code)]

use std::path::{Path, PathBuf};

use herd_worker::easylm::sizes::Overrides;
use herd_worker::easylm::EasyLmOptions;
use serde_json::Value;

pub const FIXTURES: [&str; 4] = [
    "rm-gqa-bf16",
    "rm-fp32-trainstate",
    "rm-mha-chunked",
    "lm-mqa-f16-legacy",
];

/// A model folder of tests/golden/fixtures/models.
pub fn fixture_model(name: &str) -> PathBuf {
    repo().join("tests/golden/fixtures/models").join(name)
}

/// A copy of a fixture model folder in a temp dir, for corrupting.
pub fn copy_of(name: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for entry in std::fs::read_dir(fixture_model(name)).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), dir.path().join(entry.file_name())).unwrap();
    }
    dir
}

pub use herd_testkit::workspace_root as repo;

/// The golden examples of a fixture case (tests/golden/fixtures/{case}.json) as a
/// RewardBench-style JSONL dataset in `dir`, and the golden itself.
pub fn dataset_from_golden(case: &str, dir: &Path) -> (PathBuf, Value) {
    let golden: Value = serde_json::from_str(
        &std::fs::read_to_string(repo().join(format!("tests/golden/fixtures/{case}.json")))
            .unwrap(),
    )
    .unwrap();
    let path = dir.join("pairs.jsonl");
    let mut lines = String::new();
    // ids restart per source file in the goldens; the dataset needs unique ones
    for (index, example) in golden["examples"].as_array().unwrap().iter().enumerate() {
        let row = serde_json::json!({
            "prompt": example["prompt"], "chosen": example["chosen"], "rejected": example["rejected"],
            "subset": example["subset"], "id": index,
        });
        lines.push_str(&row.to_string());
        lines.push('\n');
    }
    std::fs::write(&path, lines).unwrap();
    (path, golden)
}

pub fn easylm_dir() -> PathBuf {
    repo().join("tests/golden/easylm")
}

pub fn golden(name: &str) -> Value {
    let path = easylm_dir().join(format!("{name}.json"));
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap()
}

pub fn checkpoint_path(golden: &Value) -> PathBuf {
    easylm_dir().join(golden["file"].as_str().unwrap())
}

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

/// The same options as command-line flags.
pub fn option_flags(golden: &Value) -> Vec<String> {
    let mut flags = Vec::new();
    for (name, flag) in [
        ("num_heads", "--num-heads"),
        ("rope_theta", "--rope-theta"),
        ("rms_norm_eps", "--rms-norm-eps"),
    ] {
        if let Some(v) = golden["options"].get(name) {
            flags.push(flag.to_string());
            flags.push(v.to_string());
        }
    }
    flags
}

// ---------------------------------------------------------------------------------------------
// msgpack writing: shared with the multi-process tests of tests/ (which include the file by path)

mod easylm_records;
pub use easylm_records::*;

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

/// A seeded generator for test cases (no dependency).
pub struct Lcg(pub u64);

impl Lcg {
    pub fn below(&mut self, n: u64) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (self.0 >> 33) % n.max(1)
    }
}
