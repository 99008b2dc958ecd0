//! The agent's shared state and the heartbeat task: every `heartbeat_interval_ms` it reports the
//! leases held (and a few stats); leases the coordinator revokes are marked so their work is
//! dropped instead of streamed.

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use herd_rpc::v1::{HeartbeatRequest, LeaseRef, WorkerStats};
use tokio::sync::Notify;
use tonic::Code;

use super::connect::Client;
use crate::observer::Observer;
use herd_rpc::client::request;

pub type LeaseKey = (i64, u64);

pub fn key(lease: &LeaseRef) -> LeaseKey {
    (lease.task_id, lease.epoch)
}

/// Who this worker is to the coordinator: the id and secret its last Register answered (empty
/// before the first). Every call after Register carries both (Debug never prints the secret).
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Registration {
    pub worker_id: String,
    pub secret: String,
}

impl std::fmt::Debug for Registration {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Registration")
            .field("worker_id", &self.worker_id)
            .field("secret", &"<redacted>")
            .finish()
    }
}

/// What the main loop, the heartbeat task and the signal handler share.
#[derive(Default)]
pub struct Shared {
    registration: Mutex<Registration>,
    interval_ms: AtomicU32,
    held: Mutex<Vec<LeaseRef>>,
    revoked: Mutex<HashSet<LeaseKey>>,
    /// woken when a lease is revoked
    pub revoked_notify: Notify,
    draining: AtomicBool,
    /// woken to send a heartbeat now (e.g. the draining one)
    pub beat_now: Notify,
    /// a heartbeat got NOT_FOUND: the coordinator no longer knows this worker
    forgotten: AtomicBool,
    tokens_scored: AtomicU64,
    /// f64 bits
    tokens_per_second: AtomicU64,
    download_bytes: AtomicU64,
    /// the last nvidia-smi sample (0 off CUDA)
    gpu_memory_used: AtomicU64,
}

impl Shared {
    pub fn worker_id(&self) -> String {
        self.registration.lock().unwrap().worker_id.clone()
    }

    /// The id and secret of the current registration (one consistent pair).
    pub fn registration(&self) -> Registration {
        self.registration.lock().unwrap().clone()
    }

    pub fn registered(&self, registration: Registration, interval_ms: u32) {
        *self.registration.lock().unwrap() = registration;
        self.interval_ms.store(interval_ms, Ordering::Relaxed);
        self.forgotten.store(false, Ordering::Relaxed);
        // the heartbeat task went to sleep before registration, for the 10 s of an unknown
        // interval: wake it, so it beats now (the coordinator gets this worker's stats at once)
        // and from then on sleeps the coordinator's interval, also within the first 10 s of a
        // lease whose timeout is shorter than that
        self.beat_now.notify_one();
    }

    pub fn interval(&self) -> Duration {
        match self.interval_ms.load(Ordering::Relaxed) {
            0 => Duration::from_secs(10),
            ms => Duration::from_millis(u64::from(ms)),
        }
    }

    pub fn hold(&self, lease: &LeaseRef) {
        self.held.lock().unwrap().push(*lease);
    }

    pub fn release(&self, lease: &LeaseRef) {
        self.held.lock().unwrap().retain(|l| key(l) != key(lease));
        self.revoked.lock().unwrap().remove(&key(lease));
    }

    pub fn held(&self) -> Vec<LeaseRef> {
        self.held.lock().unwrap().clone()
    }

    pub fn revoke(&self, lease: &LeaseRef) {
        self.revoked.lock().unwrap().insert(key(lease));
        self.revoked_notify.notify_waiters();
    }

    pub fn is_revoked(&self, lease: &LeaseRef) -> bool {
        self.revoked.lock().unwrap().contains(&key(lease))
    }

    pub fn start_draining(&self) {
        self.draining.store(true, Ordering::SeqCst);
        self.beat_now.notify_one();
    }

    pub fn draining(&self) -> bool {
        self.draining.load(Ordering::SeqCst)
    }

    pub fn forgotten(&self) -> bool {
        self.forgotten.load(Ordering::Relaxed)
    }

    pub fn mark_forgotten(&self) {
        self.forgotten.store(true, Ordering::Relaxed);
    }

    pub fn add_scored(&self, tokens: u64, seconds: f64) {
        self.tokens_scored.fetch_add(tokens, Ordering::Relaxed);
        if seconds > 0.0 {
            let rate = tokens as f64 / seconds;
            self.tokens_per_second
                .store(rate.to_bits(), Ordering::Relaxed);
        }
    }

    pub fn set_gpu_memory_used(&self, bytes: u64) {
        self.gpu_memory_used.store(bytes, Ordering::Relaxed);
    }

    pub fn add_downloaded(&self, bytes: u64) {
        self.download_bytes.fetch_add(bytes, Ordering::Relaxed);
    }

    pub fn stats(&self) -> WorkerStats {
        WorkerStats {
            tokens_scored: self.tokens_scored.load(Ordering::Relaxed),
            tokens_per_second: f64::from_bits(self.tokens_per_second.load(Ordering::Relaxed)),
            gpu_memory_used_bytes: self.gpu_memory_used.load(Ordering::Relaxed),
            download_bytes: self.download_bytes.load(Ordering::Relaxed),
        }
    }

    fn request(&self) -> HeartbeatRequest {
        let Registration { worker_id, secret } = self.registration();
        HeartbeatRequest {
            worker_id,
            worker_secret: secret,
            leases: self.held(),
            draining: self.draining(),
            stats: Some(self.stats()),
        }
    }
}

/// One heartbeat. Errors are logged, never fatal: the next beat tries again.
pub async fn beat(client: &mut Client, shared: &Shared, address: &str, observer: &dyn Observer) {
    if shared.worker_id().is_empty() {
        return;
    }
    let timeout = shared.interval().max(Duration::from_secs(5));
    match client.heartbeat(request(shared.request(), timeout)).await {
        Ok(response) => {
            for lease in &response.get_ref().revoked {
                tracing::info!(
                    task = lease.task_id,
                    epoch = lease.epoch,
                    "coordinator revoked the lease; dropping its work"
                );
                shared.revoke(lease);
                observer.revoked(lease);
            }
        }
        Err(status) if status.code() == Code::NotFound => {
            observer.rpc_failed("Heartbeat", &status);
            tracing::warn!(
                coordinator = address,
                "coordinator does not know this worker any more: registering again"
            );
            shared.mark_forgotten();
        }
        Err(status) => {
            observer.rpc_failed("Heartbeat", &status);
            tracing::warn!(
                coordinator = address,
                "heartbeat failed: {}",
                status.message()
            );
        }
    }
}

/// Beats every interval (and at once when `beat_now` is notified) until aborted.
pub async fn run(
    mut client: Client,
    shared: std::sync::Arc<Shared>,
    address: String,
    observer: std::sync::Arc<dyn Observer>,
) {
    loop {
        tokio::select! {
            _ = tokio::time::sleep(shared.interval()) => {}
            _ = shared.beat_now.notified() => {}
        }
        beat(&mut client, &shared, &address, observer.as_ref()).await;
    }
}
