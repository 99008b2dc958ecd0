//! The coordinator's domain types, apart from the wire: what the planner finds, what the store
//! keeps and answers, what the reports read. The services convert them to and from protobuf
//! (`service::convert`). Times are unix milliseconds (`*_ms`).
//!
//! The sweep spec, worker capabilities and worker stats stay protobuf messages: they are documents
//! the state file keeps as protobuf bytes, as submitted or reported.

mod lease;
mod states;
mod status;
mod sweep;

/// one definition for the planner, the state file and the worker, which decides it for a
/// checkpoint on disk
pub use herd_rpc::CheckpointFormat;
pub use lease::{ExampleScores, FailureKind, Grant, LeaseId};
pub use states::{AttemptOutcome, CheckpointState, LeaseState, SweepState, TaskState, WorkerState};
pub use status::{AttemptFailure, CheckpointProgress, Overview, SweepProgress, WorkerView};
pub use sweep::{
    check_sweep_name, Completions, PlannedCheckpoint, PlannedExample, ScoredCheckpoint,
    StoredReward, SWEEP_NAME_RULE,
};
