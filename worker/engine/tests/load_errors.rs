//! Bad model folders end in an error that names the file and the reason, never a panic.

use std::path::Path;

use herd_engine::model_dir::ModelDir;
use herd_engine::models::ModelSpec;
use serde_json::Value;
use tch::{Device, Kind};

mod support;
use support::{copy_of, fixture_model};

fn edit_config(dir: &Path, edit: impl FnOnce(&mut Value)) {
    let path = dir.join("config.json");
    let mut config: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    edit(&mut config);
    std::fs::write(path, serde_json::to_string(&config).unwrap()).unwrap();
}

fn load_error(dir: &Path) -> String {
    let result = ModelDir::open(dir)
        .map_err(anyhow::Error::from)
        .and_then(|d| Ok(ModelSpec::open(d)?))
        .and_then(|spec| Ok(spec.load_classifier(Device::Cpu, Kind::Float)?));
    match result {
        Ok(_) => panic!("{} loaded but should not have", dir.display()),
        Err(e) => format!("{e:#}"),
    }
}

#[test]
fn a_pytorch_model_bin_that_is_no_torch_save_archive_is_named() {
    let dir = copy_of("mistral-rm");
    std::fs::remove_file(dir.path().join("model.safetensors")).unwrap();
    std::fs::write(dir.path().join("pytorch_model.bin"), b"not a zip").unwrap();
    let error = load_error(dir.path());
    assert!(
        error.contains("pytorch_model.bin") && error.contains("not a torch.save zip archive"),
        "{error}"
    );
}

#[test]
fn unsupported_architecture_names_it_and_the_supported_ones() {
    let dir = copy_of("mistral-rm");
    edit_config(dir.path(), |c| {
        c["architectures"] = serde_json::json!(["OPTForSequenceClassification"])
    });
    let error = load_error(dir.path());
    assert!(error.contains("OPTForSequenceClassification"), "{error}");
    assert!(error.contains("LlamaForSequenceClassification"), "{error}");
}

#[test]
fn missing_shard_is_named() {
    let dir = copy_of("llama-gqa-rm");
    std::fs::remove_file(dir.path().join("model-00002-of-00002.safetensors")).unwrap();
    let error = load_error(dir.path());
    assert!(
        error.contains("model-00002-of-00002.safetensors"),
        "{error}"
    );
}

#[test]
fn shard_names_cannot_escape_the_folder() {
    let dir = copy_of("llama-gqa-rm");
    let index_path = dir.path().join("model.safetensors.index.json");
    let index = std::fs::read_to_string(&index_path).unwrap().replace(
        "\"model-00002-of-00002.safetensors\"",
        "\"../model-00002-of-00002.safetensors\"",
    );
    std::fs::write(&index_path, index).unwrap();
    let error = load_error(dir.path());
    assert!(error.contains("not a plain file name"), "{error}");
}

#[test]
fn shape_mismatch_names_the_tensor() {
    let dir = copy_of("mistral-rm");
    edit_config(dir.path(), |c| {
        c["intermediate_size"] = serde_json::json!(96)
    });
    let error = load_error(dir.path());
    assert!(
        error.contains("mlp.gate_proj.weight") && error.contains("shape"),
        "{error}"
    );
}

#[test]
fn absurd_config_is_refused_before_loading() {
    let dir = copy_of("mistral-rm");
    edit_config(dir.path(), |c| {
        c["hidden_size"] = serde_json::json!(1_i64 << 40)
    });
    let error = load_error(dir.path());
    assert!(error.contains("hidden_size"), "{error}");
}

#[test]
fn truncated_safetensors_is_a_clear_error() {
    let dir = copy_of("mistral-rm");
    let path = dir.path().join("model.safetensors");
    let bytes = std::fs::read(&path).unwrap();
    std::fs::write(&path, &bytes[..bytes.len() / 2]).unwrap();
    let error = load_error(dir.path());
    assert!(
        error.contains("model.safetensors") && error.contains("invalid safetensors"),
        "{error}"
    );
}

#[test]
fn causal_lm_is_not_loaded_as_a_classifier() {
    let error = load_error(&fixture_model("llama-policy"));
    assert!(
        error.contains("LlamaForCausalLM") && error.contains("head"),
        "{error}"
    );
}
