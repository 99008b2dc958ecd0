//! The reward-model registry: which models herd runs and how each one is scored.
//!
//! RewardBench decides how to score a model in two places: `REWARD_MODEL_CONFIG`
//! (rewardbench/models/__init__.py in rewardbench 0.1.4), keyed by the `--model` argument, picks
//! the model class and the pipeline (where the reward is read, its sign); for every other name
//! the "default" entry loads `AutoModelForSequenceClassification`, which transformers resolves
//! from config.json. herd keeps both in one table of [`Entry`]s: an entry with `names` serves
//! those RewardBench keys (matched against the model's name, see [`lookup`]), an entry without
//! serves every model whose config.json `architectures` names its class. A name entry wins over
//! an architecture entry, as `args.model in REWARD_MODEL_CONFIG` wins over "default".
//!
//! Adding a model is adding an entry: its class, backbone family, head and pipeline quirks.

use serde_json::Value;
use tch::{Kind, Tensor};

use super::config::DecoderConfig;
use super::gated;
use super::heads::RewardHead;
use super::{reward_heads, Family, HeadKind};
use crate::error::LoadError;
use crate::pooling::Pooling;
use crate::weights::VarBuilder;

/// What a custom head is built from.
pub struct HeadContext<'a> {
    pub config: &'a DecoderConfig,
    /// the raw config.json (`Value::Null` for an EasyLM checkpoint), for head-only fields
    pub json: &'a Value,
    /// the checkpoint's root scope (heads name their own prefix: `score`, `v_head`, ...)
    pub w: &'a VarBuilder<'a>,
    /// the head computes in float32 (its weights must be cast; the hidden states are)
    pub float32: bool,
}

impl HeadContext<'_> {
    /// The tensor `name` of scope `w`, in the dtype the head computes in.
    pub fn take(&self, w: &VarBuilder, name: &str, shape: &[i64]) -> Result<Tensor, LoadError> {
        let tensor = w.take(name, shape)?;
        Ok(if self.float32 {
            tensor.to_kind(Kind::Float)
        } else {
            tensor
        })
    }
}

/// Builds a custom reward head from its weights.
pub type HeadLoader = fn(&HeadContext) -> Result<Box<dyn RewardHead>, LoadError>;

/// The head on top of the backbone.
#[derive(Clone, Copy)]
pub enum Head {
    /// transformers' `score` of `*ForSequenceClassification`: one linear layer, no bias,
    /// `[num_labels, hidden]`
    Score,
    /// the language-model head of `*ForCausalLM` (DPO log-probs)
    LanguageModel,
    /// a reward head of the model's own code
    Custom(HeadLoader),
}

impl std::fmt::Debug for Head {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Head::Score => "Score",
            Head::LanguageModel => "LanguageModel",
            Head::Custom(_) => "Custom",
        })
    }
}

/// Where in a sequence the reward is read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Pooled {
    /// transformers' `*ForSequenceClassification` rule, as the request's [`Pooling`] says
    /// (current: the rightmost token that is not the pad id; legacy: transformers 4.43)
    Classifier,
    /// `argmax(input_ids == pad_token_id) - 1 (mod len)` over the pipeline's left-padded batch,
    /// written into the model's own forward (transformers 4.43's rule whatever transformers
    /// runs): [`Pooling::Legacy`] always
    FirstPadMinusOne,
    /// the last token the attention mask keeps, a trailing pad-id token included
    LastToken,
    /// the token before the first occurrence of this id, or the last token when there is none
    BeforeFirstId(u32),
    /// the first token (an encoder's [CLS], DeBERTa's ContextPooler: `hidden_states[:, 0]`)
    FirstToken,
}

/// How the pipeline returns a batch's rewards, which is how run_rm.py stores them in
/// `scores_chosen` / `scores_rejected` (`rewards.float().cpu().numpy().tolist()`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Output {
    /// a `[batch, labels]` tensor: one list per row (`[x]`)
    Row,
    /// a `[batch]` tensor: one float per row
    Scalar,
}

/// The dtype a head computes in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HeadDtype {
    /// the model's dtype (the logits are cast to float32 afterwards)
    Model,
    /// float32, whatever the model's dtype
    Float32,
}

/// What a model's pipeline does around the forward pass.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Quirks {
    pub pooled: Pooled,
    /// the pipeline returns the negated reward (a cost model scored as a reward)
    pub negate: bool,
    pub output: Output,
    pub head_dtype: HeadDtype,
    /// what the pipeline does with a row that starts with two BOS (a chat template that writes
    /// one, and the tokenizer's)
    pub double_bos: DoubleBos,
    /// the `torch_dtype` REWARD_MODEL_CONFIG fixes for the model (`None`: the run's choice);
    /// `worker score --dtype auto` takes it (only "bfloat16" occurs there)
    pub dtype: Option<&'static str>,
    /// the token the pipeline appends to every input, where the reward is read
    pub appends: Appends,
}

/// A token a pipeline appends to every classifier input (`encode::classifier_inputs_masked`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Appends {
    Nothing,
    /// the model's reward token (config.json `reward_token_id`, `ModelSpec::reward_token`),
    /// unless the input already ends with it: InternLM2
    RewardToken,
    /// the tokenizer's cls_token, always (Athene: `apply_chat_template(...) + cls_token`,
    /// tokenized with the special tokens): the last token of every row is the last cls token
    ClsToken,
}

/// A pipeline's handling of a duplicated leading BOS.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DoubleBos {
    /// RewardBenchPipeline masks the first of the two (herd drops it, see encode.rs)
    Masked,
    /// the custom pipelines tokenize and forward as is, the duplicate attended
    Forwarded,
    /// LDLPipeline drops the first column of a whole pipeline call when any of its rows starts
    /// with two ([`crate::pooling::strip_double_bos_per_call`])
    StrippedPerCall,
}

/// `*ForSequenceClassification` through RewardBenchPipeline: the registry's default quirks.
pub const CLASSIFIER: Quirks = Quirks {
    pooled: Pooled::Classifier,
    negate: false,
    output: Output::Row,
    head_dtype: HeadDtype::Model,
    double_bos: DoubleBos::Masked,
    dtype: None,
    appends: Appends::Nothing,
};

/// `*ForSequenceClassification` of an encoder read at its first token (DeBERTa) through
/// RewardBenchPipeline: [`CLASSIFIER`] but for the pooled position.
pub const ENCODER_CLASSIFIER: Quirks = Quirks {
    pooled: Pooled::FirstToken,
    ..CLASSIFIER
};

/// One way of scoring a model.
#[derive(Clone, Copy, Debug)]
pub struct Entry {
    /// the config.json `architectures` class this entry is for
    pub architecture: &'static str,
    /// REWARD_MODEL_CONFIG keys served by this entry; empty: every model of `architecture`
    pub names: &'static [&'static str],
    pub family: Family,
    /// what the scorer does with the model: read a reward, or DPO log-probs
    pub task: HeadKind,
    /// the scope of the backbone's weights (`model`; Starling-RM-34B's `transformer`)
    pub body: &'static str,
    pub head: Head,
    /// the width of the head's output
    pub labels: Labels,
    pub quirks: Quirks,
}

/// Where the width of a head's output comes from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Labels {
    /// config.json `num_labels` (or `id2label`), as transformers reads it
    Config,
    /// always this many
    Fixed(i64),
    /// this config.json integer field, `default` when absent (Beaver's `score_dim`)
    Field(&'static str, i64),
}

impl Labels {
    /// The width for config.json `json` whose `num_labels` reads `config_labels`.
    pub fn resolve(self, json: &Value, config_labels: i64) -> Result<i64, LoadError> {
        Ok(match self {
            Labels::Config => config_labels,
            Labels::Fixed(n) => n,
            Labels::Field(field, default) => super::config::ConfigJson(json)
                .optional_int(field)?
                .unwrap_or(default),
        })
    }
}

const fn classifier(architecture: &'static str, family: Family) -> Entry {
    Entry {
        architecture,
        names: &[],
        family,
        task: HeadKind::SequenceClassification,
        body: "model",
        head: Head::Score,
        labels: Labels::Config,
        quirks: CLASSIFIER,
    }
}

const fn causal_lm(architecture: &'static str, family: Family) -> Entry {
    Entry {
        architecture,
        names: &[],
        family,
        task: HeadKind::CausalLm,
        body: "model",
        head: Head::LanguageModel,
        labels: Labels::Config,
        quirks: CLASSIFIER,
    }
}

/// GRM (Ray2333/GRM-*-sftreg): `GRewardModel`'s value head through GRMPipeline, one float per
/// sequence, on the body of `family`.
const fn grm(architecture: &'static str, family: Family) -> Entry {
    Entry {
        head: Head::Custom(reward_heads::grm::load),
        labels: Labels::Fixed(1),
        quirks: Quirks {
            output: Output::Scalar,
            ..CUSTOM_PIPELINE
        },
        ..classifier(architecture, family)
    }
}

/// A gated multi-objective reward model on a Llama backbone (models/gated.rs): one score per
/// sequence.
const fn gated(architecture: &'static str, head: HeadLoader, quirks: Quirks) -> Entry {
    Entry {
        architecture,
        names: &[],
        family: Family::Llama,
        task: HeadKind::SequenceClassification,
        body: "model",
        head: Head::Custom(head),
        labels: Labels::Fixed(1),
        quirks,
    }
}

/// Every model herd runs, in the order the supported list names them.
pub static ENTRIES: &[Entry] = &[
    classifier("LlamaForSequenceClassification", Family::Llama),
    causal_lm("LlamaForCausalLM", Family::Llama),
    classifier("MistralForSequenceClassification", Family::Mistral),
    causal_lm("MistralForCausalLM", Family::Mistral),
    classifier("Qwen2ForSequenceClassification", Family::Qwen2),
    causal_lm("Qwen2ForCausalLM", Family::Qwen2),
    classifier("Gemma2ForSequenceClassification", Family::Gemma2),
    causal_lm("Gemma2ForCausalLM", Family::Gemma2),
    classifier("Qwen3ForSequenceClassification", Family::Qwen3),
    causal_lm("Qwen3ForCausalLM", Family::Qwen3),
    classifier("Olmo2ForSequenceClassification", Family::Olmo2),
    causal_lm("Olmo2ForCausalLM", Family::Olmo2),
    // mistralai/Mixtral-8x7B-Instruct-v0.1 and NousResearch/Nous-Hermes-2-Mixtral-8x7B-DPO:
    // DPO_MODEL_CONFIG loads the latter with MixtralForCausalLM (rewardbench/models/__init__.py)
    classifier("MixtralForSequenceClassification", Family::Mixtral),
    causal_lm("MixtralForCausalLM", Family::Mixtral),
    // the classes of the hub's remote modeling_internlm2.py (weights renamed at load, see
    // models/internlm2.rs)
    // its forward is transformers 4.3x's LlamaForSequenceClassification: the score at
    // `torch.eq(input_ids, pad_token_id).int().argmax(-1) - 1` (mod len) whatever transformers runs
    Entry {
        quirks: Quirks {
            pooled: Pooled::FirstPadMinusOne,
            ..CLASSIFIER
        },
        ..classifier("InternLM2ForSequenceClassification", Family::InternLM2)
    },
    causal_lm("InternLM2ForCausalLM", Family::InternLM2),
    // internlm/internlm2-{1_8b,7b,20b}-reward: InternLMPipeline (rewardbench/models/internlm.py)
    // encodes without special tokens (the chat template writes BOS) and appends the reward
    // token (encode::classifier_inputs_masked); the reward is `v_head` at the last token, one
    // float per row
    Entry {
        head: Head::Custom(super::internlm2::load_v_head),
        labels: Labels::Fixed(1),
        quirks: Quirks {
            pooled: Pooled::LastToken,
            output: Output::Scalar,
            appends: Appends::RewardToken,
            ..CLASSIFIER
        },
        ..classifier("InternLM2ForRewardModel", Family::InternLM2)
    },
    // OpenAssistant/reward-model-deberta-v3-*: REWARD_MODEL_CONFIG "default"; the ContextPooler
    // and `classifier` of DebertaV2ForSequenceClassification on the `deberta` encoder
    Entry {
        body: "deberta",
        head: Head::Custom(super::deberta_v2::load_head),
        quirks: ENCODER_CLASSIFIER,
        ..classifier("DebertaV2ForSequenceClassification", Family::DebertaV2)
    },
    Entry {
        body: "gpt_neox",
        ..classifier("GPTNeoXForSequenceClassification", Family::GptNeox)
    },
    Entry {
        body: "gpt_neox",
        ..causal_lm("GPTNeoXForCausalLM", Family::GptNeox)
    },
    // OpenAssistant/oasst-rm-2*-pythia-*: REWARD_MODEL_CONFIG "default" over the package's own
    // class (rewardbench/models/openassistant.py): `out_proj` with its bias, read at the last
    // attended token whatever it is (`attention_mask.cumsum(dim=1).argmax(dim=1)`), even the
    // pad id <|endoftext|> that closes every oasst_pythia turn
    Entry {
        body: "gpt_neox",
        head: Head::Custom(super::gpt_neox::load_out_proj),
        labels: Labels::Fixed(1),
        quirks: Quirks {
            pooled: Pooled::LastToken,
            ..CLASSIFIER
        },
        ..classifier(super::gpt_neox::REWARD_MODEL, Family::GptNeox)
    },
    Entry {
        body: "transformer",
        ..classifier("GPT2ForSequenceClassification", Family::Gpt2)
    },
    Entry {
        body: "transformer",
        ..causal_lm("GPT2LMHeadModel", Family::Gpt2)
    },
    // infly/INF-ORM-Llama3.1-70B: RewardBenchPipeline, torch_dtype bfloat16
    Entry {
        head: Head::Custom(reward_heads::inform::load),
        labels: Labels::Fixed(1),
        quirks: Quirks {
            pooled: Pooled::FirstPadMinusOne,
            dtype: Some("bfloat16"),
            ..CLASSIFIER
        },
        ..classifier("INFORMForSequenceClassification", Family::Llama)
    },
    // openbmb/UltraRM-13b: OpenBMBPipeline
    Entry {
        head: Head::Custom(reward_heads::ultrarm::load),
        labels: Labels::Fixed(1),
        quirks: CUSTOM_PIPELINE,
        ..classifier("LlamaRewardModel", Family::Llama)
    },
    // PKU-Alignment/beaver-7b-v{1,2}.0-reward: BeaverPipeline (end_scores)
    Entry {
        head: Head::Custom(reward_heads::beaver::load),
        labels: Labels::Field("score_dim", 1),
        quirks: CUSTOM_PIPELINE,
        ..classifier("LlamaForScore", Family::Llama)
    },
    // the cost models: BeaverCostPipeline returns -end_scores
    Entry {
        names: &[
            "PKU-Alignment/beaver-7b-v1.0-cost",
            "PKU-Alignment/beaver-7b-v2.0-cost",
        ],
        head: Head::Custom(reward_heads::beaver::load),
        labels: Labels::Field("score_dim", 1),
        quirks: Quirks {
            negate: true,
            ..CUSTOM_PIPELINE
        },
        ..classifier("LlamaForScore", Family::Llama)
    },
    // Nexusflow/Starling-RM-34B: starling.py's own LlamaForSequenceClassification, StarlingPipeline
    Entry {
        names: &["Nexusflow/Starling-RM-34B"],
        body: "transformer",
        head: Head::Custom(reward_heads::starling::load),
        labels: Labels::Fixed(1),
        quirks: Quirks {
            pooled: Pooled::BeforeFirstId(0),
            output: Output::Scalar,
            ..CUSTOM_PIPELINE
        },
        ..classifier("LlamaForSequenceClassification", Family::Llama)
    },
    // berkeley-nest/Starling-RM-7B-alpha: starling.py's GPTRewardModel, StarlingPipeline. Its
    // snapshot is one torch.save state dict (`*.pt`/`*model.bin`, beside Llama-2-7b-chat-hf's
    // config.json and tokenizer, which the class is built from): the backbone under `transformer`
    // (`model.model.*` and `model.lm_head.weight` go unused), `v_head` float32 (built outside
    // `from_pretrained`'s dtype), read before the first `PAD_ID` = `tokenizer("<unk>")
    // ["input_ids"][0]`, which the Llama-2 tokenizer's BOS makes 1: a row's last token, as every row
    // starts with BOS (in the CLI's left-padded batches a shorter row is read at a pad instead;
    // herd scores each row as if alone, see tests/golden/make_torch_save_goldens.py)
    Entry {
        names: &["berkeley-nest/Starling-RM-7B-alpha"],
        body: "transformer",
        head: Head::Custom(reward_heads::starling::load),
        labels: Labels::Fixed(1),
        quirks: Quirks {
            pooled: Pooled::BeforeFirstId(1),
            output: Output::Scalar,
            head_dtype: HeadDtype::Float32,
            ..CUSTOM_PIPELINE
        },
        ..classifier("LlamaForCausalLM", Family::Llama)
    },
    // Ray2333/GRM-*-sftreg on a Llama backbone: GRewardModel, GRMPipeline
    grm("GRewardModel", Family::Llama),
    // the same models when their config.json names the causal LM they were built from
    Entry {
        names: &[
            "Ray2333/GRM-llama3-8B-sftreg",
            "Ray2333/GRM-llama3.2-3B-sftreg",
        ],
        ..grm("LlamaForCausalLM", Family::Llama)
    },
    // nvidia/Llama-3.1-Nemotron-70B-Reward-HF: the lm_head logit of token 0 at the last token
    // (model card; RewardBench 0.1.4 has no entry), one float per conversation
    Entry {
        names: &["nvidia/Llama-3.1-Nemotron-70B-Reward-HF"],
        head: Head::Custom(reward_heads::nemotron::load),
        labels: Labels::Fixed(1),
        quirks: Quirks {
            pooled: Pooled::LastToken,
            output: Output::Scalar,
            ..CLASSIFIER
        },
        ..classifier("LlamaForCausalLM", Family::Llama)
    },
    // Ray2333/GRM-Gemma2-2B-sftreg: GRewardModel builds its body from the config's causal LM, so a
    // gemma2 config.json gives a Gemma 2 body under the same class (lookup_typed picks this entry
    // by model_type)
    grm("GRewardModel", Family::Gemma2),
    // openbmb/Eurus-RM-7b: REWARD_MODEL_CONFIG's AutoModel over the hub's `EurusRewardModel`
    // (UltraRM's regression head on a Mistral body) through OpenBMBPipeline: `[batch, 1]`
    Entry {
        head: Head::Custom(reward_heads::ultrarm::load),
        labels: Labels::Fixed(1),
        quirks: CUSTOM_PIPELINE,
        ..classifier("EurusRewardModel", Family::Mistral)
    },
    // ShikaiChen/LDL-Reward-Gemma-2-27B-v0.1: LDLRewardModel27B + LDLPipeline (drops a call's first
    // column when a row starts with two BOS), the body saved as a bare Gemma2Model (config.json
    // `Gemma2Model`, no `model.` prefix), the head from side files in float32, logits `[batch]`
    Entry {
        names: &[reward_heads::ldl::NAME],
        body: "",
        ..LDL
    },
    Entry {
        architecture: "LDLRewardModel27B",
        names: &[reward_heads::ldl::NAME],
        ..LDL
    },
    // Nexusflow/Athene-RM-{8B,70B}: the model card's AtheneForSequenceClassification and
    // AtheneRewardPipeline (RewardBench 0.1.4 has no entry; reward_heads/athene.rs): LlamaModel +
    // `v_head` read at the last CLS_ID, the tokenizer's cls_token appended to the chat-template
    // text and tokenized with the special tokens (a BOS before the template's, kept), one float
    // per conversation. config.json names the training code's class.
    Entry {
        names: &[
            reward_heads::athene::ATHENE_8B,
            reward_heads::athene::ATHENE_70B,
        ],
        head: Head::Custom(reward_heads::athene::load),
        labels: Labels::Fixed(1),
        quirks: Quirks {
            appends: Appends::ClsToken,
            output: Output::Scalar,
            ..CUSTOM_PIPELINE
        },
        ..classifier(reward_heads::athene::ARCHITECTURE, Family::Llama)
    },
    gated(
        "LlamaForRewardModelWithGating",
        gated::load_armorm,
        gated::quirks::ARMORM,
    ),
    gated(
        "LlamaForRewardModelWithGating3",
        gated::load_qrm3,
        gated::quirks::QRM,
    ),
    gated(
        "LlamaForRewardModelWithGating31",
        gated::load_qrm31,
        gated::quirks::QRM,
    ),
];

/// LDL-Reward under the class its package's `save_pretrained` writes (see [`ENTRIES`]).
const LDL: Entry = Entry {
    head: Head::Custom(reward_heads::ldl::load),
    labels: Labels::Fixed(1),
    quirks: Quirks {
        pooled: Pooled::FirstPadMinusOne,
        output: Output::Scalar,
        head_dtype: HeadDtype::Float32,
        dtype: Some("bfloat16"),
        double_bos: DoubleBos::StrippedPerCall,
        ..CLASSIFIER
    },
    ..classifier("Gemma2Model", Family::Gemma2)
};

/// The custom pipelines (OpenBMB, Beaver, GRM, Starling): the tokenizer's batch straight into
/// the model (no double-BOS masking), the reward at the last token the mask keeps.
pub const CUSTOM_PIPELINE: Quirks = Quirks {
    pooled: Pooled::LastToken,
    negate: false,
    output: Output::Row,
    head_dtype: HeadDtype::Model,
    double_bos: DoubleBos::Forwarded,
    dtype: None,
    appends: Appends::Nothing,
};

/// The config.json `model_type`s a family's backbone reads (a class such as `GRewardModel` or
/// `LlamaRewardModel` names no family; its model_type must then be the entry's).
pub fn model_types(family: Family) -> &'static [&'static str] {
    match family {
        Family::Llama => &["llama"],
        Family::Mistral => &["mistral"],
        Family::Qwen2 => &["qwen2"],
        Family::Qwen3 => &["qwen3"],
        Family::Olmo2 => &["olmo2"],
        Family::InternLM2 => &["internlm2"],
        Family::DebertaV2 => &["deberta-v2"],
        // OpenAssistant's GPTNeoXRewardConfig: `model_type = "gpt_neox_reward_model"`
        Family::GptNeox => &["gpt_neox", "gpt_neox_reward_model"],
        Family::Gpt2 => &["gpt2"],
        Family::Gemma2 => &["gemma2"],
        Family::Mixtral => &["mixtral"],
    }
}

/// The entry for a model with config.json `architectures` and, when known, the name it is run
/// under (RewardBench's `--model`: a hub id, or a folder whose last path components are one).
/// A name entry matches when `name`, with `/` separators, ends with one of its names as whole
/// components and the model's first `architectures` class is the entry's. Anything else is an
/// error naming the architectures and the supported ones.
pub fn lookup(
    source: &std::path::Path,
    architectures: &[String],
    name: Option<&str>,
) -> Result<&'static Entry, LoadError> {
    lookup_typed(source, architectures, name, None)
}

/// [`lookup`] for a config.json of `model_type`: where several entries serve the same class on
/// different backbones (`GRewardModel` on Llama or Gemma 2), the one whose family reads that
/// model_type; when none does, the first, whose model_type check then names the mismatch.
pub fn lookup_typed(
    source: &std::path::Path,
    architectures: &[String],
    name: Option<&str>,
    model_type: Option<&str>,
) -> Result<&'static Entry, LoadError> {
    let first = architectures.first().ok_or_else(|| LoadError::Config {
        field: "architectures".to_string(),
        reason: "missing; expected e.g. [\"LlamaForSequenceClassification\"]".to_string(),
    })?;
    let pick = |matches: &dyn Fn(&Entry) -> bool| -> Option<&'static Entry> {
        let typed = |e: &&Entry| model_type.is_none_or(|t| model_types(e.family).contains(&t));
        let mut candidates = ENTRIES.iter().filter(|e| matches(e));
        let first_match = candidates.clone().next();
        candidates.find(typed).or(first_match)
    };
    if let Some(name) = name {
        if let Some(entry) =
            pick(&|e| e.architecture == first && e.names.iter().any(|n| names_match(name, n)))
        {
            return Ok(entry);
        }
    }
    if let Some(entry) = pick(&|e| e.names.is_empty() && e.architecture == first) {
        return Ok(entry);
    }
    Err(LoadError::UnsupportedArchitecture {
        path: source.to_path_buf(),
        architecture: architectures.join(", "),
        supported: supported(),
    })
}

/// The entry of a generic class (`{family}For{SequenceClassification,CausalLM}`), for checkpoints
/// without a config.json (EasyLM).
pub fn generic(family: Family, task: HeadKind) -> Option<&'static Entry> {
    ENTRIES.iter().find(|e| {
        e.names.is_empty()
            && e.family == family
            && e.task == task
            && matches!(
                (e.head, task),
                (Head::Score, HeadKind::SequenceClassification)
                    | (Head::LanguageModel, HeadKind::CausalLm)
            )
    })
}

/// The supported classes, then the named models as `name (class)`.
pub fn supported() -> String {
    let mut classes: Vec<String> = Vec::new();
    for e in ENTRIES.iter().filter(|e| e.names.is_empty()) {
        // a class on several backbones (GRewardModel) is named once
        if !classes.iter().any(|c| c == e.architecture) {
            classes.push(e.architecture.to_string());
        }
    }
    let classes = classes.into_iter();
    let named = ENTRIES.iter().flat_map(|e| {
        e.names
            .iter()
            .map(move |n| format!("{n} ({})", e.architecture))
    });
    classes.chain(named).collect::<Vec<_>>().join(", ")
}

/// Whether `name` (a path or hub id as given) ends with the components of `key` (`org/model`).
fn names_match(name: &str, key: &str) -> bool {
    let name = name.trim_end_matches('/');
    let name = name.strip_prefix("hf:").unwrap_or(name);
    let parts: Vec<&str> = name.split('/').filter(|p| !p.is_empty()).collect();
    let key: Vec<&str> = key.split('/').collect();
    parts.len() >= key.len() && parts[parts.len() - key.len()..] == key[..]
}

/// The `architectures` list of a config.json (strings only).
pub fn architectures(json: &Value) -> Vec<String> {
    json.get("architectures")
        .and_then(Value::as_array)
        .map(|list| {
            list.iter()
                .filter_map(Value::as_str)
                .map(str::to_string)
                .collect()
        })
        .unwrap_or_default()
}

impl Pooled {
    /// Pooled positions of classifier rows (`masked[i]`: leading tokens RewardBench masks that
    /// herd dropped from row `i`; `pad`: the pad id the model pools by), `pooling` being the
    /// request's choice for [`Pooled::Classifier`].
    pub fn positions(
        self,
        pooling: Pooling,
        sequences: &[Vec<u32>],
        masked: &[usize],
        pad: u32,
    ) -> Vec<usize> {
        match self {
            Pooled::Classifier => pooling.positions(sequences, masked, pad),
            Pooled::FirstPadMinusOne => Pooling::Legacy.positions(sequences, masked, pad),
            Pooled::LastToken => sequences
                .iter()
                .map(|s| s.len().saturating_sub(1))
                .collect(),
            Pooled::BeforeFirstId(id) => sequences
                .iter()
                .map(|s| match s.iter().position(|&t| t == id) {
                    Some(first) if first > 0 => first - 1,
                    _ => s.len().saturating_sub(1),
                })
                .collect(),
            Pooled::FirstToken => vec![0; sequences.len()],
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lookup_one(class: &str, name: Option<&str>) -> Result<&'static Entry, LoadError> {
        lookup(
            std::path::Path::new("m/config.json"),
            &[class.to_string()],
            name,
        )
    }

    #[test]
    fn every_generic_class_names_its_family_and_head() {
        for family in Family::ALL {
            for (task, suffix) in [
                (
                    HeadKind::SequenceClassification,
                    "ForSequenceClassification",
                ),
                (HeadKind::CausalLm, "ForCausalLM"),
            ] {
                let class = match (family, task) {
                    (Family::Gpt2, HeadKind::CausalLm) => "GPT2LMHeadModel".to_string(),
                    _ => format!("{}{suffix}", family.name()),
                };
                if family == Family::DebertaV2 {
                    // an encoder: no causal LM, a custom (pooler) head, no EasyLM checkpoints
                    let entry = lookup_one(&class, None);
                    match task {
                        HeadKind::CausalLm => assert!(entry.is_err(), "{class}"),
                        HeadKind::SequenceClassification => {
                            assert_eq!(entry.unwrap().quirks, ENCODER_CLASSIFIER)
                        }
                    }
                    assert!(generic(family, task).is_none(), "{class}");
                    continue;
                }
                let entry = lookup_one(&class, None).unwrap();
                assert_eq!((entry.family, entry.task), (family, task), "{class}");
                assert_eq!(entry.architecture, class);
                let generic = generic(family, task).unwrap();
                assert_eq!(generic.architecture, class);
            }
        }
    }

    #[test]
    fn an_unknown_class_is_named_with_the_supported_ones() {
        // a known family prefix with an unknown head, and an unknown family: no fall-through
        for name in [
            "Qwen2ForTokenClassification",
            "GPTNeoXForTokenClassification",
            "GPT2ForCausalLM",
            "OPTForSequenceClassification",
        ] {
            let error = lookup_one(name, None).err().unwrap().to_string();
            assert!(error.contains(name), "{error}");
            assert!(
                error.contains("LlamaForSequenceClassification, LlamaForCausalLM, Mistral"),
                "{error}"
            );
            assert!(error.contains("Qwen2ForCausalLM"), "{error}");
        }
        let error = lookup(
            std::path::Path::new("m/config.json"),
            &["FooModel".to_string(), "BarModel".to_string()],
            Some("org/foo"),
        )
        .err()
        .unwrap()
        .to_string();
        assert!(error.contains("FooModel, BarModel"), "{error}");
        let missing = lookup(std::path::Path::new("m"), &[], None)
            .err()
            .unwrap()
            .to_string();
        assert!(missing.contains("architectures"), "{missing}");
    }

    #[test]
    fn a_class_on_several_backbones_is_picked_by_model_type() {
        let path = std::path::Path::new("m/config.json");
        let class = ["GRewardModel".to_string()];
        let family = |model_type| lookup_typed(path, &class, None, model_type).unwrap().family;
        assert_eq!(family(Some("gemma2")), Family::Gemma2);
        assert_eq!(family(Some("llama")), Family::Llama);
        // no model_type, or one no entry reads: the first (its model_type check names the latter)
        assert_eq!(family(None), Family::Llama);
        assert_eq!(family(Some("qwen2")), Family::Llama);
        // named once in the supported list
        assert_eq!(supported().matches("GRewardModel").count(), 1);
    }

    #[test]
    fn names_match_whole_trailing_components() {
        assert!(names_match(
            "Nexusflow/Starling-RM-34B",
            "Nexusflow/Starling-RM-34B"
        ));
        assert!(names_match(
            "/models/Nexusflow/Starling-RM-34B/",
            "Nexusflow/Starling-RM-34B"
        ));
        assert!(names_match("hf:org/m", "org/m"));
        assert!(!names_match(
            "xNexusflow/Starling-RM-34B",
            "Nexusflow/Starling-RM-34B"
        ));
        assert!(!names_match("Starling-RM-34B", "Nexusflow/Starling-RM-34B"));
        assert!(!names_match(
            "Nexusflow/Starling-RM-34B/v2",
            "Nexusflow/Starling-RM-34B"
        ));
    }

    #[test]
    fn pooled_rules() {
        let rows = vec![vec![1, 5, 6, 2], vec![1, 0, 7, 0], vec![0, 3]];
        let masked = vec![0; 3];
        assert_eq!(
            Pooled::LastToken.positions(Pooling::Current, &rows, &masked, 2),
            vec![3, 3, 1]
        );
        // Starling: before the first id 0; none (or at 0): the last token
        assert_eq!(
            Pooled::BeforeFirstId(0).positions(Pooling::Current, &rows, &masked, 2),
            vec![3, 0, 1]
        );
        // the classifier rule skips a trailing pad id; the first-pad rule is transformers 4.43's
        assert_eq!(
            Pooled::Classifier.positions(Pooling::Current, &rows, &masked, 2),
            vec![2, 3, 1]
        );
        assert_eq!(
            Pooled::FirstPadMinusOne.positions(Pooling::Current, &rows, &masked, 2),
            Pooling::Legacy.positions(&rows, &masked, 2)
        );
        // an encoder's [CLS], whatever the pooling asked for
        assert_eq!(
            Pooled::FirstToken.positions(Pooling::Legacy, &rows, &masked, 2),
            vec![0, 0, 0]
        );
    }
}
