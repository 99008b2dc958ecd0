//! SIGTERM/SIGINT: stop taking leases, finish (or give back) the current one, exit 0.

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

/// Resolves once draining has started.
pub async fn started(rx: &mut watch::Receiver<bool>) {
    // an error means the sender is gone (never, it lives in a task that loops forever)
    let _ = rx.wait_for(|draining| *draining).await;
}
