//! What `coord deploy k8s|beaker` renders, checked by the platforms' own published definitions
//! through deploy/validate/validate.py: every Kubernetes object against the Kubernetes API's
//! OpenAPI schema of a pinned version (kubernetes-validate, strict: unknown fields are errors),
//! every Beaker spec loaded and sent back by Beaker's own client (beaker-py's
//! `BeakerExperimentSpec`, the call `beaker experiment create` makes). With the defaults and with
//! every non-default flag; and a broken object of each kind must be rejected, so the check bites.

use std::path::{Path, PathBuf};
use std::process::Command;

use clap::Parser;
use herd_coordinator::deploy::{self, DeployArgs, Target};

fn parse(argv: &[&str]) -> Target {
    let full: Vec<&str> = ["deploy"].iter().chain(argv).copied().collect();
    DeployArgs::try_parse_from(full)
        .unwrap_or_else(|e| panic!("{argv:?}: {e}"))
        .target
}

/// `coord deploy k8s ARGV` rendered into `dir` (the five files of `-o DIR`).
fn k8s_into(dir: &Path, argv: &[&str]) -> Vec<PathBuf> {
    let Target::K8s(args) = parse(&[&["k8s"], argv].concat()) else {
        unreachable!()
    };
    let files = deploy::k8s::render(&args).unwrap_or_else(|e| panic!("{argv:?}: {e:#}"));
    std::fs::create_dir_all(dir).unwrap();
    files
        .iter()
        .map(|(name, text)| {
            let path = dir.join(name);
            std::fs::write(&path, text).unwrap();
            path
        })
        .collect()
}

/// `coord deploy beaker ARGV` rendered into `path`.
fn beaker_into(path: &Path, argv: &[&str]) -> PathBuf {
    let Target::Beaker(args) = parse(&[&["beaker"], argv].concat()) else {
        unreachable!()
    };
    let text = deploy::beaker::render(&args).unwrap_or_else(|e| panic!("{argv:?}: {e:#}"));
    std::fs::write(path, text).unwrap();
    path.to_path_buf()
}

/// validate.py TARGET FILES: (success, its output).
fn validate(python: &Path, target: &str, files: &[PathBuf]) -> (bool, String) {
    let script = herd_testkit::workspace_root().join("deploy/validate/validate.py");
    let out = Command::new(python)
        .arg(&script)
        .arg(target)
        .args(files)
        .output()
        .unwrap_or_else(|e| panic!("running {}: {e}", script.display()));
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    // exit 1 is "invalid"; anything else but 0 is the validator itself failing
    assert!(
        matches!(out.status.code(), Some(0 | 1)),
        "validate.py {target} crashed ({}):\n{text}",
        out.status
    );
    (out.status.success(), text)
}

/// A copy of `path` with `from` replaced by `to` (which must occur).
fn broken(path: &Path, into: &Path, from: &str, to: &str) -> PathBuf {
    let text = std::fs::read_to_string(path).unwrap();
    assert!(text.contains(from), "{} has no {from:?}", path.display());
    std::fs::write(into, text.replacen(from, to, 1)).unwrap();
    into.to_path_buf()
}

#[test]
fn rendered_k8s_manifests_are_valid_kubernetes_objects() {
    let Some(python) = herd_testkit::deploy_python() else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let mut files = k8s_into(&tmp.path().join("defaults"), &[]);
    // every flag away from its default
    files.extend(k8s_into(
        &tmp.path().join("flags"),
        &[
            "--workers",
            "16",
            "--image",
            "registry.example/herd-worker:v2",
            "--coordinator-image",
            "registry.example/herd-coord:v2",
            "--namespace",
            "sweeps",
            "--gpu-node-selector",
            "nvidia.com/gpu.product=NVIDIA-H100-80GB-HBM3",
            "--gpus-per-worker",
            "8",
            "--secret-gcs",
            "gcs-key",
            "--secret-token",
            "worker-token",
            "--secret-operator-token",
            "operator-token",
            "--otel-endpoint",
            "http://collector.monitoring:4317",
            "--state-size",
            "500Gi",
            "--env",
            "RUST_LOG=info,herd=debug",
            "--env",
            "HF_HUB_OFFLINE=1",
        ],
    ));
    // the optional parts left out
    files.extend(k8s_into(
        &tmp.path().join("bare"),
        &["--gpu-node-selector", "none", "--otel-endpoint", ""],
    ));
    // and the committed deploy/k8s (kept equal to the defaults by the deploy test)
    let committed = herd_testkit::workspace_root().join("deploy/k8s");
    let mut on_disk: Vec<PathBuf> = std::fs::read_dir(&committed)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    on_disk.sort();
    files.extend(on_disk);
    let (ok, out) = validate(&python, "k8s", &files);
    assert!(ok, "{out}");
    // six objects per rendering (namespace, service, statefulset, policy, job, kustomization)
    assert!(out.contains("k8s: 24 objects in 20 files"), "{out}");
    assert!(out.contains(": 0 problems"), "{out}");

    // the check bites: a wrong type, a misspelt field, an apiVersion the API does not serve
    let job = tmp.path().join("defaults/worker-job.yaml");
    let cases = [
        ("parallelism: 4", "parallelism: four", "spec.parallelism"),
        (
            "completionMode: Indexed",
            "completionMod: Indexed",
            "completionMod",
        ),
        ("apiVersion: batch/v1", "apiVersion: batch/v2", "batch/v2"),
    ];
    for (i, (from, to, named)) in cases.iter().enumerate() {
        let bad = broken(&job, &tmp.path().join(format!("bad-{i}.yaml")), from, to);
        let (ok, out) = validate(&python, "k8s", &[bad]);
        assert!(!ok, "{to:?} was accepted:\n{out}");
        assert!(
            out.contains("ERROR") && out.contains(named),
            "{to:?}:\n{out}"
        );
    }
    let kustomization = broken(
        &tmp.path().join("defaults/kustomization.yaml"),
        &tmp.path().join("defaults/kustomization-bad.yaml"),
        "worker-job.yaml",
        "workers.yaml",
    );
    let (ok, out) = validate(&python, "k8s", &[kustomization]);
    assert!(!ok && out.contains("workers.yaml"), "{out}");
}

#[test]
fn rendered_beaker_specs_load_in_beakers_own_client() {
    let Some(python) = herd_testkit::deploy_python() else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    let files = vec![
        // the coordinator task pinned to a host, TLS from secrets, every option
        beaker_into(
            &d.join("full.yaml"),
            &[
                "--workers",
                "16",
                "--image",
                "herd/herd-worker",
                "--coordinator-image",
                "ghcr.io/herd/herd-coord:v1",
                "--coordinator-host",
                "jupiter-cs-aus-101.reviz.ai2.in",
                "--cluster",
                "ai2/jupiter-cirrascale-2",
                "--cluster",
                "ai2/ceres-cirrascale",
                "--priority",
                "high",
                "--preemptible",
                "--budget",
                "ai2/oe-adapt",
                "--workspace",
                "ai2/herd",
                "--gpus-per-worker",
                "8",
                "--secret-gcs",
                "GOOGLE_SERVICE_ACCOUNT",
                "--secret-token",
                "HERD_TOKEN",
                "--secret-operator-token",
                "HERD_OPERATOR_TOKEN",
                "--secret-tls-cert",
                "cert",
                "--secret-tls-key",
                "key",
                "--secret-tls-ca",
                "ca",
                "--otel-endpoint",
                "http://otel.example:4317",
                "--env",
                "RUST_LOG=info,herd=debug",
                "--description",
                "a sweep: \"quoted\" # not a comment",
            ],
        ),
        // the defaults around the one required host
        beaker_into(
            &d.join("defaults.yaml"),
            &[
                "--workers",
                "1",
                "--image",
                "me/w",
                "--coordinator-image",
                "me/c",
                "--coordinator-host",
                "h1",
            ],
        ),
        // workers only, dialing a coordinator elsewhere (https with a CA, and plaintext)
        beaker_into(
            &d.join("external.yaml"),
            &[
                "--workers",
                "2",
                "--image",
                "docker:ghcr.io/herd/herd-worker:v1",
                "--coordinator-address",
                "https://herd.example.org:443",
                "--secret-tls-ca",
                "org-ca",
            ],
        ),
        beaker_into(
            &d.join("plaintext.yaml"),
            &[
                "--workers",
                "1",
                "--image",
                "me/w",
                "--coordinator-address",
                "http://10.0.0.5:50051",
            ],
        ),
    ];
    let (ok, out) = validate(&python, "beaker", &files);
    assert!(ok, "{out}");
    assert!(out.contains("beaker: 4 specs"), "{out}");
    assert!(out.contains(": 0 problems"), "{out}");

    // the check bites: a field beaker-py does not know (it would drop it without a word), a
    // wrong type, a priority Beaker does not have
    let full = d.join("full.yaml");
    let cases = [
        ("hostNetworking: true", "hostNetwork: true", "hostNetwork"),
        ("gpuCount: 8", "gpuCount: eight", "gpu_count"),
        ("priority: high", "priority: asap", "asap"),
    ];
    for (i, (from, to, named)) in cases.iter().enumerate() {
        let bad = broken(&full, &d.join(format!("bad-{i}.yaml")), from, to);
        let (ok, out) = validate(&python, "beaker", &[bad]);
        assert!(!ok, "{to:?} was accepted:\n{out}");
        assert!(
            out.contains("ERROR") && out.contains(named),
            "{to:?}:\n{out}"
        );
    }
}
