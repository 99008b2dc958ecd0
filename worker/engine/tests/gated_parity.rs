//! Parity of the gated multi-objective heads (ArmoRM, QRM-Llama3, QRM-Llama3.1) with the
//! reference on tiny random models.
//!
//! Goldens and models come from tests/golden/make_gated_goldens.py (rewardbench 0.1.4's qrm.py,
//! ArmoRM's hub-only modeling file transcribed; fp32 at batch size 1 and in the CLI's left-padded
//! batches of 8; bf16 with the bound derived from the reference's own bf16 draws); regenerate with
//! `$HOME/.cache/herd/venv-rewardbench-0.1.4/bin/python tests/golden/make_gated_goldens.py`.
//!
//! The goldens are token ids in the Llama-3 chat layout (no Llama-3 tokenizer is available), so
//! these tests start at the ids: gate positions, then scores one sequence per batch, packed
//! batches, and pairs sharing their prompt in one forked row, each fp32 score within 1e-4 of the
//! reference and no win flipped; bf16 within the golden's bound. The goldens' `cli` block then
//! checks the text path: the package's formatting and pipelines over a stand-in Llama-3 tokenizer
//! in each model folder, against herd's scorer from the pairs' texts.

mod support;

use std::path::PathBuf;

use herd_engine::batching::{BatchLimits, BatchSettings};
use herd_engine::classifier::{score_sequence_pairs, score_sequences};
use herd_engine::dpo::RefFreeType;
use herd_engine::encode::pooled_position;
use herd_engine::model_dir::ModelDir;
use herd_engine::models::gated::{self, LLAMA3_GATE_PATTERN};
use herd_engine::models::registry::{DoubleBos, HeadDtype, Output, Pooled};
use herd_engine::models::{ModelSpec, SequenceClassifier};
use herd_engine::scorer::{score_pairs_with, ScoreRequest};
use herd_rewardbench::dataset::PreferencePair;
use serde_json::Value;
use support::{ids, one_per_batch, packed, FP32_TOLERANCE};
use tch::Kind;

const CASES: [&str; 3] = ["armorm", "qrm-llama31", "qrm-llama3"];

fn fixtures() -> PathBuf {
    herd_testkit::workspace_root().join("tests/golden/fixtures/gated")
}

fn golden(case: &str) -> Value {
    herd_testkit::fixtures::read_json(&fixtures().join(format!("{case}.json")))
}

fn spec(golden: &Value) -> ModelSpec {
    let dir = fixtures()
        .join("models")
        .join(golden["model"].as_str().unwrap());
    ModelSpec::open(ModelDir::open(dir).unwrap()).unwrap()
}

fn model(golden: &Value, kind: Kind) -> SequenceClassifier {
    spec(golden)
        .load_classifier(support::test_device(), kind)
        .unwrap()
}

/// Rows chosen, rejected, chosen, ... and the reference's scores in that order under `prefix`.
fn rows(golden: &Value, prefix: &str) -> (Vec<Vec<u32>>, Vec<f64>) {
    let mut sequences = Vec::new();
    let mut scores = Vec::new();
    for e in golden["examples"].as_array().unwrap() {
        for side in ["chosen", "rejected"] {
            sequences.push(ids(&e[format!("{side}_ids")]));
            scores.push(e[format!("{prefix}scores_{side}")].as_f64().unwrap());
        }
    }
    (sequences, scores)
}

fn settings(golden: &Value, limits: BatchLimits) -> BatchSettings {
    BatchSettings {
        limits,
        pad_id: golden["pad_token_id"].as_u64().unwrap() as u32,
        device: support::test_device(),
        prefetch: herd_engine::batching::PREFETCH_BATCHES,
    }
}

/// Our scores for `sequences` in three layouts: one per batch, packed, pairs in forked rows.
fn score_all(
    model: &SequenceClassifier,
    golden: &Value,
    sequences: &[Vec<u32>],
) -> Vec<(&'static str, Vec<f64>)> {
    let pad = golden["pad_token_id"].as_u64().unwrap() as u32;
    let pooled: Vec<usize> = sequences.iter().map(|s| pooled_position(s, pad)).collect();
    let flat = |logits: Vec<Vec<f32>>| -> Vec<f64> {
        logits
            .into_iter()
            .map(|row| {
                assert_eq!(row.len(), 1, "one score per sequence");
                row[0] as f64
            })
            .collect()
    };
    let single = score_sequences(
        model,
        sequences,
        &pooled,
        settings(golden, one_per_batch()),
        |_| {},
    );
    let batched = score_sequences(
        model,
        sequences,
        &pooled,
        settings(golden, packed()),
        |_| {},
    );
    let forked = score_sequence_pairs(
        model,
        sequences,
        &pooled,
        settings(golden, packed()),
        |_| {},
    );
    vec![
        ("batch size 1", flat(single.unwrap())),
        ("packed batches", flat(batched.unwrap())),
        ("pairs in forked rows", flat(forked.unwrap())),
    ]
}

/// (largest |ours - theirs|, pairs whose win differs)
fn agreement(ours: &[f64], theirs: &[f64]) -> (f64, usize) {
    let worst = ours
        .iter()
        .zip(theirs)
        .map(|(a, b)| (a - b).abs())
        .fold(0.0, f64::max);
    let flips = (0..ours.len() / 2)
        .filter(|&i| (ours[2 * i] > ours[2 * i + 1]) != (theirs[2 * i] > theirs[2 * i + 1]))
        .count();
    (worst, flips)
}

#[test]
fn gate_positions_are_the_references() {
    for case in CASES {
        let golden = golden(case);
        assert_eq!(ids(&golden["gate_pattern"]), LLAMA3_GATE_PATTERN.to_vec());
        let model = model(&golden, Kind::Float);
        let (sequences, _) = rows(&golden, "");
        let ours = model.gate_positions(&sequences).unwrap().unwrap();
        let theirs: Vec<usize> = golden["examples"]
            .as_array()
            .unwrap()
            .iter()
            .flat_map(|e| {
                [
                    e["gate_chosen"].as_u64().unwrap(),
                    e["gate_rejected"].as_u64().unwrap(),
                ]
            })
            .map(|p| p as usize)
            .collect();
        assert_eq!(ours, theirs, "{case}");
    }
}

#[test]
fn fp32_scores_match_the_reference_in_every_layout() {
    for case in CASES {
        let golden = golden(case);
        let model = model(&golden, Kind::Float);
        let (sequences, theirs) = rows(&golden, "");
        let (_, padded) = rows(&golden, "padded_batch_");
        // the reference itself is batch invariant: its padded batches agree with batch size 1
        let (worst, flips) = agreement(&padded, &theirs);
        assert!(
            worst < FP32_TOLERANCE && flips == 0,
            "{case}: reference padded batches"
        );
        for (layout, ours) in score_all(&model, &golden, &sequences) {
            let (worst, flips) = agreement(&ours, &theirs);
            println!("{case} fp32 {layout}: max |diff| {worst:.2e}, {flips} win flips");
            assert!(
                worst < FP32_TOLERANCE,
                "{case} {layout}: max |diff| {worst}"
            );
            assert_eq!(flips, 0, "{case} {layout}: win flips");
        }
    }
}

#[test]
fn bf16_scores_stay_within_the_reference_spread() {
    for case in CASES {
        let golden = golden(case);
        let bound = &golden["bf16_bound"];
        let max_diff = bound["max_abs_diff"].as_f64().unwrap();
        let max_flips = bound["max_win_flips"].as_u64().unwrap() as usize;
        let model = model(&golden, Kind::BFloat16);
        let (sequences, theirs) = rows(&golden, "");
        for (layout, ours) in score_all(&model, &golden, &sequences) {
            let (worst, flips) = agreement(&ours, &theirs);
            println!(
                "{case} bf16 {layout}: max |diff| {worst:.4} (bound {max_diff:.4}), \
                 {flips} win flips (bound {max_flips})"
            );
            assert!(worst <= max_diff, "{case} {layout}: max |diff| {worst}");
            assert!(flips <= max_flips, "{case} {layout}: {flips} win flips");
        }
    }
}

#[test]
fn a_sequence_without_the_prompt_end_pattern_is_an_error_naming_it() {
    let golden = golden("armorm");
    let model = model(&golden, Kind::Float);
    let (mut sequences, _) = rows(&golden, "");
    sequences.truncate(4);
    // the third sequence loses its assistant header: the gate has nothing to read
    let header = gated::gate_position(&sequences[2], &LLAMA3_GATE_PATTERN).unwrap();
    sequences[2][header + 2] = 882;
    let pooled: Vec<usize> = sequences.iter().map(|s| s.len() - 1).collect();
    let error = score_sequences(
        &model,
        &sequences,
        &pooled,
        settings(&golden, packed()),
        |_| {},
    )
    .unwrap_err()
    .to_string();
    assert!(error.contains("sequence 2"), "{error}");
    assert!(error.contains("LlamaForRewardModelWithGating"), "{error}");
    assert!(error.contains("<|eot_id|>"), "{error}");
}

#[test]
fn a_gated_head_read_without_its_gate_gives_no_score() {
    // a caller that skips `gate_position` must not get a plausible score gated at the wrong token
    for case in CASES {
        let model = model(&golden(case), Kind::Float);
        let hidden = tch::Tensor::ones([3, 8], (Kind::Float, support::test_device()));
        let scores = Vec::<Vec<f32>>::try_from(&model.head.forward(&hidden)).unwrap();
        assert_eq!(scores.len(), 3, "{case}");
        assert!(
            scores.iter().flatten().all(|x| x.is_nan()),
            "{case}: {scores:?}"
        );
    }
}

#[test]
fn the_registry_gives_each_class_its_pipeline() {
    for case in CASES {
        let golden = golden(case);
        let spec = spec(&golden);
        let class = golden["class"].as_str().unwrap();
        assert_eq!(spec.entry.architecture, class);
        assert_eq!(spec.config.num_labels, 1, "{case}");
        let quirks = spec.entry.quirks;
        // the remote code pools by its own first-pad rule, whatever transformers does
        assert_eq!(quirks.pooled, Pooled::FirstPadMinusOne, "{case}");
        let armo = class == "LlamaForRewardModelWithGating";
        // ArmoRMPipeline returns logits [B] and forwards the tokens as they are; QRM goes
        // through RewardBenchPipeline ([B, 1], duplicated BOS masked) with a float32 head
        assert_eq!(
            quirks.output,
            if armo { Output::Scalar } else { Output::Row },
            "{case}"
        );
        assert_eq!(
            quirks.double_bos,
            if armo {
                DoubleBos::Forwarded
            } else {
                DoubleBos::Masked
            },
            "{case}"
        );
        assert_eq!(
            quirks.head_dtype,
            if armo {
                HeadDtype::Model
            } else {
                HeadDtype::Float32
            },
            "{case}"
        );
    }
}

fn cli_request(golden: &Value, share_prefix: bool) -> ScoreRequest {
    ScoreRequest {
        model: fixtures()
            .join("models")
            .join(golden["model"].as_str().unwrap()),
        tokenizer: None,
        ref_model: None,
        ref_free_type: RefFreeType::Avg,
        // the tokenizer's own (Llama-3) template wins, as in RewardBench
        chat_template: "tulu".to_string(),
        // the CLI does not truncate; every example is far shorter
        max_length: 8192,
        limits: packed(),
        share_prefix,
        device: support::test_device(),
        kind: Kind::Float,
        provenance: Default::default(),
        pooling: Default::default(),
        weights: Default::default(),
    }
}

#[test]
fn the_text_path_matches_the_packages_pipelines() {
    for case in CASES {
        let golden = golden(case);
        let cli = &golden["cli"];
        let examples = cli["examples"].as_array().unwrap();
        let pairs: Vec<PreferencePair> = examples
            .iter()
            .map(|e| {
                let mut pair = e.clone();
                for field in ["text_chosen", "text_rejected", "input_ids_chosen"] {
                    pair.as_object_mut().unwrap().remove(field);
                }
                for field in ["input_ids_rejected", "scores_chosen", "scores_rejected"] {
                    pair.as_object_mut().unwrap().remove(field);
                }
                serde_json::from_value(pair).unwrap()
            })
            .collect();
        let theirs: Vec<f64> = examples
            .iter()
            .flat_map(|e| {
                [
                    e["scores_chosen"].as_f64().unwrap(),
                    e["scores_rejected"].as_f64().unwrap(),
                ]
            })
            .collect();
        let spec = spec(&golden);
        for share_prefix in [false, true] {
            let scored =
                score_pairs_with(&cli_request(&golden, share_prefix), &spec, &pairs).unwrap();
            assert_eq!(scored.chat_template, "tokenizer", "{case}");
            // ArmoRMPipeline returns logits [B] (one float per sequence), QRM's [B, 1]
            assert_eq!(scored.scalar, cli["pipeline"] == "ArmoRMPipeline", "{case}");
            assert_eq!(scored.pairs.len(), pairs.len(), "{case}");
            let ours: Vec<f64> = scored
                .pairs
                .iter()
                .flat_map(|p| {
                    assert_eq!((p.chosen.len(), p.rejected.len()), (1, 1), "{case}");
                    [p.chosen[0], p.rejected[0]]
                })
                .collect();
            let (worst, flips) = agreement(&ours, &theirs);
            println!(
                "{case} text path (share prefix {share_prefix}): max |diff| {worst:.2e}, \
                 {flips} win flips"
            );
            assert!(worst < FP32_TOLERANCE, "{case}: max |diff| {worst}");
            assert_eq!(flips, 0, "{case}");
        }
    }
}

#[test]
fn a_text_without_the_llama3_layout_names_its_example() {
    // a Llama-2 tokenizer without a chat template: herd formats with FastChat's tulu template,
    // which has no Llama-3 assistant header for the gate to read
    let golden = golden("armorm");
    let mut request = cli_request(&golden, true);
    request.tokenizer =
        Some(herd_testkit::workspace_root().join("tests/golden/fixtures/models/llama-gqa-rm"));
    let pair: PreferencePair = serde_json::from_value(serde_json::json!({
        "id": 4242, "prompt": "Hi?", "chosen": "Hello.", "rejected": "Go away."
    }))
    .unwrap();
    let error = score_pairs_with(&request, &spec(&golden), &[pair])
        .err()
        .unwrap()
        .to_string();
    assert!(error.contains("example 4242 (chosen text)"), "{error}");
    assert!(error.contains("<|start_header_id|>assistant"), "{error}");
}
