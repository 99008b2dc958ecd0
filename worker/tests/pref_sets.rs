//! `worker score --pref-sets` as a user runs it, on the prior-sets fixture (a folder in the
//! layout of allenai/pref-test-sets, built from real RewardBench rows by
//! tests/golden/make_prior_sets_golden.py) and the tiny Llama classifier.

mod support;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::Value;
use support::repo;

fn prior_sets_golden() -> PathBuf {
    repo().join("common/rewardbench/tests/golden/prior-sets")
}

fn run(dir: &Path, name: &str, extra: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_worker"))
        .current_dir(dir)
        .args(["score", "--device", "cpu", "--threads", "1", "--pref-sets"])
        .arg("--model")
        .arg(repo().join("tests/golden/fixtures/models/llama-gqa-rm"))
        .arg("--dataset")
        .arg(prior_sets_golden().join("pref-test-sets"))
        .args(["--results-name", name, "-o", "scores.jsonl"])
        .args(extra)
        .output()
        .unwrap()
}

fn json(path: &Path) -> Value {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap()
}

#[test]
fn writes_run_rm_pref_sets_files() {
    let dir = tempfile::tempdir().unwrap();
    let core = prior_sets_golden().join("results/eval-set/prior-sets-fixture/tiny-rm.json");
    let out = run(
        dir.path(),
        "org/tiny-rm",
        &["--core-results", core.to_str().unwrap()],
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");

    let rows: Vec<Value> = std::fs::read_to_string(dir.path().join("scores.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let results = json(&dir.path().join("results/pref-sets/org/tiny-rm.json"));
    let scores = json(&dir.path().join("results/pref-sets-scores/org/tiny-rm.json"));
    let golden =
        json(&prior_sets_golden().join("results/pref-sets-scores/prior-sets-fixture/tiny-rm.json"));

    // the reference's rows, in its order, formatted as it formats them (the fixture's tokenizer
    // has no chat template: FastChat tulu)
    for column in ["text_chosen", "text_rejected", "subset", "id"] {
        assert_eq!(scores[column], golden[column], "{column}");
    }
    assert_eq!(results["model"], "org/tiny-rm");
    assert_eq!(results["model_type"], "Seq. Classifier");
    assert_eq!(results["chat_template"], "tulu");
    assert_eq!(rows.len(), 28);
    // per split: the share of rows the per-example file counts as wins
    for split in herd_rewardbench::v1::PREF_TEST_SETS {
        let mine: Vec<&Value> = rows.iter().filter(|r| r["subset"] == split).collect();
        let wins = mine.iter().filter(|r| r["results"] == 1).count();
        assert_eq!(
            results[split].as_f64().unwrap(),
            wins as f64 / mine.len() as f64,
            "{split}"
        );
    }
    assert!(stderr.contains("Prior Sets (0.5 weight)"), "{stderr}");
    assert!(stderr.contains("overall with prior sets"), "{stderr}");
}

#[test]
fn refuses_a_name_that_leaves_the_results_folder() {
    let dir = tempfile::tempdir().unwrap();
    let out = run(dir.path(), "../escape", &[]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("`..` component"), "{stderr}");
    // refused before anything was scored or written
    assert!(!dir.path().join("scores.jsonl").exists());
    assert!(!dir.path().join("results").exists());
}
