//! `worker --coordinator URL`: the worker's agent loop. It registers with the coordinator, leases
//! (checkpoint x shard) tasks, scores them with the same pipeline as `worker score`, streams the
//! per-example rewards back tagged with the lease epoch, and completes or fails each lease.
//!
//! * [`connect`]: the channel, backoff, which gRPC errors are retried.
//! * [`heartbeat`]: state shared with the heartbeat task (leases held, revocations, stats).
//! * [`sources`]: checkpoint and tokenizer locations made local (paths, GCS cache, hub).
//! * [`task`]: one lease end to end (resolve, load or reuse the model, score, stream, complete).
//! * [`drain`]: SIGTERM/SIGINT handling.
//!
//! Resilience: the coordinator being down (at start or mid-sweep) is retried with capped,
//! jittered backoff; NOT_FOUND (it lost its state) re-registers; FAILED_PRECONDITION on results
//! (stale lease) or PERMISSION_DENIED (a lease of an earlier registration) drops that work; a bad
//! task ends in Fail, never in a crash.
//!
//! Identity: the worker token (`--token-file` / `$HERD_TOKEN`) opens the coordinator's Workers
//! service; Register answers a worker id and a secret, and every later call carries both.

pub mod connect;
pub mod drain;
pub mod gpu;
pub mod heartbeat;
pub mod metrics;
pub mod sources;
pub mod task;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use herd_rpc::v1::lease_response::Outcome;
use herd_rpc::v1::{Capabilities, LeaseRequest, RegisterRequest};
use tch::{Device, Kind};
use tokio::sync::watch;
use tonic::Code;

use crate::scoring::BatchLimits;
use connect::{is_retryable, request, Backoff, Client};
use heartbeat::Shared;
use sources::Sources;

/// Unary calls (register, lease, complete, fail) give up after this and are retried.
const RPC_TIMEOUT: Duration = Duration::from_secs(60);

/// Everything `worker --coordinator` is configured with.
#[derive(Clone, Debug)]
pub struct AgentConfig {
    pub coordinator: String,
    pub name: String,
    pub cache_dir: PathBuf,
    pub cache_bytes: u64,
    pub device: Device,
    pub kind: Kind,
    pub limits: BatchLimits,
    pub share_prefix: bool,
    /// rewards per ResultBatch message
    pub stream_batch: usize,
    /// how long a SIGTERM waits for the current shard before giving it back
    pub drain_grace: Duration,
    /// serve Prometheus metrics here (`--metrics-listen`)
    pub metrics_listen: Option<std::net::SocketAddr>,
    /// bearer token and TLS files for the coordinator connection
    pub security: herd_rpc::security::ClientSecurity,
}

pub struct Agent {
    config: AgentConfig,
    client: Client,
    shared: Arc<Shared>,
    sources: Arc<Sources>,
    /// the model of the last lease, kept for the next shard of the same checkpoint
    loaded: Option<task::Loaded>,
    prefetches: HashMap<String, tokio::task::JoinHandle<()>>,
}

/// How the agent loop ended.
#[derive(Debug, PartialEq, Eq)]
pub enum Exit {
    /// the coordinator said every sweep is done
    Shutdown,
    /// SIGTERM/SIGINT, drained
    Drained,
}

/// Runs the agent until the coordinator says shutdown or a signal drains it.
pub async fn run(config: AgentConfig) -> anyhow::Result<Exit> {
    let client = connect::client_with(&config.coordinator, &config.security)?;
    let sources = Arc::new(Sources::new(config.cache_dir.clone(), config.cache_bytes).await?);
    let shared = Arc::new(Shared::default());
    let mut drain_rx = drain::install(shared.clone())?;
    if let Some(addr) = config.metrics_listen {
        metrics::serve(addr, config.device).await?;
    }
    gpu::spawn_sampler(config.device, shared.clone());
    tokio::spawn(heartbeat::run(
        client.clone(),
        shared.clone(),
        config.coordinator.clone(),
    ));
    let mut agent = Agent {
        config,
        client,
        shared,
        sources,
        loaded: None,
        prefetches: HashMap::new(),
    };
    let exit = agent.serve(&mut drain_rx).await;
    if exit == Exit::Drained {
        // one last beat so the coordinator sees the drain even if the worker held nothing
        heartbeat::beat(&mut agent.client, &agent.shared, &agent.config.coordinator).await;
        tracing::info!("drained; exiting");
    }
    Ok(exit)
}

fn host_memory_bytes() -> u64 {
    std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|text| {
            text.lines()
                .find_map(|line| line.strip_prefix("MemTotal:"))
                .and_then(|rest| {
                    rest.trim()
                        .trim_end_matches("kB")
                        .trim()
                        .parse::<u64>()
                        .ok()
                })
        })
        .map_or(0, |kb| kb * 1024)
}

impl Agent {
    async fn serve(&mut self, drain_rx: &mut watch::Receiver<bool>) -> Exit {
        let mut backoff = Backoff::coordinator();
        loop {
            if self.shared.draining() {
                return Exit::Drained;
            }
            if self.shared.worker_id().is_empty() || self.shared.forgotten() {
                tokio::select! {
                    _ = self.register() => {}
                    _ = drain::started(drain_rx) => return Exit::Drained,
                }
                backoff.reset();
            }
            let me = self.shared.registration();
            let lease_request = LeaseRequest {
                worker_id: me.worker_id,
                worker_secret: me.secret,
                cached_checkpoints: self.cached_checkpoints(),
            };
            let mut client = self.client.clone();
            let call = client.lease(request(lease_request, RPC_TIMEOUT));
            tokio::pin!(call);
            let answer = tokio::select! {
                answer = &mut call => answer,
                // the coordinator may already have granted a lease: take the answer (bounded by
                // the RPC timeout) so a granted lease is given back below, not left to expire
                _ = drain::started(drain_rx) => call.await,
            };
            let outcome = match answer {
                Ok(response) => response.into_inner().outcome,
                Err(status) if status.code() == Code::NotFound => {
                    tracing::warn!("coordinator does not know this worker: registering again");
                    self.shared.mark_forgotten();
                    continue;
                }
                Err(status) => {
                    let delay = backoff.next_delay();
                    tracing::warn!(
                        coordinator = %self.config.coordinator,
                        code = ?status.code(),
                        "lease failed: {}; retrying in {:.1}s",
                        status.message(),
                        delay.as_secs_f64()
                    );
                    tokio::select! {
                        _ = tokio::time::sleep(delay) => {}
                        _ = drain::started(drain_rx) => return Exit::Drained,
                    }
                    continue;
                }
            };
            backoff.reset();
            match outcome {
                Some(Outcome::Lease(lease)) => {
                    if self.shared.draining() {
                        let lease_ref = lease.lease.unwrap_or_default();
                        self.fail(
                            &lease_ref,
                            herd_rpc::v1::FailureKind::Released,
                            "worker draining (SIGTERM)".to_string(),
                        )
                        .await;
                        return Exit::Drained;
                    }
                    self.run_lease(lease, drain_rx).await;
                }
                Some(Outcome::RetryAfterMs(ms)) => {
                    let wait = Duration::from_millis(u64::from(ms.max(50)));
                    tracing::debug!("no task to lease; asking again in {} ms", wait.as_millis());
                    tokio::select! {
                        _ = tokio::time::sleep(wait) => {}
                        _ = drain::started(drain_rx) => return Exit::Drained,
                    }
                }
                Some(Outcome::Shutdown(_)) => {
                    tracing::info!("coordinator: every sweep is done; exiting");
                    return Exit::Shutdown;
                }
                None => {
                    tracing::warn!("coordinator sent an empty lease answer; asking again");
                    tokio::time::sleep(backoff.next_delay()).await;
                }
            }
        }
    }

    /// Registers (again), retrying with backoff until the coordinator answers.
    async fn register(&mut self) {
        let mut backoff = Backoff::coordinator();
        let again = !self.shared.worker_id().is_empty();
        let device = self.config.device;
        let gpu_memory_bytes = tokio::task::spawn_blocking(move || gpu::query(device))
            .await
            .ok()
            .flatten()
            .map_or(0, |m| m.total_bytes);
        loop {
            let gpus = if self.config.device.is_cuda() {
                tch::Cuda::device_count().max(0) as u32
            } else {
                0
            };
            let message = RegisterRequest {
                name: self.config.name.clone(),
                capabilities: Some(Capabilities {
                    device: if self.config.device.is_cuda() {
                        "cuda"
                    } else {
                        "cpu"
                    }
                    .to_string(),
                    gpus,
                    gpu_memory_bytes,
                    host_memory_bytes: host_memory_bytes(),
                    cached_checkpoints: self.cached_checkpoints(),
                    version: env!("CARGO_PKG_VERSION").to_string(),
                }),
            };
            match self.client.register(request(message, RPC_TIMEOUT)).await {
                Ok(response) => {
                    let response = response.into_inner();
                    self.shared.registered(
                        heartbeat::Registration {
                            worker_id: response.worker_id.clone(),
                            secret: response.worker_secret,
                        },
                        response.heartbeat_interval_ms,
                    );
                    tracing::info!(
                        coordinator = %self.config.coordinator,
                        worker_id = %response.worker_id,
                        heartbeat_ms = response.heartbeat_interval_ms,
                        "{} with the coordinator",
                        if again { "registered again" } else { "connected and registered" }
                    );
                    return;
                }
                Err(status) => {
                    let delay = backoff.next_delay();
                    tracing::warn!(
                        coordinator = %self.config.coordinator,
                        code = ?status.code(),
                        "cannot register: {}; retrying in {:.1}s",
                        status.message(),
                        delay.as_secs_f64()
                    );
                    tokio::time::sleep(delay).await;
                }
            }
        }
    }

    /// The checkpoints this worker holds: the cache and the model in memory.
    fn cached_checkpoints(&self) -> Vec<String> {
        let mut uris = self.sources.cached_uris();
        if let Some(loaded) = &self.loaded {
            if !uris.contains(&loaded.key.uri) {
                uris.push(loaded.key.uri.clone());
            }
        }
        uris
    }

    /// Whether an RPC failure should be retried; NOT_FOUND marks the worker as forgotten.
    fn retry_or_give_up(&self, status: &tonic::Status) -> bool {
        if status.code() == Code::NotFound {
            self.shared.mark_forgotten();
            return false;
        }
        is_retryable(status)
    }
}
