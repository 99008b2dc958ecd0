//! Tokenizer folders loaded as transformers 4.51.0 (the version rewardbench 0.1.4 pins) loads them:
//! chat templates kept in `chat_template.jinja`, and Llama folders that hold only a SentencePiece
//! `tokenizer.model`.
//!
//! Goldens: tests/golden/tokenizer/*.json, written by tests/golden/make_tokenizer_goldens.py
//! (the real rewardbench 0.1.4 and transformers 4.51.0; its docstring says how to regenerate).

use std::path::{Path, PathBuf};

use herd_engine::encode::format_pair;
use herd_engine::model_dir::ModelDir;
use herd_engine::tokenizer::RewardTokenizer;
use herd_rewardbench::chat::{ChatFormatter, FastChatTemplate};
use herd_rewardbench::dataset::PreferencePair;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

/// Longer than any text here: encode_truncated then truncates nothing.
const NO_LIMIT: usize = 1 << 30;

fn golden(name: &str) -> Value {
    let path = herd_testkit::workspace_root()
        .join("tests/golden/tokenizer")
        .join(name);
    herd_testkit::fixtures::read_json(&path)
}

fn llama2() -> Option<PathBuf> {
    herd_testkit::shared_path("data/tokenizers/llama2")
}

fn llama2_config(llama2: &Path) -> Value {
    serde_json::from_str(&std::fs::read_to_string(llama2.join("tokenizer_config.json")).unwrap())
        .unwrap()
}

fn write_json(path: &Path, value: &Value) {
    std::fs::write(path, serde_json::to_string_pretty(value).unwrap()).unwrap();
}

fn ids(value: &Value) -> Vec<u32> {
    value
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_u64().unwrap() as u32)
        .collect()
}

fn pair(row: &Value) -> PreferencePair {
    serde_json::from_value(json!({
        "id": row.get("id").cloned().unwrap_or(json!(0)),
        "prompt": row["prompt"],
        "chosen": row["chosen"],
        "rejected": row["rejected"],
    }))
    .unwrap()
}

#[test]
fn chat_template_jinja_is_read_with_transformers_precedence() {
    let Some(llama2) = llama2() else { return };
    let golden = golden("chat_template_files.json");
    for case in golden["cases"].as_array().unwrap() {
        let name = case["name"].as_str().unwrap();
        let dir = tempfile::tempdir().unwrap();
        for file in ["tokenizer.json", "special_tokens_map.json"] {
            std::fs::copy(llama2.join(file), dir.path().join(file)).unwrap();
        }
        let mut config = llama2_config(&llama2);
        if !case["config_chat_template"].is_null() {
            config["chat_template"] = case["config_chat_template"].clone();
        }
        write_json(&dir.path().join("tokenizer_config.json"), &config);
        for (relative, text) in case["files"].as_object().unwrap() {
            let path = dir.path().join(relative);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(&path, text.as_str().unwrap().as_bytes()).unwrap();
        }
        let tokenizer = RewardTokenizer::load(&ModelDir::open(dir.path()).unwrap())
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        let template = tokenizer.chat_template();
        assert_eq!(
            template.map(|t| t.source()),
            case["chat_template"].as_str(),
            "{name}: the template transformers chose"
        );
        let Some(template) = template else {
            assert!(case["rows"].as_array().unwrap().is_empty());
            continue;
        };
        let formatter = ChatFormatter::Jinja(template.clone());
        for row in case["rows"].as_array().unwrap() {
            let formatted = format_pair(&formatter, &pair(row)).unwrap();
            assert_eq!(
                formatted.chosen,
                row["text_chosen"].as_str().unwrap(),
                "{name}"
            );
            assert_eq!(
                formatted.rejected,
                row["text_rejected"].as_str().unwrap(),
                "{name}"
            );
            let got = tokenizer
                .encode_truncated(vec![formatted.chosen, formatted.rejected], NO_LIMIT)
                .unwrap();
            assert_eq!(got[0], ids(&row["ids_chosen"]), "{name}: chosen ids");
            assert_eq!(got[1], ids(&row["ids_rejected"]), "{name}: rejected ids");
        }
    }
}

#[test]
fn chat_template_jinja_errors_name_the_file() {
    let Some(llama2) = llama2() else { return };
    let cases: [(&[u8], &str); 2] = [
        (b"{% for m in messages %}\xff{% endfor %}", "not UTF-8"),
        (
            b"{% for m in messages %}{{ m['content'] }}",
            "chat_template.jinja",
        ),
    ];
    for (bytes, expected) in cases {
        let dir = tempfile::tempdir().unwrap();
        for file in ["tokenizer.json", "tokenizer_config.json"] {
            std::fs::copy(llama2.join(file), dir.path().join(file)).unwrap();
        }
        std::fs::write(dir.path().join("chat_template.jinja"), bytes).unwrap();
        let err = RewardTokenizer::load(&ModelDir::open(dir.path()).unwrap())
            .err()
            .expect("a bad chat_template.jinja is refused")
            .to_string();
        assert!(err.contains("chat_template.jinja"), "{err}");
        assert!(err.contains(expected), "{err}");
    }
    // a folder entry that cannot be read as a file
    let dir = tempfile::tempdir().unwrap();
    for file in ["tokenizer.json", "tokenizer_config.json"] {
        std::fs::copy(llama2.join(file), dir.path().join(file)).unwrap();
    }
    std::fs::create_dir(dir.path().join("chat_template.jinja")).unwrap();
    let err = RewardTokenizer::load(&ModelDir::open(dir.path()).unwrap())
        .err()
        .expect("a chat_template.jinja folder is refused")
        .to_string();
    assert!(err.contains("chat_template.jinja"), "{err}");
}

/// A folder holding only llama2's tokenizer.model and the given tokenizer_config.json and
/// special_tokens_map.json (as the golden's mode records them).
fn spm_folder(llama2: &Path, config: &Value, special_map: &Value) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(
        llama2.join("tokenizer.model"),
        dir.path().join("tokenizer.model"),
    )
    .unwrap();
    write_json(&dir.path().join("tokenizer_config.json"), config);
    write_json(&dir.path().join("special_tokens_map.json"), special_map);
    dir
}

fn llama2_spm_folder(llama2: &Path) -> tempfile::TempDir {
    let special_map: Value = serde_json::from_str(
        &std::fs::read_to_string(llama2.join("special_tokens_map.json")).unwrap(),
    )
    .unwrap();
    spm_folder(llama2, &llama2_config(llama2), &special_map)
}

fn digest(ids: &[u32]) -> Value {
    let text = ids.iter().map(u32::to_string).collect::<Vec<_>>().join(",");
    let hex: String = Sha256::digest(text.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    json!([ids.len(), hex[..12]])
}

fn dataset_rows(shared: &Path, file: &str) -> Vec<Value> {
    std::fs::read_to_string(shared.join("data").join(file))
        .unwrap()
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect()
}

#[test]
fn sentencepiece_only_folders_match_transformers_on_every_shared_row() {
    let Some(llama2) = llama2() else { return };
    let golden = golden("spm_llama2.json");
    let shared = herd_testkit::shared();
    let mut data: std::collections::HashMap<String, Vec<Value>> = Default::default();
    let tulu = ChatFormatter::FastChat(
        FastChatTemplate::by_name(golden["chat_template"].as_str().unwrap()).unwrap(),
    );
    for mode in golden["modes"].as_array().unwrap() {
        let mode_name = mode["name"].as_str().unwrap();
        let dir = spm_folder(
            &llama2,
            &mode["tokenizer_config"],
            &mode["special_tokens_map"],
        );
        let model_dir = ModelDir::open(dir.path()).unwrap();
        let tokenizer = RewardTokenizer::load(&model_dir).unwrap();
        for edge in mode["edge_texts"].as_array().unwrap() {
            let text = edge["text"].as_str().unwrap();
            let got = tokenizer.encode_plain(vec![text.to_string()]).unwrap();
            assert_eq!(got[0], ids(&edge["ids"]), "{mode_name}: {text:?}");
        }
        // RewardBench's FastChat path sets add_eos_token = True before it tokenizes the chats
        let mut with_eos = RewardTokenizer::load(&model_dir).unwrap();
        with_eos.set_add_eos_token(dir.path()).unwrap();
        let rows = mode["rows"].as_array().unwrap();
        let mut mismatches = Vec::new();
        for entry in rows {
            let file = entry["file"].as_str().unwrap();
            let rows_of_file = data
                .entry(file.to_string())
                .or_insert_with(|| dataset_rows(&shared, file));
            let row = &rows_of_file[entry["id"].as_u64().unwrap() as usize];
            assert_eq!(row["id"], entry["id"]);
            let plain = tokenizer
                .encode_plain(vec![
                    row["prompt"].as_str().unwrap().to_string(),
                    row["chosen"].as_str().unwrap().to_string(),
                    row["rejected"].as_str().unwrap().to_string(),
                ])
                .unwrap();
            let formatted = format_pair(&tulu, &pair(row)).unwrap();
            let chats = with_eos
                .encode_truncated(vec![formatted.chosen, formatted.rejected], NO_LIMIT)
                .unwrap();
            let fields = [
                "prompt",
                "chosen",
                "rejected",
                "text_chosen",
                "text_rejected",
            ];
            for (field, got) in fields.iter().zip(plain.iter().chain(chats.iter())) {
                if digest(got) != entry["digests"][field] {
                    mismatches.push(format!("{file} id {}: {field}", entry["id"]));
                }
                if let Some(full) = entry.get("ids") {
                    assert_eq!(*got, ids(&full[field]), "{mode_name}: {file} {field}");
                }
            }
        }
        assert!(
            mismatches.is_empty(),
            "{mode_name}: {} of {} texts differ from transformers, first: {:?}",
            mismatches.len(),
            rows.len() * 5,
            &mismatches[..mismatches.len().min(10)]
        );
        assert_eq!(tokenizer.bos_id(), Some(1));
        assert_eq!(tokenizer.eos_id(), Some(2));
    }
}

#[test]
fn sentencepiece_folder_of_another_class_or_type_is_refused_by_name() {
    let Some(llama2) = llama2() else { return };
    let dir = llama2_spm_folder(&llama2);
    let mut config = llama2_config(&llama2);
    config["tokenizer_class"] = json!("T5Tokenizer");
    write_json(&dir.path().join("tokenizer_config.json"), &config);
    let err = RewardTokenizer::load(&ModelDir::open(dir.path()).unwrap())
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("tokenizer.model"), "{err}");
    assert!(err.contains("T5Tokenizer"), "{err}");

    let dir = llama2_spm_folder(&llama2);
    std::fs::write(
        dir.path().join("tokenizer.model"),
        b"not a protobuf \xff\xff",
    )
    .unwrap();
    let err = RewardTokenizer::load(&ModelDir::open(dir.path()).unwrap())
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("tokenizer.model"), "{err}");
    assert!(err.contains("not a SentencePiece model"), "{err}");

    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(
        llama2.join("tokenizer_config.json"),
        dir.path().join("tokenizer_config.json"),
    )
    .unwrap();
    let err = RewardTokenizer::load(&ModelDir::open(dir.path()).unwrap())
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("tokenizer.json"), "{err}");
    assert!(err.contains("tokenizer.model"), "{err}");
}
