//! `worker score --pref-sets`: the prior preference sets (`allenai/pref-test-sets`) as
//! RewardBench's `scripts/run_rm.py --pref_sets` scores them, with its result files
//! (`pref-sets/{model}.json`, `pref-sets-scores/{model}.json`) and, given the model's core-set
//! results, the original overall score that weights the prior sets 0.5.

use std::path::{Component, Path, PathBuf};

use anyhow::Context;
use clap::Args;

use herd_engine::encode::format_pair;
use herd_engine::models::{HeadKind, ModelSpec};
use herd_engine::scorer::{request_formatter, ScoreRequest, ScoredDataset};
use herd_rewardbench::dataset::PreferencePair;
use herd_rewardbench::files::{EvalSetResults, ScoredPair};
use herd_rewardbench::v1::prior_sets::{overall, pref_sets_results, write_pref_sets, PrefSetsRun};
use herd_rewardbench::v1::{is_win, section_scores, SubsetAccuracies, XstestWeighting};
use herd_storage::hub::{load_pref_test_sets, HubOptions, PREF_TEST_SETS};

#[derive(Args)]
#[command(next_help_heading = "Prior preference sets")]
pub struct PrefSetsArgs {
    /// score the prior preference sets (anthropic_helpful, anthropic_hhh, shp, summarize, ...)
    /// as run_rm.py --pref_sets does: --dataset is then a local copy of allenai/pref-test-sets
    /// (a folder with data/<split>-*.parquet) or an hf:// source (default
    /// hf://datasets/allenai/pref-test-sets); writes pref-sets/ and pref-sets-scores/ under
    /// --results-dir
    #[arg(long)]
    pub pref_sets: bool,
    /// where the pref-sets/ and pref-sets-scores/ files go (run_rm.py: ./results)
    #[arg(long, default_value = "results", requires = "pref_sets")]
    pub results_dir: PathBuf,
    /// the model's name in those files and their paths (default: --model as given; a `/`
    /// makes sub-folders, `..` is refused)
    #[arg(long, value_name = "NAME", requires = "pref_sets")]
    pub results_name: Option<String>,
    /// the model's RewardBench core-set results (eval-set/{model}.json or metrics.json): prints
    /// the overall score with the prior sets weighted 0.5 ([2, 2, 2, 2, 1])
    #[arg(long, value_name = "FILE", requires = "pref_sets")]
    pub core_results: Option<PathBuf>,
}

/// The prior sets from `--dataset` (or the Hub), in the reference's order.
pub fn load_pairs(dataset: Option<&str>) -> anyhow::Result<Vec<PreferencePair>> {
    let source = dataset.unwrap_or(PREF_TEST_SETS);
    let (rows, warnings) = load_pref_test_sets(source, &HubOptions::from_env())?;
    for warning in &warnings {
        eprintln!("warning: {warning}");
    }
    Ok(rows.into_iter().map(|row| row.pair).collect())
}

/// What is checked before any scoring: the name the files carry (not empty, no `..` component:
/// it becomes a path under `--results-dir`) and the core-set results (readable, all 23 subsets).
pub struct Prepared {
    name: String,
    core: Option<SubsetAccuracies>,
}

pub fn prepare(args: &PrefSetsArgs, model: &Path) -> anyhow::Result<Prepared> {
    let core = match &args.core_results {
        Some(path) => {
            let core = EvalSetResults::read(path)?.accuracies;
            let missing = section_scores(&core, XstestWeighting::Current).missing;
            anyhow::ensure!(
                missing.is_empty(),
                "{}: the core-set results lack {} of the 23 RewardBench subsets ({})",
                path.display(),
                missing.len(),
                missing.join(", ")
            );
            Some(core)
        }
        None => None,
    };
    Ok(Prepared {
        name: results_name(args, model)?,
        core,
    })
}

fn results_name(args: &PrefSetsArgs, model: &Path) -> anyhow::Result<String> {
    let name = match &args.results_name {
        Some(name) => name.clone(),
        None => model
            .to_str()
            .with_context(|| format!("{}: the model path is not UTF-8", model.display()))?
            .to_owned(),
    };
    anyhow::ensure!(
        !name.is_empty() && !name.contains('\0'),
        "--results-name: empty or NUL in {name:?}"
    );
    anyhow::ensure!(
        !Path::new(&name)
            .components()
            .any(|c| c == Component::ParentDir),
        "results name {name:?} has a `..` component and would leave --results-dir; pass \
         --results-name NAME"
    );
    Ok(name)
}

/// `run_rm.py` scores sequence classifiers; DPO models go through `run_dpo.py`, whose prior-set
/// files are not written by herd.
pub fn check_model(spec: &ModelSpec, model: &Path) -> anyhow::Result<()> {
    anyhow::ensure!(
        spec.head == HeadKind::SequenceClassification,
        "{}: --pref-sets writes run_rm.py's files for sequence classifiers; this is a causal LM \
         (DPO, run_dpo.py), which --pref-sets does not cover",
        model.display()
    );
    Ok(())
}

/// Writes the two result files and prints the prior-set score (and the overall, with
/// `--core-results`).
pub fn write_results(
    args: &PrefSetsArgs,
    prepared: Prepared,
    request: &ScoreRequest,
    spec: &ModelSpec,
    pairs: &[PreferencePair],
    scored: &ScoredDataset,
) -> anyhow::Result<()> {
    // the texts the scores file carries: the formatter the scorer chose
    let formatter = request_formatter(request, spec)?;
    let mut rows = Vec::with_capacity(pairs.len());
    for (pair, scores) in pairs.iter().zip(&scored.pairs) {
        let texts = format_pair(&formatter, pair)?;
        rows.push(ScoredPair {
            id: pair.id.clone(),
            subset: pair.subset.clone().unwrap_or_default(),
            text_chosen: texts.chosen,
            text_rejected: texts.rejected,
            win: is_win(&scores.chosen, &scores.rejected),
            scores_chosen: scores.chosen.clone(),
            scores_rejected: scores.rejected.clone(),
        });
    }
    let run = PrefSetsRun {
        model: prepared.name,
        model_type: scored.model_type.to_owned(),
        chat_template_used: scored.chat_template.clone(),
        chat_template_arg: request.chat_template.clone(),
        scalar_scores: scored.scalar,
    };
    let (results_file, scores_file) = write_pref_sets(&args.results_dir, &run, &rows)?;
    eprintln!(
        "prior sets -> {} and {}",
        results_file.display(),
        scores_file.display()
    );
    let prior = pref_sets_results(&run, &rows).accuracies;
    let core = prepared.core.clone().unwrap_or_default();
    let o = overall(&core, &prior, XstestWeighting::Current);
    eprintln!(
        "Prior Sets (0.5 weight) {:.4}{}",
        o.prior_sets,
        if o.missing_prior_sets.is_empty() {
            String::new()
        } else {
            format!("  (missing: {})", o.missing_prior_sets.join(", "))
        }
    );
    if prepared.core.is_some() {
        eprintln!(
            "Score (mean of 4 sections) {:.4}  overall with prior sets [2,2,2,2,1] {:.4}",
            o.score, o.weighted
        );
    }
    Ok(())
}
