//! Issue 7: every RPC of both services refuses a missing or wrong bearer token (UNAUTHENTICATED,
//! logged without the token, nothing stored); a stale-epoch result stream is refused and stores
//! nothing; oversized result batches and lease floods are refused; TLS and mTLS with a CA and
//! certificates made at test time.

use std::io::Write;
use std::path::Path;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use herd_coordinator::model::{CheckpointFormat, PlannedCheckpoint, PlannedExample};
use herd_coordinator::security::{LimitArgs, SecurityArgs};
use herd_coordinator::server::{spawn, ServeArgs, ServerHandle};
use herd_proto::security::{AuthChannel, ClientSecurity, TOKEN_ENV};
use herd_proto::v1::{
    lease_response::Outcome, sweeps_client::SweepsClient, workers_client::WorkersClient,
    CancelRequest, CompleteRequest, ExampleReward, FailRequest, HeartbeatRequest, LeaseRef,
    LeaseRequest, RegisterRequest, ResultBatch, ResultsRequest, StatusRequest, SubmitRequest,
    SweepSpec,
};
use tonic::transport::Endpoint;
use tonic::Code;

const TOKEN: &str = "the-right-token-7f3a9c";
const WRONG: &str = "a-wrong-token-51be20";

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

fn args(dir: &Path, security: SecurityArgs) -> ServeArgs {
    // the flags' defaults (a struct literal would break with every new flag)
    #[derive(clap::Parser)]
    struct Defaults {
        #[command(flatten)]
        serve: ServeArgs,
    }
    std::fs::create_dir_all(dir).unwrap();
    let mut args = <Defaults as clap::Parser>::parse_from(["coord"]).serve;
    args.state = dir.join("state.db");
    args.listen = "127.0.0.1:0".parse().unwrap();
    args.out_dir = dir.join("out");
    args.lease_timeout_ms = 300;
    args.heartbeat_interval_ms = 50;
    args.retry_backoff_ms = 20;
    args.stragglers = false;
    args.security = security;
    args
}

/// A sweep planned straight through the store: one checkpoint `/ckpts/a`, `n` examples, one shard.
fn plan(handle: &ServerHandle, n: u32) {
    let checkpoints = vec![PlannedCheckpoint {
        uri: "/ckpts/a".into(),
        name: "rm-a".into(),
        format: CheckpointFormat::HuggingFace,
        size_bytes: 10,
    }];
    let examples: Vec<PlannedExample> = (0..n)
        .map(|i| PlannedExample {
            index: i,
            id: format!("{i}"),
            subset: "alpacaeval-easy".into(),
            pair_json: format!(
                r#"{{"id":"{i}","prompt":"q","chosen":"a","rejected":"b","subset":"alpacaeval-easy"}}"#
            ),
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

async fn clients(
    url: &str,
    token: Option<&str>,
) -> (WorkersClient<AuthChannel>, SweepsClient<AuthChannel>) {
    let channel = Endpoint::from_shared(url.to_string())
        .unwrap()
        .connect()
        .await
        .unwrap();
    let security = ClientSecurity::token(token);
    (
        WorkersClient::new(security.intercept(channel.clone())),
        SweepsClient::new(security.intercept(channel)),
    )
}

fn lease_ref() -> LeaseRef {
    LeaseRef {
        task_id: 1,
        epoch: 1,
    }
}

fn batch(worker_id: &str, lease: LeaseRef, n: u32) -> ResultBatch {
    ResultBatch {
        worker_id: worker_id.into(),
        lease: Some(lease),
        rewards: (0..n)
            .map(|i| ExampleReward {
                example_id: format!("{i}"),
                index: i,
                scores_chosen: vec![1.0],
                scores_rejected: vec![0.0],
            })
            .collect(),
    }
}

/// The code of every RPC of both services, called with `token`.
async fn every_rpc(url: &str, token: Option<&str>, worker: &str) -> Vec<(&'static str, Code)> {
    let (mut w, mut s) = clients(url, token).await;
    let code = |r: Result<(), tonic::Status>| r.err().map(|e| e.code()).unwrap_or(Code::Ok);
    vec![
        (
            "Register",
            code(w.register(RegisterRequest::default()).await.map(|_| ())),
        ),
        (
            "Lease",
            code(
                w.lease(LeaseRequest {
                    worker_id: worker.into(),
                    cached_checkpoints: vec![],
                })
                .await
                .map(|_| ()),
            ),
        ),
        (
            "Heartbeat",
            code(
                w.heartbeat(HeartbeatRequest {
                    worker_id: worker.into(),
                    ..Default::default()
                })
                .await
                .map(|_| ()),
            ),
        ),
        (
            "StreamResults",
            code(
                w.stream_results(tokio_stream::iter(vec![batch(worker, lease_ref(), 2)]))
                    .await
                    .map(|_| ()),
            ),
        ),
        (
            "Complete",
            code(
                w.complete(CompleteRequest {
                    worker_id: worker.into(),
                    lease: Some(lease_ref()),
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
                    worker_id: worker.into(),
                    lease: Some(lease_ref()),
                    reason: "x".into(),
                    ..Default::default()
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

#[tokio::test]
async fn every_rpc_refuses_a_missing_or_wrong_token_and_logs_no_token() {
    let log = log();
    let dir = tempfile::tempdir().unwrap();
    let handle = spawn(args(dir.path(), SecurityArgs::with_token(TOKEN)))
        .await
        .unwrap();
    plan(&handle, 2);
    let url = handle.url();

    for token in [None, Some(WRONG), Some("")] {
        for (rpc, code) in every_rpc(&url, token, "w-1").await {
            assert_eq!(code, Code::Unauthenticated, "{rpc} with {token:?}");
        }
    }
    // nothing got through: no worker registered, the sweep neither cancelled nor joined by another
    let status = handle.store().status(None, 0).unwrap();
    assert!(status.workers.is_empty(), "{:?}", status.workers);
    assert_eq!(status.sweeps.len(), 1);
    assert_eq!(status.sweeps[0].state, "active");
    assert!(handle.store().results("s", "/ckpts/a").unwrap().is_empty());

    // the right token: every call reaches its service (answers are the service's own)
    let (mut w, mut s) = clients(&url, Some(TOKEN)).await;
    let id = w
        .register(RegisterRequest::default())
        .await
        .unwrap()
        .into_inner()
        .worker_id;
    let lease = w
        .lease(LeaseRequest {
            worker_id: id.clone(),
            cached_checkpoints: vec![],
        })
        .await
        .unwrap()
        .into_inner();
    let Some(Outcome::Lease(lease)) = lease.outcome else {
        panic!("expected a lease, got {lease:?}");
    };
    let lref = lease.lease.unwrap();
    let stored = w
        .stream_results(tokio_stream::iter(vec![batch(&id, lref, 2)]))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(stored.stored, 2);
    s.status(StatusRequest::default()).await.unwrap();
    let codes = every_rpc(&url, Some(TOKEN), &id).await;
    for (rpc, code) in codes {
        assert_ne!(code, Code::Unauthenticated, "{rpc} with the right token");
    }

    handle.shutdown().await.unwrap();
    let text = String::from_utf8_lossy(&log.lock().unwrap()).to_string();
    assert!(
        text.contains("unauthenticated call refused"),
        "refusals are logged:\n{text}"
    );
    assert!(text.contains("/herd.v1.Workers/Register") && text.contains("/herd.v1.Sweeps/Cancel"));
    assert!(text.contains("peer=127.0.0.1:"), "{text}");
    assert!(!text.contains(TOKEN), "the token was logged:\n{text}");
    assert!(
        !text.contains(WRONG),
        "a presented token was logged:\n{text}"
    );
}

/// `coord serve` as a child process whose environment lacks $HERD_TOKEN, whatever the test run's
/// holds (an in-process server would read the test process's variable); killed when dropped.
fn coord_serve_without_token_env(
    dir: &Path,
    listen: &str,
    flags: &[&str],
) -> tokio::process::Child {
    tokio::process::Command::new(env!("CARGO_BIN_EXE_coord"))
        .arg("serve")
        .arg("--state")
        .arg(dir.join(format!("no-token-{}.db", flags.join(""))))
        .args(["--listen", listen, "--out-dir"])
        .arg(dir.join("out"))
        .args(flags)
        .env_remove(TOKEN_ENV)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap()
}

#[tokio::test]
async fn a_server_without_a_token_or_tls_off_loopback_refuses_to_start() {
    let dir = tempfile::tempdir().unwrap();
    // no token: `coord serve` refuses to start
    let refused = coord_serve_without_token_env(dir.path(), "127.0.0.1:0", &[]);
    let out = tokio::time::timeout(Duration::from_secs(60), refused.wait_with_output())
        .await
        .expect("`coord serve` without a token must exit, not serve")
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "started without a token: {stderr}");
    assert!(stderr.contains("--insecure-no-auth"), "{stderr}");
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

    // plaintext on a non-loopback address needs --allow-plaintext
    let mut open = args(dir.path(), SecurityArgs::with_token(TOKEN));
    open.listen = "0.0.0.0:0".parse().unwrap();
    let err = spawn(open.clone()).await.err().expect("plaintext refused");
    assert!(format!("{err:#}").contains("--allow-plaintext"), "{err:#}");
    open.security.allow_plaintext = true;
    spawn(open).await.unwrap().shutdown().await.unwrap();
}

#[tokio::test]
async fn a_stale_epoch_stream_is_refused_and_nothing_it_sent_is_stored() {
    let dir = tempfile::tempdir().unwrap();
    let handle = spawn(args(dir.path(), SecurityArgs::with_token(TOKEN)))
        .await
        .unwrap();
    plan(&handle, 4);
    let (mut w, _) = clients(&handle.url(), Some(TOKEN)).await;
    let register = |name: &str| RegisterRequest {
        name: name.into(),
        ..Default::default()
    };
    let gone = w
        .register(register("gone"))
        .await
        .unwrap()
        .into_inner()
        .worker_id;
    let other = w
        .register(register("other"))
        .await
        .unwrap()
        .into_inner()
        .worker_id;
    let lease = |worker: &str| LeaseRequest {
        worker_id: worker.into(),
        cached_checkpoints: vec![],
    };
    let Some(Outcome::Lease(old)) = w.lease(lease(&gone)).await.unwrap().into_inner().outcome
    else {
        panic!("expected a lease");
    };
    let old_ref = old.lease.unwrap();
    // `gone` never heartbeats: its lease expires and the task is leased again with a new epoch
    let new = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            match w.lease(lease(&other)).await.unwrap().into_inner().outcome {
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
    // the new holder with the old epoch too (epoch fencing, not just worker identity)
    let err = w
        .stream_results(tokio_stream::iter(vec![batch(&other, old_ref, 2)]))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition, "{err:?}");
    assert!(handle.store().results("s", "/ckpts/a").unwrap().is_empty());
    handle.shutdown().await.unwrap();
}

#[tokio::test]
async fn oversized_batches_and_lease_floods_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let mut serve = args(dir.path(), SecurityArgs::with_token(TOKEN));
    serve.limits = LimitArgs {
        max_results_per_message: 3,
        lease_rate: 1.0,
        lease_burst: 2,
        ..LimitArgs::default()
    };
    let handle = spawn(serve).await.unwrap();
    plan(&handle, 4);
    let (mut w, _) = clients(&handle.url(), Some(TOKEN)).await;
    let id = w
        .register(RegisterRequest::default())
        .await
        .unwrap()
        .into_inner()
        .worker_id;
    let lease = || LeaseRequest {
        worker_id: id.clone(),
        cached_checkpoints: vec![],
    };
    let Some(Outcome::Lease(l)) = w.lease(lease()).await.unwrap().into_inner().outcome else {
        panic!("expected a lease");
    };
    let lref = l.lease.unwrap();

    let err = w
        .stream_results(tokio_stream::iter(vec![batch(&id, lref, 4)]))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
    assert!(handle.store().results("s", "/ckpts/a").unwrap().is_empty());
    let ok = w
        .stream_results(tokio_stream::iter(vec![batch(&id, lref, 3)]))
        .await
        .unwrap();
    assert_eq!(ok.into_inner().stored, 3);

    // burst 2: the second call passes, the third is told to slow down
    w.lease(lease()).await.unwrap();
    let err = w.lease(lease()).await.unwrap_err();
    assert_eq!(err.code(), Code::ResourceExhausted, "{err:?}");
    let wait: u64 = err
        .metadata()
        .get("retry-after-ms")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
        .expect("retry-after-ms");
    assert!(wait > 0 && wait <= 1000, "{wait}");
    // other workers have their own bucket
    let other = w
        .register(RegisterRequest::default())
        .await
        .unwrap()
        .into_inner()
        .worker_id;
    w.lease(LeaseRequest {
        worker_id: other,
        cached_checkpoints: vec![],
    })
    .await
    .unwrap();
    handle.shutdown().await.unwrap();
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
    let tls = SecurityArgs {
        tls_cert: Some(pki.server_cert.clone()),
        tls_key: Some(pki.server_key.clone()),
        ..SecurityArgs::with_token(TOKEN)
    };
    let handle = spawn(args(&dir.path().join("tls"), tls.clone()))
        .await
        .unwrap();
    let https = format!("https://localhost:{}", handle.addr.port());
    let with_ca = ClientSecurity {
        tls_ca: Some(pki.ca.clone()),
        ..ClientSecurity::token(Some(TOKEN))
    };
    status_with(&https, &with_ca).await.unwrap();
    // a client that does not trust the CA (system roots only) is refused
    let err = status_with(&https, &ClientSecurity::token(Some(TOKEN)))
        .await
        .unwrap_err();
    assert!(!err.is_empty());
    // plaintext against the TLS port fails too
    let plain = format!("http://127.0.0.1:{}", handle.addr.port());
    assert!(status_with(&plain, &ClientSecurity::token(Some(TOKEN)))
        .await
        .is_err());
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
    let mtls = SecurityArgs {
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
