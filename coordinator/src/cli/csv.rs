//! `coord csv`: the hybrid-preferences sweep CSV from `metrics.json` files already on disk, so
//! runs evaluated elsewhere (downloaded from Beaker, one `<experiment>.json` per run) and herd's
//! own `metrics/` folders land in one CSV. The table is the library's
//! [`herd_rewardbench::sweep_csv`], the one `coord serve`'s report writes.

use std::path::PathBuf;

use anyhow::Context;
use herd_rewardbench::sweep_csv::{
    read_feature_counts_dir, read_metrics_dir, sweep_csv, SweepOptions,
};

use crate::report::{parse_weighting, write_atomic};

/// `coord csv` flags: those of `fetch_evals_rewardbench.py` that change the table, with a folder
/// of metrics files in place of the Beaker workspace.
#[derive(clap::Args, Clone, Debug)]
pub struct CsvArgs {
    /// folder of <experiment name>.json metrics files (RewardBench's metrics.json, one per run);
    /// repeat to combine folders (listed folder by folder, each in file-name order, which breaks
    /// ties in Overall as Beaker's listing order does; a name in two folders is an error)
    #[arg(long = "metrics", required = true)]
    pub metrics: Vec<PathBuf>,
    /// where to write the CSV
    #[arg(short = 'o', long = "output")]
    pub output: PathBuf,
    /// folder of regressor_feats_ID__<uuid>__SWAPS_<n>.json feature counts: counts mode (rows
    /// joined by uuid, runs without ID or without counts left out); without it, name mode
    #[arg(long)]
    pub feature_counts_dir: Option<PathBuf>,
    /// rescale each run's SWAPS_<n> budget to a 7000-row dataset of this many rows (counts mode)
    #[arg(long)]
    pub dataset_total_size: Option<u64>,
    /// add label = int(Overall > X) (0 adds none, as in the reference)
    #[arg(long)]
    pub gpt4_threshold_score: Option<f64>,
    /// keep the experiments whose name contains this text (the reference passes its
    /// --experiment_prefix, default rm-eval-, to Beaker's listing as `match`); default: all files
    #[arg(long)]
    pub experiment_prefix: Option<String>,
    /// legacy (xstest 250/154, the reference script's weights) or current
    #[arg(long, default_value = "legacy")]
    pub xstest_weighting: String,
}

/// `coord csv`.
pub fn csv(args: CsvArgs) -> anyhow::Result<()> {
    let options = SweepOptions {
        weighting: parse_weighting(&args.xstest_weighting).context("--xstest-weighting")?,
        dataset_total_size: args.dataset_total_size,
        label_threshold: args.gpt4_threshold_score,
    };
    let matching = args.experiment_prefix.as_deref();
    let mut experiments = Vec::new();
    for dir in &args.metrics {
        let found = read_metrics_dir(dir, matching)
            .with_context(|| format!("--metrics {}", dir.display()))?;
        for exp in found {
            if experiments
                .iter()
                .any(|e: &herd_rewardbench::sweep_csv::Experiment| e.name == exp.name)
            {
                anyhow::bail!(
                    "--metrics {}: experiment \"{}\" is also in an earlier --metrics folder",
                    dir.display(),
                    exp.name
                );
            }
            experiments.push(exp);
        }
    }
    if experiments.is_empty() {
        anyhow::bail!(
            "--metrics {}: no <experiment>.json metrics files{}",
            args.metrics
                .iter()
                .map(|d| d.display().to_string())
                .collect::<Vec<_>>()
                .join(", "),
            matching
                .map(|m| format!(" whose name contains \"{m}\""))
                .unwrap_or_default()
        );
    }
    let features = match &args.feature_counts_dir {
        Some(dir) => {
            let features = read_feature_counts_dir(dir)
                .with_context(|| format!("--feature-counts-dir {}", dir.display()))?;
            anyhow::ensure!(
                !features.is_empty(),
                "--feature-counts-dir {}: no feature-count files (*.json)",
                dir.display()
            );
            Some(features)
        }
        None => None,
    };
    let csv = sweep_csv(&experiments, features.as_deref(), &options)?;
    if let Some(parent) = args.output.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent)
            .with_context(|| format!("cannot create {}", parent.display()))?;
    }
    write_atomic(&args.output, csv.as_bytes())?;
    let rows = csv.lines().count().saturating_sub(1);
    println!(
        "wrote {} ({rows} row(s) from {} experiment(s))",
        args.output.display(),
        experiments.len()
    );
    Ok(())
}
