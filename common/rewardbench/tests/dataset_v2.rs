//! RewardBench 2 rows from JSON / JSON Lines: layouts and malformed rows.

use herd_rewardbench::dataset::v2::{load_best_of_n, parse_best_of_n, BestOfNRow};
use herd_rewardbench::dataset::{DataFormat, ExampleId, Prompt};

const ROW: &str = r#"{"id": "12", "prompt": "p", "chosen": ["good"], "rejected": ["bad1", "bad2", "bad3"], "num_correct": 1, "num_incorrect": 3, "total_completions": 4, "models": ["a", "b", "c", "d"], "subset": "Math", "additional_metadata": {"x": null}}"#;

fn err(text: &str) -> String {
    parse_best_of_n("rb2.jsonl", text, Some(DataFormat::JsonLines))
        .unwrap_err()
        .to_string()
}

#[test]
fn layouts() {
    let rows = parse_best_of_n("rb2.jsonl", ROW, Some(DataFormat::JsonLines)).unwrap();
    let expected = BestOfNRow {
        id: ExampleId::Str("12".into()),
        prompt: Prompt::Text("p".into()),
        chosen: vec!["good".into()],
        rejected: vec!["bad1".into(), "bad2".into(), "bad3".into()],
        num_correct: 1,
        subset: Some("Math".into()),
    };
    assert_eq!(rows, vec![expected.clone()]);
    assert_eq!(expected.total_completions(), 4);

    // a single row object (its `chosen` is a list: not mistaken for a column dict)
    assert_eq!(parse_best_of_n("r.json", ROW, None).unwrap(), rows);
    // an array
    assert_eq!(
        parse_best_of_n("r.json", &format!("[{ROW}]"), Some(DataFormat::Json)).unwrap(),
        rows
    );
    // a column dict, as Dataset.to_dict() writes it
    let dict = r#"{"id": ["12", "ref:3"], "prompt": ["p", "q"], "chosen": [["good"], ["a", "b"]],
        "rejected": [["bad1", "bad2", "bad3"], ["c"]], "num_correct": [1, 2], "subset": ["Math", "Ties"]}"#;
    let both = parse_best_of_n("d.json", dict, None).unwrap();
    assert_eq!(both[0], rows[0]);
    assert_eq!(both[1].num_correct, 2);
    assert_eq!(
        both[1].completions().collect::<Vec<_>>(),
        vec!["a", "b", "c"]
    );

    // defaults: no num_correct → len(chosen); no id → row index
    let minimal = r#"{"prompt": "p", "chosen": ["x", "y"], "rejected": []}"#;
    let row = &parse_best_of_n("m.jsonl", minimal, None).unwrap()[0];
    assert_eq!(row.num_correct, 2);
    assert_eq!(row.id, ExampleId::Int(0));
    assert_eq!(row.subset, None);

    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("rb2.jsonl");
    std::fs::write(
        &path,
        format!("{ROW}\n\n{}\n", ROW.replace("\"12\"", "\"13\"")),
    )
    .unwrap();
    assert_eq!(load_best_of_n(&path).unwrap().len(), 2);
}

#[test]
fn malformed_rows_name_row_and_field() {
    assert_eq!(
        err(&ROW.replace(r#"["good"]"#, "[]")),
        "rb2.jsonl: row 1: field \"chosen\": expected at least one completion, found an empty list"
    );
    assert_eq!(
        err(&ROW.replace(r#""bad2""#, "7")),
        "rb2.jsonl: row 1: field \"rejected[1]\": expected a string, found a number"
    );
    assert_eq!(
        err(&ROW.replace(r#"["good"]"#, r#""good""#)),
        "rb2.jsonl: row 1: field \"chosen\": expected a list of strings, found a string"
    );
    assert_eq!(
        err(&ROW.replace(r#""num_correct": 1"#, r#""num_correct": 5"#)),
        "rb2.jsonl: row 1: field \"num_correct\": 5 is more than the 4 completions of the row"
    );
    assert_eq!(
        err(&ROW.replace(r#""num_correct": 1"#, r#""num_correct": -1"#)),
        "rb2.jsonl: row 1: field \"num_correct\": expected a non-negative integer, found the number -1"
    );
    assert_eq!(
        err(&ROW.replace(r#""total_completions": 4"#, r#""total_completions": 5"#)),
        "rb2.jsonl: row 1: field \"total_completions\": 5, but the row has 1 chosen + 3 rejected = 4 completions"
    );
    assert_eq!(
        err(&format!(
            "{ROW}\n{}",
            ROW.replace(r#""rejected": "#, r#""x": "#)
        )),
        "rb2.jsonl: row 2: field \"rejected\": missing (required)"
    );
    assert_eq!(
        err(&format!("{ROW}\n{ROW}")),
        "rb2.jsonl: row 2: duplicate id \"12\" (already used by row 1)"
    );
}
