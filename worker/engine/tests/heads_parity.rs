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
use herd_rewardbench::v1::is_win;
use serde_json::Value;
use support::{
    classifier_request, compare_scored as compare, max_diff_scored as max_diff, pairs, score_rows,
    FP32_TOLERANCE,
};
use tch::{Device, Kind};

const BATCHING_NOISE: f64 = 1e-5;

const PACKED: BatchLimits = BatchLimits {
    max_batch_tokens: 8192,
    max_batch_rows: 64,
};
const ONE_ROW: BatchLimits = BatchLimits {
    max_batch_tokens: 8192,
    max_batch_rows: 1,
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
    let pairs = pairs(&golden);
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
        let chosen = score_rows(&model["scores_chosen"]);
        let rejected = score_rows(&model["scores_rejected"]);
        let wins: Vec<bool> = model["wins"]
            .as_array()
            .unwrap()
            .iter()
            .map(|w| w.as_bool().unwrap())
            .collect();
        let scalar = model["scores_chosen"][0].is_number();

        let mut runs = Vec::new();
        for (limits, share) in [(PACKED, false), (ONE_ROW, false), (PACKED, true)] {
            let req = request(&golden, name, tokenizer.clone(), Kind::Float, limits, share);
            let ours = score(&req, &spec, &pairs);
            assert_eq!(ours.model_type, "Seq. Classifier", "{name}");
            assert_eq!(ours.scalar, scalar, "{name}: result files hold x or [x]");
            let (worst, flips) = compare(&ours, &chosen, &rejected);
            println!(
                "{name}: fp32 max |diff| {worst:.2e} (rows {}, shared prefix {share})",
                limits.max_batch_rows
            );
            assert!(worst < FP32_TOLERANCE, "{name}: fp32 max |diff| {worst}");
            assert!(flips.is_empty(), "{name}: wins differ at pairs {flips:?}");
            let our_wins: Vec<bool> = ours
                .pairs
                .iter()
                .map(|p| is_win(&p.chosen, &p.rejected))
                .collect();
            assert_eq!(our_wins, wins, "{name}");
            runs.push(ours);
        }
        for other in &runs[1..] {
            let noise = max_diff(&runs[0], other);
            assert!(
                noise < BATCHING_NOISE,
                "{name}: batching moved scores by {noise}"
            );
        }

        let bound = &model["bf16"]["bound"];
        let req = request(&golden, name, tokenizer, Kind::BFloat16, PACKED, false);
        let ours = score(&req, &spec, &pairs);
        let (worst, flips) = compare(&ours, &chosen, &rejected);
        println!(
            "{name}: bf16 max |diff| {worst:.4} (bound {}), win flips {} (bound {})",
            bound["max_abs_diff"],
            flips.len(),
            bound["max_win_flips"]
        );
        assert!(
            worst <= bound["max_abs_diff"].as_f64().unwrap(),
            "{name}: bf16 {worst}"
        );
        assert!(
            flips.len() as u64 <= bound["max_win_flips"].as_u64().unwrap(),
            "{name}"
        );
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
