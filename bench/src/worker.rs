//! A simulated worker speaking the real `Workers` protocol over its own tonic channel:
//! Register, a Lease loop, a heartbeat task, StreamResults (client stream, tagged with the lease),
//! Complete. The scoring step is a STUB (see [`stub_scores`]): it sleeps `ms_per_example` per
//! example to stand in for a GPU and makes deterministic fake rewards. Nothing is loaded or scored.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use herd_rpc::v1::lease_response::Outcome;
use herd_rpc::v1::workers_client::WorkersClient;
use herd_rpc::v1::{
    Capabilities, CompleteRequest, ExampleReward, HeartbeatRequest, Lease, LeaseRef, LeaseRequest,
    RegisterRequest, ResultBatch,
};
use tokio::sync::{mpsc, Notify};
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::{Channel, Endpoint};
use tonic::Code;

/// How every simulated worker of a run behaves.
#[derive(Clone, Debug)]
pub struct SimConfig {
    pub url: String,
    /// STUB scoring time per example (0: stream as fast as possible)
    pub ms_per_example: f64,
    /// rewards per ResultBatch message
    pub stream_batch: usize,
    /// messages per StreamResults call (0: one call per lease)
    pub messages_per_call: usize,
    /// keep every acknowledged (checkpoint, task, index range) for the state-file check
    pub record_acks: bool,
}

/// Acknowledged results: examples `start..end` of `task` (of checkpoint `checkpoint`).
#[derive(Clone, Copy, Debug)]
pub struct AckRange {
    pub checkpoint: i64,
    pub task: i64,
    pub start: u32,
    pub end: u32,
}

/// Shared by all workers of one run.
#[derive(Default)]
pub struct Shared {
    /// set by the driver: take no new lease, end the current StreamResults call, return
    pub stop: AtomicBool,
    pub stopped: Notify,
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
    pub leases_lost: u64,
    pub revoked: u64,
    pub reregistered: u64,
    pub rpc_errors: HashMap<String, u64>,
    pub first_lease_at: Option<Instant>,
    pub last_ack_at: Option<Instant>,
}

impl Shared {
    fn stopping(&self) -> bool {
        self.stop.load(Ordering::Relaxed)
    }

    fn error(&self, what: &str, code: Code) {
        let mut stats = self.stats.lock().unwrap();
        *stats
            .rpc_errors
            .entry(format!("{what}: {code:?}"))
            .or_default() += 1;
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

struct Held {
    leases: Mutex<HashMap<(i64, u64), Arc<AtomicBool>>>,
}

/// The id and secret Register answered: every later call carries both.
#[derive(Clone, Default)]
struct Me {
    id: String,
    secret: String,
}

/// Runs one simulated worker until `shared.stop` is set or the coordinator says shutdown.
pub async fn run(n: usize, cfg: Arc<SimConfig>, shared: Arc<Shared>) -> anyhow::Result<()> {
    // each worker has its own connection, like separate machines
    let channel = Endpoint::from_shared(cfg.url.clone())?
        .tcp_nodelay(true)
        .connect_lazy();
    let mut client = WorkersClient::new(channel.clone());
    let name = format!("sim-worker-{n:03}");
    let Some((mut me, hb)) = register(&mut client, &name, &shared).await else {
        return Ok(());
    };
    let held = Arc::new(Held {
        leases: Mutex::new(HashMap::new()),
    });
    let me_hb = Arc::new(Mutex::new(me.clone()));
    let heartbeat = tokio::spawn(heartbeats(
        channel.clone(),
        me_hb.clone(),
        held.clone(),
        shared.clone(),
        hb,
    ));
    let mut backoff = Duration::from_millis(20);
    while !shared.stopping() {
        let started = Instant::now();
        let reply = client
            .lease(LeaseRequest {
                worker_id: me.id.clone(),
                worker_secret: me.secret.clone(),
                cached_checkpoints: vec![],
            })
            .await;
        let us = started.elapsed().as_micros() as u64;
        match reply {
            Ok(reply) => {
                backoff = Duration::from_millis(20);
                match reply.into_inner().outcome {
                    Some(Outcome::Lease(lease)) => {
                        {
                            let mut stats = shared.stats.lock().unwrap();
                            stats.lease_granted_us.push(us);
                            stats.lease_granted_at.push(started);
                            stats.leases += 1;
                            stats.first_lease_at.get_or_insert(started);
                        }
                        work(&mut client, &me, lease, &cfg, &shared, &held).await;
                    }
                    Some(Outcome::RetryAfterMs(ms)) => {
                        shared.stats.lock().unwrap().lease_other_us.push(us);
                        let wait = Duration::from_millis(ms.clamp(5, 1000) as u64);
                        tokio::select! {
                            _ = tokio::time::sleep(wait) => {}
                            _ = shared.stopped.notified() => {}
                        }
                    }
                    Some(Outcome::Shutdown(_)) | None => {
                        shared.stats.lock().unwrap().lease_other_us.push(us);
                        break;
                    }
                }
            }
            Err(status) => {
                shared.error("Lease", status.code());
                if matches!(
                    status.code(),
                    Code::NotFound
                        | Code::FailedPrecondition
                        | Code::Unauthenticated
                        | Code::PermissionDenied
                        | Code::InvalidArgument
                ) {
                    // the coordinator does not know us (any more): register again
                    match register(&mut client, &name, &shared).await {
                        Some((again, _)) => {
                            me = again;
                            *me_hb.lock().unwrap() = me.clone();
                            shared.stats.lock().unwrap().reregistered += 1;
                        }
                        None => break,
                    }
                } else {
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_millis(500));
                }
            }
        }
    }
    heartbeat.abort();
    Ok(())
}

async fn register(
    client: &mut WorkersClient<Channel>,
    name: &str,
    shared: &Shared,
) -> Option<(Me, Duration)> {
    let mut backoff = Duration::from_millis(20);
    while !shared.stopping() {
        let reply = client
            .register(RegisterRequest {
                name: name.to_string(),
                capabilities: Some(Capabilities {
                    device: "sim".into(),
                    gpus: 1,
                    version: "herd-sim (stub scoring)".into(),
                    ..Default::default()
                }),
            })
            .await;
        match reply {
            Ok(reply) => {
                let reply = reply.into_inner();
                let hb = Duration::from_millis(reply.heartbeat_interval_ms.max(50) as u64);
                let me = Me {
                    id: reply.worker_id,
                    secret: reply.worker_secret,
                };
                return Some((me, hb));
            }
            Err(status) => {
                shared.error("Register", status.code());
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_millis(500));
            }
        }
    }
    None
}

async fn heartbeats(
    channel: Channel,
    me: Arc<Mutex<Me>>,
    held: Arc<Held>,
    shared: Arc<Shared>,
    every: Duration,
) {
    let mut client = WorkersClient::new(channel);
    loop {
        tokio::time::sleep(every).await;
        let leases: Vec<LeaseRef> = held
            .leases
            .lock()
            .unwrap()
            .keys()
            .map(|&(task_id, epoch)| LeaseRef { task_id, epoch })
            .collect();
        let Me { id, secret } = me.lock().unwrap().clone();
        match client
            .heartbeat(HeartbeatRequest {
                worker_id: id,
                worker_secret: secret,
                leases,
                draining: false,
                stats: None,
            })
            .await
        {
            Ok(reply) => {
                let map = held.leases.lock().unwrap();
                for r in reply.into_inner().revoked {
                    if let Some(flag) = map.get(&(r.task_id, r.epoch)) {
                        flag.store(true, Ordering::Relaxed);
                        shared.stats.lock().unwrap().revoked += 1;
                    }
                }
            }
            Err(status) => shared.error("Heartbeat", status.code()),
        }
    }
}

/// One lease: STUB-score, stream, complete. Returns when done, lost, revoked or stopped.
async fn work(
    client: &mut WorkersClient<Channel>,
    me: &Me,
    lease: Lease,
    cfg: &SimConfig,
    shared: &Shared,
    held: &Held,
) {
    let Some(lease_ref) = lease.lease else {
        return;
    };
    let key = (lease_ref.task_id, lease_ref.epoch);
    let revoked = Arc::new(AtomicBool::new(false));
    held.leases.lock().unwrap().insert(key, revoked.clone());
    let checkpoint = lease.checkpoint.as_ref().map(|c| c.id).unwrap_or_default();
    let ids: HashMap<u32, &str> = lease
        .examples
        .iter()
        .map(|e| (e.index, e.id.as_str()))
        .collect();
    let indices: Vec<u32> = (lease.shard_start..lease.shard_end).collect();
    let batches: Vec<&[u32]> = indices.chunks(cfg.stream_batch.max(1)).collect();
    let per_call = if cfg.messages_per_call == 0 {
        batches.len().max(1)
    } else {
        cfg.messages_per_call
    };
    let score_start = Instant::now();
    let mut scored = 0usize; // examples whose STUB scoring time has elapsed
    let mut finished = true;
    'calls: for call in batches.chunks(per_call) {
        let mut backoff = Duration::from_millis(20);
        loop {
            if revoked.load(Ordering::Relaxed) || shared.stopping() {
                finished = false;
                break 'calls;
            }
            let (tx, rx) = mpsc::channel::<ResultBatch>(4);
            let sent: Mutex<Vec<(u32, u32)>> = Mutex::new(Vec::new());
            let producer = async {
                for batch in call {
                    let (Some(&first), Some(&last)) = (batch.first(), batch.last()) else {
                        continue;
                    };
                    let end_offset = (last - lease.shard_start + 1) as usize;
                    if end_offset > scored {
                        // STUB scoring: sleep as long as a GPU would take for these examples
                        if cfg.ms_per_example > 0.0 {
                            let due = score_start
                                + Duration::from_secs_f64(
                                    end_offset as f64 * cfg.ms_per_example / 1000.0,
                                );
                            tokio::time::sleep_until(due.into()).await;
                        }
                        scored = end_offset;
                    }
                    if revoked.load(Ordering::Relaxed) || shared.stopping() {
                        break;
                    }
                    let rewards = batch
                        .iter()
                        .map(|&index| {
                            let (c, r) = stub_scores(checkpoint, index);
                            ExampleReward {
                                example_id: ids
                                    .get(&index)
                                    .map(|s| s.to_string())
                                    .unwrap_or_else(|| index.to_string()),
                                scores_chosen: vec![c],
                                scores_rejected: vec![r],
                                index,
                            }
                        })
                        .collect();
                    let message = ResultBatch {
                        worker_id: me.id.clone(),
                        worker_secret: me.secret.clone(),
                        lease: Some(lease_ref),
                        rewards,
                    };
                    if tx.send(message).await.is_err() {
                        break;
                    }
                    sent.lock().unwrap().push((first, last + 1));
                }
                drop(tx);
            };
            let mut call_client = client.clone();
            let request = call_client.stream_results(ReceiverStream::new(rx));
            let (reply, ()) = tokio::join!(request, producer);
            let sent = sent.into_inner().unwrap();
            match reply {
                Ok(reply) => {
                    let reply = reply.into_inner();
                    let now = Instant::now();
                    let n: u64 = sent.iter().map(|(a, b)| (b - a) as u64).sum();
                    shared.stored.fetch_add(reply.stored, Ordering::Relaxed);
                    shared
                        .duplicates
                        .fetch_add(reply.duplicates, Ordering::Relaxed);
                    shared.rewards_sent.fetch_add(n, Ordering::Relaxed);
                    {
                        let mut stats = shared.stats.lock().unwrap();
                        stats.stream_calls_ok += 1;
                        stats.last_ack_at = Some(now);
                    }
                    if cfg.record_acks {
                        let mut acks = shared.acks.lock().unwrap();
                        acks.extend(sent.iter().map(|&(start, end)| AckRange {
                            checkpoint,
                            task: lease_ref.task_id,
                            start,
                            end,
                        }));
                    }
                    let whole = sent.len() == call.len();
                    if !whole {
                        finished = false;
                        break 'calls;
                    }
                    continue 'calls;
                }
                Err(status) => {
                    shared.error("StreamResults", status.code());
                    shared.stats.lock().unwrap().stream_calls_failed += 1;
                    if matches!(
                        status.code(),
                        Code::FailedPrecondition | Code::NotFound | Code::PermissionDenied
                    ) {
                        // stale, unknown or another registration's lease: nothing of it is ours
                        shared.stats.lock().unwrap().leases_lost += 1;
                        finished = false;
                        break 'calls;
                    }
                    // coordinator gone (kill -9) or overloaded: send the same results again
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_millis(500));
                }
            }
        }
    }
    if finished {
        complete(client, me, lease_ref, shared).await;
    }
    held.leases.lock().unwrap().remove(&key);
}

async fn complete(
    client: &mut WorkersClient<Channel>,
    me: &Me,
    lease_ref: LeaseRef,
    shared: &Shared,
) {
    let mut backoff = Duration::from_millis(20);
    loop {
        let reply = client
            .complete(CompleteRequest {
                worker_id: me.id.clone(),
                worker_secret: me.secret.clone(),
                lease: Some(lease_ref),
                model_type: "Seq. Classifier".into(),
                chat_template: "tulu".into(),
            })
            .await;
        match reply {
            Ok(reply) => {
                if reply.into_inner().first {
                    let n = shared.completed_first.fetch_add(1, Ordering::SeqCst) + 1;
                    if n == shared.tasks_target.load(Ordering::SeqCst) {
                        *shared.done_at.lock().unwrap() = Some(Instant::now());
                        shared.all_done.notify_waiters();
                    }
                } else {
                    shared.completed_dup.fetch_add(1, Ordering::Relaxed);
                }
                return;
            }
            Err(status) => {
                shared.error("Complete", status.code());
                if matches!(
                    status.code(),
                    Code::FailedPrecondition | Code::NotFound | Code::PermissionDenied
                ) || shared.stopping()
                {
                    return;
                }
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_millis(500));
            }
        }
    }
}

/// p-th percentile (0..=100) of a sample, nearest rank.
pub fn percentile(sorted: &[u64], p: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}
