//! `worker --coordinator URL` against an in-test fake coordinator (a real tonic server on
//! 127.0.0.1): the real worker binary, the tiny Llama fixture on CPU, real RewardBench rows; and
//! the agent loop in-process with a stub scorer, as herd-sim drives it.

mod support;

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use herd_agent::{AgentConfig, Exit, Hooks, Observer, SyntheticScorer, TaskOutcome};
use herd_rpc::v1::workers_server::{Workers, WorkersServer};
use herd_rpc::v1::{
    lease_response, Checkpoint, CompleteRequest, CompleteResponse, Example, ExampleReward,
    FailRequest, FailResponse, FailureKind, HeartbeatRequest, HeartbeatResponse, Lease, LeaseRef,
    LeaseRequest, LeaseResponse, RegisterRequest, RegisterResponse, ResultBatch, Scoring,
    StreamResultsResponse,
};
use serde_json::Value;
use support::{assert_success, repo};
use tokio::net::TcpListener;
use tokio_stream::StreamExt;
use tonic::{Request, Response, Status, Streaming};

// ---------------------------------------------------------------------------------------------
// the fake coordinator

/// The secret the fake's `n`th Register answers.
fn secret_of(n: usize) -> String {
    format!("secret-of-registration-{n}")
}

#[derive(Default)]
struct Recorded {
    registers: Vec<RegisterRequest>,
    lease_requests: usize,
    /// (worker_id, worker_secret) of every LeaseRequest
    lease_credentials: Vec<(String, String)>,
    /// cached_checkpoints of every LeaseRequest
    lease_caches: Vec<Vec<String>>,
    heartbeats: Vec<HeartbeatRequest>,
    batches: Vec<ResultBatch>,
    completes: Vec<CompleteRequest>,
    fails: Vec<FailRequest>,
    /// "lease:T", "stream:T", "complete:T", "fail:T" in arrival order
    events: Vec<String>,
}

#[derive(Clone, Default)]
struct Fake {
    recorded: Arc<Mutex<Recorded>>,
    script: Arc<Mutex<VecDeque<Lease>>>,
    /// when the script is empty: shutdown (true) or retry_after_ms (false)
    shutdown_when_empty: bool,
    /// StreamResults never answers (to hold a worker inside a lease)
    hang_streams: bool,
    /// answer the first Lease with NOT_FOUND (a coordinator that lost its state)
    forget_once: Arc<Mutex<bool>>,
}

impl Fake {
    fn new(leases: Vec<Lease>, shutdown_when_empty: bool) -> Self {
        Self {
            script: Arc::new(Mutex::new(leases.into())),
            shutdown_when_empty,
            ..Self::default()
        }
    }

    fn recorded(&self) -> std::sync::MutexGuard<'_, Recorded> {
        self.recorded.lock().unwrap()
    }
}

#[tonic::async_trait]
impl Workers for Fake {
    async fn register(
        &self,
        request: Request<RegisterRequest>,
    ) -> Result<Response<RegisterResponse>, Status> {
        let mut recorded = self.recorded();
        recorded.registers.push(request.into_inner());
        let n = recorded.registers.len();
        Ok(Response::new(RegisterResponse {
            worker_id: format!("w{n}"),
            heartbeat_interval_ms: 200,
            lease_timeout_ms: 10_000,
            worker_secret: secret_of(n),
        }))
    }

    async fn lease(
        &self,
        request: Request<LeaseRequest>,
    ) -> Result<Response<LeaseResponse>, Status> {
        {
            let mut forget = self.forget_once.lock().unwrap();
            if *forget {
                *forget = false;
                return Err(Status::not_found("unknown worker"));
            }
        }
        let request = request.into_inner();
        assert!(!request.worker_id.is_empty());
        let mut recorded = self.recorded();
        recorded.lease_requests += 1;
        recorded
            .lease_credentials
            .push((request.worker_id.clone(), request.worker_secret.clone()));
        recorded
            .lease_caches
            .push(request.cached_checkpoints.clone());
        let outcome = match self.script.lock().unwrap().pop_front() {
            Some(lease) => {
                let task = lease.lease.unwrap().task_id;
                recorded.events.push(format!("lease:{task}"));
                lease_response::Outcome::Lease(lease)
            }
            None if self.shutdown_when_empty => lease_response::Outcome::Shutdown(true),
            None => lease_response::Outcome::RetryAfterMs(100),
        };
        Ok(Response::new(LeaseResponse {
            outcome: Some(outcome),
        }))
    }

    async fn heartbeat(
        &self,
        request: Request<HeartbeatRequest>,
    ) -> Result<Response<HeartbeatResponse>, Status> {
        self.recorded().heartbeats.push(request.into_inner());
        Ok(Response::new(HeartbeatResponse::default()))
    }

    async fn stream_results(
        &self,
        request: Request<Streaming<ResultBatch>>,
    ) -> Result<Response<StreamResultsResponse>, Status> {
        if self.hang_streams {
            std::future::pending::<()>().await;
        }
        let mut stream = request.into_inner();
        let mut stored = 0;
        while let Some(batch) = stream.next().await {
            let batch = batch?;
            stored += batch.rewards.len() as u64;
            let mut recorded = self.recorded();
            let task = batch.lease.unwrap().task_id;
            recorded.events.push(format!("stream:{task}"));
            recorded.batches.push(batch);
        }
        Ok(Response::new(StreamResultsResponse {
            stored,
            duplicates: 0,
        }))
    }

    async fn complete(
        &self,
        request: Request<CompleteRequest>,
    ) -> Result<Response<CompleteResponse>, Status> {
        let request = request.into_inner();
        let mut recorded = self.recorded();
        recorded
            .events
            .push(format!("complete:{}", request.lease.unwrap().task_id));
        recorded.completes.push(request);
        Ok(Response::new(CompleteResponse { first: true }))
    }

    async fn fail(&self, request: Request<FailRequest>) -> Result<Response<FailResponse>, Status> {
        let request = request.into_inner();
        let mut recorded = self.recorded();
        recorded
            .events
            .push(format!("fail:{}", request.lease.unwrap().task_id));
        recorded.fails.push(request);
        Ok(Response::new(FailResponse {}))
    }
}

async fn serve(fake: Fake, listener: TcpListener) {
    tokio::spawn(async move {
        tonic::transport::Server::builder()
            .add_service(WorkersServer::new(fake))
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener))
            .await
            .unwrap();
    });
}

async fn start(fake: Fake) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    serve(fake, listener).await;
    address
}

// ---------------------------------------------------------------------------------------------
// the worker process

/// An in-process agent's settings against the fake at `address`: one CPU scorer, fp32, its
/// cache under `dir`, results streamed one by one, a one-second drain grace.
fn in_process_config(address: SocketAddr, dir: &Path) -> AgentConfig {
    AgentConfig {
        coordinator: format!("http://{address}"),
        name: "in-process".into(),
        cache_dir: dir.join("cache"),
        cache_bytes: 1 << 30,
        cuda_device: None,
        gpus: 0,
        scorer_devices: 1,
        bytes_per_parameter: 4,
        memory_limit_bytes: None,
        stream_batch: 1,
        drain_grace: Duration::from_secs(1),
        metrics_listen: None,
        security: Default::default(),
    }
}

fn model_dir() -> PathBuf {
    repo().join("tests/golden/fixtures/models/llama-gqa-rm")
}

fn spawn_worker(address: SocketAddr, cache: &Path, extra: &[&str]) -> tokio::process::Child {
    spawn_worker_env(address, cache, extra, &[])
}

fn spawn_worker_env(
    address: SocketAddr,
    cache: &Path,
    extra: &[&str],
    env: &[(&str, &str)],
) -> tokio::process::Child {
    tokio::process::Command::new(env!("CARGO_BIN_EXE_worker"))
        .envs(env.iter().copied())
        .args(["--coordinator", &format!("http://{address}")])
        .args(["--name", "test-worker", "--device", "cpu", "--threads", "1"])
        .arg("--cache-dir")
        .arg(cache)
        .args(extra)
        .env("RUST_LOG", "info")
        .env_remove("HERD_COORDINATOR")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap()
}

/// Waits for the worker to exit; its exit code and stderr.
async fn finish(child: tokio::process::Child) -> (Option<i32>, String) {
    let output = tokio::time::timeout(Duration::from_secs(180), child.wait_with_output())
        .await
        .expect("the worker did not exit within 180 s")
        .unwrap();
    (
        output.status.code(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

async fn wait_for(what: &str, mut condition: impl FnMut() -> bool) {
    for _ in 0..600 {
        if condition() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("timed out waiting for {what}");
}

fn sigterm(child: &tokio::process::Child) {
    let pid = child.id().expect("worker still running") as i32;
    assert_eq!(unsafe { libc::kill(pid, libc::SIGTERM) }, 0);
}

// ---------------------------------------------------------------------------------------------
// data

/// `n` real RewardBench rows (LLMBar, the golden examples of the model's fixture, in the
/// repository) with ids 0..n, as JSON values.
fn rows(n: usize) -> Vec<Value> {
    let dir = tempfile::tempdir().unwrap();
    let (dataset, _) = support::dataset_from_golden("llama-gqa-rm", dir.path());
    let text = std::fs::read_to_string(dataset).unwrap();
    assert!(
        text.lines().count() >= n,
        "the fixture has fewer than {n} rows"
    );
    text.lines()
        .take(n)
        .enumerate()
        .map(|(index, line)| {
            let mut row: Value = serde_json::from_str(line).unwrap();
            row["id"] = Value::from(index);
            row
        })
        .collect()
}

fn examples(rows: &[Value], range: std::ops::Range<usize>) -> Vec<Example> {
    range
        .map(|index| {
            let row = &rows[index];
            let pair: herd_rewardbench::dataset::PreferencePair =
                serde_json::from_value(row.clone()).unwrap();
            Example {
                index: index as u32,
                id: format!("ex-{index}"),
                subset: row["subset"].as_str().unwrap_or_default().to_string(),
                pair_json: serde_json::to_string(&pair).unwrap(),
            }
        })
        .collect()
}

const MAX_LENGTH: u32 = 512;

fn lease(task: i64, epoch: u64, uri: &str, format: &str, examples: Vec<Example>) -> Lease {
    Lease {
        lease: Some(LeaseRef {
            task_id: task,
            epoch,
        }),
        sweep: "test".into(),
        deadline_unix_ms: 0,
        checkpoint: Some(Checkpoint {
            id: 1,
            uri: uri.to_string(),
            name: "fixture".into(),
            format: format.to_string(),
            size_bytes: 0,
            param_bytes: 0,
        }),
        scoring: Some(Scoring {
            tokenizer: String::new(),
            chat_template: "tulu".into(),
            max_length: MAX_LENGTH,
            easylm: None,
            ..Scoring::default()
        }),
        shard_start: examples.first().map_or(0, |e| e.index),
        shard_end: examples.last().map_or(0, |e| e.index + 1),
        examples,
        prefetch_uri: String::new(),
        traceparent: String::new(),
    }
}

/// `worker score` on the same rows: per-row (chosen, rejected) scores by id.
fn reference_scores(rows: &[Value], dir: &Path) -> Vec<(Vec<f64>, Vec<f64>)> {
    let dataset = dir.join("pairs.jsonl");
    let text: String = rows.iter().map(|r| format!("{r}\n")).collect();
    std::fs::write(&dataset, text).unwrap();
    let output = dir.join("scores.jsonl");
    let run = std::process::Command::new(env!("CARGO_BIN_EXE_worker"))
        .args(["score", "--device", "cpu", "--threads", "1"])
        .args(["--max-length", &MAX_LENGTH.to_string()])
        .arg("--model")
        .arg(model_dir())
        .arg("--dataset")
        .arg(&dataset)
        .arg("-o")
        .arg(&output)
        .output()
        .unwrap();
    assert_success(&run);
    let floats = |v: &Value| -> Vec<f64> {
        v.as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_f64().unwrap())
            .collect()
    };
    std::fs::read_to_string(&output)
        .unwrap()
        .lines()
        .enumerate()
        .map(|(index, line)| {
            let row: Value = serde_json::from_str(line).unwrap();
            assert_eq!(row["id"], index);
            (
                floats(&row["scores_chosen"]),
                floats(&row["scores_rejected"]),
            )
        })
        .collect()
}

// ---------------------------------------------------------------------------------------------
// tests

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streams_the_rewards_worker_score_computes_then_completes() {
    let dir = tempfile::tempdir().unwrap();
    let rows = rows(6);
    let uri = model_dir().display().to_string();
    let fake = Fake::new(
        vec![
            lease(1, 3, &uri, "hf", examples(&rows, 0..3)),
            lease(2, 7, &uri, "hf", examples(&rows, 3..6)),
        ],
        true,
    );
    let address = start(fake.clone()).await;
    let child = spawn_worker(address, &dir.path().join("cache"), &["--stream-batch", "2"]);
    let (code, stderr) = finish(child).await;
    assert_eq!(code, Some(0), "{stderr}");

    let reference = reference_scores(&rows, dir.path());
    let recorded = fake.recorded();
    assert_eq!(recorded.registers.len(), 1);
    let capabilities = recorded.registers[0].capabilities.clone().unwrap();
    assert_eq!(capabilities.device, "cpu");
    assert_eq!(recorded.registers[0].name, "test-worker");
    assert!(recorded.fails.is_empty(), "{:?}", recorded.fails);
    assert_eq!(
        recorded.events,
        [
            "lease:1",
            "stream:1",
            "stream:1",
            "complete:1",
            "lease:2",
            "stream:2",
            "stream:2",
            "complete:2"
        ],
        "{stderr}"
    );
    let mut seen = vec![false; rows.len()];
    for batch in &recorded.batches {
        let lease = batch.lease.unwrap();
        let epoch = if lease.task_id == 1 { 3 } else { 7 };
        assert_eq!(lease.epoch, epoch, "every message carries its lease epoch");
        assert_eq!(
            (batch.worker_id.as_str(), batch.worker_secret.clone()),
            ("w1", secret_of(1))
        );
        assert!(!batch.rewards.is_empty() && batch.rewards.len() <= 2);
        for reward in &batch.rewards {
            let index = reward.index as usize;
            assert_eq!(reward.example_id, format!("ex-{index}"));
            assert!(!seen[index], "example {index} streamed twice");
            seen[index] = true;
            let (chosen, rejected) = &reference[index];
            for (ours, theirs) in [
                (&reward.scores_chosen, chosen),
                (&reward.scores_rejected, rejected),
            ] {
                assert_eq!(ours.len(), theirs.len());
                for (a, b) in ours.iter().zip(theirs.iter()) {
                    assert!((a - b).abs() < 1e-4, "example {index}: {a} vs {b}");
                }
            }
        }
    }
    assert!(seen.iter().all(|s| *s));
    for complete in &recorded.completes {
        assert_eq!(
            (complete.worker_id.as_str(), complete.worker_secret.clone()),
            ("w1", secret_of(1))
        );
        assert_eq!(complete.model_type, "Seq. Classifier");
        assert_eq!(complete.chat_template, "tulu");
    }
    assert_eq!(recorded.completes[1].lease.unwrap().epoch, 7);
    // every call after Register carries the registration's id and secret (heartbeats: below)
    assert!(recorded
        .lease_credentials
        .iter()
        .all(|c| *c == ("w1".to_string(), secret_of(1))));
    assert!(stderr.contains("reusing the model in memory"), "{stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_checkpoints_fail_with_kind_checkpoint_and_the_worker_goes_on() {
    let dir = tempfile::tempdir().unwrap();
    let rows = rows(2);
    let corrupt = dir.path().join("streaming_params_corrupt");
    std::fs::write(&corrupt, b"\x92\xa4this is not msgpack at all").unwrap();
    let missing = dir.path().join("no-such-model");
    let mut easylm = lease(
        1,
        1,
        &corrupt.display().to_string(),
        "easylm",
        examples(&rows, 0..2),
    );
    easylm.scoring.as_mut().unwrap().tokenizer = model_dir().display().to_string();
    let fake = Fake::new(
        vec![
            easylm,
            lease(
                2,
                1,
                &missing.display().to_string(),
                "hf",
                examples(&rows, 0..2),
            ),
        ],
        true,
    );
    let address = start(fake.clone()).await;
    let child = spawn_worker(address, &dir.path().join("cache"), &[]);
    let (code, stderr) = finish(child).await;
    assert_eq!(code, Some(0), "{stderr}");

    let recorded = fake.recorded();
    assert_eq!(recorded.fails.len(), 2, "{stderr}");
    for (fail, file) in recorded.fails.iter().zip([&corrupt, &missing]) {
        assert_eq!(fail.kind, FailureKind::Checkpoint as i32, "{}", fail.reason);
        assert!(
            fail.reason.contains(&file.display().to_string()),
            "the reason names the file: {}",
            fail.reason
        );
        assert_eq!(
            (fail.worker_id.as_str(), fail.worker_secret.clone()),
            ("w1", secret_of(1))
        );
    }
    assert!(recorded.batches.is_empty() && recorded.completes.is_empty());
    // after both failures it asked again (and got the shutdown)
    assert_eq!(recorded.lease_requests, 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_while_idle_sends_a_draining_heartbeat_and_exits_0() {
    let dir = tempfile::tempdir().unwrap();
    let fake = Fake::new(Vec::new(), false);
    let address = start(fake.clone()).await;
    let child = spawn_worker(address, &dir.path().join("cache"), &[]);
    wait_for("two lease requests", || fake.recorded().lease_requests >= 2).await;
    sigterm(&child);
    let (code, stderr) = finish(child).await;
    assert_eq!(code, Some(0), "{stderr}");
    let recorded = fake.recorded();
    assert!(
        recorded.heartbeats.iter().any(|h| h.draining),
        "no draining heartbeat: {stderr}"
    );
    for heartbeat in &recorded.heartbeats {
        assert_eq!(
            (
                heartbeat.worker_id.as_str(),
                heartbeat.worker_secret.clone()
            ),
            ("w1", secret_of(1))
        );
    }
    assert!(recorded.fails.is_empty());
}

/// The worker token over http:// to another machine is warned about, once per process; over
/// loopback it is not.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_sent_in_clear_off_loopback_is_warned_about_once() {
    const WARNING: &str = "the bearer token is sent unencrypted";
    let dir = tempfile::tempdir().unwrap();
    let token = [("HERD_TOKEN", "a-worker-token")];
    let fake = Fake::new(Vec::new(), true);
    let address = start(fake.clone()).await;
    let child = spawn_worker_env(address, &dir.path().join("cache"), &[], &token);
    let (code, stderr) = finish(child).await;
    assert_eq!(code, Some(0), "{stderr}");
    assert!(!stderr.contains(WARNING), "loopback: {stderr}");

    // 0.0.0.0 is not a loopback address, so the token counts as sent off the machine; Linux
    // delivers a connection to it on this machine, so no packet leaves it
    let fake = Fake::new(Vec::new(), true);
    let address = start(fake.clone()).await;
    let away = SocketAddr::from(([0, 0, 0, 0], address.port()));
    let child = spawn_worker_env(away, &dir.path().join("cache"), &[], &token);
    let (code, stderr) = finish(child).await;
    assert_eq!(code, Some(0), "{stderr}");
    assert_eq!(stderr.matches(WARNING).count(), 1, "{stderr}");
    assert!(stderr.contains(&away.to_string()), "{stderr}");
    assert_eq!(fake.recorded().registers.len(), 1, "{stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_while_holding_a_lease_gives_it_back_after_the_grace_period() {
    let dir = tempfile::tempdir().unwrap();
    let rows = rows(2);
    let uri = model_dir().display().to_string();
    let mut fake = Fake::new(vec![lease(5, 2, &uri, "hf", examples(&rows, 0..2))], false);
    fake.hang_streams = true;
    let address = start(fake.clone()).await;
    let child = spawn_worker(
        address,
        &dir.path().join("cache"),
        &["--drain-grace-secs", "1"],
    );
    // SIGTERM only once the worker reports holding the lease (a heartbeat lists it)
    wait_for("a heartbeat holding the lease", || {
        fake.recorded()
            .heartbeats
            .iter()
            .any(|h| h.leases.iter().any(|l| l.task_id == 5))
    })
    .await;
    sigterm(&child);
    let (code, stderr) = finish(child).await;
    assert_eq!(code, Some(0), "{stderr}");
    let recorded = fake.recorded();
    assert_eq!(recorded.fails.len(), 1, "{stderr}");
    let fail = &recorded.fails[0];
    assert_eq!(fail.kind, FailureKind::Released as i32);
    assert_eq!(
        fail.lease.unwrap(),
        LeaseRef {
            task_id: 5,
            epoch: 2
        }
    );
    assert!(fail.reason.contains("draining"), "{}", fail.reason);
    assert!(recorded.completes.is_empty());
    let draining: Vec<&HeartbeatRequest> =
        recorded.heartbeats.iter().filter(|h| h.draining).collect();
    assert!(!draining.is_empty(), "{stderr}");
    // while it drained it still held (and reported) the lease
    assert!(
        draining
            .iter()
            .any(|h| h.leases.iter().any(|l| l.task_id == 5)),
        "{stderr}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retries_until_the_coordinator_is_up_and_registers_again_when_forgotten() {
    let dir = tempfile::tempdir().unwrap();
    // a free port, not listening yet. Chosen below the ephemeral range (32768+): a port freed
    // by a bind to :0 could be handed to another test's fake coordinator in the meantime.
    let probe = (0..200)
        .map(|i| 20_000 + (std::process::id() as u16 % 5_000) + i * 37)
        .find_map(|port| std::net::TcpListener::bind(("127.0.0.1", port)).ok())
        .expect("a free port below the ephemeral range");
    let address = probe.local_addr().unwrap();
    let child = spawn_worker(address, &dir.path().join("cache"), &[]);
    // the worker's first registration reaches the port and finds no coordinator (the
    // connection is closed at once); only then does the coordinator come up there
    probe.set_nonblocking(true).unwrap();
    let probe = TcpListener::from_std(probe).unwrap();
    let (refused, _) = tokio::time::timeout(Duration::from_secs(120), probe.accept())
        .await
        .expect("the worker never tried to register")
        .unwrap();
    drop(refused);
    drop(probe);
    let fake = Fake::new(Vec::new(), true);
    *fake.forget_once.lock().unwrap() = true;
    let listener = TcpListener::bind(address).await.unwrap();
    serve(fake.clone(), listener).await;
    let (code, stderr) = finish(child).await;
    assert_eq!(code, Some(0), "{stderr}");
    assert!(
        stderr.contains("cannot register") && stderr.contains(&address.to_string()),
        "the failures are logged with the address: {stderr}"
    );
    let recorded = fake.recorded();
    // NOT_FOUND on the first lease: registered again, then got the shutdown as the new
    // registration
    assert_eq!(recorded.registers.len(), 2, "{stderr}");
    assert_eq!(recorded.lease_requests, 1);
    assert_eq!(
        recorded.lease_credentials,
        vec![("w2".to_string(), secret_of(2))]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gcs_checkpoints_go_through_the_cache_and_a_corrupt_one_is_evicted() {
    use herd_storage::gcs::GcsClient;
    let Some(gcs) = herd_testkit::fake_gcs() else {
        return;
    };
    let client = GcsClient::with_endpoint(&gcs.endpoint()).await.unwrap();
    client.create_bucket("ckpts").await.unwrap();
    for entry in std::fs::read_dir(model_dir()).unwrap() {
        let path = entry.unwrap().path();
        let name = format!("models/rm/{}", path.file_name().unwrap().to_str().unwrap());
        client
            .upload("ckpts", &name, std::fs::read(&path).unwrap().into())
            .await
            .unwrap();
    }
    let bad = "gs://ckpts/runs/bad/streaming_params";
    client
        .upload(
            "ckpts",
            "runs/bad/streaming_params",
            b"\x92\xa4garbage".to_vec().into(),
        )
        .await
        .unwrap();

    let dir = tempfile::tempdir().unwrap();
    let rows = rows(2);
    let mut good = lease(1, 1, "gs://ckpts/models/rm/", "hf", examples(&rows, 0..2));
    good.prefetch_uri = bad.to_string();
    let mut corrupt = lease(2, 1, bad, "easylm", examples(&rows, 0..2));
    corrupt.scoring.as_mut().unwrap().tokenizer = "gs://ckpts/models/rm".to_string();
    let fake = Fake::new(vec![good, corrupt], true);
    let address = start(fake.clone()).await;
    let endpoint = gcs.endpoint();
    let child = spawn_worker_env(
        address,
        &dir.path().join("cache"),
        &[],
        &[("STORAGE_EMULATOR_HOST", endpoint.as_str())],
    );
    let (code, stderr) = finish(child).await;
    assert_eq!(code, Some(0), "{stderr}");
    let recorded = fake.recorded();
    assert_eq!(recorded.completes.len(), 1, "{stderr}");
    assert_eq!(
        recorded
            .batches
            .iter()
            .map(|b| b.rewards.len())
            .sum::<usize>(),
        2
    );
    assert_eq!(recorded.fails.len(), 1, "{stderr}");
    let fail = &recorded.fails[0];
    assert_eq!(fail.kind, FailureKind::Checkpoint as i32, "{}", fail.reason);
    assert!(
        fail.reason.contains(bad),
        "the reason names the URI: {}",
        fail.reason
    );
    // after the first lease the model folder is cached (and reported); the bad object, cached by
    // the prefetch, is gone from the cache after its failure
    assert!(
        recorded.lease_caches[1].contains(&"gs://ckpts/models/rm/".to_string()),
        "{:?}",
        recorded.lease_caches
    );
    let last = recorded.lease_caches.last().unwrap();
    assert!(!last.contains(&bad.to_string()), "{last:?}\n{stderr}");
}

// ---------------------------------------------------------------------------------------------
// the agent in-process with a stub scorer, as a driver (herd-sim) runs it

/// What the agent told its observer, in order.
#[derive(Default)]
struct Seen(Mutex<Vec<String>>);

impl Observer for Seen {
    fn registered(&self, again: bool) {
        self.0
            .lock()
            .unwrap()
            .push(format!("registered again={again}"));
    }

    fn lease_answered(&self, _asked: std::time::Instant, _took: Duration, granted: bool) {
        self.0
            .lock()
            .unwrap()
            .push(format!("lease granted={granted}"));
    }

    fn results_acknowledged(
        &self,
        lease: &Lease,
        rewards: &[ExampleReward],
        stored: u64,
        _duplicates: u64,
    ) {
        let task = lease.lease.unwrap().task_id;
        let n = rewards.len();
        self.0.lock().unwrap().push(format!(
            "acknowledged task {task}: {n} rewards, {stored} stored"
        ));
    }

    fn task_ended(&self, lease: &Lease, outcome: TaskOutcome) {
        let task = lease.lease.unwrap().task_id;
        self.0
            .lock()
            .unwrap()
            .push(format!("task {task} ended {outcome:?}"));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_in_process_agent_reports_to_its_observer_and_drains_on_its_trigger() {
    let dir = tempfile::tempdir().unwrap();
    let rows = rows(4);
    // any local folder: the stub scorer loads nothing
    let uri = model_dir().display().to_string();
    let fake = Fake::new(
        vec![
            lease(1, 1, &uri, "hf", examples(&rows, 0..2)),
            lease(2, 1, &uri, "hf", examples(&rows, 2..4)),
        ],
        false,
    );
    let address = start(fake.clone()).await;
    let config = in_process_config(address, dir.path());
    let seen = Arc::new(Seen::default());
    let (stop, trigger) = tokio::sync::watch::channel(false);
    let hooks = Hooks {
        observer: seen.clone(),
        drain: Some(trigger),
    };
    // example i scores (i, -i)
    let scorer = SyntheticScorer {
        scores: |_checkpoint, i| (f64::from(i), -f64::from(i)),
        delay: Duration::ZERO,
    };
    let agent = herd_agent::run_with(config, Arc::new(scorer), hooks);
    let driver = async {
        wait_for("both leases completed", || {
            fake.recorded().completes.len() == 2
        })
        .await;
        stop.send_replace(true);
    };
    let (exit, ()) = tokio::join!(agent, driver);
    assert_eq!(exit.unwrap(), Exit::Drained);

    // the stub's scores reached the coordinator, one reward per message (stream_batch 1)
    let recorded = fake.recorded();
    let rewards: Vec<(u32, f64, f64)> = recorded
        .batches
        .iter()
        .flat_map(|batch| {
            assert_eq!(batch.rewards.len(), 1);
            &batch.rewards
        })
        .map(|r| (r.index, r.scores_chosen[0], r.scores_rejected[0]))
        .collect();
    let expected: Vec<(u32, f64, f64)> = (0..4).map(|i| (i, f64::from(i), -f64::from(i))).collect();
    assert_eq!(rewards, expected);
    // the stop drained the agent: its last heartbeat says so
    assert!(recorded.heartbeats.last().unwrap().draining);

    let seen = seen.0.lock().unwrap().clone();
    assert_eq!(
        seen[..7],
        [
            "registered again=false",
            "lease granted=true",
            "acknowledged task 1: 2 rewards, 2 stored",
            "task 1 ended Completed",
            "lease granted=true",
            "acknowledged task 2: 2 rewards, 2 stored",
            "task 2 ended Completed",
        ]
    );
    // then only "no task yet" answers until the stop
    assert!(
        seen[7..].iter().all(|event| event == "lease granted=false"),
        "{seen:?}"
    );
}

/// The first heartbeat follows registration at once (with the worker's stats), not after the
/// 10 s the heartbeat task sleeps while the coordinator's interval is still unknown: the
/// coordinator's per-worker gauges, and leases whose timeout is shorter than 10 s, need it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_first_heartbeat_follows_registration_at_once() {
    let dir = tempfile::tempdir().unwrap();
    // no work: the agent registers, then asks for leases every 100 ms
    let fake = Fake::new(Vec::new(), false);
    let address = start(fake.clone()).await;
    let config = in_process_config(address, dir.path());
    let (stop, trigger) = tokio::sync::watch::channel(false);
    let hooks = Hooks {
        observer: Arc::new(Seen::default()),
        drain: Some(trigger),
    };
    let scorer = SyntheticScorer {
        scores: |_checkpoint, i| (f64::from(i), -f64::from(i)),
        delay: Duration::ZERO,
    };
    let agent = herd_agent::run_with(config, Arc::new(scorer), hooks);
    let driver = async {
        wait_for("registration", || !fake.recorded().registers.is_empty()).await;
        let registered = std::time::Instant::now();
        wait_for("a heartbeat", || !fake.recorded().heartbeats.is_empty()).await;
        let waited = registered.elapsed();
        stop.send_replace(true);
        waited
    };
    let (exit, waited) = tokio::join!(agent, driver);
    assert_eq!(exit.unwrap(), Exit::Drained);
    // the interval of the fake coordinator is 200 ms; the old first sleep was 10 s
    assert!(
        waited < Duration::from_secs(5),
        "first heartbeat after {waited:?}"
    );
    let first = &fake.recorded().heartbeats[0];
    assert_eq!(first.worker_id, "w1");
    assert!(first.stats.is_some(), "{first:?}");
}
