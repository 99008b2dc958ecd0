//! `coord serve` flags, turned into a [`ServerConfig`]. Every default is the config's default.

use std::net::SocketAddr;
use std::path::PathBuf;

use crate::config::{Limits, ServerConfig, DEFAULT_LISTEN, DEFAULT_OUT_DIR, DEFAULT_STATE};
use crate::scheduler::Policy;
use crate::security::SecurityConfig;

/// `coord serve` flags.
#[derive(clap::Args, Clone, Debug)]
pub struct ServeArgs {
    /// the SQLite state file (created when missing; a restarted coordinator resumes from it)
    #[arg(long, default_value = DEFAULT_STATE)]
    pub state: PathBuf,
    /// address to listen on
    #[arg(long, default_value = DEFAULT_LISTEN)]
    pub listen: SocketAddr,
    /// reports are written to <out-dir>/<sweep name>/ when a sweep completes
    #[arg(long, default_value = DEFAULT_OUT_DIR)]
    pub out_dir: PathBuf,
    /// a lease not refreshed by a heartbeat for this long expires
    #[arg(long, default_value_t = Policy::default().lease_timeout_ms)]
    pub lease_timeout_ms: u64,
    /// how often workers are told to heartbeat
    #[arg(long, default_value_t = Policy::default().heartbeat_interval_ms)]
    pub heartbeat_interval_ms: u64,
    /// attempts per task before it fails
    #[arg(long, default_value_t = Policy::default().max_attempts)]
    pub max_attempts: u32,
    /// wait before a failed task is leased again, doubled per attempt
    #[arg(long, default_value_t = Policy::default().retry_backoff_ms)]
    pub retry_backoff_ms: u64,
    /// answer Lease with shutdown and exit once every sweep is finished
    #[arg(long)]
    pub exit_when_done: bool,
    /// give idle workers duplicate leases of the oldest running tasks when nothing else is left
    #[arg(long, default_value_t = Policy::default().stragglers, action = clap::ArgAction::Set)]
    pub stragglers: bool,
    /// live leases per task at most (the original plus straggler duplicates)
    #[arg(long, default_value_t = Policy::default().max_leases_per_task)]
    pub max_leases_per_task: u32,
    /// GiB of a worker's device memory kept free beside a model's parameters (activations, CUDA
    /// context): a checkpoint is leased only to workers whose memory less this holds it
    #[arg(long, value_name = "GIB", default_value_t = (Policy::default().memory_headroom_bytes >> 30) as f64)]
    pub memory_headroom_gib: f64,
    /// serve Prometheus metrics at http://ADDR/metrics (e.g. 0.0.0.0:9464; default: off)
    #[arg(long, value_name = "ADDR", env = "HERD_METRICS_LISTEN")]
    pub metrics_listen: Option<SocketAddr>,
    /// token, TLS and plaintext flags
    #[command(flatten)]
    pub security: SecurityArgs,
    /// message sizes, rewards per message, lease rate, concurrent calls
    #[command(flatten)]
    pub limits: LimitArgs,
}

impl ServeArgs {
    pub fn into_config(self) -> ServerConfig {
        ServerConfig {
            state: self.state,
            listen: self.listen,
            out_dir: self.out_dir,
            policy: Policy {
                lease_timeout_ms: self.lease_timeout_ms,
                heartbeat_interval_ms: self.heartbeat_interval_ms,
                max_attempts: self.max_attempts.max(1),
                retry_backoff_ms: self.retry_backoff_ms,
                stragglers: self.stragglers,
                max_leases_per_task: self.max_leases_per_task.max(1),
                // a negative or NaN headroom is none
                memory_headroom_bytes: (self.memory_headroom_gib.max(0.0) * f64::from(1u32 << 30))
                    as u64,
            },
            exit_when_done: self.exit_when_done,
            metrics_listen: self.metrics_listen,
            security: self.security.into_config(),
            limits: self.limits.into_config(),
        }
    }
}

/// `coord serve` security flags.
#[derive(clap::Args, Clone, Debug)]
#[command(next_help_heading = "Security")]
pub struct SecurityArgs {
    /// file whose first line is the worker token: what workers present, good for the Workers
    /// service only (default: $HERD_TOKEN)
    #[arg(long, value_name = "PATH")]
    pub token_file: Option<PathBuf>,
    /// file whose first line is the operator token: what `coord submit/status/results/cancel`
    /// present, good for the Sweeps service only (default: $HERD_OPERATOR_TOKEN)
    #[arg(long, value_name = "PATH")]
    pub operator_token_file: Option<PathBuf>,
    /// serve without tokens: any client that can reach the port may lease, submit and cancel
    #[arg(long)]
    pub insecure_no_auth: bool,
    /// the server certificate chain (PEM): serve TLS
    #[arg(long, value_name = "PEM", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// the server certificate's private key (PEM)
    #[arg(long, value_name = "PEM", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// CA (PEM) that signs client certificates: clients must present one (mTLS)
    #[arg(long, value_name = "PEM", requires = "tls_cert")]
    pub tls_client_ca: Option<PathBuf>,
    /// allow plaintext (no TLS) on a non-loopback listen address
    #[arg(long)]
    pub allow_plaintext: bool,
}

impl SecurityArgs {
    fn into_config(self) -> SecurityConfig {
        SecurityConfig {
            token_file: self.token_file,
            operator_token_file: self.operator_token_file,
            tokens: None,
            insecure_no_auth: self.insecure_no_auth,
            tls_cert: self.tls_cert,
            tls_key: self.tls_key,
            tls_client_ca: self.tls_client_ca,
            allow_plaintext: self.allow_plaintext,
        }
    }
}

/// `coord serve` limits.
#[derive(clap::Args, Clone, Debug)]
#[command(next_help_heading = "Limits")]
pub struct LimitArgs {
    /// largest request the server decodes (a ResultBatch, a Submit)
    #[arg(long, default_value_t = Limits::default().max_message_bytes)]
    pub max_message_bytes: usize,
    /// most rewards in one ResultBatch message (more: INVALID_ARGUMENT)
    #[arg(long, default_value_t = Limits::default().max_results_per_message)]
    pub max_results_per_message: usize,
    /// Lease calls per second each worker may make on average (0: unlimited); above it the
    /// answer is RESOURCE_EXHAUSTED and the worker backs off
    #[arg(long, default_value_t = Limits::default().lease_rate)]
    pub lease_rate: f64,
    /// Lease calls a worker may make at once before the rate applies
    #[arg(long, default_value_t = Limits::default().lease_burst)]
    pub lease_burst: u32,
    /// concurrent calls per client connection (further calls wait)
    #[arg(long, default_value_t = Limits::default().max_concurrent_rpcs_per_connection)]
    pub max_concurrent_rpcs_per_connection: usize,
}

impl LimitArgs {
    fn into_config(self) -> Limits {
        Limits {
            max_message_bytes: self.max_message_bytes,
            max_results_per_message: self.max_results_per_message,
            lease_rate: self.lease_rate,
            lease_burst: self.lease_burst,
            max_concurrent_rpcs_per_connection: self.max_concurrent_rpcs_per_connection,
        }
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Parser)]
    struct Serve {
        #[command(flatten)]
        serve: ServeArgs,
    }

    #[test]
    fn the_flags_defaults_are_the_configs_defaults() {
        let parsed = Serve::try_parse_from(["coord"])
            .unwrap()
            .serve
            .into_config();
        let default = ServerConfig::default();
        assert_eq!(parsed.state, default.state);
        assert_eq!(parsed.listen, default.listen);
        assert_eq!(parsed.out_dir, default.out_dir);
        assert_eq!(parsed.policy, default.policy);
        assert_eq!(parsed.exit_when_done, default.exit_when_done);
        assert_eq!(parsed.limits, default.limits);
        // the security defaults: no files, no tokens, auth and TLS checks on
        let s = parsed.security;
        assert!(s.token_file.is_none() && s.operator_token_file.is_none() && s.tokens.is_none());
        assert!(!s.insecure_no_auth && !s.allow_plaintext);
        assert!(s.tls_cert.is_none() && s.tls_key.is_none() && s.tls_client_ca.is_none());
    }

    #[test]
    fn attempts_and_leases_per_task_are_at_least_one() {
        let parsed = Serve::try_parse_from([
            "coord",
            "--max-attempts",
            "0",
            "--max-leases-per-task",
            "0",
            "--stragglers",
            "false",
        ])
        .unwrap()
        .serve
        .into_config();
        assert_eq!(parsed.policy.max_attempts, 1);
        assert_eq!(parsed.policy.max_leases_per_task, 1);
        assert!(!parsed.policy.stragglers);
    }
}
