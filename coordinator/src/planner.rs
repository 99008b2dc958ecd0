//! Sweep planning: which checkpoints, which examples, which shards.

use std::ops::Range;

use herd_proto::v1::SweepSpec;

use crate::model::{PlannedCheckpoint, PlannedExample};

/// Lists the checkpoints of every source of `spec.checkpoints`, sorted by uri.
pub async fn list_checkpoints(spec: &SweepSpec) -> anyhow::Result<Vec<PlannedCheckpoint>> {
    anyhow::bail!("planner not implemented yet (sweep {})", spec.name)
}

/// Loads the evaluation set of `spec`.
pub fn load_examples(spec: &SweepSpec) -> anyhow::Result<Vec<PlannedExample>> {
    anyhow::bail!("planner not implemented yet ({})", spec.eval_dataset)
}

/// Contiguous ranges of at most `shard_size` examples (0: 500) covering `0..examples`.
pub fn shard_ranges(examples: u32, shard_size: u32) -> Vec<Range<u32>> {
    let size = if shard_size == 0 { 500 } else { shard_size };
    (0..examples)
        .step_by(size as usize)
        .map(|start| start..examples.min(start.saturating_add(size)))
        .collect()
}
