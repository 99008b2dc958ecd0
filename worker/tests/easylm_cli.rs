//! `worker convert` and `worker score --model <EasyLM checkpoint>` as a user runs them.
//!
//! The scoring test turns the repository's transformers-golden reward model (llama-gqa-rm: GQA,
//! llama3 rope scaling, 32000-token Llama-2 tokenizer) back into an EasyLM checkpoint (inverse
//! rotary permutation, kernels transposed to flax layout), then scores RewardBench pairs from it
//! with the worker's direct EasyLM load: the scores must be transformers' goldens.

mod support;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use safetensors::SafeTensors;
use serde_json::Value;
use support::*;

fn worker() -> Command {
    Command::new(env!("CARGO_BIN_EXE_worker"))
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).to_string()
}

fn fixture_model() -> PathBuf {
    repo().join("tests/golden/fixtures/models/llama-gqa-rm")
}

/// easylm_row[h·hd + 2i + j] = hf_row[h·hd + j·hd/2 + i]
fn inverse_permute(rows: &[Vec<u8>], head_dim: usize) -> Vec<Vec<u8>> {
    let mut out = rows.to_vec();
    for (hf_row, row) in rows.iter().enumerate() {
        let (h, within) = (hf_row / head_dim, hf_row % head_dim);
        let (j, i) = (within / (head_dim / 2), within % (head_dim / 2));
        out[h * head_dim + 2 * i + j] = row.clone();
    }
    out
}

/// A (rows × cols) matrix of `elem`-byte elements as rows.
fn rows_of(data: &[u8], rows: usize, cols: usize, elem: usize) -> Vec<Vec<u8>> {
    (0..rows)
        .map(|r| data[r * cols * elem..(r + 1) * cols * elem].to_vec())
        .collect()
}

fn transpose(rows: &[Vec<u8>], cols: usize, elem: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(rows.len() * cols * elem);
    for c in 0..cols {
        for row in rows {
            out.extend_from_slice(&row[c * elem..(c + 1) * elem]);
        }
    }
    out
}

/// The llama-gqa-rm fixture as an EasyLM streaming checkpoint.
fn easylm_from_fixture(path: &Path) {
    let config: Value = serde_json::from_str(
        &std::fs::read_to_string(fixture_model().join("config.json")).unwrap(),
    )
    .unwrap();
    let head_dim = config["head_dim"].as_u64().unwrap() as usize;
    let mut tensors: HashMap<String, (Vec<usize>, Vec<u8>, String)> = HashMap::new();
    for entry in std::fs::read_dir(fixture_model()).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().and_then(|e| e.to_str()) != Some("safetensors") {
            continue;
        }
        let bytes = std::fs::read(&path).unwrap();
        let st = SafeTensors::deserialize(&bytes).unwrap();
        for (name, view) in st.tensors() {
            let dtype = match view.dtype() {
                safetensors::Dtype::BF16 => "bfloat16",
                safetensors::Dtype::F32 => "float32",
                other => panic!("{other:?}"),
            };
            tensors.insert(
                name,
                (view.shape().to_vec(), view.data().to_vec(), dtype.into()),
            );
        }
    }
    let mut out = Vec::new();
    let mut names: Vec<&String> = tensors.keys().collect();
    names.sort();
    for name in names {
        let (shape, data, dtype) = &tensors[name];
        let elem = if dtype == "bfloat16" { 2 } else { 4 };
        let parts: Vec<&str> = name.split('.').collect();
        let (key, flax_shape, flax_data): (String, Vec<u64>, Vec<u8>) = match parts.as_slice() {
            ["model", "embed_tokens", "weight"] => (
                "transformer/wte/embedding".into(),
                shape.iter().map(|&d| d as u64).collect(),
                data.clone(),
            ),
            ["model", "norm", "weight"] => (
                "transformer/ln_f/kernel".into(),
                vec![shape[0] as u64],
                data.clone(),
            ),
            ["model", "layers", layer, norm, "weight"] => {
                let norm = match *norm {
                    "input_layernorm" => "attention_norm",
                    "post_attention_layernorm" => "ffn_norm",
                    other => panic!("{other}"),
                };
                (
                    format!("transformer/h/{layer}/{norm}/kernel"),
                    vec![shape[0] as u64],
                    data.clone(),
                )
            }
            ["model", "layers", layer, module, proj, "weight"] => {
                let h = format!("transformer/h/{layer}");
                let (path, permute) = match (*module, *proj) {
                    ("self_attn", "q_proj") => ("attention/wq", true),
                    ("self_attn", "k_proj") => ("attention/wk", true),
                    ("self_attn", "v_proj") => ("attention/wv", false),
                    ("self_attn", "o_proj") => ("attention/wo", false),
                    ("mlp", "gate_proj") => ("feed_forward/w1", false),
                    ("mlp", "up_proj") => ("feed_forward/w3", false),
                    ("mlp", "down_proj") => ("feed_forward/w2", false),
                    other => panic!("{other:?}"),
                };
                let (rows, cols) = (shape[0], shape[1]);
                let mut r = rows_of(data, rows, cols, elem);
                if permute {
                    r = inverse_permute(&r, head_dim);
                }
                (
                    format!("{h}/{path}/kernel"),
                    vec![cols as u64, rows as u64],
                    transpose(&r, cols, elem),
                )
            }
            ["score", "weight"] => {
                let (rows, cols) = (shape[0], shape[1]);
                let r = rows_of(data, rows, cols, elem);
                (
                    "score/kernel".into(),
                    vec![cols as u64, rows as u64],
                    transpose(&r, cols, elem),
                )
            }
            other => panic!("unexpected tensor {other:?}"),
        };
        let key: Vec<&str> = key.split('/').collect();
        out.extend(record(&key, &ndarray(&flax_shape, dtype, &flax_data)));
    }
    std::fs::write(path, out).unwrap();
}

/// Flags for llama-gqa-rm's config (its shapes are outside the size table).
const GQA_FLAGS: &[&str] = &[
    "--num-heads",
    "4",
    "--rms-norm-eps",
    "1e-5",
    "--rope-theta",
    "500000",
    "--rope-scaling",
    r#"{"rope_type":"llama3","factor":8.0,"low_freq_factor":1.0,"high_freq_factor":4.0,"original_max_position_embeddings":512}"#,
    "--pad-token-id",
    "2",
];

#[test]
fn score_reads_an_easylm_checkpoint_directly() {
    let dir = tempfile::tempdir().unwrap();
    let checkpoint = dir.path().join("streaming_params_1903");
    easylm_from_fixture(&checkpoint);
    let (pairs, golden) = dataset_from_golden("llama-gqa-rm", dir.path());
    let output = dir.path().join("scores.jsonl");
    let out = worker()
        .args(["score", "--device", "cpu", "--threads", "1", "--model"])
        .arg(&checkpoint)
        .arg("--tokenizer")
        .arg(fixture_model())
        .arg("--dataset")
        .arg(&pairs)
        .arg("-o")
        .arg(&output)
        .args(GQA_FLAGS)
        .output()
        .unwrap();
    assert_success(&out);
    let rows: Vec<Value> = std::fs::read_to_string(&output)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let examples = golden["examples"].as_array().unwrap();
    assert_eq!(rows.len(), examples.len());
    let mut worst = 0.0f64;
    for (row, example) in rows.iter().zip(examples) {
        for side in ["scores_chosen", "scores_rejected"] {
            let ours = row[side][0].as_f64().unwrap();
            let theirs = example[side][0].as_f64().unwrap();
            worst = worst.max((ours - theirs).abs());
        }
    }
    assert!(worst < 1e-4, "max |diff| {worst} from transformers");

    // and the folder `convert` writes from it scores the same through the Hugging Face path
    let folder = dir.path().join("hf");
    let out = worker()
        .args(["convert", "--no-progress"])
        .arg(&checkpoint)
        .arg("-o")
        .arg(&folder)
        .arg("--tokenizer")
        .arg(fixture_model())
        .args(GQA_FLAGS)
        .output()
        .unwrap();
    assert_success(&out);
    let config: Value =
        serde_json::from_str(&std::fs::read_to_string(folder.join("config.json")).unwrap())
            .unwrap();
    assert_eq!(config["rope_scaling"]["rope_type"], "llama3");
    assert_eq!(
        config["rope_scaling"]["original_max_position_embeddings"],
        512
    );
    let output2 = dir.path().join("scores2.jsonl");
    let out = worker()
        .args(["score", "--device", "cpu", "--threads", "1", "--model"])
        .arg(&folder)
        .arg("--dataset")
        .arg(&pairs)
        .arg("-o")
        .arg(&output2)
        .output()
        .unwrap();
    assert_success(&out);
    let again: Vec<Value> = std::fs::read_to_string(&output2)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    for (a, b) in rows.iter().zip(&again) {
        let (x, y) = (
            a["scores_chosen"][0].as_f64().unwrap(),
            b["scores_chosen"][0].as_f64().unwrap(),
        );
        assert!((x - y).abs() < 1e-6, "{x} vs {y}");
    }
}

#[test]
fn convert_writes_a_folder_and_reports() {
    let dir = tempfile::tempdir().unwrap();
    let golden = golden("rm-fp32-trainstate");
    let out_dir = dir.path().join("hf");
    let out = worker()
        .args(["convert", "--no-progress"])
        .arg(checkpoint_path(&golden))
        .arg("-o")
        .arg(&out_dir)
        .args(option_flags(&golden))
        .output()
        .unwrap();
    assert_success(&out);
    let text = stderr(&out);
    assert!(
        text.contains("converted") && text.contains("train-state records skipped"),
        "{text}"
    );
    assert!(out_dir.join("model.safetensors").is_file() && out_dir.join("config.json").is_file());

    // again without --overwrite: refused, naming the flag
    let out = worker()
        .args(["convert", "--no-progress"])
        .arg(checkpoint_path(&golden))
        .arg("-o")
        .arg(&out_dir)
        .args(option_flags(&golden))
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(stderr(&out).contains("--overwrite"), "{}", stderr(&out));
}

#[test]
fn bad_inputs_end_in_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    let golden = golden("rm-gqa-bf16");
    let bytes = std::fs::read(checkpoint_path(&golden)).unwrap();
    let truncated = dir.path().join("streaming_params_7");
    std::fs::write(&truncated, &bytes[..bytes.len() - 100]).unwrap();
    let run = |args: &[&str], model: &Path| {
        worker()
            .args(args)
            .arg(model)
            .arg("-o")
            .arg(dir.path().join("out"))
            .output()
            .unwrap()
    };
    let out = run(
        &["convert", "--num-heads", "4", "--no-progress"],
        &truncated,
    );
    let text = stderr(&out);
    assert!(!out.status.success());
    assert!(
        text.contains("streaming_params_7") && text.contains("byte ") && text.contains("truncated"),
        "{text}"
    );
    assert!(!text.contains("panicked"), "{text}");

    // no size and no --num-heads for a shape outside the table
    let out = run(&["convert", "--no-progress"], &checkpoint_path(&golden));
    assert!(stderr(&out).contains("--num-heads"), "{}", stderr(&out));
    let out = run(
        &["convert", "--size", "13b", "--no-progress"],
        &checkpoint_path(&golden),
    );
    assert!(
        stderr(&out).contains("size 13b has hidden_size 5120"),
        "{}",
        stderr(&out)
    );

    // scoring a checkpoint file without a tokenizer
    let (pairs, _) = dataset_from_golden("llama-gqa-rm", dir.path());
    let out = worker()
        .args(["score", "--device", "cpu", "--model"])
        .arg(checkpoint_path(&golden))
        .arg("--dataset")
        .arg(&pairs)
        .arg("-o")
        .arg(dir.path().join("scores.jsonl"))
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(stderr(&out).contains("--tokenizer"), "{}", stderr(&out));

    // a file that is not an EasyLM checkpoint at all
    let not_easylm = dir.path().join("notes.txt");
    std::fs::write(&not_easylm, "hello").unwrap();
    let out = worker()
        .args(["score", "--device", "cpu", "--model"])
        .arg(&not_easylm)
        .arg("--tokenizer")
        .arg(fixture_model())
        .arg("--dataset")
        .arg(&pairs)
        .arg("-o")
        .arg(dir.path().join("scores.jsonl"))
        .output()
        .unwrap();
    let text = stderr(&out);
    assert!(
        text.contains("notes.txt") && text.contains("not an EasyLM streaming checkpoint"),
        "{text}"
    );
}
