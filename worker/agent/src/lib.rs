//! The worker's agent loop, without libtorch (`worker --coordinator URL` runs it with herd-engine's
//! scorer, herd-sim with stub scores). It registers with the coordinator, leases (checkpoint x
//! shard) tasks, makes the checkpoint local, scores it through a [`ShardScorer`], streams the
//! per-example rewards back tagged with the lease epoch, and completes or fails each lease.
//!
//! * [`scorer`]: the [`ShardScorer`] trait an engine implements, and what it returns.
//! * [`observer`]: hooks for a driver that measures the loop (herd-sim).
//! * [`connect`]: the channel (retries and backoff: `herd_rpc::client`).
//! * [`heartbeat`]: state shared with the heartbeat task (leases held, revocations, stats).
//! * [`sources`]: checkpoint and tokenizer locations made local (paths, GCS cache, hub).
//! * [`task`]: one lease end to end (resolve, load or reuse the model, score, stream, complete).
//! * [`drain`]: SIGTERM/SIGINT handling, or a driver's stop.
//! * [`gpu`], [`metrics`]: GPU memory (nvidia-smi) and the Prometheus endpoint.
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
pub mod observer;
pub mod scorer;
pub mod sources;
pub mod task;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use herd_rpc::client::{is_retryable, request, Backoff};
use herd_rpc::v1::lease_response::Outcome;
use herd_rpc::v1::{Capabilities, LeaseRequest, RegisterRequest};
use tokio::sync::watch;
use tonic::Code;

use connect::Client;
use heartbeat::Shared;
pub use observer::{NoObserver, Observer, TaskOutcome};
pub use scorer::{
    CheckpointScoringError, LocalCheckpoint, PairScores, ScoredShard, ShardScorer, SyntheticScorer,
    TaskFailure,
};
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
    /// the CUDA device scored on (`None`: CPU): registered, and its memory sampled for
    /// heartbeats and /metrics
    pub cuda_device: Option<usize>,
    /// CUDA devices this machine has (registered)
    pub gpus: u32,
    /// devices this scorer splits a model over (`cuda_device` first; registered, so the
    /// coordinator counts their memory together); 1 for one device
    pub scorer_devices: u32,
    /// bytes per parameter of the precision weights are loaded in (registered: the coordinator
    /// leases only checkpoints whose parameters fit the memory)
    pub bytes_per_parameter: u32,
    /// memory offered for models, registered instead of the device's total when smaller
    /// (`--memory`; a GPU shared with other work)
    pub memory_limit_bytes: Option<u64>,
    /// rewards per ResultBatch message
    pub stream_batch: usize,
    /// how long a SIGTERM waits for the current shard before giving it back
    pub drain_grace: Duration,
    /// serve Prometheus metrics here (`--metrics-listen`)
    pub metrics_listen: Option<std::net::SocketAddr>,
    /// bearer token and TLS files for the coordinator connection
    pub security: herd_rpc::security::ClientSecurity,
}

/// How a driver other than the `worker` binary hooks into the loop.
pub struct Hooks {
    pub observer: Arc<dyn Observer>,
    /// drain when this turns `true` (`None`: on SIGTERM/SIGINT, as the `worker` binary)
    pub drain: Option<watch::Receiver<bool>>,
}

impl Default for Hooks {
    fn default() -> Self {
        Hooks {
            observer: Arc::new(NoObserver),
            drain: None,
        }
    }
}

pub struct Agent<S: ShardScorer> {
    config: AgentConfig,
    scorer: Arc<S>,
    observer: Arc<dyn Observer>,
    client: Client,
    shared: Arc<Shared>,
    sources: Arc<Sources>,
    /// the model of the last lease, kept for the next shard of the same checkpoint
    loaded: Option<task::Loaded<S::Model>>,
    prefetches: HashMap<String, tokio::task::JoinHandle<()>>,
}

/// How the agent loop ended.
#[derive(Debug, PartialEq, Eq)]
pub enum Exit {
    /// the coordinator said every sweep is done
    Shutdown,
    /// SIGTERM/SIGINT (or the driver's stop), drained
    Drained,
}

/// Runs the agent until the coordinator says shutdown or a signal drains it.
pub async fn run<S: ShardScorer>(config: AgentConfig, scorer: S) -> anyhow::Result<Exit> {
    run_with(config, Arc::new(scorer), Hooks::default()).await
}

/// [`run`] with a driver's observer and stop instead of signals.
pub async fn run_with<S: ShardScorer>(
    config: AgentConfig,
    scorer: Arc<S>,
    hooks: Hooks,
) -> anyhow::Result<Exit> {
    let client = connect::client_with(&config.coordinator, &config.security)?;
    let sources = Arc::new(Sources::new(config.cache_dir.clone(), config.cache_bytes).await?);
    let shared = Arc::new(Shared::default());
    let mut drain_rx = match hooks.drain {
        Some(trigger) => drain::on_trigger(trigger, shared.clone()),
        None => drain::install(shared.clone())?,
    };
    if let Some(addr) = config.metrics_listen {
        metrics::serve(addr, config.cuda_device).await?;
    }
    let sampler = gpu::spawn_sampler(config.cuda_device, shared.clone());
    let heartbeats = tokio::spawn(heartbeat::run(
        client.clone(),
        shared.clone(),
        config.coordinator.clone(),
        hooks.observer.clone(),
    ));
    let mut agent = Agent {
        config,
        scorer,
        observer: hooks.observer,
        client,
        shared,
        sources,
        loaded: None,
        prefetches: HashMap::new(),
    };
    let exit = agent.serve(&mut drain_rx).await;
    heartbeats.abort();
    if let Some(sampler) = sampler {
        sampler.abort();
    }
    if exit == Exit::Drained {
        // one last beat so the coordinator sees the drain even if the worker held nothing
        heartbeat::beat(
            &mut agent.client,
            &agent.shared,
            &agent.config.coordinator,
            agent.observer.as_ref(),
        )
        .await;
        tracing::info!("drained; exiting");
    }
    Ok(exit)
}

/// The (GPU, host) memory registered: the device scored on (the GPU on CUDA, else the host) is
/// capped by `limit`, or set to it when its size is unknown (0).
fn offered_memory(cuda: bool, gpu: u64, host: u64, limit: Option<u64>) -> (u64, u64) {
    let cap = |total: u64| match (total, limit) {
        (_, None) => total,
        (0, Some(limit)) => limit,
        (total, Some(limit)) => total.min(limit),
    };
    if cuda {
        (cap(gpu), host)
    } else {
        (gpu, cap(host))
    }
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

impl<S: ShardScorer> Agent<S> {
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
            let asked = Instant::now();
            let call = client.lease(request(lease_request, RPC_TIMEOUT));
            tokio::pin!(call);
            let answer = tokio::select! {
                answer = &mut call => answer,
                // the coordinator may already have granted a lease: take the answer (bounded by
                // the RPC timeout) so a granted lease is given back below, not left to expire
                _ = drain::started(drain_rx) => call.await,
            };
            let outcome = match answer {
                Ok(response) => {
                    let outcome = response.into_inner().outcome;
                    let granted = matches!(outcome, Some(Outcome::Lease(_)));
                    self.observer
                        .lease_answered(asked, asked.elapsed(), granted);
                    outcome
                }
                Err(status) if status.code() == Code::NotFound => {
                    self.observer.rpc_failed("Lease", &status);
                    tracing::warn!("coordinator does not know this worker: registering again");
                    self.shared.mark_forgotten();
                    continue;
                }
                Err(status) => {
                    self.observer.rpc_failed("Lease", &status);
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
        let cuda = self.config.cuda_device;
        let gpu_memory_bytes = tokio::task::spawn_blocking(move || gpu::query(cuda))
            .await
            .ok()
            .flatten()
            .map_or(0, |m| m.total_bytes);
        loop {
            let (device, gpus) = match cuda {
                Some(_) => ("cuda", self.config.gpus),
                None => ("cpu", 0),
            };
            let (gpu_memory_bytes, host_memory_bytes) = offered_memory(
                cuda.is_some(),
                gpu_memory_bytes,
                host_memory_bytes(),
                self.config.memory_limit_bytes,
            );
            let message = RegisterRequest {
                name: self.config.name.clone(),
                capabilities: Some(Capabilities {
                    device: device.to_string(),
                    gpus,
                    gpu_memory_bytes,
                    host_memory_bytes,
                    cached_checkpoints: self.cached_checkpoints(),
                    version: env!("CARGO_PKG_VERSION").to_string(),
                    bytes_per_parameter: self.config.bytes_per_parameter,
                    scorer_devices: self.config.scorer_devices,
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
                    self.observer.registered(again);
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
                    self.observer.rpc_failed("Register", &status);
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

#[cfg(test)]
mod tests {
    use super::offered_memory;

    #[test]
    fn the_memory_limit_caps_the_scoring_device_only() {
        const GIB: u64 = 1 << 30;
        // no limit: what was measured
        assert_eq!(
            offered_memory(true, 80 * GIB, 512 * GIB, None),
            (80 * GIB, 512 * GIB)
        );
        // on CUDA the GPU is capped, the host is not
        assert_eq!(
            offered_memory(true, 80 * GIB, 512 * GIB, Some(40 * GIB)),
            (40 * GIB, 512 * GIB)
        );
        // a limit above the device's memory changes nothing
        assert_eq!(
            offered_memory(true, 80 * GIB, 512 * GIB, Some(100 * GIB)),
            (80 * GIB, 512 * GIB)
        );
        // unknown GPU memory (no nvidia-smi): the limit is what is offered
        assert_eq!(
            offered_memory(true, 0, 512 * GIB, Some(24 * GIB)),
            (24 * GIB, 512 * GIB)
        );
        // on CPU the host memory is the scoring device's
        assert_eq!(
            offered_memory(false, 0, 64 * GIB, Some(8 * GIB)),
            (0, 8 * GIB)
        );
    }
}
