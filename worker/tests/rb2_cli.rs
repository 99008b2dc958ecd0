//! `worker score` on a RewardBench 2 dataset, as a user runs it: run_v2.py's two files.
//!
//! The fixture tests/golden/fixtures/rb2/rb2-tiny.jsonl is real LLMBar text arranged into RB2
//! rows (subset names, extra completions and Ties groups are artificial; see
//! tests/golden/make_rb2_scores_golden.py), and the goldens beside it are what run_v2.py's flow
//! wrote with transformers (rewardbench 0.1.4's pipeline, fp32, CPU). Per-completion scores must
//! agree within 1e-4, everything else exactly.

mod support;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::Value;
use support::repo;

const TOLERANCE: f64 = 1e-4;

fn rb2_dir() -> PathBuf {
    repo().join("tests/golden/fixtures/rb2")
}

/// `worker score` run from the fixture models' folder, so `--model NAME` names the files as
/// run_v2.py's `args.model` did in the golden run.
fn score(model: &str, dataset: &Path, results: &Path, extra: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_worker"))
        .current_dir(repo().join("tests/golden/fixtures/models"))
        .args(["score", "--device", "cpu", "--threads", "1"])
        .args(extra)
        .args(["--model", model])
        .arg("--dataset")
        .arg(dataset)
        .arg("-o")
        .arg(results)
        .output()
        .unwrap()
}

fn read_json(path: &Path) -> Value {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap()
}

fn check_case(case: &str, model: &str, extra: &[&str]) {
    let dir = tempfile::tempdir().unwrap();
    let results = dir.path().join("results");
    let out = score(model, &rb2_dir().join("rb2-tiny.jsonl"), &results, extra);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{case}: {stderr}");
    assert!(
        stderr.contains("RewardBench 2 score (mean of 6 subsets)"),
        "{stderr}"
    );

    let golden_dir = rb2_dir().join(case).join("results");
    let file = |root: &Path, kind: &str| root.join(kind).join(format!("{model}.json"));
    let ours = read_json(&file(&results, "eval-set-scores"));
    let theirs = read_json(&file(&golden_dir, "eval-set-scores"));
    for key in [
        "text",
        "id",
        "subset",
        "num_correct",
        "model",
        "model_type",
        "chat_template",
    ] {
        assert_eq!(ours[key], theirs[key], "{case}: {key}");
    }
    let ours_scores = ours["scores"].as_array().unwrap();
    let theirs_scores = theirs["scores"].as_array().unwrap();
    assert_eq!(ours_scores.len(), theirs_scores.len());
    let mut compared = 0;
    for (row, (a, b)) in ours_scores.iter().zip(theirs_scores).enumerate() {
        let (a, b) = (a.as_array().unwrap(), b.as_array().unwrap());
        assert_eq!(a.len(), b.len(), "{case}: row {row}");
        for (x, y) in a.iter().zip(b) {
            let (x, y) = (x[0].as_f64().unwrap(), y[0].as_f64().unwrap());
            assert!((x - y).abs() < TOLERANCE, "{case}: row {row}: {x} vs {y}");
            compared += 1;
        }
    }
    assert_eq!(compared, 48);
    // the same best-of-N credits and subset scores (no near-ties in these goldens)
    assert_eq!(ours["results"], theirs["results"], "{case}: results");
    let ours_eval = read_json(&file(&results, "eval-set"));
    let theirs_eval = read_json(&file(&golden_dir, "eval-set"));
    let (ours_eval, theirs_eval) = (
        ours_eval.as_object().unwrap(),
        theirs_eval.as_object().unwrap(),
    );
    assert_eq!(
        ours_eval.keys().collect::<Vec<_>>(),
        theirs_eval.keys().collect::<Vec<_>>()
    );
    for (key, value) in theirs_eval {
        match value.as_f64() {
            Some(expected) => {
                let got = ours_eval[key].as_f64().unwrap();
                assert!(
                    (got - expected).abs() < 1e-6,
                    "{case}: {key}: {got} vs {expected}"
                );
            }
            None => assert_eq!(&ours_eval[key], value, "{case}: {key}"),
        }
    }
}

#[test]
fn rb2_fastchat_template_matches_run_v2() {
    // no --schema: told apart from preference pairs by its columns
    check_case("llama-gqa-rm", "llama-gqa-rm", &[]);
}

#[test]
fn rb2_tokenizer_template_matches_run_v2() {
    check_case("qwen2-rm", "qwen2-rm", &["--schema", "rb2"]);
}

#[test]
fn rb2_truncates_from_the_right_as_run_v2() {
    check_case(
        "llama-gqa-rm-trunc80",
        "llama-gqa-rm",
        &["--max-length", "80"],
    );
}

#[test]
fn rb2_errors_name_the_input() {
    let dir = tempfile::tempdir().unwrap();
    let results = dir.path().join("results");
    let rb2 = rb2_dir().join("rb2-tiny.jsonl");

    // RewardBench 2 rows read as pairs
    let out = score("llama-gqa-rm", &rb2, &results, &["--schema", "pairs"]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("rb2-tiny.jsonl: row 1: field \"chosen[0]\""),
        "{stderr}"
    );

    // a file mixing both schemas fits neither
    let mixed = dir.path().join("mixed.jsonl");
    let first = std::fs::read_to_string(&rb2).unwrap();
    let first = first.lines().next().unwrap();
    std::fs::write(
        &mixed,
        format!("{first}\n{{\"id\": \"x\", \"prompt\": \"p\", \"chosen\": \"a\", \"rejected\": \"b\", \"subset\": \"Math\"}}\n"),
    )
    .unwrap();
    let out = score("llama-gqa-rm", &mixed, &results, &[]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("neither preference / instruction data nor RewardBench 2 rows")
            && stderr.contains("as preference data: ")
            && stderr.contains("as RewardBench 2 rows: ")
            && stderr.contains("row 2"),
        "{stderr}"
    );

    // a row without a subset
    let no_subset = dir.path().join("no-subset.jsonl");
    std::fs::write(
        &no_subset,
        "{\"id\": \"7\", \"prompt\": \"p\", \"chosen\": [\"a\"], \"rejected\": [\"b\", \"c\"]}\n",
    )
    .unwrap();
    let out = score("llama-gqa-rm", &no_subset, &results, &[]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("row 1 (id 7): no \"subset\""), "{stderr}");

    // a Ties id the scorer cannot split, reported before any scoring
    let bad_ties = dir.path().join("bad-ties.jsonl");
    std::fs::write(
        &bad_ties,
        "{\"id\": \"ref-1\", \"prompt\": \"p\", \"chosen\": [\"a\"], \"rejected\": [\"b\"], \"subset\": \"Ties\"}\n",
    )
    .unwrap();
    let out = score("llama-gqa-rm", &bad_ties, &results, &[]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("the Ties subset cannot be scored") && stderr.contains("\"ref-1\""),
        "{stderr}"
    );

    // run_v2.py has no DPO path
    let out = score("llama-policy", &rb2, &results, &[]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("scores sequence classifiers only"),
        "{stderr}"
    );
}
