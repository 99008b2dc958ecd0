//! Parity with transformers 4.57.6's DebertaV2ForSequenceClassification on tiny random models:
//! a deberta-v3 layout (log-bucketed relative positions, shared keys, relative-embedding
//! LayerNorm) and a v2 variant (absolute positions, token types, embedding projection, separate
//! position projections, the convolution layer, two labels).
//!
//! Goldens come from tests/golden/make_deberta_goldens.py (RewardBench run_rm.py formatting: the
//! FastChat "tulu" template, "[CLS] ... [SEP]", left truncation; fp32 at batch size 1 and in
//! run_rm.py's right-padded batches of 8; bf16 with the bound derived from transformers' own bf16
//! runs). Regenerate with
//! `PYTHONPATH=$HOME/.cache/herd/pylib-spm $HOME/.cache/herd/venv-torch-2.11.0/bin/python tests/golden/make_deberta_goldens.py`.

mod support;

use std::path::PathBuf;

use herd_engine::batching::BatchLimits;
use herd_engine::dpo::RefFreeType;
use herd_engine::encode::classifier_inputs;
use herd_engine::model_dir::ModelDir;
use herd_engine::models::ModelSpec;
use herd_engine::pooling::Pooling;
use herd_engine::scorer::{score_best_of_n_with, score_pairs, ScoreRequest};
use herd_rewardbench::dataset::v2::BestOfNRow;
use herd_rewardbench::dataset::PreferencePair;
use herd_rewardbench::v1::is_win;
use serde_json::Value;
use support::{formatted_texts, lists, one_per_batch, FP32_TOLERANCE};
use tch::Kind;

fn fixtures() -> PathBuf {
    herd_testkit::workspace_root().join("tests/golden/fixtures/deberta")
}

fn golden(case: &str) -> Value {
    herd_testkit::fixtures::read_json(&fixtures().join(format!("{case}.json")))
}

fn pairs(golden: &Value) -> Vec<PreferencePair> {
    let rows = golden["examples"].as_array().unwrap();
    rows.iter()
        .map(|e| serde_json::from_value(e.clone()).unwrap())
        .collect()
}

fn floats(value: &Value) -> Vec<f64> {
    let items = value.as_array().unwrap();
    items.iter().map(|v| v.as_f64().unwrap()).collect()
}

fn request(golden: &Value, kind: Kind, limits: BatchLimits) -> ScoreRequest {
    ScoreRequest {
        model: fixtures()
            .join("models")
            .join(golden["model"].as_str().unwrap()),
        tokenizer: None,
        ref_model: None,
        ref_free_type: RefFreeType::Avg,
        chat_template: golden["chat_template"].as_str().unwrap().to_string(),
        max_length: golden["max_length"].as_u64().unwrap() as usize,
        limits,
        share_prefix: false,
        device: support::test_device(),
        kind,
        provenance: Default::default(),
        pooling: Default::default(),
        weights: Default::default(),
    }
}

fn packed() -> BatchLimits {
    BatchLimits {
        max_batch_tokens: 8192,
        max_batch_rows: 64,
    }
}

/// Chosen and rejected label scores of every row.
type Scores = (Vec<Vec<f64>>, Vec<Vec<f64>>);

fn score(golden: &Value, kind: Kind, limits: BatchLimits, share_prefix: bool) -> Scores {
    let mut req = request(golden, kind, limits);
    req.share_prefix = share_prefix;
    let scored = score_pairs(&req, &pairs(golden)).unwrap();
    (
        scored.pairs.iter().map(|p| p.chosen.clone()).collect(),
        scored.pairs.iter().map(|p| p.rejected.clone()).collect(),
    )
}

fn golden_scores(golden: &Value, prefix: &str) -> Scores {
    if prefix.is_empty() {
        let rows = golden["examples"].as_array().unwrap();
        return (
            rows.iter().map(|e| floats(&e["scores_chosen"])).collect(),
            rows.iter().map(|e| floats(&e["scores_rejected"])).collect(),
        );
    }
    let (chosen, rejected) = match prefix {
        "bf16" => (
            &golden["bf16"]["scores_chosen"],
            &golden["bf16"]["scores_rejected"],
        ),
        _ => (
            &golden[format!("{prefix}_scores_chosen")],
            &golden[format!("{prefix}_scores_rejected")],
        ),
    };
    (lists(chosen), lists(rejected))
}

/// Largest |difference| of any label, and the rows whose win differs.
fn compare(what: &str, ours: &Scores, theirs: &Scores) -> (f64, Vec<usize>) {
    assert_eq!(ours.0.len(), theirs.0.len(), "{what}: rows");
    assert_eq!(ours.1.len(), theirs.1.len(), "{what}: rows");
    let mut worst: f64 = 0.0;
    let mut flipped = Vec::new();
    for i in 0..ours.0.len() {
        for (a, b) in [(&ours.0[i], &theirs.0[i]), (&ours.1[i], &theirs.1[i])] {
            assert_eq!(a.len(), b.len(), "{what}: row {i}: labels");
            for (x, y) in a.iter().zip(b.iter()) {
                worst = worst.max((x - y).abs());
            }
        }
        if is_win(&ours.0[i], &ours.1[i]) != is_win(&theirs.0[i], &theirs.1[i]) {
            flipped.push(i);
        }
    }
    (worst, flipped)
}

/// The texts (tulu template) and ids ([CLS] ... [SEP], left truncation) transformers scored.
fn check_tokens(case: &str) {
    let golden = golden(case);
    let req = request(&golden, Kind::Float, packed());
    let (tokenizer, texts) = formatted_texts(&golden, &pairs(&golden), &req);
    let examples = golden["examples"].as_array().unwrap();
    let encoded = classifier_inputs(&tokenizer, texts, req.max_length).unwrap();
    assert_eq!(encoded.len(), 2 * examples.len());
    for (i, example) in examples.iter().enumerate() {
        for (k, side) in ["chosen", "rejected"].iter().enumerate() {
            let expected: Vec<u32> = floats(&example[format!("input_ids_{side}")])
                .into_iter()
                .map(|x| x as u32)
                .collect();
            assert_eq!(
                encoded[2 * i + k],
                expected,
                "{case} example {i} {side} ids"
            );
        }
    }
}

fn check_fp32(case: &str) {
    let golden = golden(case);
    let batch_size_1 = golden_scores(&golden, "");
    let padded = golden_scores(&golden, "padded_batch");
    let single = score(&golden, Kind::Float, one_per_batch(), false);
    let batched = score(&golden, Kind::Float, packed(), false);
    // an encoder never shares rows: --share-prefix falls back to one sequence per row
    let shared = score(&golden, Kind::Float, packed(), true);
    for (what, ours, theirs) in [
        (
            "batch size 1 vs transformers batch size 1",
            &single,
            &batch_size_1,
        ),
        (
            "packed vs transformers batch size 1",
            &batched,
            &batch_size_1,
        ),
        ("packed vs transformers padded batches", &batched, &padded),
        (
            "share-prefix vs transformers batch size 1",
            &shared,
            &batch_size_1,
        ),
    ] {
        let (worst, flipped) = compare(what, ours, theirs);
        eprintln!("{case}: fp32 {what}: max |diff| {worst:.2e}");
        assert!(worst < FP32_TOLERANCE, "{case}: {what}: max |diff| {worst}");
        assert!(
            flipped.is_empty(),
            "{case}: {what}: wins differ on rows {flipped:?}"
        );
    }
    // padded batches equal one-by-one: the padding mask is complete
    let (effect, _) = compare("packed vs one by one", &batched, &single);
    eprintln!("{case}: packed vs batch size 1: max |diff| {effect:.2e}");
    assert!(
        effect < 1e-5,
        "{case}: batch composition moved scores by {effect}"
    );
}

/// herd's bf16 against transformers' fp32 golden within the golden's `bf16_bound` (the rule of
/// make_fixtures.py), reported alongside transformers' own bf16 scores.
fn check_bf16(case: &str) {
    let golden = golden(case);
    let bound = &golden["bf16_bound"];
    let max_abs_diff = bound["max_abs_diff"].as_f64().unwrap();
    let max_win_flips = bound["max_win_flips"].as_u64().unwrap() as usize;
    let ours = score(&golden, Kind::BFloat16, packed(), false);
    let (worst, flipped) = compare("bf16 vs fp32", &ours, &golden_scores(&golden, ""));
    let (vs_theirs, their_flips) = compare("bf16 vs bf16", &ours, &golden_scores(&golden, "bf16"));
    eprintln!(
        "{case}: herd bf16 vs transformers fp32: max |diff| {worst:.4} (bound {max_abs_diff:.4}), \
         {} flips (bound {max_win_flips}); vs transformers bf16: max |diff| {vs_theirs:.4}, {} flips",
        flipped.len(),
        their_flips.len()
    );
    assert!(
        worst <= max_abs_diff,
        "{case}: bf16 max |diff| {worst} > {max_abs_diff}"
    );
    assert!(
        flipped.len() <= max_win_flips,
        "{case}: bf16 flips {flipped:?} > {max_win_flips}"
    );
}

#[test]
fn deberta_v3_relative_buckets_shared_keys() {
    check_tokens("deberta-v3-rm");
    check_fp32("deberta-v3-rm");
}

#[test]
fn deberta_v3_left_truncation_keeps_cls() {
    check_tokens("deberta-v3-rm-trunc");
    check_fp32("deberta-v3-rm-trunc");
}

#[test]
fn deberta_v2_absolute_positions_conv_two_labels() {
    check_tokens("deberta-v2-rm");
    check_fp32("deberta-v2-rm");
}

#[test]
fn deberta_bf16_within_bound() {
    check_bf16("deberta-v3-rm");
    check_bf16("deberta-v2-rm");
}

#[test]
fn refused_settings_name_the_model_and_reason() {
    let v2 = golden("deberta-v2-rm");
    // the v2 variant's absolute positions end at 2048
    let mut req = request(&v2, Kind::Float, packed());
    req.max_length = 4096;
    let error = score_pairs(&req, &pairs(&v2)[..1]).unwrap_err().to_string();
    assert!(
        error.contains("deberta-v2-rm") && error.contains("2048") && error.contains("--max-length"),
        "{error}"
    );
    // transformers 4.43's last-token rule has no meaning for a first-token model
    let v3 = golden("deberta-v3-rm");
    let mut req = request(&v3, Kind::Float, packed());
    req.pooling = Pooling::Legacy;
    let error = score_pairs(&req, &pairs(&v3)[..1]).unwrap_err().to_string();
    assert!(
        error.contains("deberta-v3-rm") && error.contains("first token"),
        "{error}"
    );
}

/// RewardBench 2 (run_v2.py loads the model with AutoModelForSequenceClassification, as run_rm.py
/// does): each golden pair as a best-of-2 row scores each completion as transformers scored the
/// text alone (the same tulu text; no row reaches max_length, so run_v2.py's right truncation
/// and run_rm.py's left one agree), read at [CLS].
#[test]
fn rewardbench_2_rows_score_at_the_first_token() {
    let golden = golden("deberta-v3-rm");
    let req = request(&golden, Kind::Float, packed());
    let rows: Vec<BestOfNRow> = pairs(&golden)
        .into_iter()
        .map(|pair| BestOfNRow {
            id: pair.id,
            prompt: pair.prompt,
            chosen: vec![pair.chosen],
            rejected: vec![pair.rejected],
            num_correct: 1,
            subset: pair.subset,
        })
        .collect();
    let spec = ModelSpec::open(ModelDir::open(&req.model).unwrap()).unwrap();
    let scored = score_best_of_n_with(&req, &spec, &rows).unwrap();
    let (chosen, rejected) = golden_scores(&golden, "");
    assert_eq!(scored.scores.len(), chosen.len());
    let mut worst: f64 = 0.0;
    for (i, row) in scored.scores.iter().enumerate() {
        assert_eq!(row.len(), 2, "row {i}");
        worst = worst.max((f64::from(row[0]) - chosen[i][0]).abs());
        worst = worst.max((f64::from(row[1]) - rejected[i][0]).abs());
    }
    eprintln!(
        "deberta-v3-rm: RewardBench 2 rows vs transformers batch size 1: max |diff| {worst:.2e}"
    );
    assert!(worst < FP32_TOLERANCE, "max |diff| {worst}");
}
