//! Llama-family models in libtorch. One module per architecture turns its config.json into the
//! shared decoder shape; `decoder` and `heads` hold the computation.

pub mod backbone;
pub mod config;
pub mod deberta_v2;
pub mod decoder;
pub mod gated;
pub mod gemma2;
pub mod gpt;
pub mod gpt2;
pub mod gpt_neox;
pub mod heads;
pub mod internlm2;
pub mod llama;
pub mod mistral;
pub mod mixtral;
pub mod moe;
pub mod olmo2;
pub mod quant;
pub mod qwen2;
pub mod qwen3;
pub mod registry;
pub mod reward_heads;
pub mod rope;

use serde_json::Value;
use tch::{Device, Kind};

use crate::error::LoadError;
use crate::model_dir::ModelDir;
use crate::weights::Weights;
pub use backbone::Backbone;
use config::DecoderConfig;
use decoder::{NormPlacement, QkNorm};
pub use heads::{CausalLm, LinearHead, RewardHead, SequenceClassifier};
pub use registry::Entry;

/// The architectures herd runs. Each module turns its config.json into the shared decoder shape.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Family {
    Llama,
    Mistral,
    Qwen2,
    Qwen3,
    Olmo2,
    InternLM2,
    /// DeBERTa-v2/v3: a bidirectional encoder read at its first token
    DebertaV2,
    GptNeox,
    Gpt2,
    Gemma2,
    /// Mistral attention with a sparse mixture of experts in place of the MLP
    Mixtral,
}

impl Family {
    pub const ALL: [Family; 11] = [
        Family::Llama,
        Family::Mistral,
        Family::Qwen2,
        Family::Qwen3,
        Family::Olmo2,
        Family::InternLM2,
        Family::DebertaV2,
        Family::GptNeox,
        Family::Gpt2,
        Family::Gemma2,
        Family::Mixtral,
    ];

    /// The prefix of the family's transformers classes (`LlamaForSequenceClassification`).
    pub fn name(self) -> &'static str {
        match self {
            Family::Llama => "Llama",
            Family::Mistral => "Mistral",
            Family::Qwen2 => "Qwen2",
            Family::Qwen3 => "Qwen3",
            Family::Olmo2 => "Olmo2",
            Family::InternLM2 => "InternLM2",
            Family::DebertaV2 => "DebertaV2",
            Family::GptNeox => "GPTNeoX",
            Family::Gpt2 => "GPT2",
            Family::Gemma2 => "Gemma2",
            Family::Mixtral => "Mixtral",
        }
    }

    /// Whether and how queries and keys are normalised before rotary.
    pub fn qk_norm(self) -> QkNorm {
        match self {
            Family::Qwen3 => QkNorm::PerHead,
            Family::Olmo2 => QkNorm::FullWidth,
            _ => QkNorm::None,
        }
    }

    /// Where a decoder layer's norms sit.
    pub fn norm_placement(self) -> NormPlacement {
        match self {
            Family::Olmo2 => NormPlacement::After,
            _ => NormPlacement::Before,
        }
    }

    /// The decoder shape of `json`, a config.json of this family.
    fn decoder_config(self, json: &Value, architecture: &str) -> Result<DecoderConfig, LoadError> {
        match self {
            Family::Llama => llama::config(json, architecture),
            Family::Mistral => mistral::config(json, architecture),
            Family::Qwen2 => qwen2::config(json, architecture),
            Family::Qwen3 => qwen3::config(json, architecture),
            Family::Olmo2 => olmo2::config(json, architecture),
            Family::InternLM2 => internlm2::config(json, architecture),
            Family::DebertaV2 => deberta_v2::config(json, architecture),
            Family::GptNeox => gpt_neox::config(json, architecture),
            Family::Gpt2 => gpt2::config(json, architecture),
            Family::Gemma2 => gemma2::config(json, architecture),
            Family::Mixtral => mixtral::config(json, architecture),
        }
    }
}

/// What the scorer does with a model: read a reward, or DPO log-probs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HeadKind {
    SequenceClassification,
    CausalLm,
}

/// A model folder read as far as its config: cheap, no weights touched.
pub struct ModelSpec {
    pub dir: ModelDir,
    pub config: DecoderConfig,
    pub head: HeadKind,
    /// how this model is scored (registry entry: head, pooling, sign)
    pub entry: &'static Entry,
    /// the raw config.json (`Null` for an EasyLM checkpoint), for the fields a custom head reads
    json: Value,
    /// A token the reward model reads its score at, appended to every input that does not end
    /// with it (the entry's `Appends::RewardToken`: InternLM2's `reward_token_id`).
    pub reward_token: Option<u32>,
    /// set when the weights come from an EasyLM streaming checkpoint instead of `dir`
    easylm: Option<crate::easylm::Checkpoint>,
    /// the devices to split the layers over and the host memory a load may stage through
    pub load: crate::placement::LoadOptions,
}

impl ModelSpec {
    /// The folder's model, named by its path as given (RewardBench's `--model`).
    pub fn open(dir: ModelDir) -> Result<Self, LoadError> {
        let name = dir.root().to_string_lossy().into_owned();
        Self::open_named(dir, Some(&name))
    }

    /// The folder's model, looked up in the registry under `name` (a RewardBench model name such
    /// as `Nexusflow/Starling-RM-34B`, or a path ending in one) and its config.json
    /// `architectures`.
    pub fn open_named(dir: ModelDir, name: Option<&str>) -> Result<Self, LoadError> {
        let json = dir.read_json("config.json")?;
        let architectures = registry::architectures(&json);
        let model_type = json.get("model_type").and_then(Value::as_str);
        let entry =
            registry::lookup_typed(&dir.path("config.json"), &architectures, name, model_type)?;
        if let Some(model_type) = model_type {
            let expected = registry::model_types(entry.family);
            if !expected.contains(&model_type) {
                return Err(LoadError::Config {
                    field: "model_type".to_string(),
                    reason: format!(
                        "{model_type:?}, but {} is scored on a {} backbone (model_type {})",
                        entry.architecture,
                        entry.family.name(),
                        expected.join(" or ")
                    ),
                });
            }
        }
        let mut config = entry.family.decoder_config(&json, entry.architecture)?;
        config.num_labels = entry.labels.resolve(&json, config.num_labels)?;
        config.validate()?;
        let reward_token = if entry.quirks.appends == registry::Appends::RewardToken {
            Some(internlm2::reward_token(&json, &config)?)
        } else {
            None
        };
        Ok(Self {
            dir,
            config,
            head: entry.task,
            entry,
            json,
            reward_token,
            easylm: None,
            load: Default::default(),
        })
    }

    /// An EasyLM streaming checkpoint (a file): its records are scanned for the config (size
    /// table cross-checked against the shapes, `options` on top); the weights are streamed
    /// straight into libtorch when the model is loaded, without writing a Hugging Face folder.
    pub fn from_easylm(
        path: &std::path::Path,
        options: &crate::easylm::EasyLmOptions,
    ) -> Result<Self, LoadError> {
        let checkpoint = crate::easylm::Checkpoint::open(path, options)?;
        let config = checkpoint.config.decoder_config();
        let folder = match path.parent() {
            Some(parent) if !parent.as_os_str().is_empty() => parent.to_path_buf(),
            _ => std::path::PathBuf::from("."),
        };
        tracing::info!(
            checkpoint = %path.display(),
            size = checkpoint.config.size.unwrap_or("custom"),
            architecture = %config.architecture,
            "EasyLM checkpoint scanned"
        );
        let head = checkpoint.head();
        let entry = registry::generic(config.family, head).ok_or_else(|| {
            LoadError::file(
                path,
                format!("no registry entry for a {head:?} {}", config.architecture),
            )
        })?;
        Ok(Self {
            dir: ModelDir::open(folder)?,
            head,
            entry,
            config,
            json: Value::Null,
            reward_token: None,
            easylm: Some(checkpoint),
            load: Default::default(),
        })
    }

    /// Where the model's config comes from, for messages.
    fn config_source(&self) -> std::path::PathBuf {
        match &self.easylm {
            Some(checkpoint) => checkpoint.path.clone(),
            None => self.dir.path("config.json"),
        }
    }

    fn expect_head(&self, wanted: HeadKind) -> Result<(), LoadError> {
        if self.head == wanted {
            return Ok(());
        }
        Err(LoadError::file(
            self.config_source(),
            format!(
                "{} has a {:?} head but this run needs {:?}",
                self.config.architecture, self.head, wanted
            ),
        ))
    }

    fn weights(&self, device: Device, kind: Kind) -> Result<Weights, LoadError> {
        if let Some(checkpoint) = &self.easylm {
            // read whole onto `device` (its own streaming load); never split
            return checkpoint.load_weights(device, kind);
        }
        let mut weights = Weights::load(&self.dir.weight_files()?, device, kind)?
            .with_host_budget(self.load.host_budget);
        if self.entry.names.contains(&reward_heads::ldl::NAME) {
            // LDL-Reward's head lives in side files, kept in float32 as the package loads it
            for (scope, file) in reward_heads::ldl::side_files(self.dir.root())? {
                let side = Weights::load(&[file], device, Kind::Float)?.into_tensors()?;
                weights = weights.with_loaded(
                    side.into_iter()
                        .map(|(name, tensor)| (format!("{scope}.{name}"), tensor))
                        .collect(),
                );
            }
        }
        let weights = match self.placement(&weights, device)? {
            Some(placement) => weights.with_placement(placement),
            None => weights,
        };
        match self.config.family {
            // fused and differently named: renamed and split into the shared decoder's layout
            Family::InternLM2 => internlm2::rename_weights(weights, &self.config),
            _ => Ok(weights),
        }
    }

    /// Where the decoder layers go when [`LoadOptions::devices`](crate::placement::LoadOptions)
    /// names more than one device (None: all on `device`).
    fn placement(
        &self,
        weights: &Weights,
        device: Device,
    ) -> Result<Option<crate::placement::Placement>, LoadError> {
        use crate::placement::{budgets, plan_placement, split_evenly, Placement};
        let devices = &self.load.devices;
        if devices.len() < 2 {
            return Ok(None);
        }
        let source = self.config_source();
        if devices[0].device != device {
            return Err(LoadError::file(
                &source,
                format!(
                    "the first of the devices ({:?}) must be the scoring device ({device:?})",
                    devices[0].device
                ),
            ));
        }
        let mut layer_bytes = vec![0u64; self.config.num_layers.max(0) as usize];
        let mut rest = 0;
        for (name, bytes) in weights.sizes() {
            match decoder_layer_of(&name).filter(|&i| i < layer_bytes.len()) {
                Some(layer) => layer_bytes[layer] += bytes,
                None => rest += bytes,
            }
        }
        let dry_run = devices
            .iter()
            .all(|d| d.device == Device::Cpu && d.free_bytes.is_none());
        let stages = if dry_run {
            let cpus: Vec<Device> = devices.iter().map(|d| d.device).collect();
            split_evenly(&layer_bytes, &cpus)
        } else {
            let reserve = self.load.activation_reserve;
            plan_placement(&layer_bytes, rest, 0, &budgets(devices), reserve)
                .map_err(|e| LoadError::file(&source, e))?
        };
        let placement = Placement::staged(stages);
        if placement.is_split() {
            let splits = !matches!(
                self.config.family,
                Family::DebertaV2 | Family::GptNeox | Family::Gpt2 | Family::InternLM2
            );
            if !splits {
                return Err(LoadError::file(
                    &source,
                    format!(
                        "{} does not fit on {device:?} and splitting by layers is done for the \
                         Llama-family decoder only (Llama, Mistral, Qwen2, Qwen3, OLMo2, Gemma 2)",
                        self.config.architecture
                    ),
                ));
            }
            tracing::info!(stages = ?placement.stages(), "model split by layers over devices");
        }
        Ok(Some(placement))
    }

    pub fn load_classifier(
        &self,
        device: Device,
        kind: Kind,
    ) -> Result<SequenceClassifier, LoadError> {
        self.expect_head(HeadKind::SequenceClassification)?;
        let weights = self.weights(device, kind)?;
        let model =
            SequenceClassifier::load_entry(self.entry, &self.config, &self.json, &weights.root())?;
        report_loaded(&self.dir, &weights);
        Ok(model)
    }

    pub fn load_causal_lm(&self, device: Device, kind: Kind) -> Result<CausalLm, LoadError> {
        self.expect_head(HeadKind::CausalLm)?;
        let weights = self.weights(device, kind)?;
        let model = CausalLm::load(&self.config, &weights.root(), self.entry.body)?;
        report_loaded(&self.dir, &weights);
        Ok(model)
    }
}

/// The decoder layer a tensor belongs to (`model.layers.7.mlp.up_proj.weight` -> 7).
fn decoder_layer_of(name: &str) -> Option<usize> {
    let mut parts = name.split('.');
    parts.find(|&p| p == "layers")?;
    parts.next()?.parse().ok()
}

fn report_loaded(dir: &ModelDir, weights: &Weights) {
    if let Some(peak) = crate::weights::peak_host_bytes() {
        tracing::info!(
            model = %dir.root().display(),
            peak_host_bytes = peak,
            "model loaded"
        );
    }
    let unused = weights.unused();
    if !unused.is_empty() {
        tracing::warn!(model = %dir.root().display(), ?unused, "checkpoint tensors not used by the model");
    }
}
