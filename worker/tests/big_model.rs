//! Big models as a user runs them: a checkpoint larger than the host budget loads without sitting
//! in host memory beside the model (`--host-memory`), and a model split by layers over several
//! devices (`--devices`; CPU "devices" here, a dry run of the split) scores as the unsplit one.

mod support;

use std::io::Write;
use std::path::Path;
use std::process::{Command, Output};

use serde_json::{json, Value};
use support::{assert_success, repo};
use tch::{Device, Kind, Tensor};

const FIXTURE: &str = "tests/golden/fixtures/models/llama-gqa-rm";

/// A short preference dataset (two pairs).
fn dataset(dir: &Path) -> std::path::PathBuf {
    let path = dir.join("pairs.jsonl");
    let mut file = std::fs::File::create(&path).unwrap();
    for (prompt, chosen, rejected) in [
        ("What is 2 + 2?", "4", "5"),
        ("Name a colour.", "Blue.", "A chair, probably."),
    ] {
        let row = json!({"prompt": prompt, "chosen": chosen, "rejected": rejected});
        writeln!(file, "{row}").unwrap();
    }
    path
}

/// `worker score` on CPU with `extra` flags.
fn score(model: &Path, dataset: &Path, output: &Path, extra: &[&str]) -> Output {
    let out = Command::new(env!("CARGO_BIN_EXE_worker"))
        .args(["score", "--threads", "2"])
        .args(extra)
        .arg("--model")
        .arg(model)
        .arg("--dataset")
        .arg(dataset)
        .arg("-o")
        .arg(output)
        .env("RUST_LOG", "info")
        .output()
        .unwrap();
    assert_success(&out);
    out
}

/// The worker's own peak resident memory once the model was loaded (its `model loaded` log line,
/// VmHWM of the worker process).
fn peak_after_load(out: &Output) -> u64 {
    let stderr = String::from_utf8_lossy(&out.stderr);
    let line = stderr
        .lines()
        .find(|l| l.contains("model loaded"))
        .unwrap_or_else(|| panic!("no `model loaded` line in:\n{stderr}"));
    let value = line
        .split("peak_host_bytes=")
        .nth(1)
        .unwrap_or_else(|| panic!("no peak_host_bytes in {line}"));
    let digits: String = value.chars().take_while(char::is_ascii_digit).collect();
    digits.parse().unwrap()
}

/// Writes a safetensors file tensor by tensor (never the whole file in memory).
fn write_safetensors(path: &Path, tensors: &[(String, Tensor)]) -> u64 {
    let mut header = serde_json::Map::new();
    let mut offset = 0u64;
    for (name, tensor) in tensors {
        let bytes = (tensor.numel() * tensor.kind().elt_size_in_bytes()) as u64;
        let dtype = match tensor.kind() {
            Kind::BFloat16 => "BF16",
            Kind::Float => "F32",
            other => panic!("{other:?}"),
        };
        header.insert(
            name.clone(),
            json!({"dtype": dtype, "shape": tensor.size(), "data_offsets": [offset, offset + bytes]}),
        );
        offset += bytes;
    }
    let mut text = Value::Object(header).to_string();
    while !text.len().is_multiple_of(8) {
        text.push(' ');
    }
    let mut file = std::io::BufWriter::new(std::fs::File::create(path).unwrap());
    file.write_all(&(text.len() as u64).to_le_bytes()).unwrap();
    file.write_all(text.as_bytes()).unwrap();
    for (_, tensor) in tensors {
        let mut bytes = vec![0u8; tensor.numel() * tensor.kind().elt_size_in_bytes()];
        tensor.copy_data_u8(&mut bytes, tensor.numel());
        file.write_all(&bytes).unwrap();
    }
    file.flush().unwrap();
    offset
}

/// The fixture's Llama reward model inflated to hidden 1024 and `layers` layers of random bf16
/// weights (~31 MB a layer, 65 MB of embeddings), with the fixture's tokenizer; returns the
/// bytes of its weights.
fn inflated_model(dir: &Path, layers: i64) -> u64 {
    let fixture = repo().join(FIXTURE);
    for name in [
        "tokenizer.json",
        "tokenizer_config.json",
        "special_tokens_map.json",
    ] {
        std::fs::copy(fixture.join(name), dir.join(name)).unwrap();
    }
    let mut config: Value =
        serde_json::from_str(&std::fs::read_to_string(fixture.join("config.json")).unwrap())
            .unwrap();
    let (hidden, inter, heads, kv_heads, head_dim) = (1024i64, 4096i64, 16i64, 8i64, 64i64);
    config["hidden_size"] = json!(hidden);
    config["intermediate_size"] = json!(inter);
    config["num_attention_heads"] = json!(heads);
    config["num_key_value_heads"] = json!(kv_heads);
    config["head_dim"] = json!(head_dim);
    config["num_hidden_layers"] = json!(layers);
    std::fs::write(dir.join("config.json"), config.to_string()).unwrap();
    let vocab = config["vocab_size"].as_i64().unwrap();
    tch::manual_seed(11);
    let random = |shape: &[i64]| {
        (Tensor::randn(shape, (Kind::Float, Device::Cpu)) * 0.02).to_kind(Kind::BFloat16)
    };
    let ones = |n: i64| Tensor::ones([n], (Kind::BFloat16, Device::Cpu));
    let mut tensors = vec![
        (
            "model.embed_tokens.weight".to_string(),
            random(&[vocab, hidden]),
        ),
        ("model.norm.weight".to_string(), ones(hidden)),
        ("score.weight".to_string(), random(&[1, hidden])),
    ];
    let mut total = 0;
    // one file per layer, as sharded checkpoints come, and their index
    let file = |i: usize| format!("model-{i:05}.safetensors");
    let path = |i: usize| dir.join(file(i));
    let mut weight_map = serde_json::Map::new();
    for (name, _) in &tensors {
        weight_map.insert(name.clone(), json!(file(0)));
    }
    total += write_safetensors(&path(0), &tensors);
    for layer in 0..layers {
        let p = |name: &str| format!("model.layers.{layer}.{name}");
        tensors = vec![
            (p("input_layernorm.weight"), ones(hidden)),
            (p("post_attention_layernorm.weight"), ones(hidden)),
            (
                p("self_attn.q_proj.weight"),
                random(&[heads * head_dim, hidden]),
            ),
            (
                p("self_attn.k_proj.weight"),
                random(&[kv_heads * head_dim, hidden]),
            ),
            (
                p("self_attn.v_proj.weight"),
                random(&[kv_heads * head_dim, hidden]),
            ),
            (
                p("self_attn.o_proj.weight"),
                random(&[hidden, heads * head_dim]),
            ),
            (p("mlp.gate_proj.weight"), random(&[inter, hidden])),
            (p("mlp.up_proj.weight"), random(&[inter, hidden])),
            (p("mlp.down_proj.weight"), random(&[hidden, inter])),
        ];
        for (name, _) in &tensors {
            weight_map.insert(name.clone(), json!(file(1 + layer as usize)));
        }
        total += write_safetensors(&path(1 + layer as usize), &tensors);
    }
    let index = json!({"metadata": {"total_size": total}, "weight_map": weight_map});
    std::fs::write(dir.join("model.safetensors.index.json"), index.to_string()).unwrap();
    total
}

fn weight_bytes(dir: &Path) -> u64 {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "safetensors"))
        .map(|p| std::fs::metadata(p).unwrap().len())
        .sum()
}

const MIB: u64 = 1 << 20;

#[test]
fn a_checkpoint_bigger_than_the_host_budget_never_sits_in_memory_beside_the_model() {
    let dir = tempfile::tempdir().unwrap();
    let big = dir.path().join("big");
    std::fs::create_dir(&big).unwrap();
    let big_bytes = inflated_model(&big, 10);
    assert!(big_bytes > 350 * MIB, "{big_bytes}");
    let small = repo().join(FIXTURE);
    let small_bytes = weight_bytes(&small);
    let pairs = dataset(dir.path());
    let budget = 32 * MIB;
    let budget_flag = format!("{}", budget);
    // the slack covers what grows with the model besides its weights: scoring 4 short rows at
    // hidden 1024, and libtorch's per-tensor bookkeeping; far below the file's size
    let slack = 48 * MIB;
    for (dtype, widen) in [("bf16", 1), ("fp32", 2)] {
        let run = |model: &Path, name: &str| {
            let output = dir.path().join(format!("{name}-{dtype}.jsonl"));
            let flags = [
                "--device",
                "cpu",
                "--dtype",
                dtype,
                "--host-memory",
                budget_flag.as_str(),
            ];
            peak_after_load(&score(model, &pairs, &output, &flags))
        };
        let baseline = run(&small, "small");
        let peak = run(&big, "big");
        // the model's own bytes on the CPU: the weights in the load dtype (bf16 stored)
        let loaded = widen * (big_bytes - small_bytes.min(big_bytes));
        let grew = peak.saturating_sub(baseline);
        eprintln!(
            "{dtype}: peak {} MiB (baseline {} MiB): grew {} MiB for {} MiB of weights, file {} MiB",
            peak / MIB,
            baseline / MIB,
            grew / MIB,
            loaded / MIB,
            big_bytes / MIB
        );
        assert!(
            grew <= loaded + budget + slack,
            "{dtype}: peak host memory grew by {} MiB for {} MiB of loaded weights (budget {} \
             MiB): the checkpoint sat in host memory beside the model",
            grew / MIB,
            loaded / MIB,
            budget / MIB
        );
    }
}

#[test]
fn a_model_split_over_cpu_devices_scores_as_the_unsplit_model() {
    let dir = tempfile::tempdir().unwrap();
    let model = repo().join(FIXTURE);
    let pairs = dataset(dir.path());
    let whole = dir.path().join("whole.jsonl");
    let split = dir.path().join("split.jsonl");
    for dtype in ["fp32", "bf16"] {
        score(
            &model,
            &pairs,
            &whole,
            &["--device", "cpu", "--dtype", dtype],
        );
        let out = score(
            &model,
            &pairs,
            &split,
            &["--devices", "cpu,cpu", "--dtype", dtype],
        );
        let stderr = String::from_utf8_lossy(&out.stderr);
        let line = stderr
            .lines()
            .find(|l| l.contains("model split by layers"))
            .unwrap_or_else(|| panic!("not split:\n{stderr}"));
        assert!(
            line.contains("layers: 0..1") && line.contains("layers: 1..2"),
            "{line}"
        );
        // bit for bit: the same scores printed the same
        assert_eq!(
            std::fs::read_to_string(&whole).unwrap(),
            std::fs::read_to_string(&split).unwrap(),
            "{dtype}"
        );
    }
    // devices of a given size: planned as on GPUs (the embeddings, the head and one fp32 layer
    // of 37,120 bytes fill the first; 4,096,256 + 37,120 + 1,000 bytes each, and a reserve of one byte)
    let sized = dir.path().join("sized.jsonl");
    let flags = [
        "--devices",
        "cpu,cpu",
        "--device-memory",
        "4134377",
        "--activation-reserve",
        "1",
        "--dtype",
        "fp32",
    ];
    let out = score(&model, &pairs, &sized, &flags);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("layers: 0..1") && stderr.contains("layers: 1..2"),
        "{stderr}"
    );
    score(
        &model,
        &pairs,
        &whole,
        &["--device", "cpu", "--dtype", "fp32"],
    );
    assert_eq!(
        std::fs::read_to_string(&whole).unwrap(),
        std::fs::read_to_string(&sized).unwrap()
    );
    // too small: the shortfall, before any scoring
    let out = Command::new(env!("CARGO_BIN_EXE_worker"))
        .args(["score", "--devices", "cpu,cpu", "--device-memory", "3MB"])
        .args(["--activation-reserve", "1", "--dtype", "fp32", "--model"])
        .arg(&model)
        .arg("--dataset")
        .arg(&pairs)
        .arg("-o")
        .arg(dir.path().join("none.jsonl"))
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("does not fit on the devices"), "{stderr}");
    assert!(stderr.contains("embeddings and head alone"), "{stderr}");
    // a device list names its devices
    let out = Command::new(env!("CARGO_BIN_EXE_worker"))
        .args(["score", "--devices", "cpu,auto", "--model"])
        .arg(&model)
        .arg("--dataset")
        .arg(&pairs)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("--devices"), "{stderr}");
}
