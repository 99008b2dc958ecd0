//! `coord deploy k8s`: the manifests of deploy/k8s (namespace, coordinator Service +
//! StatefulSet with its state PVC, the NetworkPolicy in front of it, an Indexed Job of GPU
//! workers, kustomization) with the worker count, images, namespace and coordinator address
//! filled in. deploy/k8s/ is this renderer's output with its defaults (a test keeps them equal).
//!
//! gRPC stays plaintext inside the cluster; the NetworkPolicy admits only the worker pods to the
//! coordinator's gRPC port (what it does and does not protect: deploy/README.md). Workers get the
//! worker token only, the coordinator both tokens.

use super::{check_common, check_env_name, parse_key_value, render_template};
use anyhow::{bail, Result};
use minijinja::context;
use std::path::PathBuf;

/// The manifests in the order `kubectl apply` wants them (namespace first).
pub const FILES: [(&str, &str); 5] = [
    (
        "namespace.yaml",
        include_str!("templates/namespace.yaml.j2"),
    ),
    (
        "coordinator.yaml",
        include_str!("templates/coordinator.yaml.j2"),
    ),
    (
        "networkpolicy.yaml",
        include_str!("templates/networkpolicy.yaml.j2"),
    ),
    (
        "worker-job.yaml",
        include_str!("templates/worker-job.yaml.j2"),
    ),
    (
        "kustomization.yaml",
        include_str!("templates/kustomization.yaml.j2"),
    ),
];

/// `coord deploy k8s` flags.
#[derive(clap::Args, Debug, Clone)]
pub struct K8sArgs {
    /// GPU worker pods (the Job's parallelism and completions)
    #[arg(long, default_value_t = 4)]
    pub workers: u32,
    /// worker image (deploy/docker/worker.Dockerfile)
    #[arg(long, default_value = "ghcr.io/herd/herd-worker:latest")]
    pub image: String,
    /// coordinator image (deploy/docker/coord.Dockerfile)
    #[arg(long, default_value = "ghcr.io/herd/herd-coord:latest")]
    pub coordinator_image: String,
    /// namespace of every resource; workers dial http://herd-coord.<namespace>:50051
    #[arg(long, default_value = "herd")]
    pub namespace: String,
    /// node label the worker pods need (KEY=VALUE; `none` for no nodeSelector)
    #[arg(
        long,
        value_name = "KEY=VALUE",
        default_value = "cloud.google.com/gke-accelerator=nvidia-h100-80gb"
    )]
    pub gpu_node_selector: String,
    /// nvidia.com/gpu per worker pod
    #[arg(long, default_value_t = 1)]
    pub gpus_per_worker: u32,
    /// secret with the GCS service-account key (file key.json)
    #[arg(long, default_value = "herd-gcs")]
    pub secret_gcs: String,
    /// secret with the worker token (key token): HERD_TOKEN of workers and coordinator
    #[arg(long, default_value = "herd-token")]
    pub secret_token: String,
    /// secret with the operator token (key token): HERD_OPERATOR_TOKEN of the coordinator only
    #[arg(long, default_value = "herd-operator-token")]
    pub secret_operator_token: String,
    /// OTEL_EXPORTER_OTLP_ENDPOINT for both (empty: not set)
    #[arg(long, default_value = "http://otel-collector.observability:4317")]
    pub otel_endpoint: String,
    /// size of the coordinator's state volume
    #[arg(long, default_value = "20Gi")]
    pub state_size: String,
    /// extra environment for coordinator and workers (repeatable)
    #[arg(long = "env", value_name = "KEY=VALUE", value_parser = parse_key_value)]
    pub env: Vec<(String, String)>,
    /// write the five files into DIR (default: one multi-document stream on stdout, without
    /// the kustomization)
    #[arg(short, long, value_name = "DIR")]
    pub output: Option<PathBuf>,
}

impl Default for K8sArgs {
    fn default() -> Self {
        use clap::Parser;
        #[derive(clap::Parser)]
        struct Wrap {
            #[command(flatten)]
            args: K8sArgs,
        }
        Wrap::parse_from(["k8s"]).args
    }
}

/// A DNS-1123 label (namespaces, secret names).
fn check_label(flag: &str, s: &str) -> Result<()> {
    let ok = !s.is_empty()
        && s.len() <= 63
        && s.chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        && !s.starts_with('-')
        && !s.ends_with('-');
    if !ok {
        bail!("{flag} {s:?} is not a DNS-1123 label (lowercase letters, digits, '-', at most 63)");
    }
    Ok(())
}

/// The coordinator's in-cluster address for this namespace.
pub fn coordinator_url(namespace: &str) -> String {
    format!("http://herd-coord.{namespace}:50051")
}

/// Render every manifest: (file name, text), in [`FILES`] order.
pub fn render(args: &K8sArgs) -> Result<Vec<(String, String)>> {
    check_common(
        args.workers,
        &[
            ("--image", &args.image),
            ("--coordinator-image", &args.coordinator_image),
        ],
    )?;
    if args.gpus_per_worker == 0 {
        bail!("--gpus-per-worker must be at least 1: a worker scores on a GPU");
    }
    check_label("--namespace", &args.namespace)?;
    check_label("--secret-gcs", &args.secret_gcs)?;
    check_label("--secret-token", &args.secret_token)?;
    check_label("--secret-operator-token", &args.secret_operator_token)?;
    if args.secret_token == args.secret_operator_token {
        bail!(
            "--secret-token and --secret-operator-token are both {:?}: the worker and operator \
             tokens must be different secrets",
            args.secret_token
        );
    }
    let node_selector = match args.gpu_node_selector.as_str() {
        "" | "none" => None,
        s => {
            let (key, value) =
                parse_key_value(s).map_err(|e| anyhow::anyhow!("--gpu-node-selector: {e}"))?;
            Some(context! { key, value })
        }
    };
    let mut env = Vec::new();
    for (name, value) in &args.env {
        check_env_name(name)?;
        env.push(context! { name, value });
    }
    let ctx = context! {
        workers => args.workers,
        image => &args.image,
        coordinator_image => &args.coordinator_image,
        namespace => &args.namespace,
        coordinator_url => coordinator_url(&args.namespace),
        node_selector,
        gpus_per_worker => args.gpus_per_worker,
        secret_gcs => &args.secret_gcs,
        secret_token => &args.secret_token,
        secret_operator_token => &args.secret_operator_token,
        otel_endpoint => &args.otel_endpoint,
        state_size => &args.state_size,
        env,
    };
    FILES
        .iter()
        .map(|(name, source)| Ok((name.to_string(), render_template(name, source, &ctx)?)))
        .collect()
}

/// The manifests as one stream for `kubectl apply -f -` (every resource carries its
/// namespace, so the kustomization is left out).
pub fn stream(files: &[(String, String)]) -> String {
    let mut out = String::new();
    for (name, text) in files {
        if name == "kustomization.yaml" {
            continue;
        }
        if !out.is_empty() {
            out.push_str("---\n");
        }
        out.push_str(&format!("# --- {name}\n"));
        out.push_str(text);
    }
    out
}
