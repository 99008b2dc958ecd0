//! Parity with Hugging Face transformers on tiny random-weight models.
//!
//! Goldens and models come from tests/golden/make_fixtures.py (transformers 4.57.6, RewardBench
//! formatting; fp32 at batch size 1 and in RewardBench's padded batches of 8, and bf16 with the
//! bound derived from it); regenerate them with
//! `$HOME/.cache/herd/venv-torch-2.11.0/bin/python tests/golden/make_fixtures.py`.
//!
//! Tolerances (README.md "Parity with transformers" states them too): fp32 scores within 1e-4
//! absolute of transformers' and no win flips, at batch size 1, in packed batches and with the
//! shared prompt; bf16 scores within the golden's `bf16_bound`.

mod support;

use std::path::PathBuf;

use herd_engine::batching::BatchLimits;
use herd_engine::dpo::RefFreeType;
use herd_engine::encode::classifier_inputs;
use herd_engine::model_dir::ModelDir;
use herd_engine::scorer::{score_pairs, ScoreRequest};
use herd_engine::tokenizer::RewardTokenizer;
use herd_rewardbench::dataset::PreferencePair;
use herd_rewardbench::v1::is_win;
use serde_json::Value;
use support::{
    assert_close, floats, formatted_texts, ids, lists, one_per_batch, packed, pairs, Scores,
    FP32_TOLERANCE,
};
use tch::Kind;

fn fixtures() -> PathBuf {
    herd_testkit::workspace_root().join("tests/golden/fixtures")
}

fn golden(case: &str) -> Value {
    let path = fixtures().join(format!("{case}.json"));
    herd_testkit::fixtures::read_json(&path)
}

fn request(golden: &Value, model: &str, kind: Kind, limits: BatchLimits) -> ScoreRequest {
    ScoreRequest {
        model: fixtures().join("models").join(model),
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

/// The ids transformers attends to: the masked duplicate BOS is dropped (see encode.rs).
fn attended_ids(example: &Value, side: &str) -> Vec<u32> {
    let all = ids(&example[format!("input_ids_{side}")]);
    let mask = ids(&example[format!("attention_mask_{side}")]);
    all.into_iter()
        .zip(mask)
        .filter(|(_, m)| *m == 1)
        .map(|(id, _)| id)
        .collect()
}

fn check_formatting_and_tokens(case: &str) {
    let golden = golden(case);
    let model = golden["model"].as_str().unwrap();
    let req = request(&golden, model, Kind::Float, packed());
    let (tokenizer, texts) = formatted_texts(&golden, &pairs(&golden), &req);
    let encoded = classifier_inputs(&tokenizer, texts, req.max_length).unwrap();
    let examples = golden["examples"].as_array().unwrap();
    assert_eq!(
        encoded.len(),
        2 * examples.len(),
        "{case}: encoded sequences vs 2 x examples"
    );
    for (i, example) in examples.iter().enumerate() {
        assert_eq!(
            encoded[2 * i],
            attended_ids(example, "chosen"),
            "{case} example {i} chosen ids"
        );
        assert_eq!(
            encoded[2 * i + 1],
            attended_ids(example, "rejected"),
            "{case} example {i} rejected ids"
        );
    }
}

/// Which of transformers' runs stored in a classifier golden.
#[derive(Clone, Copy, Debug)]
enum Run {
    /// fp32, batch size 1: `examples[i].scores_*`
    BatchSize1,
    /// fp32, RewardBench's padded batches: `padded_batch_scores_*`
    PaddedBatch,
    /// bf16, batch size 1: `bf16.scores_*`
    Bf16,
}

fn golden_scores(golden: &Value, run: Run) -> Scores {
    let case = golden["case"].as_str().unwrap();
    let rows = golden["examples"].as_array().unwrap();
    let column = |side: &str| -> Vec<Vec<f64>> {
        let key = format!("scores_{side}");
        match run {
            Run::BatchSize1 => rows.iter().map(|e| floats(&e[&key])).collect(),
            Run::PaddedBatch => lists(&golden[format!("padded_batch_{key}")]),
            Run::Bf16 => lists(&golden["bf16"][&key]),
        }
    };
    let scores = Scores {
        chosen: column("chosen"),
        rejected: column("rejected"),
    };
    assert_eq!(
        scores.chosen.len(),
        rows.len(),
        "{case} {run:?}: chosen score rows vs examples"
    );
    assert_eq!(
        scores.rejected.len(),
        rows.len(),
        "{case} {run:?}: rejected score rows vs examples"
    );
    scores
}

struct Agreement {
    max_abs_diff: f64,
    /// rows whose win/loss differs
    flipped: Vec<usize>,
}

/// Compares two runs row by row; the row counts and every row's label counts must be equal
/// first (a zip would silently pass over missing rows).
fn compare(what: &str, ours: &Scores, theirs: &Scores) -> Agreement {
    assert_eq!(
        ours.chosen.len(),
        theirs.chosen.len(),
        "{what}: number of scored rows"
    );
    assert_eq!(
        ours.rejected.len(),
        theirs.rejected.len(),
        "{what}: number of scored rows (rejected)"
    );
    let mut max_abs_diff: f64 = 0.0;
    let mut flipped = Vec::new();
    let rows = ours.chosen.iter().zip(&ours.rejected);
    let their_rows = theirs.chosen.iter().zip(&theirs.rejected);
    for (i, ((chosen, rejected), (their_chosen, their_rejected))) in
        rows.zip(their_rows).enumerate()
    {
        assert_eq!(
            chosen.len(),
            their_chosen.len(),
            "{what}: row {i}: chosen labels"
        );
        assert_eq!(
            rejected.len(),
            their_rejected.len(),
            "{what}: row {i}: rejected labels"
        );
        for (x, y) in chosen
            .iter()
            .zip(their_chosen)
            .chain(rejected.iter().zip(their_rejected))
        {
            max_abs_diff = max_abs_diff.max((x - y).abs());
        }
        if is_win(chosen, rejected) != is_win(their_chosen, their_rejected) {
            flipped.push(i);
        }
    }
    Agreement {
        max_abs_diff,
        flipped,
    }
}

fn row_ids(golden: &Value, rows: &[usize]) -> Vec<String> {
    rows.iter()
        .map(|&i| golden["examples"][i]["id"].to_string())
        .collect()
}

fn score(golden: &Value, kind: Kind, limits: BatchLimits, share_prefix: bool) -> Scores {
    let mut req = request(golden, golden["model"].as_str().unwrap(), kind, limits);
    req.share_prefix = share_prefix;
    Scores::of(&score_pairs(&req, &pairs(golden)).unwrap())
}

fn check_classifier_fp32(case: &str) {
    let golden = golden(case);
    let batch_size_1 = golden_scores(&golden, Run::BatchSize1);
    let padded = golden_scores(&golden, Run::PaddedBatch);
    let single = score(&golden, Kind::Float, one_per_batch(), false);
    let batched = score(&golden, Kind::Float, packed(), false);
    // chosen and rejected in one row, sharing the prompt's computation
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
        let agreement = compare(&what, ours, theirs);
        eprintln!("{what}: max |diff| {:.2e}", agreement.max_abs_diff);
        assert!(
            agreement.max_abs_diff < FP32_TOLERANCE,
            "{what}: max |diff| {} >= {FP32_TOLERANCE}",
            agreement.max_abs_diff
        );
        assert!(
            agreement.flipped.is_empty(),
            "{what}: win/loss differs on ids {:?}",
            row_ids(&golden, &agreement.flipped)
        );
    }
    // scores must not depend on batch composition
    let what = format!("{case}: packed vs batch size 1");
    let batch_effect = compare(&what, &batched, &single).max_abs_diff;
    eprintln!("{what}: max |diff| = {batch_effect:.2e}");
    assert!(
        batch_effect < 1e-5,
        "{case}: batch composition changed scores by {batch_effect}"
    );
}

/// herd's bf16 against transformers' fp32 golden, within the bound the fixture script derived
/// from transformers' own bf16 runs (`bf16_bound`: twice transformers' largest bf16 score
/// difference; transformers' most win flips plus 2), and only pairs whose fp32 margin is within
/// twice that score bound may flip.
fn check_classifier_bf16(case: &str) {
    let golden = golden(case);
    let bound = &golden["bf16_bound"];
    let max_abs_diff = bound["max_abs_diff"].as_f64().unwrap();
    let max_win_flips = bound["max_win_flips"].as_u64().unwrap() as usize;
    let fp32 = golden_scores(&golden, Run::BatchSize1);
    // a bound this loose would let a wrong layout or dtype path through
    let range = fp32
        .chosen
        .iter()
        .chain(&fp32.rejected)
        .flatten()
        .fold((f64::MAX, f64::MIN), |(lo, hi), &x| (lo.min(x), hi.max(x)));
    assert!(
        max_abs_diff > 0.0 && max_abs_diff < (range.1 - range.0) / 10.0,
        "{case}: bf16 bound {max_abs_diff} vs score range {range:?}"
    );
    assert!(
        max_win_flips < fp32.chosen.len() / 2,
        "{case}: bf16 bound allows {max_win_flips} flips of {} rows",
        fp32.chosen.len()
    );

    let ours = score(&golden, Kind::BFloat16, packed(), false);
    let what = format!("{case}: herd bf16 vs transformers fp32");
    let agreement = compare(&what, &ours, &fp32);
    let theirs = compare(
        &format!("{case}: herd bf16 vs transformers bf16"),
        &ours,
        &golden_scores(&golden, Run::Bf16),
    );
    eprintln!(
        "{what}: max |diff| {:.4} (bound {max_abs_diff:.4}), {} win flips {:?} (bound {max_win_flips}); \
         transformers' own bf16 vs fp32: {}; herd bf16 vs transformers bf16: max |diff| {:.4}, {} flips",
        agreement.max_abs_diff,
        agreement.flipped.len(),
        row_ids(&golden, &agreement.flipped),
        bound["transformers"],
        theirs.max_abs_diff,
        theirs.flipped.len(),
    );
    assert!(
        agreement.max_abs_diff <= max_abs_diff,
        "{what}: max |diff| {} > bound {max_abs_diff}",
        agreement.max_abs_diff
    );
    assert!(
        agreement.flipped.len() <= max_win_flips,
        "{what}: {} win flips (ids {:?}) > bound {max_win_flips}",
        agreement.flipped.len(),
        row_ids(&golden, &agreement.flipped)
    );
    // and only near-ties may flip: a pair whose fp32 margin exceeds what the bound lets each
    // side move cannot change order through bf16 rounding alone
    for &i in &agreement.flipped {
        let margin = fp32.chosen[i]
            .iter()
            .zip(&fp32.rejected[i])
            .map(|(c, r)| (c - r).abs())
            .fold(f64::MAX, f64::min);
        assert!(
            margin <= 2.0 * max_abs_diff,
            "{what}: row {} flipped with an fp32 margin {margin:.4} > 2 x bound {max_abs_diff:.4}",
            row_ids(&golden, &[i])[0]
        );
    }
}

#[test]
fn llama_gqa_llama3_rope_sharded_fastchat_tulu() {
    check_formatting_and_tokens("llama-gqa-rm");
    check_classifier_fp32("llama-gqa-rm");
}

#[test]
fn llama_left_truncation_keeps_bos() {
    check_formatting_and_tokens("llama-gqa-rm-trunc");
    check_classifier_fp32("llama-gqa-rm-trunc");
}

#[test]
fn mistral_two_labels_jinja_duplicate_bos() {
    check_formatting_and_tokens("mistral-rm");
    check_classifier_fp32("mistral-rm");
}

#[test]
fn qwen2_qkv_bias_chatml_gpt2_tokenizer() {
    check_formatting_and_tokens("qwen2-rm");
    check_classifier_fp32("qwen2-rm");
}

#[test]
fn bf16_within_transformers_own_bf16_spread() {
    for case in [
        "llama-gqa-rm",
        "llama-gqa-rm-trunc",
        "mistral-rm",
        "qwen2-rm",
    ] {
        check_classifier_bf16(case);
    }
}

fn dpo_golden() -> (Value, Vec<PreferencePair>) {
    let golden = golden("llama-dpo");
    let pairs = pairs(&golden);
    (golden, pairs)
}

fn dpo_request(golden: &Value, with_ref: bool, ref_free: RefFreeType) -> ScoreRequest {
    let mut req = request(
        golden,
        golden["policy"].as_str().unwrap(),
        Kind::Float,
        packed(),
    );
    req.ref_free_type = ref_free;
    if with_ref {
        req.ref_model = Some(
            fixtures()
                .join("models")
                .join(golden["ref"].as_str().unwrap()),
        );
    }
    req
}

#[test]
fn dpo_tokenization_matches_trl() {
    let (golden, pairs) = dpo_golden();
    let req = dpo_request(&golden, false, RefFreeType::Avg);
    let dir = ModelDir::open(&req.model).unwrap();
    let tokenizer = RewardTokenizer::load(&dir).unwrap();
    let formatter = herd_engine::scorer::choose_formatter(&tokenizer, "tulu").unwrap();
    let examples = golden["examples"].as_array().unwrap();
    assert_eq!(pairs.len(), examples.len(), "llama-dpo: pairs vs examples");
    for (pair, example) in pairs.iter().zip(examples) {
        let [chosen, rejected] = herd_engine::dpo::pair_sequences(
            &tokenizer,
            &formatter,
            pair,
            herd_engine::dpo::DpoLimits::default(),
        )
        .unwrap();
        assert_eq!(
            chosen.prompt,
            ids(&example["chosen_prompt_ids"]),
            "example {} chosen prompt",
            pair.id
        );
        assert_eq!(
            chosen.response,
            ids(&example["chosen_answer_ids"]),
            "example {} chosen answer",
            pair.id
        );
        assert_eq!(
            rejected.prompt,
            ids(&example["rejected_prompt_ids"]),
            "example {} rejected prompt",
            pair.id
        );
        assert_eq!(
            rejected.response,
            ids(&example["rejected_answer_ids"]),
            "example {} rejected answer",
            pair.id
        );
    }
}

#[test]
fn dpo_rewards_match_transformers() {
    let (golden, pairs) = dpo_golden();
    let examples = golden["examples"].as_array().unwrap();
    let scored = score_pairs(&dpo_request(&golden, true, RefFreeType::Avg), &pairs).unwrap();
    assert_eq!(scored.model_type, "DPO");
    assert_eq!(scored.pairs.len(), examples.len(), "llama-dpo: scored rows");
    for (pair, example) in scored.pairs.iter().zip(examples) {
        assert_eq!(
            (pair.chosen.len(), pair.rejected.len()),
            (1, 1),
            "llama-dpo {}: one reward per side",
            example["id"]
        );
        let id = example["id"].to_string();
        for side in ["chosen", "rejected"] {
            let scale = example[format!("policy_sum_{side}")]
                .as_f64()
                .unwrap()
                .abs()
                + example[format!("ref_sum_{side}")].as_f64().unwrap().abs();
            let ours = if side == "chosen" {
                pair.chosen[0]
            } else {
                pair.rejected[0]
            };
            let theirs = example[format!("reward_{side}")].as_f64().unwrap();
            assert_close(ours, theirs, scale, &format!("{id} reward {side}"));
        }
        let ours_win = pair.chosen[0] > pair.rejected[0];
        let their_win = example["reward_chosen"].as_f64() > example["reward_rejected"].as_f64();
        assert_eq!(ours_win, their_win, "{id}: win/loss");
    }
    for (kind, key) in [
        (RefFreeType::Avg, "avg"),
        (RefFreeType::Sum, "sum"),
        (RefFreeType::Norm, "norm"),
    ] {
        let scored = score_pairs(&dpo_request(&golden, false, kind), &pairs).unwrap();
        assert_eq!(scored.model_type, "DPO Ref. Free");
        assert_eq!(
            scored.pairs.len(),
            examples.len(),
            "llama-dpo ref-free {key}: scored rows"
        );
        for (pair, example) in scored.pairs.iter().zip(examples) {
            assert_eq!(
                (pair.chosen.len(), pair.rejected.len()),
                (1, 1),
                "llama-dpo ref-free {key} {}: one reward per side",
                example["id"]
            );
            let id = example["id"].to_string();
            let chosen = example[format!("policy_{key}_chosen")].as_f64().unwrap();
            let rejected = example[format!("policy_{key}_rejected")].as_f64().unwrap();
            assert_close(
                pair.chosen[0],
                chosen,
                chosen.abs(),
                &format!("{id} ref-free {key} chosen"),
            );
            assert_close(
                pair.rejected[0],
                rejected,
                rejected.abs(),
                &format!("{id} ref-free {key} rejected"),
            );
        }
    }
}

/// Batches assembled ahead on a producer thread (the default) and on the scoring thread
/// (`prefetch` 0) are the same batches: the scores are bit for bit the same, packed and with the
/// shared prompt, on the GQA model (whose shared-prefix rows take the masked path).
#[test]
fn scores_are_identical_with_batches_assembled_ahead() {
    use herd_engine::batching::{BatchSettings, PREFETCH_BATCHES};
    use herd_engine::classifier::{score_sequence_pairs, score_sequences};
    let golden = golden("llama-gqa-rm");
    let req = request(&golden, "llama-gqa-rm", Kind::Float, packed());
    let (tokenizer, texts) = formatted_texts(&golden, &pairs(&golden), &req);
    let sequences = classifier_inputs(&tokenizer, texts, req.max_length).unwrap();
    // the last token of each sequence (no padding inside a sequence)
    let pooled: Vec<usize> = sequences.iter().map(|s| s.len() - 1).collect();
    let spec = herd_engine::models::ModelSpec::open(ModelDir::open(&req.model).unwrap()).unwrap();
    let model = spec.load_classifier(req.device, req.kind).unwrap();
    let pad_id = RewardTokenizer::load(&ModelDir::open(&req.model).unwrap())
        .unwrap()
        .pad_id();
    let settings = |limits: BatchLimits, prefetch| BatchSettings {
        limits,
        pad_id,
        device: req.device,
        prefetch,
    };
    // small batches: many of them, so the producer runs ahead of the forward
    let small = BatchLimits {
        max_batch_tokens: 256,
        max_batch_rows: 64,
    };
    for limits in [small, packed()] {
        let inline = score_sequences(&model, &sequences, &pooled, settings(limits, 0), |_| {});
        let ahead = score_sequences(
            &model,
            &sequences,
            &pooled,
            settings(limits, PREFETCH_BATCHES),
            |_| {},
        );
        assert_eq!(inline.unwrap(), ahead.unwrap(), "{limits:?}: one per row");
        let inline = score_sequence_pairs(&model, &sequences, &pooled, settings(limits, 0), |_| {});
        let ahead = score_sequence_pairs(
            &model,
            &sequences,
            &pooled,
            settings(limits, PREFETCH_BATCHES),
            |_| {},
        );
        assert_eq!(inline.unwrap(), ahead.unwrap(), "{limits:?}: shared prefix");
    }
}
