//! `coord results`: the sweep CSV and per-checkpoint RewardBench JSON from the coordinator, the
//! leaderboard summary (Markdown + PNG) and, with `--ci`, bootstrap intervals.

use std::path::PathBuf;

use herd_rpc::v1::ResultsRequest;

use super::summary::{write_leaderboard, CiArgs};
use super::{rpc_error, ConnectArgs};
use crate::report::{check_file_name, write_atomic, write_checkpoint_files};

/// `coord results` flags.
#[derive(clap::Args, Clone, Debug)]
pub struct ResultsArgs {
    #[command(flatten)]
    pub connect: ConnectArgs,
    /// the sweep
    #[arg(long)]
    pub sweep: String,
    /// where to write the sweep CSV [default: the sweep's output_csv, in the current folder]
    #[arg(short = 'o', long = "output")]
    pub output: Option<PathBuf>,
    /// also write <DIR>/metrics/<name>.json and <DIR>/eval-set/<name>.json per checkpoint
    #[arg(long)]
    pub out_dir: Option<PathBuf>,
    /// where summary.md, overall_vs_budget.png (and with --ci intervals.csv) go [default:
    /// --out-dir, else the sweep CSV's folder]
    #[arg(long)]
    pub summary_dir: Option<PathBuf>,
    /// the summary's section weights: legacy (xstest 250/154, as the sweep CSV) or current
    #[arg(long, default_value = "legacy")]
    pub xstest_weighting: String,
    #[command(flatten)]
    pub ci: CiArgs,
}

/// `coord results`.
pub async fn results(args: ResultsArgs) -> anyhow::Result<()> {
    let address = &args.connect.coordinator;
    let mut client = args.connect.client().await?;
    let response = client
        .results(ResultsRequest {
            sweep: args.sweep.clone(),
        })
        .await
        .map_err(|s| rpc_error(address, "Results", s))?
        .into_inner();
    if !response.complete {
        eprintln!(
            "sweep {} is not complete: the results hold the {} checkpoint(s) scored so far",
            response.sweep,
            response.checkpoints.len()
        );
    }
    for note in &response.notes {
        eprintln!("note: {note}");
    }
    let weighting = crate::report::parse_weighting(&args.xstest_weighting)
        .map_err(|e| anyhow::anyhow!("--xstest-weighting: {e}"))?;
    let ci = args.ci.config(weighting)?;
    let mut csv_path = None;
    if response.csv.is_empty() {
        eprintln!(
            "sweep {}: no CSV yet (no checkpoint is fully scored)",
            response.sweep
        );
    } else {
        let output = match &args.output {
            Some(path) => path.clone(),
            None => {
                let name = if response.output_csv.is_empty() {
                    format!("{}-counts-runs.csv", response.sweep)
                } else {
                    response.output_csv.clone()
                };
                check_file_name(&name, "the sweep's output_csv")?;
                PathBuf::from(name)
            }
        };
        if let Some(parent) = output.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(parent)?;
        }
        write_atomic(&output, response.csv.as_bytes())?;
        let rows = response.csv.lines().count().saturating_sub(1);
        println!("wrote {} ({rows} row(s))", output.display());
        csv_path = Some(output);
    }
    if let Some(dir) = &args.out_dir {
        write_checkpoint_files(dir, &response.checkpoints)?;
        println!(
            "wrote {} checkpoint result(s) under {}/metrics and {}/eval-set",
            response.checkpoints.len(),
            dir.display(),
            dir.display()
        );
    }
    if response.checkpoints.is_empty() {
        eprintln!(
            "sweep {}: no checkpoint results, no summary",
            response.sweep
        );
        return Ok(());
    }
    let summary_dir = match (&args.summary_dir, &args.out_dir, &csv_path) {
        (Some(dir), _, _) | (None, Some(dir), _) => dir.clone(),
        (None, None, Some(csv)) => csv
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .map_or_else(|| PathBuf::from("."), PathBuf::from),
        (None, None, None) => PathBuf::from("."),
    };
    let files = write_leaderboard(
        &summary_dir,
        &response.sweep,
        &response.checkpoints,
        weighting,
        ci.as_ref(),
    )?;
    println!(
        "wrote the summary {} and its plot {}",
        files.summary.markdown.display(),
        files.summary.png.display()
    );
    for warning in &files.summary.report.warnings {
        eprintln!("note: {warning}");
    }
    if let Some(path) = &files.intervals {
        let config = ci.expect("intervals only with --ci");
        println!(
            "wrote {} ({:.0}% bootstrap intervals, {} resamples, seed {})",
            path.display(),
            config.confidence * 100.0,
            config.resamples,
            config.seed
        );
    }
    Ok(())
}
