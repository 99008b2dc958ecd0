//! Hooks into the agent loop for whoever drives it: herd-sim measures Lease latency, counts
//! acknowledged results and errors through them. Every method does nothing by default.

use std::time::{Duration, Instant};

use herd_rpc::v1::{ExampleReward, Lease, LeaseRef};
use tonic::Status;

/// How a lease ended (the `outcome` of the task span and of `herd_worker_tasks_total`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TaskOutcome {
    /// results stored and the lease completed first
    Completed,
    /// completed after another lease of the same task (a straggler copy)
    Duplicate,
    /// revoked, stale, another registration's, or the coordinator forgot this worker
    Dropped,
    /// reported to the coordinator as failed
    Failed,
}

impl TaskOutcome {
    pub const ALL: [TaskOutcome; 4] = [
        TaskOutcome::Completed,
        TaskOutcome::Duplicate,
        TaskOutcome::Dropped,
        TaskOutcome::Failed,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            TaskOutcome::Completed => "completed",
            TaskOutcome::Duplicate => "duplicate",
            TaskOutcome::Dropped => "dropped",
            TaskOutcome::Failed => "failed",
        }
    }
}

/// What the agent tells its driver as it goes.
pub trait Observer: Send + Sync + 'static {
    /// A Lease call asked at `asked` was answered after `took`; `granted` when it carried a lease.
    fn lease_answered(&self, _asked: Instant, _took: Duration, _granted: bool) {}

    /// A call to the coordinator failed (`rpc`: the method), whether or not it is retried.
    fn rpc_failed(&self, _rpc: &'static str, _status: &Status) {}

    /// Registered with the coordinator; `again` for every registration after the first.
    fn registered(&self, _again: bool) {}

    /// The coordinator revoked a lease this worker holds.
    fn revoked(&self, _lease: &LeaseRef) {}

    /// A StreamResults call of `lease` carrying `rewards` was acknowledged.
    fn results_acknowledged(
        &self,
        _lease: &Lease,
        _rewards: &[ExampleReward],
        _stored: u64,
        _duplicates: u64,
    ) {
    }

    /// A lease ended.
    fn task_ended(&self, _lease: &Lease, _outcome: TaskOutcome) {}
}

/// Observes nothing (the `worker` binary).
pub struct NoObserver;

impl Observer for NoObserver {}
