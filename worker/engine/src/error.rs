//! Errors that name the input and the reason. Every failure a researcher can cause with a bad
//! model folder, tokenizer or dataset ends here, never in a panic.

use std::path::PathBuf;

use thiserror::Error;

#[derive(Debug, Error)]
pub enum LoadError {
    #[error("{path}: {reason}")]
    File { path: PathBuf, reason: String },
    #[error("config.json: field {field:?}: {reason}")]
    Config { field: String, reason: String },
    #[error("{path}: architecture {architecture:?} is not supported (supported: {supported})")]
    UnsupportedArchitecture {
        path: PathBuf,
        architecture: String,
        supported: String,
    },
    #[error("weights: tensor {name:?}: {reason}")]
    Tensor { name: String, reason: String },
}

impl LoadError {
    pub fn file(path: impl Into<PathBuf>, reason: impl ToString) -> Self {
        Self::File {
            path: path.into(),
            reason: reason.to_string(),
        }
    }

    pub fn tensor(name: &str, reason: impl ToString) -> Self {
        Self::Tensor {
            name: name.to_string(),
            reason: reason.to_string(),
        }
    }
}
