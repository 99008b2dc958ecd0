//! `coord run` flags, turned into a [`LocalRun`]: the sweep spec plus the local workers.

use std::path::PathBuf;

use herd_rpc::v1::{EasyLmConfig, Scoring, SweepSpec};
use herd_rpc::EvalSchema;

use crate::run::{LocalRun, LocalWorkers};

#[derive(clap::Args, Clone, Debug)]
pub struct RunArgs {
    /// a checkpoint: HF folder, EasyLM streaming_params file, folder of checkpoints,
    /// gs://bucket/prefix (STORAGE_EMULATOR_HOST honoured) or hf:org/name; repeat for several
    #[arg(long = "model", required = true)]
    pub models: Vec<String>,
    /// evaluation set: JSONL / JSON / Parquet with prompt, chosen, rejected, subset (id
    /// optional), or hf://datasets/ORG/NAME
    #[arg(long)]
    pub dataset: String,
    #[arg(long, default_value = "")]
    pub split: String,
    /// tokenizer folder (local, gs://.../ or hf:org/name); default: each model's own folder
    #[arg(long, default_value = "")]
    pub tokenizer: String,
    /// FastChat template used when the tokenizer has no chat template
    #[arg(long, default_value = herd_rpc::defaults::CHAT_TEMPLATE)]
    pub chat_template: String,
    #[arg(long, default_value_t = herd_rpc::defaults::MAX_LENGTH)]
    pub max_length: u32,
    /// the sweep's name (and the folder its reports go to under --out)
    #[arg(long, default_value = "run")]
    pub name: String,
    /// state file, reports and worker logs go here
    #[arg(long, default_value = "out/run")]
    pub out: PathBuf,
    /// local worker processes
    #[arg(long, default_value_t = 1)]
    pub workers: usize,
    /// the worker binary (default: `worker` next to this `coord`)
    #[arg(long)]
    pub worker_bin: Option<PathBuf>,
    /// passed to each worker: auto, cpu, cuda or cuda:N
    #[arg(long, default_value = "auto")]
    pub device: String,
    /// extra worker flags, e.g. --worker-arg=--dtype=fp32 (repeatable)
    #[arg(long = "worker-arg", allow_hyphen_values = true)]
    pub worker_args: Vec<String>,
    /// feature-count folder: the CSV joins each run's counts by uuid (else name mode)
    #[arg(long, default_value = "")]
    pub feature_counts_dir: String,
    /// experiment names become rm-eval-<prefix>-<run>
    #[arg(long, default_value = "")]
    pub experiment_prefix: String,
    #[arg(long, default_value = "")]
    pub output_csv: String,
    /// examples per task
    #[arg(long, default_value_t = 500)]
    pub shard_size: u32,
    /// legacy (xstest 250/154, the reference CSV) or current
    #[arg(long, default_value = "legacy")]
    pub xstest_weighting: String,
    /// the evaluation set's rows: rb1 (preference pairs) or rb2 (RewardBench 2 best-of-N rows:
    /// every completion scored, RewardBench 2 results)
    #[arg(long, default_value = "rb1", value_parser = parse_schema)]
    pub schema: EvalSchema,
    /// EasyLM checkpoints: LLaMA size (7b, 13b, ...)
    #[arg(long, default_value = "")]
    pub size: String,
    /// EasyLM checkpoints outside the size table: attention heads
    #[arg(long)]
    pub num_heads: Option<i64>,
    #[arg(long)]
    pub num_kv_heads: Option<i64>,
    #[command(flatten)]
    pub ci: crate::client::summary::CiArgs,
}

/// `--schema`: [`EvalSchema::parse`].
fn parse_schema(text: &str) -> Result<EvalSchema, String> {
    EvalSchema::parse(text)
}

impl RunArgs {
    pub fn into_run(self) -> LocalRun {
        LocalRun {
            spec: self.spec(),
            ci: self.ci.clone(),
            out: self.out,
            workers: LocalWorkers {
                count: self.workers,
                bin: self.worker_bin,
                device: self.device,
                extra_args: self.worker_args,
            },
        }
    }

    fn spec(&self) -> SweepSpec {
        SweepSpec {
            name: self.name.clone(),
            checkpoints: self.models.clone(),
            eval_dataset: self.dataset.clone(),
            eval_split: self.split.clone(),
            scoring: Some(Scoring {
                tokenizer: self.tokenizer.clone(),
                chat_template: self.chat_template.clone(),
                max_length: self.max_length,
                easylm: Some(EasyLmConfig {
                    size: self.size.clone(),
                    num_heads: self.num_heads,
                    num_kv_heads: self.num_kv_heads,
                    ..EasyLmConfig::default()
                }),
                schema: crate::presets::schema_field(self.schema),
                ..Scoring::default()
            }),
            feature_counts_dir: self.feature_counts_dir.clone(),
            output_csv: if self.output_csv.is_empty() {
                format!("{}.csv", self.name)
            } else {
                self.output_csv.clone()
            },
            experiment_prefix: self.experiment_prefix.clone(),
            shard_size: self.shard_size,
            xstest_weighting: self.xstest_weighting.clone(),
            dataset_total_size: 0,
        }
    }
}
