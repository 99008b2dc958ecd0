//! herd-engine behind the agent's [`ShardScorer`]: a lease's examples are preference pairs (schema
//! rb1) or RewardBench 2 rows (schema rb2, every completion scored), and a checkpoint is loaded
//! once into a [`Scorer`] on this worker's device, in its precision.

use std::path::Path;

use anyhow::Context;
use herd_agent::scorer::Precision;
use herd_agent::{LocalCheckpoint, PairScores, ScoredShard, ShardScorer, TaskFailure};
use herd_engine::batching::BatchLimits;
use herd_engine::device::non_finite_hint;
use herd_engine::dpo::RefFreeType;
use herd_engine::easylm::{EasyLmOptions, Overrides};
use herd_engine::error::LoadError;
use herd_engine::model_dir::ModelDir;
use herd_engine::models::ModelSpec;
use herd_engine::scorer::{ScoreRequest, Scorer, ScorerError};
use herd_rewardbench::dataset::v2::BestOfNRow;
use herd_rewardbench::dataset::{ExampleId, PreferencePair};
use herd_rpc::v1::{Lease, Scoring};
use herd_rpc::{CheckpointFormat, EvalSchema};
use tch::{Device, Kind};

/// How this worker scores every lease (its command line).
pub struct EngineScorer {
    pub device: Device,
    pub kind: Kind,
    pub limits: BatchLimits,
    /// score each pair's chosen and rejected in one row, computing their shared prefix once
    pub share_prefix: bool,
}

/// The EasyLM config a sweep gives for checkpoints outside the size table.
fn easylm_options(scoring: &Scoring) -> EasyLmOptions {
    let config = scoring.easylm.clone().unwrap_or_default();
    EasyLmOptions {
        size: Some(config.size).filter(|s| !s.is_empty()),
        overrides: Overrides {
            num_heads: config.num_heads,
            num_kv_heads: config.num_kv_heads,
            vocab_size: config.vocab_size,
            rope_theta: config.rope_theta,
            rms_norm_eps: config.rms_norm_eps,
            max_position_embeddings: config.max_position_embeddings,
            ..Overrides::default()
        },
    }
}

/// The model of a local checkpoint in `format`, read as far as its config (`easylm`: how to read
/// an EasyLM checkpoint's config).
pub fn open_spec(
    path: &Path,
    format: CheckpointFormat,
    easylm: &EasyLmOptions,
) -> Result<ModelSpec, LoadError> {
    match format {
        CheckpointFormat::EasyLm => ModelSpec::from_easylm(path, easylm),
        CheckpointFormat::HuggingFace => ModelDir::open(path).and_then(ModelSpec::open),
    }
}

/// A lease's examples, read as its sweep's schema says.
pub enum LeaseExamples {
    /// schema rb1: one preference pair per example
    Pairs(Vec<PreferencePair>),
    /// schema rb2: one RewardBench 2 row per example, every completion scored
    BestOfN(Vec<BestOfNRow>),
}

/// Reads every example's `pair_json` as a `T`; the error names the example and what it should be.
fn parse_examples<T: serde::de::DeserializeOwned>(
    lease: &Lease,
    what: &str,
) -> anyhow::Result<Vec<T>> {
    lease
        .examples
        .iter()
        .map(|example| {
            serde_json::from_str(&example.pair_json).with_context(|| {
                format!(
                    "example {:?} (index {}): pair_json is not {what}",
                    example.id, example.index
                )
            })
        })
        .collect()
}

/// The texts scored for RewardBench 2 rows: every completion of every row, two to a pair
/// (`chosen` = completion `2k`, `rejected` = `2k + 1`; an odd last completion is paired with
/// itself), so the pair scorer gives each completion its own score, formatted and truncated as a
/// pair's side is (the prompt as the user turn, the completion as the assistant turn).
fn completion_pairs(rows: &[BestOfNRow]) -> Vec<PreferencePair> {
    let mut pairs = Vec::new();
    for row in rows {
        let completions: Vec<&str> = row.completions().collect();
        for (k, two) in completions.chunks(2).enumerate() {
            pairs.push(PreferencePair {
                id: ExampleId::Str(format!("{}#{k}", row.id)),
                prompt: row.prompt.clone(),
                chosen: two[0].to_owned(),
                rejected: two.get(1).copied().unwrap_or(two[0]).to_owned(),
                subset: row.subset.clone(),
                chosen_model: None,
                rejected_model: None,
            });
        }
    }
    pairs
}

/// Every row's completion scores back from the scored [`completion_pairs`]: the first logit of
/// each side (the reference's `score[0]`), split into the row's chosen and rejected completions.
fn row_scores(rows: &[BestOfNRow], pairs: &[PairScores]) -> anyhow::Result<Vec<PairScores>> {
    let mut sides = pairs.iter().flat_map(|p| [&p.chosen, &p.rejected]);
    let mut out = Vec::with_capacity(rows.len());
    for row in rows {
        let total = row.total_completions();
        let mut scores = Vec::with_capacity(total);
        for _ in 0..total {
            let side = sides
                .next()
                .with_context(|| format!("row {}: fewer scores than completions", row.id))?;
            let first = side
                .first()
                .with_context(|| format!("row {}: a completion has no score", row.id))?;
            scores.push(*first);
        }
        if total % 2 == 1 {
            // the odd completion's second scoring (paired with itself)
            sides.next();
        }
        let rejected = scores.split_off(row.chosen.len());
        out.push(PairScores {
            chosen: scores,
            rejected,
        });
    }
    Ok(out)
}

impl ShardScorer for EngineScorer {
    type Model = Scorer;
    type Examples = LeaseExamples;

    fn examples(&self, lease: &Lease) -> anyhow::Result<LeaseExamples> {
        let schema = lease
            .scoring
            .as_ref()
            .map_or(Ok(EvalSchema::Rb1), |s| s.eval_schema())
            .map_err(|e| anyhow::anyhow!("lease of sweep {}: {e}", lease.sweep))?;
        Ok(match schema {
            EvalSchema::Rb1 => LeaseExamples::Pairs(parse_examples(lease, "a preference pair")?),
            EvalSchema::Rb2 => {
                LeaseExamples::BestOfN(parse_examples(lease, "a RewardBench 2 row")?)
            }
        })
    }

    fn load(&self, checkpoint: &LocalCheckpoint) -> Result<Scorer, TaskFailure> {
        let scoring = &checkpoint.scoring;
        let request = ScoreRequest {
            model: checkpoint.path.clone(),
            tokenizer: checkpoint.tokenizer.clone(),
            ref_model: None,
            ref_free_type: RefFreeType::Avg,
            chat_template: scoring.chat_template_or_default().to_string(),
            max_length: scoring.max_length_or_default(),
            limits: self.limits,
            share_prefix: self.share_prefix,
            device: self.device,
            kind: self.kind,
        };
        let spec = open_spec(
            &checkpoint.path,
            checkpoint.format,
            &easylm_options(scoring),
        )
        .map_err(TaskFailure::checkpoint)?;
        let own_tokenizer = checkpoint.tokenizer.is_none();
        Scorer::load(&request, &spec).map_err(|error| match error {
            ScorerError::Model(error) => TaskFailure::checkpoint(error),
            // the tokenizer inside an HF checkpoint folder is part of the checkpoint
            ScorerError::Setup(error) if own_tokenizer => TaskFailure::checkpoint(error),
            ScorerError::Setup(error) => TaskFailure::transient(error),
        })
    }

    fn score(
        &self,
        model: &Scorer,
        examples: &LeaseExamples,
        on_batch: &mut dyn FnMut(usize),
    ) -> anyhow::Result<ScoredShard> {
        let expanded;
        let pairs = match examples {
            LeaseExamples::Pairs(pairs) => pairs,
            LeaseExamples::BestOfN(rows) => {
                expanded = completion_pairs(rows);
                &expanded
            }
        };
        let shard = model.score(pairs, on_batch)?;
        let scored: Vec<PairScores> = shard
            .scored
            .pairs
            .into_iter()
            .map(|p| PairScores {
                chosen: p.chosen,
                rejected: p.rejected,
            })
            .collect();
        Ok(ScoredShard {
            pairs: match examples {
                LeaseExamples::Pairs(_) => scored,
                LeaseExamples::BestOfN(rows) => row_scores(rows, &scored)?,
            },
            model_type: shard.scored.model_type.to_string(),
            chat_template: shard.scored.chat_template,
            tokens: shard.tokens,
        })
    }

    fn precision(&self) -> Precision {
        Precision {
            name: format!("{:?}", self.kind),
            non_finite_hint: non_finite_hint(self.kind),
        }
    }
}

#[cfg(test)]
mod tests {
    use herd_rewardbench::dataset::Prompt;

    use super::*;

    fn row(id: &str, chosen: &[&str], rejected: &[&str]) -> BestOfNRow {
        BestOfNRow {
            id: ExampleId::Str(id.into()),
            prompt: Prompt::Text(format!("prompt of {id}")),
            chosen: chosen.iter().map(|s| s.to_string()).collect(),
            rejected: rejected.iter().map(|s| s.to_string()).collect(),
            num_correct: chosen.len(),
            subset: Some("Ties".into()),
        }
    }

    #[test]
    fn every_completion_gets_its_own_score_back_in_row_order() {
        let rows = [
            row("ref:1", &["a"], &["b", "c", "d"]),
            row("tied:1", &["e", "f"], &["g"]),
        ];
        let pairs = completion_pairs(&rows);
        let texts: Vec<(&str, &str)> = pairs
            .iter()
            .map(|p| (p.chosen.as_str(), p.rejected.as_str()))
            .collect();
        assert_eq!(texts, [("a", "b"), ("c", "d"), ("e", "f"), ("g", "g")]);
        assert!(pairs[..2]
            .iter()
            .all(|p| p.prompt == Prompt::Text("prompt of ref:1".into())));
        // score of a text: its letter's position; a two-label model's second logit is ignored
        let score = |t: &str| vec![(t.as_bytes()[0] - b'a') as f64, -1.0];
        let scored: Vec<PairScores> = pairs
            .iter()
            .map(|p| PairScores {
                chosen: score(&p.chosen),
                rejected: score(&p.rejected),
            })
            .collect();
        let back = row_scores(&rows, &scored).unwrap();
        assert_eq!(back[0].chosen, [0.0]);
        assert_eq!(back[0].rejected, [1.0, 2.0, 3.0]);
        assert_eq!(back[1].chosen, [4.0, 5.0]);
        assert_eq!(back[1].rejected, [6.0]);
        // fewer scored pairs than completions is an error, not a short result
        assert!(row_scores(&rows, &scored[..3]).is_err());
    }
}
