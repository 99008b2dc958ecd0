//! Shared by the engine's integration tests: the committed fixtures and the EasyLM record writer
//! (herd-testkit), and the EasyLM options and tiny models they are read with.
// each test uses a part of it
#![allow(dead_code, unused_imports)]

pub mod dpo;

use herd_engine::batching::BatchLimits;
use herd_engine::dpo::RefFreeType;
use herd_engine::easylm::sizes::Overrides;
use herd_engine::easylm::EasyLmOptions;
use herd_engine::encode::format_pair;
use herd_engine::model_dir::ModelDir;
use herd_engine::models::ModelSpec;
use herd_engine::scorer::{
    choose_formatter, prepare_classifier_tokenizer, score_pairs_with, ScoreRequest, ScoredDataset,
};
use herd_engine::tokenizer::RewardTokenizer;
use herd_rewardbench::dataset::PreferencePair;
use herd_rewardbench::v1::is_win;
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

/// The device the parity tests score on: `HERD_TEST_DEVICE` (cpu, cuda or cuda:N, as `--device`
/// reads them; default cpu), so the same goldens run on a GPU (bench/gpu/run sets it to cuda).
/// A device that is named but not usable fails the test rather than falling back to the CPU.
pub fn test_device() -> tch::Device {
    match std::env::var("HERD_TEST_DEVICE") {
        Ok(name) => name
            .parse::<herd_engine::device::DeviceChoice>()
            .map_err(anyhow::Error::msg)
            .and_then(|choice| choice.resolve())
            .unwrap_or_else(|e| panic!("HERD_TEST_DEVICE={name}: {e:#}")),
        Err(_) => tch::Device::Cpu,
    }
}

// ---- the golden JSON files of tests/golden/make_*.py, read the same way by every parity test ----

/// fp32 scores agree with the reference within this, absolute
pub const FP32_TOLERANCE: f64 = 1e-4;

pub fn pairs(golden: &Value) -> Vec<PreferencePair> {
    golden["examples"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| serde_json::from_value(e.clone()).unwrap())
        .collect()
}

pub fn floats(value: &Value) -> Vec<f64> {
    value
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_f64().unwrap())
        .collect()
}

pub fn ids(value: &Value) -> Vec<u32> {
    value
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_u64().unwrap() as u32)
        .collect()
}

pub fn lists(value: &Value) -> Vec<Vec<f64>> {
    value.as_array().unwrap().iter().map(floats).collect()
}

/// A golden score row: a list of logits, or one float (the `[batch]` pipelines).
pub fn score_row(value: &Value) -> Vec<f64> {
    match value {
        Value::Array(items) => items.iter().map(|v| v.as_f64().unwrap()).collect(),
        other => vec![other.as_f64().unwrap()],
    }
}

/// A golden's score rows ([`score_row`] each).
pub fn score_rows(value: &Value) -> Vec<Vec<f64>> {
    value.as_array().unwrap().iter().map(score_row).collect()
}

pub fn packed() -> BatchLimits {
    BatchLimits {
        max_batch_tokens: 4096,
        max_batch_rows: 64,
    }
}

pub fn one_per_batch() -> BatchLimits {
    BatchLimits {
        max_batch_tokens: 1 << 20,
        max_batch_rows: 1,
    }
}

/// Summed log-probs run to thousands and transformers accumulates them in fp32: against an
/// fp64 forward it is off by up to ~5e-7 per unit of magnitude, so the tolerance scales with
/// the magnitude of the sums involved (`scale`).
pub fn assert_close(ours: f64, theirs: f64, scale: f64, what: &str) {
    let tolerance = FP32_TOLERANCE + 5e-7 * scale;
    assert!(
        (ours - theirs).abs() < tolerance,
        "{what}: ours {ours} vs transformers {theirs}"
    );
}

/// Chosen and rejected label scores, row by row.
#[derive(Debug)]
pub struct Scores {
    pub chosen: Vec<Vec<f64>>,
    pub rejected: Vec<Vec<f64>>,
}

/// Largest |score difference| and the rows whose win flips; row and label counts must agree.
pub fn compare(what: &str, ours: &Scores, theirs: &Scores) -> (f64, Vec<usize>) {
    assert_eq!(ours.chosen.len(), theirs.chosen.len(), "{what}: rows");
    assert_eq!(ours.rejected.len(), theirs.rejected.len(), "{what}: rows");
    let mut worst: f64 = 0.0;
    let mut flipped = Vec::new();
    for i in 0..ours.chosen.len() {
        let (c, r) = (&ours.chosen[i], &ours.rejected[i]);
        let (tc, tr) = (&theirs.chosen[i], &theirs.rejected[i]);
        assert_eq!(
            (c.len(), r.len()),
            (tc.len(), tr.len()),
            "{what}: row {i} labels"
        );
        for (x, y) in c.iter().zip(tc).chain(r.iter().zip(tr)) {
            worst = worst.max((x - y).abs());
        }
        if is_win(c, r) != is_win(tc, tr) {
            flipped.push(i);
        }
    }
    (worst, flipped)
}

impl Scores {
    /// A scored dataset's label scores, row by row.
    pub fn of(scored: &ScoredDataset) -> Self {
        Self {
            chosen: scored.pairs.iter().map(|p| p.chosen.clone()).collect(),
            rejected: scored.pairs.iter().map(|p| p.rejected.clone()).collect(),
        }
    }
}

/// [`compare`] of a scored dataset with a golden's chosen and rejected label scores.
pub fn compare_scored(
    ours: &ScoredDataset,
    chosen: &[Vec<f64>],
    rejected: &[Vec<f64>],
) -> (f64, Vec<usize>) {
    let theirs = Scores {
        chosen: chosen.to_vec(),
        rejected: rejected.to_vec(),
    };
    compare("scores", &Scores::of(ours), &theirs)
}

/// The largest |difference| between two scorings of the same pairs.
pub fn max_diff_scored(a: &ScoredDataset, b: &ScoredDataset) -> f64 {
    compare("runs", &Scores::of(a), &Scores::of(b)).0
}

/// A classifier request as the golden's pipeline ran it (its chat template and max length), on
/// the test device.
pub fn classifier_request(
    golden: &Value,
    model: std::path::PathBuf,
    tokenizer: Option<std::path::PathBuf>,
    kind: tch::Kind,
    limits: BatchLimits,
    share_prefix: bool,
) -> ScoreRequest {
    ScoreRequest {
        model,
        tokenizer,
        ref_model: None,
        ref_free_type: RefFreeType::Avg,
        chat_template: golden["chat_template"].as_str().unwrap().to_string(),
        max_length: golden["max_length"].as_u64().unwrap() as usize,
        limits,
        share_prefix,
        weights: Default::default(),
        device: test_device(),
        kind,
        provenance: Default::default(),
        pooling: Default::default(),
    }
}

/// The request's tokenizer prepared as the scorer prepares a classifier's, and `pairs` formatted
/// with its chat template (chosen, rejected, chosen, ...), each asserted equal to the text the
/// reference scored (`golden["examples"][i]["text_chosen"]` / `["text_rejected"]`).
pub fn formatted_texts(
    golden: &Value,
    pairs: &[PreferencePair],
    req: &ScoreRequest,
) -> (RewardTokenizer, Vec<String>) {
    // the scorer's choice: the request's tokenizer folder, else the model's
    let dir = ModelDir::open(req.tokenizer.as_ref().unwrap_or(&req.model)).unwrap();
    let mut tokenizer = RewardTokenizer::load(&dir).unwrap();
    let formatter = choose_formatter(&tokenizer, &req.chat_template).unwrap();
    prepare_classifier_tokenizer(&mut tokenizer, &formatter, &dir).unwrap();
    let examples = golden["examples"].as_array().unwrap();
    assert_eq!(pairs.len(), examples.len(), "pairs and golden examples");
    let mut texts = Vec::new();
    for (pair, example) in pairs.iter().zip(examples) {
        let formatted = format_pair(&formatter, pair).unwrap();
        for (side, text) in [
            ("chosen", &formatted.chosen),
            ("rejected", &formatted.rejected),
        ] {
            let expected = example[format!("text_{side}")].as_str().unwrap();
            assert_eq!(text, expected, "example {} {side}", pair.id);
        }
        texts.push(formatted.chosen);
        texts.push(formatted.rejected);
    }
    (tokenizer, texts)
}

/// One custom-head model of a golden (`golden["models"][name]`, scored by the rewardbench
/// package's pipeline): in fp32, packed, one row per batch and with shared prefixes, every
/// score within [`FP32_TOLERANCE`] with the golden's wins and result shape (`x` or `[x]`), the
/// three batchings within 1e-5 of each other; in bf16, within the bounds the golden records.
pub fn check_head_golden(
    golden: &Value,
    name: &str,
    spec: &ModelSpec,
    model_dir: std::path::PathBuf,
    tokenizer: Option<std::path::PathBuf>,
) {
    const BATCHING_NOISE: f64 = 1e-5;
    const PACKED: BatchLimits = BatchLimits {
        max_batch_tokens: 8192,
        max_batch_rows: 64,
    };
    const ONE_ROW: BatchLimits = BatchLimits {
        max_batch_tokens: 8192,
        max_batch_rows: 1,
    };
    let model = &golden["models"][name];
    let pairs = pairs(golden);
    let chosen = score_rows(&model["scores_chosen"]);
    let rejected = score_rows(&model["scores_rejected"]);
    let wins: Vec<bool> = model["wins"]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| w.as_bool().unwrap())
        .collect();
    let scalar = model["scores_chosen"][0].is_number();
    let request = |kind, limits, share| {
        let dir = model_dir.clone();
        classifier_request(golden, dir, tokenizer.clone(), kind, limits, share)
    };

    let mut runs = Vec::new();
    for (limits, share) in [(PACKED, false), (ONE_ROW, false), (PACKED, true)] {
        let ours =
            score_pairs_with(&request(tch::Kind::Float, limits, share), spec, &pairs).unwrap();
        assert_eq!(ours.model_type, "Seq. Classifier", "{name}");
        assert_eq!(ours.scalar, scalar, "{name}: result files hold x or [x]");
        let (worst, flips) = compare_scored(&ours, &chosen, &rejected);
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
        let noise = max_diff_scored(&runs[0], other);
        assert!(
            noise < BATCHING_NOISE,
            "{name}: batching moved scores by {noise}"
        );
    }

    let bound = &model["bf16"]["bound"];
    let request = request(tch::Kind::BFloat16, PACKED, false);
    let ours = score_pairs_with(&request, spec, &pairs).unwrap();
    let (worst, flips) = compare_scored(&ours, &chosen, &rejected);
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

/// herd's three fp32 batchings (one row per batch, packed, shared prefixes) against
/// transformers' batch-size-1 run and its padded batches: each within [`FP32_TOLERANCE`] with
/// the same wins, and packing or sharing moving herd's scores by less than 1e-5.
pub fn check_fp32_batchings(
    case: &str,
    batch_size_1: &Scores,
    padded: &Scores,
    single: &Scores,
    batched: &Scores,
    shared: &Scores,
) {
    for (what, ours, theirs) in [
        ("batch size 1 vs reference", single, batch_size_1),
        ("packed vs reference", batched, batch_size_1),
        ("packed vs reference padded batches", batched, padded),
        ("shared prefix vs reference", shared, batch_size_1),
    ] {
        let (worst, flipped) = compare(what, ours, theirs);
        eprintln!("{case}: fp32 {what}: max |diff| {worst:.2e}");
        assert!(worst < FP32_TOLERANCE, "{case}: fp32 {what}: {worst}");
        assert!(flipped.is_empty(), "{case}: fp32 {what}: flips {flipped:?}");
    }
    for (what, ours) in [("packing", batched), ("prefix sharing", shared)] {
        let (effect, _) = compare(what, ours, single);
        eprintln!("{case}: {what} moved scores by {effect:.2e}");
        assert!(effect < 1e-5, "{case}: {what} moved scores by {effect}");
    }
}
