//! The leaderboard of a sweep's results, shared by `coord results` and `coord run`: per
//! checkpoint the four RewardBench sections and Overall (the library's `section_scores` of the
//! metrics.json accuracies), optionally with bootstrap intervals (the library's
//! `sweep_csv::with_confidence_intervals`), written as the library's Markdown + PNG summary.
//!
//! Interval method (`--ci`): a stratified percentile bootstrap (`v1::bootstrap`): each replicate
//! resamples every subset's examples with replacement, recomputes the sections with the sweep's
//! `EXAMPLE_COUNTS` and Overall as their mean; the interval is the replicates' percentile
//! interval. A metrics.json keeps accuracies only, so each subset's outcomes are rebuilt as
//! `accuracy × rows` wins among the `rows` of RewardBench's filtered split: the intervals need
//! every RewardBench subset, scored on all of its filtered rows (checked: each accuracy must be a
//! whole number of wins over that row count).

use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use herd_rewardbench::files::EvalSetResults;
use herd_rewardbench::pyjson;
use herd_rewardbench::summary::{markdown_table, write_summary, CheckpointSummary, SummaryFiles};
use herd_rewardbench::sweep_csv::{
    build_sweep_table, parse_budget, with_confidence_intervals, Experiment, RowLabel, SweepOptions,
    SweepTable,
};
use herd_rewardbench::v1::bootstrap::{BootstrapConfig, Interval};
use herd_rewardbench::v1::{filtered_row_count, section_scores, XstestWeighting};
use herd_rpc::v1::CheckpointResult;

/// Each checkpoint's results read back from its metrics.json.
pub fn checkpoint_results(checkpoints: &[CheckpointResult]) -> anyhow::Result<Vec<EvalSetResults>> {
    checkpoints
        .iter()
        .map(|c| {
            let value = pyjson::loads(&c.metrics_json)
                .map_err(|e| anyhow::anyhow!("checkpoint '{}': metrics.json: {e}", c.name))?;
            EvalSetResults::from_value(&format!("{}: metrics.json", c.name), &value)
                .map_err(anyhow::Error::from)
        })
        .collect()
}

/// The sweep's leaderboard: one summary row per checkpoint (budget from `SWAPS_<n>` in its
/// name), and with `ci` the table of intervals (the name-mode sweep table plus
/// `<Section> CI low/high` columns) whose Overall interval each row carries.
pub fn leaderboard(
    results: &[EvalSetResults],
    weighting: XstestWeighting,
    ci: Option<&BootstrapConfig>,
) -> anyhow::Result<(Vec<CheckpointSummary>, Option<SweepTable>)> {
    let ci_table = match ci {
        Some(config) => Some(interval_table(results, weighting, config)?),
        None => None,
    };
    let rows = results
        .iter()
        .map(|r| {
            let budget = parse_budget(&r.model).and_then(|b| b.parse::<f64>().ok());
            let mut row = CheckpointSummary::from_v1(
                r.model.clone(),
                budget,
                &section_scores(&r.accuracies, weighting),
                None,
            );
            if let Some(table) = &ci_table {
                row.ci = overall_interval(table, &r.model, ci.map_or(0.95, |c| c.confidence));
            }
            row
        })
        .collect();
    Ok((rows, ci_table))
}

/// The name-mode sweep table of these results with the bootstrap interval columns.
fn interval_table(
    results: &[EvalSetResults],
    weighting: XstestWeighting,
    config: &BootstrapConfig,
) -> anyhow::Result<SweepTable> {
    for r in results {
        for (subset, &accuracy) in &r.accuracies {
            let Some(rows) = filtered_row_count(subset) else {
                continue;
            };
            let wins = accuracy * f64::from(rows);
            if (wins - wins.round()).abs() > 1e-6 {
                bail!(
                    "--ci: checkpoint '{}': subset {subset}: accuracy {accuracy} is not a whole \
                     number of wins over its {rows} rows in RewardBench's filtered split (the \
                     intervals rebuild each subset's outcomes from that row count)",
                    r.model
                );
            }
        }
    }
    let experiments: Vec<Experiment> = results
        .iter()
        .map(|r| Experiment::from_results(r.model.clone(), r))
        .collect();
    let options = SweepOptions {
        weighting,
        ..SweepOptions::default()
    };
    let table = build_sweep_table(&experiments, None, &options).context("--ci")?;
    let config = BootstrapConfig {
        weighting,
        ..*config
    };
    with_confidence_intervals(&table, &config).context("--ci")
}

/// The `Overall CI low/high` cells of `name`'s row.
fn overall_interval(table: &SweepTable, name: &str, level: f64) -> Option<Interval> {
    let row = table
        .labels
        .iter()
        .position(|l| matches!(l, RowLabel::Name(n) if n == name))?;
    let low = table.column("Overall CI low")?.cells[row].as_f64()?;
    let high = table.column("Overall CI high")?.cells[row].as_f64()?;
    Some(Interval { low, high, level })
}

/// What [`write_leaderboard`] wrote.
pub struct LeaderboardFiles {
    pub summary: SummaryFiles,
    /// `intervals.csv` with `--ci`.
    pub intervals: Option<PathBuf>,
    /// The Markdown table (also in summary.md), for the terminal.
    pub table: String,
}

/// Writes `dir/summary.md`, `dir/overall_vs_budget.png` and, with `ci`, `dir/intervals.csv`.
pub fn write_leaderboard(
    dir: &Path,
    title: &str,
    checkpoints: &[CheckpointResult],
    weighting: XstestWeighting,
    ci: Option<&BootstrapConfig>,
) -> anyhow::Result<LeaderboardFiles> {
    let results = checkpoint_results(checkpoints)?;
    let (rows, ci_table) = leaderboard(&results, weighting, ci)?;
    let summary = write_summary(dir, title, &rows)
        .with_context(|| format!("writing the summary in {}", dir.display()))?;
    let intervals = match ci_table {
        Some(table) => {
            let path = dir.join("intervals.csv");
            crate::report::write_atomic(&path, table.to_csv().as_bytes())?;
            Some(path)
        }
        None => None,
    };
    Ok(LeaderboardFiles {
        summary,
        intervals,
        table: markdown_table(&rows),
    })
}

/// The `--ci` flags of `coord results` and `coord run`.
#[derive(clap::Args, Clone, Debug)]
pub struct CiArgs {
    /// also write intervals.csv: the sweep table (name mode) with 95% bootstrap intervals for
    /// each section and Overall (stratified percentile bootstrap over each subset's examples,
    /// rebuilt from its accuracy and its row count in RewardBench's filtered split); the summary
    /// shows the Overall interval
    #[arg(long)]
    pub ci: bool,
    /// bootstrap replicates
    #[arg(long, default_value_t = 1000)]
    pub ci_resamples: usize,
    /// bootstrap seed (the same seed gives the same intervals)
    #[arg(long, default_value_t = BootstrapConfig::default().seed)]
    pub ci_seed: u64,
}

impl CiArgs {
    /// The bootstrap settings with these section weights, `None` without `--ci`.
    pub fn config(&self, weighting: XstestWeighting) -> anyhow::Result<Option<BootstrapConfig>> {
        if !self.ci {
            return Ok(None);
        }
        if self.ci_resamples == 0 {
            bail!("--ci-resamples must be at least 1");
        }
        Ok(Some(BootstrapConfig {
            resamples: self.ci_resamples,
            seed: self.ci_seed,
            weighting,
            ..BootstrapConfig::default()
        }))
    }
}
