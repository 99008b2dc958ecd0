//! `--weights int8` against the full weights on the goldens' rows (tests/golden/fixtures: the
//! Llama GQA, Mistral and Qwen2 reward models of make_fixtures.py, 22 LLMBar/HEP pairs each).
//!
//! int8 is a trade of exactness for memory, so the test states a bound rather than parity, and
//! prints what it measured: in fp32 and in bf16, int8 scores stay within 5% of the full model's
//! score range (max - min over every row) of the full model's scores, and a pair may change its
//! win only when the full model's margin is below twice the largest score change (a near tie).
//! The decoder's linear weights shrink to a quarter in fp32 and a half in bf16 (plus one float32
//! scale per output channel).

mod support;

use std::path::PathBuf;

use herd_engine::dpo::RefFreeType;
use herd_engine::model_dir::ModelDir;
use herd_engine::models::quant::WeightFormat;
use herd_engine::models::ModelSpec;
use herd_engine::scorer::{score_pairs, ScoreRequest};
use serde_json::Value;
use support::{compare, packed, pairs, Scores};
use tch::Kind;

const CASES: [&str; 3] = ["llama-gqa-rm", "mistral-rm", "qwen2-rm"];

fn fixtures() -> PathBuf {
    herd_testkit::workspace_root().join("tests/golden/fixtures")
}

fn request(golden: &Value, kind: Kind, weights: WeightFormat) -> ScoreRequest {
    ScoreRequest {
        model: fixtures()
            .join("models")
            .join(golden["model"].as_str().unwrap()),
        tokenizer: None,
        ref_model: None,
        ref_free_type: RefFreeType::Avg,
        chat_template: golden["chat_template"]
            .as_str()
            .unwrap_or("tulu")
            .to_string(),
        max_length: golden["max_length"].as_u64().unwrap() as usize,
        limits: packed(),
        share_prefix: true,
        device: support::test_device(),
        kind,
        provenance: Default::default(),
        pooling: Default::default(),
        weights,
    }
}

fn score(golden: &Value, kind: Kind, weights: WeightFormat) -> Scores {
    Scores::of(&score_pairs(&request(golden, kind, weights), &pairs(golden)).unwrap())
}

/// max - min over every score of `scores`.
fn range(scores: &Scores) -> f64 {
    let all = scores.chosen.iter().chain(&scores.rejected).flatten();
    let (lo, hi) = all.fold((f64::MAX, f64::MIN), |(lo, hi), &x| (lo.min(x), hi.max(x)));
    hi - lo
}

/// The full model's margin of row `i` (chosen minus rejected, smallest over the labels).
fn margin(scores: &Scores, i: usize) -> f64 {
    scores.chosen[i]
        .iter()
        .zip(&scores.rejected[i])
        .map(|(c, r)| (c - r).abs())
        .fold(f64::MAX, f64::min)
}

#[test]
fn int8_weights_stay_within_the_stated_bound_of_the_full_model() {
    for case in CASES {
        let golden = support::read_json(&fixtures().join(format!("{case}.json")));
        for kind in [Kind::Float, Kind::BFloat16] {
            let full = score(&golden, kind, WeightFormat::Full);
            let int8 = score(&golden, kind, WeightFormat::Int8);
            let what = format!("{case} {kind:?}: int8 vs full weights");
            let (max_abs_diff, flipped) = compare(&what, &int8, &full);
            let bound = 0.05 * range(&full);
            eprintln!(
                "{what}: max |diff| {max_abs_diff:.3e} (bound {bound:.3e}, score range {:.3}), \
                 {} of {} wins flipped {flipped:?}",
                range(&full),
                flipped.len(),
                full.chosen.len()
            );
            // the weights really changed, and not by more than the bound
            assert!(max_abs_diff > 0.0, "{what}: int8 changed no score");
            assert!(max_abs_diff < bound, "{what}: {max_abs_diff} >= {bound}");
            for &i in &flipped {
                assert!(
                    margin(&full, i) < 2.0 * max_abs_diff,
                    "{what}: row {i} flipped with a full-model margin of {}",
                    margin(&full, i)
                );
            }
        }
    }
}

#[test]
fn int8_holds_the_decoder_linear_weights_in_a_quarter_of_fp32() {
    let golden = support::read_json(&fixtures().join("llama-gqa-rm.json"));
    let req = request(&golden, Kind::Float, WeightFormat::Int8);
    let spec = ModelSpec::open(ModelDir::open(&req.model).unwrap()).unwrap();
    for (kind, ratio) in [(Kind::Float, 0.25), (Kind::BFloat16, 0.5)] {
        let mut model = spec.load_classifier(req.device, kind).unwrap();
        let saved = model.backbone.quantize_int8().unwrap();
        let c = &spec.config;
        // q, k, v, o and the three MLP projections of every layer
        assert_eq!(saved.tensors, 7 * c.num_layers as usize);
        let q_dim = c.num_heads * c.head_dim;
        let kv_dim = c.num_kv_heads * c.head_dim;
        let per_layer =
            c.hidden_size * (2 * q_dim + 2 * kv_dim) + 3 * c.hidden_size * c.intermediate_size;
        let elt = kind.elt_size_in_bytes() as i64;
        assert_eq!(saved.bytes_before, per_layer * c.num_layers * elt);
        let got = saved.bytes_after as f64 / saved.bytes_before as f64;
        eprintln!(
            "llama-gqa-rm {kind:?}: decoder linear weights {} -> {} bytes ({got:.3} of full)",
            saved.bytes_before, saved.bytes_after
        );
        // the int8 values, plus one float32 scale per output channel
        assert!(got >= ratio && got < ratio * 1.2, "{kind:?}: {got}");
    }
}

#[test]
fn int8_on_an_architecture_without_it_is_refused_by_name() {
    let golden = support::read_json(&fixtures().join("neox/neox-rm.json"));
    let model = fixtures().join("neox/models/neox-rm");
    let mut req = request(&golden, Kind::Float, WeightFormat::Int8);
    req.model = model.clone();
    let error = score_pairs(&req, &pairs(&golden)).unwrap_err().to_string();
    assert!(
        error.contains("--weights int8") && error.contains(&model.display().to_string()),
        "{error}"
    );
}
