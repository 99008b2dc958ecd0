//! Nexusflow/Athene-RM-8B and -70B against the model card's AtheneForSequenceClassification and
//! AtheneRewardPipeline (transcribed by tests/golden/make_athene_goldens.py; RewardBench 0.1.4
//! has no entry): a tiny Llama body with its `v_head`, the tokenizer's cls_token appended to the
//! chat-template text, the reward read at it.
//!
//! The card's input ids exactly (the tokenizer's BOS before the template's, the cls id last); fp32
//! scores within 1e-4 with the same wins, in packed batches, one row per batch and with shared
//! prefixes, the three within 1e-5 of each other; bf16 within the golden's bound. A tokenizer
//! without a cls_token, or one whose cls_token is not the id the card reads, is refused.

mod support;

use std::path::{Path, PathBuf};

use herd_engine::encode::classifier_inputs_masked;
use herd_engine::model_dir::ModelDir;
use herd_engine::models::registry::{Appends, DoubleBos, Output, Pooled};
use herd_engine::models::reward_heads::athene;
use herd_engine::models::{Family, ModelSpec};
use herd_engine::scorer::score_pairs_with;
use herd_engine::tokenizer::{AppendedToken, TruncationSide};
use serde_json::Value;
use support::{check_head_golden, classifier_request, formatted_texts, ids, one_per_batch, pairs};
use tch::Kind;

const NAME: &str = athene::ATHENE_8B;

fn fixtures() -> PathBuf {
    herd_testkit::workspace_root().join("tests/golden/fixtures/athene")
}

fn golden() -> Value {
    herd_testkit::fixtures::read_json(&fixtures().join("athene.json"))
}

fn model_dir() -> PathBuf {
    fixtures().join(NAME)
}

#[test]
fn matches_the_model_card_pipeline() {
    let golden = golden();
    let spec = ModelSpec::open(ModelDir::open(model_dir()).unwrap()).unwrap();
    assert_eq!(spec.entry.architecture, athene::ARCHITECTURE);
    assert_eq!(
        golden["models"][NAME]["architecture"].as_str(),
        Some(athene::ARCHITECTURE)
    );
    assert_eq!(spec.entry.family, Family::Llama);
    assert_eq!(spec.entry.quirks.pooled, Pooled::LastToken);
    assert_eq!(spec.entry.quirks.appends, Appends::ClsToken);
    assert_eq!(spec.entry.quirks.output, Output::Scalar);
    assert_eq!(spec.entry.quirks.double_bos, DoubleBos::Forwarded);
    assert_eq!(spec.config.num_labels, 1);
    check_head_golden(&golden, NAME, &spec, model_dir(), None);
}

#[test]
fn encodes_as_the_model_card() {
    let golden = golden();
    let spec = ModelSpec::open(ModelDir::open(model_dir()).unwrap()).unwrap();
    let pairs = pairs(&golden);
    let request = classifier_request(
        &golden,
        model_dir(),
        None,
        Kind::Float,
        one_per_batch(),
        false,
    );
    // the texts are the card's apply_chat_template output (asserted inside)
    let (mut tokenizer, texts) = formatted_texts(&golden, &pairs, &request);
    let cls = athene::cls_token(&tokenizer, spec.config.vocab_size).unwrap();
    assert_eq!(i64::from(cls), golden["cls_token_id"].as_i64().unwrap());
    tokenizer.set_reward_token(Some(AppendedToken::athene(cls)));
    let max_length = golden["max_length"].as_u64().unwrap() as usize;
    let (rows, masked) =
        classifier_inputs_masked(&tokenizer, texts.clone(), max_length, TruncationSide::Left)
            .unwrap();
    assert!(masked.iter().all(|&m| m == 0), "nothing is masked");
    let bos = tokenizer.bos_id().unwrap();
    for (k, example) in golden["examples"].as_array().unwrap().iter().enumerate() {
        for (side, row) in [("chosen", &rows[2 * k]), ("rejected", &rows[2 * k + 1])] {
            let expected = ids(&example[format!("input_ids_{side}")]);
            assert_eq!(row, &expected, "example {k} {side}");
            assert_eq!(
                &row[..2],
                &[bos, bos],
                "the tokenizer's BOS and the template's"
            );
            assert_eq!(row.last(), Some(&cls));
        }
    }

    // a row cut to max_length keeps the tokenizer's BOS and ends with the cls token
    let (short, _) = classifier_inputs_masked(&tokenizer, texts, 16, TruncationSide::Left).unwrap();
    for row in &short {
        assert_eq!(row.len(), 16);
        assert_eq!((row[0], row[15]), (bos, cls));
    }
}

#[test]
fn both_names_get_the_athene_entry_and_no_other_name_does() {
    let open = |name: &str| ModelSpec::open_named(ModelDir::open(model_dir()).unwrap(), Some(name));
    for name in [
        athene::ATHENE_8B,
        athene::ATHENE_70B,
        "/models/Nexusflow/Athene-RM-70B/",
    ] {
        let spec = open(name).unwrap();
        assert_eq!(spec.entry.quirks.appends, Appends::ClsToken, "{name}");
    }
    // the class is the training code's, not Athene's alone: unknown under another name
    let error = open("local/some-rm").err().unwrap().to_string();
    assert!(error.contains(athene::ARCHITECTURE), "{error}");
    assert!(error.contains("Nexusflow/Athene-RM-70B"), "{error}");
}

/// A change to one JSON file of the fixture.
type Edit<'a> = (&'a str, &'a dyn Fn(&mut Value));

/// A copy of the fixture under `Nexusflow/Athene-RM-8B/` of a temporary folder, each JSON file
/// of `edits` changed by its function.
fn edited_copy(edits: &[Edit]) -> tempfile::TempDir {
    let tmp = tempfile::tempdir().unwrap();
    let folder = tmp.path().join(NAME);
    herd_testkit::fixtures::copy_files(&model_dir(), &folder);
    for (file, edit) in edits {
        let path = folder.join(file);
        let mut json: Value =
            serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        edit(&mut json);
        std::fs::write(&path, serde_json::to_string_pretty(&json).unwrap()).unwrap();
    }
    tmp
}

fn score_error(root: &Path) -> String {
    let golden = golden();
    let dir = root.join(NAME);
    let spec = ModelSpec::open(ModelDir::open(&dir).unwrap()).unwrap();
    let request = classifier_request(&golden, dir, None, Kind::Float, one_per_batch(), false);
    score_pairs_with(&request, &spec, &pairs(&golden)[..1])
        .err()
        .unwrap()
        .to_string()
}

#[test]
fn a_tokenizer_without_the_cls_token_is_refused() {
    let drop_cls = |json: &mut Value| {
        json.as_object_mut().unwrap().remove("cls_token");
    };
    let tmp = edited_copy(&[
        ("tokenizer_config.json", &drop_cls),
        ("special_tokens_map.json", &drop_cls),
    ]);
    let error = score_error(tmp.path());
    assert!(error.contains("cls_token"), "{error}");
    assert!(error.contains("tokenizer"), "{error}");
}

#[test]
fn a_cls_token_other_than_the_cards_id_is_refused() {
    // a vocabulary that holds 128003: the card reads that id, not the tokenizer's 32000
    let wide = |json: &mut Value| json["vocab_size"] = 128_256.into();
    let tmp = edited_copy(&[("config.json", &wide)]);
    let error = score_error(tmp.path());
    assert!(error.contains("128003"), "{error}");
    assert!(error.contains("32000"), "{error}");
}
