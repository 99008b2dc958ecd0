//! Leases: which task a worker holds (and under which epoch), what it was given to score, what it
//! sends back, and how it can give up.

use std::fmt;
use std::ops::Range;
use std::sync::Arc;

use herd_rpc::v1::Scoring;

use super::{PlannedCheckpoint, PlannedExample};

/// A lease: its task and its epoch, the fencing token (a task leased again gets the next epoch,
/// and only the newest active epochs may stream results or complete).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct LeaseId {
    pub task_id: i64,
    pub epoch: u64,
}

impl fmt::Display for LeaseId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "lease {}/{}", self.task_id, self.epoch)
    }
}

/// A task leased to a worker: what it scores, how, and until when.
#[derive(Clone, Debug, PartialEq)]
pub struct Grant {
    pub lease: LeaseId,
    pub sweep: String,
    /// unix ms; heartbeats and results move it
    pub deadline_ms: i64,
    /// the checkpoint's row id in the state file
    pub checkpoint_id: i64,
    pub checkpoint: PlannedCheckpoint,
    /// the sweep's scoring settings, as submitted
    pub scoring: Option<Scoring>,
    /// examples `[start, end)` of the sweep's evaluation set
    pub shard: Range<u32>,
    /// the shard's examples, in index order (shared with the store's cache)
    pub examples: Arc<[PlannedExample]>,
    /// a checkpoint this worker will likely be given next (empty: none)
    pub prefetch_uri: String,
}

/// One example's scores, as a worker sends them.
#[derive(Clone, Debug, PartialEq)]
pub struct ExampleScores {
    /// position in the evaluation set
    pub index: u32,
    /// the example's id, checked against the stored one
    pub example_id: String,
    /// one score per label (or one log-prob ratio sum for DPO)
    pub chosen: Vec<f64>,
    pub rejected: Vec<f64>,
    /// the texts scored, after the chat template (`ExampleReward.texts`): empty (none sent), or
    /// [chosen, rejected] / [chosen, rejected, prompt] of a pair, or a RewardBench 2 row's
    /// completions, chosen then rejected
    pub texts: Vec<String>,
}

/// Why a worker gives up a lease.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FailureKind {
    /// may succeed on a retry: counts an attempt, retried with backoff
    Transient,
    /// the checkpoint is bad: counts an attempt, and at max attempts fails the checkpoint
    Checkpoint,
    /// handed back (draining): not counted
    Released,
}
