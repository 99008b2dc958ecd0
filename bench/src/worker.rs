//! The simulated workers: each runs the real agent loop of the `worker` binary (herd-agent:
//! Register, the Lease loop, heartbeats, StreamResults tagged with the lease, Complete, resending
//! after errors, draining on stop) over its own connection, with a STUB scorer (see
//! [`stub_scorer`]): it sleeps `ms_per_example` per example to stand in for a GPU and makes
//! deterministic fake rewards. Nothing is loaded or scored. The measurements come through the
//! agent's [`Observer`] hooks.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use herd_agent::{AgentConfig, Hooks, Observer, SyntheticScorer, TaskOutcome};
use herd_rpc::security::ClientSecurity;
use herd_rpc::v1::{ExampleReward, Lease, LeaseRef};
use tokio::sync::{watch, Notify};
use tonic::Status;

/// How every simulated worker of a run behaves.
#[derive(Clone, Debug)]
pub struct SimConfig {
    pub url: String,
    /// STUB scoring time per example (0: stream as fast as possible)
    pub ms_per_example: f64,
    /// rewards per ResultBatch message
    pub stream_batch: usize,
    /// each worker's checkpoint cache goes below this (the placeholder checkpoints are local
    /// folders, so nothing is ever downloaded into it)
    pub cache_root: PathBuf,
}

/// Acknowledged results: examples `start..end` of `task` (of checkpoint `checkpoint`).
#[derive(Clone, Copy, Debug)]
pub struct AckRange {
    pub checkpoint: i64,
    pub task: i64,
    pub start: u32,
    pub end: u32,
}

/// Shared by all workers of one run: the stop they drain on, and what they observed.
pub struct Shared {
    /// set by the driver: every agent drains (no new lease, the current one given back) and ends
    pub stop: watch::Sender<bool>,
    /// keep every acknowledged (checkpoint, task, index range) for the state-file check
    record_acks: bool,
    /// Complete answered `first = true`
    pub completed_first: AtomicU64,
    pub completed_dup: AtomicU64,
    /// Complete with first=true reached this many: `all_done` fires
    pub tasks_target: AtomicU64,
    pub all_done: Notify,
    pub done_at: Mutex<Option<Instant>>,
    pub stored: AtomicU64,
    pub duplicates: AtomicU64,
    pub rewards_sent: AtomicU64,
    pub acks: Mutex<Vec<AckRange>>,
    pub stats: Mutex<Stats>,
}

/// Per-run counters merged from every worker.
#[derive(Default, Debug)]
pub struct Stats {
    /// Lease round trips (µs) that returned a lease
    pub lease_granted_us: Vec<u64>,
    /// when each of those was sent, in the same order
    pub lease_granted_at: Vec<Instant>,
    /// Lease round trips (µs) answered retry_after / shutdown
    pub lease_other_us: Vec<u64>,
    pub leases: u64,
    pub stream_calls_ok: u64,
    pub stream_calls_failed: u64,
    /// leases whose results were dropped: stale, revoked, another registration's, or the
    /// coordinator forgot the worker
    pub leases_dropped: u64,
    pub revoked: u64,
    pub reregistered: u64,
    pub rpc_errors: HashMap<String, u64>,
    pub first_lease_at: Option<Instant>,
    pub last_ack_at: Option<Instant>,
}

impl Shared {
    pub fn new(tasks_target: u64, record_acks: bool) -> Self {
        Shared {
            stop: watch::channel(false).0,
            record_acks,
            completed_first: AtomicU64::new(0),
            completed_dup: AtomicU64::new(0),
            tasks_target: AtomicU64::new(tasks_target),
            all_done: Notify::new(),
            done_at: Mutex::new(None),
            stored: AtomicU64::new(0),
            duplicates: AtomicU64::new(0),
            rewards_sent: AtomicU64::new(0),
            acks: Mutex::new(Vec::new()),
            stats: Mutex::new(Stats::default()),
        }
    }
}

/// Consecutive runs of `indices` as `start..end` ranges.
fn ranges(indices: impl IntoIterator<Item = u32>) -> Vec<(u32, u32)> {
    let mut out: Vec<(u32, u32)> = Vec::new();
    for index in indices {
        match out.last_mut() {
            Some((_, end)) if *end == index => *end += 1,
            _ => out.push((index, index + 1)),
        }
    }
    out
}

impl Observer for Shared {
    fn lease_answered(&self, asked: Instant, took: Duration, granted: bool) {
        let us = took.as_micros() as u64;
        let mut stats = self.stats.lock().unwrap();
        if granted {
            stats.lease_granted_us.push(us);
            stats.lease_granted_at.push(asked);
            stats.leases += 1;
            stats.first_lease_at.get_or_insert(asked);
        } else {
            stats.lease_other_us.push(us);
        }
    }

    fn rpc_failed(&self, rpc: &'static str, status: &Status) {
        let mut stats = self.stats.lock().unwrap();
        *stats
            .rpc_errors
            .entry(format!("{rpc}: {:?}", status.code()))
            .or_default() += 1;
        if rpc == "StreamResults" {
            stats.stream_calls_failed += 1;
        }
    }

    fn registered(&self, again: bool) {
        if again {
            self.stats.lock().unwrap().reregistered += 1;
        }
    }

    fn revoked(&self, _lease: &LeaseRef) {
        self.stats.lock().unwrap().revoked += 1;
    }

    fn results_acknowledged(
        &self,
        lease: &Lease,
        rewards: &[ExampleReward],
        stored: u64,
        duplicates: u64,
    ) {
        self.stored.fetch_add(stored, Ordering::Relaxed);
        self.duplicates.fetch_add(duplicates, Ordering::Relaxed);
        self.rewards_sent
            .fetch_add(rewards.len() as u64, Ordering::Relaxed);
        {
            let mut stats = self.stats.lock().unwrap();
            stats.stream_calls_ok += 1;
            stats.last_ack_at = Some(Instant::now());
        }
        if self.record_acks {
            let checkpoint = lease.checkpoint.as_ref().map_or(0, |c| c.id);
            let task = lease.lease.unwrap_or_default().task_id;
            let acked = ranges(rewards.iter().map(|r| r.index));
            let mut acks = self.acks.lock().unwrap();
            acks.extend(acked.into_iter().map(|(start, end)| AckRange {
                checkpoint,
                task,
                start,
                end,
            }));
        }
    }

    fn task_ended(&self, _lease: &Lease, outcome: TaskOutcome) {
        match outcome {
            TaskOutcome::Completed => {
                let n = self.completed_first.fetch_add(1, Ordering::SeqCst) + 1;
                if n == self.tasks_target.load(Ordering::SeqCst) {
                    *self.done_at.lock().unwrap() = Some(Instant::now());
                    self.all_done.notify_waiters();
                }
            }
            TaskOutcome::Duplicate => {
                self.completed_dup.fetch_add(1, Ordering::Relaxed);
            }
            TaskOutcome::Dropped => self.stats.lock().unwrap().leases_dropped += 1,
            TaskOutcome::Failed => {}
        }
    }
}

/// STUB scores, flagged as such: a deterministic function of (checkpoint, example index), with
/// chosen > rejected for about 70% of examples. No model is involved.
pub fn stub_scores(checkpoint: i64, index: u32) -> (f64, f64) {
    let mut h = (checkpoint as u64)
        .wrapping_mul(0x9E37_79B9_7F4A_7C15)
        .wrapping_add(index as u64);
    h ^= h >> 33;
    h = h.wrapping_mul(0xFF51_AFD7_ED55_8CCD);
    h ^= h >> 33;
    let u = (h % 10_000) as f64 / 10_000.0;
    let chosen = u * 4.0 - 2.0;
    let rejected = chosen + if u < 0.7 { -0.5 } else { 0.5 };
    (chosen, rejected)
}

/// The STUB scorer: [`stub_scores`] after `ms_per_example` per example.
pub type StubScorer = SyntheticScorer<fn(i64, u32) -> (f64, f64)>;

pub fn stub_scorer(ms_per_example: f64) -> StubScorer {
    SyntheticScorer {
        scores: stub_scores,
        delay: Duration::from_secs_f64(ms_per_example / 1000.0),
    }
}

/// Runs simulated worker `n` (the real agent loop) until the driver stops it.
pub async fn run(
    n: usize,
    cfg: Arc<SimConfig>,
    scorer: Arc<StubScorer>,
    shared: Arc<Shared>,
) -> anyhow::Result<()> {
    let config = AgentConfig {
        coordinator: cfg.url.clone(),
        name: format!("sim-worker-{n:03}"),
        cache_dir: cfg.cache_root.join(format!("sim-worker-{n:03}")),
        cache_bytes: 1 << 30,
        cuda_device: None,
        gpus: 0,
        scorer_devices: 1,
        bytes_per_parameter: 4,
        memory_limit_bytes: None,
        stream_batch: cfg.stream_batch,
        // on stop, the current lease is given back at once
        drain_grace: Duration::ZERO,
        metrics_listen: None,
        // the simulated coordinator runs with --insecure-no-auth on loopback
        security: ClientSecurity::default(),
    };
    let hooks = Hooks {
        observer: shared.clone(),
        drain: Some(shared.stop.subscribe()),
    };
    herd_agent::run_with(config, scorer, hooks).await?;
    Ok(())
}

/// p-th percentile (0..=100) of a sample, nearest rank.
pub fn percentile(sorted: &[u64], p: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn acknowledged_indices_collapse_into_ranges() {
        assert_eq!(ranges([3, 4, 5, 9, 10, 2]), vec![(3, 6), (9, 11), (2, 3)]);
        assert_eq!(ranges([]), Vec::<(u32, u32)>::new());
    }
}
