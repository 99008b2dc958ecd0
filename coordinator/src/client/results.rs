//! `coord results`: the sweep CSV and per-checkpoint RewardBench JSON from the coordinator.

use std::path::PathBuf;

use herd_rpc::v1::ResultsRequest;

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
    Ok(())
}
