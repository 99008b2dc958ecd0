//! Command-line flags for EasyLM checkpoints, shared by `worker score` and `worker convert`.

use std::path::PathBuf;

use clap::Args;

use herd_engine::easylm::checkpoint::EasyLmOptions;
use herd_engine::easylm::convert::{self, ConvertOptions, OutputDtype, DEFAULT_SHARD_BYTES};
use herd_engine::easylm::sizes::{parse_rope_scaling, Compat, Overrides};
use herd_engine::models::config::RopeScaling;

fn rope_scaling_flag(text: &str) -> Result<RopeScaling, String> {
    parse_rope_scaling(text)
}

/// How to read an EasyLM checkpoint's config (ignored for Hugging Face folders).
#[derive(Args, Clone, Debug, Default)]
#[command(next_help_heading = "EasyLM checkpoints")]
pub struct EasyLmArgs {
    /// LLaMA size of an EasyLM checkpoint: 1b, 3b, 7b, 13b, 30b, 65b, 70b, 8b3, 70b3, 8b31,
    /// 70b31 (default: recognised from the tensor shapes)
    #[arg(long = "size", visible_alias = "easylm-size", value_name = "SIZE")]
    pub size: Option<String>,
    /// attention heads (needed for shapes outside the size table)
    #[arg(long)]
    pub num_heads: Option<i64>,
    /// key/value heads (default: the size's, or inferred from wk's shape)
    #[arg(long)]
    pub num_kv_heads: Option<i64>,
    /// accept a vocabulary other than the size's (must equal the embedding's rows)
    #[arg(long)]
    pub vocab_size: Option<i64>,
    /// rotary base (default 10000 for LLaMA-1/2 sizes, 500000 for LLaMA-3)
    #[arg(long)]
    pub rope_theta: Option<f64>,
    /// RMSNorm epsilon (default as EasyLM trained: 1e-6 up to 30b, 1e-5 for 65b/70b)
    #[arg(long)]
    pub rms_norm_eps: Option<f64>,
    /// max_position_embeddings written to config.json (4096 LLaMA-1/2, 8192 LLaMA-3, 131072 3.1)
    #[arg(long)]
    pub max_position_embeddings: Option<i64>,
    /// rope scaling: `none` or transformers' JSON, e.g. '{"rope_type":"llama3","factor":8.0,...}'
    #[arg(long, value_parser = rope_scaling_flag, value_name = "JSON|none")]
    pub rope_scaling: Option<RopeScaling>,
    /// pad token id for config.json (default 0 = <unk> for LLaMA-1/2, 128255 for LLaMA-3)
    #[arg(long)]
    pub pad_token_id: Option<i64>,
    /// bos token id for config.json (default 1 for LLaMA-1/2, 128000 for LLaMA-3)
    #[arg(long)]
    pub bos_token_id: Option<i64>,
    /// eos token id for config.json (default 2 for LLaMA-1/2, 128001 for LLaMA-3)
    #[arg(long)]
    pub eos_token_id: Option<i64>,
    /// LLaMA-1/2 defaults: `training` (rope_theta 10000, as EasyLM trained) or `converter-2024`
    /// (rope_theta 100000, max_position_embeddings 8192, as the EasyLM fork's converter wrote
    /// them from 2024; reproduces scores of models converted by it)
    #[arg(
        long,
        value_name = "training|converter-2024",
        default_value = "training"
    )]
    pub easylm_compat: Compat,
}

impl EasyLmArgs {
    pub fn options(&self) -> EasyLmOptions {
        EasyLmOptions {
            size: self.size.clone(),
            overrides: Overrides {
                num_heads: self.num_heads,
                num_kv_heads: self.num_kv_heads,
                vocab_size: self.vocab_size,
                rope_theta: self.rope_theta,
                rms_norm_eps: self.rms_norm_eps,
                max_position_embeddings: self.max_position_embeddings,
                rope_scaling: self.rope_scaling.clone(),
                pad_token_id: self.pad_token_id,
                bos_token_id: self.bos_token_id,
                eos_token_id: self.eos_token_id,
                compat: self.easylm_compat,
            },
        }
    }
}

/// `5GB`, `500MB`, `2GiB`, `1000000` (bytes); decimal units as transformers' `max_shard_size`.
pub fn parse_bytes(text: &str) -> Result<u64, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let number: f64 = number
        .parse()
        .map_err(|_| format!("{text:?} is not a size (e.g. 5GB, 500MB)"))?;
    let scale = match unit.trim().to_ascii_uppercase().as_str() {
        "" | "B" => 1.0,
        "KB" => 1e3,
        "MB" => 1e6,
        "GB" => 1e9,
        "TB" => 1e12,
        "KIB" => 1024.0,
        "MIB" => 1024.0 * 1024.0,
        "GIB" => 1024.0 * 1024.0 * 1024.0,
        other => {
            return Err(format!(
                "unknown unit {other:?} (B, KB, MB, GB, KiB, MiB, GiB)"
            ))
        }
    };
    let bytes = number * scale;
    if !(1.0..=1e18).contains(&bytes) {
        return Err(format!("{text:?} is out of range"));
    }
    Ok(bytes as u64)
}

/// `worker convert`: an EasyLM checkpoint to a Hugging Face folder.
#[derive(Args, Clone, Debug)]
pub struct ConvertArgs {
    /// EasyLM streaming checkpoint (streaming_params_<step> or streaming_train_state_<step>)
    pub src: PathBuf,
    /// output folder (created; must not hold a model unless --overwrite)
    #[arg(short, long)]
    pub output: PathBuf,
    /// tokenizer to copy: a folder (tokenizer.json, tokenizer_config.json, ...) or a
    /// SentencePiece tokenizer.model (written with EasyLM's tokenizer_config.json)
    #[arg(long)]
    pub tokenizer: Option<PathBuf>,
    /// element type of the written tensors
    #[arg(long, value_enum, default_value = "bf16")]
    pub dtype: OutputDtype,
    /// largest shard (transformers' max_shard_size)
    #[arg(long, value_parser = parse_bytes, default_value = "5GB")]
    pub shard_size: u64,
    /// replace a model already in the output folder
    #[arg(long)]
    pub overwrite: bool,
    /// no progress bar
    #[arg(long)]
    pub no_progress: bool,
    #[command(flatten)]
    pub easylm: EasyLmArgs,
}

/// Bytes in decimal units, as transformers sizes shards.
fn human(bytes: f64) -> String {
    match bytes {
        b if b >= 1e9 => format!("{:.2} GB", b / 1e9),
        b if b >= 1e6 => format!("{:.1} MB", b / 1e6),
        b if b >= 1e3 => format!("{:.1} kB", b / 1e3),
        b => format!("{b:.0} B"),
    }
}

pub fn run_convert(args: &ConvertArgs) -> anyhow::Result<()> {
    let options = ConvertOptions {
        easylm: args.easylm.options(),
        dtype: args.dtype,
        shard_bytes: if args.shard_size == 0 {
            DEFAULT_SHARD_BYTES
        } else {
            args.shard_size
        },
        tokenizer: args.tokenizer.clone(),
        overwrite: args.overwrite,
        progress: !args.no_progress,
    };
    let report = convert::convert(&args.src, &args.output, &options)?;
    let c = &report.config;
    eprintln!(
        "converted {} ({} tensors, {:.1}M parameters, size {}, {} heads / {} kv heads, {}{}) in {:.2}s: \
         read {} at {}/s, wrote {} -> {}",
        args.src.display(),
        report.tensors,
        report.parameters as f64 / 1e6,
        c.size.unwrap_or("custom"),
        c.num_heads,
        c.num_kv_heads,
        c.architecture(),
        if report.skipped_records > 0 {
            format!(", {} train-state records skipped", report.skipped_records)
        } else {
            String::new()
        },
        report.seconds,
        human(report.bytes_read as f64),
        human(report.bytes_per_second()),
        human(report.bytes_written as f64),
        args.output.display()
    );
    eprintln!(
        "largest tensor {}, converter buffers peaked at {}",
        human(report.largest_tensor_bytes as f64),
        human(report.peak_buffer_bytes as f64)
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn byte_sizes() {
        assert_eq!(parse_bytes("5GB"), Ok(5_000_000_000));
        assert_eq!(parse_bytes("500MB"), Ok(500_000_000));
        assert_eq!(parse_bytes("2GiB"), Ok(2 << 30));
        assert_eq!(parse_bytes("4096"), Ok(4096));
        assert!(parse_bytes("5 parsecs").is_err());
        assert!(parse_bytes("0").is_err());
    }
}
