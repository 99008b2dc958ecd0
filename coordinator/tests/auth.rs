//! Every RPC of both services refuses a missing or wrong bearer token (UNAUTHENTICATED) and the
//! other role's token (PERMISSION_DENIED), logged without the token, nothing stored; a worker
//! acts only as the registration whose secret it holds (PERMISSION_DENIED otherwise, nothing
//! stored); a stale-epoch result stream is refused and stores nothing; oversized result batches
//! and lease floods are refused; TLS and mTLS with a CA and certificates made at test time.

use std::io::Write;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use herd_coordinator::config::{Limits, ServerConfig};
use herd_coordinator::domain::{
    CheckpointFormat, LeaseState, PlannedCheckpoint, PlannedExample, SweepState, WorkerState,
};
use herd_coordinator::scheduler::Policy;
use herd_coordinator::security::{RoleTokens, SecurityConfig};
use herd_coordinator::server::{spawn, ServerHandle};
use herd_rpc::security::{AuthChannel, ClientSecurity, OPERATOR_TOKEN_ENV, TOKEN_ENV};
use herd_rpc::v1::{
    lease_response::Outcome, sweeps_client::SweepsClient, workers_client::WorkersClient,
    CancelRequest, CompleteRequest, ExampleReward, FailRequest, FailureKind, HeartbeatRequest,
    Lease, LeaseRef, LeaseRequest, RegisterRequest, ResultBatch, ResultsRequest, StatusRequest,
    SubmitRequest, SweepSpec,
};
use tonic::transport::Endpoint;
use tonic::Code;

const WORKER_TOKEN: &str = "the-worker-token-7f3a9c";
const OPERATOR_TOKEN: &str = "the-operator-token-c4e1d8";
const WRONG: &str = "a-wrong-token-51be20";

fn tokens() -> RoleTokens {
    RoleTokens {
        worker: WORKER_TOKEN.into(),
        operator: OPERATOR_TOKEN.into(),
    }
}

fn secured() -> SecurityConfig {
    SecurityConfig::with_tokens(&tokens())
}

/// Everything the server logs, for "the token is never logged".
fn log() -> Arc<Mutex<Vec<u8>>> {
    static LOG: OnceLock<Arc<Mutex<Vec<u8>>>> = OnceLock::new();
    LOG.get_or_init(|| {
        let buf = Arc::new(Mutex::new(Vec::new()));
        let writer = buf.clone();
        let _ = tracing_subscriber::fmt()
            .with_env_filter("debug")
            .with_ansi(false)
            .with_writer(move || Capture(writer.clone()))
            .try_init();
        buf
    })
    .clone()
}

struct Capture(Arc<Mutex<Vec<u8>>>);

impl Write for Capture {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(data);
        Ok(data.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn args(dir: &Path, security: SecurityConfig) -> ServerConfig {
    std::fs::create_dir_all(dir).unwrap();
    ServerConfig {
        state: dir.join("state.db"),
        listen: "127.0.0.1:0".parse().unwrap(),
        out_dir: dir.join("out"),
        policy: Policy {
            lease_timeout_ms: 300,
            heartbeat_interval_ms: 50,
            retry_backoff_ms: 20,
            stragglers: false,
            ..Policy::default()
        },
        security,
        ..ServerConfig::default()
    }
}

/// A sweep planned straight through the store: one checkpoint `/ckpts/a`, `n` examples, one shard.
fn plan(handle: &ServerHandle, n: u32) {
    let checkpoints = vec![PlannedCheckpoint {
        uri: "/ckpts/a".into(),
        name: "rm-a".into(),
        format: CheckpointFormat::HuggingFace,
        size_bytes: 10,
        param_bytes: 0,
    }];
    let examples: Vec<PlannedExample> = (0..n)
        .map(|i| PlannedExample {
            index: i,
            id: format!("{i}"),
            subset: "alpacaeval-easy".into(),
            pair_json: format!(
                r#"{{"id":"{i}","prompt":"q","chosen":"a","rejected":"b","subset":"alpacaeval-easy"}}"#
            ),
            completions: None,
        })
        .collect();
    let spec = SweepSpec {
        name: "s".into(),
        checkpoints: vec!["/ckpts".into()],
        eval_dataset: "eval.jsonl".into(),
        shard_size: n,
        output_csv: "s.csv".into(),
        ..SweepSpec::default()
    };
    handle
        .store()
        .submit(&spec, &checkpoints, &examples, 1)
        .unwrap();
}

/// A Workers client sending `worker_token` and a Sweeps client sending `operator_token`.
async fn clients(
    url: &str,
    worker_token: Option<&str>,
    operator_token: Option<&str>,
) -> (WorkersClient<AuthChannel>, SweepsClient<AuthChannel>) {
    let channel = Endpoint::from_shared(url.to_string())
        .unwrap()
        .connect()
        .await
        .unwrap();
    (
        WorkersClient::new(ClientSecurity::token(worker_token).intercept(channel.clone())),
        SweepsClient::new(ClientSecurity::token(operator_token).intercept(channel)),
    )
}

/// Clients with the right token for each service.
async fn right_clients(url: &str) -> (WorkersClient<AuthChannel>, SweepsClient<AuthChannel>) {
    clients(url, Some(WORKER_TOKEN), Some(OPERATOR_TOKEN)).await
}

/// A registration: the id and secret Register answered.
#[derive(Clone, Debug)]
struct Me {
    id: String,
    secret: String,
}

async fn register(w: &mut WorkersClient<AuthChannel>, name: &str) -> Me {
    let answer = w
        .register(RegisterRequest {
            name: name.into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(answer.worker_secret.len(), 64, "256 bits, hex");
    Me {
        id: answer.worker_id,
        secret: answer.worker_secret,
    }
}

fn lease_request(me: &Me) -> LeaseRequest {
    LeaseRequest {
        worker_id: me.id.clone(),
        worker_secret: me.secret.clone(),
        cached_checkpoints: vec![],
    }
}

async fn lease(w: &mut WorkersClient<AuthChannel>, me: &Me) -> Box<Lease> {
    match w
        .lease(lease_request(me))
        .await
        .unwrap()
        .into_inner()
        .outcome
    {
        Some(Outcome::Lease(l)) => Box::new(l),
        other => panic!("expected a lease, got {other:?}"),
    }
}

fn lease_ref() -> LeaseRef {
    LeaseRef {
        task_id: 1,
        epoch: 1,
    }
}

fn batch(me: &Me, lease: LeaseRef, n: u32) -> ResultBatch {
    ResultBatch {
        worker_id: me.id.clone(),
        worker_secret: me.secret.clone(),
        lease: Some(lease),
        rewards: (0..n)
            .map(|i| ExampleReward {
                example_id: format!("{i}"),
                index: i,
                scores_chosen: vec![1.0],
                scores_rejected: vec![0.0],
                texts: Vec::new(),
            })
            .collect(),
    }
}

/// The code of every RPC of both services: Workers calls as `me` on `lease` with `worker_token`,
/// Sweeps calls with `operator_token`.
async fn every_rpc(
    url: &str,
    worker_token: Option<&str>,
    operator_token: Option<&str>,
    me: &Me,
    lease: LeaseRef,
) -> Vec<(&'static str, Code)> {
    let (mut w, mut s) = clients(url, worker_token, operator_token).await;
    let code = |r: Result<(), tonic::Status>| r.err().map(|e| e.code()).unwrap_or(Code::Ok);
    vec![
        (
            "Register",
            code(w.register(RegisterRequest::default()).await.map(|_| ())),
        ),
        ("Lease", code(w.lease(lease_request(me)).await.map(|_| ()))),
        (
            "Heartbeat",
            code(
                w.heartbeat(HeartbeatRequest {
                    worker_id: me.id.clone(),
                    worker_secret: me.secret.clone(),
                    leases: vec![lease],
                    ..Default::default()
                })
                .await
                .map(|_| ()),
            ),
        ),
        (
            "StreamResults",
            code(
                w.stream_results(tokio_stream::iter(vec![batch(me, lease, 2)]))
                    .await
                    .map(|_| ()),
            ),
        ),
        (
            "Complete",
            code(
                w.complete(CompleteRequest {
                    worker_id: me.id.clone(),
                    worker_secret: me.secret.clone(),
                    lease: Some(lease),
                    ..Default::default()
                })
                .await
                .map(|_| ()),
            ),
        ),
        (
            "Fail",
            code(
                w.fail(FailRequest {
                    worker_id: me.id.clone(),
                    worker_secret: me.secret.clone(),
                    lease: Some(lease),
                    kind: FailureKind::Checkpoint as i32,
                    reason: "x".into(),
                })
                .await
                .map(|_| ()),
            ),
        ),
        (
            "Submit",
            code(
                s.submit(SubmitRequest {
                    spec: Some(SweepSpec {
                        name: "evil".into(),
                        ..Default::default()
                    }),
                    ..Default::default()
                })
                .await
                .map(|_| ()),
            ),
        ),
        (
            "Status",
            code(s.status(StatusRequest::default()).await.map(|_| ())),
        ),
        (
            "Results",
            code(
                s.results(ResultsRequest { sweep: "s".into() })
                    .await
                    .map(|_| ()),
            ),
        ),
        (
            "Cancel",
            code(
                s.cancel(CancelRequest { sweep: "s".into() })
                    .await
                    .map(|_| ()),
            ),
        ),
    ]
}

/// Nothing got through: only `workers` registered, the sweep active with nothing stored, the
/// lease (when given) still held.
fn assert_untouched(handle: &ServerHandle, workers: usize, held: Option<LeaseRef>) {
    let status = handle.store().status(None, 0).unwrap();
    assert_eq!(status.workers.len(), workers, "{:?}", status.workers);
    assert_eq!(status.sweeps.len(), 1);
    assert_eq!(status.sweeps[0].state, SweepState::Active);
    assert!(handle.store().results("s", "/ckpts/a").unwrap().is_empty());
    if let Some(held) = held {
        let leases = handle.store().leases().unwrap();
        let lease = leases
            .iter()
            .find(|l| (l.task_id, l.epoch) == (held.task_id, held.epoch))
            .expect("the lease");
        assert_eq!(lease.state, LeaseState::Active, "{lease:?}");
        assert!(status
            .workers
            .iter()
            .all(|w| w.state != WorkerState::Draining));
    }
}

#[tokio::test]
async fn every_rpc_refuses_a_missing_or_wrong_token_and_logs_no_token() {
    let log = log();
    let dir = tempfile::tempdir().unwrap();
    let handle = spawn(args(dir.path(), secured())).await.unwrap();
    plan(&handle, 2);
    let url = handle.url();
    let nobody = Me {
        id: "w1".into(),
        secret: "guess".into(),
    };

    // no token, an unknown one, an empty one: the caller is nobody
    for token in [None, Some(WRONG), Some("")] {
        for (rpc, code) in every_rpc(&url, token, token, &nobody, lease_ref()).await {
            assert_eq!(code, Code::Unauthenticated, "{rpc} with {token:?}");
        }
    }
    assert_untouched(&handle, 0, None);

    // the right tokens: every call reaches its service (answers are the service's own)
    let (mut w, mut s) = right_clients(&url).await;
    let me = register(&mut w, "w").await;
    let lref = lease(&mut w, &me).await.lease.unwrap();
    let stored = w
        .stream_results(tokio_stream::iter(vec![batch(&me, lref, 2)]))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(stored.stored, 2);
    s.status(StatusRequest::default()).await.unwrap();
    let codes = every_rpc(&url, Some(WORKER_TOKEN), Some(OPERATOR_TOKEN), &me, lref).await;
    for (rpc, code) in codes {
        assert!(
            !matches!(code, Code::Unauthenticated | Code::PermissionDenied),
            "{rpc} with the right token: {code:?}"
        );
    }

    handle.shutdown().await.unwrap();
    let text = String::from_utf8_lossy(&log.lock().unwrap()).to_string();
    assert!(
        text.contains("unauthenticated call refused"),
        "refusals are logged:\n{text}"
    );
    assert!(text.contains("/herd.v1.Workers/Register") && text.contains("/herd.v1.Sweeps/Cancel"));
    assert!(text.contains("peer=127.0.0.1:"), "{text}");
    for token in [WORKER_TOKEN, OPERATOR_TOKEN, WRONG, me.secret.as_str()] {
        assert!(!text.contains(token), "{token} was logged:\n{text}");
    }
}

/// PERMISSION_DENIED, not UNAUTHENTICATED: the caller proved who it is (a valid token), but that
/// role may not use this service; a client can tell "fix the token" from "wrong credential".
#[tokio::test]
async fn every_rpc_refuses_the_other_roles_token() {
    let log = log();
    let dir = tempfile::tempdir().unwrap();
    let handle = spawn(args(dir.path(), secured())).await.unwrap();
    plan(&handle, 2);
    let url = handle.url();
    // a real registration holding a real lease: a call let through would succeed
    let (mut w, _) = right_clients(&url).await;
    let me = register(&mut w, "w").await;
    let lref = lease(&mut w, &me).await.lease.unwrap();

    let swapped = every_rpc(&url, Some(OPERATOR_TOKEN), Some(WORKER_TOKEN), &me, lref).await;
    assert_eq!(swapped.len(), 10);
    for (rpc, code) in swapped {
        assert_eq!(
            code,
            Code::PermissionDenied,
            "{rpc} with the other role's token"
        );
    }
    assert_untouched(&handle, 1, Some(lref));
    let text = String::from_utf8_lossy(&log.lock().unwrap()).to_string();
    assert!(
        text.contains("call with the other role's token refused")
            && text.contains("rpc=/herd.v1.Sweeps/Submit")
            && text.contains("rpc=/herd.v1.Workers/Lease"),
        "{text}"
    );

    // the message says which token is needed
    let (mut as_operator, _) = clients(&url, Some(OPERATOR_TOKEN), None).await;
    let err = as_operator
        .register(RegisterRequest::default())
        .await
        .unwrap_err();
    assert!(
        err.message().contains("operator token") && err.message().contains("worker token"),
        "{err:?}"
    );
    handle.shutdown().await.unwrap();
}

/// A second worker (its own valid registration) aims at the first one's lease: with its own
/// secret it is not the holder, with the first one's id it does not have that secret. Either
/// way PERMISSION_DENIED, and nothing is stored or changed.
#[tokio::test]
async fn a_worker_cannot_act_on_another_workers_lease() {
    let dir = tempfile::tempdir().unwrap();
    let handle = spawn(args(dir.path(), secured())).await.unwrap();
    plan(&handle, 2);
    let url = handle.url();
    let (mut w, mut s) = right_clients(&url).await;
    let holder = register(&mut w, "holder").await;
    let lref = lease(&mut w, &holder).await.lease.unwrap();
    let thief = register(&mut w, "thief").await;
    let impostor = Me {
        id: holder.id.clone(),
        secret: thief.secret.clone(),
    };
    let no_secret = Me {
        id: holder.id.clone(),
        secret: String::new(),
    };

    for (who, me) in [
        ("thief", &thief),
        ("impostor", &impostor),
        ("no secret", &no_secret),
    ] {
        let codes = every_rpc(&url, Some(WORKER_TOKEN), None, me, lref).await;
        for (rpc, code) in &codes[1..6] {
            // the thief as itself: Lease asks for its own work (none is left) and Heartbeat
            // tells it to drop a lease that is not its own (refreshing nothing); the calls on the
            // lease are refused. The impostors are refused outright.
            let expected = match (who, *rpc) {
                ("thief", "Lease" | "Heartbeat") => Code::Ok,
                _ => Code::PermissionDenied,
            };
            assert_eq!(*code, expected, "{who}: {rpc}");
        }
        // Register and the Sweeps calls (no operator token) are not lease-bound
        assert_eq!(codes[0], ("Register", Code::Ok));
        assert!(codes[6..].iter().all(|(_, c)| *c == Code::Unauthenticated));
    }
    let thief_heartbeat = w
        .heartbeat(HeartbeatRequest {
            worker_id: thief.id.clone(),
            worker_secret: thief.secret.clone(),
            leases: vec![lref],
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(thief_heartbeat.revoked, vec![lref]);
    let err = w
        .stream_results(tokio_stream::iter(vec![batch(&thief, lref, 2)]))
        .await
        .unwrap_err();
    assert!(
        !err.message().contains(&holder.id),
        "the refusal names the holder: {err:?}"
    );
    // the registrations above (thief, Register calls) are the only change
    let status = s
        .status(StatusRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert!(handle.store().results("s", "/ckpts/a").unwrap().is_empty());
    let leases: Vec<_> = handle.store().leases().unwrap();
    assert_eq!(leases.len(), 1);
    assert_eq!(
        (leases[0].worker_id.as_str(), leases[0].state),
        (holder.id.as_str(), LeaseState::Active)
    );
    assert_eq!(handle.store().tasks("s").unwrap()[0].attempts, 0);
    // operators see who holds what; the holder is not draining
    let held = status.workers.iter().find(|w| w.id == holder.id).unwrap();
    assert_eq!(held.leases, vec![lref]);
    assert_eq!(held.state(), herd_rpc::v1::WorkerState::Busy);

    // the holder still finishes its lease
    let stored = w
        .stream_results(tokio_stream::iter(vec![batch(&holder, lref, 2)]))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(stored.stored, 2);
    let done = w
        .complete(CompleteRequest {
            worker_id: holder.id.clone(),
            worker_secret: holder.secret.clone(),
            lease: Some(lref),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert!(done.first);
    handle.shutdown().await.unwrap();
}

/// Registering again (the same name, as a restarted or a rogue process would) makes a new
/// registration: it gets a new id and secret and none of the old one's live leases, which stay
/// with the old secret until they end.
#[tokio::test]
async fn registering_again_does_not_take_over_live_leases() {
    let dir = tempfile::tempdir().unwrap();
    let handle = spawn(args(dir.path(), secured())).await.unwrap();
    plan(&handle, 2);
    let (mut w, _) = right_clients(&handle.url()).await;
    let first = register(&mut w, "gpu-7").await;
    let lref = lease(&mut w, &first).await.lease.unwrap();
    let again = register(&mut w, "gpu-7").await;
    assert_ne!(again.id, first.id);
    assert_ne!(again.secret, first.secret);

    // the new registration cannot complete, fail or stream into the old one's lease
    let err = w
        .fail(FailRequest {
            worker_id: again.id.clone(),
            worker_secret: again.secret.clone(),
            lease: Some(lref),
            kind: FailureKind::Released as i32,
            reason: "mine now".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied, "{err:?}");
    let err = w
        .stream_results(tokio_stream::iter(vec![batch(&again, lref, 2)]))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied, "{err:?}");
    assert!(handle.store().results("s", "/ckpts/a").unwrap().is_empty());
    // nor act as the old id
    let err = w
        .lease(LeaseRequest {
            worker_id: first.id.clone(),
            worker_secret: again.secret.clone(),
            cached_checkpoints: vec![],
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied, "{err:?}");
    // and the old registration's lease is not handed over: nothing else to lease
    let answer = w.lease(lease_request(&again)).await.unwrap().into_inner();
    assert!(
        matches!(answer.outcome, Some(Outcome::RetryAfterMs(_))),
        "{answer:?}"
    );
    let leases = handle.store().leases().unwrap();
    assert_eq!(leases.len(), 1);
    assert_eq!(leases[0].worker_id, first.id);

    // the old registration keeps working with its own secret
    let hb = w
        .heartbeat(HeartbeatRequest {
            worker_id: first.id.clone(),
            worker_secret: first.secret.clone(),
            leases: vec![lref],
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert!(hb.revoked.is_empty());
    handle.shutdown().await.unwrap();
}

/// `coord serve` as a child process whose environment lacks $HERD_TOKEN, whatever the test run's
/// holds (an in-process server would read the test process's variable); killed when dropped.
/// Numbers the state files of the `coord serve` processes this file starts.
static STARTS: AtomicUsize = AtomicUsize::new(0);

fn coord_serve_without_token_env(
    dir: &Path,
    listen: &str,
    flags: &[&str],
) -> tokio::process::Child {
    tokio::process::Command::new(env!("CARGO_BIN_EXE_coord"))
        .arg("serve")
        .arg("--state")
        .arg(dir.join(format!(
            "no-token-{}.db",
            STARTS.fetch_add(1, Ordering::SeqCst)
        )))
        .args(["--listen", listen, "--out-dir"])
        .arg(dir.join("out"))
        .args(flags)
        .env_remove(TOKEN_ENV)
        .env_remove(OPERATOR_TOKEN_ENV)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap()
}

/// The standard error of a `coord serve` (the token variables removed) that must refuse to start.
async fn refused_start(dir: &Path, flags: &[&str]) -> String {
    let child = coord_serve_without_token_env(dir, "127.0.0.1:0", flags);
    let out = tokio::time::timeout(Duration::from_secs(60), child.wait_with_output())
        .await
        .unwrap_or_else(|_| panic!("`coord serve {flags:?}` must exit, not serve"))
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(!out.status.success(), "started with {flags:?}: {stderr}");
    stderr
}

#[tokio::test]
async fn a_server_needs_both_tokens_or_none_and_no_plaintext_off_loopback() {
    let dir = tempfile::tempdir().unwrap();
    // no token: `coord serve` refuses to start
    let stderr = refused_start(dir.path(), &[]).await;
    assert!(
        stderr.contains("--insecure-no-auth") && stderr.contains("--operator-token-file"),
        "{stderr}"
    );
    let file = |name: &str, text: &str| {
        let path = dir.path().join(name);
        std::fs::write(&path, text).unwrap();
        path.display().to_string()
    };
    // one token only: refused, naming the missing one (with or without --insecure-no-auth)
    let worker_file = file("worker.token", "w-token\n");
    let operator_file = file("operator.token", "o-token\n");
    for insecure in [&[][..], &["--insecure-no-auth"][..]] {
        let stderr = refused_start(
            dir.path(),
            &[&["--token-file", &worker_file][..], insecure].concat(),
        )
        .await;
        assert!(
            stderr.contains("no operator token")
                && stderr.contains("--operator-token-file")
                && stderr.contains("HERD_OPERATOR_TOKEN"),
            "{stderr}"
        );
        let stderr = refused_start(
            dir.path(),
            &[&["--operator-token-file", &operator_file][..], insecure].concat(),
        )
        .await;
        assert!(
            stderr.contains("no worker token") && stderr.contains("--token-file"),
            "{stderr}"
        );
    }
    // --insecure-no-auth: starts, and calls without a token work
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .unwrap()
        .port();
    let mut open = coord_serve_without_token_env(
        dir.path(),
        &format!("127.0.0.1:{port}"),
        &["--insecure-no-auth"],
    );
    let url = format!("http://127.0.0.1:{port}");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let answered = match Endpoint::from_shared(url.clone()).unwrap().connect().await {
            Ok(channel) => SweepsClient::new(ClientSecurity::token(None).intercept(channel))
                .status(StatusRequest::default())
                .await
                .map_err(|status| status.to_string()),
            Err(e) => Err(e.to_string()),
        };
        match answered {
            Ok(_) => break,
            Err(e) => {
                if let Some(exit) = open.try_wait().unwrap() {
                    let out = open.wait_with_output().await.unwrap();
                    panic!(
                        "`coord serve --insecure-no-auth` exited ({exit}): {}",
                        String::from_utf8_lossy(&out.stderr)
                    );
                }
                assert!(
                    tokio::time::Instant::now() < deadline,
                    "`coord serve --insecure-no-auth` never answered a call without a token: {e}"
                );
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
    open.kill().await.unwrap();
    // with both token files the environment is not consulted: in process
    let start_error = |security: SecurityConfig| {
        let serve = args(dir.path(), security);
        async move {
            format!(
                "{:#}",
                spawn(serve).await.err().expect("the server must not start")
            )
        }
    };
    let file_arg = |name: &str, text: &str| {
        let path = dir.path().join(name);
        std::fs::write(&path, text).unwrap();
        Some(path)
    };
    // the same token for both roles would not separate them
    let err = start_error(SecurityConfig {
        token_file: file_arg("same-1", "same\n"),
        operator_token_file: file_arg("same-2", " same "),
        ..Default::default()
    })
    .await;
    assert!(err.contains("are the same"), "{err}");
    // both token files: starts, and each file's token opens its service
    let handle = spawn(args(
        dir.path(),
        SecurityConfig {
            token_file: file_arg("w.token", "from-file-worker\n"),
            operator_token_file: file_arg("o.token", "from-file-operator\n"),
            ..Default::default()
        },
    ))
    .await
    .unwrap();
    let (mut w, mut s) = clients(
        &handle.url(),
        Some("from-file-worker"),
        Some("from-file-operator"),
    )
    .await;
    w.register(RegisterRequest::default()).await.unwrap();
    s.status(StatusRequest::default()).await.unwrap();
    handle.shutdown().await.unwrap();

    // plaintext on a non-loopback address needs --allow-plaintext
    let mut open = args(dir.path(), secured());
    open.listen = "0.0.0.0:0".parse().unwrap();
    let err = spawn(open.clone()).await.err().expect("plaintext refused");
    assert!(format!("{err:#}").contains("--allow-plaintext"), "{err:#}");
    open.security.allow_plaintext = true;
    spawn(open).await.unwrap().shutdown().await.unwrap();
}

#[tokio::test]
async fn a_stale_epoch_stream_is_refused_and_nothing_it_sent_is_stored() {
    let dir = tempfile::tempdir().unwrap();
    let handle = spawn(args(dir.path(), secured())).await.unwrap();
    plan(&handle, 4);
    let (mut w, _) = right_clients(&handle.url()).await;
    let gone = register(&mut w, "gone").await;
    let other = register(&mut w, "other").await;
    let old = lease(&mut w, &gone).await;
    let old_ref = old.lease.unwrap();
    // `gone` never heartbeats: its lease expires and the task is leased again with a new epoch
    let new = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            match w
                .lease(lease_request(&other))
                .await
                .unwrap()
                .into_inner()
                .outcome
            {
                Some(Outcome::Lease(l)) => break l,
                _ => tokio::time::sleep(Duration::from_millis(50)).await,
            }
        }
    })
    .await
    .expect("the task is leased again");
    assert!(new.lease.unwrap().epoch > old_ref.epoch);

    // the old holder streams: refused at its first message, nothing stored
    let batches = vec![batch(&gone, old_ref, 2), batch(&gone, old_ref, 4)];
    let err = w
        .stream_results(tokio_stream::iter(batches))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition, "{err:?}");
    assert!(handle.store().results("s", "/ckpts/a").unwrap().is_empty());
    // the new holder with the old epoch: not its lease (epoch fencing, then worker identity)
    let err = w
        .stream_results(tokio_stream::iter(vec![batch(&other, old_ref, 2)]))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied, "{err:?}");
    assert!(handle.store().results("s", "/ckpts/a").unwrap().is_empty());
    handle.shutdown().await.unwrap();
}

#[tokio::test]
async fn oversized_batches_and_lease_floods_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let mut serve = args(dir.path(), secured());
    serve.limits = Limits {
        max_results_per_message: 3,
        lease_rate: 1.0,
        lease_burst: 2,
        ..Limits::default()
    };
    let handle = spawn(serve).await.unwrap();
    plan(&handle, 4);
    let (mut w, _) = right_clients(&handle.url()).await;
    let me = register(&mut w, "w").await;
    let other = register(&mut w, "other").await;
    // another worker's id without its secret is refused before the rate is counted: nobody can
    // spend a worker's lease budget
    for _ in 0..5 {
        let err = w
            .lease(LeaseRequest {
                worker_id: me.id.clone(),
                worker_secret: other.secret.clone(),
                cached_checkpoints: vec![],
            })
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::PermissionDenied, "{err:?}");
    }
    let lref = lease(&mut w, &me).await.lease.unwrap();

    let err = w
        .stream_results(tokio_stream::iter(vec![batch(&me, lref, 4)]))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
    assert!(handle.store().results("s", "/ckpts/a").unwrap().is_empty());
    let ok = w
        .stream_results(tokio_stream::iter(vec![batch(&me, lref, 3)]))
        .await
        .unwrap();
    assert_eq!(ok.into_inner().stored, 3);

    // burst 2: the second call passes, the third is told to slow down
    w.lease(lease_request(&me)).await.unwrap();
    let err = w.lease(lease_request(&me)).await.unwrap_err();
    assert_eq!(err.code(), Code::ResourceExhausted, "{err:?}");
    let wait: u64 = err
        .metadata()
        .get("retry-after-ms")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
        .expect("retry-after-ms");
    assert!(wait > 0 && wait <= 1000, "{wait}");
    // other workers have their own bucket
    w.lease(lease_request(&other)).await.unwrap();
    handle.shutdown().await.unwrap();
}

/// `coord status` with the operator token over http:// to another machine warns once; over
/// loopback it does not.
#[test]
fn a_client_warns_once_about_a_token_sent_in_clear_off_loopback() {
    const WARNING: &str = "the bearer token is sent unencrypted";
    let status = |url: &str| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_coord"))
            .args(["status", "--coordinator", url])
            .env("HERD_OPERATOR_TOKEN", OPERATOR_TOKEN)
            .env("RUST_LOG", "info")
            .output()
            .unwrap();
        assert!(!out.status.success(), "nothing listens at {url}");
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    // 0.0.0.0 is not a loopback address, so the token counts as sent off the machine; Linux
    // delivers a connection to it on this machine (refused here), so no packet leaves it
    let stderr = status(&format!("http://0.0.0.0:{port}"));
    assert_eq!(stderr.matches(WARNING).count(), 1, "{stderr}");
    assert!(stderr.contains("cannot reach the coordinator"), "{stderr}");
    let stderr = status(&format!("http://127.0.0.1:{port}"));
    assert!(!stderr.contains(WARNING), "{stderr}");
}

/// A CA, a server certificate for localhost/127.0.0.1 and a client certificate, as PEM files.
struct Pki {
    ca: std::path::PathBuf,
    server_cert: std::path::PathBuf,
    server_key: std::path::PathBuf,
    client_cert: std::path::PathBuf,
    client_key: std::path::PathBuf,
}

fn pki(dir: &Path) -> Pki {
    use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate().unwrap()).unwrap();
    let leaf = |names: Vec<String>| {
        let key = KeyPair::generate().unwrap();
        let cert = CertificateParams::new(names)
            .unwrap()
            .signed_by(&key, &ca)
            .unwrap();
        (cert.pem(), key.serialize_pem())
    };
    let (server_cert, server_key) = leaf(vec!["localhost".into(), "127.0.0.1".into()]);
    let (client_cert, client_key) = leaf(vec!["worker-1".into()]);
    let write = |name: &str, text: &str| {
        let path = dir.join(name);
        std::fs::write(&path, text).unwrap();
        path
    };
    Pki {
        ca: write("ca.pem", &ca.pem()),
        server_cert: write("server.pem", &server_cert),
        server_key: write("server.key", &server_key),
        client_cert: write("client.pem", &client_cert),
        client_key: write("client.key", &client_key),
    }
}

/// Status over `url` with `security` (token added): Ok, or the error text.
async fn status_with(url: &str, security: &ClientSecurity) -> Result<(), String> {
    let endpoint = Endpoint::from_shared(url.to_string())
        .unwrap()
        .connect_timeout(Duration::from_secs(5))
        .timeout(Duration::from_secs(5));
    let endpoint = security.apply(endpoint)?;
    let channel = endpoint.connect().await.map_err(|e| format!("{e:?}"))?;
    let mut client = SweepsClient::new(security.intercept(channel));
    client
        .status(StatusRequest::default())
        .await
        .map(|_| ())
        .map_err(|e| format!("{e:?}"))
}

#[tokio::test]
async fn tls_and_mtls() {
    let dir = tempfile::tempdir().unwrap();
    let pki = pki(dir.path());
    let tls = SecurityConfig {
        tls_cert: Some(pki.server_cert.clone()),
        tls_key: Some(pki.server_key.clone()),
        ..secured()
    };
    let handle = spawn(args(&dir.path().join("tls"), tls.clone()))
        .await
        .unwrap();
    let https = format!("https://localhost:{}", handle.addr.port());
    let with_ca = ClientSecurity {
        tls_ca: Some(pki.ca.clone()),
        ..ClientSecurity::token(Some(OPERATOR_TOKEN))
    };
    status_with(&https, &with_ca).await.unwrap();
    // a client that does not trust the CA (system roots only) is refused
    let err = status_with(&https, &ClientSecurity::token(Some(OPERATOR_TOKEN)))
        .await
        .unwrap_err();
    assert!(!err.is_empty());
    // plaintext against the TLS port fails too
    let plain = format!("http://127.0.0.1:{}", handle.addr.port());
    assert!(
        status_with(&plain, &ClientSecurity::token(Some(OPERATOR_TOKEN)))
            .await
            .is_err()
    );
    // TLS does not replace the token
    let err = status_with(
        &https,
        &ClientSecurity {
            token: None,
            ..with_ca.clone()
        },
    )
    .await
    .unwrap_err();
    assert!(err.contains("Unauthenticated"), "{err}");
    handle.shutdown().await.unwrap();

    // mTLS: a client without a certificate is refused, one with a CA-signed certificate works
    let mtls = SecurityConfig {
        tls_client_ca: Some(pki.ca.clone()),
        ..tls
    };
    let handle = spawn(args(&dir.path().join("mtls"), mtls)).await.unwrap();
    let https = format!("https://localhost:{}", handle.addr.port());
    assert!(status_with(&https, &with_ca).await.is_err());
    let with_cert = ClientSecurity {
        tls_cert: Some(pki.client_cert.clone()),
        tls_key: Some(pki.client_key.clone()),
        ..with_ca
    };
    status_with(&https, &with_cert).await.unwrap();
    handle.shutdown().await.unwrap();
}
