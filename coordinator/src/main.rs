//! `coord`: the sweep coordinator (`serve`), its client commands (`submit`, `status`,
//! `results`, `cancel`) and the embedded default (`run`).

use clap::Parser;
use herd_coordinator::cli::{Cli, Command};

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
    let result = cli.command.run().await;
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
