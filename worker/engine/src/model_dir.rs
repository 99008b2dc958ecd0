//! A Hugging Face model folder on disk: which files hold the config, the weights and the
//! tokenizer, with clear errors for folders herd cannot read.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::error::LoadError;

pub struct ModelDir {
    root: PathBuf,
}

impl ModelDir {
    pub fn open(root: impl Into<PathBuf>) -> Result<Self, LoadError> {
        let root = root.into();
        if !root.is_dir() {
            return Err(LoadError::file(
                &root,
                "not a directory (expected a Hugging Face model folder)",
            ));
        }
        Ok(Self { root })
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.root.join(name)
    }

    pub fn read_json(&self, name: &str) -> Result<Value, LoadError> {
        let path = self.path(name);
        let text = std::fs::read_to_string(&path).map_err(|e| LoadError::file(&path, e))?;
        serde_json::from_str(&text)
            .map_err(|e| LoadError::file(&path, format!("invalid JSON: {e}")))
    }

    pub fn read_optional_json(&self, name: &str) -> Result<Option<Value>, LoadError> {
        if self.path(name).exists() {
            self.read_json(name).map(Some)
        } else {
            Ok(None)
        }
    }

    /// The safetensors files holding the weights: a single `model.safetensors`, or the shards
    /// named by `model.safetensors.index.json`.
    pub fn safetensors_files(&self) -> Result<Vec<PathBuf>, LoadError> {
        let single = self.path("model.safetensors");
        if single.is_file() {
            return Ok(vec![single]);
        }
        let index_name = "model.safetensors.index.json";
        if self.path(index_name).is_file() {
            let index = self.read_json(index_name)?;
            let weight_map = index
                .get("weight_map")
                .and_then(Value::as_object)
                .ok_or_else(|| {
                    LoadError::file(self.path(index_name), "no \"weight_map\" object")
                })?;
            let mut shards = BTreeSet::new();
            for (tensor, file) in weight_map {
                let file = file.as_str().ok_or_else(|| {
                    LoadError::file(
                        self.path(index_name),
                        format!("weight_map[{tensor:?}] is not a file name"),
                    )
                })?;
                shards.insert(self.shard_path(file)?);
            }
            if shards.is_empty() {
                return Err(LoadError::file(
                    self.path(index_name),
                    "weight_map is empty",
                ));
            }
            return Ok(shards.into_iter().collect());
        }
        if self.path("pytorch_model.bin").exists()
            || self.path("pytorch_model.bin.index.json").exists()
        {
            return Err(LoadError::BinOnly {
                path: self.root.clone(),
            });
        }
        Err(LoadError::file(
            &self.root,
            "no model.safetensors or model.safetensors.index.json",
        ))
    }

    /// A shard name from the index must stay inside the folder.
    fn shard_path(&self, file: &str) -> Result<PathBuf, LoadError> {
        let relative = Path::new(file);
        let plain = relative.components().count() == 1
            && matches!(
                relative.components().next(),
                Some(std::path::Component::Normal(_))
            );
        if !plain {
            return Err(LoadError::file(
                self.path("model.safetensors.index.json"),
                format!("shard name {file:?} is not a plain file name in the model folder"),
            ));
        }
        let path = self.root.join(relative);
        if !path.is_file() {
            return Err(LoadError::file(
                &path,
                "shard named in the index is missing",
            ));
        }
        Ok(path)
    }
}
