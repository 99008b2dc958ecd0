//! How a checkpoint is stored, and the one place that decides it for a checkpoint on disk.

use std::fmt;
use std::path::Path;

/// How a checkpoint is stored, which decides how a worker loads it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CheckpointFormat {
    /// an EasyLM `streaming_params` file (converted in memory by the worker)
    EasyLm,
    /// a transformers folder (config.json + safetensors)
    HuggingFace,
}

impl CheckpointFormat {
    /// Every format.
    pub const ALL: &'static [CheckpointFormat] =
        &[CheckpointFormat::EasyLm, CheckpointFormat::HuggingFace];

    /// The name used on the wire (`Checkpoint.format`) and in the state file.
    pub fn as_str(self) -> &'static str {
        match self {
            CheckpointFormat::EasyLm => "easylm",
            CheckpointFormat::HuggingFace => "hf",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "easylm" => Some(CheckpointFormat::EasyLm),
            "hf" => Some(CheckpointFormat::HuggingFace),
            _ => None,
        }
    }

    /// The format of the checkpoint at `path`: the one `declared` (a lease's
    /// `Checkpoint.format`), else what the path is: a file is an EasyLM streaming checkpoint, a
    /// folder a Hugging Face model.
    pub fn of_local(declared: Option<Self>, path: &Path) -> Self {
        declared.unwrap_or(if path.is_file() {
            CheckpointFormat::EasyLm
        } else {
            CheckpointFormat::HuggingFace
        })
    }
}

impl fmt::Display for CheckpointFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_declared_format_wins_else_files_are_easylm_and_folders_hf() {
        let dir = std::env::temp_dir().join(format!("herd-rpc-format-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("streaming_params");
        std::fs::write(&file, b"").unwrap();
        let of_local = CheckpointFormat::of_local;
        assert_eq!(of_local(None, &file), CheckpointFormat::EasyLm);
        assert_eq!(of_local(None, &dir), CheckpointFormat::HuggingFace);
        let hf = CheckpointFormat::parse("hf");
        assert_eq!(of_local(hf, &file), CheckpointFormat::HuggingFace);
        let easylm = CheckpointFormat::parse("easylm");
        assert_eq!(of_local(easylm, &dir), CheckpointFormat::EasyLm);
        assert_eq!(CheckpointFormat::parse("safetensors"), None);
        for format in [CheckpointFormat::EasyLm, CheckpointFormat::HuggingFace] {
            assert_eq!(CheckpointFormat::parse(format.as_str()), Some(format));
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
