//! What `coord status` shows: every sweep's progress and every worker, as of one moment.

use herd_rpc::v1::WorkerStats;

use super::{CheckpointState, LeaseId, SweepState, WorkerState};

/// Sweeps (oldest first) and workers (in registration order).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Overview {
    pub sweeps: Vec<SweepProgress>,
    pub workers: Vec<WorkerView>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct SweepProgress {
    pub name: String,
    pub state: SweepState,
    pub tasks_total: u32,
    pub tasks_done: u32,
    pub tasks_failed: u32,
    pub tasks_leased: u32,
    /// examples x checkpoints
    pub examples_total: u64,
    pub examples_stored: u64,
    /// in planning order
    pub checkpoints: Vec<CheckpointProgress>,
    /// the most recent failed attempts, newest first
    pub failures: Vec<AttemptFailure>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct CheckpointProgress {
    pub name: String,
    pub uri: String,
    pub state: CheckpointState,
    pub tasks_total: u32,
    pub tasks_done: u32,
    pub examples_total: u64,
    pub examples_stored: u64,
    /// why it failed
    pub failure: Option<String>,
    /// why it waits: no live worker has the memory for its parameters
    pub unschedulable: Option<String>,
}

/// One attempt that cost a task an attempt (expired, transient or checkpoint failure).
#[derive(Clone, Debug, PartialEq)]
pub struct AttemptFailure {
    /// the checkpoint's experiment name
    pub checkpoint: String,
    pub task_id: i64,
    /// the task's failed-attempt count after this one
    pub attempt: u32,
    /// `name (id)` of the worker, or its id
    pub worker: String,
    pub reason: String,
    /// unix ms
    pub at_ms: i64,
}

#[derive(Clone, Debug, PartialEq)]
pub struct WorkerView {
    pub id: String,
    pub name: String,
    pub state: WorkerState,
    /// unix ms
    pub last_seen_ms: i64,
    /// its active leases, by task
    pub leases: Vec<LeaseId>,
    /// what its last heartbeat reported
    pub stats: Option<WorkerStats>,
}
