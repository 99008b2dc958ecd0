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

    /// The files holding the weights, in transformers' order of preference: `model.safetensors`,
    /// the shards named by `model.safetensors.index.json`, `pytorch_model.bin`, the shards named
    /// by `pytorch_model.bin.index.json`; else the folder's one `torch.save` checkpoint under
    /// another name (`*.pt`, `*.pth`, `*model.bin`: Starling-RM-7B-alpha's loader takes the
    /// first `.pt` or `model.bin` it lists).
    pub fn weight_files(&self) -> Result<Vec<PathBuf>, LoadError> {
        for (single, index) in [
            ("model.safetensors", "model.safetensors.index.json"),
            ("pytorch_model.bin", "pytorch_model.bin.index.json"),
        ] {
            if self.path(single).is_file() {
                return Ok(vec![self.path(single)]);
            }
            if self.path(index).is_file() {
                return self.shards(index);
            }
        }
        let mut others: Vec<PathBuf> = std::fs::read_dir(&self.root)
            .map_err(|e| LoadError::file(&self.root, e))?
            .filter_map(|entry| entry.ok().map(|e| e.path()))
            .filter(|path| {
                let name = path.file_name().unwrap_or_default().to_string_lossy();
                path.is_file()
                    && (name.ends_with(".pt")
                        || name.ends_with(".pth")
                        || name.ends_with("model.bin"))
            })
            .collect();
        others.sort();
        match others.len() {
            1 => Ok(others),
            0 => Err(LoadError::file(
                &self.root,
                "no weights: no model.safetensors, pytorch_model.bin, their .index.json shards, \
                 or other torch.save checkpoint (*.pt, *.pth, *model.bin)",
            )),
            _ => Err(LoadError::file(
                &self.root,
                format!(
                    "several torch.save checkpoints and no model.safetensors or pytorch_model.bin \
                     to prefer: {}; keep the one to score",
                    others
                        .iter()
                        .map(|p| p.file_name().unwrap_or_default().to_string_lossy())
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            )),
        }
    }

    /// The shards named by the `weight_map` of the index file `index_name`.
    fn shards(&self, index_name: &str) -> Result<Vec<PathBuf>, LoadError> {
        let index = self.read_json(index_name)?;
        let weight_map = index
            .get("weight_map")
            .and_then(Value::as_object)
            .ok_or_else(|| LoadError::file(self.path(index_name), "no \"weight_map\" object"))?;
        let mut shards = BTreeSet::new();
        for (tensor, file) in weight_map {
            let file = file.as_str().ok_or_else(|| {
                LoadError::file(
                    self.path(index_name),
                    format!("weight_map[{tensor:?}] is not a file name"),
                )
            })?;
            shards.insert(self.shard_path(index_name, file)?);
        }
        if shards.is_empty() {
            return Err(LoadError::file(
                self.path(index_name),
                "weight_map is empty",
            ));
        }
        Ok(shards.into_iter().collect())
    }

    /// A shard name from the index must stay inside the folder.
    fn shard_path(&self, index_name: &str, file: &str) -> Result<PathBuf, LoadError> {
        let relative = Path::new(file);
        let plain = relative.components().count() == 1
            && matches!(
                relative.components().next(),
                Some(std::path::Component::Normal(_))
            );
        if !plain {
            return Err(LoadError::file(
                self.path(index_name),
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
