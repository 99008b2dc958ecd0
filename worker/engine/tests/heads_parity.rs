//! The custom reward heads (models/reward_heads/) against rewardbench 0.1.4's own model classes
//! and pipelines (tests/golden/make_heads_goldens.py: INF-ORM, UltraRM, Beaver reward and cost,
//! Starling-RM-34B, GRM, and the transcribed Nemotron-70B-Reward), each picked by the registry
//! from the fixture's folder name (its RewardBench model name) and config.json class.
//!
//! For every model: fp32 scores within 1e-4 of the pipeline's and identical wins, in packed
//! batches, one row per batch and with the shared prompt; the same scores whatever the batching
//! (batch invariance, 1e-5); bf16 within the golden's bound (the measured worst is printed).

mod support;

use std::path::PathBuf;

use herd_engine::batching::BatchLimits;
use herd_engine::model_dir::ModelDir;
use herd_engine::models::registry::{Output, Pooled};
use herd_engine::models::ModelSpec;
use herd_engine::scorer::{score_pairs_with, ScoreRequest, ScoredDataset};
use herd_rewardbench::dataset::PreferencePair;
use serde_json::Value;
use support::{
    check_head_golden, classifier_request, compare_scored as compare, pairs, score_rows,
    FP32_TOLERANCE,
};
use tch::{Device, Kind};

const PACKED: BatchLimits = BatchLimits {
    max_batch_tokens: 8192,
    max_batch_rows: 64,
};

fn heads_dir() -> PathBuf {
    herd_testkit::workspace_root().join("tests/golden/fixtures/heads")
}

fn golden() -> Value {
    herd_testkit::fixtures::read_json(&heads_dir().join("heads.json"))
}

/// The tokenizer folder of a fixture: its own, or the shared Llama-2 one.
fn tokenizer(model: &Value) -> Option<Option<PathBuf>> {
    if model["tokenizer"] == "fixture" {
        return Some(None);
    }
    herd_testkit::shared_path("data/tokenizers/llama2").map(Some)
}

fn request(
    golden: &Value,
    name: &str,
    tokenizer: Option<PathBuf>,
    kind: Kind,
    limits: BatchLimits,
    share_prefix: bool,
) -> ScoreRequest {
    classifier_request(
        golden,
        heads_dir().join(name),
        tokenizer,
        kind,
        limits,
        share_prefix,
    )
}

fn score(request: &ScoreRequest, spec: &ModelSpec, pairs: &[PreferencePair]) -> ScoredDataset {
    score_pairs_with(request, spec, pairs).unwrap()
}

#[test]
fn every_custom_head_matches_its_rewardbench_pipeline() {
    let golden = golden();
    let models = golden["models"].as_object().unwrap();
    assert_eq!(models.len(), 7);
    for (name, model) in models {
        let Some(tokenizer) = tokenizer(model) else {
            return;
        };
        let spec = ModelSpec::open(ModelDir::open(heads_dir().join(name)).unwrap()).unwrap();
        assert_eq!(
            spec.entry.architecture,
            model["architecture"].as_str().unwrap(),
            "{name}"
        );
        check_head_golden(&golden, name, &spec, heads_dir().join(name), tokenizer);
    }
}

#[test]
fn the_registry_reads_each_pipelines_quirks() {
    let open =
        |name: &str| ModelSpec::open(ModelDir::open(heads_dir().join(name)).unwrap()).unwrap();
    let inform = open("infly/INF-ORM-Llama3.1-70B");
    assert_eq!(inform.entry.quirks.pooled, Pooled::FirstPadMinusOne);
    assert_eq!(inform.config.num_labels, 1);
    let starling = open("Nexusflow/Starling-RM-34B");
    assert_eq!(starling.entry.body, "transformer");
    assert_eq!(starling.entry.quirks.pooled, Pooled::BeforeFirstId(0));
    assert_eq!(starling.entry.quirks.output, Output::Scalar);
    let cost = open("PKU-Alignment/beaver-7b-v1.0-cost");
    assert!(cost.entry.quirks.negate);
    assert_eq!(cost.config.num_labels, 2, "score_dim");
    let nemotron = open("nvidia/Llama-3.1-Nemotron-70B-Reward-HF");
    assert_eq!(
        nemotron.head,
        herd_engine::models::HeadKind::SequenceClassification
    );
    // the same folders under other names: the class decides (a LlamaForCausalLM is a DPO policy,
    // a LlamaForScore a Beaver reward model)
    let dir = |name: &str| ModelDir::open(heads_dir().join(name)).unwrap();
    let policy = ModelSpec::open_named(
        dir("nvidia/Llama-3.1-Nemotron-70B-Reward-HF"),
        Some("my/policy"),
    )
    .unwrap();
    assert_eq!(policy.head, herd_engine::models::HeadKind::CausalLm);
    let reward = ModelSpec::open_named(
        dir("PKU-Alignment/beaver-7b-v1.0-cost"),
        Some("local/beaver"),
    )
    .unwrap();
    assert!(!reward.entry.quirks.negate);
    // and the Starling folder (starling.py's class under transformers' name) is refused by
    // transformers' LlamaForSequenceClassification: its weights sit under `transformer`
    let plain =
        ModelSpec::open_named(dir("Nexusflow/Starling-RM-34B"), Some("other/starling")).unwrap();
    let error = plain
        .load_classifier(Device::Cpu, Kind::Float)
        .err()
        .unwrap()
        .to_string();
    assert!(error.contains("model.embed_tokens.weight"), "{error}");
}

#[test]
fn the_cost_pipeline_is_the_negated_reward() {
    let golden = golden();
    let Some(tokenizer) = herd_testkit::shared_path("data/tokenizers/llama2") else {
        return;
    };
    let name = "PKU-Alignment/beaver-7b-v1.0-cost";
    let model = &golden["models"][name];
    let dir = ModelDir::open(heads_dir().join(name)).unwrap();
    // the cost folder scored as a reward model (BeaverPipeline): end_scores, not negated
    let spec = ModelSpec::open_named(dir, Some("local/beaver-cost")).unwrap();
    let req = request(&golden, name, Some(tokenizer), Kind::Float, PACKED, false);
    let ours = score(&req, &spec, &pairs(&golden));
    let negated = |rows: Vec<Vec<f64>>| -> Vec<Vec<f64>> {
        rows.into_iter()
            .map(|r| r.into_iter().map(|x| -x).collect())
            .collect()
    };
    let (worst, _) = compare(
        &ours,
        &negated(score_rows(&model["scores_chosen"])),
        &negated(score_rows(&model["scores_rejected"])),
    );
    assert!(worst < FP32_TOLERANCE, "{worst}");
}
