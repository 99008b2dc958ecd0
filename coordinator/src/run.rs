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
use indicatif::{ProgressBar, ProgressStyle};

use herd_rpc::v1::sweeps_client::SweepsClient;
use herd_rpc::v1::{
    ResultsRequest, StatusRequest, SubmitRequest, SweepSpec, SweepState, SweepStatus,
};

use crate::client::summary::write_leaderboard;
use crate::config::ServerConfig;
use crate::security::{RoleTokens, SecurityConfig};
use crate::server::spawn;

/// One `coord run`: the sweep (its name is the folder its reports go to under `out`) and the
/// workers that score it.
#[derive(Clone, Debug)]
pub struct LocalRun {
    pub spec: SweepSpec,
    /// state file, reports and worker logs go here
    pub out: PathBuf,
    pub workers: LocalWorkers,
    /// `--ci`: bootstrap intervals in the summary
    pub ci: crate::client::summary::CiArgs,
}

/// The local `worker` processes of a [`LocalRun`].
#[derive(Clone, Debug)]
pub struct LocalWorkers {
    pub count: usize,
    /// the worker binary (None: `worker` next to this `coord`)
    pub bin: Option<PathBuf>,
    /// passed to each worker: auto, cpu, cuda or cuda:N
    pub device: String,
    /// extra worker flags
    pub extra_args: Vec<String>,
}

/// The server's own defaults, with the state and reports under `out`, these tokens, and a free
/// loopback port.
fn server_config(out: &Path, tokens: &RoleTokens) -> ServerConfig {
    ServerConfig {
        state: out.join("herd-state.db"),
        out_dir: out.to_path_buf(),
        listen: "127.0.0.1:0".parse().expect("a socket address"),
        security: SecurityConfig::with_tokens(tokens),
        ..ServerConfig::default()
    }
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

/// The `--device` of local worker `index`: with `auto` or `cuda` and `gpus` visible CUDA
/// devices, `cuda:{index mod gpus}`, so each worker has a GPU of its own (shared round robin
/// when there are more workers than GPUs); `cpu`, an explicit `cuda:N`, and `auto` or `cuda`
/// without a visible GPU are passed on as given (the worker decides, or fails saying why).
pub fn worker_device(requested: &str, index: usize, gpus: usize) -> String {
    match requested {
        "auto" | "cuda" if gpus > 0 => format!("cuda:{}", index % gpus),
        _ => requested.to_string(),
    }
}

/// How many CUDA devices a worker started from here sees: the entries of `CUDA_VISIBLE_DEVICES`
/// before the first invalid one (as CUDA reads it; ordinals then index that list), else the
/// GPUs nvidia-smi lists, else 0.
fn visible_gpus() -> usize {
    let listed = || {
        let output = Command::new("nvidia-smi")
            .args(["--query-gpu=index", "--format=csv,noheader"])
            .stdin(Stdio::null())
            .stderr(Stdio::null())
            .output()
            .ok()?;
        output.status.success().then(|| {
            String::from_utf8_lossy(&output.stdout)
                .lines()
                .filter(|l| !l.trim().is_empty())
                .count()
        })
    };
    count_gpus(
        std::env::var("CUDA_VISIBLE_DEVICES").ok().as_deref(),
        listed,
    )
}

/// [`visible_gpus`] from `CUDA_VISIBLE_DEVICES` and, when it is unset, nvidia-smi's count.
pub fn count_gpus(visible: Option<&str>, listed: impl FnOnce() -> Option<usize>) -> usize {
    match visible {
        Some(list) => list
            .split(',')
            .map(str::trim)
            .take_while(|id| !id.is_empty() && !id.starts_with('-'))
            .count(),
        None => listed().unwrap_or(0),
    }
}

/// Worker processes, stopped with SIGTERM (they drain) and then killed if they linger.
struct Workers {
    children: Vec<(Child, PathBuf)>,
}

impl Workers {
    /// Workers get the worker token only (an operator token in this process's environment is
    /// not passed on).
    fn start(
        sweep: &str,
        workers: &LocalWorkers,
        url: &str,
        token: &str,
        logs: &Path,
    ) -> anyhow::Result<Workers> {
        let bin = worker_binary(workers.bin.as_deref())?;
        std::fs::create_dir_all(logs).with_context(|| format!("creating {}", logs.display()))?;
        let gpus = visible_gpus();
        let mut children = Vec::new();
        for i in 0..workers.count {
            let device = worker_device(&workers.device, i, gpus);
            let log_path = logs.join(format!("worker-{i}.log"));
            let log = File::create(&log_path)
                .with_context(|| format!("creating {}", log_path.display()))?;
            let child = Command::new(&bin)
                .arg("--coordinator")
                .arg(url)
                .arg("--name")
                .arg(format!("{sweep}-worker-{i}"))
                .arg("--device")
                .arg(&device)
                .args(&workers.extra_args)
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

pub async fn run(run: LocalRun) -> anyhow::Result<()> {
    let name = run.spec.name.clone();
    crate::domain::check_sweep_name(&name).map_err(|e| anyhow::anyhow!("--name: {e}"))?;
    let weighting = crate::report::parse_weighting(&run.spec.xstest_weighting)
        .map_err(|e| anyhow::anyhow!("--xstest-weighting: {e}"))?;
    let ci = run.ci.config(weighting)?;
    std::fs::create_dir_all(&run.out).with_context(|| format!("creating {}", run.out.display()))?;
    // fresh tokens for the embedded server (loopback): its workers get the worker token through
    // $HERD_TOKEN, this process keeps the operator token for Submit/Status/Results
    let tokens = RoleTokens::random()?;
    let server = spawn(server_config(&run.out, &tokens)).await?;
    let url = format!("http://{}", server.addr);
    let security = herd_rpc::security::ClientSecurity::token(Some(&tokens.operator));
    let mut client = crate::client::connect_with(&url, &security)
        .await
        .with_context(|| format!("connecting to the embedded coordinator at {url}"))?;
    let submitted = client
        .submit(SubmitRequest {
            spec: Some(run.spec.clone()),
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
        run.out.join("logs").display()
    );

    let mut workers = Workers::start(
        &name,
        &run.workers,
        &url,
        &tokens.worker,
        &run.out.join("logs"),
    )?;
    let status = watch(&mut client, &name, &mut workers).await;
    workers.stop().await;
    let status = status?;

    let results = client
        .results(ResultsRequest {
            sweep: name.clone(),
        })
        .await
        .map_err(|s| anyhow::anyhow!("results: {}", s.message()))?
        .into_inner();
    server.shutdown().await?;
    let dir = run.out.join(&name);
    report(&dir, &status, &results);
    if !results.checkpoints.is_empty() {
        let files = write_leaderboard(&dir, &name, &results.checkpoints, weighting, ci.as_ref())?;
        for warning in &files.summary.report.warnings {
            eprintln!("note: {warning}");
        }
        let intervals = files
            .intervals
            .map(|p| format!(", bootstrap intervals in {}", p.display()))
            .unwrap_or_default();
        println!(
            "\n{}\nsummary: {} (plot {}){intervals}",
            files.table.trim_end(),
            files.summary.markdown.display(),
            files.summary.png.display()
        );
    }
    anyhow::ensure!(
        status.state() == SweepState::Done,
        "sweep {name} ended {}",
        crate::service::convert::sweep_state_name(status.state())
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
        if sweep_status.state() != SweepState::Active {
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

/// Failures, notes, accuracies and where the files are (`dir`: the sweep's report folder).
fn report(dir: &Path, status: &SweepStatus, results: &herd_rpc::v1::ResultsResponse) {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_local_worker_gets_its_own_gpu() {
        let devices: Vec<String> = (0..5).map(|i| worker_device("auto", i, 2)).collect();
        assert_eq!(devices, ["cuda:0", "cuda:1", "cuda:0", "cuda:1", "cuda:0"]);
        assert_eq!(worker_device("cuda", 3, 8), "cuda:3");
        // CPU stays CPU; an explicit device is the user's; no GPU: the worker decides
        assert_eq!(worker_device("cpu", 1, 8), "cpu");
        assert_eq!(worker_device("cuda:2", 0, 8), "cuda:2");
        assert_eq!(worker_device("auto", 1, 0), "auto");
        assert_eq!(worker_device("cuda", 1, 0), "cuda");
    }

    #[test]
    fn visible_gpus_follow_cuda_visible_devices_first() {
        let never = || -> Option<usize> { panic!("nvidia-smi is not asked when the list is set") };
        assert_eq!(count_gpus(Some("0,1,2,3"), never), 4);
        assert_eq!(count_gpus(Some("GPU-8f1c2d, GPU-77aa"), never), 2);
        // CUDA stops at the first invalid entry; empty or -1 hides every GPU
        assert_eq!(count_gpus(Some("2,-1,3"), never), 1);
        assert_eq!(count_gpus(Some(""), never), 0);
        assert_eq!(count_gpus(Some("-1"), never), 0);
        assert_eq!(count_gpus(None, || Some(8)), 8);
        assert_eq!(count_gpus(None, || None), 0);
    }
}
