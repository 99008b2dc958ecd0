//! `worker score --model Nexusflow/Athene-RM-8B` (the name as a hub id, resolved as a folder from
//! the fixtures directory) on the 22 pairs of tests/golden/fixtures/athene/athene.json: the
//! registry's Athene entry, the tokenizer's chat template and cls token, one float per row in
//! `{model}_outputs.jsonl`, every score within 1e-4 of the model card's pipeline
//! (tests/golden/make_athene_goldens.py) with its texts and wins.

mod support;

use std::path::PathBuf;

use herd_rewardbench::pyjson::{self, PyValue};
use serde_json::Value;
use support::{assert_success, repo, worker_score_cpu};

const MODEL: &str = "Nexusflow/Athene-RM-8B";

fn fixtures() -> PathBuf {
    repo().join("tests/golden/fixtures/athene")
}

#[test]
fn worker_score_runs_athene_as_its_model_card_does() {
    let tmp = tempfile::tempdir().unwrap();
    // RewardBench rows: prompt, chosen and rejected strings (ids renumbered: the two source files
    // each count from 0)
    let (dataset, golden) =
        herd_testkit::fixtures::dataset_from_golden("athene/athene", tmp.path());
    let examples = golden["examples"].as_array().unwrap();
    let model = &golden["models"][MODEL];
    let out_dir = tmp.path().join("out");
    let out = worker_score_cpu(&fixtures(), "fp32")
        .args(["--model", MODEL, "--max-length", "4096"])
        .arg("--dataset")
        .arg(&dataset)
        .arg("--output-dir")
        .arg(format!("{}/", out_dir.display()))
        .output()
        .unwrap();
    assert_success(&out);
    let outputs = std::fs::read_to_string(out_dir.join(format!("{MODEL}_outputs.jsonl"))).unwrap();
    let lines: Vec<&str> = outputs.lines().collect();
    assert_eq!(lines.len(), examples.len());
    let mut worst = 0f64;
    for (k, (line, example)) in lines.iter().zip(examples).enumerate() {
        let PyValue::Dict(row) = pyjson::loads(line).unwrap() else {
            panic!("line {}: not an object", k + 1)
        };
        let get = |key: &str| pyjson::dict_get(&row, key).unwrap().clone();
        for side in ["chosen", "rejected"] {
            assert_eq!(
                get(&format!("text_{side}")).as_str(),
                example[format!("text_{side}")].as_str(),
                "line {}: the card's chat-template text",
                k + 1
            );
            // one float per row, as the card's pipeline returns
            let PyValue::Float(ours) = get(&format!("scores_{side}")) else {
                panic!("line {}: scores_{side} is not a float", k + 1)
            };
            let theirs = model[format!("scores_{side}")][k].as_f64().unwrap();
            assert!(
                (ours - theirs).abs() < 1e-4,
                "line {}: {side} {ours} vs {theirs}",
                k + 1
            );
            worst = worst.max((ours - theirs).abs());
        }
        let win = model["wins"][k] == Value::Bool(true);
        assert_eq!(
            get("results"),
            PyValue::Int(i64::from(win)),
            "line {}",
            k + 1
        );
    }
    println!("worker score, Athene fixture: fp32 max |diff| {worst:.2e}");
}
