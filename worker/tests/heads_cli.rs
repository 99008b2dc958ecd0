//! `worker score` on a custom-head model against the REAL `rewardbench` CLI: the goldens under
//! tests/golden/fixtures/heads/cli/ are the CLI's own files for the Starling-RM-34B fixture, run
//! from tests/golden/fixtures/heads with `--model Nexusflow/Starling-RM-34B` so that
//! REWARD_MODEL_CONFIG picks StarlingPipeline (tests/golden/make_heads_goldens.py).
//!
//! The worker runs from the same folder with the same model name and dataset, `--device cpu
//! --dtype fp32 --save-all`, and must write the same files: `{model}.json` byte for byte; in
//! `{model}_outputs.jsonl` and `{model}_all.jsonl` every score within 1e-4 and of the same shape
//! (StarlingPipeline returns one float per row, not a list), every other value equal, and each
//! line exactly `json.dump`'s encoding of its values.

mod support;

use std::path::{Path, PathBuf};

use herd_rewardbench::pyjson::{self, PyValue};
use support::{assert_success, repo, worker_score_cpu};

const TOLERANCE: f64 = 1e-4;

fn heads() -> PathBuf {
    repo().join("tests/golden/fixtures/heads")
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Each line of `ours` against the golden's: `scores` keys within [`TOLERANCE`] and of the same
/// shape, every other key equal. Returns the worst |diff|.
fn compare_jsonl(what: &str, golden: &str, ours: &str, scores: &[&str]) -> f64 {
    let golden: Vec<&str> = golden.lines().collect();
    let ours: Vec<&str> = ours.lines().collect();
    assert_eq!(golden.len(), ours.len(), "{what}: line count");
    let mut worst = 0f64;
    for (i, (g, o)) in golden.iter().zip(&ours).enumerate() {
        let (PyValue::Dict(g), PyValue::Dict(o_row)) =
            (pyjson::loads(g).unwrap(), pyjson::loads(o).unwrap())
        else {
            panic!("{what} line {}: not an object", i + 1)
        };
        assert_eq!(
            pyjson::dumps(&PyValue::Dict(o_row.clone()), None, false),
            *o,
            "{what} line {}: not json.dump's encoding",
            i + 1
        );
        let keys = |d: &pyjson::PyDict| d.iter().map(|(k, _)| k.clone()).collect::<Vec<_>>();
        assert_eq!(keys(&g), keys(&o_row), "{what} line {}: keys", i + 1);
        for ((key, gv), (_, ov)) in g.iter().zip(&o_row) {
            if !scores.contains(&key.as_str()) {
                assert_eq!(gv, ov, "{what} line {}: {key}", i + 1);
                continue;
            }
            match (gv, ov) {
                (PyValue::Float(a), PyValue::Float(b)) => {
                    let diff = (a - b).abs();
                    assert!(diff < TOLERANCE, "{what} line {}: {key} {b} vs {a}", i + 1);
                    worst = worst.max(diff);
                }
                _ => panic!(
                    "{what} line {}: {key}: {ov:?} where the CLI wrote {gv:?}",
                    i + 1
                ),
            }
        }
    }
    worst
}

/// `worker score` from the heads fixtures folder; the `_outputs.jsonl` text.
fn run_worker(model: &str, dataset: &str, dtype: &str, tokenizer: &Path) -> String {
    let tmp = tempfile::tempdir().unwrap();
    let out = worker_score_cpu(&heads(), dtype)
        .args([
            "--model",
            model,
            "--dataset",
            dataset,
            "--chat-template",
            "tulu",
        ])
        .arg("--tokenizer")
        .arg(tokenizer)
        .arg("--output-dir")
        .arg(format!("{}/", tmp.path().display()))
        .output()
        .unwrap();
    assert_success(&out);
    read(&tmp.path().join(format!("{model}_outputs.jsonl")))
}

#[test]
fn auto_dtype_is_the_one_rewardbench_fixes_for_the_model() {
    let Some(tokenizer) = herd_testkit::shared_path("data/tokenizers/llama2") else {
        return;
    };
    let dataset = "../../cli/data/preference.jsonl";
    let run = |model: &str, dtype: &str| run_worker(model, dataset, dtype, &tokenizer);
    // REWARD_MODEL_CONFIG loads INF-ORM in bfloat16 whatever --torch_dtype says
    let inform = "infly/INF-ORM-Llama3.1-70B";
    let auto = run(inform, "auto");
    assert_eq!(auto, run(inform, "bf16"));
    assert_ne!(auto, run(inform, "fp32"));
    // a model without a fixed dtype: auto is fp32 on the CPU
    let ultra = "openbmb/UltraRM-13b";
    assert_eq!(run(ultra, "auto"), run(ultra, "fp32"));
}

#[test]
fn worker_score_runs_starling_as_the_rewardbench_cli_does() {
    let golden = heads().join("cli");
    let manifest = pyjson::loads(&read(&golden.join("manifest.json"))).unwrap();
    let get = |k: &str| {
        pyjson::dict_get(manifest.as_dict().unwrap(), k)
            .unwrap()
            .clone()
    };
    let model = get("model").as_str().unwrap().to_owned();
    let dataset = get("dataset").as_str().unwrap().to_owned();
    let PyValue::List(extra) = get("extra") else {
        panic!("extra")
    };
    let extra: Vec<String> = extra
        .iter()
        .map(|a| {
            a.as_str()
                .unwrap()
                .replace("--chat_template", "--chat-template")
        })
        .collect();
    let tmp = tempfile::tempdir().unwrap();
    let ours = tmp.path().join("results");
    let out = worker_score_cpu(&heads(), "fp32")
        .args(["--model", &model, "--dataset", &dataset, "--save-all"])
        .arg("--output-dir")
        .arg(format!("{}/", ours.display()))
        .args(&extra)
        .output()
        .unwrap();
    assert_success(&out);
    let golden = golden.join("results");
    let file = |suffix: &str| PathBuf::from(format!("{model}{suffix}"));
    assert_eq!(
        read(&ours.join(file(".json"))),
        read(&golden.join(file(".json")))
    );
    let mut worst = 0f64;
    for (suffix, keys) in [
        ("_outputs.jsonl", ["scores_chosen", "scores_rejected"]),
        ("_all.jsonl", ["chosen", "rejected"]),
    ] {
        let f = file(suffix);
        worst = worst.max(compare_jsonl(
            &f.display().to_string(),
            &read(&golden.join(&f)),
            &read(&ours.join(&f)),
            &keys,
        ));
    }
    println!("Starling-RM-34B via worker score: max |diff| {worst:.2e}");
}

/// `--pref-sets` writes run_rm.py's scores file: StarlingPipeline's rewards are one float per row
/// there (`rewards.float().cpu().numpy().tolist()` of a `[batch]` tensor), UltraRM's `[x]`.
#[test]
fn prior_set_scores_keep_the_pipelines_shape() {
    let Some(tokenizer) = herd_testkit::shared_path("data/tokenizers/llama2") else {
        return;
    };
    let prior_sets = repo().join("common/rewardbench/tests/golden/prior-sets/pref-test-sets");
    for (model, scalar) in [
        ("Nexusflow/Starling-RM-34B", true),
        ("openbmb/UltraRM-13b", false),
    ] {
        let tmp = tempfile::tempdir().unwrap();
        let mut command = worker_score_cpu(&heads(), "fp32");
        command
            .args(["--pref-sets", "--model", model, "--chat-template", "tulu"])
            .arg("--dataset")
            .arg(&prior_sets)
            .arg("--results-dir")
            .arg(tmp.path());
        if !scalar {
            command.arg("--tokenizer").arg(&tokenizer);
        }
        let out = command.output().unwrap();
        assert!(
            out.status.success(),
            "{model}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let path = tmp.path().join(format!("pref-sets-scores/{model}.json"));
        let scores = pyjson::loads(&read(&path)).unwrap();
        let scores = scores.as_dict().unwrap();
        for key in ["scores_chosen", "scores_rejected"] {
            let PyValue::List(rows) = pyjson::dict_get(scores, key).unwrap() else {
                panic!("{model}: {key}")
            };
            assert!(!rows.is_empty());
            for row in rows {
                match row {
                    PyValue::Float(_) => assert!(scalar, "{model}: {key} holds floats"),
                    PyValue::List(items) => {
                        assert!(!scalar, "{model}: {key} holds lists");
                        assert_eq!(items.len(), 1);
                    }
                    other => panic!("{model}: {key}: {other:?}"),
                }
            }
        }
    }
}
