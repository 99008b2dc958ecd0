//! Scheduling policy: lease timeouts, retries with exponential backoff, straggler duplicates.
//!
//! The order in which tasks are handed out is implemented in SQL by [`crate::state::Store::lease`]:
//! 1. pending tasks whose backoff has passed, of a checkpoint the worker holds (its cache, or the
//!    checkpoint of its last lease), oldest sweep first, then lowest task id;
//! 2. any other eligible pending task, oldest sweep first, then lowest task id;
//! 3. stragglers: when nothing is pending in a sweep but tasks are still leased, an idle worker
//!    gets a duplicate lease (a new epoch) of the task whose live lease is oldest, at most
//!    `max_leases_per_task` live leases per task; the first Complete wins;
//! 4. otherwise "ask again later", or "shut down" when every sweep is finished and the server
//!    was started with `exit_when_done`.

use std::time::Duration;

/// The knobs of the scheduler (`coord serve` flags; the defaults are the flags' defaults).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Policy {
    pub lease_timeout_ms: u64,
    pub heartbeat_interval_ms: u64,
    pub max_attempts: u32,
    /// wait before a failed task is eligible again; doubled per attempt
    pub retry_backoff_ms: u64,
    pub stragglers: bool,
    pub max_leases_per_task: u32,
}

impl Default for Policy {
    fn default() -> Self {
        Policy {
            lease_timeout_ms: 30_000,
            heartbeat_interval_ms: 5_000,
            max_attempts: 3,
            retry_backoff_ms: 2_000,
            stragglers: true,
            max_leases_per_task: 2,
        }
    }
}

impl Policy {
    /// Backoff after the `attempts`-th failed attempt (1-based): `retry_backoff_ms * 2^(attempts-1)`.
    pub fn backoff_ms(&self, attempts: u32) -> u64 {
        let doublings = attempts.saturating_sub(1).min(30);
        self.retry_backoff_ms.saturating_mul(1u64 << doublings)
    }

    /// How often the reaper looks for expired leases.
    pub fn reap_interval(&self) -> Duration {
        Duration::from_millis((self.lease_timeout_ms / 4).clamp(20, 5_000))
    }

    /// What an idle worker is told to wait before asking again.
    pub fn retry_after_ms(&self) -> u32 {
        self.heartbeat_interval_ms.clamp(1, u32::MAX as u64) as u32
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_per_attempt() {
        let policy = Policy {
            retry_backoff_ms: 100,
            ..Policy::default()
        };
        assert_eq!(policy.backoff_ms(1), 100);
        assert_eq!(policy.backoff_ms(2), 200);
        assert_eq!(policy.backoff_ms(3), 400);
        assert_eq!(policy.backoff_ms(200), 100 << 30);
    }
}
