//! RewardBench results and the sweep CSV from scored checkpoints.

use std::path::Path;

use herd_proto::v1::{CheckpointResult, SweepSpec};

use crate::model::{PlannedExample, ScoredCheckpoint};

/// What a sweep's results are: per-checkpoint JSON, the sweep CSV, and notes.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct SweepReport {
    pub checkpoints: Vec<CheckpointResult>,
    pub csv: String,
    pub notes: Vec<String>,
}

pub fn build_report(
    spec: &SweepSpec,
    _examples: &[PlannedExample],
    _scored: &[ScoredCheckpoint],
) -> anyhow::Result<SweepReport> {
    anyhow::bail!("reports not implemented yet (sweep {})", spec.name)
}

pub fn write_report(dir: &Path, _report: &SweepReport, output_csv: &str) -> anyhow::Result<()> {
    anyhow::bail!(
        "reports not implemented yet ({}/{output_csv})",
        dir.display()
    )
}
