//! Observability across processes: spans exported over OTLP/gRPC by `coord serve` and a worker
//! reach an in-process collector as one trace per sweep (the worker's task span a child of the
//! coordinator's lease span), and the Prometheus counters on both `/metrics` endpoints move as the
//! sweep progresses and end at the sweep's totals.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use herd_rpc::v1::SweepState;
use herd_storage::gcs::GcsClient;
use herd_tests::fixture::{SweepFixture, BUCKET};
use herd_tests::procs::{free_port, spawn_worker, CoordSettings, Coordinator};
use herd_tests::scenario::{start_gcs, SweepRun};
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::any_value::Value;
use opentelemetry_proto::tonic::common::v1::KeyValue;

const TIMEOUT: Duration = Duration::from_secs(300);

/// One span as the collector got it.
#[derive(Clone, Debug)]
struct Got {
    service: String,
    name: String,
    trace_id: Vec<u8>,
    span_id: Vec<u8>,
    parent: Vec<u8>,
    attributes: HashMap<String, Value>,
}

impl Got {
    fn int(&self, key: &str) -> Option<i64> {
        match self.attributes.get(key)? {
            Value::IntValue(v) => Some(*v),
            Value::StringValue(s) => s.parse().ok(),
            Value::DoubleValue(d) => Some(*d as i64),
            _ => None,
        }
    }
}

#[derive(Clone, Default)]
struct Collector {
    spans: Arc<Mutex<Vec<Got>>>,
}

fn attributes(list: &[KeyValue]) -> HashMap<String, Value> {
    list.iter()
        .filter_map(|kv| Some((kv.key.clone(), kv.value.clone()?.value?)))
        .collect()
}

#[tonic::async_trait]
impl TraceService for Collector {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        let mut spans = self.spans.lock().unwrap();
        for resource_spans in request.into_inner().resource_spans {
            let resource = resource_spans
                .resource
                .map(|r| attributes(&r.attributes))
                .unwrap_or_default();
            let service = match resource.get("service.name") {
                Some(Value::StringValue(s)) => s.clone(),
                _ => String::new(),
            };
            for scope in resource_spans.scope_spans {
                for span in scope.spans {
                    spans.push(Got {
                        service: service.clone(),
                        name: span.name.clone(),
                        trace_id: span.trace_id.clone(),
                        span_id: span.span_id.clone(),
                        parent: span.parent_span_id.clone(),
                        attributes: attributes(&span.attributes),
                    });
                }
            }
        }
        Ok(tonic::Response::new(ExportTraceServiceResponse {
            partial_success: None,
        }))
    }
}

async fn start_collector() -> (Collector, SocketAddr) {
    let collector = Collector::default();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let service = TraceServiceServer::new(collector.clone());
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(service)
            .serve_with_incoming(tokio_stream_of(listener)),
    );
    (collector, addr)
}

fn tokio_stream_of(listener: tokio::net::TcpListener) -> tonic::transport::server::TcpIncoming {
    tonic::transport::server::TcpIncoming::from(listener)
}

/// A fixture of `checkpoints` tiny EasyLM runs (the first 15 rows of each RewardBench file) uploaded to the emulator, in
/// shards of 16.
async fn fixture(dir: &std::path::Path, gcs: &str, checkpoints: usize) -> std::path::PathBuf {
    let fixture = SweepFixture::new(&dir.join("fixture"), checkpoints, 15).unwrap();
    let client = GcsClient::with_endpoint(gcs).await.unwrap();
    fixture.upload(&client, BUCKET).await.unwrap();
    fixture.write_presets(BUCKET, 16).unwrap()
}

fn base_env(gcs: &str) -> Vec<(String, String)> {
    vec![
        ("STORAGE_EMULATOR_HOST".into(), gcs.into()),
        ("RUST_LOG".into(), "info".into()),
        ("HF_HUB_OFFLINE".into(), "1".into()),
    ]
}

fn sweep_run(dir: &std::path::Path, env: Vec<(String, String)>) -> SweepRun {
    let coord = Coordinator::start(dir, env, CoordSettings::default());
    SweepRun {
        dir: dir.to_path_buf(),
        env: coord.worker_env(),
        worker_target: coord.url(),
        coord,
        workers: Vec::new(),
    }
}

fn add_worker(run: &mut SweepRun, extra: &[(&str, String)]) {
    let n = run.workers.len();
    let name = format!("worker-{n}");
    let mut env = run.env.clone();
    env.extend(extra.iter().map(|(k, v)| (k.to_string(), v.clone())));
    let proc = spawn_worker(
        &name,
        &run.worker_target,
        &run.dir.join("caches").join(&name),
        &run.dir.join("logs"),
        &env,
    );
    run.workers.push(proc);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sweep_is_one_trace_across_coordinator_and_worker() {
    let Some(gcs) = start_gcs() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let presets = fixture(tmp.path(), &gcs.endpoint(), 2).await;
    let (collector, addr) = start_collector().await;

    let mut env = base_env(&gcs.endpoint());
    env.push((
        "OTEL_EXPORTER_OTLP_ENDPOINT".into(),
        format!("http://{addr}"),
    ));
    // export every 200 ms instead of every 5 s
    env.push(("OTEL_BSP_SCHEDULE_DELAY".into(), "200".into()));
    let mut run = sweep_run(&tmp.path().join("run"), env);
    run.submit(&presets);
    add_worker(&mut run, &[]);
    let status = run.finish_done(TIMEOUT).await;
    let tasks = status.tasks_total as usize;
    assert!(tasks > 1, "{status:?}");

    // wait for the exporters' next batches
    let wanted = |spans: &[Got]| {
        let count = |service: &str, name: &str| {
            spans
                .iter()
                .filter(|s| s.service == service && s.name == name)
                .count()
        };
        count("herd-coordinator", "submit") == 1
            && count("herd-coordinator", "report") >= 1
            && count("herd-coordinator", "merge") >= tasks
            && count("herd-worker", "task") >= tasks
            && count("herd-worker", "stream") >= tasks
    };
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let spans = loop {
        let spans = collector.spans.lock().unwrap().clone();
        if wanted(&spans) {
            break spans;
        }
        if tokio::time::Instant::now() > deadline {
            let names: Vec<String> = spans
                .iter()
                .map(|s| format!("{}:{}", s.service, s.name))
                .collect();
            panic!("spans missing; got {names:?}\n{}", run.logs());
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };

    let named = |service: &str, name: &str| -> Vec<&Got> {
        spans
            .iter()
            .filter(|s| s.service == service && s.name == name)
            .collect()
    };
    let submit = named("herd-coordinator", "submit")[0];
    assert!(submit.parent.is_empty(), "submit is the sweep's root");
    let trace = submit.trace_id.clone();
    let by_id: HashMap<&[u8], &Got> = spans.iter().map(|s| (s.span_id.as_slice(), s)).collect();
    let parent_of = |span: &Got| -> &Got {
        by_id
            .get(span.parent.as_slice())
            .unwrap_or_else(|| panic!("{} has no parent among the spans received", span.name))
    };

    // the coordinator's spans of this sweep
    let plan = named("herd-coordinator", "plan");
    assert_eq!(plan.len(), 1);
    assert_eq!(plan[0].parent, submit.span_id, "plan is a child of submit");
    let leases = named("herd-coordinator", "lease");
    assert!(leases.len() >= tasks, "{} leases", leases.len());
    for lease in &leases {
        assert_eq!(lease.trace_id, trace, "lease in the sweep's trace");
        assert_eq!(lease.parent, submit.span_id, "lease is a child of submit");
    }
    for report in named("herd-coordinator", "report") {
        assert_eq!(report.trace_id, trace);
    }

    // the worker's spans: children of the coordinator's lease span, across processes
    let worker_tasks = named("herd-worker", "task");
    for task in &worker_tasks {
        assert_eq!(task.trace_id, trace, "worker task in the sweep's trace");
        let parent = parent_of(task);
        assert_eq!(parent.service, "herd-coordinator");
        assert_eq!(parent.name, "lease");
        assert_eq!(
            parent.int("task"),
            task.int("task"),
            "the lease of this task"
        );
    }
    for name in ["download", "convert", "score", "stream"] {
        let found = named("herd-worker", name);
        assert!(!found.is_empty(), "no worker {name} span");
        for span in found {
            assert_eq!(span.trace_id, trace, "{name} in the sweep's trace");
            let parent = parent_of(span);
            assert_eq!(parent.name, "task", "{name} is a child of task");
        }
    }
    for score in named("herd-worker", "score") {
        assert!(
            score.int("tokens").unwrap_or(0) > 0,
            "score tokens: {score:?}"
        );
        assert!(
            score.int("batches").unwrap_or(0) > 0,
            "score batches: {score:?}"
        );
        assert!(
            score.int("pairs").unwrap_or(0) > 0,
            "score pairs: {score:?}"
        );
    }
    // and back: the coordinator's merge span is a child of the worker's stream span
    let merges = named("herd-coordinator", "merge");
    let stored: i64 = merges.iter().filter_map(|m| m.int("stored")).sum();
    assert_eq!(
        stored as u64, status.examples_total,
        "merge spans count the stored results"
    );
    for merge in merges {
        assert_eq!(merge.trace_id, trace);
        let parent = parent_of(merge);
        assert_eq!(
            (parent.service.as_str(), parent.name.as_str()),
            ("herd-worker", "stream")
        );
    }
}

/// `GET /metrics` as (name with labels) -> value.
async fn scrape(port: u16) -> Option<HashMap<String, f64>> {
    let text = reqwest::get(format!("http://127.0.0.1:{port}/metrics"))
        .await
        .ok()?
        .text()
        .await
        .ok()?;
    Some(
        text.lines()
            .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
            .filter_map(|l| {
                let (name, value) = l.rsplit_once(' ')?;
                Some((name.to_string(), value.parse().ok()?))
            })
            .collect(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_move_as_the_sweep_progresses() {
    let Some(gcs) = start_gcs() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let presets = fixture(tmp.path(), &gcs.endpoint(), 3).await;
    let coord_port = free_port();
    let worker_port = free_port();
    let mut env = base_env(&gcs.endpoint());
    // `coord serve --metrics-listen` through its environment variable (client commands ignore it)
    env.push((
        "HERD_METRICS_LISTEN".into(),
        format!("127.0.0.1:{coord_port}"),
    ));
    let mut run = sweep_run(&tmp.path().join("run"), env);
    run.submit(&presets);

    // before any worker: the planned tasks are pending, nothing stored
    let planned = run.coord.sweep_status("helpsteer2").await.unwrap();
    let before = scrape(coord_port).await.expect("coordinator /metrics");
    assert_eq!(before["herd_results_stored_total"], 0.0, "{before:?}");
    assert_eq!(
        before["herd_tasks{state=\"pending\"}"],
        f64::from(planned.tasks_total),
        "{before:?}"
    );
    assert_eq!(before["herd_tasks{state=\"done\"}"], 0.0, "{before:?}");

    add_worker(
        &mut run,
        &[("HERD_METRICS_LISTEN", format!("127.0.0.1:{worker_port}"))],
    );
    // poll both endpoints while the sweep runs
    let mut stored_series = vec![0.0];
    let mut done_series = vec![0.0];
    let deadline = tokio::time::Instant::now() + TIMEOUT;
    let status = loop {
        if let Some(m) = scrape(coord_port).await {
            stored_series.push(m["herd_results_stored_total"]);
            done_series.push(m["herd_tasks{state=\"done\"}"]);
        }
        let status = run.coord.sweep_status("helpsteer2").await.ok();
        if let Some(status) = status.filter(|s| s.state() == SweepState::Done) {
            break status;
        }
        assert!(tokio::time::Instant::now() < deadline, "{}", run.logs());
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let after = scrape(coord_port).await.expect("coordinator /metrics");
    stored_series.push(after["herd_results_stored_total"]);
    done_series.push(after["herd_tasks{state=\"done\"}"]);
    for series in [&stored_series, &done_series] {
        assert!(
            series.windows(2).all(|w| w[0] <= w[1]),
            "counters never go down: {series:?}"
        );
    }
    assert_eq!(
        after["herd_results_stored_total"], status.examples_total as f64,
        "{stored_series:?}"
    );
    assert_eq!(
        after["herd_tasks{state=\"done\"}"],
        f64::from(status.tasks_total),
        "{done_series:?}"
    );
    assert_eq!(after["herd_tasks{state=\"pending\"}"], 0.0);
    assert!(after["herd_leases_total"] >= f64::from(status.tasks_total));
    assert_eq!(after["herd_workers"], 1.0, "{after:?}");

    // the worker keeps asking for work (the coordinator does not exit here)
    let mut worker = None;
    for _ in 0..100 {
        worker = scrape(worker_port).await;
        if worker.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let worker = worker.unwrap_or_else(|| panic!("worker /metrics never answered\n{}", run.logs()));
    assert!(worker["herd_worker_tokens_total"] > 0.0, "{worker:?}");
    assert!(worker["herd_worker_batches_total"] > 0.0, "{worker:?}");
    assert!(worker["herd_worker_tokens_per_second"] > 0.0, "{worker:?}");
    assert!(
        worker["herd_worker_download_bytes_total"] > 0.0,
        "{worker:?}"
    );
    assert_eq!(
        worker["herd_worker_tasks_total{outcome=\"completed\"}"],
        f64::from(status.tasks_total),
        "{worker:?}"
    );
    assert_eq!(worker["herd_worker_gpu_memory_bytes"], 0.0, "a CPU worker");
}
