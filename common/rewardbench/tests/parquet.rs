//! Parquet loading on the files tests/golden/make_parquet_fixture.py writes with pyarrow
//! (common/rewardbench/tests/golden/parquet/): each file reads as the JSON rows pyarrow wrote
//! beside it, and broken files are refused with the file, row and column named.

use std::path::{Path, PathBuf};

use herd_rewardbench::dataset::parquet::load_parquet_rows;
use herd_rewardbench::dataset::v2::{load_best_of_n, parse_best_of_n, BestOfNRow};
use herd_rewardbench::dataset::{load_pairs, parse_pairs, DataFormat, ExampleId, Prompt};
use serde_json::Value;

fn golden(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/golden/parquet")
        .join(rel)
}

fn expected_rows(rel: &str) -> String {
    let text = std::fs::read_to_string(golden("expected.json")).unwrap();
    let doc: Value = serde_json::from_str(&text).unwrap();
    serde_json::to_string(&doc["files"][rel]).unwrap()
}

#[test]
fn v1_and_pref_set_files_load_like_their_json() {
    for rel in [
        "reward-bench/filtered-00000-of-00001.parquet",
        "reward-bench/raw-00000-of-00001.parquet",
        "pref-test-sets/anthropic_hhh-00000-of-00001.parquet",
    ] {
        let from_parquet = load_pairs(&golden(rel)).unwrap();
        let from_json = parse_pairs(rel, &expected_rows(rel), Some(DataFormat::Json)).unwrap();
        assert_eq!(from_parquet, from_json, "{rel}");
    }
    let pairs = load_pairs(&golden("reward-bench/filtered-00000-of-00001.parquet")).unwrap();
    assert_eq!(pairs.len(), 11);
    assert_eq!(
        pairs[0].prompt,
        Prompt::Text("How do I detail a car?".into())
    );
    assert_eq!(pairs[0].subset.as_deref(), Some("alpacaeval-easy"));
    assert_eq!(pairs[10].id, ExampleId::Int(100));
    assert_eq!(pairs[3].chosen, "chosen answer 3 日本語");

    let hhh = load_pairs(&golden(
        "pref-test-sets/anthropic_hhh-00000-of-00001.parquet",
    ))
    .unwrap();
    let Prompt::Turns(turns) = &hhh[1].prompt else {
        panic!("expected turns")
    };
    assert_eq!(turns.len(), 3);
    assert_eq!(
        (turns[1].role.as_str(), turns[1].content.as_str()),
        ("assistant", "4")
    );
}

#[test]
fn rb2_file_loads_like_its_json() {
    let rel = "reward-bench-2/test-00000-of-00001.parquet";
    let rows = load_best_of_n(&golden(rel)).unwrap();
    let from_json = parse_best_of_n(rel, &expected_rows(rel), Some(DataFormat::Json)).unwrap();
    assert_eq!(rows, from_json);
    assert_eq!(rows.len(), 7);
    assert_eq!(rows[0].id, ExampleId::Str("0".into()));
    assert_eq!(rows[0].chosen, vec!["correct 0"]);
    assert_eq!(rows[0].rejected.len(), 3);
    let tied = &rows[6];
    assert_eq!(tied.id, ExampleId::Str("tied:7".into()));
    assert_eq!(tied.num_correct, 4);
    assert_eq!(tied.subset.as_deref(), Some("Ties"));
    assert_eq!(
        tied.completions().collect::<Vec<_>>(),
        vec!["red", "orange", "yellow", "green", "brown", "pink"]
    );
    // the generic entry point gives the same rows
    let generic: Vec<BestOfNRow> = load_parquet_rows(&golden(rel)).unwrap();
    assert_eq!(generic, rows);
}

fn error_of(rel: &str) -> String {
    let path = golden(rel);
    let msg = load_pairs(&path).unwrap_err().to_string();
    let file = path.display().to_string();
    assert!(msg.starts_with(&file), "{msg}");
    msg[file.len()..].to_string()
}

#[test]
fn parquet_errors_name_file_row_and_column() {
    assert_eq!(
        error_of("bad/null-chosen.parquet"),
        ": row 3: field \"chosen\": expected a string, found null"
    );
    let msg = error_of("bad/binary-prompt.parquet");
    assert!(
        msg.starts_with(": row 2: column \"prompt\": a binary value is not UTF-8 text"),
        "{msg}"
    );
    let msg = error_of("bad/zstd.parquet");
    assert!(
        msg.starts_with(
            ": column \"prompt\": compressed with ZSTD(ZstdLevel(1)), which herd does not read"
        ),
        "{msg}"
    );
    // a Parquet file read as the wrong row type: the missing column is named
    let err = load_best_of_n(&golden("reward-bench/filtered-00000-of-00001.parquet"))
        .unwrap_err()
        .to_string();
    assert!(
        err.ends_with(": row 1: field \"chosen\": expected a list of strings, found a string"),
        "{err}"
    );
    // not a Parquet file at all, behind a .parquet name
    let dir = tempfile::tempdir().unwrap();
    let fake = dir.path().join("x.parquet");
    std::fs::write(&fake, "{\"prompt\": \"p\"}").unwrap();
    let err = load_pairs(&fake).unwrap_err().to_string();
    assert!(err.starts_with(&fake.display().to_string()), "{err}");
    assert!(err.contains("not a readable Parquet file"), "{err}");
    // Parquet content behind a .jsonl name is still read as Parquet (magic bytes)
    let renamed = dir.path().join("rows.jsonl");
    std::fs::copy(golden("reward-bench/raw-00000-of-00001.parquet"), &renamed).unwrap();
    assert_eq!(load_pairs(&renamed).unwrap().len(), 3);
}
