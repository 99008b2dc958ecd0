//! run_v2.py's two result files, byte for byte, from given per-completion scores.
//!
//! tests/golden/make_rb2_scores_golden.py ran run_v2.py's flow (the rewardbench package's
//! `load_bon_dataset_v2`, `RewardBenchPipeline`, `reroll_and_score_dataset` and `save_to_hub`;
//! run_v2.py's `main()` and HEAD's Ties scorer transcribed) on the RB2 fixture
//! tests/golden/fixtures/rb2/rb2-tiny.jsonl and kept the scores and the files. Here the scores and
//! the formatted texts go into herd's writers, which must reproduce the files exactly: the
//! `results` column's int/float typing, a 4-way tie's 0.25, the Ties composite, key order.

use std::path::{Path, PathBuf};

use herd_rewardbench::dataset::v2::{load_best_of_n, BestOfNRow};
use herd_rewardbench::files::{EvalSetResults, EvalSetScores, ResultsKind};
use herd_rewardbench::pyjson::{self, PyValue};
use herd_rewardbench::v2::{rb2_scores, ScoredRow, TiesVariant};

fn rb2_dir() -> PathBuf {
    herd_testkit::workspace_root().join("tests/golden/fixtures/rb2")
}

fn load(path: &Path) -> PyValue {
    pyjson::loads(&std::fs::read_to_string(path).unwrap())
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn get<'a>(value: &'a PyValue, key: &str) -> &'a PyValue {
    value
        .as_dict()
        .unwrap()
        .iter()
        .rev()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v)
        .unwrap_or_else(|| panic!("no key {key}"))
}

fn list(value: &PyValue) -> &[PyValue] {
    match value {
        PyValue::List(items) => items,
        other => panic!("expected a list, found {}", other.type_name()),
    }
}

struct Case {
    name: &'static str,
    model: &'static str,
}

const CASES: [Case; 3] = [
    Case {
        name: "llama-gqa-rm",
        model: "llama-gqa-rm",
    },
    Case {
        name: "qwen2-rm",
        model: "qwen2-rm",
    },
    Case {
        name: "llama-gqa-rm-trunc80",
        model: "llama-gqa-rm",
    },
];

fn scored_rows(rows: &[BestOfNRow], golden: &PyValue) -> Vec<ScoredRow> {
    let scores = list(get(golden, "scores"));
    assert_eq!(scores.len(), rows.len());
    rows.iter()
        .zip(scores)
        .map(|(row, scores)| ScoredRow {
            id: row.id.clone(),
            subset: row.subset.clone().unwrap(),
            num_correct: row.num_correct,
            scores: list(scores).iter().map(|s| s.as_f64().unwrap()).collect(),
        })
        .collect()
}

#[test]
fn run_v2_files_are_reproduced_byte_for_byte() {
    let rows = load_best_of_n(&rb2_dir().join("rb2-tiny.jsonl")).unwrap();
    let mut saw_int_results = false;
    let mut saw_shared_credit = false;
    for case in CASES {
        let golden = load(&rb2_dir().join(format!("{}.json", case.name)));
        let scored = scored_rows(&rows, &golden);
        let results_dir = rb2_dir().join(case.name).join("results");
        let scores_path = herd_rewardbench::files::results_path(
            &results_dir,
            ResultsKind::EvalSetScores,
            case.model,
        );
        let eval_path =
            herd_rewardbench::files::results_path(&results_dir, ResultsKind::EvalSet, case.model);
        let expected_scores = std::fs::read_to_string(&scores_path).unwrap();
        let expected_eval = std::fs::read_to_string(&eval_path).unwrap();
        let scores_file = load(&scores_path);
        let texts: Vec<Vec<String>> = list(get(&scores_file, "text"))
            .iter()
            .map(|t| {
                list(t)
                    .iter()
                    .map(|s| s.as_str().unwrap().to_owned())
                    .collect()
            })
            .collect();
        let chat_template = get(&scores_file, "chat_template").as_str().unwrap();

        let subset_scores = rb2_scores(&scored, TiesVariant::Head).unwrap();
        let eval = EvalSetResults::best_of_n(case.model, chat_template, &subset_scores);
        assert_eq!(
            eval.eval_set_json(),
            expected_eval,
            "{}: eval-set",
            case.name
        );
        let per_row = EvalSetScores::best_of_n(&scored, &texts, case.model, chat_template).unwrap();
        assert_eq!(
            per_row.to_json(),
            expected_scores,
            "{}: eval-set-scores",
            case.name
        );

        // the writers put them where save_to_hub does
        let out = tempfile::tempdir().unwrap();
        let written = eval
            .write_eval_set(out.path(), ResultsKind::EvalSet, case.model)
            .unwrap();
        assert_eq!(std::fs::read_to_string(written).unwrap(), expected_eval);

        let results = list(get(&scores_file, "results"));
        saw_int_results |= results.iter().all(|r| matches!(r, PyValue::Int(0)));
        saw_shared_credit |= results
            .iter()
            .any(|r| matches!(r, PyValue::Float(x) if *x > 0.0 && *x < 1.0));
    }
    // the cases cover both typings of the results column and a tie at the top
    assert!(saw_int_results && saw_shared_credit);
}

#[test]
fn texts_must_match_the_rows() {
    let rows = load_best_of_n(&rb2_dir().join("rb2-tiny.jsonl")).unwrap();
    let golden = load(&rb2_dir().join("llama-gqa-rm.json"));
    let scored = scored_rows(&rows, &golden);
    let mut texts: Vec<Vec<String>> = scored
        .iter()
        .map(|r| vec![String::new(); r.scores.len()])
        .collect();
    texts[2].pop();
    let err = EvalSetScores::best_of_n(&scored, &texts, "m", "tulu").unwrap_err();
    assert_eq!(
        err.to_string(),
        "RewardBench 2 scores, row 3 (id 2): column \"text\" has 3 rows, expected 4"
    );
    let err = EvalSetScores::best_of_n(&scored, &texts[..3], "m", "tulu").unwrap_err();
    assert_eq!(
        err.to_string(),
        "RewardBench 2 scores: column \"text\" has 3 rows, expected 12"
    );
}
