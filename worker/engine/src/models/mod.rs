//! Llama-family models in libtorch. One module per architecture turns its config.json into the
//! shared decoder shape; `decoder` and `heads` hold the computation.

pub mod config;
pub mod decoder;
pub mod heads;
pub mod llama;
pub mod mistral;
pub mod qwen2;
pub mod rope;

use serde_json::Value;
use tch::{Device, Kind};

use crate::error::LoadError;
use crate::model_dir::ModelDir;
use crate::weights::Weights;
use config::DecoderConfig;
use decoder::Decoder;
pub use heads::{CausalLm, SequenceClassifier};

const FAMILIES: &[&str] = &["Llama", "Mistral", "Qwen2"];

/// What a checkpoint's `architectures` entry asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HeadKind {
    SequenceClassification,
    CausalLm,
}

struct Architecture {
    name: String,
    family: &'static str,
    head: HeadKind,
}

fn architecture(dir: &ModelDir, json: &Value) -> Result<Architecture, LoadError> {
    let name = json
        .get("architectures")
        .and_then(Value::as_array)
        .and_then(|list| list.first())
        .and_then(Value::as_str)
        .ok_or_else(|| LoadError::Config {
            field: "architectures".to_string(),
            reason: "missing; expected e.g. [\"LlamaForSequenceClassification\"]".to_string(),
        })?;
    let unsupported = || LoadError::UnsupportedArchitecture {
        path: dir.path("config.json"),
        architecture: name.to_string(),
        supported: FAMILIES
            .iter()
            .flat_map(|f| {
                [
                    format!("{f}ForSequenceClassification"),
                    format!("{f}ForCausalLM"),
                ]
            })
            .collect::<Vec<_>>()
            .join(", "),
    };
    let (family, head) = if let Some(family) = name.strip_suffix("ForSequenceClassification") {
        (family, HeadKind::SequenceClassification)
    } else if let Some(family) = name.strip_suffix("ForCausalLM") {
        (family, HeadKind::CausalLm)
    } else {
        return Err(unsupported());
    };
    let family = FAMILIES
        .iter()
        .find(|f| **f == family)
        .ok_or_else(unsupported)?;
    Ok(Architecture {
        name: name.to_string(),
        family,
        head,
    })
}

fn decoder_config(arch: &Architecture, json: &Value) -> Result<DecoderConfig, LoadError> {
    let config = match arch.family {
        "Llama" => llama::config(json, &arch.name)?,
        "Mistral" => mistral::config(json, &arch.name)?,
        _ => qwen2::config(json, &arch.name)?,
    };
    config.validate()?;
    Ok(config)
}

/// A model folder read as far as its config: cheap, no weights touched.
pub struct ModelSpec {
    pub dir: ModelDir,
    pub config: DecoderConfig,
    pub head: HeadKind,
    /// set when the weights come from an EasyLM streaming checkpoint instead of `dir`
    easylm: Option<crate::easylm::Checkpoint>,
}

impl ModelSpec {
    pub fn open(dir: ModelDir) -> Result<Self, LoadError> {
        let json = dir.read_json("config.json")?;
        let arch = architecture(&dir, &json)?;
        let config = decoder_config(&arch, &json)?;
        Ok(Self {
            dir,
            config,
            head: arch.head,
            easylm: None,
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
        Ok(Self {
            dir: ModelDir::open(folder)?,
            head: checkpoint.head(),
            config,
            easylm: Some(checkpoint),
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
            return checkpoint.load_weights(device, kind);
        }
        Weights::load(&self.dir.safetensors_files()?, device, kind)
    }

    pub fn load_classifier(
        &self,
        device: Device,
        kind: Kind,
    ) -> Result<SequenceClassifier, LoadError> {
        self.expect_head(HeadKind::SequenceClassification)?;
        let mut weights = self.weights(device, kind)?;
        let decoder = Decoder::load(&mut weights, &self.config)?;
        let score = weights.take(
            "score.weight",
            &[self.config.num_labels, self.config.hidden_size],
        )?;
        warn_unused(&self.dir, &weights);
        Ok(SequenceClassifier { decoder, score })
    }

    pub fn load_causal_lm(&self, device: Device, kind: Kind) -> Result<CausalLm, LoadError> {
        self.expect_head(HeadKind::CausalLm)?;
        let mut weights = self.weights(device, kind)?;
        let decoder = Decoder::load(&mut weights, &self.config)?;
        let shape = [self.config.vocab_size, self.config.hidden_size];
        let lm_head = if self.config.tie_word_embeddings {
            None
        } else {
            Some(weights.take("lm_head.weight", &shape)?)
        };
        warn_unused(&self.dir, &weights);
        Ok(CausalLm { decoder, lm_head })
    }
}

fn warn_unused(dir: &ModelDir, weights: &Weights) {
    let unused = weights.unused();
    if !unused.is_empty() {
        tracing::warn!(model = %dir.root().display(), ?unused, "checkpoint tensors not used by the model");
    }
}
