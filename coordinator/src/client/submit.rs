//! `coord submit`: a preset with its flags applied, sent to the coordinator.

use std::path::PathBuf;

use anyhow::Context;
use herd_rpc::v1::{SubmitRequest, SweepSpec};

use super::{rpc_error, ConnectArgs};
use crate::presets::{presets_path, resolve_spec, EasyLmPreset, Preset, Presets};

/// `coord submit` flags: the sweep family, the presets file, and one flag per preset field.
#[derive(clap::Args, Clone, Debug)]
pub struct SubmitArgs {
    #[command(flatten)]
    pub connect: ConnectArgs,
    /// the sweep family (a table of the presets file); also the sweep's name
    #[arg(long)]
    pub dataset: String,
    /// the presets file [default: $HERD_PRESETS, else ./herd-presets.toml when present]
    #[arg(long)]
    pub presets: Option<PathBuf>,
    /// print the sweep spec that would be submitted and exit
    #[arg(long)]
    pub dry_run: bool,
    /// plan the existing sweep's failed and cancelled checkpoints again (stored results are
    /// kept; only their unscored shards run, with no attempts counted)
    #[arg(long)]
    pub retry_failed: bool,
    /// checkpoint source (repeatable): gs://bucket/prefix, a local file or folder, hf:org/name
    #[arg(long = "checkpoints", value_name = "SOURCE")]
    pub checkpoints: Vec<String>,
    /// the evaluation set: a JSON/JSONL/Parquet file or hf://datasets/org/name
    #[arg(long)]
    pub eval_dataset: Option<String>,
    /// the split of an hf:// evaluation set
    #[arg(long)]
    pub eval_split: Option<String>,
    /// tokenizer: a local folder, gs://bucket/prefix/ or hf:org/name
    #[arg(long)]
    pub tokenizer: Option<String>,
    /// FastChat template used when the tokenizer has none (e.g. tulu)
    #[arg(long)]
    pub chat_template: Option<String>,
    /// tokens per sequence (truncated from the left)
    #[arg(long)]
    pub max_length: Option<u32>,
    /// folder of regressor_feats_ID__<uuid>__SWAPS_<n>.json files (none: name mode)
    #[arg(long)]
    pub feature_counts_dir: Option<String>,
    /// the sweep CSV's file name [default: <dataset>-counts-runs.csv]
    #[arg(long)]
    pub output_csv: Option<String>,
    /// experiment names are rm-eval-<prefix>-<run> [default: <dataset>-counts]
    #[arg(long)]
    pub experiment_prefix: Option<String>,
    /// examples per task [default: 500]
    #[arg(long)]
    pub shard_size: Option<u32>,
    /// xstest weights of the sweep CSV: legacy (250/154, the reference CSV) or current
    #[arg(long)]
    pub xstest_weighting: Option<String>,
    /// rescale budgets to a 7000-row dataset (fetch_evals_rewardbench --dataset_total_size)
    #[arg(long)]
    pub dataset_total_size: Option<u64>,
    /// the evaluation set's rows: rb1 (preference pairs) or rb2 (RewardBench 2 best-of-N rows:
    /// every completion scored, RewardBench 2 results) [default: rb1]
    #[arg(long)]
    pub schema: Option<String>,
    /// the tokenizer's own chat template: use (when it has one, as RewardBench) or ignore
    #[arg(long, value_name = "use|ignore")]
    pub tokenizer_template: Option<String>,
    /// pad id of batches and pooling: tokenizer (its pad token, else EOS), eos, or a token id
    #[arg(long, value_name = "tokenizer|eos|ID")]
    pub pad: Option<String>,
    /// classifier pooling: current (rightmost non-pad) or legacy (transformers 4.43 over
    /// RewardBench's batches of 8; shard size a multiple of 8)
    #[arg(long, value_name = "current|legacy")]
    pub pooling: Option<String>,
    /// EasyLM model size (7b, 13b, ...)
    #[arg(long)]
    pub easylm_size: Option<String>,
    #[arg(long)]
    pub easylm_num_heads: Option<i64>,
    #[arg(long)]
    pub easylm_num_kv_heads: Option<i64>,
    #[arg(long)]
    pub easylm_vocab_size: Option<i64>,
    #[arg(long)]
    pub easylm_rope_theta: Option<f64>,
    #[arg(long)]
    pub easylm_rms_norm_eps: Option<f64>,
    #[arg(long)]
    pub easylm_max_position_embeddings: Option<i64>,
    /// EasyLM LLaMA-1/2 defaults: training (rope_theta 10000) or converter-2024 (rope_theta
    /// 100000, max_position_embeddings 8192, as the fork's converter wrote them)
    #[arg(long, value_name = "training|converter-2024")]
    pub easylm_compat: Option<String>,
}

impl SubmitArgs {
    /// The flags as a preset overlay; relative local paths become absolute (current folder).
    pub fn overrides(&self) -> Preset {
        let easylm = EasyLmPreset {
            size: self.easylm_size.clone(),
            num_heads: self.easylm_num_heads,
            num_kv_heads: self.easylm_num_kv_heads,
            vocab_size: self.easylm_vocab_size,
            rope_theta: self.easylm_rope_theta,
            rms_norm_eps: self.easylm_rms_norm_eps,
            max_position_embeddings: self.easylm_max_position_embeddings,
            compat: self.easylm_compat.clone(),
        };
        let preset = Preset {
            checkpoints: (!self.checkpoints.is_empty()).then(|| self.checkpoints.clone()),
            eval_dataset: self.eval_dataset.clone(),
            eval_split: self.eval_split.clone(),
            tokenizer: self.tokenizer.clone(),
            chat_template: self.chat_template.clone(),
            max_length: self.max_length,
            feature_counts_dir: self.feature_counts_dir.clone(),
            output_csv: self.output_csv.clone(),
            experiment_prefix: self.experiment_prefix.clone(),
            shard_size: self.shard_size,
            xstest_weighting: self.xstest_weighting.clone(),
            dataset_total_size: self.dataset_total_size,
            schema: self.schema.clone(),
            tokenizer_template: self.tokenizer_template.clone(),
            pad: self.pad.clone(),
            pooling: self.pooling.clone(),
            easylm: (easylm != EasyLmPreset::default()).then_some(easylm),
        };
        match std::env::current_dir() {
            Ok(cwd) => preset.resolve_paths(&cwd),
            Err(_) => preset,
        }
    }

    /// The spec these flags submit (reads the presets file).
    pub fn spec(&self) -> anyhow::Result<SweepSpec> {
        let presets = match presets_path(self.presets.as_deref()) {
            Some(path) => Some(Presets::read(&path)?),
            None => None,
        };
        resolve_spec(&self.dataset, presets.as_ref(), self.overrides())
    }
}

/// `coord submit`.
pub async fn submit(args: SubmitArgs) -> anyhow::Result<()> {
    let spec = args.spec()?;
    if args.dry_run {
        println!("{spec:#?}");
        return Ok(());
    }
    let address = &args.connect.coordinator;
    let mut client = args.connect.client().await?;
    let response = client
        .submit(SubmitRequest {
            spec: Some(spec.clone()),
            retry_failed: args.retry_failed,
        })
        .await
        .map_err(|s| rpc_error(address, "Submit", s))
        .with_context(|| format!("sweep '{}' was not submitted", spec.name))?
        .into_inner();
    println!(
        "sweep {}: {} checkpoint(s) added, {} already present, {} task(s) added, {} examples",
        response.sweep,
        response.checkpoints_added,
        response.checkpoints_skipped,
        response.tasks_added,
        response.examples
    );
    if args.retry_failed {
        println!(
            "retried {} failed or cancelled checkpoint(s): {} task(s) planned again",
            response.checkpoints_retried, response.tasks_retried
        );
    }
    println!(
        "watch it with: coord status --sweep {} --watch",
        response.sweep
    );
    Ok(())
}
