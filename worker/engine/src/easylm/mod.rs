//! EasyLM streaming checkpoints (`streaming_params_<step>`, `streaming_train_state_<step>`)
//! read in one streaming pass, straight into the worker's libtorch model or into a Hugging Face
//! folder (`worker convert`).
//!
//! The format (shared/reference/easylm-and-peers.md, Topic A): a concatenation of msgpack records
//! `[key path, bytes]` whose bytes are flax `to_bytes(array)`: an ndarray ext (type 1) holding
//! `(shape, dtype name, raw C-order buffer)`, or flax's chunked-array map for leaves over 1 GiB.
//!
//! * [`reader`]: msgpack primitives over any `Read`, tracking the byte offset for errors.
//! * [`stream`]: records, flax ndarray headers and chunked arrays; tensor bytes are streamed,
//!   never the whole file (memory: the largest tensor that needs a transpose, plus small bands).
//! * [`mapping`]: EasyLM LLaMA names → Hugging Face names, transposes and the rotary permutation.
//! * [`sizes`]: the LLaMA size table and the config resolved from it, cross-checked against the
//!   shapes in the checkpoint.
//! * [`checkpoint`]: a header scan of a checkpoint (names, shapes, dtypes, config) and the direct
//!   load into libtorch tensors.
//! * [`convert`]: the Hugging Face folder writer (sharded safetensors, index, config, tokenizer).

pub mod checkpoint;
pub mod convert;
pub mod mapping;
pub mod reader;
pub mod shard_file;
pub mod sizes;
pub mod stream;

use std::path::{Path, PathBuf};

use thiserror::Error;

use crate::error::LoadError;

pub use checkpoint::{Checkpoint, EasyLmOptions};
pub use convert::{convert, ConvertOptions, ConvertReport, OutputDtype};
pub use sizes::{Compat, Overrides};

#[derive(Debug, Error)]
pub enum EasyLmError {
    /// The bytes are not a valid EasyLM streaming checkpoint: truncated, corrupt, or an encoding
    /// herd does not read. `offset` is where the offending item starts (or where the file ended).
    #[error("byte {offset}{}: {reason}", key_note(.key))]
    Format {
        offset: u64,
        key: Option<String>,
        reason: String,
    },
    /// A well-formed record that does not fit a LLaMA checkpoint (unknown name, wrong shape or
    /// dtype, duplicate).
    #[error("record {key:?} (byte {offset}): {reason}")]
    Tensor {
        key: String,
        offset: u64,
        reason: String,
    },
    /// The model config cannot be settled (size table vs shapes, missing flags).
    #[error("config: {0}")]
    Config(String),
    /// Reading the source or writing the output failed.
    #[error("{path}: {reason}")]
    Io { path: PathBuf, reason: String },
    /// Any of the above, in a named file.
    #[error("{path}: {error}")]
    InFile {
        path: PathBuf,
        error: Box<EasyLmError>,
    },
}

fn key_note(key: &Option<String>) -> String {
    match key {
        Some(key) => format!(" (record {key:?})"),
        None => String::new(),
    }
}

impl EasyLmError {
    pub fn io(path: impl Into<PathBuf>, error: impl ToString) -> Self {
        Self::Io {
            path: path.into(),
            reason: error.to_string(),
        }
    }

    /// Names the checkpoint file, once (I/O errors already carry their own path).
    pub fn in_file(self, path: &Path) -> Self {
        match self {
            Self::Io { .. } | Self::InFile { .. } => self,
            other => Self::InFile {
                path: path.to_path_buf(),
                error: Box::new(other),
            },
        }
    }

    /// The byte offset the error points at, when it points at one.
    pub fn offset(&self) -> Option<u64> {
        match self {
            Self::Format { offset, .. } | Self::Tensor { offset, .. } => Some(*offset),
            Self::InFile { error, .. } => error.offset(),
            _ => None,
        }
    }
}

impl From<EasyLmError> for LoadError {
    fn from(error: EasyLmError) -> Self {
        match error {
            EasyLmError::Io { path, reason } => LoadError::File { path, reason },
            EasyLmError::InFile { path, error } => LoadError::File {
                path,
                reason: format!("EasyLM checkpoint: {error}"),
            },
            other => LoadError::File {
                path: PathBuf::from("<EasyLM checkpoint>"),
                reason: other.to_string(),
            },
        }
    }
}
