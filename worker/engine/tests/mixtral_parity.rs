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
use herd_engine::dpo::RefFreeType;
use herd_engine::encode::classifier_inputs;
use herd_engine::scorer::{score_pairs, ScoreRequest};
use serde_json::Value;
use support::{
    assert_close, compare, floats, formatted_texts, ids, lists, one_per_batch, packed, pairs,
    Scores, FP32_TOLERANCE,
};
use tch::{Device, Kind};

/// batch composition (padding, packing, prefix sharing) may move fp32 scores by rounding only;
/// DPO sums run to hundreds, so there the bound grows with their magnitude (as `assert_close`)
const BATCH_EFFECT: f64 = 1e-5;

/// make_fixtures.py's BF16_SCORE_FACTOR: herd's bf16 is another draw of the same rounding
const BF16_SCORE_FACTOR: f64 = 2.0;

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
    Some(ScoreRequest {
        model: fixtures().join("models").join(model),
        tokenizer: Some(tokenizer),
        ref_model: None,
        ref_free_type: RefFreeType::Avg,
        chat_template: golden["chat_template"].as_str().unwrap().to_string(),
        max_length: golden["max_length"].as_u64().unwrap() as usize,
        limits,
        share_prefix: false,
        device: Device::Cpu,
        kind,
        provenance: Default::default(),
        pooling: Default::default(),
    })
}

/// (chosen, rejected) DPO rewards per row: with the golden's reference model, or reference-free.
fn dpo_rewards(
    golden: &Value,
    with_ref: bool,
    ref_free: RefFreeType,
    kind: Kind,
    limits: BatchLimits,
    share: bool,
) -> Option<Vec<(f64, f64)>> {
    let mut req = request(golden, golden["policy"].as_str().unwrap(), kind, limits)?;
    req.ref_free_type = ref_free;
    req.share_prefix = share;
    if with_ref {
        req.ref_model = Some(
            fixtures()
                .join("models")
                .join(golden["ref"].as_str().unwrap()),
        );
    }
    let scored = score_pairs(&req, &pairs(golden)).unwrap();
    let expected = if with_ref { "DPO" } else { "DPO Ref. Free" };
    assert_eq!(scored.model_type, expected);
    assert_eq!(scored.pairs.len(), examples(golden).len(), "rows");
    Some(
        scored
            .pairs
            .iter()
            .map(|p| {
                assert_eq!((p.chosen.len(), p.rejected.len()), (1, 1));
                (p.chosen[0], p.rejected[0])
            })
            .collect(),
    )
}

/// The magnitude of the summed log-probs behind a row's reward on `side`.
fn dpo_scale(example: &Value, side: &str) -> f64 {
    let sum = |key: String| example[key].as_f64().unwrap().abs();
    sum(format!("policy_sum_{side}")) + sum(format!("ref_sum_{side}"))
}

#[test]
fn mixtral_dpo_top2_of_4_experts_matches_transformers() {
    let golden = golden("mixtral-dpo");
    let Some(packed_rewards) = dpo_rewards(
        &golden,
        true,
        RefFreeType::Avg,
        Kind::Float,
        packed(),
        false,
    ) else {
        return;
    };
    let single = dpo_rewards(
        &golden,
        true,
        RefFreeType::Avg,
        Kind::Float,
        one_per_batch(),
        false,
    )
    .unwrap();
    let (mut worst, mut batch_effect) = (0.0f64, 0.0f64);
    for ((ours, alone), e) in packed_rewards.iter().zip(&single).zip(examples(&golden)) {
        let id = &e["id"];
        for (side, ours, alone) in [("chosen", ours.0, alone.0), ("rejected", ours.1, alone.1)] {
            let theirs = e[format!("reward_{side}")].as_f64().unwrap();
            let scale = dpo_scale(e, side);
            assert_close(ours, theirs, scale, &format!("{id} reward {side}"));
            assert_close(alone, theirs, scale, &format!("{id} reward {side}, alone"));
            worst = worst.max((ours - theirs).abs());
            let moved = (ours - alone).abs();
            batch_effect = batch_effect.max(moved);
            assert!(
                moved < BATCH_EFFECT + 1e-7 * scale,
                "{id} {side}: packed {ours} vs alone {alone}"
            );
        }
        let their_win = e["reward_chosen"].as_f64() > e["reward_rejected"].as_f64();
        assert_eq!(ours.0 > ours.1, their_win, "{id}: win");
        assert_eq!(alone.0 > alone.1, their_win, "{id}: win, alone");
    }
    eprintln!(
        "mixtral-dpo fp32: max |diff| {worst:.2e} vs transformers; packed vs one per batch \
         {batch_effect:.2e}"
    );
    for (kind, key) in [
        (RefFreeType::Avg, "avg"),
        (RefFreeType::Sum, "sum"),
        (RefFreeType::Norm, "norm"),
    ] {
        for share in [false, true] {
            let rewards = dpo_rewards(&golden, false, kind, Kind::Float, packed(), share).unwrap();
            for ((c, r), e) in rewards.iter().zip(examples(&golden)) {
                let id = &e["id"];
                for (side, ours) in [("chosen", c), ("rejected", r)] {
                    let theirs = e[format!("policy_{key}_{side}")].as_f64().unwrap();
                    let what = format!("{id} ref-free {key} {side}, shared prompt {share}");
                    assert_close(*ours, theirs, theirs.abs(), &what);
                }
            }
        }
    }
}

#[test]
fn mixtral_dpo_bf16_within_twice_transformers_own_bf16_spread() {
    let golden = golden("mixtral-dpo");
    let Some(ours) = dpo_rewards(
        &golden,
        true,
        RefFreeType::Avg,
        Kind::BFloat16,
        packed(),
        false,
    ) else {
        return;
    };
    let bf16 = |side: &str| floats(&golden["bf16"][format!("reward_{side}")]);
    let (their_c, their_r) = (bf16("chosen"), bf16("rejected"));
    let (mut ours_vs_fp32, mut theirs_vs_fp32, mut ours_vs_bf16) = (0.0f64, 0.0f64, 0.0f64);
    let (mut our_flips, mut their_flips) = (Vec::new(), Vec::new());
    for (i, ((c, r), e)) in ours.iter().zip(examples(&golden)).enumerate() {
        let (fc, fr) = (
            e["reward_chosen"].as_f64().unwrap(),
            e["reward_rejected"].as_f64().unwrap(),
        );
        ours_vs_fp32 = ours_vs_fp32.max((c - fc).abs()).max((r - fr).abs());
        theirs_vs_fp32 = theirs_vs_fp32
            .max((their_c[i] - fc).abs())
            .max((their_r[i] - fr).abs());
        ours_vs_bf16 = ours_vs_bf16
            .max((c - their_c[i]).abs())
            .max((r - their_r[i]).abs());
        if (c > r) != (fc > fr) {
            our_flips.push(i);
        }
        if (their_c[i] > their_r[i]) != (fc > fr) {
            their_flips.push(i);
        }
    }
    eprintln!(
        "mixtral-dpo bf16: herd vs transformers fp32 max |diff| {ours_vs_fp32:.4} with {} win \
         flips {our_flips:?}; transformers bf16 vs its fp32 {theirs_vs_fp32:.4} with {} flips \
         {their_flips:?}; herd bf16 vs transformers bf16 {ours_vs_bf16:.4}",
        our_flips.len(),
        their_flips.len()
    );
    assert!(
        ours_vs_fp32 <= BF16_SCORE_FACTOR * theirs_vs_fp32,
        "bf16 rewards moved {ours_vs_fp32}, transformers' own bf16 {theirs_vs_fp32}"
    );
    assert!(
        our_flips.len() <= their_flips.len() + 2,
        "bf16 flips {our_flips:?} vs transformers' {their_flips:?}"
    );
}

fn classifier_scores(golden: &Value, kind: Kind, limits: BatchLimits, share: bool) -> Scores {
    let mut req = request(golden, golden["model"].as_str().unwrap(), kind, limits).unwrap();
    req.share_prefix = share;
    let scored = score_pairs(&req, &pairs(golden)).unwrap();
    assert_eq!(scored.model_type, "Seq. Classifier");
    Scores {
        chosen: scored.pairs.iter().map(|p| p.chosen.clone()).collect(),
        rejected: scored.pairs.iter().map(|p| p.rejected.clone()).collect(),
    }
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
    for (what, ours, theirs) in [
        ("batch size 1 vs reference", &single, &batch_size_1),
        ("packed vs reference", &batched, &batch_size_1),
        ("packed vs reference padded batches", &batched, &padded),
        ("shared prefix vs reference", &shared, &batch_size_1),
    ] {
        let (worst, flipped) = compare(what, ours, theirs);
        eprintln!("mixtral-rm fp32 {what}: max |diff| {worst:.2e}");
        assert!(worst < FP32_TOLERANCE, "fp32 {what}: {worst}");
        assert!(flipped.is_empty(), "fp32 {what}: flips {flipped:?}");
    }
    for (what, ours) in [("packed", &batched), ("shared", &shared)] {
        let (effect, _) = compare(what, ours, &single);
        assert!(effect < BATCH_EFFECT, "{what} moved scores by {effect}");
    }

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
