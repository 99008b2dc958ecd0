//! Gemma 2 parity with Hugging Face transformers on tiny random-weight models.
//!
//! Goldens and models come from tests/golden/make_gemma2_goldens.py (transformers 4.57.6,
//! attn_implementation "eager", the one that soft-caps attention logits on CPU; RewardBench
//! formatting with the shared Llama-2 tokenizer); regenerate them with
//! `$HOME/.cache/herd/venv-torch-2.11.0/bin/python tests/golden/make_gemma2_goldens.py`.
//! Every row is longer than the models' sliding window (24), so the sliding layers matter.
//!
//! fp32: within 1e-4 of transformers and no win flips, one sequence per batch, packed, and with
//! chosen and rejected sharing the prompt in one row (masked layout); scores independent of the
//! batch composition. bf16: within the golden's `bf16_bound` (make_fixtures.py's rule).

mod support;

use std::path::PathBuf;

use herd_engine::batching::BatchLimits;
use herd_engine::dpo::RefFreeType;
use herd_engine::scorer::{score_pairs, ScoreRequest};
use herd_rewardbench::v1::is_win;
use serde_json::Value;
use support::{assert_close, floats, one_per_batch, packed, pairs, FP32_TOLERANCE};
use tch::Kind;

/// batch composition (padding, packing, prefix sharing) may move fp32 scores by rounding only
const BATCH_EFFECT: f64 = 1e-5;

fn fixtures() -> PathBuf {
    herd_testkit::workspace_root().join("tests/golden/fixtures/gemma2")
}

fn golden(case: &str) -> Value {
    herd_testkit::fixtures::read_json(&fixtures().join(format!("{case}.json")))
}

/// The request for `model` (a folder of the gemma2 fixtures, or a path relative to it) with the
/// shared tokenizer the golden names; `None` when the shared data is missing (the skip is logged).
fn request(
    golden: &Value,
    model: &str,
    kind: Kind,
    limits: BatchLimits,
    share_prefix: bool,
) -> Option<ScoreRequest> {
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
        share_prefix,
        device: support::test_device(),
        kind,
        provenance: Default::default(),
        pooling: Default::default(),
        weights: Default::default(),
    })
}

/// chosen and rejected label scores per row
type Scores = Vec<(Vec<f64>, Vec<f64>)>;

fn classifier_scores(
    golden: &Value,
    kind: Kind,
    limits: BatchLimits,
    share: bool,
) -> Option<Scores> {
    let req = request(
        golden,
        golden["model"].as_str().unwrap(),
        kind,
        limits,
        share,
    )?;
    let scored = score_pairs(&req, &pairs(golden)).unwrap();
    Some(
        scored
            .pairs
            .iter()
            .map(|p| (p.chosen.clone(), p.rejected.clone()))
            .collect(),
    )
}

fn golden_scores(golden: &Value, chosen: &[Value], rejected: &[Value]) -> Scores {
    assert_eq!(chosen.len(), golden["examples"].as_array().unwrap().len());
    chosen
        .iter()
        .zip(rejected)
        .map(|(c, r)| (floats(c), floats(r)))
        .collect()
}

/// (max |diff|, rows whose win differs); row and label counts must agree first.
fn compare(what: &str, ours: &Scores, theirs: &Scores) -> (f64, Vec<usize>) {
    assert_eq!(ours.len(), theirs.len(), "{what}: rows");
    let mut worst: f64 = 0.0;
    let mut flipped = Vec::new();
    for (i, ((c, r), (tc, tr))) in ours.iter().zip(theirs).enumerate() {
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

#[test]
fn gemma2_classifier_fp32_matches_transformers_eager() {
    let golden = golden("gemma2-rm");
    let examples = golden["examples"].as_array().unwrap();
    let column = |key: &str| -> Vec<Value> { examples.iter().map(|e| e[key].clone()).collect() };
    let batch_size_1 = golden_scores(
        &golden,
        &column("scores_chosen"),
        &column("scores_rejected"),
    );
    let padded = golden_scores(
        &golden,
        golden["padded_batch_scores_chosen"].as_array().unwrap(),
        golden["padded_batch_scores_rejected"].as_array().unwrap(),
    );
    let Some(single) = classifier_scores(&golden, Kind::Float, one_per_batch(), false) else {
        return;
    };
    let batched = classifier_scores(&golden, Kind::Float, packed(), false).unwrap();
    let shared = classifier_scores(&golden, Kind::Float, packed(), true).unwrap();
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
            "shared prefix vs transformers batch size 1",
            &shared,
            &batch_size_1,
        ),
    ] {
        let (worst, flipped) = compare(what, ours, theirs);
        eprintln!("gemma2-rm fp32 {what}: max |diff| {worst:.2e}");
        assert!(worst < FP32_TOLERANCE, "{what}: max |diff| {worst}");
        assert!(
            flipped.is_empty(),
            "{what}: wins differ on rows {flipped:?}"
        );
    }
    for (what, ours) in [("packed", &batched), ("shared prefix", &shared)] {
        let (effect, _) = compare(what, ours, &single);
        eprintln!("gemma2-rm fp32 {what} vs one by one: max |diff| {effect:.2e}");
        assert!(effect < BATCH_EFFECT, "{what} changed scores by {effect}");
    }
    // the soft cap is what separates the golden from transformers' default sdpa on these rows
    let sdpa = golden["sdpa_without_softcap"]["max_abs_diff"]
        .as_f64()
        .unwrap();
    assert!(sdpa > 100.0 * FP32_TOLERANCE, "sdpa drift {sdpa}");
}

#[test]
fn gemma2_classifier_bf16_within_transformers_own_spread() {
    let golden = golden("gemma2-rm");
    let examples = golden["examples"].as_array().unwrap();
    let column = |key: &str| -> Vec<Value> { examples.iter().map(|e| e[key].clone()).collect() };
    let fp32 = golden_scores(
        &golden,
        &column("scores_chosen"),
        &column("scores_rejected"),
    );
    let bound = &golden["bf16_bound"];
    let max_abs_diff = bound["max_abs_diff"].as_f64().unwrap();
    let max_win_flips = bound["max_win_flips"].as_u64().unwrap() as usize;
    let Some(ours) = classifier_scores(&golden, Kind::BFloat16, packed(), false) else {
        return;
    };
    let (worst, flipped) = compare("bf16 vs fp32", &ours, &fp32);
    eprintln!(
        "gemma2-rm herd bf16 vs transformers fp32: max |diff| {worst:.4} (bound {max_abs_diff:.4}), \
         {} win flips (bound {max_win_flips}); transformers' own: {}",
        flipped.len(),
        bound["transformers"]
    );
    assert!(
        worst <= max_abs_diff,
        "bf16 max |diff| {worst} > {max_abs_diff}"
    );
    assert!(flipped.len() <= max_win_flips, "bf16 flips {flipped:?}");
}

fn dpo_rewards(
    golden: &Value,
    ref_model: Option<&str>,
    ref_free: RefFreeType,
    share: bool,
) -> Option<Vec<(f64, f64)>> {
    let mut req = request(
        golden,
        golden["policy"].as_str().unwrap(),
        Kind::Float,
        packed(),
        share,
    )?;
    req.ref_free_type = ref_free;
    req.ref_model = ref_model.map(|m| fixtures().join("models").join(m));
    let scored = score_pairs(&req, &pairs(golden)).unwrap();
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

#[test]
fn gemma2_dpo_final_logit_softcap_matches_transformers() {
    let golden = golden("gemma2-dpo");
    let examples = golden["examples"].as_array().unwrap();
    let reference = golden["ref"].as_str().unwrap();
    let Some(with_ref) = dpo_rewards(&golden, Some(reference), RefFreeType::Avg, false) else {
        return;
    };
    assert_eq!(with_ref.len(), examples.len());
    for ((chosen, rejected), e) in with_ref.iter().zip(examples) {
        let id = &e["id"];
        for (side, ours) in [("chosen", chosen), ("rejected", rejected)] {
            let scale = e[format!("policy_sum_{side}")].as_f64().unwrap().abs()
                + e[format!("ref_sum_{side}")].as_f64().unwrap().abs();
            let theirs = e[format!("reward_{side}")].as_f64().unwrap();
            assert_close(*ours, theirs, scale, &format!("{id} reward {side}"));
        }
    }
    for (kind, key) in [
        (RefFreeType::Avg, "avg"),
        (RefFreeType::Sum, "sum"),
        (RefFreeType::Norm, "norm"),
    ] {
        let unshared = dpo_rewards(&golden, None, kind, false).unwrap();
        let shared = dpo_rewards(&golden, None, kind, true).unwrap();
        for (((c, r), (sc, sr)), e) in unshared.iter().zip(&shared).zip(examples) {
            let id = &e["id"];
            let chosen = e[format!("policy_{key}_chosen")].as_f64().unwrap();
            let rejected = e[format!("policy_{key}_rejected")].as_f64().unwrap();
            assert_close(*c, chosen, chosen.abs(), &format!("{id} {key} chosen"));
            assert_close(
                *r,
                rejected,
                rejected.abs(),
                &format!("{id} {key} rejected"),
            );
            assert_close(
                *sc,
                chosen,
                chosen.abs(),
                &format!("{id} {key} chosen, shared prompt"),
            );
            assert_close(
                *sr,
                rejected,
                rejected.abs(),
                &format!("{id} {key} rejected, shared prompt"),
            );
        }
    }
}
