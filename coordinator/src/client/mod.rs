//! The client side of `coord`: `submit`, `status`, `results` and `cancel` talk to a running
//! coordinator over the `Sweeps` gRPC service, with the operator token.

mod results;
mod status;
mod submit;
pub mod summary;

use std::time::Duration;

use anyhow::Context;
pub use herd_rpc::client::normalize_url;
use herd_rpc::security::{resolve_token, AuthChannel, ClientSecurity, OperatorSecurityArgs, Role};
use herd_rpc::v1::sweeps_client::SweepsClient;
use tonic::transport::Endpoint;

pub use results::{results, ResultsArgs};
pub use status::{render_status, status, StatusArgs};
pub use submit::{submit, SubmitArgs};

/// The coordinator address when neither `--coordinator` nor `HERD_COORDINATOR` is given.
pub const DEFAULT_COORDINATOR: &str = "http://127.0.0.1:50051";

/// How long connecting to the coordinator may take.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// `--coordinator`, shared by every client command.
#[derive(clap::Args, Clone, Debug)]
pub struct ConnectArgs {
    /// the coordinator's gRPC address
    #[arg(long, env = "HERD_COORDINATOR", default_value = DEFAULT_COORDINATOR)]
    pub coordinator: String,
    /// the operator token and TLS files
    #[command(flatten)]
    pub security: OperatorSecurityArgs,
}

impl ConnectArgs {
    /// A `Sweeps` client for `--coordinator` with the token and TLS these flags name.
    pub async fn client(&self) -> anyhow::Result<SweepsClient<AuthChannel>> {
        let security = self.security.security().map_err(anyhow::Error::msg)?;
        connect_with(&self.coordinator, &security).await
    }
}

/// Connects to the `Sweeps` service at `address` with the operator token in
/// `$HERD_OPERATOR_TOKEN` (if any).
pub async fn connect(address: &str) -> anyhow::Result<SweepsClient<AuthChannel>> {
    let token = resolve_token(None, Role::Operator).map_err(anyhow::Error::msg)?;
    connect_with(address, &ClientSecurity::token(token.as_deref())).await
}

/// Connects to the `Sweeps` service at `address` within [`CONNECT_TIMEOUT`]; the error names the
/// address. Every call carries the token; `https://` addresses use TLS.
pub async fn connect_with(
    address: &str,
    security: &ClientSecurity,
) -> anyhow::Result<SweepsClient<AuthChannel>> {
    let url = normalize_url(address);
    let endpoint = Endpoint::from_shared(url.clone())
        .with_context(|| format!("invalid coordinator address '{address}'"))?
        .connect_timeout(CONNECT_TIMEOUT)
        .timeout(Duration::from_secs(600));
    let endpoint = security.apply(endpoint).map_err(anyhow::Error::msg)?;
    let channel = match tokio::time::timeout(CONNECT_TIMEOUT, endpoint.connect()).await {
        Ok(Ok(channel)) => channel,
        Ok(Err(e)) => anyhow::bail!(
            "cannot reach the coordinator at {url}: {}; is `coord serve` running there? \
             (set --coordinator or HERD_COORDINATOR)",
            error_chain(&e)
        ),
        Err(_) => anyhow::bail!(
            "cannot reach the coordinator at {url}: no connection within {}s; is `coord serve` \
             running there? (set --coordinator or HERD_COORDINATOR)",
            CONNECT_TIMEOUT.as_secs()
        ),
    };
    Ok(SweepsClient::new(security.intercept(channel))
        .max_decoding_message_size(herd_rpc::MAX_MESSAGE_BYTES))
}

/// An RPC error as one line naming the coordinator.
pub fn rpc_error(url: &str, rpc: &str, status: tonic::Status) -> anyhow::Error {
    anyhow::anyhow!(
        "{rpc} at {}: {} ({:?})",
        normalize_url(url),
        status.message(),
        status.code()
    )
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let more = s.to_string();
        if !text.contains(&more) {
            text.push_str(": ");
            text.push_str(&more);
        }
        source = s.source();
    }
    text
}

/// `--sweep`, required by `results` and `cancel`.
#[derive(clap::Args, Clone, Debug)]
pub struct CancelArgs {
    #[command(flatten)]
    pub connect: ConnectArgs,
    /// the sweep to cancel
    #[arg(long)]
    pub sweep: String,
}

/// `coord cancel`.
pub async fn cancel(args: CancelArgs) -> anyhow::Result<()> {
    let mut client = args.connect.client().await?;
    let response = client
        .cancel(herd_rpc::v1::CancelRequest {
            sweep: args.sweep.clone(),
        })
        .await
        .map_err(|s| rpc_error(&args.connect.coordinator, "Cancel", s))?
        .into_inner();
    println!(
        "sweep {}: {} task(s) cancelled",
        args.sweep, response.tasks_cancelled
    );
    Ok(())
}
