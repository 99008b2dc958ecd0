//! `coord`: the sweep coordinator (`serve`), its client commands (`submit`, `status`,
//! `results`, `cancel`) and the embedded default (`run`).

use clap::{Parser, Subcommand};
use herd_coordinator::client;
use herd_coordinator::deploy;
use herd_coordinator::run;
use herd_coordinator::server;

#[derive(Parser)]
#[command(
    name = "coord",
    version,
    about = "herd sweep coordinator: plans checkpoint x dataset-shard tasks, leases them to GPU \
             workers over gRPC, and writes RewardBench results and the sweep CSV"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

// parsed once: the size difference between the variants does not matter
#[allow(clippy::large_enum_variant)]
#[derive(Subcommand)]
enum Command {
    /// Run the coordinator (gRPC services over a SQLite state file)
    Serve(server::ServeArgs),
    /// Submit a sweep: a preset (--dataset NAME) with its flags applied
    Submit(client::SubmitArgs),
    /// Show sweeps, checkpoints, workers and failures (--watch: progress bars until done)
    Status(client::StatusArgs),
    /// Write a sweep's CSV and per-checkpoint RewardBench JSON
    Results(client::ResultsArgs),
    /// Cancel a sweep's remaining tasks
    Cancel(client::CancelArgs),
    /// Everything on this machine: an in-process coordinator, local worker processes, progress,
    /// then the RewardBench results and the sweep CSV
    Run(run::RunArgs),
    /// Render the specs that start a coordinator and N GPU workers (Beaker or Kubernetes)
    Deploy(deploy::DeployArgs),
}

fn init_tracing(default_filter: &str) -> herd_telemetry::TelemetryGuard {
    // stderr logs; spans exported over OTLP/gRPC when OTEL_EXPORTER_OTLP_ENDPOINT is set
    herd_telemetry::init("herd-coordinator", default_filter)
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    // `coord run` draws a progress bar: its embedded server only logs warnings unless asked
    let telemetry = init_tracing(match cli.command {
        Command::Run(_) => "warn",
        _ => "info",
    });
    let result = match cli.command {
        Command::Serve(args) => server::serve(args).await,
        Command::Submit(args) => client::submit(args).await,
        Command::Status(args) => client::status(args).await,
        Command::Results(args) => client::results(args).await,
        Command::Cancel(args) => client::cancel(args).await,
        Command::Run(args) => run::run(args).await,
        Command::Deploy(args) => deploy::deploy(args),
    };
    // flush the spans before exiting
    drop(telemetry);
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            // one line with its causes, no backtrace (RUST_BACKTRACE is often set for tests)
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
