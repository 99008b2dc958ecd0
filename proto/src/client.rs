//! What every client of the coordinator shares: the address it is given, the deadline on unary
//! calls, which gRPC failures mean "try again", and capped exponential backoff with jitter.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tonic::{Code, Status};

/// `host:port` gets `http://`; anything else is taken as a URL.
pub fn normalize_url(address: &str) -> String {
    let address = address.trim();
    if address.contains("://") {
        address.to_owned()
    } else {
        format!("http://{address}")
    }
}

/// A unary request with a deadline, so a coordinator that hangs is retried like one that is down.
pub fn request<T>(message: T, timeout: Duration) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    request.set_timeout(timeout);
    request
}

/// The coordinator is down, restarting, or the network dropped the call, or it asks this client
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
        // distinct seeds for backoffs made in the same nanosecond (many clients in one process)
        static MADE: AtomicU64 = AtomicU64::new(0);
        let seed = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(1)
            ^ (u64::from(std::process::id()) << 32)
            ^ MADE
                .fetch_add(1, Ordering::Relaxed)
                .wrapping_mul(0x9e37_79b9_7f4a_7c15);
        Self {
            min,
            max,
            next: min,
            state: seed | 1,
        }
    }

    /// 250 ms doubling up to 30 s: what a worker uses against the coordinator.
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

    #[test]
    fn bare_addresses_get_http() {
        assert_eq!(normalize_url("coord:50051"), "http://coord:50051");
        assert_eq!(normalize_url(" https://coord:443 "), "https://coord:443");
        assert_eq!(normalize_url("http://[::1]:1"), "http://[::1]:1");
    }
}
