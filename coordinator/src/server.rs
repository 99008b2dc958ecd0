//! The coordinator's gRPC server: both services (`Workers`, `Sweeps`) over one SQLite state file,
//! plus the lease reaper. `coord serve` calls [`serve`]; `coord run` and tests call [`spawn`].

use std::net::SocketAddr;
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

use crate::app::{now_ms, Coordinator};
use crate::config::ServerConfig;
use crate::service::{SweepsService, WorkersService};
use crate::state::Store;

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
pub async fn serve(config: ServerConfig) -> anyhow::Result<()> {
    let exit_when_done = config.exit_when_done;
    let grace = Duration::from_millis(
        (2 * config.policy.heartbeat_interval_ms)
            .max(1_000)
            .min(config.policy.lease_timeout_ms.max(1_000)),
    );
    let metrics_listen = config.metrics_listen;
    let handle = spawn(config).await?;
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
pub async fn spawn(config: ServerConfig) -> anyhow::Result<ServerHandle> {
    let policy = config.policy.clone();
    let path = config.state.clone();
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
    .with_context(|| format!("opening the state file {}", config.state.display()))?;
    // refuse to start without both tokens (or --insecure-no-auth), or plaintext off loopback
    let tokens = config.security.server_tokens()?;
    let tls = config.security.server_tls(config.listen)?;
    let store = Arc::new(store);
    let coordinator =
        Coordinator::new(store.clone(), config.out_dir.clone(), config.exit_when_done);
    coordinator.write_missing_reports().await;

    let listener = TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("listening on {}", config.listen))?;
    let addr = listener.local_addr()?;
    let (stop, mut stop_rx) = watch::channel(false);

    let workers = WorkersService::new(coordinator.clone()).with_limits(&config.limits);
    let workers = WorkersServer::new(workers)
        .max_decoding_message_size(config.limits.max_message_bytes)
        .max_encoding_message_size(MAX_MESSAGE_BYTES);
    let sweeps = SweepsServer::new(SweepsService::new(coordinator.clone()))
        .max_decoding_message_size(config.limits.max_message_bytes)
        .max_encoding_message_size(MAX_MESSAGE_BYTES);
    // accepted sockets get TCP_NODELAY: small answers (Lease, Complete) otherwise wait for the
    // client's delayed ACK (~40 ms per round trip, measured in bench/RESULTS.md)
    let incoming = TcpIncoming::from(listener)
        .with_nodelay(Some(true))
        .with_keepalive(Some(Duration::from_secs(60)));
    let mut server_stop = stop_rx.clone();
    let mut builder = Server::builder()
        .concurrency_limit_per_connection(config.limits.max_concurrent_rpcs_per_connection.max(1));
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
                Err(e) => tracing::warn!("reaper: {e}"),
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
