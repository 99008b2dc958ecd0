//! The worker's Prometheus metrics (`worker --metrics-listen ADDR`, `GET /metrics`).
//!
//! * `herd_worker_tokens_total`: tokens scored (prompt + responses, as batched)
//! * `herd_worker_tokens_per_second`: throughput of the last shard
//! * `herd_worker_batches_total`: forward passes
//! * `herd_worker_download_bytes_total`: checkpoint and tokenizer bytes downloaded
//! * `herd_worker_gpu_memory_bytes`: GPU memory in use on this worker's device (nvidia-smi; 0 on CPU)
//! * `herd_worker_tasks_total{outcome}`: leases by outcome (completed, duplicate, dropped, failed)

use std::net::SocketAddr;
use std::sync::{Arc, LazyLock};

use crate::observer::TaskOutcome;
use prometheus::{
    register_gauge, register_int_counter, register_int_counter_vec, register_int_gauge, Gauge,
    IntCounter, IntCounterVec, IntGauge,
};

pub struct Metrics {
    pub tokens: IntCounter,
    pub tokens_per_second: Gauge,
    pub batches: IntCounter,
    pub download_bytes: IntCounter,
    pub gpu_memory: IntGauge,
    pub tasks: IntCounterVec,
}

pub static METRICS: LazyLock<Metrics> = LazyLock::new(|| Metrics {
    tokens: register_int_counter!("herd_worker_tokens_total", "tokens scored").unwrap(),
    tokens_per_second: register_gauge!(
        "herd_worker_tokens_per_second",
        "tokens per second of the last shard"
    )
    .unwrap(),
    batches: register_int_counter!("herd_worker_batches_total", "forward passes").unwrap(),
    download_bytes: register_int_counter!(
        "herd_worker_download_bytes_total",
        "checkpoint and tokenizer bytes downloaded"
    )
    .unwrap(),
    gpu_memory: register_int_gauge!(
        "herd_worker_gpu_memory_bytes",
        "GPU memory in use on the worker's device (0 on CPU)"
    )
    .unwrap(),
    tasks: register_int_counter_vec!("herd_worker_tasks_total", "leases by outcome", &["outcome"])
        .unwrap(),
});

/// A lease ended this way.
pub fn task_outcome(outcome: TaskOutcome) {
    METRICS.tasks.with_label_values(&[outcome.as_str()]).inc();
}

/// Starts `GET /metrics` on `addr`; the GPU memory gauge reads CUDA device `cuda`.
pub async fn serve(addr: SocketAddr, cuda: Option<usize>) -> anyhow::Result<SocketAddr> {
    LazyLock::force(&METRICS);
    for outcome in TaskOutcome::ALL {
        METRICS.tasks.with_label_values(&[outcome.as_str()]);
    }
    let refresh = move || {
        METRICS
            .gpu_memory
            .set(super::gpu::query(cuda).map_or(0, |m| m.used_bytes) as i64);
    };
    let bound = herd_telemetry::serve_metrics(addr, Arc::new(refresh)).await?;
    tracing::info!(addr = %bound, "metrics on http://{bound}/metrics");
    Ok(bound)
}
