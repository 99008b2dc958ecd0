//! `worker`: score reward models (and, with the coordinator, serve sweeps). The command line
//! wires herd-engine (the scoring) into herd-agent (the coordinator's protocol).

mod allocator;
mod easylm_cli;
mod engine_scorer;
mod output;

use std::path::PathBuf;
use std::time::Instant;

use anyhow::Context;
use clap::{Args, Parser, Subcommand};

use easylm_cli::{parse_bytes, run_convert, ConvertArgs, EasyLmArgs};
use engine_scorer::{open_spec, EngineScorer};
use herd_agent::AgentConfig;
use herd_engine::batching::BatchLimits;
use herd_engine::device::{DeviceChoice, DtypeChoice};
use herd_engine::dpo::RefFreeType;
use herd_engine::pooling::Pooling;
use herd_engine::provenance::{PadChoice, Provenance, TemplateSource};
use herd_engine::scorer::{score_pairs_with, ScoreRequest};
use herd_rpc::defaults::{CHAT_TEMPLATE, MAX_LENGTH};
use herd_rpc::security::WorkerSecurityArgs;
use herd_rpc::CheckpointFormat;
use herd_storage::hub::load_pairs_from;

#[derive(Parser)]
#[command(
    name = "worker",
    version,
    about = "herd worker: scores reward models with libtorch",
    long_about = "herd worker: scores reward models with libtorch.\n\n\
        With --coordinator URL (or HERD_COORDINATOR) and no subcommand, the worker serves a \
        coordinator: it leases (checkpoint x shard) tasks, scores them and streams the rewards \
        back until the coordinator says every sweep is done or SIGTERM drains it.",
    args_conflicts_with_subcommands = true
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    agent: AgentArgs,
}

/// `worker --coordinator URL`: serve a coordinator.
#[derive(Args)]
#[command(next_help_heading = "Serving a coordinator")]
struct AgentArgs {
    /// the coordinator, e.g. http://coord:50051 (default: $HERD_COORDINATOR)
    #[arg(long, value_name = "URL")]
    coordinator: Option<String>,
    /// a human name for this worker (default: the host name)
    #[arg(long)]
    name: Option<String>,
    /// checkpoint cache (default: ~/.cache/herd/checkpoints)
    #[arg(long, value_name = "DIR")]
    cache_dir: Option<PathBuf>,
    /// most bytes the checkpoint cache keeps (least recently used evicted first)
    #[arg(long, default_value = "200GB", value_parser = parse_bytes)]
    cache_bytes: u64,
    /// auto, cpu, cuda or cuda:N
    #[arg(long, default_value = "auto")]
    device: DeviceChoice,
    #[arg(long, value_enum, default_value = "auto")]
    dtype: DtypeChoice,
    /// CPU threads for libtorch (default: libtorch's choice)
    #[arg(long)]
    threads: Option<i32>,
    /// token budget per forward pass (default 2048 on CPU, 16384 on CUDA)
    #[arg(long)]
    batch_tokens: Option<usize>,
    /// most rows per forward pass
    #[arg(long)]
    max_batch_rows: Option<usize>,
    /// rewards per ResultBatch message
    #[arg(long, default_value_t = 256, value_parser = clap::value_parser!(u32).range(1..=4096))]
    stream_batch: u32,
    /// score chosen and rejected in separate rows instead of sharing their common prefix
    #[arg(long)]
    no_share_prefix: bool,
    /// on SIGTERM, how long the current shard may take to finish before it is given back
    #[arg(long, default_value_t = 60)]
    drain_grace_secs: u64,
    /// serve Prometheus metrics at http://ADDR/metrics (e.g. 0.0.0.0:9465; default: off)
    #[arg(long, value_name = "ADDR", env = "HERD_METRICS_LISTEN")]
    metrics_listen: Option<std::net::SocketAddr>,
    /// the worker token and TLS files
    #[command(flatten)]
    security: WorkerSecurityArgs,
}

#[derive(Subcommand)]
enum Command {
    /// Score every preference pair of a dataset with a reward model (or a DPO model).
    Score(ScoreArgs),
    /// Convert an EasyLM streaming checkpoint into a Hugging Face folder (sharded safetensors).
    Convert(ConvertArgs),
}

#[derive(Args)]
struct ScoreArgs {
    /// Hugging Face model folder (config.json + safetensors), or an EasyLM streaming checkpoint
    /// file (loaded straight into libtorch; needs --tokenizer)
    #[arg(long)]
    model: PathBuf,
    /// dataset: a JSONL, JSON or Parquet file with prompt, chosen, rejected (subset, id
    /// optional), or hf://datasets/ORG/NAME[@REV][/PATH] (HF_HUB_OFFLINE and HF_TOKEN honoured)
    #[arg(long)]
    dataset: String,
    /// split of an hf:// dataset (e.g. `filtered` for allenai/reward-bench)
    #[arg(long)]
    split: Option<String>,
    /// folder with tokenizer.json / tokenizer_config.json (default: the model folder)
    #[arg(long)]
    tokenizer: Option<PathBuf>,
    /// DPO reference model folder (reward = policy minus reference log-probs)
    #[arg(long)]
    ref_model: Option<PathBuf>,
    /// reference-free DPO aggregate, used for a causal LM without --ref-model
    #[arg(long, value_enum, default_value = "avg")]
    ref_free_type: RefFreeType,
    /// FastChat template used when the tokenizer has no chat template of its own
    #[arg(long, default_value = CHAT_TEMPLATE)]
    chat_template: String,
    /// tokens kept per sequence (truncated from the left)
    #[arg(long, default_value_t = MAX_LENGTH as usize)]
    max_length: usize,
    /// the tokenizer's own chat template: `use` it when it has one (RewardBench) or `ignore` it
    /// (always --chat-template, with EOS appended, as for a tokenizer without one)
    #[arg(long, value_name = "use|ignore", default_value = "use")]
    tokenizer_template: TemplateSource,
    /// the pad id of batches and of classifier pooling: `tokenizer` (its pad token, else EOS, as
    /// RewardBench), `eos`, or a token id
    #[arg(long, value_name = "tokenizer|eos|ID", default_value = "tokenizer")]
    pad: PadChoice,
    /// where a classifier's score is read: `current` (the rightmost non-pad token, transformers
    /// >= 4.47) or `legacy` (transformers 4.43: first pad - 1 over RewardBench's left-padded
    /// batches of 8 examples in dataset order, chosen and rejected apart)
    #[arg(long, value_name = "current|legacy", default_value = "current")]
    pooling: Pooling,
    /// token budget per forward pass (rows x padded length; default 2048 on CPU, 16384 on CUDA)
    #[arg(long)]
    batch_tokens: Option<usize>,
    /// most rows per forward pass
    #[arg(long)]
    max_batch_rows: Option<usize>,
    /// score chosen and rejected in separate rows instead of sharing their common prefix
    #[arg(long)]
    no_share_prefix: bool,
    /// auto, cpu, cuda or cuda:N
    #[arg(long, default_value = "auto")]
    device: DeviceChoice,
    #[arg(long, value_enum, default_value = "auto")]
    dtype: DtypeChoice,
    /// CPU threads for libtorch (default: libtorch's choice)
    #[arg(long)]
    threads: Option<i32>,
    /// per-example scores (JSONL); a summary `<stem>.json` is written beside it
    #[arg(short, long)]
    output: PathBuf,
    #[command(flatten)]
    easylm: EasyLmArgs,
}

fn main() {
    allocator::tune_for_tensors();
    // stderr logs; spans exported over OTLP/gRPC when OTEL_EXPORTER_OTLP_ENDPOINT is set
    let telemetry = herd_telemetry::init("herd-worker", "info");
    let cli = Cli::parse();
    let result = match cli.command {
        Some(Command::Score(args)) => score(args),
        Some(Command::Convert(args)) => run_convert(&args),
        None => serve(cli.agent),
    };
    // flush the spans before exiting
    drop(telemetry);
    if let Err(error) = result {
        eprintln!("error: {error:#}");
        std::process::exit(1);
    }
}

fn score(args: ScoreArgs) -> anyhow::Result<()> {
    if let Some(threads) = args.threads {
        tch::set_num_threads(threads);
    }
    let device = args.device.resolve()?;
    let kind = args.dtype.resolve(device);
    let pairs = load_pairs_from(&args.dataset, args.split.as_deref())?;
    tracing::info!(pairs = pairs.len(), dataset = %args.dataset, ?device, ?kind, "scoring");
    let request = ScoreRequest {
        model: args.model.clone(),
        tokenizer: args.tokenizer.clone(),
        ref_model: args.ref_model.clone(),
        ref_free_type: args.ref_free_type,
        chat_template: args.chat_template.clone(),
        max_length: args.max_length,
        limits: batch_limits(device, args.batch_tokens, args.max_batch_rows),
        share_prefix: !args.no_share_prefix,
        device,
        kind,
        provenance: Provenance {
            template: args.tokenizer_template,
            pad: args.pad,
        },
        pooling: args.pooling,
    };
    // fail before hours of scoring, not after, if the output cannot be written
    let summary_path = output::summary_path(&args.output);
    for path in [&args.output, &summary_path] {
        std::fs::File::create(path).with_context(|| format!("cannot write {}", path.display()))?;
    }
    let started = Instant::now();
    let format = CheckpointFormat::of_local(None, &args.model);
    // an EasyLM streaming checkpoint: no Hugging Face folder, no tokenizer beside it
    anyhow::ensure!(
        format == CheckpointFormat::HuggingFace || args.tokenizer.is_some(),
        "{} is a file (an EasyLM checkpoint?) and carries no tokenizer; pass --tokenizer DIR",
        args.model.display()
    );
    let spec = open_spec(&args.model, format, &args.easylm.options())?;
    let scored = score_pairs_with(&request, &spec, &pairs)?;
    let seconds = started.elapsed().as_secs_f64();
    let summary = output::Summary::new(&request, &pairs, &scored);
    output::write_scores(&args.output, &pairs, &scored)
        .with_context(|| format!("writing {}", args.output.display()))?;
    output::write_summary(&summary_path, &summary)
        .with_context(|| format!("writing {}", summary_path.display()))?;
    eprint!("{}", summary.table());
    eprintln!(
        "scored {} pairs in {seconds:.1}s -> {} and {}",
        pairs.len(),
        args.output.display(),
        summary_path.display()
    );
    Ok(())
}

/// `--batch-tokens` and `--max-batch-rows` over the device's defaults.
fn batch_limits(device: tch::Device, tokens: Option<usize>, rows: Option<usize>) -> BatchLimits {
    let defaults = BatchLimits::for_device(device);
    BatchLimits {
        max_batch_tokens: tokens.unwrap_or(defaults.max_batch_tokens),
        max_batch_rows: rows.unwrap_or(defaults.max_batch_rows),
    }
}

fn host_name() -> String {
    std::env::var("HOSTNAME")
        .ok()
        .filter(|h| !h.is_empty())
        .or_else(|| {
            std::fs::read_to_string("/etc/hostname")
                .ok()
                .map(|h| h.trim().to_string())
                .filter(|h| !h.is_empty())
        })
        .unwrap_or_else(|| "worker".to_string())
}

fn serve(args: AgentArgs) -> anyhow::Result<()> {
    let coordinator = args
        .coordinator
        .or_else(|| std::env::var("HERD_COORDINATOR").ok())
        .filter(|c| !c.is_empty())
        .context(
            "nothing to do: pass --coordinator URL (or set HERD_COORDINATOR) to serve a \
             coordinator, or a subcommand (score, convert; see --help)",
        )?;
    if let Some(threads) = args.threads {
        tch::set_num_threads(threads);
    }
    let device = args.device.resolve()?;
    let kind = args.dtype.resolve(device);
    let cache_dir = match args.cache_dir {
        Some(dir) => dir,
        None => PathBuf::from(std::env::var("HOME").context("HOME is not set; pass --cache-dir")?)
            .join(".cache/herd/checkpoints"),
    };
    let config = AgentConfig {
        coordinator,
        name: args.name.unwrap_or_else(host_name),
        cache_dir,
        cache_bytes: args.cache_bytes,
        cuda_device: match device {
            tch::Device::Cuda(index) => Some(index),
            _ => None,
        },
        gpus: if device.is_cuda() {
            tch::Cuda::device_count().max(0) as u32
        } else {
            0
        },
        stream_batch: args.stream_batch as usize,
        drain_grace: std::time::Duration::from_secs(args.drain_grace_secs),
        metrics_listen: args.metrics_listen,
        security: args.security.security().map_err(anyhow::Error::msg)?,
    };
    let scorer = EngineScorer {
        device,
        kind,
        limits: batch_limits(device, args.batch_tokens, args.max_batch_rows),
        share_prefix: !args.no_share_prefix,
    };
    tracing::info!(
        coordinator = %config.coordinator,
        name = %config.name,
        ?device,
        ?kind,
        cache = %config.cache_dir.display(),
        "worker starting"
    );
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    let exit = runtime.block_on(herd_agent::run(config, scorer))?;
    tracing::info!(?exit, "worker done");
    // a scoring thread abandoned by a drain must not hold the process open
    runtime.shutdown_timeout(std::time::Duration::from_secs(1));
    Ok(())
}
