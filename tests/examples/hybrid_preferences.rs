//! `herd-example`: the hybrid-preferences flow end to end on one machine, for
//! `scripts/run-example`.
//!
//! It starts fake-gcs-server on 127.0.0.1, lays out a sweep family in it as the hybrid-preferences
//! training jobs leave one (tiny EasyLM checkpoints at
//! `gs://ljm-dev/human-preferences/rm_checkpoints/helpsteer2/<run>--<hex>/streaming_params_437`
//! with their `metadata_437.pkl`, the Llama-2 tokenizer), writes one feature-count file per run
//! (`counts/regressor_feats_ID__<uuid>__SWAPS_<budget>.json`) and an evaluation set (the real
//! RewardBench rows of ../shared/data, plus short placeholder pairs, marked as such, for the
//! subsets not available offline), then runs `coord run` over the bucket (the embedded default:
//! an in-process coordinator and local worker processes) and says where the sweep CSV and the
//! per-checkpoint results are. The inputs come from herd-tests' sweep fixture, the one the
//! multi-process tests use (checkpoints written by herd-testkit's EasyLM record writer).
//!
//! Usage: herd-example --coord PATH --out DIR [--workers N] [--checkpoints N] [--rows N]

use std::path::PathBuf;
use std::process::Command;
use std::time::Instant;

use anyhow::{bail, Context};
use herd_storage::gcs::emulator::FakeGcs;
use herd_storage::gcs::GcsClient;
use herd_tests::easylm::NUM_HEADS;
use herd_tests::fixture::{SweepFixture, BUCKET, PREFIX, SWEEP, TOKENIZER_PREFIX};

struct Args {
    coord: PathBuf,
    out: PathBuf,
    workers: usize,
    checkpoints: usize,
    rows: usize,
}

const USAGE: &str =
    "usage: herd-example --coord PATH --out DIR [--workers N] [--checkpoints N] [--rows N]";

fn parse_args() -> anyhow::Result<Args> {
    let mut args = Args {
        coord: PathBuf::new(),
        out: PathBuf::new(),
        workers: 2,
        checkpoints: 3,
        rows: 20,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let value = it
            .next()
            .with_context(|| format!("{flag}: a value is missing\n{USAGE}"))?;
        let number = |v: &str| -> anyhow::Result<usize> {
            match v.parse::<usize>() {
                Ok(n) if n > 0 => Ok(n),
                _ => bail!("{flag} {v}: expected a positive integer\n{USAGE}"),
            }
        };
        match flag.as_str() {
            "--coord" => args.coord = PathBuf::from(value),
            "--out" => args.out = PathBuf::from(value),
            "--workers" => args.workers = number(&value)?,
            "--checkpoints" => args.checkpoints = number(&value)?,
            "--rows" => args.rows = number(&value)?,
            _ => bail!("unknown flag {flag}\n{USAGE}"),
        }
    }
    if args.coord.as_os_str().is_empty() || args.out.as_os_str().is_empty() {
        bail!("--coord and --out are required\n{USAGE}");
    }
    Ok(args)
}

fn main() {
    if let Err(error) = run() {
        eprintln!("herd-example: {error:#}");
        std::process::exit(1);
    }
}

fn run() -> anyhow::Result<()> {
    let args = parse_args()?;
    let started = Instant::now();
    // a fresh sweep each time (the state file would otherwise resume the previous one)
    if args.out.exists() {
        std::fs::remove_dir_all(&args.out)
            .with_context(|| format!("clearing {}", args.out.display()))?;
    }
    let inputs = args.out.join("inputs");
    let fixture = SweepFixture::new(&inputs, args.checkpoints, args.rows)?;
    let mut gcs = FakeGcs::start().context("starting fake-gcs-server")?;
    let endpoint = gcs.endpoint();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let client = GcsClient::with_endpoint(&endpoint).await?;
        fixture.upload(&client, BUCKET).await
    })?;
    eprintln!(
        "fake-gcs-server at {endpoint}: {} EasyLM checkpoints under gs://{BUCKET}/{PREFIX}, the \
         tokenizer under gs://{BUCKET}/{TOKENIZER_PREFIX}",
        fixture.checkpoints.len()
    );
    for checkpoint in &fixture.checkpoints {
        eprintln!("  {}", checkpoint.uri(BUCKET));
    }
    eprintln!(
        "evaluation set {} ({} pairs), feature counts in {}",
        fixture.eval_set.display(),
        fixture.examples,
        fixture.counts_dir.display()
    );

    let csv = format!("{SWEEP}-counts-runs.csv");
    let status = Command::new(&args.coord)
        .arg("run")
        .arg("--model")
        .arg(format!("gs://{BUCKET}/{PREFIX}"))
        .arg("--tokenizer")
        .arg(format!("gs://{BUCKET}/{TOKENIZER_PREFIX}"))
        .arg("--dataset")
        .arg(&fixture.eval_set)
        .arg("--feature-counts-dir")
        .arg(&fixture.counts_dir)
        .args(["--experiment-prefix", &format!("{SWEEP}-counts")])
        .args(["--output-csv", &csv])
        .args([
            "--name",
            SWEEP,
            "--chat-template",
            "tulu",
            "--max-length",
            "512",
        ])
        .args(["--num-heads", &NUM_HEADS.to_string()])
        .args(["--workers", &args.workers.to_string(), "--device", "cpu"])
        .args(["--shard-size", "25"])
        .arg("--out")
        .arg(&args.out)
        .env("STORAGE_EMULATOR_HOST", &endpoint)
        .env("HF_HUB_OFFLINE", "1")
        .status()
        .with_context(|| format!("running {}", args.coord.display()))?;
    gcs.stop();
    if !status.success() {
        bail!("coord run failed ({status})");
    }
    let report = args.out.join(SWEEP);
    let csv_path = report.join(&csv);
    if !csv_path.is_file() {
        bail!("coord run finished but wrote no {}", csv_path.display());
    }
    eprintln!();
    eprintln!("sweep CSV:       {}", csv_path.display());
    eprintln!(
        "per checkpoint:  {} (metrics/, eval-set/)",
        report.display()
    );
    eprintln!(
        "state file:      {}",
        args.out.join("herd-state.db").display()
    );
    eprintln!("done in {:.1}s", started.elapsed().as_secs_f64());
    Ok(())
}
