//! `worker score --schema rb2`: RewardBench 2 as `scripts/run_v2.py` (allenai/reward-bench HEAD
//! `05a9005`) runs it: every completion of every best-of-N row scored by a sequence classifier,
//! per-subset scores (best-of-N accuracy; the Ties composite for Ties), and the two files
//! `save_to_hub` writes under `./results/`: `eval-set/{model}.json` and
//! `eval-set-scores/{model}.json`, byte for byte, under the `--output` folder.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use anyhow::Context;
use clap::ValueEnum;

use herd_engine::models::ModelSpec;
use herd_engine::scorer::{score_best_of_n_with, ScoreRequest, ScoredBestOfN};
use herd_rewardbench::dataset::generic::{GenericDataset, GenericRow};
use herd_rewardbench::dataset::v2::BestOfNRow;
use herd_rewardbench::files::{EvalSetResults, EvalSetScores, ResultsKind};
use herd_rewardbench::v2::{rb2_scores, Rb2Scores, ScoredRow, TiesVariant, SUBSETS_V2};
use herd_storage::hub::{load_best_of_n_from, load_source, HubOptions};

/// Which rows a dataset holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Schema {
    /// from the columns: preference or instruction data if the rewardbench CLI reads it as such,
    /// else RewardBench 2 rows
    Auto,
    /// preference data (prompt/chosen/rejected strings or message lists) or instruction data
    /// (messages), as the rewardbench CLI's load_and_process_dataset reads them
    Pairs,
    /// RewardBench 2 best-of-N rows: prompt, chosen and rejected lists, num_correct, subset
    Rb2,
}

/// A loaded dataset of either schema.
pub enum Loaded {
    Generic(GenericDataset),
    Rb2(Vec<BestOfNRow>),
}

/// The rewardbench CLI's reading of `source` (`prioritize_scoring`: its --prioritize_scoring).
fn load_generic(
    source: &str,
    split: Option<&str>,
    prioritize_scoring: bool,
) -> anyhow::Result<GenericDataset> {
    let (rows, resolved) = load_source::<GenericRow>(source, split, &HubOptions::from_env())?;
    for warning in &resolved.warnings {
        eprintln!("warning: {warning}");
    }
    Ok(GenericDataset::from_rows(source, rows, prioritize_scoring)?)
}

/// Loads `source` as `schema`; `Auto` tries the CLI's reading, then RewardBench 2 rows, and
/// reports both reasons when neither fits (a file mixing the two fits neither).
pub fn load(
    source: &str,
    split: Option<&str>,
    schema: Schema,
    prioritize_scoring: bool,
) -> anyhow::Result<Loaded> {
    match schema {
        Schema::Pairs => Ok(Loaded::Generic(load_generic(
            source,
            split,
            prioritize_scoring,
        )?)),
        Schema::Rb2 => Ok(Loaded::Rb2(load_best_of_n_from(source, split)?)),
        Schema::Auto => match load_generic(source, split, prioritize_scoring) {
            Ok(dataset) => Ok(Loaded::Generic(dataset)),
            Err(as_pairs) => match load_best_of_n_from(source, split) {
                Ok(rows) => Ok(Loaded::Rb2(rows)),
                Err(as_rb2) => anyhow::bail!(
                    "{source}: neither preference / instruction data nor RewardBench 2 rows (pass \
                     --schema pairs or --schema rb2 to see one reason):\n  as preference data: \
                     {as_pairs:#}\n  as RewardBench 2 rows: {as_rb2:#}"
                ),
            },
        },
    }
}

/// The rows as the scorer of the Ties composite and the files see them.
fn scored_rows(rows: &[BestOfNRow], scores: &[Vec<f32>]) -> Vec<ScoredRow> {
    rows.iter()
        .zip(scores)
        .map(|(row, scores)| ScoredRow {
            id: row.id.clone(),
            // checked by `check_rows`
            subset: row.subset.clone().unwrap_or_default(),
            num_correct: row.num_correct,
            scores: scores.iter().map(|&x| f64::from(x)).collect(),
        })
        .collect()
}

/// What run_v2.py needs before it scores: a subset per row, and Ties ids and groups it can score
/// (checked here on zero scores, since where the Ties scorer raises depends on the layout only).
fn check_rows(source: &str, rows: &[BestOfNRow]) -> anyhow::Result<()> {
    anyhow::ensure!(!rows.is_empty(), "{source}: no rows");
    for (i, row) in rows.iter().enumerate() {
        anyhow::ensure!(
            row.subset.is_some(),
            "{source}: row {} (id {}): no \"subset\" (run_v2.py scores each subset apart)",
            i + 1,
            row.id
        );
    }
    let zeros: Vec<Vec<f32>> = rows
        .iter()
        .map(|r| vec![0.0; r.total_completions()])
        .collect();
    rb2_scores(&scored_rows(rows, &zeros), TiesVariant::Head)
        .with_context(|| format!("{source}: the Ties subset cannot be scored"))?;
    Ok(())
}

/// The files written and the scores.
pub struct Rb2Run {
    pub scores: Rb2Scores,
    pub eval_set: PathBuf,
    pub eval_set_scores: PathBuf,
    pub completions: usize,
}

/// Scores `rows` and writes run_v2.py's two files under `results_dir` (run_v2's `./results`),
/// named by `model_name` (run_v2's `args.model`).
pub fn score_and_write(
    request: &ScoreRequest,
    spec: &ModelSpec,
    source: &str,
    rows: &[BestOfNRow],
    model_name: &str,
    results_dir: &Path,
) -> anyhow::Result<Rb2Run> {
    check_rows(source, rows)?;
    // fail before scoring, not after, if the results folder cannot be made
    std::fs::create_dir_all(results_dir)
        .with_context(|| format!("cannot create {}", results_dir.display()))?;
    let scored: ScoredBestOfN = score_best_of_n_with(request, spec, rows)?;
    write(rows, &scored, model_name, results_dir)
}

/// The subset scores and the two files from per-completion scores.
pub fn write(
    rows: &[BestOfNRow],
    scored: &ScoredBestOfN,
    model_name: &str,
    results_dir: &Path,
) -> anyhow::Result<Rb2Run> {
    let scored_rows = scored_rows(rows, &scored.scores);
    let scores = rb2_scores(&scored_rows, TiesVariant::Head)?;
    let eval_set = EvalSetResults::best_of_n(model_name, &scored.chat_template, &scores)
        .write_eval_set(results_dir, ResultsKind::EvalSet, model_name)?;
    let eval_set_scores = EvalSetScores::best_of_n(
        &scored_rows,
        &scored.texts,
        model_name,
        &scored.chat_template,
    )?
    .write(results_dir, ResultsKind::EvalSetScores, model_name)?;
    Ok(Rb2Run {
        scores,
        eval_set,
        eval_set_scores,
        completions: scored.scores.iter().map(Vec::len).sum(),
    })
}

/// A plain-text table for the terminal: every subset, then the RewardBench 2 score (the mean of
/// the six subsets) when all six are present.
pub fn table(scores: &Rb2Scores) -> String {
    let mut out = String::new();
    for (subset, score) in &scores.subsets {
        let _ = writeln!(out, "{subset:<28} {score:.4}");
    }
    if let Some(ties) = &scores.ties {
        let _ = writeln!(
            out,
            "  Ties: ref accuracy {:.4}, tied accuracy {:.4}, correctness preferred {:.4} (hard {:.4}), margin {:.4}",
            ties.ref_accuracy,
            ties.tied_accuracy,
            ties.correctness_preferred,
            ties.correctness_preferred_hard,
            ties.margin
        );
    }
    match scores.score() {
        Some(score) => {
            let _ = writeln!(out, "RewardBench 2 score (mean of 6 subsets) {score:.4}");
        }
        None => {
            let _ = writeln!(
                out,
                "RewardBench 2 score: needs all of {}; missing {}",
                SUBSETS_V2.join(", "),
                scores.missing.join(", ")
            );
        }
    }
    if !scores.ignored.is_empty() {
        let _ = writeln!(
            out,
            "not RewardBench 2 subsets (left out of the score): {}",
            scores.ignored.join(", ")
        );
    }
    out
}
