//! What sits on top of a backbone: a sequence-classification score head (reward models) and
//! a language-model head (DPO log-probs). Both read only the positions they need, so the final
//! norm and the projection run on a handful of rows instead of the whole padded batch.

use serde_json::Value;
use tch::{Kind, Tensor};

use super::backbone::{self, Backbone};
use super::config::DecoderConfig;
use super::registry::{Entry, Head, HeadContext, HeadDtype};
use crate::batching::Batch;
use crate::error::LoadError;
use crate::weights::VarBuilder;

/// What turns the final-normed hidden state at a pooled position into the reward logits.
pub trait RewardHead: Send {
    /// Logits [n, num_labels] in float32 of hidden rows [n, hidden].
    fn forward(&self, hidden: &Tensor) -> Tensor;

    /// A head that also reads a second position of each sequence (a gate conditioned on the
    /// prompt) finds it in the sequence's token ids; `Ok(None)`: the head reads only the pooled
    /// position. An error says why the sequence has no such position.
    fn gate_position(&self, _ids: &[u32]) -> Result<Option<usize>, String> {
        Ok(None)
    }

    /// Logits of pooled rows `hidden` given the final-normed rows `gate` [n, hidden] at the
    /// positions [`RewardHead::gate_position`] named.
    fn forward_gated(&self, hidden: &Tensor, _gate: &Tensor) -> Tensor {
        self.forward(hidden)
    }
}

/// transformers' `score` head of `*ForSequenceClassification`: one linear layer, no bias.
pub struct LinearHead {
    weight: Tensor,
    bias: Option<Tensor>,
}

impl LinearHead {
    /// `weight` [num_labels, hidden] (and `bias` when `bias` is set) of `w`.
    pub fn load(config: &DecoderConfig, w: &VarBuilder, bias: bool) -> Result<Self, LoadError> {
        let weight = w.take("weight", &[config.num_labels, config.hidden_size])?;
        let bias = if bias {
            Some(w.take("bias", &[config.num_labels])?)
        } else {
            None
        };
        Ok(Self { weight, bias })
    }
}

impl RewardHead for LinearHead {
    fn forward(&self, hidden: &Tensor) -> Tensor {
        hidden
            .linear(&self.weight, self.bias.as_ref())
            .to_kind(Kind::Float)
    }
}

/// A sequence in which a gated head finds no gate position.
#[derive(Debug, thiserror::Error)]
#[error("sequence {sequence}: {reason}")]
pub struct GateError {
    /// the index of the sequence in the caller's list
    pub sequence: usize,
    pub reason: String,
}

/// `*ForSequenceClassification` and the custom reward models: raw logits of the pooled token.
pub struct SequenceClassifier {
    pub backbone: Box<dyn Backbone>,
    pub head: Box<dyn RewardHead>,
    /// the width of the head's logits
    pub num_labels: i64,
}

impl SequenceClassifier {
    /// The model `entry` describes: its backbone under `entry.body`, its head, the head's dtype
    /// and sign (`json`: the raw config.json, for custom heads).
    pub fn load_entry(
        entry: &Entry,
        config: &DecoderConfig,
        json: &Value,
        w: &VarBuilder,
    ) -> Result<Self, LoadError> {
        let backbone = backbone::load_at(config, w, entry.body)?;
        let float32 = entry.quirks.head_dtype == HeadDtype::Float32;
        let head: Box<dyn RewardHead> = match entry.head {
            Head::Score => {
                let mut head = LinearHead::load(config, &w.pp("score"), false)?;
                if float32 {
                    head.weight = head.weight.to_kind(Kind::Float);
                }
                Box::new(head)
            }
            Head::Custom(load) => load(&HeadContext {
                config,
                json,
                w,
                float32,
            })?,
            Head::LanguageModel => {
                return Err(LoadError::Config {
                    field: "architectures".to_string(),
                    reason: format!(
                        "{} is a language model, not a reward model",
                        entry.architecture
                    ),
                })
            }
        };
        let head: Box<dyn RewardHead> = match (float32, entry.quirks.negate) {
            (false, false) => head,
            (float32, negate) => Box::new(Adjusted {
                head,
                float32,
                negate,
            }),
        };
        Ok(Self {
            backbone,
            head,
            num_labels: config.num_labels,
        })
    }

    /// Logits [rows, num_labels] (float32) at `pooled[r]`, a position in row r of `batch`.
    pub fn forward(&self, batch: &Batch, pooled: &Tensor) -> Tensor {
        let rows = Tensor::arange(batch.rows(), (Kind::Int64, batch.ids.device()));
        self.forward_rows(batch, &rows, pooled)
    }

    /// Logits [n, num_labels] (float32) at positions `pooled[i]` of rows `rows[i]` of `batch`.
    pub fn forward_rows(&self, batch: &Batch, rows: &Tensor, pooled: &Tensor) -> Tensor {
        self.forward_rows_gated(batch, rows, pooled, None)
    }

    /// [`SequenceClassifier::forward_rows`] with the head's gate read at `gate[i]` of row
    /// `rows[i]` (see [`SequenceClassifier::gate_positions`]).
    pub fn forward_rows_gated(
        &self,
        batch: &Batch,
        rows: &Tensor,
        pooled: &Tensor,
        gate: Option<&Tensor>,
    ) -> Tensor {
        let hidden = self.backbone.forward(batch);
        let picked = self
            .backbone
            .final_norm(&gather_rows(&hidden, rows, pooled));
        match gate {
            None => self.head.forward(&picked),
            Some(gate) => {
                let gated = self.backbone.final_norm(&gather_rows(&hidden, rows, gate));
                self.head.forward_gated(&picked, &gated)
            }
        }
    }

    /// The position the head's gate reads in each sequence, when it has a gate; an error names
    /// the first sequence (by index) without one.
    pub fn gate_positions(&self, sequences: &[Vec<u32>]) -> Result<Option<Vec<usize>>, GateError> {
        let mut positions = Vec::with_capacity(sequences.len());
        for (sequence, ids) in sequences.iter().enumerate() {
            match self.head.gate_position(ids) {
                Ok(Some(position)) => positions.push(position),
                Ok(None) => return Ok(None),
                Err(reason) => return Err(GateError { sequence, reason }),
            }
        }
        Ok(Some(positions))
    }
}

/// A head fed float32 hidden states and/or negated (a registry entry's `head_dtype`, `negate`).
struct Adjusted {
    head: Box<dyn RewardHead>,
    float32: bool,
    negate: bool,
}

impl Adjusted {
    fn input(&self, hidden: &Tensor) -> Tensor {
        if self.float32 {
            hidden.to_kind(Kind::Float)
        } else {
            hidden.shallow_clone()
        }
    }

    fn output(&self, logits: Tensor) -> Tensor {
        if self.negate {
            -logits
        } else {
            logits
        }
    }
}

impl RewardHead for Adjusted {
    fn forward(&self, hidden: &Tensor) -> Tensor {
        self.output(self.head.forward(&self.input(hidden)))
    }

    fn gate_position(&self, ids: &[u32]) -> Result<Option<usize>, String> {
        self.head.gate_position(ids)
    }

    fn forward_gated(&self, hidden: &Tensor, gate: &Tensor) -> Tensor {
        self.output(
            self.head
                .forward_gated(&self.input(hidden), &self.input(gate)),
        )
    }
}

const LOGIT_ROWS_PER_CHUNK: i64 = 512;

/// `*ForCausalLM`: log-probabilities of chosen next tokens.
pub struct CausalLm {
    pub backbone: Box<dyn Backbone>,
    /// `None` when the input embeddings are tied to the output
    pub lm_head: Option<Tensor>,
    /// Gemma 2: logits become `tanh(logits / c) * c` (`Gemma2ForCausalLM.forward`)
    pub final_logit_softcapping: Option<f64>,
}

impl CausalLm {
    /// The config's backbone under `body` (a registry entry's), the LM head from
    /// `lm_head.weight` (GPT-NeoX: `embed_out`) unless it is tied to the input embeddings.
    pub fn load(config: &DecoderConfig, w: &VarBuilder, body: &str) -> Result<Self, LoadError> {
        let backbone = backbone::load_at(config, w, body)?;
        let lm_head = if config.tie_word_embeddings {
            None
        } else {
            let shape = [config.vocab_size, config.hidden_size];
            Some(w.pp(backbone.lm_head_scope()).take("weight", &shape)?)
        };
        let final_logit_softcapping = config
            .gemma2
            .as_ref()
            .and_then(|g| g.final_logit_softcapping);
        Ok(Self {
            backbone,
            lm_head,
            final_logit_softcapping,
        })
    }

    /// log p(targets[i] | prefix) for flat positions `positions[i]` (row * len + column) of
    /// `batch`, in float32.
    pub fn token_logprobs(&self, batch: &Batch, positions: &Tensor, targets: &Tensor) -> Tensor {
        let hidden = self.backbone.forward(batch);
        let width = hidden.size()[2];
        let hidden = hidden.view([-1, width]);
        let weight = self
            .lm_head
            .as_ref()
            .unwrap_or(self.backbone.embed_tokens());
        // vocabulary-wide logits only for a slice of positions at a time, to bound memory
        let count = positions.size()[0];
        let pieces: Vec<Tensor> = (0..count)
            .step_by(LOGIT_ROWS_PER_CHUNK as usize)
            .map(|start| {
                let rows = (count - start).min(LOGIT_ROWS_PER_CHUNK);
                let picked = hidden.index_select(0, &positions.narrow(0, start, rows));
                let logits = self
                    .backbone
                    .final_norm(&picked)
                    .linear(weight, None::<Tensor>);
                let logits = match self.final_logit_softcapping {
                    Some(cap) => (logits / cap).tanh() * cap,
                    None => logits,
                };
                logits
                    .log_softmax(-1, Kind::Float)
                    .gather(1, &targets.narrow(0, start, rows).unsqueeze(1), false)
                    .squeeze_dim(1)
            })
            .collect();
        if pieces.is_empty() {
            return Tensor::zeros([0], (Kind::Float, hidden.device()));
        }
        Tensor::cat(&pieces, 0)
    }
}

/// hidden[rows[i], positions[i], :] for every i.
fn gather_rows(hidden: &Tensor, rows: &Tensor, positions: &Tensor) -> Tensor {
    let size = hidden.size();
    let (batch, len, width) = (size[0], size[1], size[2]);
    hidden
        .view([batch * len, width])
        .index_select(0, &(rows * len + positions))
}
