//! Qwen3, OLMo2 and InternLM2 against their references on tiny random-weight models.
//!
//! Goldens and models come from tests/golden/make_qwen3_goldens.py (transformers 4.57.6 for Qwen3
//! and OLMo2; a transcription of the hub's remote modeling_internlm2.py + RewardBench's
//! InternLMPipeline for InternLM2); regenerate them with
//! `$HOME/.cache/herd/venv-torch-2.11.0/bin/python tests/golden/make_qwen3_goldens.py`.
//!
//! Tolerances as in golden_parity.rs: fp32 scores within 1e-4 of the reference with no win flips
//! at batch size 1, in packed batches and with the shared prompt; packed equal to batch size 1
//! within 1e-5; bf16 within the golden's `bf16_bound`. A ~16k-token Qwen3 input is scored with
//! peak memory far below a quadratic attention matrix.

mod support;

use std::path::PathBuf;

use herd_engine::batching::BatchLimits;
use herd_engine::dpo::RefFreeType;
use herd_engine::encode::{classifier_inputs, format_pair};
use herd_engine::model_dir::ModelDir;
use herd_engine::models::ModelSpec;
use herd_engine::scorer::{score_pairs, ScoreRequest};
use herd_engine::tokenizer::{AppendedToken, RewardTokenizer};
use herd_rewardbench::dataset::PreferencePair;
use serde_json::Value;
use support::{
    check_fp32_batchings, compare, formatted_texts, one_per_batch, packed, Scores, FP32_TOLERANCE,
};
use tch::Kind;

fn fixtures() -> PathBuf {
    herd_testkit::workspace_root().join("tests/golden/fixtures/qwen3")
}

fn golden(case: &str) -> Value {
    herd_testkit::fixtures::read_json(&fixtures().join(format!("{case}.json")))
}

fn examples(golden: &Value) -> &Vec<Value> {
    golden["examples"].as_array().unwrap()
}

fn pairs(golden: &Value) -> Vec<PreferencePair> {
    examples(golden)
        .iter()
        .map(|e| serde_json::from_value(e.clone()).unwrap())
        .collect()
}

fn floats(value: &Value) -> Vec<f64> {
    let list = value.as_array().unwrap();
    list.iter().map(|v| v.as_f64().unwrap()).collect()
}

fn ids(value: &Value) -> Vec<u32> {
    let list = value.as_array().unwrap();
    list.iter().map(|v| v.as_u64().unwrap() as u32).collect()
}

fn request(golden: &Value, model: &str, kind: Kind, limits: BatchLimits) -> ScoreRequest {
    ScoreRequest {
        model: fixtures().join("models").join(model),
        tokenizer: golden["tokenizer"]
            .as_str()
            .map(|t| fixtures().join("models").join(t)),
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

fn score(golden: &Value, kind: Kind, limits: BatchLimits, share_prefix: bool) -> Scores {
    let mut req = request(golden, golden["model"].as_str().unwrap(), kind, limits);
    req.share_prefix = share_prefix;
    let scored = score_pairs(&req, &pairs(golden)).unwrap();
    assert_eq!(scored.model_type, "Seq. Classifier");
    Scores {
        chosen: scored.pairs.iter().map(|p| p.chosen.clone()).collect(),
        rejected: scored.pairs.iter().map(|p| p.rejected.clone()).collect(),
    }
}

/// One of the reference's runs: `examples[i].scores_*` (fp32, batch size 1), the padded batches
/// (`padded_batch_scores_*`) or bf16 at batch size 1 (`bf16.scores_*`).
fn reference(golden: &Value, run: &str) -> Scores {
    let column = |side: &str| -> Vec<Vec<f64>> {
        let key = format!("scores_{side}");
        let list: Vec<Value> = match run {
            "fp32" => examples(golden).iter().map(|e| e[&key].clone()).collect(),
            "padded" => golden[format!("padded_batch_{key}")]
                .as_array()
                .unwrap()
                .clone(),
            _ => golden["bf16"][&key].as_array().unwrap().clone(),
        };
        list.iter().map(floats).collect()
    };
    let scores = Scores {
        chosen: column("chosen"),
        rejected: column("rejected"),
    };
    assert_eq!(scores.chosen.len(), examples(golden).len(), "{run} rows");
    assert_eq!(scores.rejected.len(), examples(golden).len(), "{run} rows");
    scores
}

/// herd's chat formatting and token ids equal the reference's (InternLM2: the reward token
/// appended, as `Scorer` does through `ModelSpec::reward_token`).
fn check_tokens(case: &str) {
    let golden = golden(case);
    let req = request(&golden, case, Kind::Float, packed());
    let spec = ModelSpec::open(ModelDir::open(&req.model).unwrap()).unwrap();
    let (mut tokenizer, texts) = formatted_texts(&golden, &pairs(&golden), &req);
    tokenizer.set_reward_token(spec.reward_token.map(AppendedToken::internlm2));
    let encoded = classifier_inputs(&tokenizer, texts, req.max_length).unwrap();
    assert_eq!(
        encoded.len(),
        2 * examples(&golden).len(),
        "{case}: sequences"
    );
    for (i, example) in examples(&golden).iter().enumerate() {
        for (k, side) in ["chosen", "rejected"].iter().enumerate() {
            let mask = ids(&example[format!("attention_mask_{side}")]);
            let attended: Vec<u32> = ids(&example[format!("input_ids_{side}")])
                .into_iter()
                .zip(mask)
                .filter(|(_, m)| *m == 1)
                .map(|(id, _)| id)
                .collect();
            assert_eq!(
                encoded[2 * i + k],
                attended,
                "{case} example {i} {side} ids"
            );
        }
    }
}

fn check_fp32(case: &str) {
    let golden = golden(case);
    let batch_size_1 = reference(&golden, "fp32");
    let padded = reference(&golden, "padded");
    let single = score(&golden, Kind::Float, one_per_batch(), false);
    let batched = score(&golden, Kind::Float, packed(), false);
    let shared = score(&golden, Kind::Float, packed(), true);
    check_fp32_batchings(case, &batch_size_1, &padded, &single, &batched, &shared);
}

/// herd's bf16 against the fp32 golden, within the bound derived from the reference's own bf16
/// runs; only near ties may flip.
fn check_bf16(case: &str) {
    let golden = golden(case);
    let bound = &golden["bf16_bound"];
    let max_abs_diff = bound["max_abs_diff"].as_f64().unwrap();
    let max_win_flips = bound["max_win_flips"].as_u64().unwrap() as usize;
    let fp32 = reference(&golden, "fp32");
    assert!(max_win_flips < fp32.chosen.len() / 2, "{case}: loose bound");
    let ours = score(&golden, Kind::BFloat16, packed(), false);
    let (worst, flipped) = compare("bf16", &ours, &fp32);
    let (vs_their_bf16, _) = compare("bf16 vs bf16", &ours, &reference(&golden, "bf16"));
    eprintln!(
        "{case}: herd bf16 vs reference fp32: max |diff| {worst:.4} (bound {max_abs_diff:.4}), \
         {} win flips (bound {max_win_flips}); vs the reference's bf16: max |diff| \
         {vs_their_bf16:.4}",
        flipped.len()
    );
    assert!(worst <= max_abs_diff, "{case}: bf16 max |diff| {worst}");
    assert!(
        flipped.len() <= max_win_flips,
        "{case}: bf16 flips {flipped:?}"
    );
    for &i in &flipped {
        let margin = (fp32.chosen[i][0] - fp32.rejected[i][0]).abs();
        assert!(
            margin <= 2.0 * max_abs_diff,
            "{case}: row {i} flipped, margin {margin}"
        );
    }
}

#[test]
fn qwen3_per_head_qk_norm_head_dim_from_config() {
    check_tokens("qwen3-rm");
    check_fp32("qwen3-rm");
}

#[test]
fn olmo2_norms_after_full_width_qk_norm_two_labels() {
    check_tokens("olmo2-rm");
    check_fp32("olmo2-rm");
}

#[test]
fn internlm2_fused_wqkv_reward_token_v_head() {
    check_tokens("internlm2-rm");
    check_fp32("internlm2-rm");
}

/// A row longer than `max_length` is cut from the left and still ends with the reward token (the
/// reference pipeline does not truncate; rows that fit are exact, see above).
#[test]
fn internlm2_rows_cut_to_max_length_keep_the_reward_token() {
    let golden = golden("internlm2-rm");
    let reward = golden["reward_token_id"].as_u64().unwrap() as u32;
    let dir = ModelDir::open(fixtures().join("models/internlm2-rm")).unwrap();
    let spec = ModelSpec::open(ModelDir::open(dir.root()).unwrap()).unwrap();
    assert_eq!(spec.reward_token, Some(reward));
    let mut tokenizer = RewardTokenizer::load(&dir).unwrap();
    tokenizer.set_reward_token(spec.reward_token.map(AppendedToken::internlm2));
    let example = &examples(&golden)[0];
    let full = ids(&example["input_ids_chosen"]);
    let text = example["text_chosen"].as_str().unwrap().to_string();
    let cut = classifier_inputs(&tokenizer, vec![text.clone()], 16).unwrap();
    assert_eq!(cut[0].len(), 16);
    assert_eq!(cut[0][..15], full[full.len() - 16..full.len() - 1]);
    assert_eq!(cut[0][15], reward);
    // uncut, the row is the reference pipeline's
    let ends = classifier_inputs(&tokenizer, vec![text], 1 << 20).unwrap();
    assert_eq!(ends[0], full);
}

#[test]
fn bf16_within_the_references_own_bf16_spread() {
    for case in ["qwen3-rm", "olmo2-rm", "internlm2-rm"] {
        check_bf16(case);
    }
}

/// Summed log-probs: the tolerance grows with their magnitude (golden_parity.rs explains why).
fn assert_close(ours: f64, theirs: f64, scale: f64, what: &str) {
    let tolerance = FP32_TOLERANCE + 5e-7 * scale;
    assert!(
        (ours - theirs).abs() < tolerance,
        "{what}: ours {ours} vs reference {theirs}"
    );
}

fn check_dpo(case: &str) {
    let golden = golden(case);
    let pairs = pairs(&golden);
    let policy = golden["policy"].as_str().unwrap();
    let mut req = request(&golden, policy, Kind::Float, packed());
    req.ref_model = Some(
        fixtures()
            .join("models")
            .join(golden["ref"].as_str().unwrap()),
    );
    let scored = score_pairs(&req, &pairs).unwrap();
    assert_eq!(scored.model_type, "DPO");
    assert_eq!(scored.pairs.len(), examples(&golden).len(), "{case}: rows");
    for (pair, example) in scored.pairs.iter().zip(examples(&golden)) {
        let id = &example["id"];
        for (side, ours) in [("chosen", pair.chosen[0]), ("rejected", pair.rejected[0])] {
            let scale = example[format!("policy_sum_{side}")]
                .as_f64()
                .unwrap()
                .abs()
                + example[format!("ref_sum_{side}")].as_f64().unwrap().abs();
            let theirs = example[format!("reward_{side}")].as_f64().unwrap();
            assert_close(ours, theirs, scale, &format!("{case} {id} {side}"));
        }
        let their_win = example["reward_chosen"].as_f64() > example["reward_rejected"].as_f64();
        assert_eq!(pair.chosen[0] > pair.rejected[0], their_win, "{case} {id}");
    }
    req.ref_model = None;
    req.ref_free_type = RefFreeType::Sum;
    let scored = score_pairs(&req, &pairs).unwrap();
    assert_eq!(scored.model_type, "DPO Ref. Free");
    for (pair, example) in scored.pairs.iter().zip(examples(&golden)) {
        for (side, ours) in [("chosen", pair.chosen[0]), ("rejected", pair.rejected[0])] {
            let theirs = example[format!("policy_sum_{side}")].as_f64().unwrap();
            assert_close(
                ours,
                theirs,
                theirs.abs(),
                &format!("{case} ref-free {side}"),
            );
        }
    }
}

#[test]
fn qwen3_dpo_matches_transformers() {
    check_dpo("qwen3-dpo");
}

#[test]
fn olmo2_dpo_matches_transformers() {
    check_dpo("olmo2-dpo");
}

/// Set in the child process of [`a_16k_token_qwen3_input_scores_in_linear_memory`].
const LONG_CHILD: &str = "HERD_QWEN3_LONG_SEQUENCE_CHILD";
const LONG_TEST: &str = "a_16k_token_qwen3_input_scores_in_linear_memory";

/// The peak resident set (VmHWM) of this process, in KiB.
fn peak_rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = status.lines().find(|l| l.starts_with("VmHWM:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

/// The child's work: one preference pair whose shared prompt is ~16k tokens, scored with prefix
/// sharing (the pair is too long for one shared row, so each sequence is a row of its own and
/// takes the unmasked causal path). Prints its token count and peak RSS before and after.
fn score_long_pair() {
    let before = peak_rss_kib();
    let golden = golden("qwen3-rm");
    let mut req = request(&golden, "qwen3-rm", Kind::Float, packed());
    req.max_length = 17000;
    req.share_prefix = true;
    let pair: PreferencePair = serde_json::from_value(serde_json::json!({
        "id": 0, "subset": "long", "prompt": "hello ".repeat(16300),
        "chosen": "Yes.", "rejected": "No."
    }))
    .unwrap();
    let dir = ModelDir::open(&req.model).unwrap();
    let tokenizer = RewardTokenizer::load(&dir).unwrap();
    let formatter = herd_engine::scorer::choose_formatter(&tokenizer, "tulu").unwrap();
    let text = format_pair(&formatter, &pair).unwrap().chosen;
    let tokens = classifier_inputs(&tokenizer, vec![text], req.max_length).unwrap()[0].len();
    let scored = score_pairs(&req, &[pair]).unwrap();
    let (chosen, rejected) = (scored.pairs[0].chosen[0], scored.pairs[0].rejected[0]);
    assert!(chosen.is_finite() && rejected.is_finite() && chosen != rejected);
    println!(
        "TOKENS={tokens} VMHWM_BEFORE_KIB={before} VMHWM_KIB={}",
        peak_rss_kib()
    );
}

#[test]
fn a_16k_token_qwen3_input_scores_in_linear_memory() {
    if std::env::var_os(LONG_CHILD).is_some() {
        return score_long_pair();
    }
    // a fresh process, so the peak is this scoring's alone (not the other tests')
    let output = std::process::Command::new(std::env::current_exe().unwrap())
        .args([LONG_TEST, "--exact", "--nocapture", "--test-threads=1"])
        .env(LONG_CHILD, "1")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "child failed: {stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let field = |name: &str| -> u64 {
        let found = stdout.split_whitespace().find_map(|w| w.strip_prefix(name));
        found
            .unwrap_or_else(|| panic!("{name} not in {stdout}"))
            .parse()
            .unwrap()
    };
    let (tokens, before, peak) = (
        field("TOKENS="),
        field("VMHWM_BEFORE_KIB="),
        field("VMHWM_KIB="),
    );
    let config = herd_testkit::fixtures::read_json(&fixtures().join("models/qwen3-rm/config.json"));
    let heads = config["num_attention_heads"].as_u64().unwrap();
    // what eager attention would hold for one layer: fp32 scores [heads, L, L]
    let quadratic_kib = heads * tokens * tokens * 4 / 1024;
    eprintln!(
        "{tokens} tokens: peak RSS {} MiB (before scoring {} MiB); a quadratic fp32 [{heads}, L, L] \
         score matrix alone would be {} MiB",
        peak / 1024,
        before / 1024,
        quadratic_kib / 1024
    );
    assert!(tokens > 16000, "{tokens} tokens");
    assert!(
        peak < quadratic_kib / 4,
        "peak RSS {peak} KiB is not well below the quadratic {quadratic_kib} KiB"
    );
}
