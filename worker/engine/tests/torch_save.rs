//! Checkpoints written by `torch.save` (tests/golden/make_torch_save_goldens.py): transformers'
//! `pytorch_model-*.bin` shards score exactly as the safetensors they were saved from, archives
//! herd cannot read are refused with the file and the reason, views at offsets into shared
//! storages are read at their own offsets, and Starling-RM-7B-alpha (a bare
//! `.pt` state dict) matches the rewardbench package's GPTRewardModel + StarlingPipeline.

mod support;

use std::path::{Path, PathBuf};

use herd_engine::batching::BatchLimits;
use herd_engine::model_dir::ModelDir;
use herd_engine::models::registry::{HeadDtype, Output, Pooled};
use herd_engine::models::ModelSpec;
use herd_engine::scorer::score_pairs;
use herd_engine::weights::Weights;
use serde_json::Value;
use support::{check_head_golden, classifier_request, max_diff_scored, pairs};
use tch::{Device, Kind};

const STARLING: &str = "berkeley-nest/Starling-RM-7B-alpha";

fn dir() -> PathBuf {
    herd_testkit::workspace_root().join("tests/golden/fixtures/torch_save")
}

fn golden() -> Value {
    herd_testkit::fixtures::read_json(&dir().join("torch_save.json"))
}

#[test]
fn bin_shards_score_exactly_as_the_safetensors_they_were_saved_from() {
    let mut golden = herd_testkit::fixtures::read_json(
        &herd_testkit::workspace_root().join("tests/golden/fixtures/mistral-rm.json"),
    );
    // make_fixtures.py's goldens leave the template null: tulu, as golden_parity.rs reads them
    assert!(golden["chat_template"].is_null());
    golden["chat_template"] = "tulu".into();
    let pairs = pairs(&golden);
    let limits = BatchLimits {
        max_batch_tokens: 8192,
        max_batch_rows: 64,
    };
    let bin = dir().join("mistral-rm-bin");
    let shards = ModelDir::open(&bin).unwrap().weight_files().unwrap();
    assert_eq!(shards.len(), 2, "{shards:?}");
    assert!(shards.iter().all(|s| s.extension().unwrap() == "bin"));
    for kind in [Kind::Float, Kind::BFloat16] {
        let score = |model: PathBuf| {
            score_pairs(
                &classifier_request(&golden, model, None, kind, limits, false),
                &pairs,
            )
            .unwrap()
        };
        let from_bin = score(bin.clone());
        let from_safetensors = score(herd_testkit::fixtures::fixture_model("mistral-rm"));
        assert_eq!(
            max_diff_scored(&from_bin, &from_safetensors),
            0.0,
            "{kind:?}"
        );
    }
}

fn load_error(file: &Path) -> String {
    match Weights::load(&[file.to_path_buf()], Device::Cpu, Kind::Float) {
        Ok(_) => panic!("{} loaded but should not have", file.display()),
        Err(e) => e.to_string(),
    }
}

#[test]
fn archives_herd_cannot_read_are_named_with_the_reason() {
    let broken = dir().join("broken");
    let cases = [
        ("legacy.pt", "legacy format"),
        ("compressed.pt", "compressed"),
        ("noncontiguous.pt", "non-contiguous"),
        ("truncated.pt", "runs past its storage entry"),
        ("module.pt", "not a pickled module"),
        ("nested.pt", "a nested dict"),
    ];
    let golden = golden();
    let listed: Vec<&str> = golden["broken"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    let mut names: Vec<&str> = cases.iter().map(|(name, _)| *name).collect();
    names.sort();
    assert_eq!(listed, names, "every broken fixture is checked");
    for (name, reason) in cases {
        let error = load_error(&broken.join(name));
        assert!(error.contains(name), "{name}: {error}");
        assert!(error.contains(reason), "{name}: {error}");
    }
}

#[test]
fn views_into_shared_storages_are_read_at_their_own_offsets() {
    let golden = golden();
    let views = golden["views"].as_object().unwrap();
    let offsets = |v: &Value| v["storage_offset"].as_u64().unwrap();
    assert!(
        views.values().filter(|v| offsets(v) > 0).count() >= 4,
        "the fixture holds views away from their storage's start"
    );
    let weights = Weights::load(&[dir().join("views.pt")], Device::Cpu, Kind::Float).unwrap();
    let root = weights.root();
    for (name, view) in views {
        let shape: Vec<i64> = serde_json::from_value(view["shape"].clone()).unwrap();
        let expected: Vec<f32> = serde_json::from_value(view["values"].clone()).unwrap();
        let tensor = root.take(name, &shape).unwrap();
        let values = Vec::<f32>::try_from(tensor.flatten(0, -1)).unwrap();
        // float32 values (float16 ones widened) recorded by torch itself: exact
        assert_eq!(values, expected, "{name} at element {}", offsets(view));
    }
}

#[test]
fn a_folder_of_several_checkpoints_and_no_preferred_one_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    for name in ["a.pt", "b.pt"] {
        std::fs::copy(dir().join(STARLING).join("model.pt"), tmp.path().join(name)).unwrap();
    }
    let refusal = || {
        ModelDir::open(tmp.path())
            .unwrap()
            .weight_files()
            .unwrap_err()
            .to_string()
    };
    let error = refusal();
    assert!(error.contains("a.pt, b.pt"), "{error}");
    std::fs::remove_file(tmp.path().join("a.pt")).unwrap();
    std::fs::remove_file(tmp.path().join("b.pt")).unwrap();
    let error = refusal();
    assert!(error.contains("no weights"), "{error}");
}

#[test]
fn starling_7b_matches_its_rewardbench_pipeline() {
    let golden = golden();
    let model = dir().join(STARLING);
    let spec = ModelSpec::open(ModelDir::open(&model).unwrap()).unwrap();
    assert_eq!(spec.entry.names, [STARLING]);
    assert_eq!(spec.entry.body, "transformer");
    assert_eq!(spec.entry.quirks.pooled, Pooled::BeforeFirstId(1));
    assert_eq!(spec.entry.quirks.output, Output::Scalar);
    assert_eq!(spec.entry.quirks.head_dtype, HeadDtype::Float32);
    assert_eq!(golden["models"][STARLING]["pad_id"], 1);
    // the folder's tokenizer is the Llama-2 one of ../shared/data, committed beside the model
    check_head_golden(&golden, STARLING, &spec, model, None);
}
