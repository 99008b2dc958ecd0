//! `coord deploy beaker|k8s`: rendered specs against golden files, parsed back and checked for
//! the fields the clusters need; deploy/k8s/ equal to the defaults' rendering; bad flags.
//!
//! The goldens (tests/golden/deploy/) and deploy/k8s/*.yaml are rewritten by
//! `HERD_UPDATE_GOLDEN=1 cargo test -p herd-coordinator --test deploy`; review the diff.

use clap::Parser;
use herd_coordinator::deploy::{self, parse_documents, DeployArgs, Target};
use serde_norway::Value;
use std::path::{Path, PathBuf};

fn manifest_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn updating() -> bool {
    std::env::var_os("HERD_UPDATE_GOLDEN").is_some_and(|v| v != "0" && !v.is_empty())
}

/// Compare with (or, with HERD_UPDATE_GOLDEN=1, rewrite) a committed file.
fn check_golden(path: &Path, actual: &str) {
    if updating() {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, actual).unwrap();
        return;
    }
    let expected = std::fs::read_to_string(path).unwrap_or_else(|e| {
        panic!(
            "{}: {e}; create it with HERD_UPDATE_GOLDEN=1 cargo test -p herd-coordinator --test deploy",
            path.display()
        )
    });
    assert!(
        expected == actual,
        "{} differs from what the renderer writes now; if the change is intended, rewrite it with \
         HERD_UPDATE_GOLDEN=1 cargo test -p herd-coordinator --test deploy\n--- expected\n{expected}\n--- actual\n{actual}",
        path.display()
    );
}

fn parse(argv: &[&str]) -> Target {
    let mut full = vec!["deploy"];
    full.extend_from_slice(argv);
    DeployArgs::try_parse_from(full)
        .unwrap_or_else(|e| panic!("{argv:?}: {e}"))
        .target
}

fn beaker(argv: &[&str]) -> anyhow::Result<String> {
    match parse(&[&["beaker"], argv].concat()) {
        Target::Beaker(a) => deploy::beaker::render(&a),
        _ => unreachable!(),
    }
}

fn k8s_args(argv: &[&str]) -> deploy::k8s::K8sArgs {
    match parse(&[&["k8s"], argv].concat()) {
        Target::K8s(a) => a,
        _ => unreachable!(),
    }
}

fn get<'a>(v: &'a Value, path: &str) -> &'a Value {
    let mut cur = v;
    for key in path.split('.') {
        cur = match key.parse::<usize>() {
            Ok(i) => cur.get(i),
            Err(_) => cur.get(key),
        }
        .unwrap_or_else(|| panic!("missing {path} (at {key}) in {v:?}"));
    }
    cur
}

fn s<'a>(v: &'a Value, path: &str) -> &'a str {
    get(v, path)
        .as_str()
        .unwrap_or_else(|| panic!("{path} is not a string: {:?}", get(v, path)))
}

fn seq<'a>(v: &'a Value, path: &str) -> &'a Vec<Value> {
    get(v, path)
        .as_sequence()
        .unwrap_or_else(|| panic!("{path} is not a list"))
}

fn strings<'a>(v: &'a Value, path: &str) -> Vec<&'a str> {
    seq(v, path)
        .iter()
        .map(|a| {
            a.as_str()
                .unwrap_or_else(|| panic!("{path}: {a:?} is not a string"))
        })
        .collect()
}

/// The value after `name` in an argument list.
fn flag<'a>(args: &[&'a str], name: &str) -> Option<&'a str> {
    let at = args.iter().position(|a| *a == name)?;
    args.get(at + 1).copied()
}

/// A Beaker task's (mountPath, secret) dataset mounts.
fn mounts(task: &Value) -> Vec<(&str, &str)> {
    seq(task, "datasets")
        .iter()
        .map(|d| (s(d, "mountPath"), s(d, "source.secret")))
        .collect()
}

const BEAKER_FLAGS: &[&str] = &[
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
    "--secret-gcs",
    "GOOGLE_SERVICE_ACCOUNT",
    "--secret-token",
    "HERD_TOKEN",
    "--secret-operator-token",
    "HERD_OPERATOR_TOKEN",
    "--otel-endpoint",
    "http://otel.example:4317",
    "--env",
    "RUST_LOG=info,herd=debug",
];

#[test]
fn beaker_spec_matches_golden_and_has_required_fields() {
    let text = beaker(BEAKER_FLAGS).unwrap();
    check_golden(
        &manifest_dir().join("tests/golden/deploy/beaker.yaml"),
        &text,
    );

    let docs = parse_documents(&text).unwrap();
    assert_eq!(docs.len(), 1);
    let spec = &docs[0];
    assert_eq!(s(spec, "version"), "v2");
    assert_eq!(s(spec, "budget"), "ai2/oe-adapt");
    assert!(!s(spec, "description").is_empty());
    let tasks = seq(spec, "tasks");
    assert_eq!(tasks.len(), 2, "a coordinator task and a worker task");
    for task in tasks {
        let name = s(task, "name");
        let image = get(task, "image");
        assert!(
            image.get("beaker").or(image.get("docker")).is_some(),
            "{name}: image.beaker or image.docker"
        );
        assert_eq!(s(task, "result.path"), "/output", "{name}");
        assert!(get(task, "resources.gpuCount").as_u64().is_some(), "{name}");
        assert!(!s(task, "context.priority").is_empty(), "{name}");
        assert!(
            get(task, "context.preemptible").as_bool().is_some(),
            "{name}"
        );
        let clusters: Vec<&str> = seq(task, "constraints.cluster")
            .iter()
            .map(|c| c.as_str().unwrap())
            .collect();
        assert_eq!(
            clusters,
            ["ai2/jupiter-cirrascale-2", "ai2/ceres-cirrascale"]
        );
        assert!(!seq(task, "command").is_empty(), "{name}");
        // secrets are references, never values
        let env = seq(task, "envVars");
        let secret = |var: &str| {
            env.iter()
                .find(|e| s(e, "name") == var)
                .and_then(|e| e.get("secret"))
                .and_then(Value::as_str)
                .unwrap_or_else(|| panic!("{name}: {var} from a secret"))
                .to_string()
        };
        assert_eq!(secret("HERD_TOKEN"), "HERD_TOKEN");
        assert_eq!(secret("GOOGLE_SERVICE_ACCOUNT"), "GOOGLE_SERVICE_ACCOUNT");
        // the operator token goes to the coordinator only
        let operator = env.iter().any(|e| s(e, "name") == "HERD_OPERATOR_TOKEN");
        assert_eq!(operator, name == "herd-coordinator", "{name}");
        if operator {
            assert_eq!(secret("HERD_OPERATOR_TOKEN"), "HERD_OPERATOR_TOKEN");
        }
        let value = |var: &str| {
            env.iter()
                .find(|e| s(e, "name") == var)
                .map(|e| s(e, "value").to_string())
        };
        assert_eq!(
            value("OTEL_EXPORTER_OTLP_ENDPOINT").as_deref(),
            Some("http://otel.example:4317")
        );
        assert_eq!(value("RUST_LOG").as_deref(), Some("info,herd=debug"));
        assert_eq!(get(task, "hostNetworking").as_bool(), Some(true));
    }
    let coord = &tasks[0];
    assert_eq!(s(coord, "image.docker"), "ghcr.io/herd/herd-coord:v1");
    assert_eq!(s(coord, "command.0"), "coord");
    assert_eq!(s(coord, "arguments.0"), "serve");
    assert_eq!(get(coord, "context.preemptible").as_bool(), Some(false));
    assert_eq!(get(coord, "resources.gpuCount").as_u64(), Some(0));
    assert_eq!(
        s(coord, "constraints.hostname.0"),
        "jupiter-cs-aus-101.reviz.ai2.in"
    );
    // TLS from the mounted secrets; no plaintext
    let coord_args = strings(coord, "arguments");
    assert_eq!(
        flag(&coord_args, "--tls-cert"),
        Some("/secrets/tls/cert.pem")
    );
    assert_eq!(flag(&coord_args, "--tls-key"), Some("/secrets/tls/key.pem"));
    assert!(!coord_args.contains(&"--allow-plaintext"), "{coord_args:?}");
    assert_eq!(
        mounts(coord),
        [
            ("/secrets/gcs/key.json", "GOOGLE_SERVICE_ACCOUNT"),
            ("/secrets/tls/cert.pem", "herd-tls-cert"),
            ("/secrets/tls/key.pem", "herd-tls-key"),
        ]
    );

    let workers = &tasks[1];
    assert_eq!(s(workers, "image.beaker"), "herd/herd-worker");
    assert_eq!(get(workers, "replicas").as_u64(), Some(16));
    assert_eq!(get(workers, "resources.gpuCount").as_u64(), Some(1));
    assert_eq!(s(workers, "context.priority"), "high");
    assert_eq!(get(workers, "context.preemptible").as_bool(), Some(true));
    let args = strings(workers, "arguments");
    assert_eq!(
        flag(&args, "--coordinator"),
        Some("https://jupiter-cs-aus-101.reviz.ai2.in:50051")
    );
    // the workers check the coordinator's certificate against the mounted CA
    assert_eq!(flag(&args, "--tls-ca"), Some("/secrets/tls/ca.pem"));
    assert_eq!(
        mounts(workers),
        [
            ("/secrets/gcs/key.json", "GOOGLE_SERVICE_ACCOUNT"),
            ("/secrets/tls/ca.pem", "herd-tls-ca"),
        ]
    );
    let env = seq(workers, "envVars");
    assert!(env
        .iter()
        .any(|e| s(e, "name") == "TOKENIZERS_PARALLELISM" && s(e, "value") == "false"));
}

#[test]
fn beaker_with_an_external_coordinator_has_the_worker_task_only() {
    let text = beaker(&[
        "--workers",
        "2",
        "--image",
        "beaker:me/herd-worker",
        "--coordinator-address",
        "https://herd.example.org:443",
        "--gpus-per-worker",
        "8",
    ])
    .unwrap();
    let spec = &parse_documents(&text).unwrap()[0];
    let tasks = seq(spec, "tasks");
    assert_eq!(tasks.len(), 1);
    assert_eq!(s(&tasks[0], "image.beaker"), "me/herd-worker");
    assert_eq!(get(&tasks[0], "resources.gpuCount").as_u64(), Some(8));
    assert_eq!(get(&tasks[0], "context.preemptible").as_bool(), Some(false));
    assert_eq!(s(&tasks[0], "context.priority"), "normal");
    assert_eq!(s(&tasks[0], "arguments.1"), "https://herd.example.org:443");
    // no CA named: the system roots, nothing mounted
    assert_eq!(flag(&strings(&tasks[0], "arguments"), "--tls-ca"), None);
    assert_eq!(mounts(&tasks[0]), [("/secrets/gcs/key.json", "herd-gcs")]);
    assert!(!text.contains("WARNING"), "{text}");

    // a private CA for it
    let text = beaker(&[
        "--workers",
        "1",
        "--image",
        "me/w",
        "--coordinator-address",
        "https://herd.example.org:443",
        "--secret-tls-ca",
        "org-ca",
    ])
    .unwrap();
    let docs = parse_documents(&text).unwrap();
    let task = &seq(&docs[0], "tasks")[0];
    assert_eq!(
        flag(&strings(task, "arguments"), "--tls-ca"),
        Some("/secrets/tls/ca.pem")
    );
    assert_eq!(mounts(task)[1], ("/secrets/tls/ca.pem", "org-ca"));

    // plaintext to a coordinator elsewhere is rendered, with a warning in the header
    let text = beaker(&[
        "--workers",
        "1",
        "--image",
        "me/w",
        "--coordinator-address",
        "http://10.0.0.5:50051",
    ])
    .unwrap();
    assert!(
        text.contains("WARNING: the workers dial http://10.0.0.5:50051 without TLS"),
        "{text}"
    );
}

#[test]
fn image_sources() {
    use deploy::beaker::image_source;
    assert_eq!(image_source("ljm/easylm-convert").0, "beaker");
    assert_eq!(image_source("ghcr.io/herd/herd-worker:v1").0, "docker");
    assert_eq!(image_source("localhost:5000/herd").0, "docker");
    assert_eq!(image_source("ubuntu:24.04").0, "docker");
    assert_eq!(image_source("docker:herd/herd-worker").0, "docker");
    assert_eq!(
        image_source("beaker:ghcr.io/x"),
        ("beaker", "ghcr.io/x".to_string())
    );
}

/// Every document: apiVersion, kind, metadata.name (and the namespace the flags asked for).
fn check_k8s_documents(files: &[(String, String)], namespace: &str) -> Vec<Value> {
    let mut all = Vec::new();
    for (name, text) in files {
        let docs = parse_documents(text).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert!(!docs.is_empty(), "{name}: no document");
        for doc in docs {
            assert!(!s(&doc, "apiVersion").is_empty(), "{name}");
            let kind = s(&doc, "kind");
            if kind == "Kustomization" {
                assert_eq!(s(&doc, "namespace"), namespace);
            } else {
                assert!(
                    !s(&doc, "metadata.name").is_empty(),
                    "{name}: metadata.name"
                );
                if kind != "Namespace" {
                    assert_eq!(s(&doc, "metadata.namespace"), namespace, "{name} {kind}");
                } else {
                    assert_eq!(s(&doc, "metadata.name"), namespace);
                }
            }
            all.push(doc);
        }
    }
    all
}

/// Every container port named `metrics` is one the container serves: its args carry
/// `--metrics-listen 0.0.0.0:<that port>` (a declared port nobody listens on scrapes as down).
fn assert_metrics_ports_served(docs: &[Value]) {
    let mut served = 0;
    for doc in docs {
        let Some(containers) = doc
            .get("spec")
            .and_then(|s| s.get("template"))
            .and_then(|t| t.get("spec"))
            .and_then(|s| s.get("containers"))
            .and_then(Value::as_sequence)
        else {
            continue;
        };
        for c in containers {
            let args = strings(c, "args");
            for port in c
                .get("ports")
                .and_then(Value::as_sequence)
                .into_iter()
                .flatten()
            {
                if s(port, "name") != "metrics" {
                    continue;
                }
                let number = get(port, "containerPort").as_u64().unwrap();
                assert_eq!(
                    flag(&args, "--metrics-listen"),
                    Some(format!("0.0.0.0:{number}").as_str()),
                    "{}: {args:?}",
                    s(c, "name")
                );
                served += 1;
            }
        }
    }
    assert_eq!(
        served, 2,
        "the coordinator's and the workers' metrics ports"
    );
}

fn kind<'a>(docs: &'a [Value], kind: &str) -> &'a Value {
    docs.iter()
        .find(|d| d.get("kind").and_then(Value::as_str) == Some(kind))
        .unwrap_or_else(|| panic!("no {kind}"))
}

#[test]
fn k8s_rendered_matches_golden_and_has_required_fields() {
    let args = k8s_args(&[
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
        "2",
        "--env",
        "RUST_LOG=debug",
    ]);
    let files = deploy::k8s::render(&args).unwrap();
    let stream = deploy::k8s::stream(&files);
    check_golden(
        &manifest_dir().join("tests/golden/deploy/k8s.yaml"),
        &stream,
    );
    // the stream is the files minus the kustomization
    assert_eq!(parse_documents(&stream).unwrap().len(), 5);

    let docs = check_k8s_documents(&files, "sweeps");
    assert_metrics_ports_served(&docs);
    let sts = kind(&docs, "StatefulSet");
    assert_eq!(
        s(sts, "spec.template.spec.containers.0.image"),
        "registry.example/herd-coord:v2"
    );
    let claim = &seq(sts, "spec.volumeClaimTemplates")[0];
    assert_eq!(s(claim, "metadata.name"), "state");
    assert_eq!(s(claim, "spec.resources.requests.storage"), "20Gi");
    let svc = kind(&docs, "Service");
    assert_eq!(s(svc, "metadata.name"), "herd-coord");
    assert_eq!(get(svc, "spec.ports.0.port").as_u64(), Some(50051));

    let job = kind(&docs, "Job");
    assert_eq!(get(job, "spec.parallelism").as_u64(), Some(16));
    assert_eq!(get(job, "spec.completions").as_u64(), Some(16));
    assert_eq!(s(job, "spec.completionMode"), "Indexed");
    let pod = get(job, "spec.template.spec");
    // keys with dots: looked up whole
    let selector = get(pod, "nodeSelector");
    assert_eq!(
        selector
            .get("nvidia.com/gpu.product")
            .and_then(Value::as_str),
        Some("NVIDIA-H100-80GB-HBM3")
    );
    assert!(seq(pod, "tolerations")
        .iter()
        .any(|t| s(t, "key") == "nvidia.com/gpu"));
    let c = get(pod, "containers.0");
    assert_eq!(s(c, "image"), "registry.example/herd-worker:v2");
    for side in ["resources.requests", "resources.limits"] {
        let gpus = get(c, side).get("nvidia.com/gpu").and_then(Value::as_u64);
        assert_eq!(gpus, Some(2), "{side}");
    }
    let args: Vec<&str> = seq(c, "args").iter().map(|a| a.as_str().unwrap()).collect();
    assert_eq!(
        args[..2],
        ["--coordinator", "http://herd-coord.sweeps:50051"]
    );
    let secret_of = |container: &Value, var: &str| -> Option<(String, String)> {
        seq(container, "env")
            .iter()
            .find(|e| s(e, "name") == var)
            .map(|e| {
                (
                    s(e, "valueFrom.secretKeyRef.name").to_string(),
                    s(e, "valueFrom.secretKeyRef.key").to_string(),
                )
            })
    };
    let token = |name: &str| Some((name.to_string(), "token".to_string()));
    // workers: the worker token only; the coordinator: both
    assert_eq!(secret_of(c, "HERD_TOKEN"), token("herd-token"));
    assert_eq!(secret_of(c, "HERD_OPERATOR_TOKEN"), None);
    let coord = get(sts, "spec.template.spec.containers.0");
    assert_eq!(secret_of(coord, "HERD_TOKEN"), token("herd-token"));
    assert_eq!(
        secret_of(coord, "HERD_OPERATOR_TOKEN"),
        token("herd-operator-token")
    );

    // plaintext gRPC in the cluster: the NetworkPolicy admits only the worker pods to it
    let coord_args = strings(coord, "args");
    assert!(coord_args.contains(&"--allow-plaintext"), "{coord_args:?}");
    let policy = kind(&docs, "NetworkPolicy");
    assert_eq!(s(policy, "metadata.name"), "herd-coord");
    assert_eq!(strings(policy, "spec.policyTypes"), ["Ingress"]);
    // it selects the coordinator pods and only them
    let labels = |v: &Value, path: &str| get(v, path).clone();
    assert_eq!(
        labels(policy, "spec.podSelector.matchLabels"),
        labels(sts, "spec.template.metadata.labels")
    );
    assert_ne!(
        labels(policy, "spec.podSelector.matchLabels"),
        labels(job, "spec.template.metadata.labels")
    );
    let grpc_port = get(coord, "ports")
        .as_sequence()
        .unwrap()
        .iter()
        .find(|p| s(p, "name") == "grpc")
        .and_then(|p| p.get("containerPort"))
        .and_then(Value::as_u64)
        .unwrap();
    let rules = seq(policy, "spec.ingress");
    let admitting = |port: u64| -> Vec<&Value> {
        rules
            .iter()
            .filter(|r| {
                seq(r, "ports")
                    .iter()
                    .any(|p| get(p, "port").as_u64() == Some(port))
            })
            .collect()
    };
    let grpc = admitting(grpc_port);
    assert_eq!(grpc.len(), 1, "one rule admits gRPC: {rules:?}");
    let from = seq(grpc[0], "from");
    assert_eq!(from.len(), 1, "{from:?}");
    // a pod selector without a namespace selector: the worker pods of this namespace
    assert!(from[0].get("namespaceSelector").is_none(), "{from:?}");
    assert_eq!(
        labels(&from[0], "podSelector.matchLabels"),
        labels(job, "spec.template.metadata.labels")
    );
    assert_eq!(get(grpc[0], "ports.0.protocol").as_str(), Some("TCP"));
    // the other rule opens the metrics port only
    for rule in rules {
        let ports: Vec<u64> = seq(rule, "ports")
            .iter()
            .map(|p| get(p, "port").as_u64().unwrap())
            .collect();
        assert!(ports == [grpc_port] || ports == [9464], "{rule:?}");
    }
    assert!(seq(c, "env")
        .iter()
        .any(|e| s(e, "name") == "RUST_LOG" && s(e, "value") == "debug"));
    let gcs = seq(pod, "volumes")
        .iter()
        .find(|v| s(v, "name") == "gcs")
        .unwrap();
    assert_eq!(s(gcs, "secret.secretName"), "herd-gcs");
}

/// deploy/k8s/ is exactly `coord deploy k8s -o deploy/k8s` with default flags.
#[test]
fn committed_k8s_manifests_are_the_default_rendering() {
    let dir = manifest_dir().join("../deploy/k8s");
    let files = deploy::k8s::render(&deploy::k8s::K8sArgs::default()).unwrap();
    let docs = check_k8s_documents(&files, "herd");
    assert_metrics_ports_served(&docs);
    let job = kind(&docs, "Job");
    assert_eq!(
        s(job, "spec.template.spec.containers.0.args.1"),
        "http://herd-coord.herd:50051"
    );
    for (name, text) in &files {
        check_golden(&dir.join(name), text);
    }
    let mut on_disk: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n.ends_with(".yaml"))
        .collect();
    on_disk.sort();
    let mut rendered: Vec<String> = files.iter().map(|(n, _)| n.clone()).collect();
    rendered.sort();
    assert_eq!(
        on_disk, rendered,
        "deploy/k8s holds exactly the rendered files"
    );
}

fn coord(args: &[&str]) -> std::process::Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_coord"))
        .arg("deploy")
        .args(args)
        .output()
        .unwrap()
}

#[test]
fn bad_flags_give_clear_errors() {
    let err = |argv: &[&str]| beaker(argv).unwrap_err().to_string();
    let base = ["--coordinator-host", "h1", "--coordinator-image", "c/img"];
    fn with<'a>(base: &[&'a str], extra: &[&'a str]) -> Vec<&'a str> {
        [base, extra].concat()
    }
    assert!(err(&with(&base, &["--workers", "0", "--image", "a/b"]))
        .contains("--workers must be at least 1"));
    assert!(err(&with(&base, &["--workers", "1", "--image", ""])).contains("--image is empty"));
    assert!(err(&with(
        &base,
        &["--workers", "1", "--image", "a/b", "--priority", "asap"]
    ))
    .contains("not a Beaker priority"));
    assert!(err(&["--workers", "1", "--image", "a/b"]).contains("--coordinator-host"));
    assert!(err(&[
        "--workers",
        "1",
        "--image",
        "a/b",
        "--coordinator-host",
        "h"
    ])
    .contains("--coordinator-image is required"));
    assert!(err(&with(
        &base,
        &["--workers", "1", "--image", "a/b", "--env", "1X=y"]
    ))
    .contains("environment variable name"));

    let k8s_err = |argv: &[&str]| {
        deploy::k8s::render(&k8s_args(argv))
            .unwrap_err()
            .to_string()
    };
    assert!(k8s_err(&["--workers", "0"]).contains("--workers must be at least 1"));
    assert!(k8s_err(&["--image", " "]).contains("--image is empty"));
    assert!(k8s_err(&["--coordinator-image", ""]).contains("--coordinator-image is empty"));
    assert!(k8s_err(&["--namespace", "Herd_1"]).contains("DNS-1123"));
    assert!(k8s_err(&["--gpu-node-selector", "novalue"]).contains("KEY=VALUE"));
    assert!(k8s_err(&["--secret-operator-token", "herd-token"]).contains("different secrets"));
    assert!(err(&with(
        &base,
        &[
            "--workers",
            "1",
            "--image",
            "a/b",
            "--secret-operator-token",
            "herd-token"
        ]
    ))
    .contains("different secrets"));
    assert!(err(&[
        "--workers",
        "1",
        "--image",
        "a/b",
        "--coordinator-address",
        "http://h:1",
        "--secret-tls-ca",
        "ca"
    ])
    .contains("needs an https://"));

    // through the binary: exit status 1 and the message on stderr, nothing on stdout
    let out = coord(&["k8s", "--workers", "0"]);
    assert!(!out.status.success());
    assert!(out.stdout.is_empty());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("--workers must be at least 1"), "{stderr}");
}

#[test]
fn binary_writes_files_and_stdout() {
    let dir = tempfile::tempdir().unwrap();
    let out = coord(&["k8s", "--workers", "3", "-o", dir.path().to_str().unwrap()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let job = std::fs::read_to_string(dir.path().join("worker-job.yaml")).unwrap();
    let doc = &parse_documents(&job).unwrap()[0];
    assert_eq!(get(doc, "spec.parallelism").as_u64(), Some(3));
    assert!(dir.path().join("kustomization.yaml").exists());

    let out = coord(&["k8s"]);
    assert!(out.status.success());
    assert_eq!(
        parse_documents(&String::from_utf8(out.stdout).unwrap())
            .unwrap()
            .len(),
        5
    );
    assert!(dir.path().join("networkpolicy.yaml").exists());

    let spec = dir.path().join("beaker.yaml");
    let out = coord(&[
        "beaker",
        "--workers",
        "2",
        "--image",
        "me/worker",
        "--coordinator-address",
        "http://coord.example:50051",
        "-o",
        spec.to_str().unwrap(),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let doc = &parse_documents(&std::fs::read_to_string(&spec).unwrap()).unwrap()[0];
    assert_eq!(s(doc, "version"), "v2");
}

#[test]
fn yaml_scalars_read_back_as_themselves() {
    for v in [
        "plain",
        "false",
        "no",
        "1",
        "0.5",
        "null",
        "~",
        "",
        "a: b",
        "#c",
        " x",
        "http://h:1",
        "it's \"quoted\"",
        "-x",
        "*alias",
        "!tag",
        "multi\nline",
        "[x]",
    ] {
        let doc = format!(
            "k: {}\nl: [{}]\n",
            deploy::yaml_scalar(v),
            deploy::yaml_scalar(v)
        );
        let back = &parse_documents(&doc).unwrap()[0];
        assert_eq!(s(back, "k"), v, "{doc}");
        assert_eq!(s(back, "l.0"), v, "{doc}");
    }
    assert_eq!(deploy::yaml_scalar("ghcr.io/herd/x"), "ghcr.io/herd/x");
}
