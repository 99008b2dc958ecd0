//! herd's coordinator: plans sweeps (checkpoints x evaluation-set shards), keeps their state in
//! SQLite, leases tasks to workers over gRPC, stores per-example rewards idempotently and writes
//! RewardBench results and the sweep CSV.

pub mod app;
pub mod cli;
pub mod client;
pub mod config;
pub mod deploy;
pub mod domain;
/// the `coordinator_requests` fuzz target's driver (feature `fuzzing`)
#[cfg(feature = "fuzzing")]
pub mod fuzzing;
pub mod observe;
pub mod planner;
pub mod presets;
pub mod report;
pub mod run;
pub mod scheduler;
pub mod security;
pub mod server;
pub mod service;
pub mod state;
