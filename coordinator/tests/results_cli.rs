//! `coord results` (the real binary) against a coordinator in this process whose sweep a
//! scripted worker scored over gRPC: the summary (Markdown + PNG) and `--ci`'s intervals.csv
//! must equal the library applied to the scores the store holds.

use std::path::Path;
use std::process::Command;

use herd_coordinator::config::{Limits, ServerConfig};
use herd_coordinator::domain::{CheckpointFormat, PlannedCheckpoint, PlannedExample};
use herd_coordinator::scheduler::Policy;
use herd_coordinator::security::{RoleTokens, SecurityConfig};
use herd_coordinator::server::{spawn, ServerHandle};
use herd_rewardbench::files::EvalSetResults;
use herd_rewardbench::summary::{write_summary, CheckpointSummary};
use herd_rewardbench::sweep_csv::{
    build_sweep_table, with_confidence_intervals, Experiment, RowLabel, SweepOptions,
};
use herd_rewardbench::v1::bootstrap::{BootstrapConfig, Interval};
use herd_rewardbench::v1::{
    filtered_row_count, is_win, section_scores, subset_accuracies, XstestWeighting, SUBSETS,
};
use herd_rpc::security::{AuthChannel as Channel, ClientSecurity};
use herd_rpc::v1::{
    lease_response::Outcome, workers_client::WorkersClient, Capabilities, CompleteRequest,
    ExampleReward, LeaseRequest, RegisterRequest, ResultBatch, SweepSpec,
};

const OPERATOR: &str = "results-cli-operator-token";
const WORKER: &str = "results-cli-worker-token";
const SWEEP: &str = "rb";

fn config(dir: &Path) -> ServerConfig {
    ServerConfig {
        state: dir.join("state.db"),
        listen: "127.0.0.1:0".parse().unwrap(),
        out_dir: dir.join("out"),
        policy: Policy {
            lease_timeout_ms: 60_000,
            heartbeat_interval_ms: 50,
            max_attempts: 3,
            retry_backoff_ms: 20,
            stragglers: false,
            max_leases_per_task: 1,
            ..Policy::default()
        },
        exit_when_done: false,
        metrics_listen: None,
        security: SecurityConfig::with_tokens(&RoleTokens {
            worker: WORKER.into(),
            operator: OPERATOR.into(),
        }),
        limits: Limits {
            lease_rate: 0.0,
            ..Limits::default()
        },
    }
}

/// Checkpoint names with a SWAPS_<n> budget (the summary's x axis).
fn checkpoint_names() -> Vec<String> {
    [1200, 300, 4026]
        .iter()
        .map(|b| format!("rm-eval-hs2-tulu2_13b_rm_ID__{b:04x}aa__SWAPS_{b}"))
        .collect()
}

/// RewardBench's filtered split in shape: every subset with its row count (so `--ci` can
/// rebuild each subset's outcomes from its accuracy).
fn plan(handle: &ServerHandle) {
    let checkpoints: Vec<PlannedCheckpoint> = checkpoint_names()
        .into_iter()
        .map(|name| PlannedCheckpoint {
            uri: format!("/ckpts/{name}"),
            name,
            format: CheckpointFormat::HuggingFace,
            size_bytes: 10,
            param_bytes: 0,
        })
        .collect();
    let mut examples = Vec::new();
    for subset in SUBSETS {
        for _ in 0..filtered_row_count(subset).unwrap() {
            let i = examples.len() as u32;
            examples.push(PlannedExample {
                index: i,
                id: format!("{i}"),
                subset: subset.to_string(),
                pair_json: format!(
                    r#"{{"id":"{i}","prompt":"q {i}","chosen":"good","rejected":"bad","subset":"{subset}"}}"#
                ),
                completions: None,
            });
        }
    }
    let spec = SweepSpec {
        name: SWEEP.into(),
        checkpoints: vec!["/ckpts".into()],
        eval_dataset: "eval.jsonl".into(),
        shard_size: 1000,
        output_csv: format!("{SWEEP}.csv"),
        ..SweepSpec::default()
    };
    handle
        .store()
        .submit(&spec, &checkpoints, &examples, 1)
        .unwrap();
}

/// A deterministic score per (checkpoint uri, example index): about 40-90% wins, some ties.
fn score(uri: &str, index: u32) -> (f64, f64) {
    let salt = uri
        .bytes()
        .fold(7u64, |h, b| h.wrapping_mul(31).wrapping_add(u64::from(b)));
    let x = (u64::from(index).wrapping_mul(2654435761) ^ salt) % 97;
    let threshold = 40 + salt % 50;
    let chosen = if x < threshold { 1.0 } else { -0.5 };
    let rejected = if x % 11 == 0 { chosen } else { 0.0 };
    (chosen, rejected)
}

/// Scores every task over gRPC as a worker would.
async fn score_all(handle: &ServerHandle) {
    let channel = tonic::transport::Endpoint::from_shared(handle.url())
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut workers: WorkersClient<Channel> =
        WorkersClient::new(ClientSecurity::token(Some(WORKER)).intercept(channel));
    let me = workers
        .register(RegisterRequest {
            name: "scripted".into(),
            capabilities: Some(Capabilities {
                device: "cpu".into(),
                ..Capabilities::default()
            }),
        })
        .await
        .unwrap()
        .into_inner();
    loop {
        let outcome = workers
            .lease(LeaseRequest {
                worker_id: me.worker_id.clone(),
                worker_secret: me.worker_secret.clone(),
                cached_checkpoints: vec![],
            })
            .await
            .unwrap()
            .into_inner()
            .outcome;
        let lease = match outcome {
            Some(Outcome::Lease(l)) => l,
            Some(Outcome::RetryAfterMs(_)) | Some(Outcome::Shutdown(_)) => return,
            None => panic!("empty lease answer"),
        };
        let lref = lease.lease.unwrap();
        let rewards: Vec<ExampleReward> = lease
            .examples
            .iter()
            .map(|e| {
                let (c, r) = score(&lease.checkpoint.as_ref().unwrap().uri, e.index);
                ExampleReward {
                    example_id: e.id.clone(),
                    scores_chosen: vec![c],
                    scores_rejected: vec![r],
                    index: e.index,
                    texts: Vec::new(),
                }
            })
            .collect();
        workers
            .stream_results(tokio_stream::iter(vec![ResultBatch {
                worker_id: me.worker_id.clone(),
                worker_secret: me.worker_secret.clone(),
                lease: Some(lref),
                rewards,
            }]))
            .await
            .unwrap();
        workers
            .complete(CompleteRequest {
                worker_id: me.worker_id.clone(),
                worker_secret: me.worker_secret.clone(),
                lease: Some(lref),
                model_type: "Seq. Classifier".into(),
                chat_template: "tokenizer".into(),
                scalar_output: false,
            })
            .await
            .unwrap();
    }
}

/// Each checkpoint's results computed here from the stored rewards.
fn stored_results(handle: &ServerHandle) -> Vec<EvalSetResults> {
    let subsets: Vec<&str> = SUBSETS
        .iter()
        .flat_map(|s| std::iter::repeat_n(*s, filtered_row_count(s).unwrap() as usize))
        .collect();
    checkpoint_names()
        .into_iter()
        .map(|name| {
            let rewards = handle
                .store()
                .results(SWEEP, &format!("/ckpts/{name}"))
                .unwrap();
            assert_eq!(rewards.len(), subsets.len());
            let wins = rewards
                .iter()
                .map(|r| (subsets[r.index as usize], is_win(&r.chosen, &r.rejected)));
            EvalSetResults::new(
                name,
                "Seq. Classifier",
                Some("tokenizer".into()),
                subset_accuracies(wins),
            )
        })
        .collect()
}

fn coord_results(url: &str, args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_coord"))
        .arg("results")
        .arg("--coordinator")
        .arg(url)
        .arg("--sweep")
        .arg(SWEEP)
        .args(args)
        .env(herd_rpc::security::OPERATOR_TOKEN_ENV, OPERATOR)
        .env_remove("RUST_LOG")
        .output()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn results_write_the_summary_and_intervals_of_the_stored_scores() {
    let tmp = tempfile::tempdir().unwrap();
    let handle = spawn(config(tmp.path())).await.unwrap();
    plan(&handle);
    score_all(&handle).await;
    let url = handle.url();
    let results = stored_results(&handle);

    // the library on the stored scores
    let weighting = XstestWeighting::Legacy;
    let ci = BootstrapConfig {
        resamples: 200,
        seed: 11,
        weighting,
        ..BootstrapConfig::default()
    };
    let experiments: Vec<Experiment> = results
        .iter()
        .map(|r| Experiment::from_results(r.model.clone(), r))
        .collect();
    let table = build_sweep_table(
        &experiments,
        None,
        &SweepOptions {
            weighting,
            ..SweepOptions::default()
        },
    )
    .unwrap();
    let intervals = with_confidence_intervals(&table, &ci).unwrap();
    let rows: Vec<CheckpointSummary> = results
        .iter()
        .map(|r| {
            let budget = r.model.rsplit("SWAPS_").next().unwrap().parse().unwrap();
            let mut row = CheckpointSummary::from_v1(
                r.model.clone(),
                Some(budget),
                &section_scores(&r.accuracies, weighting),
                None,
            );
            let at = intervals
                .labels
                .iter()
                .position(|l| *l == RowLabel::Name(r.model.clone()))
                .unwrap();
            row.ci = Some(Interval {
                low: intervals.column("Overall CI low").unwrap().cells[at]
                    .as_f64()
                    .unwrap(),
                high: intervals.column("Overall CI high").unwrap().cells[at]
                    .as_f64()
                    .unwrap(),
                level: 0.95,
            });
            row
        })
        .collect();
    let want = tmp.path().join("want");
    let want_files = write_summary(&want, SWEEP, &rows).unwrap();

    // coord results --ci
    let out = tmp.path().join("got");
    let csv = out.join("sweep.csv");
    let output = coord_results(
        &url,
        &[
            "-o",
            csv.to_str().unwrap(),
            "--out-dir",
            out.to_str().unwrap(),
            "--ci",
            "--ci-resamples",
            "200",
            "--ci-seed",
            "11",
        ],
    );
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        stdout.contains(&format!("wrote {}", csv.display())),
        "{stdout}"
    );
    assert!(
        stdout.contains(&out.join("summary.md").display().to_string()),
        "{stdout}"
    );
    assert!(
        stdout.contains(&out.join("intervals.csv").display().to_string()),
        "{stdout}"
    );
    assert_eq!(
        std::fs::read_to_string(out.join("summary.md")).unwrap(),
        std::fs::read_to_string(&want_files.markdown).unwrap()
    );
    assert_eq!(
        std::fs::read(out.join("overall_vs_budget.png")).unwrap(),
        std::fs::read(&want_files.png).unwrap()
    );
    assert_eq!(
        std::fs::read_to_string(out.join("intervals.csv")).unwrap(),
        intervals.to_csv()
    );
    // the Overall intervals hold the point estimate and are written in the summary
    for row in &rows {
        let ci = row.ci.unwrap();
        assert!(ci.low <= row.overall && row.overall <= ci.high, "{row:?}");
    }
    let header = intervals.to_csv().lines().next().unwrap().to_owned();
    assert!(
        header.ends_with("Overall CI low,Overall CI high"),
        "{header}"
    );
    for name in checkpoint_names() {
        assert!(out.join("metrics").join(format!("{name}.json")).exists());
    }

    // without --ci: no intervals, the summary beside the CSV
    let plain = tmp.path().join("plain");
    let csv = plain.join("sweep.csv");
    let output = coord_results(&url, &["-o", csv.to_str().unwrap()]);
    assert!(output.status.success(), "{output:?}");
    assert!(plain.join("summary.md").exists());
    assert!(plain.join("overall_vs_budget.png").exists());
    assert!(!plain.join("intervals.csv").exists());
    let md = std::fs::read_to_string(plain.join("summary.md")).unwrap();
    let no_ci: Vec<CheckpointSummary> = rows
        .iter()
        .cloned()
        .map(|r| CheckpointSummary { ci: None, ..r })
        .collect();
    assert!(
        md.contains(&herd_rewardbench::summary::markdown_table(&no_ci)),
        "{md}"
    );

    // bad --ci settings are refused before anything is written
    let bad = tmp.path().join("bad");
    let output = coord_results(
        &url,
        &[
            "-o",
            bad.join("x.csv").to_str().unwrap(),
            "--ci",
            "--ci-resamples",
            "0",
        ],
    );
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("--ci-resamples"));
    assert!(!bad.exists());
    handle.shutdown().await.unwrap();
}
