//! The coordinator server's configuration as plain values: what `coord serve` flags set
//! (`cli::serve`), what `coord run` and tests build directly. Defaults are the flags' defaults.

use std::net::SocketAddr;
use std::path::PathBuf;

use crate::scheduler::Policy;
use crate::security::SecurityConfig;

/// The state file when none is given.
pub const DEFAULT_STATE: &str = "herd-state.db";
/// The listen address when none is given.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:50051";
/// The reports folder when none is given.
pub const DEFAULT_OUT_DIR: &str = "herd-out";

/// One coordinator server.
#[derive(Clone, Debug)]
pub struct ServerConfig {
    /// the SQLite state file (created when missing; a restarted coordinator resumes from it)
    pub state: PathBuf,
    /// address to listen on (port 0: a free port)
    pub listen: SocketAddr,
    /// reports are written to `<out_dir>/<sweep name>/` when a sweep completes
    pub out_dir: PathBuf,
    /// lease timeout, heartbeats, retries, stragglers
    pub policy: Policy,
    /// answer Lease with shutdown and exit once every sweep is finished
    pub exit_when_done: bool,
    /// serve Prometheus metrics at `http://ADDR/metrics` (None: off)
    pub metrics_listen: Option<SocketAddr>,
    pub security: SecurityConfig,
    pub limits: Limits,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            state: DEFAULT_STATE.into(),
            listen: DEFAULT_LISTEN
                .parse()
                .expect("the default listen address parses"),
            out_dir: DEFAULT_OUT_DIR.into(),
            policy: Policy::default(),
            exit_when_done: false,
            metrics_listen: None,
            security: SecurityConfig::default(),
            limits: Limits::default(),
        }
    }
}

/// What one caller may send and how fast.
#[derive(Clone, Debug, PartialEq)]
pub struct Limits {
    /// largest request the server decodes (a ResultBatch, a Submit)
    pub max_message_bytes: usize,
    /// most rewards in one ResultBatch message (more: INVALID_ARGUMENT)
    pub max_results_per_message: usize,
    /// Lease calls per second each worker may make on average (0: unlimited); above it the
    /// answer is RESOURCE_EXHAUSTED and the worker backs off
    pub lease_rate: f64,
    /// Lease calls a worker may make at once before the rate applies
    pub lease_burst: u32,
    /// concurrent calls per client connection (further calls wait)
    pub max_concurrent_rpcs_per_connection: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_message_bytes: 64 << 20,
            max_results_per_message: 4096,
            lease_rate: 20.0,
            lease_burst: 40,
            max_concurrent_rpcs_per_connection: 1024,
        }
    }
}
