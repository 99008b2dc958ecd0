//! `coord deploy beaker`: one Beaker experiment (spec version v2, like the reference pipeline's
//! templates in hybrid-preferences §1): a coordinator task (`coord serve`, state and reports in
//! the result path /output) pinned to one host with host networking, and a worker task with
//! `replicas: N`, `resources.gpuCount`, secrets as envVars, cluster constraints and
//! priority/preemptible context. With `--coordinator-address` the workers dial a coordinator
//! that runs elsewhere and the experiment has the worker task only.
//!
//! Beaker has no network policy, and host networking puts the coordinator's port on the
//! cluster network: the coordinator task serves TLS from certificate and key mounted from Beaker
//! secrets, and the workers check it against a CA mounted the same way. Each task gets only its
//! own token: the workers the worker token, the coordinator both.

use super::{check_common, check_env_name, parse_key_value, render_template};
use anyhow::{bail, Result};
use minijinja::context;
use std::path::PathBuf;

const TEMPLATE: &str = include_str!("templates/beaker.yaml.j2");

/// Beaker job priorities.
pub const PRIORITIES: [&str; 4] = ["low", "normal", "high", "urgent"];

/// `coord deploy beaker` flags.
#[derive(clap::Args, Debug, Clone)]
pub struct BeakerArgs {
    /// GPU workers (replicas of the worker task)
    #[arg(long)]
    pub workers: u32,
    /// worker image: a Beaker image (`user/name` or `beaker:user/name`) or a Docker one
    /// (`ghcr.io/org/name:tag` or `docker:name`)
    #[arg(long)]
    pub image: String,
    /// coordinator image (same forms as --image)
    #[arg(long)]
    pub coordinator_image: Option<String>,
    /// the host the coordinator task is pinned to (constraints.hostname); workers dial
    /// https://HOST:50051 over host networking
    #[arg(long, value_name = "HOST")]
    pub coordinator_host: Option<String>,
    /// a coordinator running elsewhere (http[s]://host:port): no coordinator task is rendered
    #[arg(long, value_name = "URL", conflicts_with_all = ["coordinator_host", "coordinator_image"])]
    pub coordinator_address: Option<String>,
    /// Beaker cluster(s) the tasks may run on (repeatable)
    #[arg(long = "cluster", value_name = "CLUSTER", default_values_t = ["ai2/jupiter-cirrascale-2".to_string()])]
    pub clusters: Vec<String>,
    /// job priority: low, normal, high or urgent
    #[arg(long, default_value = "normal")]
    pub priority: String,
    /// workers may be preempted (they drain on SIGTERM; the coordinator never is)
    #[arg(long)]
    pub preemptible: bool,
    /// Beaker budget charged
    #[arg(long, default_value = "ai2/oe-adapt")]
    pub budget: String,
    /// workspace, named in the `beaker experiment create` line of the header
    #[arg(long)]
    pub workspace: Option<String>,
    /// GPUs per worker replica
    #[arg(long, default_value_t = 1)]
    pub gpus_per_worker: u32,
    /// Beaker secret holding the GCS service-account JSON
    #[arg(long, default_value = "herd-gcs")]
    pub secret_gcs: String,
    /// Beaker secret holding the worker token (HERD_TOKEN: workers and coordinator)
    #[arg(long, default_value = "herd-token")]
    pub secret_token: String,
    /// Beaker secret holding the operator token (HERD_OPERATOR_TOKEN: the coordinator task only;
    /// `coord submit/status/results/cancel` need it too)
    #[arg(long, default_value = "herd-operator-token")]
    pub secret_operator_token: String,
    /// Beaker secret holding the coordinator's TLS certificate (PEM, for the --coordinator-host
    /// name), mounted into the coordinator task
    #[arg(long, default_value = "herd-tls-cert")]
    pub secret_tls_cert: String,
    /// Beaker secret holding that certificate's private key (PEM)
    #[arg(long, default_value = "herd-tls-key")]
    pub secret_tls_key: String,
    /// Beaker secret holding the CA (PEM) that signed the coordinator's certificate, mounted into
    /// the workers (default with --coordinator-host: herd-tls-ca; with an https://
    /// --coordinator-address: none, the system roots)
    #[arg(long)]
    pub secret_tls_ca: Option<String>,
    /// OTEL_EXPORTER_OTLP_ENDPOINT for every task (not set when absent)
    #[arg(long, value_name = "URL")]
    pub otel_endpoint: Option<String>,
    /// extra environment for every task (repeatable)
    #[arg(long = "env", value_name = "KEY=VALUE", value_parser = parse_key_value)]
    pub env: Vec<(String, String)>,
    /// experiment description
    #[arg(
        long,
        default_value = "herd: reward-model sweep scoring (coordinator + GPU workers)"
    )]
    pub description: String,
    /// write the spec here (default: stdout)
    #[arg(short, long, value_name = "FILE")]
    pub output: Option<PathBuf>,
}

/// `beaker:` / `docker:` prefixes win; else a first path segment that looks like a registry
/// host (has a `.` or `:`, or is `localhost`) means Docker, anything else a Beaker image.
pub fn image_source(image: &str) -> (&'static str, String) {
    if let Some(rest) = image.strip_prefix("beaker:") {
        return ("beaker", rest.to_string());
    }
    if let Some(rest) = image.strip_prefix("docker:") {
        return ("docker", rest.to_string());
    }
    let first = image.split('/').next().unwrap_or("");
    let registry =
        image.contains('/') && (first.contains('.') || first.contains(':') || first == "localhost");
    if registry || !image.contains('/') {
        // `ubuntu:24.04`-style names without a user are Docker Hub images too
        ("docker", image.to_string())
    } else {
        ("beaker", image.to_string())
    }
}

/// Render the experiment spec.
pub fn render(args: &BeakerArgs) -> Result<String> {
    let mut images = vec![("--image", args.image.as_str())];
    if let Some(img) = &args.coordinator_image {
        images.push(("--coordinator-image", img));
    }
    check_common(args.workers, &images)?;
    if args.gpus_per_worker == 0 {
        bail!("--gpus-per-worker must be at least 1: a worker scores on a GPU");
    }
    if !PRIORITIES.contains(&args.priority.as_str()) {
        bail!(
            "--priority {:?} is not a Beaker priority (one of {})",
            args.priority,
            PRIORITIES.join(", ")
        );
    }
    if args.clusters.is_empty() || args.clusters.iter().any(|c| c.trim().is_empty()) {
        bail!("--cluster needs a cluster name, e.g. --cluster ai2/jupiter-cirrascale-2");
    }
    let mut secrets = vec![
        ("--budget", &args.budget),
        ("--secret-gcs", &args.secret_gcs),
        ("--secret-token", &args.secret_token),
        ("--secret-operator-token", &args.secret_operator_token),
        ("--secret-tls-cert", &args.secret_tls_cert),
        ("--secret-tls-key", &args.secret_tls_key),
    ];
    if let Some(ca) = &args.secret_tls_ca {
        secrets.push(("--secret-tls-ca", ca));
    }
    for (flag, v) in secrets {
        if v.trim().is_empty() {
            bail!("{flag} is empty");
        }
    }
    if args.secret_token == args.secret_operator_token {
        bail!(
            "--secret-token and --secret-operator-token are both {:?}: the worker and operator \
             tokens must be different secrets",
            args.secret_token
        );
    }
    let (coordinator_task, coordinator_url, coordinator_host, coordinator_image) =
        match (&args.coordinator_address, &args.coordinator_host) {
            (Some(url), _) => {
                if !(url.starts_with("http://") || url.starts_with("https://")) {
                    bail!("--coordinator-address {url:?} must be an http:// or https:// URL");
                }
                if url.starts_with("http://") && args.secret_tls_ca.is_some() {
                    bail!("--secret-tls-ca needs an https:// --coordinator-address, not {url:?}");
                }
                (false, url.clone(), String::new(), None)
            }
            (None, Some(host)) => {
                if host.trim().is_empty() || host.contains(['/', ':', ' ']) {
                    bail!("--coordinator-host {host:?} must be a bare host name");
                }
                let Some(img) = &args.coordinator_image else {
                    bail!(
                        "--coordinator-image is required with --coordinator-host (the \
                         coordinator task runs it)"
                    );
                };
                let (kind, name) = image_source(img);
                (
                    true,
                    format!("https://{host}:50051"),
                    host.clone(),
                    Some(context! { kind, name }),
                )
            }
            (None, None) => bail!(
                "the workers need to reach a coordinator: give --coordinator-host HOST (a \
                 coordinator task pinned to that host, with --coordinator-image) or \
                 --coordinator-address URL (one running elsewhere)"
            ),
        };
    let mut env = Vec::new();
    for (name, value) in &args.env {
        check_env_name(name)?;
        env.push(context! { name, value });
    }
    let (kind, name) = image_source(&args.image);
    // the coordinator rendered here serves a certificate signed by this CA
    let secret_tls_ca = match (&args.secret_tls_ca, coordinator_task) {
        (Some(ca), _) => Some(ca.clone()),
        (None, true) => Some("herd-tls-ca".to_string()),
        (None, false) => None,
    };
    let plaintext = coordinator_url.starts_with("http://");
    let ctx = context! {
        workers => args.workers,
        image => context! { kind, name },
        coordinator_task,
        coordinator_image,
        coordinator_host,
        coordinator_url,
        clusters => &args.clusters,
        priority => &args.priority,
        preemptible => args.preemptible,
        budget => &args.budget,
        workspace => &args.workspace,
        gpus_per_worker => args.gpus_per_worker,
        secret_gcs => &args.secret_gcs,
        secret_token => &args.secret_token,
        secret_operator_token => &args.secret_operator_token,
        secret_tls_cert => &args.secret_tls_cert,
        secret_tls_key => &args.secret_tls_key,
        secret_tls_ca,
        plaintext,
        otel_endpoint => &args.otel_endpoint,
        env,
        description => &args.description,
    };
    render_template("beaker.yaml", TEMPLATE, &ctx)
}
