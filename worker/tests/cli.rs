//! `worker score` as a user runs it: files in, files out, clear errors.

mod support;

use std::path::Path;
use std::process::{Command, Output};

use serde_json::Value;
use support::{assert_success, dataset_from_golden, repo};

/// `worker score` on the tiny Llama fixture, CPU, with `extra` flags before the paths.
fn score(dataset: &Path, output: &Path, extra: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_worker"))
        .args(["score", "--device", "cpu"])
        .args(extra)
        .arg("--model")
        .arg(repo().join("tests/golden/fixtures/models/llama-gqa-rm"))
        .arg("--dataset")
        .arg(dataset)
        .arg("-o")
        .arg(output)
        .output()
        .unwrap()
}

#[test]
fn score_writes_per_example_rows_and_a_summary() {
    let dir = tempfile::tempdir().unwrap();
    let (dataset, golden) = dataset_from_golden("llama-gqa-rm", dir.path());
    let output = dir.path().join("scores.jsonl");
    let status = score(&dataset, &output, &["--threads", "1"]);
    assert_success(&status);

    let rows: Vec<Value> = std::fs::read_to_string(&output)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let examples = golden["examples"].as_array().unwrap();
    assert_eq!(rows.len(), examples.len());
    let mut wins = 0;
    for (index, (row, example)) in rows.iter().zip(examples).enumerate() {
        assert_eq!(row["id"], index);
        let ours = row["scores_chosen"][0].as_f64().unwrap();
        let theirs = example["scores_chosen"][0].as_f64().unwrap();
        assert!((ours - theirs).abs() < 1e-4, "{ours} vs {theirs}");
        let win = ours > row["scores_rejected"][0].as_f64().unwrap();
        assert_eq!(row["results"], u8::from(win));
        wins += usize::from(win);
    }

    let summary: Value =
        serde_json::from_str(&std::fs::read_to_string(dir.path().join("scores.json")).unwrap())
            .unwrap();
    assert_eq!(summary["num_prompts"], examples.len());
    assert_eq!(summary["chat_template"], "tulu");
    assert_eq!(summary["model_type"], "Seq. Classifier");
    let accuracy = summary["accuracy"].as_f64().unwrap();
    assert!((accuracy - wins as f64 / examples.len() as f64).abs() < 1e-12);
    // llmbar-* are Chat Hard, hep-* Reasoning; Chat and Safety have no subset here
    let sections = &summary["sections"];
    assert!(sections["Chat Hard"].is_number() && sections["Reasoning"].is_number());
    assert!(sections.get("Chat").is_none() && sections.get("Score").is_none());
}

#[test]
fn malformed_dataset_names_file_row_and_field() {
    let dir = tempfile::tempdir().unwrap();
    let dataset = dir.path().join("broken.jsonl");
    std::fs::write(
        &dataset,
        "{\"prompt\": \"p\", \"chosen\": \"a\", \"rejected\": \"b\"}\n{\"prompt\": \"p\", \"chosen\": null, \"rejected\": \"b\"}\n",
    )
    .unwrap();
    let out = score(&dataset, &dir.path().join("scores.jsonl"), &[]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("broken.jsonl") && stderr.contains("row 2") && stderr.contains("chosen"),
        "{stderr}"
    );
    assert!(!stderr.contains("panicked"), "{stderr}");
}

#[test]
fn unknown_chat_template_lists_the_known_ones() {
    let dir = tempfile::tempdir().unwrap();
    let (dataset, _) = dataset_from_golden("llama-gqa-rm", dir.path());
    let out = score(
        &dataset,
        &dir.path().join("scores.jsonl"),
        &["--chat-template", "no-such-template"],
    );
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("no-such-template") && stderr.contains("tulu"),
        "{stderr}"
    );
}

#[test]
fn scores_a_hub_parquet_file() {
    let dir = tempfile::tempdir().unwrap();
    let output = dir.path().join("scores.jsonl");
    let out = score(
        &repo().join(
            "common/rewardbench/tests/golden/parquet/reward-bench/filtered-00000-of-00001.parquet",
        ),
        &output,
        &[],
    );
    assert_success(&out);
    let rows = std::fs::read_to_string(&output).unwrap().lines().count();
    let summary: Value =
        serde_json::from_str(&std::fs::read_to_string(dir.path().join("scores.json")).unwrap())
            .unwrap();
    assert_eq!(summary["num_prompts"], rows);
    assert!(rows > 0);
}

#[test]
fn unwritable_output_fails_before_scoring() {
    let dir = tempfile::tempdir().unwrap();
    let (dataset, _) = dataset_from_golden("llama-gqa-rm", dir.path());
    let output = dir.path().join("missing-dir/scores.jsonl");
    let out = score(&dataset, &output, &[]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("missing-dir/scores.jsonl"), "{stderr}");
    assert!(
        !stderr.contains("scored"),
        "scored before failing: {stderr}"
    );
}
