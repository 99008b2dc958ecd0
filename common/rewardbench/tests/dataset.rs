//! Loading evaluation data: the real RewardBench-format files in shared/data and malformed input.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::PathBuf;

use herd_rewardbench::chat::Message;
use herd_rewardbench::dataset::{
    load_pairs, parse_pairs, DataFormat, DatasetError, ExampleId, PreferencePair, Prompt,
};
use herd_rewardbench::v1::{filtered_row_count, section_of, Section};
use herd_testkit::shared_path;

fn subset_counts(pairs: &[PreferencePair]) -> BTreeMap<String, usize> {
    let mut counts = BTreeMap::new();
    for p in pairs {
        *counts.entry(p.subset.clone().unwrap()).or_insert(0) += 1;
    }
    counts
}

fn write_file(dir: &tempfile::TempDir, name: &str, text: &str) -> PathBuf {
    let path = dir.path().join(name);
    let mut f = std::fs::File::create(&path).unwrap();
    f.write_all(text.as_bytes()).unwrap();
    path
}

fn load_err(name: &str, text: &str) -> String {
    let dir = tempfile::tempdir().unwrap();
    let path = write_file(&dir, name, text);
    let err = load_pairs(&path).expect_err("should fail");
    let msg = err.to_string();
    // Every message names the file.
    assert!(msg.starts_with(&path.display().to_string()), "{msg}");
    msg[path.display().to_string().len()..].to_string()
}

const ROW: &str = r#"{"prompt": "p", "chosen": "c", "rejected": "r", "subset": "s", "id": 0}"#;

#[test]
fn llmbar_file() {
    let Some(path) = shared_path("data/rewardbench-llmbar.jsonl") else {
        return;
    };
    let pairs = load_pairs(&path).unwrap();
    assert_eq!(pairs.len(), 419);
    let expected: BTreeMap<String, usize> = [
        ("llmbar-natural", 100),
        ("llmbar-adver-neighbor", 134),
        ("llmbar-adver-GPTInst", 92),
        ("llmbar-adver-GPTOut", 47),
        ("llmbar-adver-manual", 46),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect();
    assert_eq!(subset_counts(&pairs), expected);
    for (subset, n) in &expected {
        assert_eq!(filtered_row_count(subset), Some(*n as u32));
        assert_eq!(section_of(subset), Some(Section::ChatHard));
    }
    for (i, p) in pairs.iter().enumerate() {
        assert_eq!(p.id, ExampleId::Int(i as i64));
        assert!(matches!(p.prompt, Prompt::Text(_)));
        assert_eq!(p.chosen_model.as_deref(), Some("llmbar"));
        assert_eq!(p.rejected_model.as_deref(), Some("llmbar"));
    }
    // Subset boundaries from the README: natural 0–99, neighbor 100–233, ..., manual 373–418.
    assert_eq!(pairs[99].subset.as_deref(), Some("llmbar-natural"));
    assert_eq!(pairs[100].subset.as_deref(), Some("llmbar-adver-neighbor"));
    assert_eq!(pairs[373].subset.as_deref(), Some("llmbar-adver-manual"));
    assert!(pairs[0]
        .prompt
        .as_text()
        .unwrap()
        .starts_with("Summarize the following content."));
}

#[test]
fn hep_file() {
    let Some(path) = shared_path("data/rewardbench-hep.jsonl") else {
        return;
    };
    let pairs = load_pairs(&path).unwrap();
    assert_eq!(pairs.len(), 984);
    let counts = subset_counts(&pairs);
    assert_eq!(counts.len(), 6);
    for lang in ["cpp", "go", "java", "js", "python", "rust"] {
        let subset = format!("hep-{lang}");
        assert_eq!(counts[&subset], 164, "{subset}");
        assert_eq!(section_of(&subset), Some(Section::Reasoning));
    }
    assert_eq!(pairs[820].subset.as_deref(), Some("hep-rust"));
    assert_eq!(pairs[983].id, ExampleId::Int(983));
    assert!(pairs.iter().all(|p| p.chosen != p.rejected));
    assert!(pairs
        .iter()
        .all(|p| p.chosen_model.as_deref() == Some("human")
            && p.rejected_model.as_deref() == Some("human (buggy)")));
}

#[test]
fn round_trip_of_real_rows_through_every_layout() {
    let Some(path) = shared_path("data/rewardbench-llmbar.jsonl") else {
        return;
    };
    let pairs = load_pairs(&path).unwrap();
    let pairs = &pairs[..50];
    let dir = tempfile::tempdir().unwrap();

    // JSON array, and the same array in a file with no extension (sniffed).
    let array = serde_json::to_string_pretty(pairs).unwrap();
    assert_eq!(
        load_pairs(&write_file(&dir, "a.json", &array)).unwrap(),
        pairs
    );
    assert_eq!(load_pairs(&write_file(&dir, "a", &array)).unwrap(), pairs);
    // A pretty-printed array behind a .jsonl extension is still read.
    assert_eq!(
        load_pairs(&write_file(&dir, "a.jsonl", &array)).unwrap(),
        pairs
    );

    // JSON Lines as `Dataset.to_json` writes it: under .json, and sniffed under .txt.
    let lines: String = pairs
        .iter()
        .map(|p| serde_json::to_string(p).unwrap() + "\n")
        .collect();
    assert_eq!(
        load_pairs(&write_file(&dir, "l.json", &lines)).unwrap(),
        pairs
    );
    assert_eq!(
        load_pairs(&write_file(&dir, "l.txt", &lines)).unwrap(),
        pairs
    );

    // Column dict as `Dataset.to_dict()` writes it.
    let mut columns = serde_json::Map::new();
    for field in [
        "prompt",
        "chosen",
        "chosen_model",
        "rejected",
        "rejected_model",
        "subset",
        "id",
    ] {
        let values: Vec<serde_json::Value> = pairs
            .iter()
            .map(|p| serde_json::to_value(p).unwrap()[field].clone())
            .collect();
        columns.insert(field.into(), values.into());
    }
    let dict = serde_json::Value::Object(columns).to_string();
    assert_eq!(
        load_pairs(&write_file(&dir, "d.json", &dict)).unwrap(),
        pairs
    );
    assert_eq!(
        load_pairs(&write_file(&dir, "d.data", &dict)).unwrap(),
        pairs
    );
    // Pretty-printed, even behind a .jsonl name.
    let pretty: serde_json::Value = serde_json::from_str(&dict).unwrap();
    let pretty = serde_json::to_string_pretty(&pretty).unwrap();
    assert_eq!(
        load_pairs(&write_file(&dir, "d.jsonl", &pretty)).unwrap(),
        pairs
    );
}

#[test]
fn turns_prompt_and_ids() {
    let text = concat!(
        r#"{"prompt": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}, {"content": "and?", "role": "user"}], "chosen": "a", "rejected": "b", "subset": "anthropic_hhh", "id": "hhh-1"}"#,
        "\n\n",
        r#"{"prompt": "q", "chosen": "a", "rejected": "b", "extra": [1, 2]}"#,
        "\r\n",
        r#"{"prompt": "q", "chosen": "a", "rejected": "b", "id": null, "subset": null}"#,
        "\n",
    );
    let pairs = parse_pairs("mem.jsonl", text, Some(DataFormat::JsonLines)).unwrap();
    assert_eq!(pairs.len(), 3);
    assert_eq!(
        pairs[0].prompt,
        Prompt::Turns(vec![
            Message::new("user", "hi"),
            Message::new("assistant", "yo"),
            Message::new("user", "and?"),
        ])
    );
    assert_eq!(pairs[0].prompt.to_messages().len(), 3);
    assert_eq!(pairs[0].id, ExampleId::Str("hhh-1".into()));
    // Missing / null ids become the 0-based row index (blank lines are not rows).
    assert_eq!(pairs[1].id, ExampleId::Int(1));
    assert_eq!(pairs[2].id, ExampleId::Int(2));
    assert_eq!(pairs[2].subset, None);
    assert_eq!(
        pairs[1].prompt.to_messages(),
        vec![Message::new("user", "q")]
    );

    // Ids serialise back as they came, and Display shows them bare.
    let json = serde_json::to_value(&pairs[0]).unwrap();
    assert_eq!(json["id"], serde_json::json!("hhh-1"));
    assert_eq!(json["prompt"][2]["content"], serde_json::json!("and?"));
    assert_eq!(
        serde_json::to_value(&pairs[1]).unwrap()["id"],
        serde_json::json!(1)
    );
    assert_eq!(pairs[0].id.to_string(), "hhh-1");
    assert_eq!(ExampleId::Int(-7).to_string(), "-7");
    let back: PreferencePair = serde_json::from_value(json).unwrap();
    assert_eq!(back, pairs[0]);
}

#[test]
fn utf8_bom_and_unicode() {
    let text = "\u{feff}{\"prompt\": \"日本語 🦀\", \"chosen\": \"é\", \"rejected\": \"\\u00e9\", \"id\": 5}\n";
    let pairs = parse_pairs("bom.jsonl", text, None).unwrap();
    assert_eq!(pairs[0].prompt.as_text(), Some("日本語 🦀"));
    assert_eq!(pairs[0].chosen, pairs[0].rejected);
    assert_eq!(pairs[0].id, ExampleId::Int(5));
}

#[test]
fn wrong_field_type_names_file_row_and_field() {
    let mut text = String::new();
    for i in 0..16 {
        text += &ROW.replace("\"id\": 0", &format!("\"id\": {i}"));
        text += "\n";
    }
    text += r#"{"prompt": "p", "chosen": null, "rejected": "r", "id": 16}"#;
    text += "\n";
    assert_eq!(
        load_err("rewardbench.jsonl", &text),
        r#": row 17: field "chosen": expected a string, found null"#
    );
}

#[test]
fn blank_lines_show_row_and_line() {
    let text = format!("{ROW}\n\n{{\"prompt\": \"p\", \"rejected\": \"r\"}}\n");
    assert_eq!(
        load_err("x.jsonl", &text),
        r#": row 2 (line 3): field "chosen": missing (required)"#
    );
}

#[test]
fn malformed_rows() {
    let cases: [(&str, &str); 9] = [
        (
            r#"{"prompt": 3, "chosen": "c", "rejected": "r"}"#,
            r#": row 1: field "prompt": expected a string or a list of {role, content} messages, found a number"#,
        ),
        (
            r#"{"prompt": [], "chosen": "c", "rejected": "r"}"#,
            r#": row 1: field "prompt": expected at least one message, found an empty array"#,
        ),
        (
            r#"{"prompt": [{"role": "user"}], "chosen": "c", "rejected": "r"}"#,
            r#": row 1: field "prompt[0].content": missing (required)"#,
        ),
        (
            r#"{"prompt": ["hi"], "chosen": "c", "rejected": "r"}"#,
            r#": row 1: field "prompt[0]": expected a {role, content} object, found a string"#,
        ),
        (
            r#"{"prompt": "p", "chosen": "c", "rejected": ["r"]}"#,
            r#": row 1: field "rejected": expected a string, found an array"#,
        ),
        (
            r#"{"prompt": "p", "chosen": "c", "rejected": "r", "subset": 4}"#,
            r#": row 1: field "subset": expected a string or null, found a number"#,
        ),
        (
            r#"{"prompt": "p", "chosen": "c", "rejected": "r", "id": 1.5}"#,
            r#": row 1: field "id": expected an integer (64-bit) or a string, found the number 1.5"#,
        ),
        (
            r#"{"prompt": "p", "chosen": "c", "rejected": "r", "id": true}"#,
            r#": row 1: field "id": expected an integer or a string, found a boolean"#,
        ),
        (
            r#"[1, 2]"#,
            r#": row 1: expected a JSON object, found a number"#,
        ),
    ];
    for (row, expected) in cases {
        assert_eq!(load_err("m.jsonl", &format!("{row}\n")), expected, "{row}");
    }
}

#[test]
fn invalid_json() {
    // A broken JSON Lines row: the row, and the column within the line.
    let msg = load_err("s.jsonl", &format!("{ROW}\n{{\"prompt\": \"p\n"));
    assert!(
        msg.starts_with(": row 2: invalid JSON: ") && msg.contains("at column"),
        "{msg}"
    );
    let msg = load_err("s.jsonl", "{\"prompt\": \n");
    assert!(msg.starts_with(": row 1: invalid JSON: "), "{msg}");
    // A broken JSON document: serde's line and column.
    let msg = load_err("s.json", "[\n  {\"prompt\": \"p\",\n  oops\n]");
    assert!(
        msg.starts_with(": invalid JSON: ") && msg.contains("line 3"),
        "{msg}"
    );
    // Not JSON at all, sniffed.
    let msg = load_err("s.csv", "prompt,chosen,rejected\na,b,c\n");
    assert!(msg.starts_with(": invalid JSON: "), "{msg}");
    // A JSON scalar.
    assert_eq!(
        load_err("s.json", "\"text\""),
        ": expected an array of row objects, a column dict or JSON Lines, found a string"
    );
}

#[test]
fn duplicate_ids() {
    let text = format!("{ROW}\n{}\n{ROW}\n", ROW.replace("\"id\": 0", "\"id\": 1"));
    assert_eq!(
        load_err("dup.jsonl", &text),
        ": row 3: duplicate id 0 (already used by row 1)"
    );
    // String ids are quoted; "1" and 1 are different ids.
    let text = r#"[{"prompt": "p", "chosen": "c", "rejected": "r", "id": "1"},
                   {"prompt": "p", "chosen": "c", "rejected": "r", "id": 1},
                   {"prompt": "p", "chosen": "c", "rejected": "r", "id": "1"}]"#;
    assert_eq!(
        load_err("dup.json", text),
        r#": row 3: duplicate id "1" (already used by row 1)"#
    );
    // A missing id takes the row index, which may collide with an explicit one.
    let text = r#"[{"prompt": "p", "chosen": "c", "rejected": "r", "id": 1},
                   {"prompt": "p", "chosen": "c", "rejected": "r"}]"#;
    assert_eq!(
        load_err("dup.json", text),
        ": row 2: duplicate id 1 (already used by row 1)"
    );
}

#[test]
fn empty_datasets() {
    for (name, text) in [
        ("e.jsonl", ""),
        ("e.jsonl", "\n  \n\n"),
        ("e.json", "[]"),
        ("e.json", r#"{"prompt": [], "chosen": [], "rejected": []}"#),
        ("e", "   "),
    ] {
        assert_eq!(
            load_err(name, text),
            ": the dataset is empty (no rows)",
            "{name}: {text:?}"
        );
    }
}

#[test]
fn column_dict_errors() {
    assert_eq!(
        load_err(
            "c.json",
            r#"{"prompt": ["a", "b"], "chosen": ["c", "d"], "rejected": ["e"]}"#
        ),
        r#": column dict: column "rejected" has 1 values but column "chosen" has 2"#
    );
    assert_eq!(
        load_err(
            "c.json",
            r#"{"prompt": "a", "chosen": ["c"], "rejected": ["e"]}"#
        ),
        r#": column dict: column "prompt" must be an array, found a string"#
    );
    assert_eq!(
        load_err(
            "c.json",
            r#"{"prompt": ["a", "b"], "chosen": ["c", "d"], "rejected": ["e", 7]}"#
        ),
        r#": row 2: field "rejected": expected a string, found a number"#
    );
}

#[test]
fn missing_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("nope.jsonl");
    let err = load_pairs(&path).unwrap_err();
    assert!(matches!(err, DatasetError::Io { .. }));
    assert!(err.to_string().contains("nope.jsonl: cannot read the file"));
}

mod properties {
    use super::*;
    use proptest::prelude::*;

    fn prompt() -> impl Strategy<Value = Prompt> {
        prop_oneof![
            any::<String>().prop_map(Prompt::Text),
            prop::collection::vec(
                (any::<String>(), any::<String>()).prop_map(|(r, c)| Message::new(r, c)),
                1..4
            )
            .prop_map(Prompt::Turns),
        ]
    }

    fn pairs() -> impl Strategy<Value = Vec<PreferencePair>> {
        prop::collection::vec(
            (
                any::<bool>(),
                prompt(),
                any::<String>(),
                any::<String>(),
                prop::option::of(any::<String>()),
                prop::option::of(any::<String>()),
                prop::option::of(any::<String>()),
            ),
            1..12,
        )
        .prop_map(|rows| {
            rows.into_iter()
                .enumerate()
                .map(
                    |(i, (string_id, prompt, chosen, rejected, subset, cm, rm))| {
                        PreferencePair {
                            // Unique by construction.
                            id: if string_id {
                                ExampleId::Str(format!("id-{i}"))
                            } else {
                                ExampleId::Int(i as i64 * 7 - 20)
                            },
                            prompt,
                            chosen,
                            rejected,
                            subset,
                            chosen_model: cm,
                            rejected_model: rm,
                        }
                    },
                )
                .collect()
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        #[test]
        fn json_lines_and_array_round_trip(pairs in pairs()) {
            let lines: String = pairs
                .iter()
                .map(|p| serde_json::to_string(p).unwrap() + "\n")
                .collect();
            let a = parse_pairs("p.jsonl", &lines, Some(DataFormat::JsonLines)).unwrap();
            prop_assert_eq!(&a, &pairs);
            let b = parse_pairs("p", &lines, None).unwrap();
            prop_assert_eq!(&b, &pairs);
            let array = serde_json::to_string(&pairs).unwrap();
            let c = parse_pairs("p.json", &array, Some(DataFormat::Json)).unwrap();
            prop_assert_eq!(&c, &pairs);
        }
    }
}
