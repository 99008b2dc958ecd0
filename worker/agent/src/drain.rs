//! Draining: stop taking leases, finish (or give back) the current one, exit. The `worker` binary
//! drains on SIGTERM/SIGINT; a driver running agents in-process (herd-sim) through a watch.

use std::sync::Arc;

use tokio::sync::watch;

use super::heartbeat::Shared;

/// Listens for SIGTERM and SIGINT; the first one flips the returned watch to `true` and starts
/// the draining heartbeats. A second one is logged (the grace period still bounds the wait).
pub fn install(shared: Arc<Shared>) -> anyhow::Result<watch::Receiver<bool>> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    let (tx, rx) = watch::channel(false);
    tokio::spawn(async move {
        let mut first = true;
        loop {
            let name = tokio::select! {
                _ = term.recv() => "SIGTERM",
                _ = int.recv() => "SIGINT",
            };
            if first {
                tracing::info!(
                    "{name}: draining (no new leases; finishing or giving back the current one)"
                );
                shared.start_draining();
                let _ = tx.send(true);
                first = false;
            } else {
                tracing::info!("{name} again: already draining");
            }
        }
    });
    Ok(rx)
}

/// Drains when `trigger` turns `true` (a driver's stop): the same as a first signal.
pub fn on_trigger(
    mut trigger: watch::Receiver<bool>,
    shared: Arc<Shared>,
) -> watch::Receiver<bool> {
    let (tx, rx) = watch::channel(false);
    tokio::spawn(async move {
        // an error means the driver dropped its sender without stopping: no drain
        if trigger.wait_for(|stop| *stop).await.is_ok() {
            shared.start_draining();
            let _ = tx.send(true);
        }
    });
    rx
}

/// Resolves once draining has started; never when the sender is gone without draining.
pub async fn started(rx: &mut watch::Receiver<bool>) {
    if rx.wait_for(|draining| *draining).await.is_err() {
        std::future::pending::<()>().await;
    }
}
