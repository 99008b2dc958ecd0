//! The coordinator's gRPC server: both services (`Workers`, `Sweeps`) over one SQLite state file,
//! plus the lease reaper. `coord serve` calls [`serve`]; `coord run` and tests call [`spawn`].

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use herd_rpc::v1::{sweeps_server::SweepsServer, workers_server::WorkersServer};
use herd_rpc::MAX_MESSAGE_BYTES;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tonic::transport::server::TcpIncoming;
use tonic::transport::Server;

use crate::scheduler::{now_ms, Policy};
use crate::service::{Coordinator, SweepsService, WorkersService};
use crate::state::Store;

/// `coord serve` flags.
#[derive(clap::Args, Clone, Debug)]
pub struct ServeArgs {
    /// the SQLite state file (created when missing; a restarted coordinator resumes from it)
    #[arg(long, default_value = "herd-state.db")]
    pub state: PathBuf,
    /// address to listen on
    #[arg(long, default_value = "127.0.0.1:50051")]
    pub listen: SocketAddr,
    /// reports are written to <out-dir>/<sweep name>/ when a sweep completes
    #[arg(long, default_value = "herd-out")]
    pub out_dir: PathBuf,
    /// a lease not refreshed by a heartbeat for this long expires
    #[arg(long, default_value_t = 30_000)]
    pub lease_timeout_ms: u64,
    /// how often workers are told to heartbeat
    #[arg(long, default_value_t = 5_000)]
    pub heartbeat_interval_ms: u64,
    /// attempts per task before it fails
    #[arg(long, default_value_t = 3)]
    pub max_attempts: u32,
    /// wait before a failed task is leased again, doubled per attempt
    #[arg(long, default_value_t = 2_000)]
    pub retry_backoff_ms: u64,
    /// answer Lease with shutdown and exit once every sweep is finished
    #[arg(long)]
    pub exit_when_done: bool,
    /// give idle workers duplicate leases of the oldest running tasks when nothing else is left
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    pub stragglers: bool,
    /// live leases per task at most (the original plus straggler duplicates)
    #[arg(long, default_value_t = 2)]
    pub max_leases_per_task: u32,
    /// serve Prometheus metrics at http://ADDR/metrics (e.g. 0.0.0.0:9464; default: off)
    #[arg(long, value_name = "ADDR", env = "HERD_METRICS_LISTEN")]
    pub metrics_listen: Option<SocketAddr>,
    /// token, TLS and plaintext flags
    #[command(flatten)]
    pub security: crate::security::SecurityArgs,
    /// message sizes, rewards per message, lease rate, concurrent calls
    #[command(flatten)]
    pub limits: crate::security::LimitArgs,
}

/// A server running in this process.
pub struct ServerHandle {
    /// the bound address (`listen` with port 0 gets a free port)
    pub addr: SocketAddr,
    coordinator: Arc<Coordinator>,
    stop: watch::Sender<bool>,
    server: JoinHandle<Result<(), tonic::transport::Error>>,
    reaper: JoinHandle<()>,
}

impl ServerHandle {
    /// The state store (for in-process callers and tests).
    pub fn store(&self) -> Arc<Store> {
        self.coordinator.store.clone()
    }

    pub fn coordinator(&self) -> Arc<Coordinator> {
        self.coordinator.clone()
    }

    /// `http://addr`, for clients.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Resolves once every sweep in the state file is finished (done or cancelled, at least one
    /// sweep) and the reports of finished sweeps are written.
    pub async fn finished(&self) {
        let mut rx = self.coordinator.finished();
        // the sender lives in the coordinator, which this handle keeps alive
        let _ = rx.wait_for(|done| *done).await;
    }

    /// Stops serving and waits for the server task to end.
    pub async fn shutdown(self) -> anyhow::Result<()> {
        self.stop.send_replace(true);
        let served = self.server.await.context("server task")?;
        self.reaper.abort();
        let _ = self.reaper.await;
        served.context("gRPC server")?;
        Ok(())
    }
}

/// Runs the coordinator until Ctrl-C (or, with `exit_when_done`, until every sweep is finished
/// and the workers still heard from were told to shut down).
pub async fn serve(args: ServeArgs) -> anyhow::Result<()> {
    let exit_when_done = args.exit_when_done;
    let grace = Duration::from_millis(
        (2 * args.heartbeat_interval_ms)
            .max(1_000)
            .min(args.lease_timeout_ms.max(1_000)),
    );
    let metrics_listen = args.metrics_listen;
    let handle = spawn(args).await?;
    tracing::info!(addr = %handle.addr, "coordinator listening");
    if let Some(addr) = metrics_listen {
        crate::observe::serve_metrics(addr, handle.store()).await?;
    }
    tokio::select! {
        r = tokio::signal::ctrl_c() => {
            r.context("waiting for Ctrl-C")?;
            tracing::info!("interrupted: shutting down");
        }
        _ = async {
            handle.finished().await;
            wait_for_workers_told(&handle, grace).await;
        }, if exit_when_done => {
            tracing::info!("every sweep is finished: shutting down");
        }
    }
    handle.shutdown().await
}

/// After the last sweep finished: give the workers still heard from a moment to ask for work
/// and be answered `shutdown`, so they exit cleanly instead of finding no server.
async fn wait_for_workers_told(handle: &ServerHandle, grace: Duration) {
    let until = tokio::time::Instant::now() + grace;
    while tokio::time::Instant::now() < until {
        let store = handle.store();
        let live = tokio::task::spawn_blocking(move || store.live_workers(now_ms()))
            .await
            .ok()
            .and_then(|r| r.ok())
            .unwrap_or_default();
        let told = handle.coordinator.told_shutdown();
        if live.iter().all(|w| told.contains(w)) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Binds, spawns the server and its lease reaper in the background and returns its address
/// and a handle.
pub async fn spawn(args: ServeArgs) -> anyhow::Result<ServerHandle> {
    let policy = Policy::from_args(&args);
    let path = args.state.clone();
    let store = tokio::task::spawn_blocking(move || {
        let store = Store::open(&path, policy)?;
        // leases of the last run get a lease timeout of grace before the reaper sees them
        let graced = store.grace_live_leases(now_ms())?;
        if graced > 0 {
            tracing::info!(
                leases = graced,
                "live leases from the last run get one lease timeout of grace"
            );
        }
        Ok::<_, crate::state::StoreError>(store)
    })
    .await
    .context("opening the state file")?
    .with_context(|| format!("opening the state file {}", args.state.display()))?;
    // refuse to start without both tokens (or --insecure-no-auth), or plaintext off loopback
    let tokens = args.security.server_tokens()?;
    let tls = args.security.server_tls(args.listen)?;
    let store = Arc::new(store);
    let coordinator = Coordinator::new(store.clone(), args.out_dir.clone(), args.exit_when_done);
    write_missing_reports(&coordinator).await;

    let listener = TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("listening on {}", args.listen))?;
    let addr = listener.local_addr()?;
    let (stop, mut stop_rx) = watch::channel(false);

    let workers = WorkersService::new(coordinator.clone()).with_limits(&args.limits);
    let workers = WorkersServer::new(workers)
        .max_decoding_message_size(args.limits.max_message_bytes)
        .max_encoding_message_size(MAX_MESSAGE_BYTES);
    let sweeps = SweepsServer::new(SweepsService::new(coordinator.clone()))
        .max_decoding_message_size(args.limits.max_message_bytes)
        .max_encoding_message_size(MAX_MESSAGE_BYTES);
    // accepted sockets get TCP_NODELAY: small answers (Lease, Complete) otherwise wait for the
    // client's delayed ACK (~40 ms per round trip, measured in bench/RESULTS.md)
    let incoming = TcpIncoming::from(listener)
        .with_nodelay(Some(true))
        .with_keepalive(Some(Duration::from_secs(60)));
    let mut server_stop = stop_rx.clone();
    let mut builder = Server::builder()
        .concurrency_limit_per_connection(args.limits.max_concurrent_rpcs_per_connection.max(1));
    if let Some(tls) = tls {
        builder = builder.tls_config(tls).context("TLS configuration")?;
    }
    let server = tokio::spawn(
        builder
            .layer(crate::security::AuthLayer::new(tokens.as_ref()))
            .add_service(workers)
            .add_service(sweeps)
            .serve_with_incoming_shutdown(incoming, async move {
                let _ = server_stop.wait_for(|s| *s).await;
            }),
    );

    let reaper_coord = coordinator.clone();
    let interval = store.policy().reap_interval();
    let reaper = tokio::spawn(async move {
        let mut tick = tokio::time::interval(interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = stop_rx.wait_for(|s| *s) => return,
            }
            let _hold = reaper_coord.hold();
            match reaper_coord.with_store(|s| s.reap(now_ms())).await {
                Ok(t) => {
                    crate::observe::METRICS
                        .lease_expiries
                        .inc_by(t.leases as u64);
                    if t.leases > 0 {
                        tracing::info!(
                            expired = t.leases,
                            tasks_failed = t.tasks_failed,
                            "reaped leases"
                        );
                    }
                    reaper_coord.sweeps_finished(t.finished_sweeps);
                }
                Err(e) => tracing::warn!("reaper: {}", e.message()),
            }
        }
    });

    Ok(ServerHandle {
        addr,
        coordinator,
        stop,
        server,
        reaper,
    })
}

/// A coordinator stopped between finishing a sweep and writing its report writes it on start.
async fn write_missing_reports(coordinator: &Arc<Coordinator>) {
    let sweeps = coordinator
        .with_store(|s| s.sweeps())
        .await
        .unwrap_or_default();
    let missing: Vec<String> = sweeps
        .into_iter()
        .filter(|(_, state)| state == "done")
        .filter(
            |(name, _)| match crate::report::sweep_dir(&coordinator.out_dir, name) {
                Ok(dir) => !dir.exists(),
                // a state file written before the rule: its reports stay behind `coord results`
                Err(e) => {
                    tracing::warn!("no report written at start-up: {e:#}");
                    false
                }
            },
        )
        .map(|(name, _)| name)
        .collect();
    coordinator.sweeps_finished(missing);
}
