//! `worker score` end to end: load the model and tokenizer, format and tokenize every pair,
//! score in packed batches, return per-pair scores in dataset order.

use std::path::PathBuf;

use anyhow::Context;
use indicatif::{ProgressBar, ProgressStyle};
use tch::{Device, Kind};

use herd_rewardbench::chat::{rewardbench_messages, ChatFormatter, FastChatTemplate};
use herd_rewardbench::dataset::v2::BestOfNRow;
use herd_rewardbench::dataset::{PreferencePair, Prompt};

use crate::batching::{BatchLimits, BatchSettings};
use crate::classifier::{score_sequence_groups, score_sequence_pairs, score_sequences};
use crate::dpo::{self, DpoLimits, RefFreeType};
use crate::encode::{classifier_inputs_from, classifier_inputs_masked, format_pair};
use crate::model_dir::ModelDir;
use crate::models::backbone::Backbone;
use crate::models::quant::WeightFormat;
use crate::models::registry::{
    Appends, DoubleBos, Output, Pooled, Quirks, CLASSIFIER, ENCODER_CLASSIFIER,
};
use crate::models::{CausalLm, HeadKind, ModelSpec, SequenceClassifier};
use crate::pooling::Pooling;
use crate::provenance::{Pads, Provenance, TemplateSource};
use crate::tokenizer::{AppendedToken, RewardTokenizer, TruncationSide};

#[derive(Clone, Debug)]
pub struct ScoreRequest {
    pub model: PathBuf,
    /// defaults to the model folder
    pub tokenizer: Option<PathBuf>,
    /// DPO: the reference model; with a causal LM and none, scoring is reference-free
    pub ref_model: Option<PathBuf>,
    pub ref_free_type: RefFreeType,
    /// FastChat template used when the tokenizer has no chat template of its own
    pub chat_template: String,
    pub max_length: usize,
    pub limits: BatchLimits,
    /// score the sequences sharing a prompt (a pair's chosen and rejected, a RewardBench 2
    /// prompt's completions) in one row, computing their shared prefix once
    pub share_prefix: bool,
    pub device: Device,
    pub kind: Kind,
    /// whether the tokenizer's own chat template is used, and which pad id
    pub provenance: Provenance,
    /// where a classifier's score is read (legacy: `pairs` start at a multiple of 8 examples)
    pub pooling: Pooling,
    /// the decoder's linear weights as loaded, or in int8 (`--weights int8`, models/quant.rs)
    pub weights: WeightFormat,
}

impl ScoreRequest {
    /// How this request's rows become batches, padded with `pad_id`.
    pub fn batching(&self, pad_id: u32) -> BatchSettings {
        BatchSettings {
            limits: self.limits,
            pad_id,
            device: self.device,
            prefetch: crate::batching::PREFETCH_BATCHES,
        }
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct PairScores {
    /// every label's logit (classifiers) or the one DPO reward; f64 so large DPO log-prob sums
    /// keep their precision
    pub chosen: Vec<f64>,
    pub rejected: Vec<f64>,
}

#[derive(Clone, Debug)]
pub struct ScoredDataset {
    /// "tokenizer" when the tokenizer's own template was used, else the FastChat name
    pub chat_template: String,
    /// RewardBench's model_type: "Seq. Classifier", "DPO" or "DPO Ref. Free"
    pub model_type: &'static str,
    pub pairs: Vec<PairScores>,
    /// the pipeline returns one float per sequence rather than a row of logits (DPO rewards,
    /// and custom pipelines such as StarlingPipeline): result files then hold `x`, not `[x]`
    pub scalar: bool,
}

/// RewardBench: the tokenizer's chat template wins over the requested FastChat template.
pub fn choose_formatter(
    tokenizer: &RewardTokenizer,
    requested: &str,
) -> anyhow::Result<ChatFormatter> {
    choose_formatter_with(tokenizer, requested, TemplateSource::Use)
}

/// [`choose_formatter`], unless `source` says to ignore the tokenizer's template.
pub fn choose_formatter_with(
    tokenizer: &RewardTokenizer,
    requested: &str,
    source: TemplateSource,
) -> anyhow::Result<ChatFormatter> {
    let own = match source {
        TemplateSource::Use => tokenizer.chat_template(),
        TemplateSource::Ignore => None,
    };
    match own {
        Some(template) => {
            tracing::info!("formatting with the tokenizer's chat template");
            Ok(ChatFormatter::Jinja(template.clone()))
        }
        None => Ok(ChatFormatter::FastChat(FastChatTemplate::by_name(
            requested,
        )?)),
    }
}

/// RewardBench's run_rm.py sets `add_eos_token = True` when it formats with FastChat.
pub fn prepare_classifier_tokenizer(
    tokenizer: &mut RewardTokenizer,
    formatter: &ChatFormatter,
    tokenizer_dir: &ModelDir,
) -> anyhow::Result<()> {
    if matches!(formatter, ChatFormatter::FastChat(_)) {
        tokenizer.set_add_eos_token(tokenizer_dir.root())?;
    }
    Ok(())
}

fn progress_bar(len: usize, what: &str) -> ProgressBar {
    let bar = ProgressBar::new(len as u64);
    let style = ProgressStyle::with_template(
        "{msg} [{elapsed_precise}] {bar:40} {pos}/{len} ({per_sec}, eta {eta})",
    )
    .unwrap_or_else(|_| ProgressStyle::default_bar());
    bar.set_style(style);
    bar.set_message(what.to_string());
    bar
}

pub fn score_pairs(
    request: &ScoreRequest,
    pairs: &[PreferencePair],
) -> anyhow::Result<ScoredDataset> {
    let spec = ModelSpec::open(ModelDir::open(&request.model)?)?;
    score_pairs_with(request, &spec, pairs)
}

/// [`score_pairs`] with the model already opened, e.g. an EasyLM checkpoint
/// (`ModelSpec::from_easylm`; `request.tokenizer` must then name the tokenizer folder).
pub fn score_pairs_with(
    request: &ScoreRequest,
    spec: &ModelSpec,
    pairs: &[PreferencePair],
) -> anyhow::Result<ScoredDataset> {
    let (tokenizer, formatter) = prepare_text(request, spec)?;
    match spec.head {
        HeadKind::SequenceClassification => {
            score_classifier(request, spec, &tokenizer, &formatter, pairs)
        }
        HeadKind::CausalLm => score_dpo(request, spec, &tokenizer, &formatter, pairs),
    }
}

/// RewardBench 2 (`scripts/run_v2.py`): every completion of best-of-N rows scored by a sequence
/// classifier, the model loaded for this call only. Same scores as [`Scorer::score_best_of_n`].
pub fn score_best_of_n_with(
    request: &ScoreRequest,
    spec: &ModelSpec,
    rows: &[BestOfNRow],
) -> anyhow::Result<ScoredBestOfN> {
    ensure_best_of_n_model(request, spec)?;
    let scorer = Scorer::load(request, spec)?;
    let total = rows.iter().map(BestOfNRow::total_completions).sum();
    let bar = progress_bar(total, "scoring");
    let scored = scorer.score_best_of_n(rows, |n| bar.inc(n as u64))?;
    bar.finish();
    Ok(scored)
}

/// run_v2.py loads every model with `AutoModelForSequenceClassification` (REWARD_MODEL_CONFIG
/// "default_v2") and has no DPO path; `reroll_and_score_dataset` compares `scores[0] == max`,
/// which raises for more than one label, so RewardBench 2 scores single-label classifiers only.
fn ensure_best_of_n_model(request: &ScoreRequest, spec: &ModelSpec) -> anyhow::Result<()> {
    anyhow::ensure!(
        spec.head == HeadKind::SequenceClassification,
        "{}: RewardBench 2 (run_v2.py) scores sequence classifiers only; this is a causal LM \
         (run_v2.py has no DPO path)",
        request.model.display()
    );
    anyhow::ensure!(
        [CLASSIFIER, ENCODER_CLASSIFIER].contains(&spec.entry.quirks),
        "{}: RewardBench 2 (run_v2.py) loads every model with AutoModelForSequenceClassification; \
         {} is scored by a custom pipeline",
        request.model.display(),
        spec.entry.architecture
    );
    anyhow::ensure!(
        spec.config.num_labels == 1,
        "{}: RewardBench 2 needs one reward per completion, but the model has {} labels \
         (run_v2.py's reroll_and_score_dataset raises on multi-label scores)",
        request.model.display(),
        spec.config.num_labels
    );
    Ok(())
}

/// RewardBench 2 scores of best-of-N rows, per row in [`BestOfNRow::completions`] order.
#[derive(Clone, Debug, PartialEq)]
pub struct ScoredBestOfN {
    /// "tokenizer" when the tokenizer's own template was used, else the FastChat name
    pub chat_template: String,
    /// run_v2.py's model_type: always "Seq. Classifier"
    pub model_type: &'static str,
    /// per row, each completion after the chat template (run_v2.py's `text` column)
    pub texts: Vec<Vec<String>>,
    /// per row, the logit of each completion (the model's single label)
    pub scores: Vec<Vec<f32>>,
    /// tokens fed to the model
    pub tokens: u64,
}

/// The tokenizer and chat formatter of a request, checked against the model.
fn prepare_text(
    request: &ScoreRequest,
    spec: &ModelSpec,
) -> anyhow::Result<(RewardTokenizer, ChatFormatter)> {
    let tokenizer_dir = ModelDir::open(request.tokenizer.as_ref().unwrap_or(&request.model))?;
    let mut tokenizer = RewardTokenizer::load(&tokenizer_dir)?;
    if let Some(window) = spec.config.attention_window {
        anyhow::ensure!(
            request.max_length as i64 <= window,
            "{}: the model is exact on inputs of at most {window} tokens (its sliding window, or \
             the length past which InternLM2's dynamic-NTK rope changes), fewer than \
             --max-length {}; lower --max-length",
            request.model.display(),
            request.max_length
        );
    }
    if let Some(deberta) = spec.config.deberta.as_ref() {
        // absolute position embeddings end at max_position_embeddings (transformers would fail
        // with an index error on a longer input)
        anyhow::ensure!(
            !deberta.position_biased_input
                || request.max_length as i64 <= spec.config.max_position_embeddings,
            "{}: absolute position embeddings cover {} positions, fewer than --max-length {}; \
             lower --max-length",
            request.model.display(),
            spec.config.max_position_embeddings,
            request.max_length
        );
    }
    anyhow::ensure!(
        request.pooling == Pooling::Current || spec.entry.quirks.pooled != Pooled::FirstToken,
        "{}: pooling {} replays transformers 4.43's last-token rule; {} reads its first token",
        request.model.display(),
        request.pooling,
        spec.config.architecture
    );
    let formatter = choose_formatter_with(
        &tokenizer,
        &request.chat_template,
        request.provenance.template,
    )?;
    anyhow::ensure!(
        request.pooling == Pooling::Current || spec.head == HeadKind::SequenceClassification,
        "pooling {} is for sequence classifiers, but {} is a causal LM (DPO)",
        request.pooling,
        request.model.display()
    );
    if spec.head == HeadKind::SequenceClassification {
        anyhow::ensure!(
            request.ref_model.is_none(),
            "--ref-model is for DPO models, but {} is a sequence classifier",
            request.model.display()
        );
        prepare_classifier_tokenizer(&mut tokenizer, &formatter, &tokenizer_dir)?;
        if let Some(token) = spec.reward_token {
            anyhow::ensure!(
                tokenizer.has_id(token),
                "{}: the model reads its reward at token {token} (reward_token_id), which the \
                 tokenizer in {} does not have",
                request.model.display(),
                tokenizer_dir.root().display()
            );
            tokenizer.set_reward_token(Some(AppendedToken::internlm2(token)));
        }
        if spec.entry.quirks.appends == Appends::ClsToken {
            let cls =
                crate::models::reward_heads::athene::cls_token(&tokenizer, spec.config.vocab_size)
                    .map_err(|e| {
                        anyhow::anyhow!(
                            "{}: tokenizer in {}: {e}",
                            request.model.display(),
                            tokenizer_dir.root().display()
                        )
                    })?;
            tokenizer.set_reward_token(Some(AppendedToken::athene(cls)));
        }
    }
    Ok((tokenizer, formatter))
}

/// The chat formatter a request formats with (the tokenizer's template, else the FastChat
/// template): what the result files' texts and `prompt` column are rendered with.
pub fn request_formatter(
    request: &ScoreRequest,
    spec: &ModelSpec,
) -> anyhow::Result<ChatFormatter> {
    prepare_text(request, spec).map(|(_, formatter)| formatter)
}

/// Scores already formatted conversations one by one with a sequence classifier (the
/// `rewardbench` CLI on instruction data): each text's logits, in order. DPO models score
/// pairs only, as in the CLI (`NotImplementedError("DPO only implemented for pairwise
/// preference data.")`).
pub fn score_texts(
    request: &ScoreRequest,
    spec: &ModelSpec,
    texts: Vec<String>,
) -> anyhow::Result<Vec<Vec<f64>>> {
    anyhow::ensure!(
        spec.head == HeadKind::SequenceClassification,
        "{}: DPO is only implemented for pairwise preference data (chosen / rejected), not \
         instruction data (messages)",
        request.model.display()
    );
    let (tokenizer, _) = prepare_text(request, spec)?;
    let pads = classifier_pads(request, &tokenizer, spec)?;
    let (sequences, pooled) = classifier_rows(
        request,
        &tokenizer,
        spec.entry.quirks,
        pads.pooling,
        texts,
        TruncationSide::Left,
    )?;
    let model = load_classifier(request, spec)?;
    let bar = progress_bar(sequences.len(), "scoring");
    let scores = score_sequences(
        &model,
        &sequences,
        &pooled,
        request.batching(pads.batch),
        |n| bar.inc(n as u64),
    )?;
    bar.finish();
    Ok(scores
        .into_iter()
        .map(|logits| logits.into_iter().map(f64::from).collect())
        .collect())
}

/// `spec`'s classifier on the request's device and dtype, its weights as `request.weights` says.
fn load_classifier(request: &ScoreRequest, spec: &ModelSpec) -> anyhow::Result<SequenceClassifier> {
    let mut model = spec.load_classifier(request.device, request.kind)?;
    apply_weight_format(request, model.backbone.as_mut())?;
    Ok(model)
}

/// `spec`'s causal LM (DPO) on the request's device and dtype, its weights as `request.weights`
/// says.
fn load_causal_lm(request: &ScoreRequest, spec: &ModelSpec) -> anyhow::Result<CausalLm> {
    let mut model = spec.load_causal_lm(request.device, request.kind)?;
    apply_weight_format(request, model.backbone.as_mut())?;
    Ok(model)
}

/// Quantises `backbone` when the request asks for int8 weights; an architecture without int8 is
/// an error naming the model, not a silent full-precision run.
fn apply_weight_format(request: &ScoreRequest, backbone: &mut dyn Backbone) -> anyhow::Result<()> {
    if request.weights == WeightFormat::Full {
        return Ok(());
    }
    let saved = backbone.quantize_int8().ok_or_else(|| {
        anyhow::anyhow!(
            "{}: --weights int8 is implemented for the Llama-family decoder (Llama, Mistral, \
             Qwen2/3, OLMo2, Gemma 2, InternLM2), not this model's architecture",
            request.model.display()
        )
    })?;
    let mib = |bytes: i64| bytes as f64 / (1 << 20) as f64;
    tracing::info!(
        tensors = saved.tensors,
        "int8 weights: the decoder's linear weights take {:.1} MiB instead of {:.1} MiB",
        mib(saved.bytes_after),
        mib(saved.bytes_before)
    );
    Ok(())
}

/// Why a [`Scorer`] could not be set up: the tokenizer/template side, or the model's weights.
#[derive(Debug, thiserror::Error)]
pub enum ScorerError {
    /// tokenizer, chat template or request settings
    #[error("{0:#}")]
    Setup(anyhow::Error),
    /// the checkpoint's weights (missing, corrupt, wrong shapes)
    #[error("{0:#}")]
    Model(anyhow::Error),
}

enum LoadedModel {
    Classifier {
        model: SequenceClassifier,
        pads: Pads,
        /// the registry's pipeline quirks (pooling, BOS handling)
        quirks: Quirks,
    },
    /// reference-free DPO (a [`Scorer`] holds one model)
    CausalLm(CausalLm),
}

/// A model loaded once and kept for several datasets (the agent's shards of one checkpoint):
/// [`Scorer::score`] gives the same scores as [`score_pairs_with`] on the same request.
pub struct Scorer {
    request: ScoreRequest,
    tokenizer: RewardTokenizer,
    formatter: ChatFormatter,
    model: LoadedModel,
}

/// What [`Scorer::score`] returns: the scores and the tokens fed to the model.
pub struct ScoredShard {
    pub scored: ScoredDataset,
    pub tokens: u64,
}

impl Scorer {
    /// Tokenizer and formatter first, then the weights on `request.device`. A DPO model is scored
    /// reference-free (`request.ref_model` must be unset).
    pub fn load(request: &ScoreRequest, spec: &ModelSpec) -> Result<Self, ScorerError> {
        let (tokenizer, formatter) = prepare_text(request, spec).map_err(ScorerError::Setup)?;
        let model = match spec.head {
            HeadKind::SequenceClassification => {
                let pads =
                    classifier_pads(request, &tokenizer, spec).map_err(ScorerError::Setup)?;
                LoadedModel::Classifier {
                    model: load_classifier(request, spec).map_err(ScorerError::Model)?,
                    pads,
                    quirks: spec.entry.quirks,
                }
            }
            HeadKind::CausalLm => {
                if request.ref_model.is_some() {
                    return Err(ScorerError::Setup(anyhow::anyhow!(
                        "a reference model is not supported by a reusable scorer"
                    )));
                }
                LoadedModel::CausalLm(load_causal_lm(request, spec).map_err(ScorerError::Model)?)
            }
        };
        Ok(Self {
            request: request.clone(),
            tokenizer,
            formatter,
            model,
        })
    }

    pub fn request(&self) -> &ScoreRequest {
        &self.request
    }

    /// The chat formatter every text this scorer scores is made with.
    pub fn formatter(&self) -> &ChatFormatter {
        &self.formatter
    }

    /// Scores `pairs`; `on_progress` gets the number of sequences done after each batch.
    pub fn score(
        &self,
        pairs: &[PreferencePair],
        on_progress: impl FnMut(usize),
    ) -> anyhow::Result<ScoredShard> {
        let request = &self.request;
        match &self.model {
            LoadedModel::Classifier {
                model,
                pads,
                quirks,
            } => {
                let (sequences, pooled) = classifier_sequences(
                    request,
                    &self.tokenizer,
                    &self.formatter,
                    *quirks,
                    pads.pooling,
                    pairs,
                )?;
                let tokens = sequences.iter().map(|s| s.len() as u64).sum();
                let pairs = run_classifier(
                    request,
                    model,
                    pairs,
                    &sequences,
                    &pooled,
                    pads.batch,
                    on_progress,
                )?;
                Ok(ScoredShard {
                    scored: ScoredDataset {
                        chat_template: self.formatter.result_name().to_string(),
                        model_type: "Seq. Classifier",
                        pairs,
                        scalar: quirks.output == Output::Scalar,
                    },
                    tokens,
                })
            }
            LoadedModel::CausalLm(model) => {
                let (sequences, pad_id) =
                    dpo_sequences(request, &self.tokenizer, &self.formatter, pairs)?;
                let tokens = sequences
                    .iter()
                    .map(|s| (s.prompt.len() + s.response.len()) as u64)
                    .sum();
                let policy = dpo::response_logprobs(
                    model,
                    &sequences,
                    request.batching(pad_id),
                    on_progress,
                )?;
                let rewards: Vec<f64> = policy
                    .iter()
                    .map(|p| p.reference_free(request.ref_free_type))
                    .collect();
                Ok(ScoredShard {
                    scored: ScoredDataset {
                        chat_template: self.formatter.result_name().to_string(),
                        model_type: "DPO Ref. Free",
                        pairs: dpo_pairs(&rewards),
                        scalar: true,
                    },
                    tokens,
                })
            }
        }
    }
}

impl Scorer {
    /// RewardBench 2 (`scripts/run_v2.py`): scores every completion of `rows`, chosen then
    /// rejected as `load_bon_dataset_v2` unrolls them. Each completion is formatted as one user
    /// turn (the prompt) and one assistant turn, and tokenized with `truncation=True` from the
    /// tokenizer's own `truncation_side` (run_v2.py does not set it, unlike run_rm.py's left).
    /// `on_progress` gets the number of completions done after each batch. Sequence classifiers
    /// with one label only (run_v2.py has no DPO path).
    pub fn score_best_of_n(
        &self,
        rows: &[BestOfNRow],
        on_progress: impl FnMut(usize),
    ) -> anyhow::Result<ScoredBestOfN> {
        let request = &self.request;
        let LoadedModel::Classifier {
            model,
            pads,
            quirks,
        } = &self.model
        else {
            anyhow::bail!(
                "{}: RewardBench 2 (run_v2.py) scores sequence classifiers only; this is a \
                 causal LM (run_v2.py has no DPO path)",
                request.model.display()
            );
        };
        anyhow::ensure!(
            [CLASSIFIER, ENCODER_CLASSIFIER].contains(quirks),
            "{}: RewardBench 2 (run_v2.py) loads every model with \
             AutoModelForSequenceClassification; this model is scored by a custom pipeline",
            request.model.display()
        );
        let labels = model.num_labels;
        anyhow::ensure!(
            labels == 1,
            "{}: RewardBench 2 needs one reward per completion, but the model has {labels} labels",
            request.model.display()
        );
        // run_v2.py runs on current transformers: the rightmost non-pad token
        anyhow::ensure!(
            request.pooling == Pooling::Current,
            "{}: legacy pooling reproduces RewardBench 1 batches of 8 pairs; RewardBench 2 uses \
             current pooling",
            request.model.display()
        );
        let texts = best_of_n_texts(&self.formatter, rows)?;
        let flat: Vec<String> = texts.iter().flatten().cloned().collect();
        let sequences = classifier_inputs_from(
            &self.tokenizer,
            flat,
            request.max_length,
            self.tokenizer.truncation_side(),
        )?;
        // the rightmost non-pad token, or an encoder's first
        let unmasked = vec![0; sequences.len()];
        let pooled = quirks
            .pooled
            .positions(Pooling::Current, &sequences, &unmasked, pads.pooling);
        let tokens = sequences.iter().map(|s| s.len() as u64).sum();
        let settings = request.batching(pads.batch);
        let logits = if request.share_prefix && model.backbone.causal() {
            // a prompt's completions in one row: the prompt is computed once
            let groups: Vec<usize> = texts.iter().map(Vec::len).collect();
            score_sequence_groups(model, &sequences, &pooled, &groups, settings, on_progress)?
        } else {
            score_sequences(model, &sequences, &pooled, settings, on_progress)?
        };
        let mut logits = logits.into_iter();
        let scores = texts
            .iter()
            .map(|row| {
                (&mut logits)
                    .take(row.len())
                    .map(|l| l.first().copied().unwrap_or(f32::NAN))
                    .collect()
            })
            .collect();
        Ok(ScoredBestOfN {
            chat_template: self.formatter.result_name().to_string(),
            model_type: "Seq. Classifier",
            texts,
            scores,
            tokens,
        })
    }
}

/// Each row's completions after the chat template: `[user: prompt, assistant: completion]`
/// (`prepare_dialogue_from_tokenizer` / `prepare_dialogue` with `ift=True`).
fn best_of_n_texts(
    formatter: &ChatFormatter,
    rows: &[BestOfNRow],
) -> anyhow::Result<Vec<Vec<String>>> {
    rows.iter()
        .map(|row| {
            // run_v2.py puts `prompt` in one user turn; a conversation there would be rendered
            // as a Python list, so herd refuses it instead of guessing
            let Prompt::Text(prompt) = &row.prompt else {
                anyhow::bail!(
                    "example {}: RewardBench 2 prompts are strings (run_v2.py formats the prompt \
                     as one user turn), found a list of messages",
                    row.id
                );
            };
            row.completions()
                .map(|completion| {
                    let messages = rewardbench_messages(prompt.as_str(), Some(completion))?;
                    Ok(formatter.render(&messages)?)
                })
                .collect::<anyhow::Result<Vec<String>>>()
                .with_context(|| format!("formatting example {}", row.id))
        })
        .collect()
}

/// The pad ids of a classifier run: the request's choice (RewardBench's by default) for this
/// tokenizer and model config.
fn classifier_pads(
    request: &ScoreRequest,
    tokenizer: &RewardTokenizer,
    spec: &ModelSpec,
) -> anyhow::Result<Pads> {
    request
        .provenance
        .pad
        .resolve(tokenizer, spec.config.pad_token_id)
        .map_err(|e| {
            anyhow::anyhow!(
                "{}: {e}",
                request
                    .tokenizer
                    .as_ref()
                    .unwrap_or(&request.model)
                    .display()
            )
        })
}

/// Tokenized classifier rows and their pooled positions, as the model's pipeline (`quirks`)
/// tokenizes and pools them (`pooling_pad`: the pad id the model pools by).
fn classifier_rows(
    request: &ScoreRequest,
    tokenizer: &RewardTokenizer,
    quirks: Quirks,
    pooling_pad: u32,
    texts: Vec<String>,
    side: TruncationSide,
) -> anyhow::Result<(Vec<Vec<u32>>, Vec<usize>)> {
    let (mut sequences, mut masked) =
        classifier_inputs_masked(tokenizer, texts, request.max_length, side)?;
    if quirks.double_bos != DoubleBos::Masked {
        // custom pipelines forward the duplicated BOS that RewardBenchPipeline masks
        if let Some(bos) = tokenizer.bos_id() {
            for (ids, masked) in sequences.iter_mut().zip(&mut masked) {
                for _ in 0..std::mem::take(masked) {
                    ids.insert(0, bos);
                }
            }
            if quirks.double_bos == DoubleBos::StrippedPerCall {
                crate::pooling::strip_double_bos_per_call(&mut sequences, bos);
            }
        }
    }
    let pooled = quirks
        .pooled
        .positions(request.pooling, &sequences, &masked, pooling_pad);
    Ok((sequences, pooled))
}

/// Formatted, tokenized rows (chosen, rejected, chosen, ...) and their pooled positions.
fn classifier_sequences(
    request: &ScoreRequest,
    tokenizer: &RewardTokenizer,
    formatter: &ChatFormatter,
    quirks: Quirks,
    pooling_pad: u32,
    pairs: &[PreferencePair],
) -> anyhow::Result<(Vec<Vec<u32>>, Vec<usize>)> {
    let mut texts = Vec::with_capacity(pairs.len() * 2);
    for pair in pairs {
        let formatted = format_pair(formatter, pair)
            .with_context(|| format!("formatting example {}", pair.id))?;
        texts.push(formatted.chosen);
        texts.push(formatted.rejected);
    }
    classifier_rows(
        request,
        tokenizer,
        quirks,
        pooling_pad,
        texts,
        TruncationSide::Left,
    )
}

fn run_classifier(
    request: &ScoreRequest,
    model: &SequenceClassifier,
    pairs: &[PreferencePair],
    sequences: &[Vec<u32>],
    pooled: &[usize],
    pad_id: u32,
    progress: impl FnMut(usize),
) -> anyhow::Result<Vec<PairScores>> {
    let settings = request.batching(pad_id);
    // a gated head (models/gated.rs) also reads a position it finds in each sequence: a pair
    // without one is named by its example before any batch runs
    if let Err(error) = model.gate_positions(sequences) {
        let side = ["chosen", "rejected"][error.sequence % 2];
        let id = pairs
            .get(error.sequence / 2)
            .map(|pair| pair.id.to_string());
        anyhow::bail!(
            "example {} ({side} text): {}",
            id.unwrap_or_else(|| error.sequence.to_string()),
            error.reason
        );
    }
    // sequences share a row only where attention is causal (a bidirectional encoder would
    // let the prefix see every tail)
    let scores = if request.share_prefix && model.backbone.causal() {
        score_sequence_pairs(model, sequences, pooled, settings, progress)?
    } else {
        score_sequences(model, sequences, pooled, settings, progress)?
    };
    let mut scores = scores
        .into_iter()
        .map(|logits| logits.into_iter().map(f64::from).collect::<Vec<f64>>());
    Ok(std::iter::from_fn(|| {
        Some(PairScores {
            chosen: scores.next()?,
            rejected: scores.next()?,
        })
    })
    .collect())
}

fn score_classifier(
    request: &ScoreRequest,
    spec: &ModelSpec,
    tokenizer: &RewardTokenizer,
    formatter: &ChatFormatter,
    pairs: &[PreferencePair],
) -> anyhow::Result<ScoredDataset> {
    let pads = classifier_pads(request, tokenizer, spec)?;
    let (sequences, pooled) = classifier_sequences(
        request,
        tokenizer,
        formatter,
        spec.entry.quirks,
        pads.pooling,
        pairs,
    )?;
    let model = load_classifier(request, spec)?;
    let bar = progress_bar(sequences.len(), "scoring");
    let progress = |n: usize| bar.inc(n as u64);
    let pairs = run_classifier(
        request, &model, pairs, &sequences, &pooled, pads.batch, progress,
    )?;
    bar.finish();
    Ok(ScoredDataset {
        chat_template: formatter.result_name().to_string(),
        model_type: "Seq. Classifier",
        pairs,
        scalar: spec.entry.quirks.output == Output::Scalar,
    })
}

/// DPO rows (chosen, rejected, ...) and the pad id RewardBench's DPO path uses (EOS).
fn dpo_sequences(
    request: &ScoreRequest,
    tokenizer: &RewardTokenizer,
    formatter: &ChatFormatter,
    pairs: &[PreferencePair],
) -> anyhow::Result<(Vec<dpo::DpoSequence>, u32)> {
    let limits = DpoLimits {
        max_length: request.max_length,
        ..DpoLimits::default()
    };
    let mut sequences = Vec::with_capacity(pairs.len() * 2);
    for pair in pairs {
        let [chosen, rejected] = dpo::pair_sequences(tokenizer, formatter, pair, limits)
            .with_context(|| format!("preparing example {}", pair.id))?;
        sequences.push(chosen);
        sequences.push(rejected);
    }
    // rewardbench's DPO path pads with EOS
    let pad_id = tokenizer.eos_id().unwrap_or(tokenizer.pad_id());
    Ok((sequences, pad_id))
}

fn dpo_pairs(rewards: &[f64]) -> Vec<PairScores> {
    rewards
        .chunks_exact(2)
        .map(|r| PairScores {
            chosen: vec![r[0]],
            rejected: vec![r[1]],
        })
        .collect()
}

fn score_dpo(
    request: &ScoreRequest,
    spec: &ModelSpec,
    tokenizer: &RewardTokenizer,
    formatter: &ChatFormatter,
    pairs: &[PreferencePair],
) -> anyhow::Result<ScoredDataset> {
    let (sequences, pad_id) = dpo_sequences(request, tokenizer, formatter, pairs)?;
    let run = |spec: &ModelSpec, what: &str| -> anyhow::Result<Vec<dpo::ResponseLogProbs>> {
        let model = load_causal_lm(request, spec)?;
        let bar = progress_bar(sequences.len(), what);
        let out = dpo::response_logprobs(&model, &sequences, request.batching(pad_id), |n| {
            bar.inc(n as u64)
        })?;
        bar.finish();
        Ok(out)
    };
    let policy = run(spec, "policy")?;
    let (rewards, model_type): (Vec<f64>, _) = match &request.ref_model {
        Some(ref_dir) => {
            let mut ref_spec = ModelSpec::open(ModelDir::open(ref_dir)?)?;
            ref_spec.load = spec.load.clone();
            let reference = run(&ref_spec, "reference")?;
            let rewards = policy
                .iter()
                .zip(&reference)
                .map(|(p, r)| p.sum - r.sum)
                .collect();
            (rewards, "DPO")
        }
        None => (
            policy
                .iter()
                .map(|p| p.reference_free(request.ref_free_type))
                .collect(),
            "DPO Ref. Free",
        ),
    };
    Ok(ScoredDataset {
        chat_template: formatter.result_name().to_string(),
        model_type,
        pairs: dpo_pairs(&rewards),
        scalar: true,
    })
}
