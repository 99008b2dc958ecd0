//! `coord csv` (the real binary) against the CSV that hybrid-preferences'
//! `scripts/fetch_evals_rewardbench.py` itself writes for the same metrics folder:
//! `common/rewardbench/tests/golden/sweep/<scenario>/expected-from-dir.csv`, made by
//! `tests/golden/make_sweep_csv_golden.py` (the pinned script, run unmodified with a stand-in
//! `beaker` module listing `metrics/*.json` in file-name order and the prefix `rm-eval-`).

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn golden(scenario: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../common/rewardbench/tests/golden/sweep")
        .join(scenario)
}

fn coord(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_coord"))
        .args(args)
        .env_remove("RUST_LOG")
        .output()
        .expect("running coord")
}

fn options(scenario: &str) -> serde_json::Value {
    let text = std::fs::read_to_string(golden(scenario).join("options.json")).unwrap();
    serde_json::from_str(&text).unwrap()
}

/// Runs `coord csv` on a scenario's folders with its options, returns the CSV written.
fn coord_csv(scenario: &str, out: &Path) -> String {
    let dir = golden(scenario);
    let opts = options(scenario);
    let metrics = dir.join("metrics");
    let mut args: Vec<String> = vec![
        "csv".into(),
        "--metrics".into(),
        metrics.display().to_string(),
        "-o".into(),
        out.display().to_string(),
        "--experiment-prefix".into(),
        opts["experiment_prefix"].as_str().unwrap().into(),
    ];
    if let Some(sub) = opts["feature_counts_dir"].as_str() {
        args.push("--feature-counts-dir".into());
        args.push(dir.join(sub).display().to_string());
    }
    if let Some(n) = opts["dataset_total_size"].as_u64() {
        args.push("--dataset-total-size".into());
        args.push(n.to_string());
    }
    if let Some(x) = opts["gpt4_threshold_score"].as_f64() {
        args.push("--gpt4-threshold-score".into());
        args.push(x.to_string());
    }
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    let output = coord(&refs);
    assert!(
        output.status.success(),
        "coord csv failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        stdout.contains(&format!("wrote {}", out.display())),
        "{stdout}"
    );
    std::fs::read_to_string(out).unwrap()
}

fn check(scenario: &str) {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("nested/sweep.csv");
    let got = coord_csv(scenario, &out);
    let want = std::fs::read_to_string(golden(scenario).join("expected-from-dir.csv")).unwrap();
    for (i, (g, w)) in got.lines().zip(want.lines()).enumerate() {
        assert_eq!(g, w, "{scenario}: line {} differs", i + 1);
    }
    assert_eq!(got, want, "{scenario}: line count or line ends differ");
}

#[test]
fn counts_mode_equals_the_reference_script() {
    check("counts");
}

#[test]
fn counts_mode_with_int_features_equals_the_reference_script() {
    check("counts_int");
}

#[test]
fn name_mode_with_a_prefix_equals_the_reference_script() {
    // two files besides the listed runs: one outside "rm-eval-" (left out), one containing it
    check("names");
    let want = std::fs::read_to_string(golden("names").join("expected-from-dir.csv")).unwrap();
    assert!(!want.contains("dpo-eval-baseline-run-00"));
    assert!(want.contains("\ndpo-rm-eval-,"));
}

#[test]
fn two_folders_are_one_listing_and_a_repeated_name_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let metrics = golden("names").join("metrics");
    // split the folder in two: the combined listing (folder by folder, each sorted) is the
    // sorted listing when the first folder holds the names that sort first
    let mut names: Vec<PathBuf> = std::fs::read_dir(&metrics)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    names.sort();
    let (a, b) = (tmp.path().join("a"), tmp.path().join("b"));
    std::fs::create_dir_all(&a).unwrap();
    std::fs::create_dir_all(&b).unwrap();
    for (i, path) in names.iter().enumerate() {
        let dest = if i < names.len() / 2 { &a } else { &b };
        std::fs::copy(path, dest.join(path.file_name().unwrap())).unwrap();
    }
    let out = tmp.path().join("combined.csv");
    let output = coord(&[
        "csv",
        "--metrics",
        a.to_str().unwrap(),
        "--metrics",
        b.to_str().unwrap(),
        "-o",
        out.to_str().unwrap(),
        "--experiment-prefix",
        "rm-eval-",
        "--gpt4-threshold-score",
        "0.5",
    ]);
    assert!(output.status.success(), "{output:?}");
    assert_eq!(
        std::fs::read_to_string(&out).unwrap(),
        std::fs::read_to_string(golden("names").join("expected-from-dir.csv")).unwrap()
    );
    // the same run in both folders
    std::fs::copy(&names[0], b.join(names[0].file_name().unwrap())).unwrap();
    let output = coord(&[
        "csv",
        "--metrics",
        a.to_str().unwrap(),
        "--metrics",
        b.to_str().unwrap(),
        "-o",
        tmp.path().join("refused.csv").to_str().unwrap(),
    ]);
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("is also in an earlier --metrics folder"),
        "{stderr}"
    );
    assert!(!tmp.path().join("refused.csv").exists());
}

#[test]
fn bad_inputs_are_errors_naming_them() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("x.csv");
    let out_s = out.to_str().unwrap();
    // no such folder
    let missing = tmp.path().join("missing");
    let output = coord(&["csv", "--metrics", missing.to_str().unwrap(), "-o", out_s]);
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains(missing.to_str().unwrap()), "{stderr}");

    // nothing matches the prefix
    let metrics = golden("names").join("metrics");
    let output = coord(&[
        "csv",
        "--metrics",
        metrics.to_str().unwrap(),
        "-o",
        out_s,
        "--experiment-prefix",
        "no-such-run",
    ]);
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("whose name contains \"no-such-run\""),
        "{stderr}"
    );

    // a metrics file that is not a JSON object
    let bad = tmp.path().join("bad");
    std::fs::create_dir_all(&bad).unwrap();
    std::fs::write(bad.join("rm-eval-broken.json"), "[1, 2]").unwrap();
    let output = coord(&["csv", "--metrics", bad.to_str().unwrap(), "-o", out_s]);
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("rm-eval-broken.json"), "{stderr}");

    // counts mode with a name the reference cannot parse (ID but no SWAPS_<n>)
    let ids = tmp.path().join("ids");
    std::fs::create_dir_all(&ids).unwrap();
    let some = std::fs::read_dir(golden("counts").join("metrics"))
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    std::fs::copy(&some, ids.join("rm-eval-x-ID__abc__no-swaps.json")).unwrap();
    let output = coord(&[
        "csv",
        "--metrics",
        ids.to_str().unwrap(),
        "-o",
        out_s,
        "--feature-counts-dir",
        golden("counts").join("counts").to_str().unwrap(),
    ]);
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("rm-eval-x-ID__abc__no-swaps"), "{stderr}");
    assert!(stderr.contains("SWAPS_"), "{stderr}");
    assert!(!out.exists());
}
