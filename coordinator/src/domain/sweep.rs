//! A sweep's plan and results: the checkpoints and examples the planner found, the scores stored
//! for them, and the rule every sweep name follows.

use std::sync::Arc;

use super::CheckpointFormat;

/// A checkpoint found by the planner.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PlannedCheckpoint {
    /// `gs://bucket/object`, a local path, or `hf:org/name`
    pub uri: String,
    /// the experiment name its results are filed under, e.g.
    /// `rm-eval-helpsteer2-counts-tulu2_13b_rm_human_datamodel_counts_7000_ID__<hex>__SWAPS_4026`
    pub name: String,
    pub format: CheckpointFormat,
    pub size_bytes: u64,
    /// the parameters' bytes in 16-bit precision (2 x the parameter count); 0: unknown (see
    /// [`crate::planner::param_bytes_of_folder`]). The scheduler leases by it.
    pub param_bytes: u64,
}

/// One row of the evaluation set, as stored and as sent in leases.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PlannedExample {
    /// position in the evaluation set; shards are ranges of it
    pub index: u32,
    pub id: String,
    pub subset: String,
    /// the row as JSON: `herd_rewardbench::dataset::PreferencePair` (schema rb1) or
    /// `herd_rewardbench::dataset::v2::BestOfNRow` (schema rb2)
    pub pair_json: String,
    /// a RewardBench 2 row's completion counts (one score comes back per completion); `None` for
    /// a preference pair (one score per label comes back)
    pub completions: Option<Completions>,
}

/// How many correct (`chosen`) and incorrect (`rejected`) completions a RewardBench 2 row has:
/// a worker's result for the row carries exactly that many scores in each list.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Completions {
    pub chosen: u32,
    pub rejected: u32,
}

impl StoredReward {
    /// Every completion's score, chosen first then rejected (`BestOfNRow::completions` order).
    pub fn completion_scores(&self) -> Vec<f64> {
        self.chosen.iter().chain(&self.rejected).copied().collect()
    }
}

/// One stored per-example result.
#[derive(Clone, Debug, PartialEq)]
pub struct StoredReward {
    pub index: u32,
    pub chosen: Vec<f64>,
    pub rejected: Vec<f64>,
}

/// Everything stored for one fully scored checkpoint: what the reports are built from.
#[derive(Clone, Debug, PartialEq)]
pub struct ScoredCheckpoint {
    pub name: String,
    pub uri: String,
    /// "Seq. Classifier", "DPO", ... as the worker reported it
    pub model_type: String,
    /// "tokenizer" or the FastChat template name, as the worker reported it
    pub chat_template: String,
    /// the model's pipeline returns one float per sequence (`CompleteRequest.scalar_output`):
    /// its eval-set-scores file holds `x`, not `[x]`, per score, as run_rm.py writes it
    pub scalar_output: bool,
    /// sorted by index, one per example of the evaluation set
    pub rewards: Vec<StoredReward>,
    /// each example's texts as the worker scored them (`ExampleScores::texts`), beside
    /// `rewards`; `None` when some result was stored without them (a worker from before texts
    /// were sent, or a state file from before they were stored): no eval-set-scores/ file then.
    /// Shared: the checkpoints of one report hold one copy of each distinct text, as the state
    /// file does.
    pub texts: Option<Vec<Vec<Arc<str>>>>,
}

/// The rule every sweep name follows wherever it enters (Submit, Status, Results, Cancel,
/// presets, `coord run`, a state file read at start-up): a sweep's reports go to
/// `<out_dir>/<sweep>/`, so a name is one plain path component that cannot climb out of the
/// output folder (`..`), root itself (`/etc/x`) or hide (`.x`).
pub const SWEEP_NAME_RULE: &str = "[A-Za-z0-9][A-Za-z0-9._-]{0,127}";

/// Checks `name` against [`SWEEP_NAME_RULE`]; the error names the sweep and the rule.
pub fn check_sweep_name(name: &str) -> Result<(), String> {
    let mut chars = name.chars();
    let first_ok = chars.next().is_some_and(|c| c.is_ascii_alphanumeric());
    let rest_ok = chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
    if first_ok && rest_ok && name.len() <= 128 {
        Ok(())
    } else {
        Err(format!(
            "sweep name {name:?} does not match {SWEEP_NAME_RULE} (a letter or digit, then up \
             to 127 letters, digits, '.', '_' or '-')"
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::check_sweep_name;

    #[test]
    fn sweep_names_are_one_plain_path_component() {
        for ok in ["helpsteer2", "a", "A.b_c-1", "0", &"x".repeat(128)] {
            assert_eq!(check_sweep_name(ok), Ok(()), "{ok}");
        }
        for bad in [
            "",
            ".",
            "..",
            "../../x",
            "/etc/x",
            ".hidden",
            "-flag",
            "_x",
            "a/b",
            "a\\b",
            "a b",
            "a\0b",
            "é",
            &"x".repeat(129),
        ] {
            let err = check_sweep_name(bad).unwrap_err();
            assert!(
                err.contains("[A-Za-z0-9][A-Za-z0-9._-]{0,127}"),
                "{bad:?}: {err}"
            );
        }
    }
}
