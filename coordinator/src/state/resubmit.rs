//! What a re-submitted sweep must keep: the stored sweep goes on with the settings it was planned
//! with, so a submit that changes anything that decides scores or the report is refused, naming
//! what changed, instead of being silently ignored. Only the checkpoint list may grow.

use herd_rpc::v1::{EasyLmConfig, Scoring, SweepSpec};
use rusqlite::Connection;

use super::queries::all_examples;
use super::{Result, StoreError};
use crate::domain::PlannedExample;
use crate::planner::effective_shard_size;

/// Refuses a re-submit whose evaluation set differs from the stored one (compared by content, so
/// the same set read from another path is fine).
pub(super) fn check_same_examples(
    conn: &Connection,
    sweep_id: i64,
    name: &str,
    examples: &[PlannedExample],
) -> Result<()> {
    let stored = all_examples(conn, sweep_id)?;
    if stored.len() != examples.len() {
        return Err(StoreError::Invalid(format!(
            "sweep {name} was planned with an evaluation set of {} examples; this one has {}: \
             submit a changed evaluation set under a new sweep name",
            stored.len(),
            examples.len()
        )));
    }
    if let Some((a, b)) = stored.iter().zip(examples).find(|(a, b)| a != b) {
        return Err(StoreError::Invalid(format!(
            "sweep {name} was planned with a different evaluation set (example {} is {:?} there, \
             {:?} here): submit a changed evaluation set under a new sweep name",
            a.index, a.id, b.id
        )));
    }
    Ok(())
}

/// Refuses a re-submit that changes a setting of the stored sweep (tokenizer, template, shapes,
/// shard size, report options). The checkpoint list and the evaluation set's location are free.
pub(super) fn check_same_settings(stored: &SweepSpec, submitted: &SweepSpec) -> Result<()> {
    let changed = changed_settings(stored, submitted);
    if changed.is_empty() {
        return Ok(());
    }
    let list: Vec<String> = changed
        .iter()
        .map(|c| format!("{} is {} there, {} here", c.field, c.stored, c.submitted))
        .collect();
    Err(StoreError::Invalid(format!(
        "sweep {} was planned with other settings ({}): re-submitting may only add checkpoints; \
         submit changed settings under a new sweep name",
        stored.name,
        list.join("; ")
    )))
}

/// One setting whose stored and submitted values differ, both as `Debug` text.
#[derive(Debug, PartialEq)]
pub struct ChangedSetting {
    pub field: &'static str,
    pub stored: String,
    pub submitted: String,
}

/// The settings of `submitted` that differ from `stored`, in proto field order.
pub fn changed_settings(stored: &SweepSpec, submitted: &SweepSpec) -> Vec<ChangedSetting> {
    let mut out = Vec::new();
    let mut compare = |field: &'static str, a: &dyn std::fmt::Debug, b: &dyn std::fmt::Debug| {
        let (stored, submitted) = (format!("{a:?}"), format!("{b:?}"));
        if stored != submitted {
            out.push(ChangedSetting {
                field,
                stored,
                submitted,
            });
        }
    };
    let none = Scoring::default();
    let (a, b) = (
        stored.scoring.as_ref().unwrap_or(&none),
        submitted.scoring.as_ref().unwrap_or(&none),
    );
    compare("tokenizer", &a.tokenizer, &b.tokenizer);
    compare("chat_template", &a.chat_template, &b.chat_template);
    compare("max_length", &a.max_length, &b.max_length);
    // compared as parsed: an empty field and "rb1" are the same schema
    compare("schema", &a.eval_schema(), &b.eval_schema());
    compare(
        "tokenizer_template",
        &a.tokenizer_template,
        &b.tokenizer_template,
    );
    compare("pad", &a.pad, &b.pad);
    compare("pooling", &a.pooling, &b.pooling);
    let no_shapes = EasyLmConfig::default();
    let (ea, eb) = (
        a.easylm.as_ref().unwrap_or(&no_shapes),
        b.easylm.as_ref().unwrap_or(&no_shapes),
    );
    compare("easylm.size", &ea.size, &eb.size);
    compare("easylm.num_heads", &ea.num_heads, &eb.num_heads);
    compare("easylm.num_kv_heads", &ea.num_kv_heads, &eb.num_kv_heads);
    compare("easylm.vocab_size", &ea.vocab_size, &eb.vocab_size);
    compare("easylm.rope_theta", &ea.rope_theta, &eb.rope_theta);
    compare("easylm.rms_norm_eps", &ea.rms_norm_eps, &eb.rms_norm_eps);
    compare(
        "easylm.max_position_embeddings",
        &ea.max_position_embeddings,
        &eb.max_position_embeddings,
    );
    compare("easylm.compat", &ea.compat, &eb.compat);
    compare(
        "feature_counts_dir",
        &stored.feature_counts_dir,
        &submitted.feature_counts_dir,
    );
    compare("output_csv", &stored.output_csv, &submitted.output_csv);
    compare(
        "experiment_prefix",
        &stored.experiment_prefix,
        &submitted.experiment_prefix,
    );
    compare(
        "shard_size",
        &effective_shard_size(stored.shard_size),
        &effective_shard_size(submitted.shard_size),
    );
    compare(
        "xstest_weighting",
        &stored.xstest_weighting,
        &submitted.xstest_weighting,
    );
    compare(
        "dataset_total_size",
        &stored.dataset_total_size,
        &submitted.dataset_total_size,
    );
    out
}
