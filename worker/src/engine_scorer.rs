//! herd-engine behind the agent's [`ShardScorer`]: a lease's examples are preference pairs (schema
//! rb1) or RewardBench 2 rows (schema rb2, every completion scored), and a checkpoint is loaded
//! once into a [`Scorer`] on this worker's device, in its precision.

use std::path::Path;

use anyhow::Context;
use herd_agent::scorer::Precision;
use herd_agent::{
    CheckpointScoringError, LocalCheckpoint, PairScores, ScoredShard, ShardScorer, TaskFailure,
};
use herd_engine::batching::BatchLimits;
use herd_engine::batching::RowDoesNotFit;
use herd_engine::device::non_finite_hint;
use herd_engine::dpo::RefFreeType;
use herd_engine::easylm::{Compat, EasyLmOptions, Overrides};
use herd_engine::error::LoadError;
use herd_engine::model_dir::ModelDir;
use herd_engine::models::quant::WeightFormat;
use herd_engine::models::ModelSpec;
use herd_engine::placement::LoadOptions;
use herd_engine::pooling::{Pooling, REFERENCE_BATCH};
use herd_engine::provenance::{PadChoice, Provenance, TemplateSource};
use herd_engine::scorer::{ScoreRequest, Scorer, ScorerError};
use herd_rewardbench::dataset::v2::BestOfNRow;
use herd_rewardbench::dataset::PreferencePair;
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
    /// the devices a model too big for `device` is split over, and the host staging budget
    pub load: LoadOptions,
    /// the decoder's linear weights as loaded or in int8 (`--weights`)
    pub weights: WeightFormat,
}

/// The EasyLM config a sweep gives for checkpoints outside the size table.
fn easylm_options(scoring: &Scoring) -> anyhow::Result<EasyLmOptions> {
    let config = scoring.easylm.clone().unwrap_or_default();
    let compat = config
        .compat
        .parse::<Compat>()
        .map_err(|e: String| anyhow::anyhow!("the sweep's easylm.compat: {e}"))?;
    Ok(EasyLmOptions {
        size: Some(config.size).filter(|s| !s.is_empty()),
        overrides: Overrides {
            num_heads: config.num_heads,
            num_kv_heads: config.num_kv_heads,
            vocab_size: config.vocab_size,
            rope_theta: config.rope_theta,
            rms_norm_eps: config.rms_norm_eps,
            max_position_embeddings: config.max_position_embeddings,
            compat,
            ..Overrides::default()
        },
    })
}

/// The sweep's template and pad provenance and its pooling.
fn text_settings(scoring: &Scoring) -> anyhow::Result<(Provenance, Pooling)> {
    let sweep = |what: &str, e: String| anyhow::anyhow!("the sweep's {what}: {e}");
    Ok((
        Provenance {
            template: scoring
                .tokenizer_template
                .parse::<TemplateSource>()
                .map_err(|e| sweep("tokenizer_template", e))?,
            pad: scoring
                .pad
                .parse::<PadChoice>()
                .map_err(|e| sweep("pad", e))?,
        },
        scoring
            .pooling
            .parse::<Pooling>()
            .map_err(|e| sweep("pooling", e))?,
    ))
}

/// The model of a local checkpoint in `format`, read as far as its config (`easylm`: how to read
/// an EasyLM checkpoint's config). `name` is what the model registry matches RewardBench's model
/// names against (the checkpoint's URI, e.g. `hf:Nexusflow/Starling-RM-34B`); `None`: `path`.
pub fn open_spec(
    path: &Path,
    format: CheckpointFormat,
    easylm: &EasyLmOptions,
    name: Option<&str>,
) -> Result<ModelSpec, LoadError> {
    match format {
        CheckpointFormat::EasyLm => ModelSpec::from_easylm(path, easylm),
        CheckpointFormat::HuggingFace => {
            let dir = ModelDir::open(path)?;
            match name {
                Some(name) => ModelSpec::open_named(dir, Some(name)),
                None => ModelSpec::open(dir),
            }
        }
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

/// A row's completion scores (`completions()` order, one logit each) split into its chosen and
/// rejected completions, as the wire carries them.
fn split_row(row: &BestOfNRow, scores: Vec<f32>) -> anyhow::Result<PairScores> {
    anyhow::ensure!(
        scores.len() == row.total_completions(),
        "row {}: {} scores for {} completions",
        row.id,
        scores.len(),
        row.total_completions()
    );
    let mut chosen: Vec<f64> = scores.into_iter().map(f64::from).collect();
    let rejected = chosen.split_off(row.chosen.len());
    Ok(PairScores { chosen, rejected })
}

impl ShardScorer for EngineScorer {
    type Model = Scorer;
    type Examples = LeaseExamples;

    fn examples(&self, lease: &Lease) -> anyhow::Result<LeaseExamples> {
        let scoring = lease.scoring.as_ref();
        let schema = scoring
            .map_or(Ok(EvalSchema::Rb1), |s| s.eval_schema())
            .map_err(|e| anyhow::anyhow!("lease of sweep {}: {e}", lease.sweep))?;
        let legacy = scoring.is_some_and(|s| s.pooling.parse::<Pooling>() == Ok(Pooling::Legacy));
        // legacy pooling replays RewardBench's batches of 8 from the shard's first example
        anyhow::ensure!(
            !legacy || (lease.shard_start as usize).is_multiple_of(REFERENCE_BATCH),
            "the shard starts at example {}, not a multiple of {REFERENCE_BATCH}: legacy pooling \
             reproduces RewardBench's batches of {REFERENCE_BATCH} only on aligned shards (submit \
             the sweep with a shard_size that is a multiple of {REFERENCE_BATCH})",
            lease.shard_start
        );
        Ok(match schema {
            EvalSchema::Rb1 => LeaseExamples::Pairs(parse_examples(lease, "a preference pair")?),
            EvalSchema::Rb2 => {
                LeaseExamples::BestOfN(parse_examples(lease, "a RewardBench 2 row")?)
            }
        })
    }

    fn load(&self, checkpoint: &LocalCheckpoint) -> Result<Scorer, TaskFailure> {
        let scoring = &checkpoint.scoring;
        let (provenance, pooling) = text_settings(scoring).map_err(TaskFailure::checkpoint)?;
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
            provenance,
            pooling,
            weights: self.weights,
        };
        let easylm = easylm_options(scoring).map_err(TaskFailure::checkpoint)?;
        // the lease's URI names the model for the registry (a hub id keeps its RewardBench
        // name; the local cache path would not)
        let uri = checkpoint.checkpoint.uri.as_str();
        let mut spec = open_spec(&checkpoint.path, checkpoint.format, &easylm, Some(uri))
            .map_err(TaskFailure::checkpoint)?;
        spec.load = self.load.clone();
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
        match examples {
            LeaseExamples::Pairs(pairs) => {
                let shard = model.score(pairs, on_batch).map_err(checkpoint_if_unfit)?;
                // the texts as `worker score` writes them (run_rm.py's text_chosen /
                // text_rejected; run_dpo.py's templated prompt too for a DPO model)
                let texts = crate::output::PairTexts::new(model.formatter(), pairs)?;
                let dpo = shard.scored.model_type != "Seq. Classifier";
                let texts = texts
                    .chosen
                    .into_iter()
                    .zip(texts.rejected)
                    .zip(texts.prompt)
                    .map(|((chosen, rejected), prompt)| {
                        if dpo {
                            vec![chosen, rejected, prompt]
                        } else {
                            vec![chosen, rejected]
                        }
                    })
                    .collect();
                Ok(ScoredShard {
                    texts,
                    pairs: shard
                        .scored
                        .pairs
                        .into_iter()
                        .map(|p| PairScores {
                            chosen: p.chosen,
                            rejected: p.rejected,
                        })
                        .collect(),
                    model_type: shard.scored.model_type.to_string(),
                    chat_template: shard.scored.chat_template,
                    scalar_output: shard.scored.scalar,
                    tokens: shard.tokens,
                })
            }
            // run_v2.py's scoring, as `worker score --schema rb2` does it
            LeaseExamples::BestOfN(rows) => {
                let scored = model
                    .score_best_of_n(rows, on_batch)
                    .map_err(checkpoint_if_unfit)?;
                anyhow::ensure!(
                    scored.scores.len() == rows.len(),
                    "{} rows scored for {} rows",
                    scored.scores.len(),
                    rows.len()
                );
                Ok(ScoredShard {
                    pairs: rows
                        .iter()
                        .zip(scored.scores)
                        .map(|(row, scores)| split_row(row, scores))
                        .collect::<anyhow::Result<_>>()?,
                    // each row's completions, chosen then rejected (`completions()` order)
                    texts: scored.texts,
                    model_type: scored.model_type.to_string(),
                    chat_template: scored.chat_template,
                    // run_v2.py's files store every score as a list
                    scalar_output: false,
                    tokens: scored.tokens,
                })
            }
        }
    }

    fn precision(&self) -> Precision {
        Precision {
            name: format!("{:?}", self.kind),
            non_finite_hint: non_finite_hint(self.kind),
        }
    }
}

/// A row that does not fit the device even alone fails the checkpoint (a retry on this worker
/// would fail the same way); other scoring errors stay transient.
fn checkpoint_if_unfit(error: anyhow::Error) -> anyhow::Error {
    if error.downcast_ref::<RowDoesNotFit>().is_some() {
        CheckpointScoringError(error).into()
    } else {
        error
    }
}

#[cfg(test)]
mod tests {
    use herd_rewardbench::dataset::{ExampleId, Prompt};

    use super::*;

    #[test]
    fn a_leases_uri_names_the_model_for_the_registry() {
        // the Starling fixture as the agent's cache holds it: a folder named by a hash
        let fixture = herd_testkit::workspace_root()
            .join("tests/golden/fixtures/heads/Nexusflow/Starling-RM-34B");
        let cache = tempfile::tempdir().unwrap();
        std::fs::copy(
            fixture.join("config.json"),
            cache.path().join("config.json"),
        )
        .unwrap();
        let open = |name| {
            open_spec(
                cache.path(),
                CheckpointFormat::HuggingFace,
                &EasyLmOptions::default(),
                name,
            )
            .unwrap()
        };
        let by_uri = open(Some("hf:Nexusflow/Starling-RM-34B"));
        assert_eq!(by_uri.entry.names, ["Nexusflow/Starling-RM-34B"]);
        assert_eq!(by_uri.entry.body, "transformer");
        // by the cache path alone it is transformers' LlamaForSequenceClassification
        assert!(open(None).entry.names.is_empty());
        assert_eq!(open(None).entry.body, "model");
    }

    #[test]
    fn a_rows_scores_split_into_chosen_and_rejected() {
        let row = BestOfNRow {
            id: ExampleId::Str("tied:1".into()),
            prompt: Prompt::Text("q".into()),
            chosen: vec!["a".into(), "b".into()],
            rejected: vec!["c".into()],
            num_correct: 2,
            subset: Some("Ties".into()),
        };
        let split = split_row(&row, vec![0.5, -1.25, 2.0]).unwrap();
        assert_eq!(split.chosen, [0.5, -1.25]);
        assert_eq!(split.rejected, [2.0]);
        let err = split_row(&row, vec![0.5]).unwrap_err().to_string();
        assert!(
            err.contains("tied:1") && err.contains("1 scores for 3"),
            "{err}"
        );
    }
}
