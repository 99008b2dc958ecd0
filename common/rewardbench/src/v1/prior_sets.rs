//! Results on the prior preference sets, as `scripts/run_rm.py --pref_sets` makes them
//! (allenai/reward-bench HEAD `05a9005`, lines 334-394), and the original overall score that
//! weights them 0.5 (`analysis/get_benchmark_results.py::get_average_over_rewardbench`).
//!
//! - `pref-sets/{model}.json`: `results_grouped`: `model`, `model_type`, `chat_template`, and one
//!   `num_correct / num_total` per prior set (the split names; `np.unique` order). No section
//!   scores: `calculate_scores_per_section` runs only without `--pref_sets`.
//! - `pref-sets-scores/{model}.json`: the per-example columns of the core set's scores file
//!   (`text_chosen`, `text_rejected`, `results`, `subset` = the split, `id`, `scores_chosen`,
//!   `scores_rejected`) plus `model`, `model_type`, `chat_template` (the `--chat_template`
//!   argument).
//!
//! Both are written as `save_to_hub` writes them (`json.dumps(indent=4, sort_keys=True)`, no
//! newline) by the writers of [`crate::files`].

use std::path::{Path, PathBuf};

use crate::files::{EvalSetResults, EvalSetScores, ResultsError, ResultsKind, ScoredPair};

use super::{
    overall_with_prior_sets, prior_sets_score, section_scores, subset_accuracies, SectionScores,
    SubsetAccuracies, XstestWeighting, PRIOR_SETS,
};

/// What a run on the prior sets is called in its files.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PrefSetsRun {
    /// `args.model` (also the file name under `pref-sets/`).
    pub model: String,
    /// `"Seq. Classifier"`.
    pub model_type: String,
    /// The results dict's `chat_template`: `"tokenizer"` when the tokenizer's template was used,
    /// else the FastChat template name.
    pub chat_template_used: String,
    /// The scores file's `chat_template`: the `--chat_template` argument as given.
    pub chat_template_arg: String,
    /// The pipeline returns one float per row (StarlingPipeline, GRMPipeline): the scores file
    /// holds `x` where a `[batch, labels]` pipeline's holds `[x]`.
    pub scalar_scores: bool,
}

/// `results_grouped` of a run on the prior sets: one accuracy per split found in `pairs`.
pub fn pref_sets_results(run: &PrefSetsRun, pairs: &[ScoredPair]) -> EvalSetResults {
    let accuracies = subset_accuracies(pairs.iter().map(|p| (p.subset.as_str(), p.win)));
    EvalSetResults::new(
        run.model.clone(),
        run.model_type.clone(),
        Some(run.chat_template_used.clone()),
        accuracies,
    )
}

/// The per-example scores file of a run on the prior sets (`run_rm.py`'s columns).
pub fn pref_sets_scores(run: &PrefSetsRun, pairs: &[ScoredPair]) -> EvalSetScores {
    let scores = EvalSetScores::classifier(
        pairs,
        run.model.clone(),
        run.model_type.clone(),
        Some(run.chat_template_arg.clone()),
    );
    if run.scalar_scores {
        scores.with_scalar_scores()
    } else {
        scores
    }
}

/// The two files of a run, written under `results_dir` as `save_to_hub` names them
/// (`{results_dir}/pref-sets/{model}.json`, `{results_dir}/pref-sets-scores/{model}.json`);
/// returns their paths.
pub fn write_pref_sets(
    results_dir: &Path,
    run: &PrefSetsRun,
    pairs: &[ScoredPair],
) -> Result<(PathBuf, PathBuf), ResultsError> {
    let results = pref_sets_results(run, pairs).write_eval_set(
        results_dir,
        ResultsKind::PrefSets,
        &run.model,
    )?;
    let scores =
        pref_sets_scores(run, pairs).write(results_dir, ResultsKind::PrefSetsScores, &run.model)?;
    Ok((results, scores))
}

/// The overall score of a model run on both the core set and the prior sets.
#[derive(Clone, Debug, PartialEq)]
pub struct Overall {
    /// The four sections of the core set (`calculate_scores_per_section`).
    pub sections: SectionScores,
    /// "Prior Sets (0.5 weight)": the plain `np.nanmean` over [`PRIOR_SETS`]; NaN if none ran.
    pub prior_sets: f64,
    /// The score quoted today: the mean of the four sections.
    pub score: f64,
    /// The original leaderboard average, weights `[2, 2, 2, 2, 1]` (prior sets masked if NaN).
    pub weighted: f64,
    /// The prior sets missing from the prior-set accuracies.
    pub missing_prior_sets: Vec<&'static str>,
}

/// The overall score from the core set's per-subset accuracies and the prior sets' accuracies.
pub fn overall(
    core: &SubsetAccuracies,
    prior: &SubsetAccuracies,
    weighting: XstestWeighting,
) -> Overall {
    let sections = section_scores(core, weighting);
    let prior_sets = prior_sets_score(prior);
    Overall {
        score: sections.score(),
        weighted: overall_with_prior_sets(&sections, prior_sets),
        sections,
        prior_sets,
        missing_prior_sets: PRIOR_SETS
            .iter()
            .copied()
            .filter(|s| !prior.contains_key(*s))
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dataset::ExampleId;

    fn pair(subset: &str, win: bool) -> ScoredPair {
        ScoredPair {
            id: ExampleId::Int(0),
            subset: subset.into(),
            text_chosen: "c".into(),
            text_rejected: "r".into(),
            win,
            scores_chosen: vec![1.0],
            scores_rejected: vec![if win { 0.0 } else { 2.0 }],
        }
    }

    #[test]
    fn one_accuracy_per_split() {
        let run = PrefSetsRun {
            model: "m".into(),
            model_type: "Seq. Classifier".into(),
            chat_template_used: "tokenizer".into(),
            chat_template_arg: "tulu".into(),
            scalar_scores: false,
        };
        let pairs = [
            pair("shp", true),
            pair("shp", false),
            pair("summarize", true),
        ];
        let results = pref_sets_results(&run, &pairs);
        assert_eq!(results.accuracies.len(), 2);
        assert_eq!(results.accuracies["shp"], 0.5);
        assert_eq!(results.accuracies["summarize"], 1.0);
        assert_eq!(results.chat_template.as_deref(), Some("tokenizer"));
        assert_eq!(
            pref_sets_scores(&run, &pairs).chat_template.as_deref(),
            Some("tulu")
        );
    }

    #[test]
    fn missing_prior_sets_are_listed_and_masked() {
        let prior: SubsetAccuracies = [("shp".to_string(), 0.25), ("mtbench_gpt4".into(), 1.0)]
            .into_iter()
            .collect();
        let o = overall(&SubsetAccuracies::new(), &prior, XstestWeighting::Current);
        assert_eq!(o.prior_sets, 0.25);
        assert_eq!(
            o.missing_prior_sets,
            ["anthropic_helpful", "anthropic_hhh", "summarize"]
        );
        // four empty sections (0 each, as the reference) and the prior sets at weight 1 of 9
        assert_eq!(o.weighted, 0.25 / 9.0);
    }
}
