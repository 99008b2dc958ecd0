//! The coordinator connection: a lazily connected channel (tonic reconnects it after a restart)
//! carrying the worker token; retries and backoff are herd-rpc's (`herd_rpc::client`).

use std::time::Duration;

use herd_rpc::security::{AuthChannel, ClientSecurity};
use herd_rpc::v1::workers_client::WorkersClient;
use herd_rpc::MAX_MESSAGE_BYTES;
use tonic::transport::Endpoint;

/// Every call carries the bearer token (when one is configured).
pub type Client = WorkersClient<AuthChannel>;

/// A client for `url` (`http://host:port`). Nothing is dialled until the first call, so a
/// coordinator that is not up yet shows as UNAVAILABLE on that call and is retried.
pub fn client(url: &str) -> anyhow::Result<Client> {
    client_with(url, &ClientSecurity::default())
}

/// [`client`] with a bearer token and TLS (`https://` URLs, `--tls-ca`, client certificate).
pub fn client_with(url: &str, security: &ClientSecurity) -> anyhow::Result<Client> {
    let endpoint = Endpoint::from_shared(url.to_string())
        .map_err(|e| anyhow::anyhow!("--coordinator {url:?} is not a URL: {e}"))?
        .connect_timeout(Duration::from_secs(5))
        .tcp_nodelay(true)
        .http2_keep_alive_interval(Duration::from_secs(30))
        .keep_alive_timeout(Duration::from_secs(20))
        .keep_alive_while_idle(true);
    let endpoint = security
        .apply(endpoint)
        .map_err(|e| anyhow::anyhow!("--coordinator {url}: {e}"))?;
    Ok(
        WorkersClient::new(security.intercept(endpoint.connect_lazy()))
            .max_decoding_message_size(MAX_MESSAGE_BYTES)
            .max_encoding_message_size(MAX_MESSAGE_BYTES),
    )
}
