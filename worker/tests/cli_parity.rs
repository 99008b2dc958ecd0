//! `worker score` against the REAL `rewardbench` CLI (rewardbench 0.1.4): the goldens under
//! tests/golden/cli/ are the CLI's own files (tests/golden/make_cli_goldens.py runs it on the
//! committed fixture models and a subset of the real LLMBar + HEP rows of the shared data, made
//! into the Hugging Face message-list format; see the generator's docstring).
//!
//! Each case runs the `worker` binary from the repository root with the same relative model and
//! dataset paths the CLI got (they are written into the files), `--device cpu --dtype fp32
//! --save-all`, into a temporary `--output-dir`, and checks:
//! - the same set of files at the same relative paths;
//! - per-example scores: fp32 |diff| < 5e-4 (the measured worst per case is printed);
//! - wins: identical, except pairs whose reference margin |chosen - rejected| is below 1e-5;
//! - byte for byte: every JSON Lines line of `{model}_outputs.jsonl` and `{model}_all.jsonl`
//!   equals the golden line once the golden's score values are put in place of ours (so every
//!   other byte, key order, text, metadata and number formatting, is the CLI's); our own line is
//!   byte-identical to that re-encoding with our scores (the file is what `json.dump` would
//!   write); and `{model}.json` is compared whole, byte for byte (it holds no per-example score:
//!   the accuracy is identical when the wins are).

mod support;

use std::path::{Path, PathBuf};
use std::process::Command;

use herd_rewardbench::pyjson::{self, PyDict, PyValue};
use support::{repo, worker_score_cpu};

const TOLERANCE: f64 = 5e-4;
const TIE_MARGIN: f64 = 1e-5;

fn golden_dir() -> PathBuf {
    repo().join("tests/golden/cli")
}

struct Case {
    name: String,
    data: String,
    dataset: String,
    model: String,
    extra: Vec<String>,
}

fn cases() -> Vec<Case> {
    let text = std::fs::read_to_string(golden_dir().join("manifest.json")).unwrap();
    let manifest = pyjson::loads(&text).unwrap();
    let get = |d: &PyDict, k: &str| pyjson::dict_get(d, k).unwrap().clone();
    let PyValue::List(cases) = get(manifest.as_dict().unwrap(), "cases") else {
        panic!("cases")
    };
    cases
        .iter()
        .map(|c| {
            let d = c.as_dict().unwrap();
            let s = |k: &str| get(d, k).as_str().unwrap().to_owned();
            let PyValue::List(extra) = get(d, "extra") else {
                panic!("extra")
            };
            Case {
                name: s("name"),
                data: s("data"),
                dataset: s("dataset"),
                model: s("model"),
                // the CLI's flags in worker spelling: --chat_template -> --chat-template
                extra: extra
                    .iter()
                    .map(|a| {
                        let a = a.as_str().unwrap();
                        if a.starts_with("--") {
                            a.replace('_', "-")
                        } else {
                            a.to_owned()
                        }
                    })
                    .collect(),
            }
        })
        .collect()
}

/// Every file under `dir`, relative to it, sorted.
fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
            } else {
                out.push(path.strip_prefix(dir).unwrap().to_path_buf());
            }
        }
    }
    out.sort();
    out
}

fn run_worker(case: &Case, output_dir: &Path) {
    let out = worker_score_cpu(&repo(), "fp32")
        .args([
            "--model",
            &case.model,
            "--dataset",
            &case.dataset,
            "--save-all",
        ])
        .arg("--output-dir")
        .arg(format!("{}/", output_dir.display()))
        .args(&case.extra)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}: {}",
        case.name,
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The float (or the floats of a list) of a score value.
fn floats(v: &PyValue) -> Vec<f64> {
    match v {
        PyValue::List(items) => items.iter().flat_map(floats).collect(),
        other => vec![other.as_f64().expect("a number")],
    }
}

/// Compares two JSON Lines files line by line: `score_keys` within [`TOLERANCE`], and every
/// byte once the golden's score values (and `results`) replace ours. Returns the worst |diff| and, per line,
/// the (golden, ours) values of the first two score keys (chosen, rejected) if there are two.
#[allow(clippy::type_complexity)]
fn compare_jsonl(
    what: &str,
    golden: &str,
    ours: &str,
    score_keys: &[&str],
) -> (f64, Vec<Vec<(Vec<f64>, Vec<f64>)>>) {
    let golden_lines: Vec<&str> = golden.lines().collect();
    let our_lines: Vec<&str> = ours.lines().collect();
    assert_eq!(golden_lines.len(), our_lines.len(), "{what}: line count");
    assert!(
        ours.ends_with('\n') == golden.ends_with('\n'),
        "{what}: final newline"
    );
    let mut worst = 0.0f64;
    let mut per_line = Vec::new();
    for (i, (g, o)) in golden_lines.iter().zip(&our_lines).enumerate() {
        let PyValue::Dict(g_row) = pyjson::loads(g).unwrap() else {
            panic!("{what} line {}: not an object", i + 1)
        };
        let PyValue::Dict(o_row) = pyjson::loads(o).unwrap() else {
            panic!("{what} line {}: not an object", i + 1)
        };
        // our line is exactly what json.dump writes for its own values
        assert_eq!(
            pyjson::dumps(&PyValue::Dict(o_row.clone()), None, false),
            *o,
            "{what} line {}: not json.dump's encoding",
            i + 1
        );
        let mut values = Vec::new();
        let mut substituted = o_row.clone();
        for key in score_keys {
            let gv =
                pyjson::dict_get(&g_row, key).unwrap_or_else(|| panic!("{what}: golden {key}"));
            let ov = pyjson::dict_get(&o_row, key).unwrap_or_else(|| panic!("{what}: our {key}"));
            let (gf, of) = (floats(gv), floats(ov));
            assert_eq!(gf.len(), of.len(), "{what} line {}: {key} shape", i + 1);
            for (a, b) in gf.iter().zip(&of) {
                let diff = (a - b).abs();
                assert!(
                    diff < TOLERANCE,
                    "{what} line {}: {key} {b} vs the CLI's {a}",
                    i + 1
                );
                worst = worst.max(diff);
            }
            values.push((gf, of));
            for (k, v) in substituted.iter_mut() {
                if k == key {
                    *v = gv.clone();
                }
            }
        }
        // `results` (the wins; checked by the caller) taken from the golden too
        if let Some(gv) = pyjson::dict_get(&g_row, "results") {
            for (k, v) in substituted.iter_mut() {
                if k == "results" {
                    *v = gv.clone();
                }
            }
        }
        assert_eq!(
            pyjson::dumps(&PyValue::Dict(substituted), None, false),
            *g,
            "{what} line {}: other than the scores, not the CLI's bytes",
            i + 1
        );
        per_line.push(values);
    }
    (worst, per_line)
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

#[test]
fn worker_score_writes_what_the_rewardbench_cli_writes() {
    let mut report = Vec::new();
    for case in cases() {
        let tmp = tempfile::tempdir().unwrap();
        let ours_dir = tmp.path().join("results");
        run_worker(&case, &ours_dir);
        let golden_root = golden_dir().join(&case.name).join("results");
        let golden_files = files_under(&golden_root);
        assert_eq!(
            files_under(&ours_dir),
            golden_files,
            "{}: the files written",
            case.name
        );
        let model = &case.model;
        let outputs = PathBuf::from(format!("{model}_outputs.jsonl"));
        let what = |f: &Path| format!("{}: {}", case.name, f.display());
        if case.data == "instruction" {
            let (worst, _) = compare_jsonl(
                &what(&outputs),
                &read(&golden_root.join(&outputs)),
                &read(&ours_dir.join(&outputs)),
                &["results"],
            );
            report.push(format!("{}: max |diff| {worst:.3e}", case.name));
            continue;
        }
        let (worst, _) = compare_jsonl(
            &what(&outputs),
            &read(&golden_root.join(&outputs)),
            &read(&ours_dir.join(&outputs)),
            &["scores_chosen", "scores_rejected"],
        );
        // the unflattened per-row scores (`_all.jsonl`; `_outputs.jsonl` flattens a two-label
        // model's rows across lines, as upstream's unwrap_if_list_of_lists does)
        let all = PathBuf::from(format!("{model}_all.jsonl"));
        let (worst_all, rows) = compare_jsonl(
            &what(&all),
            &read(&golden_root.join(&all)),
            &read(&ours_dir.join(&all)),
            &["chosen", "rejected"],
        );
        // identical wins (`chosen > rejected`, lexicographic on logit rows, as Python compares
        // lists), except where the CLI's own margin is below TIE_MARGIN
        let our_results: Vec<i64> = read(&ours_dir.join(&outputs))
            .lines()
            .map(|l| {
                let PyValue::Dict(row) = pyjson::loads(l).unwrap() else {
                    panic!()
                };
                match pyjson::dict_get(&row, "results") {
                    Some(PyValue::Int(r)) => *r,
                    other => panic!("results: {other:?}"),
                }
            })
            .collect();
        let mut differing = 0;
        for (i, values) in rows.iter().enumerate() {
            let ((gc, oc), (gr, or)) = (&values[0], &values[1]);
            let win = |c: &[f64], r: &[f64]| c.partial_cmp(r) == Some(std::cmp::Ordering::Greater);
            assert_eq!(
                our_results[i],
                i64::from(win(oc, or)),
                "{}: pair {} results",
                case.name,
                i + 1
            );
            if win(gc, gr) != win(oc, or) {
                let margin = gc[0] - gr[0];
                assert!(
                    margin.abs() < TIE_MARGIN,
                    "{}: pair {} wins differently (CLI margin {margin})",
                    case.name,
                    i + 1,
                );
                differing += 1;
            }
        }
        let worst = worst.max(worst_all);
        let json = PathBuf::from(format!("{model}.json"));
        if differing == 0 {
            assert_eq!(
                read(&ours_dir.join(&json)),
                read(&golden_root.join(&json)),
                "{}: {} byte for byte",
                case.name,
                json.display()
            );
        }
        report.push(format!(
            "{}: max |diff| {worst:.3e}, {differing} near-tie wins differ",
            case.name
        ));
    }
    eprintln!("{}", report.join("\n"));
}

#[test]
fn instruction_data_with_a_dpo_model_is_refused_like_the_cli() {
    let tmp = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_worker"))
        .current_dir(repo())
        .args(["score", "--device", "cpu", "--chat-template", "tulu"])
        .args(["--model", "tests/golden/fixtures/models/llama-policy"])
        .args(["--dataset", "tests/golden/cli/data/instruction.jsonl"])
        .arg("--output-dir")
        .arg(format!("{}/", tmp.path().display()))
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("pairwise preference data"), "{stderr}");
}

#[test]
fn unrecognized_data_and_escaping_model_paths_are_errors() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("d.jsonl");
    std::fs::write(&data, "{\"text\": \"hello\"}\n").unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_worker"))
        .current_dir(repo())
        .args(["score", "--device", "cpu"])
        .args([
            "--model",
            "tests/golden/fixtures/models/mistral-rm",
            "--dataset",
        ])
        .arg(&data)
        .arg("--output-dir")
        .arg(format!("{}/", tmp.path().display()))
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("d.jsonl") && stderr.contains("Dataset format not recognized"),
        "{stderr}"
    );

    let out = Command::new(env!("CARGO_BIN_EXE_worker"))
        .current_dir(repo().join("tests"))
        .args(["score", "--device", "cpu"])
        .args(["--model", "../tests/golden/fixtures/models/mistral-rm"])
        .args(["--dataset", "golden/cli/data/preference.jsonl"])
        .arg("--output-dir")
        .arg(format!("{}/", tmp.path().display()))
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("'..'"), "{stderr}");
}
