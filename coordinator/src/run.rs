//! `coord run`: the embedded default. One machine, one command: a coordinator in this process
//! (state file and reports under `--out`), N local `worker` processes, a progress bar, and the
//! RewardBench results plus the sweep CSV at the end.
//!
//! Only the `worker` binary links libtorch, so the workers are child processes (the `worker`
//! binary next to `coord`), talking to the in-process coordinator over loopback gRPC exactly as
//! remote workers do.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use indicatif::{ProgressBar, ProgressStyle};

use herd_rpc::v1::sweeps_client::SweepsClient;
use herd_rpc::v1::{
    EasyLmConfig, ResultsRequest, Scoring, StatusRequest, SubmitRequest, SweepSpec, SweepStatus,
};

use crate::server::{spawn, ServeArgs};

#[derive(clap::Args, Clone, Debug)]
pub struct RunArgs {
    /// a checkpoint: HF folder, EasyLM streaming_params file, folder of checkpoints,
    /// gs://bucket/prefix (STORAGE_EMULATOR_HOST honoured) or hf:org/name; repeat for several
    #[arg(long = "model", required = true)]
    pub models: Vec<String>,
    /// evaluation set: JSONL / JSON / Parquet with prompt, chosen, rejected, subset (id
    /// optional), or hf://datasets/ORG/NAME
    #[arg(long)]
    pub dataset: String,
    #[arg(long, default_value = "")]
    pub split: String,
    /// tokenizer folder (local, gs://.../ or hf:org/name); default: each model's own folder
    #[arg(long, default_value = "")]
    pub tokenizer: String,
    /// FastChat template used when the tokenizer has no chat template
    #[arg(long, default_value = herd_rpc::defaults::CHAT_TEMPLATE)]
    pub chat_template: String,
    #[arg(long, default_value_t = herd_rpc::defaults::MAX_LENGTH)]
    pub max_length: u32,
    /// the sweep's name (and the folder its reports go to under --out)
    #[arg(long, default_value = "run")]
    pub name: String,
    /// state file, reports and worker logs go here
    #[arg(long, default_value = "out/run")]
    pub out: PathBuf,
    /// local worker processes
    #[arg(long, default_value_t = 1)]
    pub workers: usize,
    /// the worker binary (default: `worker` next to this `coord`)
    #[arg(long)]
    pub worker_bin: Option<PathBuf>,
    /// passed to each worker: auto, cpu, cuda or cuda:N
    #[arg(long, default_value = "auto")]
    pub device: String,
    /// extra worker flags, e.g. --worker-arg=--dtype=fp32 (repeatable)
    #[arg(long = "worker-arg", allow_hyphen_values = true)]
    pub worker_args: Vec<String>,
    /// feature-count folder: the CSV joins each run's counts by uuid (else name mode)
    #[arg(long, default_value = "")]
    pub feature_counts_dir: String,
    /// experiment names become rm-eval-<prefix>-<run>
    #[arg(long, default_value = "")]
    pub experiment_prefix: String,
    #[arg(long, default_value = "")]
    pub output_csv: String,
    /// examples per task
    #[arg(long, default_value_t = 500)]
    pub shard_size: u32,
    /// legacy (xstest 250/154, the reference CSV) or current
    #[arg(long, default_value = "legacy")]
    pub xstest_weighting: String,
    /// EasyLM checkpoints: LLaMA size (7b, 13b, ...)
    #[arg(long, default_value = "")]
    pub size: String,
    /// EasyLM checkpoints outside the size table: attention heads
    #[arg(long)]
    pub num_heads: Option<i64>,
    #[arg(long)]
    pub num_kv_heads: Option<i64>,
}

impl RunArgs {
    fn spec(&self) -> SweepSpec {
        SweepSpec {
            name: self.name.clone(),
            checkpoints: self.models.clone(),
            eval_dataset: self.dataset.clone(),
            eval_split: self.split.clone(),
            scoring: Some(Scoring {
                tokenizer: self.tokenizer.clone(),
                chat_template: self.chat_template.clone(),
                max_length: self.max_length,
                easylm: Some(EasyLmConfig {
                    size: self.size.clone(),
                    num_heads: self.num_heads,
                    num_kv_heads: self.num_kv_heads,
                    ..EasyLmConfig::default()
                }),
            }),
            feature_counts_dir: self.feature_counts_dir.clone(),
            output_csv: if self.output_csv.is_empty() {
                format!("{}.csv", self.name)
            } else {
                self.output_csv.clone()
            },
            experiment_prefix: self.experiment_prefix.clone(),
            shard_size: self.shard_size,
            xstest_weighting: self.xstest_weighting.clone(),
            dataset_total_size: 0,
        }
    }
}

/// The server's own defaults, with the state and reports under `out`.
fn serve_args(out: &Path) -> ServeArgs {
    #[derive(Parser)]
    struct Defaults {
        #[command(flatten)]
        serve: ServeArgs,
    }
    let mut args = Defaults::parse_from(["coord"]).serve;
    args.state = out.join("herd-state.db");
    args.out_dir = out.to_path_buf();
    args.listen = "127.0.0.1:0".parse().expect("a socket address");
    args
}

fn worker_binary(explicit: Option<&Path>) -> anyhow::Result<PathBuf> {
    if let Some(path) = explicit {
        return Ok(path.to_path_buf());
    }
    let exe = std::env::current_exe().context("locating the coord binary")?;
    let sibling = exe.with_file_name("worker");
    anyhow::ensure!(
        sibling.exists(),
        "no worker binary next to {} (build it with `cargo build --release -p herd-worker`, or pass --worker-bin)",
        exe.display()
    );
    Ok(sibling)
}

/// Worker processes, stopped with SIGTERM (they drain) and then killed if they linger.
struct Workers {
    children: Vec<(Child, PathBuf)>,
}

impl Workers {
    /// Workers get the worker token only (an operator token in this process's environment is
    /// not passed on).
    fn start(args: &RunArgs, url: &str, token: &str, logs: &Path) -> anyhow::Result<Workers> {
        let bin = worker_binary(args.worker_bin.as_deref())?;
        std::fs::create_dir_all(logs).with_context(|| format!("creating {}", logs.display()))?;
        let mut children = Vec::new();
        for i in 0..args.workers {
            let log_path = logs.join(format!("worker-{i}.log"));
            let log = File::create(&log_path)
                .with_context(|| format!("creating {}", log_path.display()))?;
            let child = Command::new(&bin)
                .arg("--coordinator")
                .arg(url)
                .arg("--name")
                .arg(format!("{}-worker-{i}", args.name))
                .arg("--device")
                .arg(&args.device)
                .args(&args.worker_args)
                .env(herd_rpc::security::TOKEN_ENV, token)
                .env_remove(herd_rpc::security::OPERATOR_TOKEN_ENV)
                .stdin(Stdio::null())
                .stdout(Stdio::from(log.try_clone()?))
                .stderr(Stdio::from(log))
                .spawn()
                .with_context(|| format!("starting {}", bin.display()))?;
            children.push((child, log_path));
        }
        Ok(Workers { children })
    }

    /// The log of a worker that exited while the sweep still runs.
    fn exited(&mut self) -> Option<String> {
        for (child, log) in &mut self.children {
            if let Ok(Some(status)) = child.try_wait() {
                let text = std::fs::read_to_string(&*log).unwrap_or_default();
                let tail: Vec<&str> = text.lines().rev().take(15).collect();
                let tail: Vec<&str> = tail.into_iter().rev().collect();
                return Some(format!(
                    "worker exited ({status}); last lines of {}:\n{}",
                    log.display(),
                    tail.join("\n")
                ));
            }
        }
        None
    }

    async fn stop(mut self) {
        for (child, _) in &self.children {
            // SAFETY: signalling our own child process
            unsafe {
                libc::kill(child.id() as i32, libc::SIGTERM);
            }
        }
        for _ in 0..100 {
            if self
                .children
                .iter_mut()
                .all(|(c, _)| matches!(c.try_wait(), Ok(Some(_))))
            {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        for (child, _) in &mut self.children {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn progress_bar(total: u64) -> ProgressBar {
    let bar = ProgressBar::new(total);
    let style = ProgressStyle::with_template(
        "{msg} [{elapsed_precise}] {bar:40} {pos}/{len} examples ({per_sec}, eta {eta})",
    )
    .unwrap_or_else(|_| ProgressStyle::default_bar());
    bar.set_style(style);
    bar
}

fn describe(status: &SweepStatus) -> String {
    format!(
        "tasks {}/{} ({} leased, {} failed)",
        status.tasks_done, status.tasks_total, status.tasks_leased, status.tasks_failed
    )
}

pub async fn run(args: RunArgs) -> anyhow::Result<()> {
    crate::model::check_sweep_name(&args.name).map_err(|e| anyhow::anyhow!("--name: {e}"))?;
    std::fs::create_dir_all(&args.out)
        .with_context(|| format!("creating {}", args.out.display()))?;
    // fresh tokens for the embedded server (loopback): its workers get the worker token through
    // $HERD_TOKEN, this process keeps the operator token for Submit/Status/Results
    let tokens = crate::security::RoleTokens::random()?;
    let mut serve = serve_args(&args.out);
    serve.security = crate::security::SecurityArgs::with_tokens(&tokens);
    let server = spawn(serve).await?;
    let url = format!("http://{}", server.addr);
    let security = herd_rpc::security::ClientSecurity::token(Some(&tokens.operator));
    let mut client = crate::client::connect_with(&url, &security)
        .await
        .with_context(|| format!("connecting to the embedded coordinator at {url}"))?;
    let submitted = client
        .submit(SubmitRequest {
            spec: Some(args.spec()),
            retry_failed: false,
        })
        .await
        .map_err(|s| anyhow::anyhow!("submit: {}", s.message()))?
        .into_inner();
    eprintln!(
        "sweep {}: {} checkpoint(s) planned ({} already scored), {} examples, {} tasks; logs in {}",
        submitted.sweep,
        submitted.checkpoints_added,
        submitted.checkpoints_skipped,
        submitted.examples,
        submitted.tasks_added,
        args.out.join("logs").display()
    );

    let mut workers = Workers::start(&args, &url, &tokens.worker, &args.out.join("logs"))?;
    let status = watch(&mut client, &args.name, &mut workers).await;
    workers.stop().await;
    let status = status?;

    let results = client
        .results(ResultsRequest {
            sweep: args.name.clone(),
        })
        .await
        .map_err(|s| anyhow::anyhow!("results: {}", s.message()))?
        .into_inner();
    server.shutdown().await?;
    report(&args, &status, &results);
    anyhow::ensure!(
        status.state == "done",
        "sweep {} ended {}",
        args.name,
        status.state
    );
    Ok(())
}

/// Polls the sweep until it is no longer active, drawing a progress bar.
async fn watch(
    client: &mut SweepsClient<herd_rpc::security::AuthChannel>,
    sweep: &str,
    workers: &mut Workers,
) -> anyhow::Result<SweepStatus> {
    let mut bar: Option<ProgressBar> = None;
    loop {
        let status = client
            .status(StatusRequest {
                sweep: sweep.to_string(),
            })
            .await
            .map_err(|s| anyhow::anyhow!("status: {}", s.message()))?
            .into_inner();
        let sweep_status = status
            .sweeps
            .into_iter()
            .find(|s| s.name == sweep)
            .with_context(|| format!("the coordinator has no sweep {sweep}"))?;
        let bar = bar.get_or_insert_with(|| progress_bar(sweep_status.examples_total));
        bar.set_position(sweep_status.examples_stored);
        bar.set_message(describe(&sweep_status));
        if sweep_status.state != "active" {
            bar.finish();
            return Ok(sweep_status);
        }
        if let Some(message) = workers.exited() {
            bar.abandon();
            anyhow::bail!("{message}");
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

fn report(args: &RunArgs, status: &SweepStatus, results: &herd_rpc::v1::ResultsResponse) {
    for failure in &status.failures {
        eprintln!(
            "failed: {} (task {}, attempt {}): {}",
            failure.checkpoint, failure.task_id, failure.attempt, failure.reason
        );
    }
    for note in &results.notes {
        eprintln!("note: {note}");
    }
    for checkpoint in &results.checkpoints {
        eprintln!(
            "{}: {}",
            checkpoint.name,
            accuracy_line(&checkpoint.metrics_json)
        );
    }
    let dir = args.out.join(&args.name);
    let csv = if results.csv.is_empty() {
        "no sweep CSV (see the note above)".to_string()
    } else {
        format!("the sweep CSV {}", results.output_csv)
    };
    eprintln!(
        "{} checkpoint(s) scored: RewardBench metrics/ and eval-set/ JSON and {csv} in {}",
        results.checkpoints.len(),
        dir.display()
    );
    if !results.csv.is_empty() {
        print!("{}", results.csv);
    }
}

/// `subset accuracy` pairs of a metrics.json, for the terminal.
fn accuracy_line(metrics_json: &str) -> String {
    let Ok(serde_json::Value::Object(metrics)) = serde_json::from_str(metrics_json) else {
        return "unreadable metrics".to_string();
    };
    let accuracies: Vec<String> = metrics
        .iter()
        .filter_map(|(subset, value)| Some(format!("{subset} {:.3}", value.as_f64()?)))
        .collect();
    accuracies.join(", ")
}
