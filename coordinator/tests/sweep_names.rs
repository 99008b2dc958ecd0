//! Sweep names are folder names under the output folder: hostile ones sent through the real
//! gRPC client are refused with INVALID_ARGUMENT naming the rule, and nothing is created outside
//! the output folder (nor, for a name a state file already holds, at start-up).

use std::path::{Path, PathBuf};
use std::time::Duration;

use herd_coordinator::config::ServerConfig;
use herd_coordinator::domain::SWEEP_NAME_RULE;
use herd_coordinator::scheduler::Policy;
use herd_coordinator::security::{RoleTokens, SecurityConfig};
use herd_coordinator::server::{serve, spawn};
use herd_rpc::security::{AuthChannel as Channel, ClientSecurity};
use herd_rpc::v1::{
    sweeps_client::SweepsClient, CancelRequest, ResultsRequest, StatusRequest, SubmitRequest,
    SweepSpec,
};
use tonic::Code;

/// The Sweeps service opens to the operator token.
const OPERATOR_TOKEN: &str = "sweep-names-operator-token";

fn args(root: &Path) -> ServerConfig {
    ServerConfig {
        state: root.join("state.db"),
        listen: "127.0.0.1:0".parse().unwrap(),
        out_dir: root.join("out"),
        policy: Policy {
            lease_timeout_ms: 60_000,
            heartbeat_interval_ms: 50,
            max_attempts: 3,
            retry_backoff_ms: 20,
            stragglers: true,
            max_leases_per_task: 2,
            ..Policy::default()
        },
        exit_when_done: true,
        metrics_listen: None,
        security: SecurityConfig::with_tokens(&RoleTokens {
            worker: "sweep-names-worker-token".into(),
            operator: OPERATOR_TOKEN.into(),
        }),
        limits: Default::default(),
    }
}

async fn sweeps_client(url: String) -> SweepsClient<Channel> {
    let channel = tonic::transport::Endpoint::from_shared(url)
        .unwrap()
        .connect()
        .await
        .unwrap();
    SweepsClient::new(ClientSecurity::token(Some(OPERATOR_TOKEN)).intercept(channel))
}

/// Every file and folder below `dir`, relative to it.
fn tree(dir: &Path) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).unwrap() {
            let path = entry.unwrap().path();
            found.push(path.strip_prefix(dir).unwrap().to_path_buf());
            if path.is_dir() {
                stack.push(path);
            }
        }
    }
    found.sort();
    found
}

/// Paths other than the state file (and its journal) and the output folder.
fn outside_state_and_out(paths: Vec<PathBuf>) -> Vec<PathBuf> {
    paths
        .into_iter()
        .filter(|p| !p.to_string_lossy().starts_with("a/b/state.db") && !p.starts_with("a/b/out"))
        .collect()
}

/// Real data on disk, so a Submit that got past the name would plan and store a sweep.
fn real_inputs(root: &Path) -> (String, String) {
    let ckpts = root.join("ckpts").join("m");
    std::fs::create_dir_all(&ckpts).unwrap();
    std::fs::write(ckpts.join("config.json"), "{}").unwrap();
    std::fs::write(ckpts.join("model.safetensors"), b"").unwrap();
    let eval = root.join("eval.jsonl");
    std::fs::write(
        &eval,
        r#"{"id":"0","prompt":"q","chosen":"a","rejected":"b","subset":"alpacaeval-easy"}"#,
    )
    .unwrap();
    (
        root.join("ckpts").display().to_string(),
        eval.display().to_string(),
    )
}

#[tokio::test]
async fn hostile_sweep_names_are_refused_on_every_rpc_and_nothing_lands_outside() {
    // the coordinator's folder sits two levels down so that "../../x" stays inside `top`
    let top = tempfile::tempdir().unwrap();
    let root = top.path().join("a").join("b");
    std::fs::create_dir_all(&root).unwrap();
    let (checkpoints, eval) = real_inputs(&root);
    let absolute = top.path().join("absolute-target");
    let handle = spawn(args(&root)).await.unwrap();
    let mut sweeps = sweeps_client(handle.url()).await;
    let before = tree(top.path());

    let hostile = [
        "../../x".to_string(),
        "../escaped".to_string(),
        absolute.join("x").display().to_string(),
        "..".into(),
        ".".into(),
        ".hidden".into(),
        "a/b".into(),
        "a\\b".into(),
        " padded ".into(),
        "x".repeat(129),
    ];
    for name in &hostile {
        let spec = SweepSpec {
            name: name.clone(),
            checkpoints: vec![checkpoints.clone()],
            eval_dataset: eval.clone(),
            output_csv: "x.csv".into(),
            ..SweepSpec::default()
        };
        let errors = [
            sweeps
                .submit(SubmitRequest {
                    spec: Some(spec),
                    ..Default::default()
                })
                .await
                .unwrap_err(),
            sweeps
                .status(StatusRequest {
                    sweep: name.clone(),
                })
                .await
                .unwrap_err(),
            sweeps
                .results(ResultsRequest {
                    sweep: name.clone(),
                })
                .await
                .unwrap_err(),
            sweeps
                .cancel(CancelRequest {
                    sweep: name.clone(),
                })
                .await
                .unwrap_err(),
        ];
        for err in errors {
            assert_eq!(err.code(), Code::InvalidArgument, "{name:?}: {err:?}");
            assert!(
                err.message().contains(SWEEP_NAME_RULE),
                "{name:?}: {}",
                err.message()
            );
        }
    }
    let status = sweeps
        .status(StatusRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert!(status.sweeps.is_empty(), "{:?}", status.sweeps);
    // the same names are refused by the store itself
    let err = handle
        .store()
        .submit(
            &SweepSpec {
                name: "../../x".into(),
                ..SweepSpec::default()
            },
            &[],
            &[],
            1,
        )
        .unwrap_err();
    assert!(err.to_string().contains(SWEEP_NAME_RULE), "{err}");
    handle.shutdown().await.unwrap();

    assert_eq!(
        outside_state_and_out(tree(top.path())),
        outside_state_and_out(before),
        "files appeared outside the output folder"
    );
    assert!(!absolute.exists());
}

#[tokio::test]
async fn a_hostile_name_already_in_a_state_file_gets_no_report_at_start_up() {
    let top = tempfile::tempdir().unwrap();
    let root = top.path().join("a").join("b");
    std::fs::create_dir_all(&root).unwrap();
    let (checkpoints, eval) = real_inputs(&root);
    let spec = SweepSpec {
        name: "fine".into(),
        checkpoints: vec![checkpoints],
        eval_dataset: eval,
        output_csv: "x.csv".into(),
        ..SweepSpec::default()
    };
    // a finished sweep, then renamed behind the coordinator's back as an older version could
    // have stored it
    {
        let handle = spawn(ServerConfig {
            exit_when_done: false,
            ..args(&root)
        })
        .await
        .unwrap();
        let mut sweeps = sweeps_client(handle.url()).await;
        sweeps
            .submit(SubmitRequest {
                spec: Some(spec),
                ..Default::default()
            })
            .await
            .unwrap();
        sweeps
            .cancel(CancelRequest {
                sweep: "fine".into(),
            })
            .await
            .unwrap();
        handle.shutdown().await.unwrap();
        let db = rusqlite::Connection::open(root.join("state.db")).unwrap();
        let renamed = db
            .execute(
                "UPDATE sweeps SET name = '../../escaped', state = 'done' WHERE name = 'fine'",
                [],
            )
            .unwrap();
        assert_eq!(renamed, 1);
    }
    let before = tree(top.path());
    tokio::time::timeout(Duration::from_secs(20), serve(args(&root)))
        .await
        .expect("serve returns: the only sweep is finished")
        .unwrap();
    // `<out>/../../escaped` would be a/escaped
    assert!(!top.path().join("a").join("escaped").exists());
    assert_eq!(
        outside_state_and_out(tree(top.path())),
        outside_state_and_out(before),
        "files appeared outside the output folder"
    );
}
