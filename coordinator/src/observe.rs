//! The coordinator's Prometheus metrics (`coord serve --metrics-listen ADDR`, `GET /metrics`):
//! see [`Metrics`]. The sweeps' traces are kept by [`crate::app::traces`].

use std::collections::HashMap;
use std::sync::{Arc, LazyLock};

use herd_rpc::v1::FailureKind;
use herd_telemetry as telemetry;
use prometheus::{
    register_gauge_vec, register_int_counter, register_int_counter_vec, register_int_gauge,
    register_int_gauge_vec, GaugeVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec,
};

use crate::domain::TaskState;
use crate::state::Store;

/// The coordinator's metrics, registered in the default registry on first use.
pub struct Metrics {
    /// herd_tasks{state}: tasks of every sweep by state (pending, leased, done, failed)
    pub tasks: IntGaugeVec,
    /// herd_examples{state}: examples total / stored
    pub examples: IntGaugeVec,
    /// herd_sweeps{state}
    pub sweeps: IntGaugeVec,
    /// herd_workers: live workers (heard from within the lease timeout, not draining)
    pub workers: IntGauge,
    /// herd_results_stored_total: per-example rewards stored (duplicates not counted)
    pub results_stored: IntCounter,
    /// herd_result_duplicates_total
    pub result_duplicates: IntCounter,
    /// herd_leases_total
    pub leases: IntCounter,
    /// herd_tasks_completed_total
    pub completed: IntCounter,
    /// herd_lease_expiries_total: leases the reaper expired (no heartbeat in time)
    pub lease_expiries: IntCounter,
    /// herd_task_failures_total{reason}: Fail calls by kind
    pub failures: IntCounterVec,
    /// herd_coord_worker_*{worker}: what each worker reported in its last heartbeat
    pub worker_tokens_per_second: GaugeVec,
    pub worker_tokens: GaugeVec,
    pub worker_gpu_memory: GaugeVec,
    pub worker_download_bytes: GaugeVec,
}

pub static METRICS: LazyLock<Metrics> = LazyLock::new(|| Metrics {
    tasks: register_int_gauge_vec!("herd_tasks", "tasks by state", &["state"]).unwrap(),
    examples: register_int_gauge_vec!("herd_examples", "examples by state", &["state"]).unwrap(),
    sweeps: register_int_gauge_vec!("herd_sweeps", "sweeps by state", &["state"]).unwrap(),
    workers: register_int_gauge!("herd_workers", "live workers").unwrap(),
    results_stored: register_int_counter!(
        "herd_results_stored_total",
        "per-example rewards stored"
    )
    .unwrap(),
    result_duplicates: register_int_counter!(
        "herd_result_duplicates_total",
        "per-example rewards received again (ignored)"
    )
    .unwrap(),
    leases: register_int_counter!("herd_leases_total", "leases granted").unwrap(),
    completed: register_int_counter!("herd_tasks_completed_total", "Complete calls accepted")
        .unwrap(),
    lease_expiries: register_int_counter!(
        "herd_lease_expiries_total",
        "leases expired without a heartbeat"
    )
    .unwrap(),
    failures: register_int_counter_vec!(
        "herd_task_failures_total",
        "task failures reported by workers, by kind",
        &["reason"]
    )
    .unwrap(),
    worker_tokens_per_second: register_gauge_vec!(
        "herd_coord_worker_tokens_per_second",
        "tokens/s of each worker's last shard (from heartbeats)",
        &["worker"]
    )
    .unwrap(),
    worker_tokens: register_gauge_vec!(
        "herd_coord_worker_tokens",
        "tokens scored by each worker (from heartbeats)",
        &["worker"]
    )
    .unwrap(),
    worker_gpu_memory: register_gauge_vec!(
        "herd_coord_worker_gpu_memory_bytes",
        "GPU memory in use on each worker (from heartbeats)",
        &["worker"]
    )
    .unwrap(),
    worker_download_bytes: register_gauge_vec!(
        "herd_coord_worker_download_bytes",
        "checkpoint bytes each worker downloaded (from heartbeats)",
        &["worker"]
    )
    .unwrap(),
});

/// Sets the gauges from the state file (before each scrape).
pub fn refresh(store: &Store) {
    let m = &*METRICS;
    let now = crate::app::now_ms();
    let Ok(status) = store.status(None, now) else {
        return;
    };
    let (mut total, mut done, mut failed, mut leased) = (0i64, 0i64, 0i64, 0i64);
    let (mut examples_total, mut examples_stored) = (0i64, 0i64);
    let mut sweeps: HashMap<&str, i64> = HashMap::new();
    for sweep in &status.sweeps {
        total += i64::from(sweep.tasks_total);
        done += i64::from(sweep.tasks_done);
        failed += i64::from(sweep.tasks_failed);
        leased += i64::from(sweep.tasks_leased);
        examples_total += sweep.examples_total as i64;
        examples_stored += sweep.examples_stored as i64;
        *sweeps.entry(sweep.state.as_str()).or_default() += 1;
    }
    m.tasks
        .with_label_values(&[TaskState::Done.as_str()])
        .set(done);
    m.tasks
        .with_label_values(&[TaskState::Failed.as_str()])
        .set(failed);
    m.tasks
        .with_label_values(&[TaskState::Leased.as_str()])
        .set(leased);
    m.tasks
        .with_label_values(&[TaskState::Pending.as_str()])
        .set((total - done - failed - leased).max(0));
    m.examples.with_label_values(&["total"]).set(examples_total);
    m.examples
        .with_label_values(&["stored"])
        .set(examples_stored);
    m.sweeps.reset();
    for (state, n) in sweeps {
        m.sweeps.with_label_values(&[state]).set(n);
    }
    if let Ok(live) = store.live_workers(now) {
        m.workers.set(live.len() as i64);
    }
    for worker in &status.workers {
        let Some(stats) = &worker.stats else { continue };
        let name = if worker.name.is_empty() {
            worker.id.as_str()
        } else {
            worker.name.as_str()
        };
        let labels = [name];
        m.worker_tokens_per_second
            .with_label_values(&labels)
            .set(stats.tokens_per_second);
        m.worker_tokens
            .with_label_values(&labels)
            .set(stats.tokens_scored as f64);
        m.worker_gpu_memory
            .with_label_values(&labels)
            .set(stats.gpu_memory_used_bytes as f64);
        m.worker_download_bytes
            .with_label_values(&labels)
            .set(stats.download_bytes as f64);
    }
}

/// The `reason` label of `herd_task_failures_total` for a Fail call of this kind.
pub fn failure_label(kind: FailureKind) -> String {
    kind.as_str_name()
        .trim_start_matches("FAILURE_KIND_")
        .to_lowercase()
}

/// Starts `GET /metrics` on `addr` over `store`.
pub async fn serve_metrics(
    addr: std::net::SocketAddr,
    store: Arc<Store>,
) -> anyhow::Result<std::net::SocketAddr> {
    // register before the first scrape, so counters read 0 rather than missing; the failure
    // counter with every reason, so a sweep without failures has a (zero) series per reason and
    // the dashboard's failures panel shows zeros, not "no data"
    LazyLock::force(&METRICS);
    for kind in [
        FailureKind::Transient,
        FailureKind::Checkpoint,
        FailureKind::Released,
        FailureKind::Unspecified,
    ] {
        METRICS.failures.with_label_values(&[&failure_label(kind)]);
    }
    let bound = telemetry::serve_metrics(addr, Arc::new(move || refresh(&store))).await?;
    tracing::info!(addr = %bound, "metrics on http://{bound}/metrics");
    Ok(bound)
}
