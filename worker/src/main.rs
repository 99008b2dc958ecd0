//! `worker`: score reward models (and, with the coordinator, serve sweeps). The command line
//! wires herd-engine (the scoring) into herd-agent (the coordinator's protocol).

mod allocator;
mod cuda_env;
mod devices;
mod easylm_cli;
mod engine_scorer;
mod output;
mod pref_sets;
mod rb2;

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
use herd_engine::models::quant::WeightFormat;
use herd_engine::models::ModelSpec;
use herd_engine::pooling::Pooling;
use herd_engine::provenance::{PadChoice, Provenance, TemplateSource};
use herd_engine::scorer::{request_formatter, score_pairs_with, score_texts, ScoreRequest};
use herd_rewardbench::chat::ChatFormatter;
use herd_rewardbench::dataset::generic::GenericData;
use herd_rpc::defaults::{CHAT_TEMPLATE, MAX_LENGTH};
use herd_rpc::security::WorkerSecurityArgs;
use herd_rpc::CheckpointFormat;
use herd_storage::hub::REWARD_BENCH;
use rb2::{Loaded, Schema};

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
    /// the decoder's linear weights: `full` as loaded, or `int8` (per-channel, dequantised in the
    /// matmul: less memory while scoring, scores no longer exactly RewardBench's)
    #[arg(long, value_name = "full|int8", default_value = "full")]
    weights: WeightFormat,
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
    /// memory offered for models (e.g. 40GB; default: the scoring device's total): registered
    /// with the coordinator, which leases only checkpoints whose parameters fit it
    #[arg(long, value_parser = parse_bytes)]
    memory: Option<u64>,
    #[command(flatten)]
    placement: devices::PlacementArgs,
    /// devices each scorer splits a model over: the worker runs one scorer (its own lease loop,
    /// registered as `NAME/N`) per group of this many of --devices, so 8 GPUs and 1 score 8
    /// shards at once, 8 GPUs and 2 hold a model twice one GPU's size in each of 4 scorers
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..))]
    devices_per_scorer: u32,
    /// the worker token and TLS files
    #[command(flatten)]
    security: WorkerSecurityArgs,
}

#[derive(Subcommand)]
enum Command {
    /// Score every preference pair of a dataset with a reward model (or a DPO model), or every
    /// completion of a RewardBench 2 dataset as run_v2.py does (--schema rb2).
    Score(Box<ScoreArgs>),
    /// Convert an EasyLM streaming checkpoint into a Hugging Face folder (sharded safetensors).
    Convert(Box<ConvertArgs>),
}

#[derive(Args)]
struct ScoreArgs {
    /// Hugging Face model folder (config.json + safetensors), or an EasyLM streaming checkpoint
    /// file (loaded straight into libtorch; needs --tokenizer)
    #[arg(long)]
    model: PathBuf,
    /// dataset: a JSONL, JSON or Parquet file, or hf://datasets/ORG/NAME[@REV][/PATH]
    /// (HF_HUB_OFFLINE and HF_TOKEN honoured), read as the rewardbench CLI reads it: preference
    /// data (chosen / rejected as message lists, the Hugging Face format, or RewardBench rows
    /// with prompt, chosen, rejected strings) or instruction data (messages: one score per
    /// conversation, no accuracy); with --pref-sets, the prior sets' folder or hf:// source
    #[arg(long, required_unless_present = "pref_sets")]
    dataset: Option<String>,
    /// score the messages column even when chosen / rejected are present (the CLI's
    /// --prioritize_scoring)
    #[arg(long)]
    prioritize_scoring: bool,
    /// split of an hf:// dataset (e.g. `filtered` for allenai/reward-bench, `test` for
    /// allenai/reward-bench-2)
    #[arg(long)]
    split: Option<String>,
    /// what the dataset holds: preference or instruction data as the rewardbench CLI reads it,
    /// or RewardBench 2 best-of-N rows (chosen and rejected lists of strings, scored as
    /// scripts/run_v2.py does); auto tells them apart by the columns
    #[arg(long, value_enum, default_value = "auto")]
    schema: Schema,
    /// folder with tokenizer.json / tokenizer_config.json (default: the model folder)
    #[arg(long)]
    tokenizer: Option<PathBuf>,
    /// DPO reference model folder (reward = policy minus reference log-probs)
    #[arg(long)]
    ref_model: Option<PathBuf>,
    /// reference-free DPO aggregate, used for a causal LM without --ref-model
    #[arg(long, value_enum, default_value = "avg")]
    ref_free_type: RefFreeType,
    /// FastChat template used when the tokenizer has no chat template of its own (default:
    /// tulu; the result JSON records the flag as given, as the CLI does, or tulu when it was used)
    #[arg(long)]
    chat_template: Option<String>,
    /// tokens kept per sequence (pairs: truncated from the left, as run_rm.py; rb2: from the
    /// tokenizer's truncation_side, right by default, as run_v2.py)
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
    /// where a classifier's score is read: `current` (the rightmost non-pad token, as
    /// transformers 4.47 and later) or `legacy` (transformers 4.43: first pad - 1 over
    /// RewardBench's left-padded batches of 8 examples in dataset order, chosen and rejected apart)
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
    /// auto: the dtype RewardBench fixes for the model (bf16 for INF-ORM), else bf16 on CUDA and
    /// fp32 on CPU
    #[arg(long, value_enum, default_value = "auto")]
    dtype: DtypeChoice,
    /// the decoder's linear weights: `full` as loaded, or `int8` (per-channel symmetric int8,
    /// dequantised in the matmul: less GPU memory while scoring, scores close to but not exactly
    /// RewardBench's; Llama-family decoders only)
    #[arg(long, value_name = "full|int8", default_value = "full")]
    weights: WeightFormat,
    /// CPU threads for libtorch (default: libtorch's choice)
    #[arg(long)]
    threads: Option<i32>,
    /// where the rewardbench CLI's files go: `{DIR}{model}.json`, `{DIR}{model}_outputs.jsonl`
    /// (and `{DIR}{model}_all.jsonl` with --save-all), DIR and the model path joined as the CLI
    /// joins them [default: results/, or none with -o]; rb2: run_v2.py's ./results folder, which
    /// gets eval-set/<model>.json and eval-set-scores/<model>.json (<model>: --model as given)
    #[arg(long, value_name = "DIR")]
    output_dir: Option<String>,
    /// also write the CLI's `{model}_all.jsonl` (every pair's chosen and rejected scores)
    #[arg(long)]
    save_all: bool,
    /// also write what scripts/run_rm.py (scripts/run_dpo.py for a DPO model) saves under its
    /// ./results folder: DIR/eval-set/<model>.json and DIR/eval-set-scores/<model>.json
    /// (<model>: --model as given; `<model>_ref_free` for reference-free DPO), the files a sweep
    /// writes per checkpoint; preference data only (rb2 writes run_v2.py's into --output-dir)
    #[arg(long, value_name = "DIR")]
    eval_set_dir: Option<PathBuf>,
    /// herd's own per-example scores (JSONL, every logit per row, ids) with a summary
    /// `<stem>.json` beside it (subset and section accuracies); preference data only (rb2: the
    /// results folder, as --output-dir)
    #[arg(short, long, value_name = "FILE")]
    output: Option<PathBuf>,
    #[command(flatten)]
    easylm: EasyLmArgs,
    #[command(flatten)]
    placement: devices::PlacementArgs,
    #[command(flatten)]
    pref_sets: pref_sets::PrefSetsArgs,
}

fn main() {
    // before any thread starts and before libtorch's first attention call
    cuda_env::apply();
    allocator::tune_for_tensors();
    // stderr logs; spans exported over OTLP/gRPC when OTEL_EXPORTER_OTLP_ENDPOINT is set
    let telemetry = herd_telemetry::init("herd-worker", "info");
    let cli = Cli::parse();
    let result = match cli.command {
        Some(Command::Score(args)) => score(*args),
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
    let (device, _) = args.placement.resolve(args.device)?;
    let kind = score_kind(&args, device);
    let request = score_request(&args, device, kind);
    if args.pref_sets.pref_sets {
        return score_prior_sets(&args, &request);
    }
    let source = args
        .dataset
        .as_deref()
        .context("--dataset is required (or --pref-sets)")?;
    let dataset = match rb2::load(
        source,
        args.split.as_deref(),
        args.schema,
        args.prioritize_scoring,
    )? {
        Loaded::Generic(dataset) => dataset,
        Loaded::Rb2(rows) => return score_rb2(&args, &request, source, &rows),
    };
    // the CLI's files: with -o only when --output-dir is given too
    let cli = match (&args.output_dir, &args.output) {
        (Some(dir), _) => Some(dir.clone()),
        (None, None) => Some(output::DEFAULT_OUTPUT_DIR.to_string()),
        (None, Some(_)) => None,
    };
    let names = output::CliNames::new(
        &args.model,
        args.ref_model.as_deref(),
        args.tokenizer.as_deref(),
    )?;
    let instruction = matches!(dataset.data, GenericData::Instruction(_));
    anyhow::ensure!(
        !(instruction && args.eval_set_dir.is_some()),
        "{}: instruction data (messages) has no chosen / rejected; --eval-set-dir is for \
         preference data",
        source
    );
    anyhow::ensure!(
        !(instruction && args.output.is_some()),
        "{}: instruction data (messages) has no chosen / rejected; -o is for preference data \
         (the per-conversation scores go to --output-dir)",
        source
    );
    // fail before hours of scoring, not after, if the output cannot be written (the CLI's
    // folders are made as the CLI makes them; -o's folder must exist)
    if let Some(dir) = &cli {
        for path in names.paths(dir, instruction, args.save_all) {
            output::check_writable(&path)?;
        }
    }
    if let Some(dir) = &args.eval_set_dir {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    }
    if let Some(path) = &args.output {
        for path in [path.clone(), output::summary_path(path)] {
            std::fs::File::create(&path)
                .with_context(|| format!("cannot write {}", path.display()))?;
        }
    }
    let started = Instant::now();
    let spec = open_model(&args)?;
    let formatter = request_formatter(&request, &spec)?;
    // the CLI records `args.chat_template`; herd also records the FastChat template it fell
    // back to (where the CLI would stop: no template and no --chat_template)
    let chat_template = match (&args.chat_template, &formatter) {
        (Some(name), _) => Some(name.clone()),
        (None, ChatFormatter::FastChat(t)) => Some(t.name().to_string()),
        (None, ChatFormatter::Jinja(_)) => None,
    };
    let extra_results = source.trim_end_matches('/') == REWARD_BENCH;
    let run = output::CliRun {
        names: &names,
        chat_template,
        extra_results,
        save_all: args.save_all,
    };
    match &dataset.data {
        GenericData::Preference(pairs) => {
            tracing::info!(pairs = pairs.len(), dataset = %source, ?device, ?kind, "scoring");
            let scored = score_pairs_with(&request, &spec, pairs)?;
            let seconds = started.elapsed().as_secs_f64();
            let mut written = Vec::new();
            let texts = (cli.is_some() || args.eval_set_dir.is_some())
                .then(|| output::PairTexts::new(&formatter, pairs))
                .transpose()?;
            if let (Some(dir), Some(texts)) = (&cli, &texts) {
                written.extend(run.write_preference(dir, &dataset, pairs, texts, &scored)?);
            }
            if let (Some(dir), Some(texts)) = (&args.eval_set_dir, &texts) {
                written.extend(output::write_script_results(
                    dir,
                    &names,
                    &request.chat_template,
                    pairs,
                    texts,
                    &scored,
                )?);
            }
            if let Some(path) = &args.output {
                let summary_path = output::summary_path(path);
                let summary = output::Summary::new(&request, pairs, &scored);
                output::write_scores(path, pairs, &scored)
                    .with_context(|| format!("writing {}", path.display()))?;
                output::write_summary(&summary_path, &summary)
                    .with_context(|| format!("writing {}", summary_path.display()))?;
                eprint!("{}", summary.table());
                written.extend([path.clone(), summary_path]);
            }
            eprintln!("scored {} pairs in {seconds:.1}s", pairs.len());
            for path in written {
                eprintln!("wrote {}", path.display());
            }
        }
        GenericData::Instruction(conversations) => {
            tracing::info!(
                conversations = conversations.len(),
                dataset = %source,
                ?device,
                ?kind,
                "scoring"
            );
            let texts = output::InstructionTexts::new(&formatter, conversations)?;
            let scores = score_texts(&request, &spec, texts.text.clone())?;
            let seconds = started.elapsed().as_secs_f64();
            eprintln!(
                "scored {} conversations in {seconds:.1}s",
                conversations.len()
            );
            if let Some(dir) = &cli {
                let path = run.write_instruction(dir, &dataset, texts, scores)?;
                eprintln!("wrote {}", path.display());
            }
        }
    }
    Ok(())
}

/// The engine request `worker score`'s flags describe.
fn score_request(args: &ScoreArgs, device: tch::Device, kind: tch::Kind) -> ScoreRequest {
    ScoreRequest {
        model: args.model.clone(),
        tokenizer: args.tokenizer.clone(),
        ref_model: args.ref_model.clone(),
        ref_free_type: args.ref_free_type,
        chat_template: args
            .chat_template
            .clone()
            .unwrap_or_else(|| CHAT_TEMPLATE.to_string()),
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
        weights: args.weights,
    }
}

/// `worker score` on RewardBench 2 rows: run_v2.py's scores and files.
fn score_rb2(
    args: &ScoreArgs,
    request: &ScoreRequest,
    source: &str,
    rows: &[herd_rewardbench::dataset::v2::BestOfNRow],
) -> anyhow::Result<()> {
    anyhow::ensure!(
        args.ref_model.is_none(),
        "--ref-model: RewardBench 2 (run_v2.py) scores sequence classifiers only"
    );
    anyhow::ensure!(
        args.eval_set_dir.is_none(),
        "--eval-set-dir is run_rm.py's folder for preference data; RewardBench 2 writes \
         run_v2.py's eval-set/ and eval-set-scores/ into --output-dir (or -o)"
    );
    tracing::info!(rows = rows.len(), dataset = %source, device = ?request.device, kind = ?request.kind, "scoring RewardBench 2");
    let started = Instant::now();
    let spec = open_model(args)?;
    let model_name = args.model.to_string_lossy();
    let results_dir = match (&args.output, &args.output_dir) {
        (Some(path), _) => path.clone(),
        (None, Some(dir)) => PathBuf::from(dir),
        (None, None) => PathBuf::from(output::DEFAULT_OUTPUT_DIR),
    };
    let run = rb2::score_and_write(request, &spec, source, rows, &model_name, &results_dir)?;
    eprint!("{}", rb2::table(&run.scores));
    eprintln!(
        "scored {} completions of {} prompts in {:.1}s -> {} and {}",
        run.completions,
        rows.len(),
        started.elapsed().as_secs_f64(),
        run.eval_set.display(),
        run.eval_set_scores.display()
    );
    Ok(())
}

/// `worker score --pref-sets`: the prior sets scored as run_rm.py --pref_sets does, their
/// pref-sets/ files and, with -o, herd's own per-example scores and summary.
fn score_prior_sets(args: &ScoreArgs, request: &ScoreRequest) -> anyhow::Result<()> {
    anyhow::ensure!(
        args.eval_set_dir.is_none(),
        "--eval-set-dir is for the core set; with --pref-sets the files go to --results-dir"
    );
    let prepared = pref_sets::prepare(&args.pref_sets, &args.model)?;
    let pairs = pref_sets::load_pairs(args.dataset.as_deref())?;
    tracing::info!(pairs = pairs.len(), dataset = ?args.dataset, "scoring the prior sets");
    // fail before hours of scoring, not after, if -o cannot be written
    if let Some(path) = &args.output {
        for path in [path.clone(), output::summary_path(path)] {
            std::fs::File::create(&path)
                .with_context(|| format!("cannot write {}", path.display()))?;
        }
    }
    let started = Instant::now();
    let spec = open_model(args)?;
    pref_sets::check_model(&spec, &args.model)?;
    let scored = score_pairs_with(request, &spec, &pairs)?;
    let seconds = started.elapsed().as_secs_f64();
    if let Some(path) = &args.output {
        let summary_path = output::summary_path(path);
        let summary = output::Summary::new(request, &pairs, &scored);
        output::write_scores(path, &pairs, &scored)
            .with_context(|| format!("writing {}", path.display()))?;
        output::write_summary(&summary_path, &summary)
            .with_context(|| format!("writing {}", summary_path.display()))?;
        eprintln!("wrote {} and {}", path.display(), summary_path.display());
    }
    pref_sets::write_results(&args.pref_sets, prepared, request, &spec, &pairs, &scored)?;
    eprintln!("scored {} pairs in {seconds:.1}s", pairs.len());
    Ok(())
}

/// `--dtype`, where `auto` takes the dtype RewardBench fixes for the model (REWARD_MODEL_CONFIG's
/// `torch_dtype`, e.g. bfloat16 for INF-ORM) before the device's default. A model that does not
/// open is left to the scoring path, which reports why.
fn score_kind(args: &ScoreArgs, device: tch::Device) -> tch::Kind {
    if args.dtype == DtypeChoice::Auto {
        let fixed = open_model(args)
            .ok()
            .and_then(|spec| spec.entry.quirks.dtype);
        if fixed == Some("bfloat16") {
            return tch::Kind::BFloat16;
        }
    }
    args.dtype.resolve(device)
}

/// `--model` opened as a Hugging Face folder or an EasyLM streaming checkpoint file.
fn open_model(args: &ScoreArgs) -> anyhow::Result<ModelSpec> {
    let format = CheckpointFormat::of_local(None, &args.model);
    // an EasyLM streaming checkpoint: no Hugging Face folder, no tokenizer beside it
    anyhow::ensure!(
        format == CheckpointFormat::HuggingFace || args.tokenizer.is_some(),
        "{} is a file (an EasyLM checkpoint?) and carries no tokenizer; pass --tokenizer DIR",
        args.model.display()
    );
    let mut spec = open_spec(&args.model, format, &args.easylm.options(), None)?;
    spec.load = args.placement.resolve(args.device)?.1;
    Ok(spec)
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
    let devices = args.placement.devices(args.device)?;
    let kind = args.dtype.resolve(devices[0]);
    let cache_dir = match args.cache_dir {
        Some(dir) => dir,
        None => PathBuf::from(std::env::var("HOME").context("HOME is not set; pass --cache-dir")?)
            .join(".cache/herd/checkpoints"),
    };
    let groups: Vec<&[tch::Device]> = devices.chunks(args.devices_per_scorer as usize).collect();
    let name = args.name.unwrap_or_else(host_name);
    let security = args.security.security().map_err(anyhow::Error::msg)?;
    let mut agents = Vec::new();
    for (index, group) in groups.iter().enumerate() {
        let device = group[0];
        let several = groups.len() > 1;
        let config = AgentConfig {
            coordinator: coordinator.clone(),
            // each scorer is its own worker to the coordinator, with its own cache folder (two
            // lease loops never fetch or evict in one folder)
            name: if several {
                format!("{name}/{index}")
            } else {
                name.clone()
            },
            cache_dir: if several {
                cache_dir.join(format!("scorer-{index}"))
            } else {
                cache_dir.clone()
            },
            cache_bytes: args.cache_bytes / groups.len() as u64,
            cuda_device: match device {
                tch::Device::Cuda(index) => Some(index),
                _ => None,
            },
            gpus: if device.is_cuda() {
                tch::Cuda::device_count().max(0) as u32
            } else {
                0
            },
            scorer_devices: group.len() as u32,
            bytes_per_parameter: kind.elt_size_in_bytes() as u32,
            memory_limit_bytes: args.memory,
            stream_batch: args.stream_batch as usize,
            drain_grace: std::time::Duration::from_secs(args.drain_grace_secs),
            // one endpoint per process: the first scorer's
            metrics_listen: args.metrics_listen.filter(|_| index == 0),
            security: security.clone(),
        };
        let scorer = EngineScorer {
            device,
            kind,
            limits: batch_limits(device, args.batch_tokens, args.max_batch_rows),
            share_prefix: !args.no_share_prefix,
            load: args.placement.load_options(group),
            weights: args.weights,
        };
        tracing::info!(
            coordinator = %config.coordinator,
            name = %config.name,
            devices = ?group,
            ?kind,
            cache = %config.cache_dir.display(),
            "worker starting"
        );
        agents.push(herd_agent::run(config, scorer));
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    // the scorers' lease loops run side by side; the worker ends when every one has
    let exits = runtime.block_on(futures::future::join_all(agents));
    let exit = exits.into_iter().collect::<anyhow::Result<Vec<_>>>()?;
    tracing::info!(?exit, "worker done");
    // a scoring thread abandoned by a drain must not hold the process open
    runtime.shutdown_timeout(std::time::Duration::from_secs(1));
    Ok(())
}
