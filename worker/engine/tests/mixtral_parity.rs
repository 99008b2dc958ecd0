//! Mixtral (sparse mixture of experts) parity with Hugging Face transformers on tiny random-weight
//! models: 4 experts, top-2 routing.
//!
//! Goldens and models come from tests/golden/make_mixtral_goldens.py (transformers 4.57.6's
//! MixtralForCausalLM and MixtralForSequenceClassification; RewardBench formatting with the shared
//! Llama-2 tokenizer); regenerate them with
//! `$HOME/.cache/herd/venv-torch-2.11.0/bin/python tests/golden/make_mixtral_goldens.py`.
//!
//! DPO (policy vs reference, as run_dpo.py): fp32 rewards within `assert_close` of transformers and
//! the same wins; the reference-free sums, averages and norms too, with and without the prompt
//! shared in one row; one sequence per batch equal to packed batches. bf16 is reported against
//! transformers' fp32 and bf16 runs and bounded by twice transformers' own bf16 spread (make_fixtures
//! BF16_SCORE_FACTOR). Classifier: token ids, fp32 within 1e-4 at batch size 1, packed, in
//! transformers' padded batches and with the shared prompt; bf16 within the golden's `bf16_bound`.

mod support;

use std::path::PathBuf;

use herd_engine::batching::BatchLimits;
use herd_engine::encode::classifier_inputs;
use herd_engine::scorer::{score_pairs, ScoreRequest};
use serde_json::Value;
use support::dpo::DpoGolden;
use support::{
    check_fp32_batchings, classifier_request, compare, floats, formatted_texts, ids, lists,
    one_per_batch, packed, pairs, Scores,
};
use tch::{Device, Kind};

/// batch composition (padding, packing, prefix sharing) may move fp32 scores by rounding only
fn fixtures() -> PathBuf {
    herd_testkit::workspace_root().join("tests/golden/fixtures/mixtral")
}

fn golden(case: &str) -> Value {
    herd_testkit::fixtures::read_json(&fixtures().join(format!("{case}.json")))
}

fn examples(golden: &Value) -> &Vec<Value> {
    golden["examples"].as_array().unwrap()
}

/// The request for `model` (a folder of the mixtral fixtures) with the shared tokenizer the golden
/// names; `None` when the shared data is missing (testkit's prerequisite rule).
fn request(golden: &Value, model: &str, kind: Kind, limits: BatchLimits) -> Option<ScoreRequest> {
    let tokenizer =
        herd_testkit::shared_path(&format!("data/{}", golden["tokenizer"].as_str().unwrap()))?;
    let model = fixtures().join("models").join(model);
    let req = classifier_request(golden, model, Some(tokenizer), kind, limits, false);
    Some(ScoreRequest {
        device: Device::Cpu,
        ..req
    })
}

#[test]
fn mixtral_dpo_top2_of_4_experts_matches_transformers() {
    if let Some(golden) = DpoGolden::open(&fixtures(), "mixtral-dpo") {
        golden.check_fp32();
    }
}

#[test]
fn mixtral_dpo_bf16_within_twice_transformers_own_bf16_spread() {
    if let Some(golden) = DpoGolden::open(&fixtures(), "mixtral-dpo") {
        golden.check_bf16();
    }
}

fn classifier_scores(golden: &Value, kind: Kind, limits: BatchLimits, share: bool) -> Scores {
    let mut req = request(golden, golden["model"].as_str().unwrap(), kind, limits).unwrap();
    req.share_prefix = share;
    let scored = score_pairs(&req, &pairs(golden)).unwrap();
    assert_eq!(scored.model_type, "Seq. Classifier");
    Scores::of(&scored)
}

fn reference(golden: &Value, run: &str) -> Scores {
    let column = |side: &str| -> Vec<Vec<f64>> {
        let key = format!("scores_{side}");
        match run {
            "fp32" => examples(golden).iter().map(|e| floats(&e[&key])).collect(),
            "padded" => lists(&golden[format!("padded_batch_{key}")]),
            _ => lists(&golden["bf16"][&key]),
        }
    };
    Scores {
        chosen: column("chosen"),
        rejected: column("rejected"),
    }
}

#[test]
fn mixtral_classifier_matches_transformers() {
    let golden = golden("mixtral-rm");
    let Some(req) = request(&golden, "mixtral-rm", Kind::Float, packed()) else {
        return;
    };
    let (tokenizer, texts) = formatted_texts(&golden, &pairs(&golden), &req);
    let encoded = classifier_inputs(&tokenizer, texts, req.max_length).unwrap();
    for (i, e) in examples(&golden).iter().enumerate() {
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
    let batch_size_1 = reference(&golden, "fp32");
    let padded = reference(&golden, "padded");
    let single = classifier_scores(&golden, Kind::Float, one_per_batch(), false);
    let batched = classifier_scores(&golden, Kind::Float, packed(), false);
    let shared = classifier_scores(&golden, Kind::Float, packed(), true);
    check_fp32_batchings(
        "mixtral-rm",
        &batch_size_1,
        &padded,
        &single,
        &batched,
        &shared,
    );

    let bound = &golden["bf16_bound"];
    let max_abs_diff = bound["max_abs_diff"].as_f64().unwrap();
    let max_win_flips = bound["max_win_flips"].as_u64().unwrap() as usize;
    let ours = classifier_scores(&golden, Kind::BFloat16, packed(), false);
    let (worst, flipped) = compare("bf16", &ours, &batch_size_1);
    let (vs_their_bf16, _) = compare("bf16 vs bf16", &ours, &reference(&golden, "bf16"));
    eprintln!(
        "mixtral-rm bf16 vs transformers fp32: max |diff| {worst:.4} (bound {max_abs_diff:.4}), \
         {} flips (bound {max_win_flips}); vs transformers bf16 {vs_their_bf16:.4}",
        flipped.len()
    );
    assert!(worst <= max_abs_diff, "bf16 max |diff| {worst}");
    assert!(flipped.len() <= max_win_flips, "bf16 flips {flipped:?}");
}
