//! The `coord` command line: every subcommand's flags are parsed here and handed on as plain
//! values (the server gets a [`crate::config::ServerConfig`], `run` a [`crate::run::LocalRun`]).
//! The client commands (`client`) and `deploy` take their flags as their input.

pub mod csv;
pub mod run;
pub mod serve;

use clap::{Parser, Subcommand};

pub use csv::CsvArgs;
pub use run::RunArgs;
pub use serve::{LimitArgs, SecurityArgs, ServeArgs};

#[derive(Parser)]
#[command(
    name = "coord",
    version,
    about = "herd sweep coordinator: plans checkpoint x dataset-shard tasks, leases them to GPU \
             workers over gRPC, and writes RewardBench results and the sweep CSV"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

// parsed once: the size difference between the variants does not matter
#[allow(clippy::large_enum_variant)]
#[derive(Subcommand)]
pub enum Command {
    /// Run the coordinator (gRPC services over a SQLite state file)
    Serve(ServeArgs),
    /// Submit a sweep: a preset (--dataset NAME) with its flags applied
    Submit(crate::client::SubmitArgs),
    /// Show sweeps, checkpoints, workers and failures (--watch: progress bars until done)
    Status(crate::client::StatusArgs),
    /// Write a sweep's CSV and per-checkpoint RewardBench JSON
    Results(crate::client::ResultsArgs),
    /// Write the sweep CSV (hybrid-preferences' fetch_evals_rewardbench.py) from metrics.json
    /// files on disk, e.g. runs downloaded from Beaker together with herd's metrics/ folders
    Csv(csv::CsvArgs),
    /// Cancel a sweep's remaining tasks
    Cancel(crate::client::CancelArgs),
    /// Everything on this machine: an in-process coordinator, local worker processes, progress,
    /// then the RewardBench results and the sweep CSV
    Run(RunArgs),
    /// Render the specs that start a coordinator and N GPU workers (Beaker or Kubernetes)
    Deploy(crate::deploy::DeployArgs),
}

impl Command {
    /// Runs the subcommand.
    pub async fn run(self) -> anyhow::Result<()> {
        match self {
            Command::Serve(args) => crate::server::serve(args.into_config()).await,
            Command::Submit(args) => crate::client::submit(args).await,
            Command::Status(args) => crate::client::status(args).await,
            Command::Results(args) => crate::client::results(args).await,
            Command::Csv(args) => csv::csv(args),
            Command::Cancel(args) => crate::client::cancel(args).await,
            Command::Run(args) => crate::run::run(args.into_run()).await,
            Command::Deploy(args) => crate::deploy::deploy(args),
        }
    }
}
