//! Llama-family models in libtorch. One module per architecture turns its config.json into the
//! shared decoder shape; `decoder` and `heads` hold the computation.

pub mod backbone;
pub mod config;
pub mod decoder;
pub mod gemma2;
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
pub use backbone::Backbone;
use config::DecoderConfig;
pub use heads::{CausalLm, LinearHead, RewardHead, SequenceClassifier};

/// The architectures herd runs. Each module turns its config.json into the shared decoder shape.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Family {
    Llama,
    Mistral,
    Qwen2,
    Gemma2,
}

impl Family {
    pub const ALL: [Family; 4] = [
        Family::Llama,
        Family::Mistral,
        Family::Qwen2,
        Family::Gemma2,
    ];

    /// The prefix of the family's transformers classes (`LlamaForSequenceClassification`).
    pub fn name(self) -> &'static str {
        match self {
            Family::Llama => "Llama",
            Family::Mistral => "Mistral",
            Family::Qwen2 => "Qwen2",
            Family::Gemma2 => "Gemma2",
        }
    }

    /// The decoder shape of `json`, a config.json of this family.
    fn decoder_config(self, json: &Value, architecture: &str) -> Result<DecoderConfig, LoadError> {
        match self {
            Family::Llama => llama::config(json, architecture),
            Family::Mistral => mistral::config(json, architecture),
            Family::Qwen2 => qwen2::config(json, architecture),
            Family::Gemma2 => gemma2::config(json, architecture),
        }
    }
}

/// What a checkpoint's `architectures` entry asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HeadKind {
    SequenceClassification,
    CausalLm,
}

impl HeadKind {
    pub const ALL: [HeadKind; 2] = [HeadKind::SequenceClassification, HeadKind::CausalLm];

    /// The suffix of the transformers classes with this head (`LlamaForCausalLM`).
    fn class_suffix(self) -> &'static str {
        match self {
            HeadKind::SequenceClassification => "ForSequenceClassification",
            HeadKind::CausalLm => "ForCausalLM",
        }
    }
}

/// A transformers class herd runs: `{family}{head suffix}`.
struct Architecture {
    name: String,
    family: Family,
    head: HeadKind,
}

impl Architecture {
    /// The first `architectures` entry of a config.json; anything but a supported class is an
    /// error naming it and the supported ones.
    fn of(dir: &ModelDir, json: &Value) -> Result<Self, LoadError> {
        let name = json
            .get("architectures")
            .and_then(Value::as_array)
            .and_then(|list| list.first())
            .and_then(Value::as_str)
            .ok_or_else(|| LoadError::Config {
                field: "architectures".to_string(),
                reason: "missing; expected e.g. [\"LlamaForSequenceClassification\"]".to_string(),
            })?;
        let supported = Family::ALL.iter().flat_map(|family| {
            HeadKind::ALL.iter().map(move |head| {
                (
                    *family,
                    *head,
                    format!("{}{}", family.name(), head.class_suffix()),
                )
            })
        });
        let mut listed = Vec::new();
        for (family, head, class) in supported {
            if class == name {
                return Ok(Architecture {
                    name: class,
                    family,
                    head,
                });
            }
            listed.push(class);
        }
        Err(LoadError::UnsupportedArchitecture {
            path: dir.path("config.json"),
            architecture: name.to_string(),
            supported: listed.join(", "),
        })
    }

    fn decoder_config(&self, json: &Value) -> Result<DecoderConfig, LoadError> {
        let config = self.family.decoder_config(json, &self.name)?;
        config.validate()?;
        Ok(config)
    }
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
        let arch = Architecture::of(&dir, &json)?;
        let config = arch.decoder_config(&json)?;
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
        let weights = self.weights(device, kind)?;
        let model = SequenceClassifier::load(&self.config, &weights.root())?;
        warn_unused(&self.dir, &weights);
        Ok(model)
    }

    pub fn load_causal_lm(&self, device: Device, kind: Kind) -> Result<CausalLm, LoadError> {
        self.expect_head(HeadKind::CausalLm)?;
        let weights = self.weights(device, kind)?;
        let model = CausalLm::load(&self.config, &weights.root())?;
        warn_unused(&self.dir, &weights);
        Ok(model)
    }
}

fn warn_unused(dir: &ModelDir, weights: &Weights) {
    let unused = weights.unused();
    if !unused.is_empty() {
        tracing::warn!(model = %dir.root().display(), ?unused, "checkpoint tensors not used by the model");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn architecture(name: &str) -> Result<Architecture, LoadError> {
        let dir = ModelDir::open(std::env::temp_dir()).unwrap();
        Architecture::of(&dir, &serde_json::json!({ "architectures": [name] }))
    }

    #[test]
    fn every_supported_class_names_its_family_and_head() {
        for family in Family::ALL {
            for head in HeadKind::ALL {
                let name = format!("{}{}", family.name(), head.class_suffix());
                let arch = architecture(&name).unwrap();
                assert_eq!((arch.family, arch.head), (family, head), "{name}");
            }
        }
    }

    #[test]
    fn an_unknown_class_is_named_with_the_supported_ones() {
        // a known family prefix with an unknown head, and an unknown family: no fall-through
        for name in [
            "Qwen2ForTokenClassification",
            "GPTNeoXForSequenceClassification",
        ] {
            let error = architecture(name).err().unwrap().to_string();
            assert!(error.contains(name), "{error}");
            assert!(
                error.contains("LlamaForSequenceClassification, LlamaForCausalLM, Mistral"),
                "{error}"
            );
            assert!(error.contains("Qwen2ForCausalLM"), "{error}");
        }
    }
}
