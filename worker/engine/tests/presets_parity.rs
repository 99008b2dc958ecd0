//! What the counts presets rely on, against transformers 4.43.1 (tests/golden/presets/, from
//! tests/golden/make_presets_goldens.py):
//!
//! * template and pad provenance: `tokenizer_template = ignore` and `pad = eos` give the token ids
//!   and pad id the counts runs scored (the folder EasyLM's converter writes: Llama-2
//!   tokenizer.model, no chat template, no pad token), also from a tokenizer folder that holds a
//!   chat template and a pad token of its own;
//! * legacy pooling: the positions and scores of transformers 4.43's
//!   LlamaForSequenceClassification over RewardBench's batches of 8 (fp32 within 1e-4, as
//!   golden_parity.rs), in every batching herd uses.

mod support;

use std::path::{Path, PathBuf};

use herd_engine::batching::BatchLimits;
use herd_engine::dpo::RefFreeType;
use herd_engine::encode::{classifier_inputs, classifier_inputs_masked, format_pair};
use herd_engine::model_dir::ModelDir;
use herd_engine::pooling::Pooling;
use herd_engine::provenance::{PadChoice, Pads, Provenance, TemplateSource};
use herd_engine::scorer::{
    choose_formatter_with, prepare_classifier_tokenizer, score_pairs, ScoreRequest,
};
use herd_engine::tokenizer::RewardTokenizer;
use herd_engine::tokenizer::TruncationSide;
use herd_rewardbench::dataset::PreferencePair;
use serde_json::{json, Value};
use tch::Kind;

const FP32_TOLERANCE: f64 = 1e-4;

fn golden(name: &str) -> Value {
    let path = herd_testkit::workspace_root().join(format!("tests/golden/presets/{name}.json"));
    herd_testkit::fixtures::read_json(&path)
}

fn pairs(golden: &Value) -> Vec<PreferencePair> {
    golden["examples"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| serde_json::from_value(e.clone()).unwrap())
        .collect()
}

fn ids(value: &Value) -> Vec<u32> {
    value
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_u64().unwrap() as u32)
        .collect()
}

/// A copy of the Llama-2 tokenizer folder whose tokenizer_config.json also holds a chat
/// template and a pad token, as a hub tokenizer of the same vocabulary may.
fn with_template_and_pad(llama2: &Path, dir: &Path) {
    for name in ["tokenizer.json", "special_tokens_map.json"] {
        std::fs::copy(llama2.join(name), dir.join(name)).unwrap();
    }
    let mut config: Value = serde_json::from_str(
        &std::fs::read_to_string(llama2.join("tokenizer_config.json")).unwrap(),
    )
    .unwrap();
    config["chat_template"] = json!(
        "{{ bos_token }}{% for m in messages %}<|{{ m['role'] }}|>\n{{ m['content'] }}{{ eos_token }}\n{% endfor %}"
    );
    config["pad_token"] = json!("<unk>");
    std::fs::write(
        dir.join("tokenizer_config.json"),
        serde_json::to_string(&config).unwrap(),
    )
    .unwrap();
}

/// The texts and ids a tokenizer folder gives the golden rows under `provenance`, and its pads.
fn formatted(
    dir: &Path,
    provenance: Provenance,
    golden: &Value,
) -> (Vec<String>, Vec<Vec<u32>>, Pads) {
    let dir = ModelDir::open(dir).unwrap();
    let mut tokenizer = RewardTokenizer::load(&dir).unwrap();
    let formatter = choose_formatter_with(&tokenizer, "tulu", provenance.template).unwrap();
    prepare_classifier_tokenizer(&mut tokenizer, &formatter, &dir).unwrap();
    // the EasyLM checkpoints herd scores carry pad_token_id 0 in their config
    let pads = provenance.pad.resolve(&tokenizer, Some(0)).unwrap();
    let mut texts = Vec::new();
    for pair in pairs(golden) {
        let f = format_pair(&formatter, &pair).unwrap();
        texts.push(f.chosen);
        texts.push(f.rejected);
    }
    let encoded = classifier_inputs(&tokenizer, texts.clone(), 2048).unwrap();
    (texts, encoded, pads)
}

fn golden_rows(golden: &Value, prefix: &str) -> Vec<Value> {
    golden["examples"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|e| {
            [
                e[format!("{prefix}_chosen")].clone(),
                e[format!("{prefix}_rejected")].clone(),
            ]
        })
        .collect()
}

#[test]
fn counts_provenance_gives_the_counts_runs_ids_whatever_the_tokenizer_holds() {
    let Some(llama2) = herd_testkit::shared_path("data/tokenizers/llama2") else {
        return;
    };
    let golden = golden("counts-provenance");
    let texts: Vec<String> = golden_rows(&golden, "text")
        .iter()
        .map(|t| t.as_str().unwrap().to_string())
        .collect();
    let golden_ids: Vec<Vec<u32>> = golden_rows(&golden, "ids").iter().map(ids).collect();
    let eos = golden["eos_token_id"].as_u64().unwrap() as u32;
    assert_eq!(golden["pad_token_id"].as_u64(), Some(eos as u64));
    let counts = Provenance {
        template: TemplateSource::Ignore,
        pad: PadChoice::Eos,
    };
    let hub = tempfile::tempdir().unwrap();
    with_template_and_pad(&llama2, hub.path());
    for dir in [llama2.clone(), hub.path().to_path_buf()] {
        let (ours, encoded, pads) = formatted(&dir, counts, &golden);
        assert_eq!(ours, texts, "{}", dir.display());
        assert_eq!(encoded, golden_ids, "{}", dir.display());
        assert_eq!(
            pads,
            Pads {
                batch: eos,
                pooling: eos
            }
        );
    }
    // RewardBench's own choices agree on the converter's folder (no template, no pad) ...
    let (_, encoded, pads) = formatted(&llama2, Provenance::default(), &golden);
    assert_eq!(encoded, golden_ids);
    assert_eq!(pads.pooling, eos);
    // ... but not on one that holds a template and a pad token: that is what the keys are for
    let (ours, encoded, pads) = formatted(hub.path(), Provenance::default(), &golden);
    assert_ne!(ours, texts);
    assert_ne!(encoded, golden_ids);
    assert_eq!(pads.pooling, 0);
    // a pad id named outright
    let (_, _, pads) = formatted(
        hub.path(),
        Provenance {
            template: TemplateSource::Ignore,
            pad: PadChoice::Id(2),
        },
        &golden,
    );
    assert_eq!(pads.pooling, 2);
    let err = PadChoice::Id(1 << 20)
        .resolve(
            &RewardTokenizer::load(&ModelDir::open(&llama2).unwrap()).unwrap(),
            None,
        )
        .unwrap_err();
    assert!(err.contains("1048576"), "{err}");
}

fn fixture_model(golden: &Value) -> PathBuf {
    herd_testkit::workspace_root()
        .join("tests/golden/fixtures/models")
        .join(golden["model"].as_str().unwrap())
}

#[test]
fn legacy_positions_are_where_transformers_4_43_read() {
    let golden = golden("legacy-pooling");
    let dir = ModelDir::open(fixture_model(&golden)).unwrap();
    let mut tokenizer = RewardTokenizer::load(&dir).unwrap();
    let formatter = choose_formatter_with(&tokenizer, "tulu", TemplateSource::Use).unwrap();
    prepare_classifier_tokenizer(&mut tokenizer, &formatter, &dir).unwrap();
    let pad = golden["pad_token_id"].as_u64().unwrap() as u32;
    let mut texts = Vec::new();
    for pair in pairs(&golden) {
        let f = format_pair(&formatter, &pair).unwrap();
        texts.push(f.chosen);
        texts.push(f.rejected);
    }
    for case in golden["cases"].as_array().unwrap() {
        let max_length = case["max_length"].as_u64().unwrap() as usize;
        let (sequences, masked) =
            classifier_inputs_masked(&tokenizer, texts.clone(), max_length, TruncationSide::Left)
                .unwrap();
        let legacy = Pooling::Legacy.positions(&sequences, &masked, pad);
        let expected: Vec<usize> = ids(&case["legacy_index_chosen"])
            .into_iter()
            .zip(ids(&case["legacy_index_rejected"]))
            .flat_map(|(c, r)| [c as usize, r as usize])
            .collect();
        assert_eq!(legacy, expected, "max_length {max_length}");
        // the rows RewardBench padded are read elsewhere than the current rule reads them
        let current = Pooling::Current.positions(&sequences, &masked, pad);
        assert!(
            legacy.iter().zip(&current).filter(|(l, c)| l != c).count() > 0,
            "max_length {max_length}"
        );
    }
}

fn request(golden: &Value, max_length: usize, limits: BatchLimits, share: bool) -> ScoreRequest {
    ScoreRequest {
        model: fixture_model(golden),
        tokenizer: None,
        ref_model: None,
        ref_free_type: RefFreeType::Avg,
        chat_template: "tulu".into(),
        max_length,
        limits,
        share_prefix: share,
        device: support::test_device(),
        kind: Kind::Float,
        provenance: Provenance::default(),
        pooling: Pooling::Legacy,
        weights: Default::default(),
    }
}

#[test]
fn legacy_pooling_scores_match_transformers_4_43() {
    let golden = golden("legacy-pooling");
    let pairs = pairs(&golden);
    let limits = [
        BatchLimits {
            max_batch_tokens: 4096,
            max_batch_rows: 64,
        },
        BatchLimits {
            max_batch_tokens: 1 << 20,
            max_batch_rows: 1,
        },
    ];
    for case in golden["cases"].as_array().unwrap() {
        let max_length = case["max_length"].as_u64().unwrap() as usize;
        let side = |key: &str| -> Vec<f64> {
            case[key]
                .as_array()
                .unwrap()
                .iter()
                .map(|row| row[0].as_f64().unwrap())
                .collect()
        };
        let (chosen, rejected) = (side("scores_chosen"), side("scores_rejected"));
        for (limits, share) in [(limits[0], true), (limits[0], false), (limits[1], false)] {
            let req = request(&golden, max_length, limits, share);
            let scored = score_pairs(&req, &pairs).unwrap();
            for (i, pair) in scored.pairs.iter().enumerate() {
                for (ours, theirs, what) in [
                    (pair.chosen[0], chosen[i], "chosen"),
                    (pair.rejected[0], rejected[i], "rejected"),
                ] {
                    assert!(
                        (ours - theirs).abs() <= FP32_TOLERANCE,
                        "max_length {max_length}, share {share}, pair {i} {what}: {ours} vs {theirs}"
                    );
                }
            }
            // shards aligned to 8 examples give the same scores as the whole set
            if share {
                let head = score_pairs(&req, &pairs[..8]).unwrap();
                let tail = score_pairs(&req, &pairs[8..]).unwrap();
                let parts: Vec<_> = head.pairs.into_iter().chain(tail.pairs).collect();
                assert_eq!(parts.len(), scored.pairs.len());
                for (i, (part, whole)) in parts.iter().zip(&scored.pairs).enumerate() {
                    assert!(
                        (part.chosen[0] - whole.chosen[0]).abs() <= FP32_TOLERANCE
                            && (part.rejected[0] - whole.rejected[0]).abs() <= FP32_TOLERANCE,
                        "max_length {max_length}, pair {i}: shards {part:?} vs whole {whole:?}"
                    );
                }
            }
        }
        // the current pooling misses transformers 4.43's numbers on the padded rows
        let mut req = request(&golden, max_length, limits[0], true);
        req.pooling = Pooling::Current;
        let current = score_pairs(&req, &pairs).unwrap();
        let off = current
            .pairs
            .iter()
            .zip(&chosen)
            .filter(|(p, c)| (p.chosen[0] - **c).abs() > FP32_TOLERANCE)
            .count();
        assert!(off > 0, "max_length {max_length}");
    }
}
