//! herd-sim: simulated workers against a real `coord serve` process on 127.0.0.1.
//!
//! * `sweep`: scaling of a simulated sweep with 1, 2, 4, 8 workers (efficiency, coordinator
//!   overhead per task);
//! * `ingest`: many workers streaming results as fast as they can (results/s, Lease latency),
//!   optionally with a kill -9 and restart of the coordinator in the middle, then a check of the
//!   state file against what was acknowledged.
//!
//! The workers run the real agent loop of the `worker` binary (herd-agent); their scoring is a
//! STUB (sleep + deterministic fake rewards): this measures coordination, not GPUs.

mod coord;
mod verify;
mod worker;

use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::{Parser, Subcommand};

use coord::{Coord, CoordSettings};
use worker::{percentile, stub_scorer, Shared, SimConfig};

#[derive(Parser)]
#[command(
    name = "herd-sim",
    about = "simulated herd workers (STUB scoring) against a real coord serve"
)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(clap::Args, Clone)]
struct Common {
    /// the coordinator binary (`cargo build --release -p herd-coordinator`)
    #[arg(long, default_value = "target/release/coord")]
    coord_bin: PathBuf,
    /// where state files, inputs and coordinator logs go (default: a temporary folder, removed
    /// at the end unless --keep)
    #[arg(long)]
    work_dir: Option<PathBuf>,
    #[arg(long)]
    keep: bool,
    /// extra `coord serve` argument (repeatable), e.g. --coord-arg=--stragglers=false
    #[arg(long = "coord-arg", allow_hyphen_values = true)]
    coord_args: Vec<String>,
    #[arg(long, default_value_t = 30_000)]
    lease_timeout_ms: u64,
    #[arg(long, default_value_t = 2_000)]
    heartbeat_interval_ms: u64,
}

#[derive(Subcommand)]
enum Cmd {
    /// a simulated sweep with N workers each (one fresh coordinator per N): efficiency and overhead
    Sweep {
        #[command(flatten)]
        common: Common,
        /// worker counts, comma separated
        #[arg(long, value_delimiter = ',', default_value = "1,2,4,8")]
        workers: Vec<usize>,
        #[arg(long, default_value_t = 8)]
        checkpoints: usize,
        #[arg(long, default_value_t = 2000)]
        examples: usize,
        #[arg(long, default_value_t = 250)]
        shard_size: u32,
        /// STUB scoring time per example (a GPU stand-in)
        #[arg(long, default_value_t = 2.0)]
        ms_per_example: f64,
        /// rewards per ResultBatch message
        #[arg(long, default_value_t = 32)]
        stream_batch: usize,
    },
    /// many workers streaming with zero scoring time: results/s, Lease latency, kill -9 check
    Ingest {
        #[command(flatten)]
        common: Common,
        #[arg(long, default_value_t = 200)]
        workers: usize,
        /// how long the workers stream
        #[arg(long, default_value_t = 20.0)]
        seconds: f64,
        /// SIGKILL the coordinator this many seconds in, restart it on the same state and port
        #[arg(long)]
        kill_at: Option<f64>,
        #[arg(long, default_value_t = 200)]
        checkpoints: usize,
        #[arg(long, default_value_t = 10_000)]
        examples: usize,
        #[arg(long, default_value_t = 1000)]
        shard_size: u32,
        /// rewards per ResultBatch message (a lease's messages go in one StreamResults call, the
        /// unit of acknowledgement)
        #[arg(long, default_value_t = 250)]
        stream_batch: usize,
        /// results table in the state file (default: found from the schema)
        #[arg(long, requires_all = ["owner_column", "index_column"])]
        results_table: Option<String>,
        #[arg(long)]
        owner_column: Option<String>,
        #[arg(long)]
        index_column: Option<String>,
        /// the owner column holds task ids, not checkpoint ids
        #[arg(long)]
        owner_is_task: bool,
    },
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    // This thread runs the measurement (the coordinator process, submit, progress, the state
    // check); the agents run on `AgentThreads`.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let pool = AgentThreads::start()?;
    runtime.block_on(async {
        match cli.command {
            Cmd::Sweep {
                common,
                workers,
                checkpoints,
                examples,
                shard_size,
                ms_per_example,
                stream_batch,
            } => {
                sweep(
                    &pool,
                    &common,
                    &workers,
                    checkpoints,
                    examples,
                    shard_size,
                    ms_per_example,
                    stream_batch,
                )
                .await
            }
            Cmd::Ingest {
                common,
                workers,
                seconds,
                kill_at,
                checkpoints,
                examples,
                shard_size,
                stream_batch,
                results_table,
                owner_column,
                index_column,
                owner_is_task,
            } => {
                let table = results_table.map(|table| verify::ResultsTable {
                    table,
                    owner: owner_column.unwrap_or_default(),
                    owner_is_task,
                    index: index_column.unwrap_or_default(),
                });
                ingest(
                    &pool,
                    &common,
                    workers,
                    seconds,
                    kill_at,
                    checkpoints,
                    examples,
                    shard_size,
                    stream_batch,
                    table,
                )
                .await
            }
        }
    })
}

/// The work folder and the guard that removes it.
fn work_dir(common: &Common) -> anyhow::Result<(PathBuf, Option<tempfile::TempDir>)> {
    match &common.work_dir {
        Some(dir) => {
            std::fs::create_dir_all(dir)?;
            Ok((dir.clone(), None))
        }
        None => {
            let tmp = tempfile::Builder::new().prefix("herd-sim-").tempdir()?;
            let path = tmp.path().to_path_buf();
            if common.keep {
                let path = tmp.keep();
                return Ok((path, None));
            }
            Ok((path, Some(tmp)))
        }
    }
}

fn settings(common: &Common) -> CoordSettings {
    CoordSettings {
        lease_timeout_ms: common.lease_timeout_ms,
        heartbeat_interval_ms: common.heartbeat_interval_ms,
        extra: common.coord_args.clone(),
    }
}

type AgentHandle = tokio::task::JoinHandle<anyhow::Result<()>>;
type AgentJob = Box<dyn FnOnce() -> AgentHandle + Send>;
/// a job and where its agent's handle goes
type AgentRequest = (AgentJob, std::sync::mpsc::SyncSender<AgentHandle>);

/// One thread per core, each a current-thread runtime with a LocalSet, and every agent on one of
/// them for its whole life. The agents' futures are not `Send` (see herd-agent's prefetch), so
/// on a multi-thread runtime they would be local tasks woken across threads (ingestion measured
/// ~20% lower); on a single thread for all of them, that thread's queue delays every answer the
/// agents wait for, and herd-sim's Lease latency would measure its own backlog.
struct AgentThreads {
    jobs: Vec<tokio::sync::mpsc::UnboundedSender<AgentRequest>>,
}

impl AgentThreads {
    fn start() -> anyhow::Result<Self> {
        let threads = std::thread::available_parallelism().map_or(2, |n| n.get());
        let mut jobs = Vec::new();
        for t in 0..threads {
            let (send, mut recv) = tokio::sync::mpsc::unbounded_channel::<AgentRequest>();
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            std::thread::Builder::new()
                .name(format!("herd-sim-agents-{t}"))
                .spawn(move || {
                    let local = tokio::task::LocalSet::new();
                    // spawn what is sent; the agents run until the pool is dropped
                    local.block_on(&runtime, async move {
                        while let Some((job, reply)) = recv.recv().await {
                            let _ = reply.send(job());
                        }
                    });
                })?;
            jobs.push(send);
        }
        Ok(AgentThreads { jobs })
    }

    /// Starts `make()`'s future on thread `n` modulo the thread count.
    fn spawn<F, Fut>(&self, n: usize, make: F) -> anyhow::Result<AgentHandle>
    where
        F: FnOnce() -> Fut + Send + 'static,
        Fut: std::future::Future<Output = anyhow::Result<()>> + 'static,
    {
        let (reply, handle) = std::sync::mpsc::sync_channel(1);
        let job: AgentJob = Box::new(move || tokio::task::spawn_local(make()));
        self.jobs[n % self.jobs.len()]
            .send((job, reply))
            .map_err(|_| anyhow::anyhow!("agent thread {n} is gone"))?;
        handle
            .recv()
            .map_err(|_| anyhow::anyhow!("agent thread {n} did not start the agent"))
    }
}

fn spawn_workers(
    pool: &AgentThreads,
    n: usize,
    cfg: &Arc<SimConfig>,
    shared: &Arc<Shared>,
) -> anyhow::Result<Vec<AgentHandle>> {
    let scorer = Arc::new(stub_scorer(cfg.ms_per_example));
    (0..n)
        .map(|i| {
            let (cfg, scorer, shared) = (cfg.clone(), scorer.clone(), shared.clone());
            pool.spawn(i, move || worker::run(i, cfg, scorer, shared))
        })
        .collect()
}

async fn stop_workers(
    shared: &Shared,
    handles: Vec<tokio::task::JoinHandle<anyhow::Result<()>>>,
    timeout: Duration,
) -> usize {
    shared.stop.send_replace(true);
    let deadline = Instant::now() + timeout;
    let mut stuck = 0;
    for h in handles {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, h).await {
            Ok(Ok(Ok(()))) => {}
            Ok(Ok(Err(e))) => eprintln!("worker error: {e:#}"),
            Ok(Err(e)) => eprintln!("worker panicked: {e}"),
            Err(_) => stuck += 1,
        }
    }
    stuck
}

struct SweepRow {
    workers: usize,
    tasks: u32,
    examples: u64,
    plan: Duration,
    measured: Duration,
    status_done: Option<Duration>,
    lease_p50_us: u64,
    lease_p99_us: u64,
    duplicate_completes: u64,
}

#[allow(clippy::too_many_arguments)]
async fn sweep(
    pool: &AgentThreads,
    common: &Common,
    worker_counts: &[usize],
    checkpoints: usize,
    examples: usize,
    shard_size: u32,
    ms_per_example: f64,
    stream_batch: usize,
) -> anyhow::Result<()> {
    let (dir, _guard) = work_dir(common)?;
    let inputs = coord::write_inputs(&dir.join("inputs"), checkpoints, examples)?;
    eprintln!(
        "herd-sim sweep: {checkpoints} checkpoints x {examples} examples, shards of {shard_size}, \
         STUB scoring {ms_per_example} ms/example; work dir {}",
        dir.display()
    );
    let mut rows = Vec::new();
    for &n in worker_counts {
        let run_dir = dir.join(format!("sweep-w{n}"));
        std::fs::create_dir_all(&run_dir)?;
        let coord = Coord::start(&common.coord_bin, &run_dir, settings(common)).await?;
        let planned = Instant::now();
        let submitted = coord
            .submit(coord::spec("sim", &inputs, shard_size))
            .await?;
        let plan = planned.elapsed();
        let tasks = submitted.tasks_added;
        anyhow::ensure!(tasks > 0, "Submit planned no tasks: {submitted:?}");
        let shared = Arc::new(Shared::new(tasks as u64, false));
        let cfg = Arc::new(SimConfig {
            url: coord.url(),
            ms_per_example,
            stream_batch,
            cache_root: run_dir.join("caches"),
        });
        let started = Instant::now();
        let handles = spawn_workers(pool, n, &cfg, &shared)?;
        let total_ms = (checkpoints * examples) as f64 * ms_per_example;
        let limit = Duration::from_secs_f64(60.0 + 5.0 * total_ms / 1000.0 / n as f64);
        let done_at = loop {
            if let Some(at) = *shared.done_at.lock().unwrap() {
                break at;
            }
            anyhow::ensure!(
                started.elapsed() < limit,
                "sweep with {n} workers not done after {limit:?} ({} of {tasks} tasks)\n{}",
                shared.completed_first.load(Ordering::SeqCst),
                coord.log_tail(30)
            );
            let _ =
                tokio::time::timeout(Duration::from_millis(50), shared.all_done.notified()).await;
        };
        let measured = done_at - started;
        // the coordinator's own view: Status leaves "active"
        let mut status_done = None;
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if let Ok((state, _, _)) = coord.sweep_state("sim").await {
                if state != herd_rpc::v1::SweepState::Active {
                    status_done = Some(started.elapsed());
                    break;
                }
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let stuck = stop_workers(&shared, handles, Duration::from_secs(10)).await;
        if stuck > 0 {
            eprintln!("{stuck} workers did not stop within 10 s");
        }
        let mut lease = shared.stats.lock().unwrap().lease_granted_us.clone();
        lease.sort_unstable();
        let row = SweepRow {
            workers: n,
            tasks,
            examples: (checkpoints * examples) as u64,
            plan,
            measured,
            status_done,
            lease_p50_us: percentile(&lease, 50.0),
            lease_p99_us: percentile(&lease, 99.0),
            duplicate_completes: shared.completed_dup.load(Ordering::Relaxed),
        };
        eprintln!(
            "  {n} workers: {:.2} s ({} tasks, {} duplicate completes)",
            measured.as_secs_f64(),
            tasks,
            row.duplicate_completes
        );
        rows.push(row);
        drop(coord);
    }
    print_sweep(&rows, ms_per_example, shard_size);
    Ok(())
}

fn print_sweep(rows: &[SweepRow], ms_per_example: f64, shard_size: u32) {
    let t1 = rows
        .iter()
        .find(|r| r.workers == 1)
        .map(|r| r.measured.as_secs_f64());
    println!();
    println!(
        "| workers | tasks | wall s | ideal s | efficiency | vs 1 worker | overhead s | overhead per task ms | Lease p50/p99 ms | duplicate completes | plan s | Status done s |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|---|---|");
    for r in rows {
        let n = r.workers as f64;
        let measured = r.measured.as_secs_f64();
        let work = r.examples as f64 * ms_per_example / 1000.0;
        let ideal = work / n;
        let efficiency = ideal / measured;
        let vs1 = t1
            .map(|t1| format!("{:.1}%", 100.0 * t1 / (n * measured)))
            .unwrap_or_else(|| "-".into());
        let overhead = measured - ideal;
        let per_task_ms = (n * measured - work) / r.tasks as f64 * 1000.0;
        println!(
            "| {} | {} | {:.2} | {:.2} | {:.1}% | {} | {:.2} | {:.1} | {:.1}/{:.1} | {} | {:.2} | {} |",
            r.workers,
            r.tasks,
            measured,
            ideal,
            100.0 * efficiency,
            vs1,
            overhead,
            per_task_ms,
            r.lease_p50_us as f64 / 1000.0,
            r.lease_p99_us as f64 / 1000.0,
            r.duplicate_completes,
            r.plan.as_secs_f64(),
            r.status_done
                .map(|d| format!("{:.2}", d.as_secs_f64()))
                .unwrap_or_else(|| "-".into()),
        );
    }
    println!();
    println!(
        "ideal = examples x {ms_per_example} ms / workers (STUB scoring time only); efficiency = ideal / wall; \
         vs 1 worker = T1 / (N x TN); overhead per task = (N x wall - examples x ms) / tasks \
         (worker time not spent in the STUB, per {shard_size}-example task)"
    );
}

#[allow(clippy::too_many_arguments)]
async fn ingest(
    pool: &AgentThreads,
    common: &Common,
    workers: usize,
    seconds: f64,
    kill_at: Option<f64>,
    checkpoints: usize,
    examples: usize,
    shard_size: u32,
    stream_batch: usize,
    table: Option<verify::ResultsTable>,
) -> anyhow::Result<()> {
    let (dir, _guard) = work_dir(common)?;
    let inputs = coord::write_inputs(&dir.join("inputs"), checkpoints, examples)?;
    let mut coord = Coord::start(&common.coord_bin, &dir, settings(common)).await?;
    let planned = Instant::now();
    let submitted = coord
        .submit(coord::spec("ingest", &inputs, shard_size))
        .await?;
    eprintln!(
        "herd-sim ingest: {workers} workers, {seconds} s, {} tasks of {shard_size} ({} results available), \
         planned in {:.2} s; {} rewards/message, one StreamResults call per lease; work dir {}",
        submitted.tasks_added,
        checkpoints * examples,
        planned.elapsed().as_secs_f64(),
        stream_batch,
        dir.display()
    );
    let shared = Arc::new(Shared::new(submitted.tasks_added as u64, true));
    let cfg = Arc::new(SimConfig {
        url: coord.url(),
        ms_per_example: 0.0,
        stream_batch,
        cache_root: dir.join("caches"),
    });
    let started = Instant::now();
    let handles = spawn_workers(pool, workers, &cfg, &shared)?;
    // per-second progress (stored results acknowledged), to stderr
    let progress = {
        let shared = shared.clone();
        tokio::spawn(async move {
            let mut last = 0;
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            tick.tick().await;
            loop {
                tick.tick().await;
                let now = shared.stored.load(Ordering::Relaxed);
                eprintln!(
                    "  t={:>5.1}s stored {:>9} (+{}/s)",
                    started.elapsed().as_secs_f64(),
                    now,
                    now - last
                );
                last = now;
            }
        })
    };
    let end = started + Duration::from_secs_f64(seconds);
    let mut kill = None;
    if let Some(at) = kill_at {
        tokio::time::sleep_until((started + Duration::from_secs_f64(at)).into()).await;
        let stored_before = shared.stored.load(Ordering::SeqCst);
        let killed = Instant::now();
        coord.kill9();
        eprintln!(
            "  kill -9 of the coordinator at t={:.1}s ({} results acknowledged so far)",
            started.elapsed().as_secs_f64(),
            stored_before
        );
        coord.restart().await?;
        let down = killed.elapsed();
        eprintln!(
            "  restarted and answering after {:.2} s",
            down.as_secs_f64()
        );
        kill = Some((at, stored_before, down));
    }
    loop {
        let all_done = shared.completed_first.load(Ordering::SeqCst)
            >= shared.tasks_target.load(Ordering::SeqCst);
        if Instant::now() >= end || all_done {
            if all_done {
                eprintln!("  every task is done: stopping early (plan more work for a longer run)");
            }
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let stop_at = Instant::now();
    let stuck = stop_workers(&shared, handles, Duration::from_secs(60)).await;
    progress.abort();
    let drained = stop_at.elapsed();
    // the end is a kill -9 too: everything acknowledged must be in the file as it is
    coord.kill9();
    let stats = std::mem::take(&mut *shared.stats.lock().unwrap());
    let acks = std::mem::take(&mut *shared.acks.lock().unwrap());
    let stored = shared.stored.load(Ordering::SeqCst);
    let duplicates = shared.duplicates.load(Ordering::SeqCst);
    let sent = shared.rewards_sent.load(Ordering::SeqCst);
    let window = stats
        .last_ack_at
        .map(|t| t - started)
        .unwrap_or_else(|| started.elapsed());
    let mut granted = stats.lease_granted_us.clone();
    granted.sort_unstable();
    let mut all = stats.lease_granted_us.clone();
    all.extend(&stats.lease_other_us);
    all.sort_unstable();
    let report = verify::check(&coord.state, &acks, table)?;

    println!();
    println!("| metric | value |");
    println!("|---|---|");
    println!("| simulated workers | {workers} |");
    println!(
        "| window (workers start to last acknowledgement) | {:.2} s |",
        window.as_secs_f64()
    );
    println!("| results stored (acknowledged `stored`) | {stored} |");
    println!(
        "| **ingestion** | **{:.0} results/s** |",
        stored as f64 / window.as_secs_f64()
    );
    println!(
        "| acknowledged duplicates (resent after the kill, straggler copies) | {duplicates} |"
    );
    println!("| rewards in acknowledged calls | {sent} |");
    println!(
        "| StreamResults calls ok / failed | {} / {} |",
        stats.stream_calls_ok, stats.stream_calls_failed
    );
    println!(
        "| leases granted | {} ({} dropped: stale, revoked or unknown; {} revocations; {} tasks completed) |",
        stats.leases,
        stats.leases_dropped,
        stats.revoked,
        shared.completed_first.load(Ordering::SeqCst)
    );
    println!(
        "| Lease latency, granted: p50 / p99 / max | {:.1} / {:.1} / {:.1} ms |",
        percentile(&granted, 50.0) as f64 / 1000.0,
        percentile(&granted, 99.0) as f64 / 1000.0,
        granted.last().copied().unwrap_or(0) as f64 / 1000.0
    );
    println!(
        "| Lease latency, all answers: p50 / p99 | {:.1} / {:.1} ms |",
        percentile(&all, 50.0) as f64 / 1000.0,
        percentile(&all, 99.0) as f64 / 1000.0
    );
    // where the tail is: every worker asks for its first lease at once at the start, and the
    // workers cut off by the kill ask again right after the restart
    let asked: Vec<(f64, u64)> = stats
        .lease_granted_at
        .iter()
        .zip(&stats.lease_granted_us)
        .map(|(at, &us)| ((*at - started).as_secs_f64(), us))
        .collect();
    let mut windows = vec![("first 2 s", 0.0, 2.0)];
    if let Some((at, _, down)) = kill {
        let up = at + down.as_secs_f64();
        windows.push(("2 s after the restart", up, up + 2.0));
    }
    let inside = |t: f64, from: f64, to: f64| t >= from && t < to;
    let mut cells: Vec<String> = windows
        .iter()
        .map(|&(name, from, to)| p99_cell(name, asked.iter().filter(|(t, _)| inside(*t, from, to))))
        .collect();
    cells.push(p99_cell(
        "the rest",
        asked
            .iter()
            .filter(|(t, _)| !windows.iter().any(|&(_, from, to)| inside(*t, from, to))),
    ));
    println!(
        "| Lease latency, granted, by when it was asked | {} |",
        cells.join("; ")
    );
    if let Some((at, before, down)) = kill {
        println!(
            "| kill -9 at | {at:.1} s ({before} acknowledged before); restarted and answering in {:.2} s |",
            down.as_secs_f64()
        );
    }
    println!(
        "| stop: drain of in-flight calls | {:.2} s ({stuck} workers stuck) |",
        drained.as_secs_f64()
    );
    if !stats.rpc_errors.is_empty() {
        let mut errors: Vec<_> = stats.rpc_errors.iter().collect();
        errors.sort();
        let text: Vec<String> = errors.iter().map(|(k, v)| format!("{k} x{v}")).collect();
        println!("| RPC errors seen by workers | {} |", text.join(", "));
    }
    println!(
        "| state file | {} ({}), integrity_check: {} |",
        coord.state.display(),
        if report.opened_read_only {
            "opened read-only"
        } else {
            "read-only open failed: opened read-write for WAL recovery"
        },
        report.integrity
    );
    println!(
        "| results table | {}({}, {}) |",
        report.table.table, report.table.owner, report.table.index
    );
    println!(
        "| acknowledged (distinct keys) | {} |",
        report.acked_distinct
    );
    println!("| acknowledged but missing | {} |", report.acked_missing);
    println!(
        "| keys stored more than once (only possible without a primary key on them) | {} |",
        report.keys_more_than_once
    );
    println!(
        "| stored scores that differ from what the workers sent | {} |",
        report.scores_differ.map_or(
            "not checked (no chosen/rejected columns)".to_string(),
            |n| n.to_string()
        )
    );
    println!(
        "| rows stored / stored but never acknowledged (in flight at a kill or at the stop) | {} / {} |",
        report.rows, report.stored_not_acked
    );
    let double_count = stored > report.acked_distinct;
    println!(
        "| acknowledged `stored` counts exceed distinct keys (a result counted new twice) | {} |",
        if double_count { "YES" } else { "no" }
    );
    let ok = report.integrity == "ok"
        && report.acked_missing == 0
        && report.keys_more_than_once == 0
        && report.scores_differ.unwrap_or(0) == 0
        && !double_count;
    println!();
    println!(
        "state check: {}",
        if ok {
            "PASS (nothing acknowledged lost, nothing stored twice)"
        } else {
            "FAIL"
        }
    );
    if !ok {
        anyhow::bail!("the state file does not match what was acknowledged");
    }
    Ok(())
}

/// "NAME: N leases, p99 X ms" for Lease round trips (µs).
fn p99_cell<'a>(name: &str, sample: impl Iterator<Item = &'a (f64, u64)>) -> String {
    let mut us: Vec<u64> = sample.map(|&(_, us)| us).collect();
    us.sort_unstable();
    format!(
        "{name}: {} leases, p99 {:.1} ms",
        us.len(),
        percentile(&us, 99.0) as f64 / 1000.0
    )
}
