//! RewardBench results and the sweep CSV from scored checkpoints.
//!
//! A sweep of schema rb2 (RewardBench 2 rows) gets RewardBench 2 results per checkpoint
//! ([`rb2_checkpoint_results`]) and, in place of the hybrid-preferences CSV (which reads
//! RewardBench 1 subsets and is skipped, with a note when a feature-count folder was given), the
//! RewardBench 2 table of [`rb2_sweep_csv`]. The rest of this header is about schema rb1.
//!
//! Per checkpoint: wins (`rewardbench::is_win`: strictly greater, a non-finite score is a loss),
//! per-subset accuracies, and the `metrics.json` / `eval-set/<name>.json` of RewardBench's
//! `run_rm.py` ([`EvalSetResults`], model = the checkpoint's experiment name), or of `run_dpo.py`
//! for reference-free DPO checkpoints (saved as `<name>_ref_free`, [`results_name`]). Per sweep: the CSV
//! of hybrid-preferences' `fetch_evals_rewardbench.py` ([`sweep_csv`]) joined with the
//! feature-count files of `spec.feature_counts_dir` (no folder: name mode).
//!
//! Both schemas also get each checkpoint's per-example file, `eval-set-scores/<name>.json`
//! (run_rm.py's, run_dpo.py's for DPO, run_v2.py's for rb2, through herd-rewardbench's
//! [`EvalSetScores`]), from the texts the workers scored and sent with the scores; a checkpoint
//! whose results were stored without texts gets a note instead.

use std::collections::BTreeSet;
use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context};
use herd_rewardbench::dataset::v2::BestOfNRow;
use herd_rewardbench::dataset::PreferencePair;
use herd_rewardbench::files::{
    results_name, EvalSetResults, EvalSetScores, ScoredPair, MODEL_TYPE_DPO_REF_FREE,
};
use herd_rewardbench::sweep_csv::{
    parse_uuid, read_feature_counts_dir, sweep_csv, Cell, Column, ColumnKind, Experiment,
    FeatureCounts, RowLabel, SweepOptions, SweepTable,
};
use herd_rewardbench::v1::{is_win, subset_accuracies, XstestWeighting};
use herd_rewardbench::v2::{rb2_scores, Rb2Scores, ScoredRow, TiesVariant};
use herd_rpc::v1::{CheckpointResult, SweepSpec};
use herd_rpc::EvalSchema;

use crate::domain::{check_sweep_name, PlannedExample, ScoredCheckpoint};

/// What a sweep's results are: per-checkpoint JSON, the sweep CSV, and notes (checkpoints left
/// out of the CSV, non-finite scores).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct SweepReport {
    pub checkpoints: Vec<CheckpointResult>,
    pub csv: String,
    pub notes: Vec<String>,
}

/// `spec.xstest_weighting`: "legacy" (also the default, as the reference CSV) or "current".
pub fn parse_weighting(text: &str) -> anyhow::Result<XstestWeighting> {
    match text.trim() {
        "" | "legacy" => Ok(XstestWeighting::Legacy),
        "current" => Ok(XstestWeighting::Current),
        other => bail!("xstest_weighting '{other}': expected 'legacy' or 'current'"),
    }
}

/// The RewardBench results of one scored checkpoint, and the number of examples that had a
/// non-finite score. `examples` is the sweep's evaluation set (index = position).
pub fn checkpoint_results(
    examples: &[PlannedExample],
    scored: &ScoredCheckpoint,
) -> anyhow::Result<(EvalSetResults, usize)> {
    check_rewards(examples, scored)?;
    let mut non_finite = 0usize;
    let mut wins: Vec<(&str, bool)> = Vec::with_capacity(examples.len());
    for (reward, example) in scored.rewards.iter().zip(examples) {
        if reward.chosen.is_empty() || reward.rejected.is_empty() {
            bail!(
                "checkpoint '{}' ({}): example {} (id {}) has no score",
                scored.name,
                scored.uri,
                example.index,
                example.id
            );
        }
        if reward
            .chosen
            .iter()
            .chain(&reward.rejected)
            .any(|x| !x.is_finite())
        {
            non_finite += 1;
        }
        wins.push((&example.subset, is_win(&reward.chosen, &reward.rejected)));
    }
    let results = if scored.model_type == MODEL_TYPE_DPO_REF_FREE {
        // a sweep scores DPO checkpoints reference-free: run_dpo.py's dict (ref_model null,
        // chat_template "tokenizer")
        EvalSetResults::dpo(scored.name.clone(), None, subset_accuracies(wins))
    } else {
        let chat_template = Some(scored.chat_template.clone()).filter(|t| !t.is_empty());
        EvalSetResults::new(
            scored.name.clone(),
            scored.model_type.clone(),
            chat_template,
            subset_accuracies(wins),
        )
    };
    Ok((results, non_finite))
}

/// One reward per example, in index order.
fn check_rewards(examples: &[PlannedExample], scored: &ScoredCheckpoint) -> anyhow::Result<()> {
    if scored.rewards.len() != examples.len() {
        bail!(
            "checkpoint '{}' ({}): {} rewards stored for {} examples",
            scored.name,
            scored.uri,
            scored.rewards.len(),
            examples.len()
        );
    }
    for (reward, example) in scored.rewards.iter().zip(examples) {
        if reward.index != example.index {
            bail!(
                "checkpoint '{}' ({}): reward for example {} where example {} was expected",
                scored.name,
                scored.uri,
                reward.index,
                example.index
            );
        }
    }
    Ok(())
}

/// The RewardBench 2 rows of a sweep's evaluation set (schema rb2), read back from the stored
/// `pair_json` (index = position).
pub fn best_of_n_rows(examples: &[PlannedExample]) -> anyhow::Result<Vec<BestOfNRow>> {
    examples
        .iter()
        .map(|example| {
            serde_json::from_str(&example.pair_json).with_context(|| {
                format!(
                    "example {} (id {}): the stored row is not a RewardBench 2 row",
                    example.index, example.id
                )
            })
        })
        .collect()
}

/// The RewardBench 2 results of one scored checkpoint (`run_v2.py`): every completion's score
/// regrouped by row (chosen first, as `BestOfNRow::completions`), best-of-N credit per subset
/// and the Ties composite ([`rb2_scores`]); also the number of rows with a non-finite score.
/// `rows` are the sweep's rows ([`best_of_n_rows`]) beside their `examples`.
pub fn rb2_checkpoint_results(
    examples: &[PlannedExample],
    rows: &[BestOfNRow],
    scored: &ScoredCheckpoint,
) -> anyhow::Result<(EvalSetResults, Rb2Scores, usize)> {
    let scored_rows = rb2_scored_rows(examples, rows, scored)?;
    let non_finite = scored_rows
        .iter()
        .filter(|row| row.scores.iter().any(|x| !x.is_finite()))
        .count();
    let scores = rb2_scores(&scored_rows, TiesVariant::Head)
        .with_context(|| format!("checkpoint '{}' ({})", scored.name, scored.uri))?;
    // run_v2.py's `results_grouped` (model_type "Seq. Classifier", its only model type)
    let results = EvalSetResults::best_of_n(scored.name.clone(), &scored.chat_template, &scores);
    Ok((results, scores, non_finite))
}

/// A checkpoint's stored scores regrouped by RewardBench 2 row (every completion, chosen first),
/// checked against the rows' completion counts.
fn rb2_scored_rows(
    examples: &[PlannedExample],
    rows: &[BestOfNRow],
    scored: &ScoredCheckpoint,
) -> anyhow::Result<Vec<ScoredRow>> {
    check_rewards(examples, scored)?;
    let mut scored_rows = Vec::with_capacity(rows.len());
    for ((reward, example), row) in scored.rewards.iter().zip(examples).zip(rows) {
        if reward.chosen.len() != row.chosen.len() || reward.rejected.len() != row.rejected.len() {
            bail!(
                "checkpoint '{}' ({}): example {} (id {}) has {} chosen and {} rejected scores \
                 for {} chosen and {} rejected completions",
                scored.name,
                scored.uri,
                example.index,
                example.id,
                reward.chosen.len(),
                reward.rejected.len(),
                row.chosen.len(),
                row.rejected.len()
            );
        }
        scored_rows.push(ScoredRow {
            id: row.id.clone(),
            subset: example.subset.clone(),
            num_correct: row.num_correct,
            scores: reward.completion_scores(),
        });
    }
    Ok(scored_rows)
}

/// run_v2.py's `eval-set-scores/<model>.json` of a checkpoint (model = the experiment name,
/// chat_template as the worker reported it, as in its eval-set/ file), from its stored texts;
/// `None` when they are not stored.
pub fn rb2_eval_set_scores(
    examples: &[PlannedExample],
    rows: &[BestOfNRow],
    scored: &ScoredCheckpoint,
) -> anyhow::Result<Option<String>> {
    let Some(texts) = &scored.texts else {
        return Ok(None);
    };
    let scored_rows = rb2_scored_rows(examples, rows, scored)?;
    let texts: Vec<Vec<String>> = texts
        .iter()
        .map(|row| row.iter().map(|t| t.to_string()).collect())
        .collect();
    let file = EvalSetScores::best_of_n(&scored_rows, &texts, &scored.name, &scored.chat_template)
        .with_context(|| format!("checkpoint '{}' ({})", scored.name, scored.uri))?;
    Ok(Some(file.to_json()))
}

/// The preference pairs of a sweep's evaluation set (schema rb1), read back from the stored
/// `pair_json` (index = position): their ids keep the type the dataset gave them.
pub fn preference_pairs(examples: &[PlannedExample]) -> anyhow::Result<Vec<PreferencePair>> {
    examples
        .iter()
        .map(|example| {
            serde_json::from_str(&example.pair_json).with_context(|| {
                format!(
                    "example {} (id {}): the stored row is not a preference pair",
                    example.index, example.id
                )
            })
        })
        .collect()
}

/// run_rm.py's `eval-set-scores/<model>.json` of a checkpoint, or run_dpo.py's for a DPO model
/// (no id column, the templated prompt, saved as `<model>_ref_free`), from its stored texts
/// (model = the experiment name; chat_template = the sweep's `chat_template`, the scripts'
/// `args.chat_template`); `None` when the texts are not stored. `pairs` are the sweep's pairs
/// ([`preference_pairs`]) beside their `examples`.
pub fn eval_set_scores(
    spec: &SweepSpec,
    examples: &[PlannedExample],
    pairs: &[PreferencePair],
    scored: &ScoredCheckpoint,
) -> anyhow::Result<Option<String>> {
    let Some(texts) = &scored.texts else {
        return Ok(None);
    };
    check_rewards(examples, scored)?;
    let dpo = scored.model_type != "Seq. Classifier";
    let want = if dpo { 3 } else { 2 };
    let mut rows = Vec::with_capacity(pairs.len());
    let mut prompts = Vec::with_capacity(pairs.len());
    for (((reward, example), pair), texts) in
        scored.rewards.iter().zip(examples).zip(pairs).zip(texts)
    {
        let [chosen, rejected, rest @ ..] = texts.as_slice() else {
            bail!(
                "checkpoint '{}' ({}): example {} (id {}) has {} texts, {want} expected",
                scored.name,
                scored.uri,
                example.index,
                example.id,
                texts.len()
            );
        };
        if dpo {
            let [prompt] = rest else {
                bail!(
                    "checkpoint '{}' ({}): example {} (id {}) of a {} model has no prompt text",
                    scored.name,
                    scored.uri,
                    example.index,
                    example.id,
                    scored.model_type
                );
            };
            prompts.push(prompt.to_string());
        }
        rows.push(ScoredPair {
            id: pair.id.clone(),
            subset: example.subset.clone(),
            text_chosen: chosen.to_string(),
            text_rejected: rejected.to_string(),
            win: is_win(&reward.chosen, &reward.rejected),
            scores_chosen: reward.chosen.clone(),
            scores_rejected: reward.rejected.clone(),
        });
    }
    let chat_template = spec
        .scoring
        .clone()
        .unwrap_or_default()
        .chat_template_or_default()
        .to_owned();
    let file = EvalSetScores::of_pairs(
        &rows,
        dpo.then_some(prompts.as_slice()),
        &scored.name,
        &scored.model_type,
        Some(chat_template),
    )
    .with_context(|| format!("checkpoint '{}' ({})", scored.name, scored.uri))?;
    // a `[batch]` pipeline's scores, as run_rm.py stores `rewards.tolist()` of one: `x`, not `[x]`
    // (run_dpo.py's files keep their own layout)
    let file = if scored.scalar_output && !dpo {
        file.with_scalar_scores()
    } else {
        file
    };
    Ok(Some(file.to_json()))
}

/// The sweep-level table of a RewardBench 2 sweep, one row per checkpoint (row label: the
/// experiment name): `model_type`, every subset found (sorted), and `score`, the RewardBench 2
/// score (the mean of the six subsets; empty unless all six are present). Written as pandas'
/// `to_csv` writes a frame ([`SweepTable::to_csv`]).
pub fn rb2_sweep_csv(checkpoints: &[(String, String, Rb2Scores)]) -> String {
    let subsets: BTreeSet<&str> = checkpoints
        .iter()
        .flat_map(|(_, _, scores)| scores.subsets.keys().map(String::as_str))
        .collect();
    let mut columns = vec![Column {
        name: "model_type".into(),
        kind: ColumnKind::Object,
        cells: checkpoints
            .iter()
            .map(|(_, model_type, _)| Cell::Str(model_type.clone()))
            .collect(),
    }];
    for subset in &subsets {
        columns.push(Column {
            name: (*subset).to_owned(),
            kind: ColumnKind::Float64,
            cells: checkpoints
                .iter()
                .map(|(_, _, scores)| {
                    scores
                        .subsets
                        .get(*subset)
                        .map_or(Cell::Missing, |x| Cell::Float(*x))
                })
                .collect(),
        });
    }
    columns.push(Column {
        name: "score".into(),
        kind: ColumnKind::Float64,
        cells: checkpoints
            .iter()
            .map(|(_, _, scores)| scores.score().map_or(Cell::Missing, Cell::Float))
            .collect(),
    });
    SweepTable {
        labels: checkpoints
            .iter()
            .map(|(name, _, _)| RowLabel::Name(name.clone()))
            .collect(),
        columns,
    }
    .to_csv()
}

/// Every checkpoint's RewardBench 2 results and the sweep's RewardBench 2 table (the
/// hybrid-preferences CSV reads RewardBench 1 subsets and is not made: a note says so).
fn build_rb2_report(
    spec: &SweepSpec,
    examples: &[PlannedExample],
    scored: &[ScoredCheckpoint],
) -> anyhow::Result<SweepReport> {
    let rows = best_of_n_rows(examples)?;
    let mut report = SweepReport::default();
    let mut table = Vec::with_capacity(scored.len());
    for ckpt in scored {
        let (results, scores, non_finite) = rb2_checkpoint_results(examples, &rows, ckpt)?;
        if non_finite > 0 {
            report.notes.push(format!(
                "{}: {non_finite} of {} rows had a NaN or infinite score (compared as Python \
                 compares them)",
                ckpt.name,
                examples.len()
            ));
        }
        if !scores.missing.is_empty() {
            report.notes.push(format!(
                "{}: no RewardBench 2 score: the evaluation set lacks the subset(s) {}",
                ckpt.name,
                scores.missing.join(", ")
            ));
        }
        if ckpt.texts.is_none() {
            report.notes.push(no_texts_note(&ckpt.name));
        }
        report.checkpoints.push(CheckpointResult {
            name: ckpt.name.clone(),
            experiment: ckpt.name.clone(),
            metrics_json: results.metrics_json(),
            eval_set_json: results.eval_set_json(),
        });
        table.push((ckpt.name.clone(), ckpt.model_type.clone(), scores));
    }
    if table.is_empty() {
        report.notes.push(format!(
            "sweep '{}': no checkpoint is fully scored yet",
            spec.name
        ));
        return Ok(report);
    }
    if !spec.feature_counts_dir.trim().is_empty() {
        report.notes.push(format!(
            "sweep '{}': a RewardBench 2 sweep has no hybrid-preferences CSV (it reads RewardBench \
             1 subsets); feature_counts_dir is not used, {} holds the RewardBench 2 table",
            spec.name, spec.output_csv
        ));
    }
    report.csv = rb2_sweep_csv(&table);
    Ok(report)
}

/// Builds every checkpoint's results and the sweep-level CSV. The CSV is empty when nothing is
/// scored. Schema rb1: RewardBench 1 results and the hybrid-preferences sweep CSV; schema rb2:
/// RewardBench 2 results and the RewardBench 2 table ([`rb2_sweep_csv`]).
pub fn build_report(
    spec: &SweepSpec,
    examples: &[PlannedExample],
    scored: &[ScoredCheckpoint],
) -> anyhow::Result<SweepReport> {
    if crate::planner::sweep_schema(spec)? == EvalSchema::Rb2 {
        return build_rb2_report(spec, examples, scored);
    }
    let options = SweepOptions {
        weighting: parse_weighting(&spec.xstest_weighting)?,
        dataset_total_size: Some(spec.dataset_total_size).filter(|&n| n > 0),
        label_threshold: None,
    };
    let mut report = SweepReport::default();
    let mut experiments = Vec::with_capacity(scored.len());
    for ckpt in scored {
        let (results, non_finite) = checkpoint_results(examples, ckpt)?;
        let name = results_name(&ckpt.name, &results.model_type);
        if ckpt.texts.is_none() {
            report.notes.push(no_texts_note(&ckpt.name));
        }
        if non_finite > 0 {
            report.notes.push(format!(
                "{}: {non_finite} of {} examples had a NaN or infinite score and count as losses",
                ckpt.name,
                examples.len()
            ));
        }
        report.checkpoints.push(CheckpointResult {
            // the file name RewardBench saves the results under (`<name>_ref_free` for
            // reference-free DPO)
            name,
            experiment: ckpt.name.clone(),
            metrics_json: results.metrics_json(),
            eval_set_json: results.eval_set_json(),
        });
        experiments.push(Experiment::from_results(ckpt.name.clone(), &results));
    }
    if experiments.is_empty() {
        report.notes.push(format!(
            "sweep '{}': no checkpoint is fully scored yet",
            spec.name
        ));
        return Ok(report);
    }
    let features = match spec.feature_counts_dir.trim() {
        "" => None,
        dir => {
            let features = read_feature_counts_dir(Path::new(dir))?;
            if features.is_empty() {
                bail!("{dir}: no feature-count files (*.json)");
            }
            Some(features)
        }
    };
    if let Some(features) = &features {
        report
            .notes
            .extend(dropped_by_features(&experiments, features, spec));
    }
    // the reference script raises on some inputs (an evaluation set without every RewardBench
    // subset, a name with ID but no SWAPS_<n>): the per-checkpoint results still stand
    match sweep_csv(&experiments, features.as_deref(), &options) {
        Ok(csv) => report.csv = csv,
        Err(e) => report
            .notes
            .push(format!("sweep '{}': no sweep CSV: {e}", spec.name)),
    }
    Ok(report)
}

/// The note for a checkpoint scored without texts.
fn no_texts_note(name: &str) -> String {
    format!(
        "{name}: no eval-set-scores file: its results were stored without the scored texts (a \
         worker or state file from before they were sent)"
    )
}

/// Notes for experiments counts mode leaves out: names without `ID` and uuids with no
/// feature-count file (the reference's `dropna`).
fn dropped_by_features(
    experiments: &[Experiment],
    features: &[FeatureCounts],
    spec: &SweepSpec,
) -> Vec<String> {
    let uuids: BTreeSet<&str> = features.iter().map(|f| f.uuid.as_str()).collect();
    let mut notes = Vec::new();
    for exp in experiments {
        if !exp.name.contains("ID") {
            notes.push(format!(
                "{}: left out of the CSV: the name has no ID__<uuid>__ to join with the feature counts",
                exp.name
            ));
            continue;
        }
        if let Some(uuid) = parse_uuid(&exp.name) {
            if !uuids.contains(uuid) {
                notes.push(format!(
                    "{}: left out of the CSV: no feature-count file for uuid {uuid} in {}",
                    exp.name,
                    spec.feature_counts_dir.trim()
                ));
            }
        }
    }
    notes
}

/// A file name with no folder part: no separators, not `.` or `..`, not empty.
pub fn check_file_name(name: &str, what: &str) -> anyhow::Result<()> {
    if name.is_empty()
        || name == "."
        || name == ".."
        || name.contains(['/', '\\', '\0'])
        || Path::new(name).is_absolute()
    {
        bail!("{what} '{name}' must be a plain file name (no folders, no '..')");
    }
    Ok(())
}

/// `<out_dir>/<sweep>`, the folder of a sweep's reports; the name must follow
/// [`SWEEP_NAME_RULE`](crate::domain::SWEEP_NAME_RULE).
pub fn sweep_dir(out_dir: &Path, sweep: &str) -> anyhow::Result<PathBuf> {
    check_sweep_name(sweep).map_err(|e| anyhow!(e))?;
    Ok(out_dir.join(sweep))
}

/// Fails unless `path` resolves (symbolic links followed, through its deepest existing
/// ancestor) inside `root`: the second fence after the name rules, for a link planted in the
/// output folder.
pub fn check_inside(root: &Path, path: &Path) -> anyhow::Result<()> {
    let root_real = root
        .canonicalize()
        .with_context(|| format!("output folder {}", root.display()))?;
    let mut existing = path;
    let mut rest = Vec::new();
    let real = loop {
        match existing.canonicalize() {
            Ok(real) => break real,
            Err(_) => {
                let (Some(parent), Some(name)) = (existing.parent(), existing.file_name()) else {
                    bail!("{}: no existing folder above it", path.display());
                };
                rest.push(name.to_owned());
                existing = parent;
            }
        }
    };
    let resolved = rest.iter().rev().fold(real, |p, name| p.join(name));
    let lexically_inside = resolved
        .strip_prefix(&root_real)
        .map(|tail| {
            tail.components()
                .all(|c| matches!(c, std::path::Component::Normal(_)))
        })
        .unwrap_or(false);
    if !lexically_inside {
        bail!(
            "{} resolves to {}, outside the output folder {}",
            path.display(),
            resolved.display(),
            root_real.display()
        );
    }
    Ok(())
}

/// Writes `<out_dir>/<sweep>/<output_csv>`, `.../metrics/<name>.json` and
/// `.../eval-set/<name>.json`, each through a temporary file renamed into place (the
/// `eval-set-scores/` files: [`write_eval_set_scores`]). The sweep
/// name follows the sweep-name rule, `output_csv` and checkpoint names are plain file names,
/// and every path written is checked to resolve inside `out_dir`.
pub fn write_report(
    out_dir: &Path,
    sweep: &str,
    report: &SweepReport,
    output_csv: &str,
) -> anyhow::Result<PathBuf> {
    let dir = sweep_dir(out_dir, sweep)?;
    check_file_name(output_csv, "output_csv")?;
    for ckpt in &report.checkpoints {
        check_file_name(&ckpt.name, "checkpoint name")?;
    }
    std::fs::create_dir_all(out_dir)
        .with_context(|| format!("cannot create {}", out_dir.display()))?;
    // every path is checked before anything is written
    let mut paths = vec![dir.clone(), dir.join(output_csv)];
    for folder in ["metrics", "eval-set"] {
        paths.push(dir.join(folder));
        for ckpt in &report.checkpoints {
            paths.push(dir.join(folder).join(format!("{}.json", ckpt.name)));
        }
    }
    for path in &paths {
        check_inside(out_dir, path)?;
    }
    std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    if !report.csv.is_empty() {
        write_atomic(&dir.join(output_csv), report.csv.as_bytes())?;
    }
    write_checkpoint_files(&dir, &report.checkpoints)?;
    Ok(dir)
}

/// Writes `<out_dir>/<sweep>/eval-set-scores/<name>.json` for every scored checkpoint whose
/// texts are stored (`<name>`: the experiment, `_ref_free` for reference-free DPO, as the
/// checkpoint's other files), one checkpoint at a time: each file holds every text of the
/// evaluation set, so none is kept once written (and `coord results`, which does not send them,
/// never builds them). Every path is checked to resolve inside `out_dir`. A checkpoint whose file
/// cannot be built (texts that do not fit its examples) is skipped; the reasons are returned.
pub fn write_eval_set_scores(
    out_dir: &Path,
    sweep: &str,
    spec: &SweepSpec,
    examples: &[PlannedExample],
    scored: &[ScoredCheckpoint],
) -> anyhow::Result<Vec<String>> {
    let with_texts: Vec<&ScoredCheckpoint> = scored.iter().filter(|c| c.texts.is_some()).collect();
    if with_texts.is_empty() {
        return Ok(Vec::new());
    }
    let folder = sweep_dir(out_dir, sweep)?.join(EVAL_SET_SCORES);
    std::fs::create_dir_all(out_dir)
        .with_context(|| format!("cannot create {}", out_dir.display()))?;
    check_inside(out_dir, &folder)?;
    std::fs::create_dir_all(&folder)
        .with_context(|| format!("cannot create {}", folder.display()))?;
    let rb2 = crate::planner::sweep_schema(spec)? == EvalSchema::Rb2;
    let (rows, pairs) = if rb2 {
        (best_of_n_rows(examples)?, Vec::new())
    } else {
        (Vec::new(), preference_pairs(examples)?)
    };
    let mut skipped = Vec::new();
    for ckpt in with_texts {
        let (name, file) = if rb2 {
            (
                ckpt.name.clone(),
                rb2_eval_set_scores(examples, &rows, ckpt),
            )
        } else {
            (
                results_name(&ckpt.name, &ckpt.model_type),
                eval_set_scores(spec, examples, &pairs, ckpt),
            )
        };
        let json = match file {
            Ok(Some(json)) => json,
            Ok(None) => continue,
            Err(e) => {
                skipped.push(format!("{}: no eval-set-scores file: {e:#}", ckpt.name));
                continue;
            }
        };
        check_file_name(&name, "checkpoint name")?;
        let path = folder.join(format!("{name}.json"));
        check_inside(out_dir, &path)?;
        write_atomic(&path, json.as_bytes())?;
    }
    Ok(skipped)
}

/// The folder of the per-example files beside `eval-set/` (RewardBench's `eval-set-scores/`).
pub const EVAL_SET_SCORES: &str = "eval-set-scores";

/// Writes `dir/metrics/<name>.json` and `dir/eval-set/<name>.json` for every checkpoint.
pub fn write_checkpoint_files(dir: &Path, checkpoints: &[CheckpointResult]) -> anyhow::Result<()> {
    for ckpt in checkpoints {
        check_file_name(&ckpt.name, "checkpoint name")?;
    }
    if checkpoints.is_empty() {
        return Ok(());
    }
    let metrics = dir.join("metrics");
    let eval_set = dir.join("eval-set");
    for folder in [&metrics, &eval_set] {
        std::fs::create_dir_all(folder)
            .with_context(|| format!("cannot create {}", folder.display()))?;
    }
    for ckpt in checkpoints {
        let file = format!("{}.json", ckpt.name);
        write_atomic(&metrics.join(&file), ckpt.metrics_json.as_bytes())?;
        write_atomic(&eval_set.join(&file), ckpt.eval_set_json.as_bytes())?;
    }
    Ok(())
}

/// Writes `bytes` to a temporary file beside `path`, syncs it and renames it onto `path`.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    let name = path
        .file_name()
        .with_context(|| format!("{}: not a file path", path.display()))?
        .to_string_lossy();
    let tmp = path.with_file_name(format!(".{name}.tmp-{}", std::process::id()));
    let result = (|| -> std::io::Result<()> {
        let mut file = std::fs::File::create(&tmp)?;
        file.write_all(bytes)?;
        file.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    if let Err(e) = result {
        let _ = std::fs::remove_file(&tmp);
        return Err(e).with_context(|| format!("cannot write {}", path.display()));
    }
    Ok(())
}
