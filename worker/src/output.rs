//! What `worker score` writes.
//!
//! - The `rewardbench` CLI's files (rewardbench 0.1.4, `rewardbench/rewardbench.py`), through
//!   herd-rewardbench's writers ([`herd_rewardbench::files`]): `{output_dir}{model}.json`,
//!   `{model}_outputs.jsonl` and, with `--save-all`, `{model}_all.jsonl`; instruction data gets
//!   the outputs file only, as from the CLI.
//! - With `-o FILE`: herd's own per-example rows (every logit, ids) and a summary `<stem>.json`
//!   with subset and section accuracies.
//! - With `--eval-set-dir DIR`: what `scripts/run_rm.py` (`scripts/run_dpo.py` for a DPO model)
//!   saves under its `./results` folder, `eval-set/` and `eval-set-scores/` (the files a sweep
//!   writes per checkpoint).

use std::fmt::Write as _;
use std::io::{BufWriter, Write};
use std::path::{Component, Path, PathBuf};

use anyhow::Context;
use serde::Serialize;
use serde_json::json;

use herd_engine::encode::format_pair;
use herd_engine::scorer::{ScoreRequest, ScoredDataset};
use herd_rewardbench::chat::{rewardbench_messages, ChatFormatter, Message};
use herd_rewardbench::dataset::generic::GenericDataset;
use herd_rewardbench::dataset::{ExampleId, PreferencePair};
use herd_rewardbench::files::{
    cli_all_path, cli_paths, results_name, CliAllScores, CliInstructionOutputs, CliOutputs,
    CliResults, EvalSetResults, EvalSetScores, ResultsKind, ScoredPair,
};
use herd_rewardbench::pyjson::{float_repr, PyValue};
use herd_rewardbench::v1::{self as rewardbench, SubsetAccuracies, XstestWeighting};

/// The CLI's `--output_dir` default.
pub const DEFAULT_OUTPUT_DIR: &str = "results/";

/// The names the CLI writes into its files and file names: `args.model`, `args.ref_model` and
/// `args.tokenizer or args.model`, as given on the command line.
pub struct CliNames {
    pub model: String,
    pub ref_model: Option<String>,
    pub tokenizer: String,
}

fn utf8(path: &Path, flag: &str) -> anyhow::Result<String> {
    path.to_str()
        .map(str::to_owned)
        .with_context(|| format!("{flag} {}: not valid UTF-8", path.display()))
}

impl CliNames {
    /// The model path becomes part of the result paths (`{output_dir}{model}.json`), so it may
    /// not climb out of the output folder with `..`.
    pub fn new(
        model: &Path,
        ref_model: Option<&Path>,
        tokenizer: Option<&Path>,
    ) -> anyhow::Result<Self> {
        anyhow::ensure!(
            !model.components().any(|c| c == Component::ParentDir),
            "--model {}: the result files are named after the model path, and '..' would put \
             them outside --output-dir; pass the path without '..'",
            model.display()
        );
        let model_name = utf8(model, "--model")?;
        Ok(CliNames {
            ref_model: ref_model.map(|p| utf8(p, "--ref-model")).transpose()?,
            tokenizer: match tokenizer {
                Some(p) => utf8(p, "--tokenizer")?,
                None => model_name.clone(),
            },
            model: model_name,
        })
    }

    /// Every file the CLI writes under `output_dir`.
    pub fn paths(&self, output_dir: &str, instruction: bool, save_all: bool) -> Vec<PathBuf> {
        let (json, outputs) = cli_paths(output_dir, &self.model);
        if instruction {
            return vec![outputs];
        }
        let mut paths = vec![json, outputs];
        if save_all {
            paths.push(cli_all_path(output_dir, &self.model));
        }
        paths
    }
}

/// Creates `path`'s folder and the file itself, so that a path that cannot be written fails
/// before the scoring rather than after.
pub fn check_writable(path: &Path) -> anyhow::Result<()> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    }
    std::fs::File::create(path).with_context(|| format!("cannot write {}", path.display()))?;
    Ok(())
}

/// The texts of preference pairs as the CLI keeps them: the templated `prompt` (the prompt turns
/// alone, `temp_prompt` of `prepare_dialogue*`) and the templated chosen / rejected conversations.
pub struct PairTexts {
    pub prompt: Vec<String>,
    pub chosen: Vec<String>,
    pub rejected: Vec<String>,
}

impl PairTexts {
    pub fn new(formatter: &ChatFormatter, pairs: &[PreferencePair]) -> anyhow::Result<Self> {
        let mut texts = PairTexts {
            prompt: Vec::with_capacity(pairs.len()),
            chosen: Vec::with_capacity(pairs.len()),
            rejected: Vec::with_capacity(pairs.len()),
        };
        for pair in pairs {
            let formatted = format_pair(formatter, pair)
                .with_context(|| format!("formatting example {}", pair.id))?;
            let prompt = formatter
                .render(&rewardbench_messages(&pair.prompt, None)?)
                .with_context(|| format!("formatting the prompt of example {}", pair.id))?;
            texts.prompt.push(prompt);
            texts.chosen.push(formatted.chosen);
            texts.rejected.push(formatted.rejected);
        }
        Ok(texts)
    }
}

/// The texts of instruction data as the CLI makes them (`prepare_dialogue_from_tokenizer` /
/// `prepare_dialogue` with `ift=True`): with the tokenizer's template, the conversation as
/// written and `prompt` = the first message's content; with FastChat, roles re-assigned by
/// position (user, assistant, ...) and `prompt` = the first message templated alone.
pub struct InstructionTexts {
    pub prompt: Vec<PyValue>,
    pub text: Vec<String>,
}

impl InstructionTexts {
    pub fn new(formatter: &ChatFormatter, conversations: &[Vec<Message>]) -> anyhow::Result<Self> {
        let mut texts = InstructionTexts {
            prompt: Vec::with_capacity(conversations.len()),
            text: Vec::with_capacity(conversations.len()),
        };
        for (row, messages) in conversations.iter().enumerate() {
            let first = messages.first().map_or("", |m| m.content.as_str());
            let context = || format!("formatting conversation {} (row {})", row, row + 1);
            match formatter {
                ChatFormatter::Jinja(_) => {
                    texts
                        .text
                        .push(formatter.render(messages).with_context(context)?);
                    texts.prompt.push(first.into());
                }
                ChatFormatter::FastChat(_) => {
                    let by_position: Vec<Message> = messages
                        .iter()
                        .enumerate()
                        .map(|(i, m)| {
                            let role = if i % 2 == 0 { "user" } else { "assistant" };
                            Message::new(role, m.content.clone())
                        })
                        .collect();
                    texts
                        .text
                        .push(formatter.render(&by_position).with_context(context)?);
                    let prompt = formatter
                        .render(&[Message::user(first)])
                        .with_context(context)?;
                    texts.prompt.push(prompt.into());
                }
            }
        }
        Ok(texts)
    }
}

/// One `worker score` run's CLI files.
pub struct CliRun<'a> {
    pub names: &'a CliNames,
    /// `chat_template` of `{model}.json`.
    pub chat_template: Option<String>,
    /// Per-subset accuracies in `extra_results` (the CLI: only for `allenai/reward-bench`).
    pub extra_results: bool,
    pub save_all: bool,
}

fn mean_std(xs: impl Iterator<Item = f64> + Clone) -> (f64, f64) {
    let n = xs.clone().count() as f64;
    let mean = xs.clone().sum::<f64>() / n;
    let var = xs.map(|x| (x - mean) * (x - mean)).sum::<f64>() / n;
    (mean, var.sqrt())
}

impl CliRun<'_> {
    /// `{model}.json`, `{model}_outputs.jsonl` and (with `--save-all`) `{model}_all.jsonl`; logs
    /// what the CLI logs about the scores.
    pub fn write_preference(
        &self,
        output_dir: &str,
        dataset: &GenericDataset,
        pairs: &[PreferencePair],
        texts: &PairTexts,
        scored: &ScoredDataset,
    ) -> anyhow::Result<Vec<PathBuf>> {
        let wins = wins(scored);
        let accuracy = rewardbench::cli_accuracy(wins.iter().copied()).unwrap_or(f64::NAN);
        let chosen = scored.pairs.iter().flat_map(|p| p.chosen.iter().copied());
        let rejected = scored.pairs.iter().flat_map(|p| p.rejected.iter().copied());
        let (mean_c, std_c) = mean_std(chosen.clone());
        let (mean_r, std_r) = mean_std(rejected.clone());
        let margin = chosen.zip(rejected).map(|(c, r)| c - r).sum::<f64>() / wins.len() as f64;
        eprintln!(
            "Results: {}, on {} prompts",
            float_repr(accuracy),
            wins.len()
        );
        eprintln!(
            "Mean chosen: {}, std: {}",
            float_repr(mean_c),
            float_repr(std_c)
        );
        eprintln!(
            "Mean rejected: {}, std: {}",
            float_repr(mean_r),
            float_repr(std_r)
        );
        eprintln!("Mean margin: {}", float_repr(margin));
        let extra_results = self.extra_results.then(|| {
            rewardbench::subset_accuracies(
                pairs
                    .iter()
                    .zip(&wins)
                    .filter_map(|(pair, &win)| Some((pair.subset.as_deref()?, win))),
            )
        });
        let results = CliResults {
            accuracy,
            num_prompts: pairs.len(),
            model: self.names.model.clone(),
            ref_model: self.names.ref_model.clone(),
            tokenizer: self.names.tokenizer.clone(),
            chat_template: self.chat_template.clone(),
            extra_results,
        };
        let outputs = CliOutputs {
            prompt: texts.prompt.iter().map(|p| p.as_str().into()).collect(),
            results: wins,
            scores_chosen: scored.pairs.iter().map(|p| p.chosen.clone()).collect(),
            scores_rejected: scored.pairs.iter().map(|p| p.rejected.clone()).collect(),
            text_chosen: texts.chosen.clone(),
            text_rejected: texts.rejected.clone(),
            metadata: dataset.metadata(&["prompt", "text_chosen", "text_rejected"]),
        };
        let model = &self.names.model;
        // the CLI's order: the outputs first, then the results, then --save_all
        let mut written = vec![
            outputs.write(output_dir, model)?,
            results.write(output_dir)?,
        ];
        if self.save_all {
            let chosen: Vec<Vec<f64>> = scored.pairs.iter().map(|p| p.chosen.clone()).collect();
            let rejected: Vec<Vec<f64>> = scored.pairs.iter().map(|p| p.rejected.clone()).collect();
            let all = if !scored.scalar {
                // `logits.tolist()` rows
                CliAllScores::classifier(&chosen, &rejected)
            } else {
                // DPO rewards and custom pipelines' `[batch]` tensors: one float per row
                let first = |rows: &[Vec<f64>]| -> Vec<f64> {
                    rows.iter()
                        .map(|r| r.first().copied().unwrap_or(f64::NAN))
                        .collect()
                };
                CliAllScores::dpo(&first(&chosen), &first(&rejected))
            };
            written.push(all.write(output_dir, model)?);
        }
        Ok(written)
    }

    /// `{model}_outputs.jsonl` for instruction data (no accuracy, no `{model}.json`).
    pub fn write_instruction(
        &self,
        output_dir: &str,
        dataset: &GenericDataset,
        texts: InstructionTexts,
        scores: Vec<Vec<f64>>,
    ) -> anyhow::Result<PathBuf> {
        let outputs = CliInstructionOutputs {
            prompt: texts.prompt,
            scores,
            text: texts.text,
            metadata: dataset.metadata(&["prompt", "text"]),
        };
        Ok(outputs.write(output_dir, &self.names.model)?)
    }
}

/// `--eval-set-dir DIR`: `DIR/eval-set/<model>.json` and `DIR/eval-set-scores/<model>.json` as
/// `scripts/run_rm.py` saves them for a sequence classifier, or `scripts/run_dpo.py` for a DPO
/// model (`<model>_ref_free` when reference-free; no id column, the templated prompt), through
/// herd-rewardbench's writers. `<model>` is `--model` as given; `chat_template` is the scripts'
/// `args.chat_template` (`--chat-template`, default tulu). Every pair needs a subset (the scripts
/// score by subset).
pub fn write_script_results(
    dir: &Path,
    names: &CliNames,
    chat_template: &str,
    pairs: &[PreferencePair],
    texts: &PairTexts,
    scored: &ScoredDataset,
) -> anyhow::Result<Vec<PathBuf>> {
    let wins = wins(scored);
    let mut rows = Vec::with_capacity(pairs.len());
    for (((pair, scores), &win), (chosen, rejected)) in pairs
        .iter()
        .zip(&scored.pairs)
        .zip(&wins)
        .zip(texts.chosen.iter().zip(&texts.rejected))
    {
        let subset = pair.subset.clone().with_context(|| {
            format!(
                "--eval-set-dir: example {} has no subset (run_rm.py scores by subset)",
                pair.id
            )
        })?;
        rows.push(ScoredPair {
            id: pair.id.clone(),
            subset,
            text_chosen: chosen.clone(),
            text_rejected: rejected.clone(),
            win,
            scores_chosen: scores.chosen.clone(),
            scores_rejected: scores.rejected.clone(),
        });
    }
    let accuracies = rewardbench::subset_accuracies(rows.iter().map(|r| (&r.subset, r.win)));
    let model = &names.model;
    let results = if scored.model_type == "Seq. Classifier" {
        EvalSetResults::new(
            model.as_str(),
            scored.model_type,
            Some(scored.chat_template.clone()),
            accuracies,
        )
    } else {
        EvalSetResults::dpo(model.as_str(), names.ref_model.clone(), accuracies)
    };
    let name = results_name(model, &results.model_type);
    let eval_set = results.write_eval_set(dir, ResultsKind::EvalSet, &name)?;
    let scores = EvalSetScores::of_pairs(
        &rows,
        Some(&texts.prompt),
        model,
        &results.model_type,
        Some(chat_template.to_owned()),
    )?;
    // run_rm.py extends its score lists with `rewards.tolist()` of each batch: a `[batch]`
    // pipeline's scores are floats (`x`), the classifiers' one-element lists (`[x]`)
    let scores = if scored.scalar && scored.model_type == "Seq. Classifier" {
        scores.with_scalar_scores()
    } else {
        scores
    };
    let scores = scores.write(dir, ResultsKind::EvalSetScores, &name)?;
    Ok(vec![eval_set, scores])
}

// ------------------------------------------------------------------------------------------------
// -o FILE: herd's per-example rows and summary
// ------------------------------------------------------------------------------------------------

#[derive(Serialize)]
struct ExampleRow<'a> {
    id: &'a ExampleId,
    #[serde(skip_serializing_if = "Option::is_none")]
    subset: Option<&'a str>,
    results: u8,
    scores_chosen: &'a [f64],
    scores_rejected: &'a [f64],
}

/// 1 when chosen beats rejected (RewardBench's strict, lexicographic comparison).
pub fn wins(scored: &ScoredDataset) -> Vec<bool> {
    scored
        .pairs
        .iter()
        .map(|p| rewardbench::is_win(&p.chosen, &p.rejected))
        .collect()
}

pub fn write_scores(
    path: &Path,
    pairs: &[PreferencePair],
    scored: &ScoredDataset,
) -> anyhow::Result<()> {
    let mut out = BufWriter::new(std::fs::File::create(path)?);
    for ((pair, scores), win) in pairs.iter().zip(&scored.pairs).zip(wins(scored)) {
        let row = ExampleRow {
            id: &pair.id,
            subset: pair.subset.as_deref(),
            results: u8::from(win),
            scores_chosen: &scores.chosen,
            scores_rejected: &scores.rejected,
        };
        serde_json::to_writer(&mut out, &row)?;
        out.write_all(b"\n")?;
    }
    out.flush()?;
    Ok(())
}

pub struct Summary {
    json: serde_json::Value,
    accuracies: SubsetAccuracies,
    sections: Option<rewardbench::SectionScores>,
    accuracy: f64,
}

impl Summary {
    pub fn new(request: &ScoreRequest, pairs: &[PreferencePair], scored: &ScoredDataset) -> Self {
        let wins = wins(scored);
        let accuracy = rewardbench::cli_accuracy(wins.iter().copied()).unwrap_or(f64::NAN);
        let accuracies = rewardbench::subset_accuracies(
            pairs
                .iter()
                .zip(&wins)
                .filter_map(|(pair, &win)| Some((pair.subset.as_deref()?, win))),
        );
        let sections = rewardbench::section_scores(&accuracies, XstestWeighting::Current);
        let sections = (!sections.present.is_empty()).then_some(sections);
        let path = |p: &Path| p.display().to_string();
        let json = json!({
            "accuracy": accuracy,
            "num_prompts": pairs.len(),
            "model": path(&request.model),
            "ref_model": request.ref_model.as_deref().map(path),
            "tokenizer": path(request.tokenizer.as_deref().unwrap_or(&request.model)),
            "chat_template": scored.chat_template,
            "model_type": scored.model_type,
            "extra_results": accuracies,
            "sections": sections.as_ref().map(sections_json),
        });
        Self {
            json,
            accuracies,
            sections,
            accuracy,
        }
    }

    /// A plain-text table for the terminal.
    pub fn table(&self) -> String {
        let mut out = String::new();
        for (subset, accuracy) in &self.accuracies {
            let _ = writeln!(out, "{subset:<28} {accuracy:.4}");
        }
        if let Some(s) = &self.sections {
            let present: Vec<String> = rewardbench::Section::ALL
                .iter()
                .filter(|&&section| s.has_section(section))
                .map(|&section| format!("{} {:.4}", section.name(), s.get(section)))
                .collect();
            let _ = writeln!(
                out,
                "sections: {}  ({} of 23 subsets present)",
                present.join("  "),
                s.present.len()
            );
        }
        let _ = writeln!(out, "accuracy (all pairs) {:.4}", self.accuracy);
        out
    }
}

/// The sections that have at least one subset present; the overall Score only when all four do
/// (a mean over absent sections, which the reference counts as 0, would mislead).
fn sections_json(sections: &rewardbench::SectionScores) -> serde_json::Value {
    let mut out = serde_json::Map::new();
    for section in rewardbench::Section::ALL {
        if sections.has_section(section) {
            out.insert(section.name().to_string(), json!(sections.get(section)));
        }
    }
    if rewardbench::Section::ALL
        .iter()
        .all(|&s| sections.has_section(s))
    {
        out.insert("Score".to_string(), json!(sections.score()));
    }
    out.insert("missing_subsets".to_string(), json!(sections.missing));
    serde_json::Value::Object(out)
}

/// The summary beside the per-example file: `scores.jsonl` -> `scores.json`
/// (`scores.json` -> `scores.summary.json`, never the scores file itself).
pub fn summary_path(scores: &Path) -> std::path::PathBuf {
    if scores.extension().is_some_and(|e| e == "json") {
        scores.with_extension("summary.json")
    } else {
        scores.with_extension("json")
    }
}

pub fn write_summary(path: &Path, summary: &Summary) -> anyhow::Result<()> {
    let text = serde_json::to_string_pretty(&summary.json)?;
    std::fs::write(path, text + "\n")?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::summary_path;
    use std::path::Path;

    #[test]
    fn summary_never_overwrites_the_scores() {
        assert_eq!(
            summary_path(Path::new("out/s.jsonl")),
            Path::new("out/s.json")
        );
        assert_eq!(
            summary_path(Path::new("out/s.json")),
            Path::new("out/s.summary.json")
        );
        assert_eq!(summary_path(Path::new("out/s")), Path::new("out/s.json"));
    }
}
