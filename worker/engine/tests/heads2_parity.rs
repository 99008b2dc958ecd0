//! The second set of custom reward heads against rewardbench 0.1.4's classes and pipelines
//! (tests/golden/make_heads2_goldens.py): GRM's value head on a Gemma 2 body
//! (Ray2333/GRM-Gemma2-2B-sftreg), Eurus-RM's regression head on a Mistral body (transcribed
//! hub code through OpenBMBPipeline) and LDL-Reward's label-distribution head with its side
//! files, each picked by the registry from the fixture's folder name and config.json.
//!
//! For every model: fp32 scores within 1e-4 of the pipeline's and identical wins, in packed
//! batches, one row per batch and with the shared prompt; the same scores whatever the batching
//! (1e-5); bf16 within the golden's bound (the measured worst is printed).

mod support;

use std::path::PathBuf;

use herd_engine::model_dir::ModelDir;
use herd_engine::models::registry::{DoubleBos, HeadDtype, Output, Pooled};
use herd_engine::models::{Family, ModelSpec};
use serde_json::Value;
use support::check_head_golden;
use tch::{Device, Kind};

const GRM: &str = "Ray2333/GRM-Gemma2-2B-sftreg";
const EURUS: &str = "openbmb/Eurus-RM-7b";
const LDL: &str = "ShikaiChen/LDL-Reward-Gemma-2-27B-v0.1";

fn heads_dir() -> PathBuf {
    herd_testkit::workspace_root().join("tests/golden/fixtures/heads2")
}

fn golden() -> Value {
    herd_testkit::fixtures::read_json(&heads_dir().join("heads2.json"))
}

fn open(name: &str) -> ModelSpec {
    ModelSpec::open(ModelDir::open(heads_dir().join(name)).unwrap()).unwrap()
}

#[test]
fn every_head_matches_its_rewardbench_pipeline() {
    let golden = golden();
    let Some(tokenizer) = herd_testkit::shared_path("data/tokenizers/llama2") else {
        return;
    };
    let models = golden["models"].as_object().unwrap();
    assert_eq!(models.len(), 3);
    for (name, model) in models {
        let spec = open(name);
        assert_eq!(
            spec.entry.architecture,
            model["architecture"].as_str().unwrap(),
            "{name}"
        );
        let dir = heads_dir().join(name);
        check_head_golden(&golden, name, &spec, dir, Some(tokenizer.clone()));
    }
}

#[test]
fn the_registry_reads_each_pipelines_quirks() {
    // one class, two backbones: the config's model_type picks GRM's Gemma 2 entry
    let grm = open(GRM);
    assert_eq!(grm.entry.architecture, "GRewardModel");
    assert_eq!(grm.entry.family, Family::Gemma2);
    assert_eq!(grm.entry.quirks.output, Output::Scalar);
    assert_eq!(grm.entry.quirks.double_bos, DoubleBos::Forwarded);
    let llama_grm = ModelSpec::open(
        ModelDir::open(
            herd_testkit::workspace_root()
                .join("tests/golden/fixtures/heads/Ray2333/GRM-llama3-8B-sftreg"),
        )
        .unwrap(),
    )
    .unwrap();
    assert_eq!(llama_grm.entry.family, Family::Llama);

    let eurus = open(EURUS);
    assert_eq!(eurus.entry.family, Family::Mistral);
    assert_eq!(eurus.entry.quirks.output, Output::Row);
    assert_eq!(eurus.entry.quirks.pooled, Pooled::LastToken);

    let ldl = open(LDL);
    assert_eq!(ldl.entry.architecture, "Gemma2Model");
    assert_eq!(ldl.entry.body, "");
    assert_eq!(ldl.entry.quirks.pooled, Pooled::FirstPadMinusOne);
    assert_eq!(ldl.entry.quirks.head_dtype, HeadDtype::Float32);
    assert_eq!(ldl.entry.quirks.dtype, Some("bfloat16"));
    assert_eq!(ldl.entry.quirks.double_bos, DoubleBos::StrippedPerCall);
    assert_eq!(ldl.config.num_labels, 1);
    // the same folder under another name is a bare Gemma2Model: no head, named as unsupported
    let other = ModelSpec::open_named(
        ModelDir::open(heads_dir().join(LDL)).unwrap(),
        Some("local/ldl"),
    )
    .err()
    .unwrap()
    .to_string();
    assert!(other.contains("Gemma2Model"), "{other}");
}

/// A temporary copy of the LDL fixture holding only the files `keep` names.
fn ldl_copy(keep: &[&str]) -> tempfile::TempDir {
    let tmp = tempfile::tempdir().unwrap();
    let folder = tmp.path().join(LDL);
    std::fs::create_dir_all(&folder).unwrap();
    for file in keep {
        std::fs::copy(heads_dir().join(LDL).join(file), folder.join(file)).unwrap();
    }
    tmp
}

#[test]
fn ldl_side_files_are_read_as_the_package_saves_them_or_named_when_missing() {
    // the package's torch.save archives, read as they are: the golden test above loads them; a
    // missing one is named with where the head lives
    let tmp = ldl_copy(&["config.json", "model.safetensors", "regression_layer.pt"]);
    let spec = ModelSpec::open(ModelDir::open(tmp.path().join(LDL)).unwrap()).unwrap();
    let error = spec
        .load_classifier(Device::Cpu, Kind::Float)
        .err()
        .unwrap()
        .to_string();
    assert!(error.contains("gating_layer.pt"), "{error}");
    assert!(error.contains("missing"), "{error}");
    assert!(error.contains("not in model.safetensors"), "{error}");
}

#[test]
fn ldl_strips_a_calls_first_column_when_its_rows_start_with_two_bos() {
    // the same model through a tokenizer whose chat template writes BOS: LDLPipeline drops the
    // first column of each call, so only each call's widest rows lose their first BOS
    let golden = herd_testkit::fixtures::read_json(&heads_dir().join("ldl-double-bos.json"));
    let tokenizer = heads_dir().join("tokenizers/llama2-bos-template");
    let spec = open(LDL);
    check_head_golden(&golden, LDL, &spec, heads_dir().join(LDL), Some(tokenizer));
}
