//! The coordinator's gRPC server: both services (`Workers`, `Sweeps`) over one SQLite state file,
//! plus the lease reaper. `coord serve` calls [`serve`]; `coord run` and tests call [`spawn`].

use std::net::SocketAddr;
use std::path::PathBuf;

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
}

/// A server running in this process.
pub struct ServerHandle {
    pub addr: SocketAddr,
}

impl ServerHandle {
    /// Resolves once every sweep in the state file is finished (done or cancelled) and at least
    /// one sweep exists.
    pub async fn finished(&self) {}

    /// Stops serving and waits for the server task to end.
    pub async fn shutdown(self) -> anyhow::Result<()> {
        Ok(())
    }
}

/// Runs the coordinator until Ctrl-C (or, with `exit_when_done`, until every sweep is finished).
pub async fn serve(args: ServeArgs) -> anyhow::Result<()> {
    let _ = args;
    anyhow::bail!("coord serve: not implemented yet")
}

/// Binds, spawns the server in the background and returns its address and a handle.
pub async fn spawn(args: ServeArgs) -> anyhow::Result<ServerHandle> {
    let _ = args;
    anyhow::bail!("coord serve: not implemented yet")
}
