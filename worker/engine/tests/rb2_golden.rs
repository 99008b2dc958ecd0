//! RewardBench 2 through the engine API ([`Scorer::score_best_of_n`], [`score_best_of_n_with`])
//! against run_v2.py's flow with transformers (tests/golden/make_rb2_scores_golden.py: the
//! rewardbench package's `load_bon_dataset_v2` and `RewardBenchPipeline`, fp32, CPU) on the RB2
//! fixture tests/golden/fixtures/rb2/rb2-tiny.jsonl (real LLMBar text in artificial RB2 rows).
//!
//! Every completion's score within 1e-4 of transformers', the formatted texts exactly, with and
//! without the shared prompt (which must agree within fp32 noise, 1e-5), in packed batches and
//! one row per batch, and with right truncation at 80 tokens.

mod support;

use herd_testkit::fixtures::read_json;
use std::path::PathBuf;

use herd_engine::batching::BatchLimits;
use herd_engine::dpo::RefFreeType;
use herd_engine::model_dir::ModelDir;
use herd_engine::models::ModelSpec;
use herd_engine::scorer::{score_best_of_n_with, ScoreRequest, ScoredBestOfN, Scorer};
use herd_rewardbench::dataset::v2::{load_best_of_n, BestOfNRow};
use serde_json::Value;
use tch::Kind;

const TOLERANCE: f64 = 1e-4;
const SHARING_NOISE: f64 = 1e-5;

fn fixtures() -> PathBuf {
    herd_testkit::workspace_root().join("tests/golden/fixtures")
}

fn rows() -> Vec<BestOfNRow> {
    load_best_of_n(&fixtures().join("rb2/rb2-tiny.jsonl")).unwrap()
}

fn request(golden: &Value, share_prefix: bool, limits: BatchLimits) -> ScoreRequest {
    ScoreRequest {
        model: fixtures()
            .join("models")
            .join(golden["model"].as_str().unwrap()),
        tokenizer: None,
        ref_model: None,
        ref_free_type: RefFreeType::Avg,
        // the qwen2 fixture formats with its tokenizer's template; the name is then unused
        chat_template: golden["chat_template"]
            .as_str()
            .unwrap_or("tulu")
            .to_string(),
        max_length: golden["max_length"].as_u64().unwrap() as usize,
        limits,
        share_prefix,
        device: support::test_device(),
        kind: Kind::Float,
        provenance: Default::default(),
        pooling: Default::default(),
        weights: Default::default(),
    }
}

const PACKED: BatchLimits = BatchLimits {
    max_batch_tokens: 4096,
    max_batch_rows: 64,
};

const ONE_ROW: BatchLimits = BatchLimits {
    max_batch_tokens: 1 << 20,
    max_batch_rows: 1,
};

fn check_against_golden(case: &str, scored: &ScoredBestOfN, what: &str) {
    let golden = read_json(&fixtures().join(format!("rb2/{case}.json")));
    let files = fixtures().join(format!("rb2/{case}/results/eval-set-scores"));
    let model = golden["model"].as_str().unwrap();
    let scores_file = read_json(&files.join(format!("{model}.json")));
    let expected: Vec<Vec<f64>> = golden["scores"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            r.as_array()
                .unwrap()
                .iter()
                .map(|x| x.as_f64().unwrap())
                .collect()
        })
        .collect();
    assert_eq!(scored.scores.len(), expected.len(), "{case} {what}");
    for (i, (ours, theirs)) in scored.scores.iter().zip(&expected).enumerate() {
        assert_eq!(ours.len(), theirs.len(), "{case} {what} row {i}");
        for (j, (&a, &b)) in ours.iter().zip(theirs).enumerate() {
            let diff = (f64::from(a) - b).abs();
            assert!(
                diff < TOLERANCE,
                "{case} {what} row {i} completion {j}: {a} vs {b}"
            );
        }
    }
    let texts: Vec<Vec<String>> = serde_json::from_value(scores_file["text"].clone()).unwrap();
    assert_eq!(scored.texts, texts, "{case} {what}: formatted texts");
    assert_eq!(
        scored.chat_template,
        scores_file["chat_template"].as_str().unwrap(),
        "{case}"
    );
    assert_eq!(scored.model_type, "Seq. Classifier");
}

fn max_difference(a: &ScoredBestOfN, b: &ScoredBestOfN) -> f64 {
    a.scores
        .iter()
        .flatten()
        .zip(b.scores.iter().flatten())
        .map(|(&x, &y)| f64::from((x - y).abs()))
        .fold(0.0, f64::max)
}

fn check_case(case: &str) {
    let golden = read_json(&fixtures().join(format!("rb2/{case}.json")));
    let rows = rows();
    let req = request(&golden, false, PACKED);
    let spec = ModelSpec::open(ModelDir::open(&req.model).unwrap()).unwrap();

    // one-shot, unshared
    let plain = score_best_of_n_with(&req, &spec, &rows).unwrap();
    check_against_golden(case, &plain, "unshared");

    // the persistent scorer, shared prompts, packed and one row per batch; kept across calls
    for limits in [PACKED, ONE_ROW] {
        let scorer = Scorer::load(&request(&golden, true, limits), &spec).unwrap();
        let mut done = 0;
        let shared = scorer.score_best_of_n(&rows, |n| done += n).unwrap();
        assert_eq!(done, 48, "{case}: progress counts completions");
        check_against_golden(case, &shared, "shared");
        let diff = max_difference(&plain, &shared);
        assert!(
            diff < SHARING_NOISE,
            "{case}: shared vs unshared differ by {diff}"
        );
        // a second call on the same scorer (the agent's next shard) scores the same
        let again = scorer.score_best_of_n(&rows[..3], |_| ()).unwrap();
        assert_eq!(again.texts, shared.texts[..3]);
        for (a, b) in again
            .scores
            .iter()
            .flatten()
            .zip(shared.scores.iter().flatten())
        {
            assert!(
                f64::from((a - b).abs()) < SHARING_NOISE,
                "{case}: {a} vs {b}"
            );
        }
    }
}

#[test]
fn rb2_llama_fastchat_template() {
    check_case("llama-gqa-rm");
}

#[test]
fn rb2_qwen2_tokenizer_template() {
    check_case("qwen2-rm");
}

#[test]
fn rb2_right_truncation() {
    check_case("llama-gqa-rm-trunc80");
}

#[test]
fn rb2_refuses_a_causal_lm() {
    let golden = read_json(&fixtures().join("rb2/llama-gqa-rm.json"));
    let mut req = request(&golden, true, PACKED);
    req.model = fixtures().join("models/llama-policy");
    let spec = ModelSpec::open(ModelDir::open(&req.model).unwrap()).unwrap();
    let err = score_best_of_n_with(&req, &spec, &rows()).unwrap_err();
    assert!(
        format!("{err:#}").contains("scores sequence classifiers only"),
        "{err:#}"
    );
    let scorer = Scorer::load(&req, &spec).unwrap();
    let err = scorer.score_best_of_n(&rows(), |_| ()).unwrap_err();
    assert!(
        format!("{err:#}").contains("scores sequence classifiers only"),
        "{err:#}"
    );
}
