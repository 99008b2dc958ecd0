//! Domain <-> wire: every conversion between [`crate::domain`] / [`crate::state`] types and the
//! protobuf messages of `herd.v1`, in one place.

use herd_rpc::v1;

use crate::domain::{
    AttemptFailure, CheckpointProgress, CheckpointState, ExampleScores, FailureKind, Grant,
    LeaseId, Overview, PlannedExample, SweepProgress, SweepState, WorkerState, WorkerView,
};

impl From<v1::LeaseRef> for LeaseId {
    fn from(l: v1::LeaseRef) -> Self {
        LeaseId {
            task_id: l.task_id,
            epoch: l.epoch,
        }
    }
}

impl From<LeaseId> for v1::LeaseRef {
    fn from(l: LeaseId) -> Self {
        v1::LeaseRef {
            task_id: l.task_id,
            epoch: l.epoch,
        }
    }
}

impl From<v1::ExampleReward> for ExampleScores {
    fn from(r: v1::ExampleReward) -> Self {
        ExampleScores {
            index: r.index,
            example_id: r.example_id,
            chosen: r.scores_chosen,
            rejected: r.scores_rejected,
            texts: r.texts,
        }
    }
}

/// A worker's failure kind; an unspecified (or unknown) kind counts as transient.
impl From<v1::FailureKind> for FailureKind {
    fn from(kind: v1::FailureKind) -> Self {
        match kind {
            v1::FailureKind::Checkpoint => FailureKind::Checkpoint,
            v1::FailureKind::Released => FailureKind::Released,
            v1::FailureKind::Transient | v1::FailureKind::Unspecified => FailureKind::Transient,
        }
    }
}

impl From<&PlannedExample> for v1::Example {
    fn from(e: &PlannedExample) -> Self {
        v1::Example {
            index: e.index,
            id: e.id.clone(),
            subset: e.subset.clone(),
            pair_json: e.pair_json.clone(),
        }
    }
}

/// The lease message of a grant (its `traceparent` is left for the service's lease span).
pub fn lease(grant: &Grant) -> v1::Lease {
    v1::Lease {
        lease: Some(grant.lease.into()),
        sweep: grant.sweep.clone(),
        deadline_unix_ms: grant.deadline_ms,
        checkpoint: Some(v1::Checkpoint {
            id: grant.checkpoint_id,
            uri: grant.checkpoint.uri.clone(),
            name: grant.checkpoint.name.clone(),
            format: grant.checkpoint.format.as_str().to_string(),
            size_bytes: grant.checkpoint.size_bytes,
            param_bytes: grant.checkpoint.param_bytes,
        }),
        scoring: grant.scoring.clone(),
        shard_start: grant.shard.start,
        shard_end: grant.shard.end,
        examples: grant.examples.iter().map(v1::Example::from).collect(),
        prefetch_uri: grant.prefetch_uri.clone(),
        traceparent: String::new(),
    }
}

impl From<SweepState> for v1::SweepState {
    fn from(s: SweepState) -> Self {
        match s {
            SweepState::Active => v1::SweepState::Active,
            SweepState::Done => v1::SweepState::Done,
            SweepState::Cancelled => v1::SweepState::Cancelled,
        }
    }
}

impl From<CheckpointState> for v1::CheckpointState {
    fn from(s: CheckpointState) -> Self {
        match s {
            CheckpointState::Pending => v1::CheckpointState::Pending,
            CheckpointState::Running => v1::CheckpointState::Running,
            CheckpointState::Done => v1::CheckpointState::Done,
            CheckpointState::Failed => v1::CheckpointState::Failed,
            CheckpointState::Cancelled => v1::CheckpointState::Cancelled,
        }
    }
}

impl From<WorkerState> for v1::WorkerState {
    fn from(s: WorkerState) -> Self {
        match s {
            WorkerState::Idle => v1::WorkerState::Idle,
            WorkerState::Busy => v1::WorkerState::Busy,
            WorkerState::Draining => v1::WorkerState::Draining,
            WorkerState::Lost => v1::WorkerState::Lost,
        }
    }
}

/// The domain value a wire state stands for (None: unspecified, or a value this build does not
/// know).
fn from_wire<D: Copy, W: PartialEq + From<D>>(all: &[D], wire: W) -> Option<D> {
    all.iter().copied().find(|d| W::from(*d) == wire)
}

/// What `coord status` shows for a state a coordinator sent none of.
const UNSPECIFIED: &str = "unspecified";

/// The name `coord status` shows for a sweep state on the wire.
pub fn sweep_state_name(state: v1::SweepState) -> &'static str {
    from_wire(SweepState::ALL, state).map_or(UNSPECIFIED, SweepState::as_str)
}

/// The name `coord status` shows for a checkpoint state on the wire.
pub fn checkpoint_state_name(state: v1::CheckpointState) -> &'static str {
    from_wire(CheckpointState::ALL, state).map_or(UNSPECIFIED, CheckpointState::as_str)
}

/// The name `coord status` shows for a worker state on the wire.
pub fn worker_state_name(state: v1::WorkerState) -> &'static str {
    from_wire(WorkerState::ALL, state).map_or(UNSPECIFIED, WorkerState::as_str)
}

impl From<Overview> for v1::StatusResponse {
    fn from(o: Overview) -> Self {
        v1::StatusResponse {
            sweeps: o.sweeps.into_iter().map(Into::into).collect(),
            workers: o.workers.into_iter().map(Into::into).collect(),
        }
    }
}

impl From<SweepProgress> for v1::SweepStatus {
    fn from(s: SweepProgress) -> Self {
        v1::SweepStatus {
            name: s.name,
            state: v1::SweepState::from(s.state).into(),
            tasks_total: s.tasks_total,
            tasks_done: s.tasks_done,
            tasks_failed: s.tasks_failed,
            tasks_leased: s.tasks_leased,
            examples_total: s.examples_total,
            examples_stored: s.examples_stored,
            checkpoints: s.checkpoints.into_iter().map(Into::into).collect(),
            failures: s.failures.into_iter().map(Into::into).collect(),
        }
    }
}

impl From<CheckpointProgress> for v1::CheckpointStatus {
    fn from(c: CheckpointProgress) -> Self {
        v1::CheckpointStatus {
            name: c.name,
            uri: c.uri,
            state: v1::CheckpointState::from(c.state).into(),
            tasks_total: c.tasks_total,
            tasks_done: c.tasks_done,
            examples_total: c.examples_total,
            examples_stored: c.examples_stored,
            failure: c.failure.unwrap_or_default(),
            unschedulable: c.unschedulable.unwrap_or_default(),
        }
    }
}

impl From<AttemptFailure> for v1::TaskFailure {
    fn from(f: AttemptFailure) -> Self {
        v1::TaskFailure {
            checkpoint: f.checkpoint,
            task_id: f.task_id,
            attempt: f.attempt,
            worker: f.worker,
            reason: f.reason,
            at_unix_ms: f.at_ms,
        }
    }
}

impl From<WorkerView> for v1::WorkerStatus {
    fn from(w: WorkerView) -> Self {
        v1::WorkerStatus {
            id: w.id,
            name: w.name,
            state: v1::WorkerState::from(w.state).into(),
            last_seen_unix_ms: w.last_seen_ms,
            leases: w.leases.into_iter().map(Into::into).collect(),
            stats: w.stats,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_state_has_its_own_wire_value_and_name() {
        for s in SweepState::ALL {
            assert_ne!(v1::SweepState::from(*s), v1::SweepState::Unspecified);
            assert_eq!(sweep_state_name((*s).into()), s.as_str());
        }
        for s in CheckpointState::ALL {
            assert_ne!(
                v1::CheckpointState::from(*s),
                v1::CheckpointState::Unspecified
            );
            assert_eq!(checkpoint_state_name((*s).into()), s.as_str());
        }
        for s in WorkerState::ALL {
            assert_ne!(v1::WorkerState::from(*s), v1::WorkerState::Unspecified);
            assert_eq!(worker_state_name((*s).into()), s.as_str());
        }
        assert_eq!(sweep_state_name(v1::SweepState::Unspecified), "unspecified");
    }

    #[test]
    fn an_unspecified_failure_kind_is_transient() {
        assert_eq!(
            FailureKind::from(v1::FailureKind::Unspecified),
            FailureKind::Transient
        );
        assert_eq!(
            FailureKind::from(v1::FailureKind::Released),
            FailureKind::Released
        );
    }
}
