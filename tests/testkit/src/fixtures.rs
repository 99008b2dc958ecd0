//! The committed model fixtures and EasyLM goldens (tests/golden/), and datasets made from them:
//! shared by the engine's, the worker's and the multi-process tests.

use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::workspace_root as repo;

/// The EasyLM fixture checkpoints of tests/golden/easylm (each with a `<name>.json` golden).
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
    copy_files(&fixture_model(name), dir.path());
    dir
}

/// Copies every file of the folder `from` into `to` (created): a model folder made a run folder,
/// or a copy to edit.
pub fn copy_files(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap().path();
        std::fs::copy(&entry, to.join(entry.file_name().unwrap())).unwrap();
    }
}

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

/// tests/golden/easylm: the EasyLM fixture checkpoints and their goldens.
pub fn easylm_dir() -> PathBuf {
    repo().join("tests/golden/easylm")
}

/// A committed JSON golden, read whole (a test fails naming the file it could not read).
pub fn read_json(path: &Path) -> Value {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The golden of an EasyLM fixture checkpoint (tests/golden/easylm/{name}.json).
pub fn golden(name: &str) -> Value {
    read_json(&easylm_dir().join(format!("{name}.json")))
}

/// The checkpoint file an EasyLM golden describes.
pub fn checkpoint_path(golden: &Value) -> PathBuf {
    easylm_dir().join(golden["file"].as_str().unwrap())
}

/// The options an EasyLM fixture needs (its shapes are outside the size table), as the
/// command-line flags of `worker score` / `worker convert`.
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
