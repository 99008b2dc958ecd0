//! `coord status`: sweeps, checkpoints, workers and failures, once as text or redrawn with
//! progress bars (`--watch`).

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::io::IsTerminal;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use herd_rpc::v1::{StatusRequest, StatusResponse, SweepState, SweepStatus, WorkerStatus};
use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

use super::{rpc_error, ConnectArgs};
use crate::service::convert::{checkpoint_state_name, sweep_state_name, worker_state_name};

/// `coord status` flags.
#[derive(clap::Args, Clone, Debug)]
pub struct StatusArgs {
    #[command(flatten)]
    pub connect: ConnectArgs,
    /// one sweep [default: every sweep]
    #[arg(long)]
    pub sweep: Option<String>,
    /// redraw progress bars until the sweep(s) finish
    #[arg(long)]
    pub watch: bool,
    /// how often --watch asks the coordinator
    #[arg(long, default_value_t = 1000)]
    pub interval_ms: u64,
}

/// Whether a sweep has nothing left to do.
pub fn sweep_finished(sweep: &SweepStatus) -> bool {
    matches!(sweep.state(), SweepState::Done | SweepState::Cancelled)
        || (sweep.tasks_total > 0
            && sweep.tasks_leased == 0
            && sweep.tasks_done + sweep.tasks_failed >= sweep.tasks_total)
}

fn percent(done: u64, total: u64) -> String {
    if total == 0 {
        "-".into()
    } else {
        format!("{:.1}%", 100.0 * done as f64 / total as f64)
    }
}

fn ago(unix_ms: i64) -> String {
    if unix_ms <= 0 {
        return "never".into();
    }
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0);
    let secs = (now - unix_ms).max(0) / 1000;
    match secs {
        0..=119 => format!("{secs}s ago"),
        120..=7199 => format!("{}m ago", secs / 60),
        _ => format!("{}h ago", secs / 3600),
    }
}

fn sweep_line(sweep: &SweepStatus) -> String {
    format!(
        "sweep {} [{}]: tasks {}/{} done, {} leased, {} failed; examples {}/{} ({})",
        sweep.name,
        sweep_state_name(sweep.state()),
        sweep.tasks_done,
        sweep.tasks_total,
        sweep.tasks_leased,
        sweep.tasks_failed,
        sweep.examples_stored,
        sweep.examples_total,
        percent(sweep.examples_stored, sweep.examples_total)
    )
}

fn failures_text(sweep: &SweepStatus, out: &mut String) {
    if sweep.failures.is_empty() {
        return;
    }
    let _ = writeln!(out, "  failures:");
    for f in &sweep.failures {
        let _ = writeln!(out, "    {}", failure_line(f));
    }
}

fn failure_line(f: &herd_rpc::v1::TaskFailure) -> String {
    format!(
        "{} task {} attempt {} on {} ({}): {}",
        f.checkpoint,
        f.task_id,
        f.attempt,
        if f.worker.is_empty() { "?" } else { &f.worker },
        ago(f.at_unix_ms),
        f.reason
    )
}

fn workers_text(workers: &[WorkerStatus], out: &mut String) {
    if workers.is_empty() {
        let _ = writeln!(out, "workers: none registered");
        return;
    }
    let _ = writeln!(out, "workers:");
    let rows: Vec<[String; 6]> = workers
        .iter()
        .map(|w| {
            let stats = w.stats.unwrap_or_default();
            [
                w.id.clone(),
                w.name.clone(),
                worker_state_name(w.state()).to_string(),
                ago(w.last_seen_unix_ms),
                w.leases
                    .iter()
                    .map(|l| format!("{}@{}", l.task_id, l.epoch))
                    .collect::<Vec<_>>()
                    .join(","),
                if stats.tokens_per_second > 0.0 {
                    format!("{:.0}", stats.tokens_per_second)
                } else {
                    "-".into()
                },
            ]
        })
        .collect();
    let header = ["ID", "NAME", "STATE", "LAST SEEN", "LEASES", "TOK/S"];
    let mut widths = header.map(str::len);
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |cells: &[&str]| {
        let mut s = String::from("  ");
        for (cell, w) in cells.iter().zip(widths) {
            let _ = write!(s, "{cell:<w$}  ");
        }
        s.trim_end().to_owned()
    };
    let _ = writeln!(out, "{}", line(&header));
    for row in &rows {
        let cells: Vec<&str> = row.iter().map(String::as_str).collect();
        let _ = writeln!(out, "{}", line(&cells));
    }
}

/// The status as plain text: per sweep a summary, its checkpoints and failures; then workers.
pub fn render_status(status: &StatusResponse) -> String {
    let mut out = String::new();
    if status.sweeps.is_empty() {
        out.push_str("no sweeps\n");
    }
    for sweep in &status.sweeps {
        let _ = writeln!(out, "{}", sweep_line(sweep));
        let width = sweep
            .checkpoints
            .iter()
            .map(|c| c.name.chars().count())
            .max()
            .unwrap_or(0);
        for c in &sweep.checkpoints {
            let _ = write!(
                out,
                "  {:<width$}  {:<9}  tasks {}/{}  examples {}/{}",
                c.name,
                checkpoint_state_name(c.state()),
                c.tasks_done,
                c.tasks_total,
                c.examples_stored,
                c.examples_total
            );
            if !c.failure.is_empty() {
                let _ = write!(out, "  failed: {}", c.failure);
            }
            if !c.unschedulable.is_empty() {
                let _ = write!(out, "  unschedulable: {}", c.unschedulable);
            }
            out.push('\n');
        }
        failures_text(sweep, &mut out);
    }
    workers_text(&status.workers, &mut out);
    out
}

/// `coord status`.
pub async fn status(args: StatusArgs) -> anyhow::Result<()> {
    let address = args.connect.coordinator.clone();
    let client = args.connect.client().await?;
    let request = StatusRequest {
        sweep: args.sweep.clone().unwrap_or_default(),
    };
    let fetch = move || {
        let request = request.clone();
        let address = address.clone();
        let mut client = client.clone();
        async move {
            client
                .status(request)
                .await
                .map(|r| r.into_inner())
                .map_err(|s| rpc_error(&address, "Status", s))
        }
    };
    let first = fetch().await?;
    if !args.watch {
        print!("{}", render_status(&first));
        return Ok(());
    }
    let interval = Duration::from_millis(args.interval_ms.max(100));
    if !std::io::stderr().is_terminal() {
        // no terminal to redraw on: print the text whenever it changes
        let mut last = String::new();
        let mut current = first;
        loop {
            let text = render_status(&current);
            if text != last {
                println!("{text}");
                last = text;
            }
            if current.sweeps.iter().all(sweep_finished) {
                return Ok(());
            }
            tokio::time::sleep(interval).await;
            current = fetch().await?;
        }
    }
    let mut view = WatchView::new();
    let mut current = first;
    loop {
        view.update(&current);
        if current.sweeps.iter().all(sweep_finished) {
            view.finish();
            print!("{}", render_status(&current));
            return Ok(());
        }
        tokio::time::sleep(interval).await;
        current = fetch().await?;
    }
}

/// Progress bars of `--watch`: one per sweep, one per checkpoint (examples stored / total), a
/// worker table below; failures are printed above the bars once each.
struct WatchView {
    multi: MultiProgress,
    sweeps: BTreeMap<String, ProgressBar>,
    checkpoints: BTreeMap<(String, String), ProgressBar>,
    workers: ProgressBar,
    seen_failures: BTreeSet<(String, i64, u32)>,
}

impl WatchView {
    fn new() -> Self {
        let multi = MultiProgress::with_draw_target(ProgressDrawTarget::stderr_with_hz(4));
        let workers = multi.add(ProgressBar::new(0));
        workers.set_style(ProgressStyle::with_template("{msg}").expect("static template"));
        WatchView {
            multi,
            sweeps: BTreeMap::new(),
            checkpoints: BTreeMap::new(),
            workers,
            seen_failures: BTreeSet::new(),
        }
    }

    fn sweep_style() -> ProgressStyle {
        ProgressStyle::with_template(
            "{prefix:.bold} [{bar:40.cyan/blue}] {pos}/{len} examples ({percent}%) {msg}",
        )
        .expect("static template")
        .progress_chars("=> ")
    }

    fn checkpoint_style() -> ProgressStyle {
        ProgressStyle::with_template("  {prefix} [{bar:30.green/white}] {pos}/{len} {msg}")
            .expect("static template")
            .progress_chars("=> ")
    }

    fn update(&mut self, status: &StatusResponse) {
        for sweep in &status.sweeps {
            let bar = match self.sweeps.get(&sweep.name) {
                Some(bar) => bar.clone(),
                None => {
                    let bar = self
                        .multi
                        .insert_before(&self.workers, ProgressBar::new(sweep.examples_total));
                    bar.set_style(Self::sweep_style());
                    bar.set_prefix(sweep.name.clone());
                    self.sweeps.insert(sweep.name.clone(), bar.clone());
                    bar
                }
            };
            bar.set_length(sweep.examples_total);
            bar.set_position(sweep.examples_stored);
            bar.set_message(format!(
                "[{}] tasks {}/{} done, {} leased, {} failed",
                sweep_state_name(sweep.state()),
                sweep.tasks_done,
                sweep.tasks_total,
                sweep.tasks_leased,
                sweep.tasks_failed
            ));
            let width = sweep
                .checkpoints
                .iter()
                .map(|c| c.name.chars().count())
                .max()
                .unwrap_or(0);
            for c in &sweep.checkpoints {
                let key = (sweep.name.clone(), c.uri.clone());
                let cbar = match self.checkpoints.get(&key) {
                    Some(b) => b.clone(),
                    None => {
                        let b = self
                            .multi
                            .insert_before(&self.workers, ProgressBar::new(c.examples_total));
                        b.set_style(Self::checkpoint_style());
                        self.checkpoints.insert(key, b.clone());
                        b
                    }
                };
                cbar.set_prefix(format!("{:<width$}", c.name));
                cbar.set_length(c.examples_total);
                cbar.set_position(c.examples_stored);
                let mut msg = format!(
                    "{} tasks {}/{}",
                    checkpoint_state_name(c.state()),
                    c.tasks_done,
                    c.tasks_total
                );
                if !c.failure.is_empty() {
                    let _ = write!(msg, " failed: {}", c.failure);
                }
                if !c.unschedulable.is_empty() {
                    let _ = write!(msg, " unschedulable: {}", c.unschedulable);
                }
                cbar.set_message(msg);
            }
            for f in &sweep.failures {
                if self
                    .seen_failures
                    .insert((f.checkpoint.clone(), f.task_id, f.attempt))
                {
                    let _ = self.multi.println(format!("failure: {}", failure_line(f)));
                }
            }
        }
        let mut table = String::new();
        workers_text(&status.workers, &mut table);
        self.workers.set_message(table.trim_end().to_owned());
        self.workers.tick();
    }

    fn finish(&self) {
        for bar in self.sweeps.values().chain(self.checkpoints.values()) {
            bar.abandon();
        }
        self.workers.finish_and_clear();
        let _ = self.multi.clear();
    }
}
