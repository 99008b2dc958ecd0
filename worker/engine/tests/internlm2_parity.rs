//! InternLM2's `InternLM2ForCausalLM` (DPO) and `InternLM2ForSequenceClassification` classes
//! against their references on tiny random-weight models.
//!
//! Goldens and models come from tests/golden/make_internlm2_goldens.py: the backbone is
//! make_qwen3_goldens.py's transcription of the hub's remote modeling_internlm2.py, the heads are
//! transcribed from the same file (`output` then `.float()`; `score` read at the first pad minus
//! one), the runs are make_fixtures.py's DPO steps and the `rewardbench` CLI's classifier run
//! (left padding, batches of 8); regenerate them with
//! `$HOME/.cache/herd/venv-torch-2.11.0/bin/python tests/golden/make_internlm2_goldens.py`.
//!
//! DPO: as support::dpo (fp32 within `assert_close`, same wins, batch invariance; bf16 within
//! twice the reference's own bf16 spread). Classifier: the registry reads the first-pad rule,
//! token ids equal the reference's, fp32 within 1e-4 with no win flips however herd batches (the
//! pooled positions replay RewardBench's batches), bf16 within the golden's `bf16_bound`.

mod support;

use std::path::PathBuf;

use herd_engine::batching::BatchLimits;
use herd_engine::encode::classifier_inputs;
use herd_engine::model_dir::ModelDir;
use herd_engine::models::registry::Pooled;
use herd_engine::models::ModelSpec;
use herd_engine::scorer::{score_pairs, ScoreRequest};
use serde_json::Value;
use support::dpo::DpoGolden;
use support::{
    classifier_request, compare, floats, formatted_texts, ids, lists, one_per_batch, packed, pairs,
    Scores, FP32_TOLERANCE,
};
use tch::{Device, Kind};

fn fixtures() -> PathBuf {
    herd_testkit::workspace_root().join("tests/golden/fixtures/internlm2")
}

#[test]
fn internlm2_causal_lm_dpo_matches_the_transcription() {
    if let Some(golden) = DpoGolden::open(&fixtures(), "internlm2-dpo") {
        golden.check_fp32();
    }
}

#[test]
fn internlm2_causal_lm_dpo_bf16_within_twice_the_references_own_spread() {
    if let Some(golden) = DpoGolden::open(&fixtures(), "internlm2-dpo") {
        golden.check_bf16();
    }
}

fn request(golden: &Value, kind: Kind, limits: BatchLimits, share: bool) -> Option<ScoreRequest> {
    let tokenizer =
        herd_testkit::shared_path(&format!("data/{}", golden["tokenizer"].as_str().unwrap()))?;
    let model = fixtures()
        .join("models")
        .join(golden["model"].as_str().unwrap());
    let req = classifier_request(golden, model, Some(tokenizer), kind, limits, share);
    Some(ScoreRequest {
        device: Device::Cpu,
        ..req
    })
}

fn scores(req: &ScoreRequest, golden: &Value) -> Scores {
    let scored = score_pairs(req, &pairs(golden)).unwrap();
    assert_eq!(scored.model_type, "Seq. Classifier");
    Scores::of(&scored)
}

#[test]
fn internlm2_sequence_classification_reads_the_first_pad_minus_one() {
    let golden = herd_testkit::fixtures::read_json(&fixtures().join("internlm2-cls.json"));
    let Some(req) = request(&golden, Kind::Float, packed(), false) else {
        return;
    };
    let spec = ModelSpec::open(ModelDir::open(&req.model).unwrap()).unwrap();
    assert_eq!(
        spec.entry.architecture,
        "InternLM2ForSequenceClassification"
    );
    assert_eq!(spec.entry.quirks.pooled, Pooled::FirstPadMinusOne);
    let examples = golden["examples"].as_array().unwrap();
    let (tokenizer, texts) = formatted_texts(&golden, &pairs(&golden), &req);
    let encoded = classifier_inputs(&tokenizer, texts, req.max_length).unwrap();
    for (i, e) in examples.iter().enumerate() {
        for (k, side) in ["chosen", "rejected"].iter().enumerate() {
            let mask = ids(&e[format!("attention_mask_{side}")]);
            let attended: Vec<u32> = ids(&e[format!("input_ids_{side}")])
                .into_iter()
                .zip(mask)
                .filter(|(_, m)| *m == 1)
                .map(|(id, _)| id)
                .collect();
            assert_eq!(encoded[2 * i + k], attended, "example {i} {side} ids");
        }
    }
    let reference = Scores {
        chosen: examples
            .iter()
            .map(|e| floats(&e["scores_chosen"]))
            .collect(),
        rejected: examples
            .iter()
            .map(|e| floats(&e["scores_rejected"]))
            .collect(),
    };
    // the first-pad rule over RewardBench's batches is not the rule at batch size 1: the golden
    // must tell the two apart for this test to mean anything
    let alone = Scores {
        chosen: lists(&golden["batch_size_1"]["scores_chosen"]),
        rejected: lists(&golden["batch_size_1"]["scores_rejected"]),
    };
    let (apart, _) = compare("batch size 1 vs batches", &alone, &reference);
    assert!(apart > 1e-2, "{apart}");
    for (what, limits, share) in [
        ("packed", packed(), false),
        ("one per batch", one_per_batch(), false),
        ("shared prefix", packed(), true),
    ] {
        let req = request(&golden, Kind::Float, limits, share).unwrap();
        let (worst, flipped) = compare(what, &scores(&req, &golden), &reference);
        eprintln!("internlm2-cls fp32 {what}: max |diff| {worst:.2e}");
        assert!(worst < FP32_TOLERANCE, "fp32 {what}: {worst}");
        assert!(flipped.is_empty(), "fp32 {what}: flips {flipped:?}");
    }
    let bound = &golden["bf16_bound"];
    let max_abs_diff = bound["max_abs_diff"].as_f64().unwrap();
    let max_win_flips = bound["max_win_flips"].as_u64().unwrap() as usize;
    let req = request(&golden, Kind::BFloat16, packed(), false).unwrap();
    let ours = scores(&req, &golden);
    let (worst, flipped) = compare("bf16", &ours, &reference);
    let theirs = Scores {
        chosen: lists(&golden["bf16"]["scores_chosen"]),
        rejected: lists(&golden["bf16"]["scores_rejected"]),
    };
    let (vs_their_bf16, _) = compare("bf16 vs bf16", &ours, &theirs);
    eprintln!(
        "internlm2-cls bf16 vs the reference's fp32: max |diff| {worst:.4} (bound \
         {max_abs_diff:.4}), {} flips (bound {max_win_flips}); vs its bf16 {vs_their_bf16:.4}",
        flipped.len()
    );
    assert!(worst <= max_abs_diff, "bf16 max |diff| {worst}");
    assert!(flipped.len() <= max_win_flips, "bf16 flips {flipped:?}");
}
