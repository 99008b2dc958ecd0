//! The processes of a sweep: `coord serve`, `worker --coordinator`, and the client commands,
//! each with its output in a log file that a failing test prints.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use herd_rpc::security::{AuthChannel, ClientSecurity, OPERATOR_TOKEN_ENV, TOKEN_ENV};
use herd_rpc::v1::sweeps_client::SweepsClient;
use herd_rpc::v1::{ResultsRequest, ResultsResponse, StatusRequest, StatusResponse, SweepStatus};

use crate::bins::binary;
pub use herd_testkit::process::{coord_serve, free_port, Proc};

/// Settings for a test coordinator: short leases so dead workers are noticed in seconds.
#[derive(Clone, Debug)]
pub struct CoordSettings {
    pub lease_timeout_ms: u64,
    pub heartbeat_interval_ms: u64,
    pub max_attempts: u32,
    pub retry_backoff_ms: u64,
}

impl Default for CoordSettings {
    fn default() -> Self {
        CoordSettings {
            lease_timeout_ms: 3000,
            heartbeat_interval_ms: 300,
            max_attempts: 3,
            retry_backoff_ms: 200,
        }
    }
}

/// A bearer token of `role` ("worker", "operator") for one test's processes.
pub fn test_token(role: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    format!("herd-test-{role}-{}-{nanos:x}", std::process::id())
}

/// `coord serve` on a fixed port with its state file, restartable.
pub struct Coordinator {
    pub port: u16,
    pub state: PathBuf,
    pub out_dir: PathBuf,
    pub log_dir: PathBuf,
    pub env: Vec<(String, String)>,
    pub settings: CoordSettings,
    pub proc: Option<Proc>,
}

impl Coordinator {
    pub fn start(
        dir: &Path,
        mut env: Vec<(String, String)>,
        settings: CoordSettings,
    ) -> Coordinator {
        // coord serve and the client commands get both tokens ($HERD_TOKEN, $HERD_OPERATOR_TOKEN),
        // workers the worker token only (`worker_env`)
        for (var, role) in [(TOKEN_ENV, "worker"), (OPERATOR_TOKEN_ENV, "operator")] {
            if !env.iter().any(|(k, _)| k == var) {
                env.push((var.to_string(), test_token(role)));
            }
        }
        let mut coord = Coordinator {
            port: free_port(),
            state: dir.join("state.db"),
            out_dir: dir.join("out"),
            log_dir: dir.join("logs"),
            env,
            settings,
            proc: None,
        };
        coord.restart();
        coord
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Starts (again) on the same port and state file.
    pub fn restart(&mut self) {
        let s = &self.settings;
        let mut command = coord_serve(
            &binary("coord"),
            &self.state,
            self.port,
            &self.out_dir,
            s.lease_timeout_ms,
            s.heartbeat_interval_ms,
        );
        command
            .arg("--max-attempts")
            .arg(s.max_attempts.to_string())
            .arg("--retry-backoff-ms")
            .arg(s.retry_backoff_ms.to_string())
            .envs(self.env.iter().map(|(k, v)| (k, v)));
        self.proc = Some(Proc::spawn("coord", command, &self.log_dir));
    }

    pub fn kill9(&mut self) {
        if let Some(proc) = self.proc.as_mut() {
            proc.kill9();
        }
    }

    /// Runs a client subcommand (`coord submit ...`) against this coordinator.
    pub fn client(&self, args: &[&str]) -> std::process::Output {
        let mut command = Command::new(binary("coord"));
        command
            .args(args)
            .arg("--coordinator")
            .arg(self.url())
            .envs(self.env.iter().map(|(k, v)| (k, v)));
        command.output().expect("running coord")
    }

    /// A `Sweeps` client that sends this coordinator's operator token.
    pub async fn sweeps_client(&self) -> anyhow::Result<SweepsClient<AuthChannel>> {
        let channel = tonic::transport::Endpoint::from_shared(self.url())?
            .connect()
            .await?;
        Ok(SweepsClient::new(
            ClientSecurity::token(self.operator_token()).intercept(channel),
        ))
    }

    /// The operator token of this coordinator's client commands.
    pub fn operator_token(&self) -> Option<&str> {
        self.env
            .iter()
            .find(|(k, _)| k == OPERATOR_TOKEN_ENV)
            .map(|(_, v)| v.as_str())
    }

    /// The environment of this coordinator's workers: everything but the operator token.
    pub fn worker_env(&self) -> Vec<(String, String)> {
        self.env
            .iter()
            .filter(|(k, _)| k != OPERATOR_TOKEN_ENV)
            .cloned()
            .collect()
    }

    pub async fn status(&self) -> anyhow::Result<StatusResponse> {
        let mut client = self.sweeps_client().await?;
        Ok(client
            .status(StatusRequest {
                sweep: String::new(),
            })
            .await?
            .into_inner())
    }

    pub async fn sweep_status(&self, sweep: &str) -> anyhow::Result<SweepStatus> {
        let status = self.status().await?;
        status
            .sweeps
            .into_iter()
            .find(|s| s.name == sweep)
            .ok_or_else(|| anyhow::anyhow!("no sweep {sweep} in status"))
    }

    pub async fn results(&self, sweep: &str) -> anyhow::Result<ResultsResponse> {
        let mut client = self.sweeps_client().await?;
        Ok(client
            .results(ResultsRequest {
                sweep: sweep.to_string(),
            })
            .await?
            .into_inner())
    }

    /// Polls until the sweep leaves the active state (or the coordinator is unreachable for
    /// longer than the timeout); `on_poll` sees every status, e.g. to kill processes mid-sweep.
    pub async fn wait_finished(
        &self,
        sweep: &str,
        timeout: Duration,
        mut on_poll: impl FnMut(&SweepStatus),
    ) -> anyhow::Result<SweepStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Ok(status) = self.sweep_status(sweep).await {
                on_poll(&status);
                if status.state() != herd_rpc::v1::SweepState::Active {
                    return Ok(status);
                }
            }
            anyhow::ensure!(
                Instant::now() < deadline,
                "sweep {sweep} did not finish within {timeout:?}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

/// `worker --coordinator URL` on CPU with its own cache folder.
pub fn spawn_worker(
    name: &str,
    coordinator: &str,
    cache: &Path,
    log_dir: &Path,
    env: &[(String, String)],
) -> Proc {
    let mut command = Command::new(binary("worker"));
    command
        .arg("--coordinator")
        .arg(coordinator)
        .arg("--name")
        .arg(name)
        .arg("--cache-dir")
        .arg(cache)
        .args(["--device", "cpu", "--threads", "1", "--stream-batch", "8"])
        .envs(env.iter().map(|(k, v)| (k, v)));
    Proc::spawn(name, command, log_dir)
}
