//! What the agent needs from a scoring engine: read a lease's examples, load a checkpoint made
//! local, score the examples with it. The worker binary implements it with herd-engine (libtorch);
//! herd-sim with stub scores. The agent itself never touches a tensor.

use std::path::PathBuf;
use std::time::Duration;

use herd_rpc::v1::{Checkpoint, FailureKind, Lease, Scoring};
use herd_rpc::CheckpointFormat;

/// A leased checkpoint on local disk, with what the sweep says about scoring it.
#[derive(Clone, Debug)]
pub struct LocalCheckpoint {
    /// as the lease names it
    pub checkpoint: Checkpoint,
    /// the local file (EasyLM) or folder (Hugging Face)
    pub path: PathBuf,
    pub format: CheckpointFormat,
    /// the sweep's tokenizer folder made local; `None`: the checkpoint folder's own
    pub tokenizer: Option<PathBuf>,
    pub scoring: Scoring,
}

/// One example's scores. A preference pair (schema rb1): every label's logit (classifiers) or the
/// one DPO reward, per side. A RewardBench 2 row (schema rb2): one score per completion,
/// `chosen[i]` of the row's `chosen[i]` and `rejected[j]` of its `rejected[j]` (the coordinator
/// refuses other counts).
#[derive(Clone, Debug, PartialEq)]
pub struct PairScores {
    pub chosen: Vec<f64>,
    pub rejected: Vec<f64>,
}

/// What scoring a lease's examples gave.
#[derive(Clone, Debug)]
pub struct ScoredShard {
    /// one per example, in the lease's order
    pub pairs: Vec<PairScores>,
    /// the texts each example's scores are of, after the chat template (see
    /// `ExampleReward.texts`): one list per example in the lease's order, or empty when the
    /// scorer has none (the coordinator then writes no eval-set-scores/ file)
    pub texts: Vec<Vec<String>>,
    /// RewardBench's model_type: "Seq. Classifier", "DPO" or "DPO Ref. Free"
    pub model_type: String,
    /// the chat template the texts were formatted with ("tokenizer" or a FastChat name)
    pub chat_template: String,
    /// the pipeline returns one float per sequence (`CompleteRequest.scalar_output`)
    pub scalar_output: bool,
    /// tokens fed to the model
    pub tokens: u64,
}

/// Why a lease could not be scored: the kind tells the coordinator whether to retry it.
#[derive(Debug)]
pub struct TaskFailure {
    pub kind: FailureKind,
    pub error: anyhow::Error,
}

impl TaskFailure {
    /// The checkpoint itself is bad (missing, corrupt, unsupported): retrying it is pointless.
    pub fn checkpoint(error: impl Into<anyhow::Error>) -> Self {
        Self {
            kind: FailureKind::Checkpoint,
            error: error.into(),
        }
    }

    /// Anything else: the task may succeed on a retry (elsewhere).
    pub fn transient(error: impl Into<anyhow::Error>) -> Self {
        Self {
            kind: FailureKind::Transient,
            error: error.into(),
        }
    }
}

/// An error of [`ShardScorer::score`] that fails the lease as a checkpoint failure, because a
/// retry cannot help (one row alone does not fit the device beside the model); any other
/// scoring error fails it as transient.
#[derive(Debug, thiserror::Error)]
#[error(transparent)]
pub struct CheckpointScoringError(pub anyhow::Error);

/// A scoring engine the agent drives. `load` and `score` run on blocking threads.
pub trait ShardScorer: Send + Sync + 'static {
    /// A checkpoint loaded for scoring, kept for the next lease of the same checkpoint.
    type Model: Send + 'static;
    /// A lease's examples, read for scoring.
    type Examples: Send + 'static;

    /// Reads the lease's examples, before any checkpoint is fetched; a failure fails the lease
    /// as transient.
    fn examples(&self, lease: &Lease) -> anyhow::Result<Self::Examples>;

    /// Loads a checkpoint made local.
    fn load(&self, checkpoint: &LocalCheckpoint) -> Result<Self::Model, TaskFailure>;

    /// Scores every example; `on_batch` is told how many sequences each finished batch held. A
    /// failure fails the lease as transient, or as a checkpoint failure when it is a
    /// [`CheckpointScoringError`].
    fn score(
        &self,
        model: &Self::Model,
        examples: &Self::Examples,
        on_batch: &mut dyn FnMut(usize),
    ) -> anyhow::Result<ScoredShard>;

    /// The precision scores are computed in, for the message that fails a checkpoint whose
    /// scores are not finite.
    fn precision(&self) -> Precision;
}

/// The precision a scorer computes in, and what a NaN or infinite score most likely means in it.
#[derive(Clone, Debug)]
pub struct Precision {
    /// e.g. "BFloat16"
    pub name: String,
    pub non_finite_hint: &'static str,
}

/// Scores without a model, for drivers that exercise the agent loop without an engine (herd-sim,
/// tests): example `i` of checkpoint `c` scores `scores(c, i)` (chosen, rejected), after `delay`
/// per example (a stand-in for a GPU's time). The "model" is the checkpoint's id.
pub struct SyntheticScorer<F> {
    pub scores: F,
    pub delay: Duration,
}

impl<F> ShardScorer for SyntheticScorer<F>
where
    F: Fn(i64, u32) -> (f64, f64) + Send + Sync + 'static,
{
    type Model = i64;
    type Examples = Vec<u32>;

    fn examples(&self, lease: &Lease) -> anyhow::Result<Vec<u32>> {
        Ok(lease.examples.iter().map(|e| e.index).collect())
    }

    fn load(&self, checkpoint: &LocalCheckpoint) -> Result<i64, TaskFailure> {
        Ok(checkpoint.checkpoint.id)
    }

    fn score(
        &self,
        checkpoint: &i64,
        indices: &Vec<u32>,
        on_batch: &mut dyn FnMut(usize),
    ) -> anyhow::Result<ScoredShard> {
        if !self.delay.is_zero() {
            std::thread::sleep(self.delay * indices.len() as u32);
        }
        on_batch(2 * indices.len());
        let pairs = indices
            .iter()
            .map(|&index| {
                let (chosen, rejected) = (self.scores)(*checkpoint, index);
                PairScores {
                    chosen: vec![chosen],
                    rejected: vec![rejected],
                }
            })
            .collect();
        Ok(ScoredShard {
            pairs,
            texts: Vec::new(),
            model_type: "Seq. Classifier".into(),
            chat_template: herd_rpc::defaults::CHAT_TEMPLATE.into(),
            scalar_output: false,
            tokens: 0,
        })
    }

    fn precision(&self) -> Precision {
        Precision {
            name: "synthetic".into(),
            non_finite_hint: "the synthetic scores function returned them",
        }
    }
}
