//! RewardBench 2 scores against tests/golden/make_rb2_golden.py, which transcribes the
//! reference scorers (HEAD and rewardbench 0.1.4) and runs them on seeded synthetic scores
//! (common/rewardbench/tests/golden/rb2/cases.json). Every number must agree to 1e-12; where the reference
//! raises, the Rust error must correspond to the Python exception.

use std::path::Path;

use herd_rewardbench::dataset::ExampleId;
use herd_rewardbench::v2::{rb2_scores, ScoredRow, TiesError, TiesScore, TiesVariant};
use serde_json::Value;

fn number(value: &Value) -> f64 {
    match value {
        Value::Number(n) => n.as_f64().unwrap(),
        Value::String(s) if s == "NaN" => f64::NAN,
        Value::String(s) if s == "Infinity" => f64::INFINITY,
        Value::String(s) if s == "-Infinity" => f64::NEG_INFINITY,
        other => panic!("not a number: {other}"),
    }
}

fn close(actual: f64, expected: f64, what: &str) {
    if expected.is_nan() {
        assert!(actual.is_nan(), "{what}: {actual} (expected NaN)");
    } else {
        assert!(
            (actual - expected).abs() <= 1e-12,
            "{what}: {actual} (expected {expected}, diff {:e})",
            actual - expected
        );
    }
}

fn python_exception(err: &TiesError) -> &'static str {
    match err {
        TiesError::BadId { .. } | TiesError::EmptyGroup { .. } => "ValueError",
        TiesError::SingleCorrectTied { .. } => "TypeError",
        TiesError::UnknownType { .. } => "KeyError",
    }
}

fn check_ties(actual: &TiesScore, expected: &Value, what: &str) {
    for (field, value) in [
        ("ref_accuracy", actual.ref_accuracy),
        ("tied_accuracy", actual.tied_accuracy),
        ("correctness_preferred", actual.correctness_preferred),
        (
            "correctness_preferred_hard",
            actual.correctness_preferred_hard,
        ),
        ("margin", actual.margin),
        ("score", actual.score),
    ] {
        close(value, number(&expected[field]), &format!("{what} {field}"));
    }
    for (field, value) in [
        ("ref_prompts", actual.ref_prompts),
        ("tied_prompts", actual.tied_prompts),
        ("common_prompts", actual.common_prompts),
    ] {
        assert_eq!(
            value as u64,
            expected[field].as_u64().unwrap(),
            "{what} {field}"
        );
    }
}

#[test]
fn rb2_scores_match_the_reference_transcription() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden/rb2/cases.json");
    let doc: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let cases = doc["cases"].as_array().unwrap();
    assert!(cases.len() >= 10);
    let mut checked_numbers = 0;
    for case in cases {
        let name = case["name"].as_str().unwrap();
        let rows: Vec<ScoredRow> = case["rows"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| ScoredRow {
                id: ExampleId::Str(r["id"].as_str().unwrap().to_owned()),
                subset: r["subset"].as_str().unwrap().to_owned(),
                num_correct: r["num_correct"].as_u64().unwrap() as usize,
                scores: r["scores"].as_array().unwrap().iter().map(number).collect(),
            })
            .collect();
        for (variant, key) in [(TiesVariant::Head, "head"), (TiesVariant::V0_1_4, "v0_1_4")] {
            let expected = &case[key];
            let what = format!("{name}/{key}");
            let actual = rb2_scores(&rows, variant);
            if let Some(error) = expected.get("error") {
                let err = actual.expect_err(&what);
                assert_eq!(
                    python_exception(&err),
                    error.as_str().unwrap(),
                    "{what}: {err}"
                );
                continue;
            }
            let actual = actual.unwrap_or_else(|err| panic!("{what}: {err}"));
            let subsets = expected["subsets"].as_object().unwrap();
            assert_eq!(
                actual.subsets.keys().collect::<Vec<_>>(),
                subsets.keys().collect::<Vec<_>>(),
                "{what}"
            );
            for (subset, value) in subsets {
                close(
                    actual.subsets[subset],
                    number(value),
                    &format!("{what} {subset}"),
                );
                checked_numbers += 1;
            }
            match (&actual.ties, &expected["ties"]) {
                (Some(ties), expected_ties) if expected_ties.is_object() => {
                    check_ties(ties, expected_ties, &what);
                    checked_numbers += 6;
                }
                (None, Value::Null) => {}
                (a, e) => panic!("{what}: ties {a:?} vs {e}"),
            }
            match (actual.score(), &expected["score"]) {
                (Some(score), e) if !e.is_null() => {
                    close(score, number(e), &format!("{what} score"));
                    checked_numbers += 1;
                }
                (None, Value::Null) => {}
                (a, e) => panic!("{what}: score {a:?} vs {e}"),
            }
        }
    }
    assert!(checked_numbers > 50, "{checked_numbers}");
}

fn random_case_rows() -> Vec<ScoredRow> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden/rb2/cases.json");
    let doc: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    doc["cases"][0]["rows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| ScoredRow {
            id: ExampleId::Str(r["id"].as_str().unwrap().to_owned()),
            subset: r["subset"].as_str().unwrap().to_owned(),
            num_correct: r["num_correct"].as_u64().unwrap() as usize,
            scores: r["scores"].as_array().unwrap().iter().map(number).collect(),
        })
        .collect()
}

mod properties {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(32))]

        /// Row order changes only the order of float sums: every score agrees to 1e-12, and
        /// every score is within [0, 1] (Ties: [-0.01, 1.01] with the margin term).
        #[test]
        fn scores_do_not_depend_on_row_order(rows in Just(random_case_rows()).prop_shuffle()) {
            let reference = rb2_scores(&random_case_rows(), TiesVariant::Head).unwrap();
            for variant in [TiesVariant::Head, TiesVariant::V0_1_4] {
                let shuffled = rb2_scores(&rows, variant).unwrap();
                let base = rb2_scores(&random_case_rows(), variant).unwrap();
                for (subset, value) in &base.subsets {
                    prop_assert!((shuffled.subsets[subset] - value).abs() <= 1e-12);
                    prop_assert!((-0.01..=1.01).contains(value));
                }
                prop_assert!((shuffled.score().unwrap() - base.score().unwrap()).abs() <= 1e-12);
            }
            prop_assert!(reference.score().is_some());
        }
    }
}
