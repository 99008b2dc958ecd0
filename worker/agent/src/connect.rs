//! The coordinator connection: a lazily connected channel (tonic reconnects it after a restart),
//! capped exponential backoff with jitter, and which gRPC failures mean "try again".

use std::time::Duration;

use herd_rpc::security::{AuthChannel, ClientSecurity};
use herd_rpc::v1::workers_client::WorkersClient;
use tonic::transport::Endpoint;
use tonic::{Code, Status};

/// Every call carries the bearer token (when one is configured).
pub type Client = WorkersClient<AuthChannel>;

/// Leases carry whole shards (every example's text): far above tonic's 4 MB default.
const MAX_MESSAGE_BYTES: usize = 512 * 1024 * 1024;

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

/// A unary request with a deadline, so a coordinator that hangs is retried like one that is down.
pub fn request<T>(message: T, timeout: Duration) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    request.set_timeout(timeout);
    request
}

/// The coordinator is down, restarting, or the network dropped the call, or it asks this worker
/// to slow down (RESOURCE_EXHAUSTED: the lease rate limit): retry after a backoff.
pub fn is_retryable(status: &Status) -> bool {
    matches!(
        status.code(),
        Code::Unavailable
            | Code::Cancelled
            | Code::DeadlineExceeded
            | Code::Unknown
            | Code::Aborted
            | Code::ResourceExhausted
    )
}

/// Capped exponential backoff with jitter (each delay is drawn from [d/2, d]).
#[derive(Debug)]
pub struct Backoff {
    min: Duration,
    max: Duration,
    next: Duration,
    state: u64,
}

impl Backoff {
    pub fn new(min: Duration, max: Duration) -> Self {
        let seed = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(1)
            ^ (u64::from(std::process::id()) << 32);
        Self {
            min,
            max,
            next: min,
            state: seed | 1,
        }
    }

    /// 250 ms doubling up to 30 s: what the agent uses against the coordinator.
    pub fn coordinator() -> Self {
        Self::new(Duration::from_millis(250), Duration::from_secs(30))
    }

    fn random_unit(&mut self) -> f64 {
        // xorshift64*: jitter only, no need for a real generator
        self.state ^= self.state >> 12;
        self.state ^= self.state << 25;
        self.state ^= self.state >> 27;
        let x = self.state.wrapping_mul(0x2545_f491_4f6c_dd1d);
        (x >> 11) as f64 / (1u64 << 53) as f64
    }

    pub fn next_delay(&mut self) -> Duration {
        let base = self.next;
        self.next = (self.next * 2).min(self.max);
        base.mul_f64(0.5 + 0.5 * self.random_unit())
    }

    pub fn reset(&mut self) {
        self.next = self.min;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_to_the_cap_with_jitter() {
        let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(1));
        let delays: Vec<Duration> = (0..8).map(|_| backoff.next_delay()).collect();
        assert!(delays[0] >= Duration::from_millis(50) && delays[0] <= Duration::from_millis(100));
        assert!(delays.iter().all(|d| *d <= Duration::from_secs(1)));
        assert!(delays[7] >= Duration::from_millis(500));
        backoff.reset();
        assert!(backoff.next_delay() <= Duration::from_millis(100));
    }

    #[test]
    fn transport_failures_are_retried_and_refusals_are_not() {
        assert!(is_retryable(&Status::unavailable("down")));
        assert!(is_retryable(&Status::resource_exhausted(
            "lease rate limit"
        )));
        assert!(!is_retryable(&Status::failed_precondition("stale lease")));
        assert!(!is_retryable(&Status::not_found("unknown worker")));
    }
}
