//! What `worker score` writes: per-example scores (JSONL, like the rewardbench CLI's
//! `_outputs.jsonl`) and a summary in the CLI's `{model}.json` layout, plus section scores.

use std::fmt::Write as _;
use std::io::{BufWriter, Write};
use std::path::Path;

use serde::Serialize;
use serde_json::json;

use herd_rewardbench::dataset::{ExampleId, PreferencePair};
use herd_rewardbench::v1::{self as rewardbench, SubsetAccuracies, XstestWeighting};

use herd_engine::scorer::{ScoreRequest, ScoredDataset};

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
