//! GPT-NeoX and GPT-2 against transformers 4.57.6 on tiny random-weight models.
//!
//! Goldens and models come from tests/golden/make_neox_goldens.py (tests/golden/fixtures/neox/);
//! regenerate them with
//! `$HOME/.cache/herd/venv-torch-2.11.0/bin/python tests/golden/make_neox_goldens.py`.
//!
//! Tolerances as for the Llama family (golden_parity.rs): fp32 scores within 1e-4 of
//! transformers' and no win flips, at batch size 1, packed, against RewardBench's padded batches
//! and with the shared prompt computed once; packed equal to batch size 1 within 1e-5; bf16
//! within the golden's `bf16_bound`; DPO log-prob sums within 1e-4 + 5e-7 x their magnitude.

mod support;

use std::path::{Path, PathBuf};

use herd_engine::batching::BatchLimits;
use herd_engine::dpo::RefFreeType;
use herd_engine::encode::classifier_inputs;
use herd_engine::model_dir::ModelDir;
use herd_engine::models::ModelSpec;
use herd_engine::scorer::{score_pairs, ScoreRequest};
use serde_json::Value;
use support::{
    assert_close, compare, floats, formatted_texts, ids, lists, one_per_batch, packed, pairs,
    Scores, FP32_TOLERANCE,
};
use tch::{Kind, Tensor};

fn fixtures() -> PathBuf {
    herd_testkit::workspace_root().join("tests/golden/fixtures/neox")
}

fn golden(case: &str) -> Value {
    herd_testkit::fixtures::read_json(&fixtures().join(format!("{case}.json")))
}

fn request(golden: &Value, model: &Path, kind: Kind, limits: BatchLimits) -> ScoreRequest {
    ScoreRequest {
        model: model.to_path_buf(),
        tokenizer: None,
        ref_model: None,
        ref_free_type: RefFreeType::Avg,
        chat_template: golden["chat_template"]
            .as_str()
            .unwrap_or("tulu")
            .to_string(),
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

fn model_path(golden: &Value, key: &str) -> PathBuf {
    fixtures()
        .join("models")
        .join(golden[key].as_str().unwrap())
}

impl Scores {
    /// transformers' fp32 batch-size-1 scores (`examples[i].scores_*`)
    fn batch_size_1(golden: &Value) -> Self {
        let rows = golden["examples"].as_array().unwrap();
        let column = |key: &str| rows.iter().map(|e| floats(&e[key])).collect();
        Self {
            chosen: column("scores_chosen"),
            rejected: column("scores_rejected"),
        }
    }

    /// one of transformers' other runs stored as two lists (`padded_batch_scores_*`, `bf16.scores_*`)
    fn stored(chosen: &Value, rejected: &Value) -> Self {
        Self {
            chosen: lists(chosen),
            rejected: lists(rejected),
        }
    }
}

fn score(golden: &Value, kind: Kind, limits: BatchLimits, share_prefix: bool) -> Scores {
    let mut req = request(golden, &model_path(golden, "model"), kind, limits);
    req.share_prefix = share_prefix;
    Scores::of(&score_pairs(&req, &pairs(golden)).unwrap())
}

/// RewardBench's texts and the ids transformers attended to.
fn check_formatting_and_tokens(case: &str) {
    let golden = golden(case);
    let req = request(
        &golden,
        &model_path(&golden, "model"),
        Kind::Float,
        packed(),
    );
    let (tokenizer, texts) = formatted_texts(&golden, &pairs(&golden), &req);
    let examples = golden["examples"].as_array().unwrap();
    let encoded = classifier_inputs(&tokenizer, texts, req.max_length).unwrap();
    assert_eq!(encoded.len(), 2 * examples.len(), "{case}: sequences");
    for (i, example) in examples.iter().enumerate() {
        for (k, side) in ["chosen", "rejected"].iter().enumerate() {
            // no duplicated BOS here: transformers attended every id
            assert!(ids(&example[format!("attention_mask_{side}")])
                .iter()
                .all(|&m| m == 1));
            assert_eq!(
                encoded[2 * i + k],
                ids(&example[format!("input_ids_{side}")]),
                "{case} example {i} {side} ids"
            );
        }
    }
}

fn check_classifier_fp32(case: &str) {
    let golden = golden(case);
    let batch_size_1 = Scores::batch_size_1(&golden);
    let padded = Scores::stored(
        &golden["padded_batch_scores_chosen"],
        &golden["padded_batch_scores_rejected"],
    );
    let single = score(&golden, Kind::Float, one_per_batch(), false);
    let batched = score(&golden, Kind::Float, packed(), false);
    // chosen and rejected in one forked row, the prompt computed once
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
            "shared prefix vs transformers batch size 1",
            &shared,
            &batch_size_1,
        ),
    ] {
        let what = format!("{case}: fp32 {what}");
        let (worst, flipped) = compare(&what, ours, theirs);
        eprintln!("{what}: max |diff| {worst:.2e}");
        assert!(worst < FP32_TOLERANCE, "{what}: max |diff| {worst}");
        assert!(
            flipped.is_empty(),
            "{what}: win/loss differs on rows {flipped:?}"
        );
    }
    for (what, ours) in [("packed", &batched), ("shared prefix", &shared)] {
        let what = format!("{case}: {what} vs batch size 1");
        let (worst, flipped) = compare(&what, ours, &single);
        eprintln!("{what}: max |diff| {worst:.2e}");
        assert!(
            worst < 1e-5,
            "{what}: batch composition moved scores by {worst}"
        );
        assert!(
            flipped.is_empty(),
            "{what}: win/loss differs on rows {flipped:?}"
        );
    }
}

/// herd's bf16 against transformers' fp32 golden within the golden's bound (twice transformers'
/// own largest bf16 difference; its most win flips plus 2).
fn check_classifier_bf16(case: &str) {
    let golden = golden(case);
    let bound = &golden["bf16_bound"];
    let max_abs_diff = bound["max_abs_diff"].as_f64().unwrap();
    let max_win_flips = bound["max_win_flips"].as_u64().unwrap() as usize;
    let fp32 = Scores::batch_size_1(&golden);
    let ours = score(&golden, Kind::BFloat16, packed(), false);
    let what = format!("{case}: herd bf16 vs transformers fp32");
    let (worst, flipped) = compare(&what, &ours, &fp32);
    let theirs = Scores::stored(
        &golden["bf16"]["scores_chosen"],
        &golden["bf16"]["scores_rejected"],
    );
    let (against_bf16, bf16_flips) = compare(&what, &ours, &theirs);
    eprintln!(
        "{what}: max |diff| {worst:.4} (bound {max_abs_diff:.4}), {} win flips (bound \
         {max_win_flips}); transformers' own bf16 vs fp32: {}; herd bf16 vs transformers bf16: \
         max |diff| {against_bf16:.4}, {} flips",
        flipped.len(),
        bound["transformers"],
        bf16_flips.len()
    );
    assert!(
        worst <= max_abs_diff,
        "{what}: max |diff| {worst} > {max_abs_diff}"
    );
    assert!(flipped.len() <= max_win_flips, "{what}: flips {flipped:?}");
}

#[test]
fn gpt_neox_parallel_residual_partial_rotary_classifier() {
    check_formatting_and_tokens("neox-rm");
    check_classifier_fp32("neox-rm");
}

#[test]
fn gpt2_learned_positions_conv1d_classifier() {
    check_formatting_and_tokens("gpt2-rm");
    check_classifier_fp32("gpt2-rm");
}

/// OpenAssistant's GPTNeoXRewardModel as rewardbench 0.1.4 registers it: `out_proj` with a bias,
/// read at the last token of oasst_pythia texts, which is <|endoftext|>, the pad id.
#[test]
fn openassistant_gpt_neox_reward_model() {
    check_formatting_and_tokens("oasst-rm");
    check_classifier_fp32("oasst-rm");
}

#[test]
fn bf16_within_transformers_own_bf16_spread() {
    for case in ["neox-rm", "gpt2-rm", "oasst-rm"] {
        check_classifier_bf16(case);
    }
}

fn dpo_request(golden: &Value, with_ref: bool, ref_free: RefFreeType) -> ScoreRequest {
    let mut req = request(golden, &model_path(golden, "policy"), Kind::Float, packed());
    req.ref_free_type = ref_free;
    if with_ref {
        req.ref_model = Some(model_path(golden, "ref"));
    }
    req
}

/// DPO rewards (policy - reference summed log-probs) and the reference-free aggregates of `case`.
fn check_dpo(case: &str) {
    let golden = golden(case);
    let pairs = pairs(&golden);
    let examples = golden["examples"].as_array().unwrap();
    // the reference model is the sequential-residual, full-rotary, bias-free variant
    let spec = ModelSpec::open(ModelDir::open(model_path(&golden, "ref")).unwrap()).unwrap();
    let options = spec.config.gpt.as_ref().unwrap();
    assert!(!options.parallel_residual && options.rotary_ndims == spec.config.head_dim);
    assert!(!spec.config.biases.qkv);

    let scored = score_pairs(&dpo_request(&golden, true, RefFreeType::Avg), &pairs).unwrap();
    assert_eq!(scored.model_type, "DPO");
    assert_eq!(scored.pairs.len(), examples.len());
    let mut worst: f64 = 0.0;
    for (pair, example) in scored.pairs.iter().zip(examples) {
        let id = example["id"].to_string();
        for (side, ours) in [("chosen", pair.chosen[0]), ("rejected", pair.rejected[0])] {
            let scale = example[format!("policy_sum_{side}")]
                .as_f64()
                .unwrap()
                .abs()
                + example[format!("ref_sum_{side}")].as_f64().unwrap().abs();
            let theirs = example[format!("reward_{side}")].as_f64().unwrap();
            worst = worst.max((ours - theirs).abs());
            assert_close(ours, theirs, scale, &format!("{id} reward {side}"));
        }
        let their_win = example["reward_chosen"].as_f64() > example["reward_rejected"].as_f64();
        assert_eq!(
            pair.chosen[0] > pair.rejected[0],
            their_win,
            "{id}: win/loss"
        );
    }
    eprintln!("{case}: rewards max |diff| {worst:.2e}");
    for (kind, key) in [
        (RefFreeType::Avg, "avg"),
        (RefFreeType::Sum, "sum"),
        (RefFreeType::Norm, "norm"),
    ] {
        let scored = score_pairs(&dpo_request(&golden, false, kind), &pairs).unwrap();
        assert_eq!(scored.model_type, "DPO Ref. Free");
        assert_eq!(scored.pairs.len(), examples.len());
        for (pair, example) in scored.pairs.iter().zip(examples) {
            let id = example["id"].to_string();
            for (side, ours) in [("chosen", pair.chosen[0]), ("rejected", pair.rejected[0])] {
                let theirs = example[format!("policy_{key}_{side}")].as_f64().unwrap();
                assert_close(
                    ours,
                    theirs,
                    theirs.abs(),
                    &format!("{id} ref-free {key} {side}"),
                );
            }
        }
    }
}

#[test]
fn gpt_neox_dpo_policy_parallel_reference_sequential() {
    check_dpo("neox-dpo");
}

/// GPT2LMHeadModel (lm_head tied to wte) as the policy, the NeoX reference beside it.
#[test]
fn gpt2_dpo_tied_lm_head() {
    check_dpo("gpt2-dpo");
}

/// A copy of the GPT-2 fixture whose position table is cut to `positions` rows.
fn gpt2_with_positions(positions: i64) -> tempfile::TempDir {
    let source = fixtures().join("models/gpt2-rm");
    let dir = tempfile::tempdir().unwrap();
    for file in [
        "tokenizer.json",
        "tokenizer_config.json",
        "special_tokens_map.json",
    ] {
        std::fs::copy(source.join(file), dir.path().join(file)).unwrap();
    }
    let mut config: Value =
        serde_json::from_slice(&std::fs::read(source.join("config.json")).unwrap()).unwrap();
    config["n_positions"] = positions.into();
    std::fs::write(dir.path().join("config.json"), config.to_string()).unwrap();
    let tensors: Vec<(String, Tensor)> = Tensor::read_safetensors(source.join("model.safetensors"))
        .unwrap()
        .into_iter()
        .map(|(name, t)| {
            let t = if name == "transformer.wpe.weight" {
                t.narrow(0, 0, positions).contiguous()
            } else {
                t
            };
            (name, t)
        })
        .collect();
    Tensor::write_safetensors(&tensors, dir.path().join("model.safetensors")).unwrap();
    dir
}

#[test]
fn gpt2_refuses_sequences_longer_than_its_position_table() {
    let golden = golden("gpt2-rm");
    let pairs = pairs(&golden);
    let longest = golden["examples"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|e| ["chosen", "rejected"].map(|s| ids(&e[format!("input_ids_{s}")]).len()))
        .max()
        .unwrap();
    // a table that fits every sequence scores as the full one does
    let fits = gpt2_with_positions(longest as i64);
    let req = request(&golden, fits.path(), Kind::Float, packed());
    let (worst, _) = compare(
        "gpt2 cut table",
        &Scores::of(&score_pairs(&req, &pairs).unwrap()),
        &Scores::batch_size_1(&golden),
    );
    assert!(worst < FP32_TOLERANCE, "cut table moved scores by {worst}");
    // one position short: refused with the reason, not a libtorch index error
    let short = gpt2_with_positions(longest as i64 - 1);
    for share_prefix in [false, true] {
        let mut req = request(&golden, short.path(), Kind::Float, packed());
        req.share_prefix = share_prefix;
        let error = score_pairs(&req, &pairs).err().unwrap();
        let message = format!("{error:#}");
        assert!(
            message.contains(&format!(
                "has {longest} tokens but the model has {} positions",
                longest - 1
            )),
            "{message}"
        );
    }
}
