//! Result files compatible with the RewardBench tools, byte for byte.
//!
//! What `allenai/reward-bench` writes (read at `82bd441`, 2024-09-12, unchanged at HEAD `05a9005`):
//!
//! - `scripts/run_rm.py` / `scripts/run_dpo.py` through `rewardbench/utils.py::save_to_hub`:
//!   - `./results/eval-set/{model}.json`: the per-model dict (`model`, (`ref_model`,) `model_type`,
//!     `chat_template`, one accuracy per subset) as `json.dumps(d, indent=4, sort_keys=True)`,
//!     no trailing newline ([`EvalSetResults::eval_set_json`]); `pref-sets/` with `--pref_sets`.
//!   - `/output/metrics.json` (Beaker): the same dict as `json.dump(d, f)`: insertion order,
//!     default separators, no newline ([`EvalSetResults::metrics_json`]).
//!   - `./results/eval-set-scores/{model}.json`: `out_dataset.to_dict()` plus `model`,
//!     `model_type`, `chat_template`, again `json.dumps(indent=4, sort_keys=True)`
//!     ([`EvalSetScores`]).
//! - `scripts/run_v2.py` (RewardBench 2, HEAD `05a9005`), through the same `save_to_hub`:
//!   `./results/eval-set/{model}.json` with one score per subset ([`EvalSetResults::best_of_n`])
//!   and `./results/eval-set-scores/{model}.json` with the rerolled rows
//!   ([`EvalSetScores::best_of_n`]).
//! - the `rewardbench` CLI (`rewardbench/rewardbench.py` of rewardbench 0.1.4):
//!   `{output_dir}{model}.json` ([`CliResults`], preference data only),
//!   `os.path.join(output_dir, f"{model}_outputs.jsonl")` ([`CliOutputs`], or
//!   [`CliInstructionOutputs`] for instruction data) and, with `--save_all`,
//!   `{output_dir}{model}_all.jsonl` ([`CliAllScores`]).
//!
//! The JSON text is produced by [`pyjson::dumps`], a transcription of CPython's `json` encoder
//! (`ensure_ascii=True`, `allow_nan=True`), with floats written by [`pyjson::float_repr`]
//! (Python's `repr(float)`: shortest round-trip digits, `1e-05`, `2.5e+20`, `1.0`, `-0.0`). Model
//! names with `/` become sub-folders, as the Python f-strings make them.
//!
//! Reading: [`pyjson::loads`] parses JSON the way Python's `json.loads` does (NaN/Infinity
//! accepted, integers kept apart from floats, key order kept, a repeated key keeps its first
//! position and its last value), and [`EvalSetResults::read`] reads an existing `metrics.json` or
//! `eval-set/{model}.json` so that past results can join a sweep; errors name the file and key.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::path::{Path, PathBuf};

use crate::dataset::ExampleId;
use crate::pyjson::{self, PyDict, PyJsonError, PyValue};
use crate::v1::SubsetAccuracies;
use crate::v2::{best_of_n_credit, Rb2Scores, ScoredRow};

// ------------------------------------------------------------------------------------------------
// Paths
// ------------------------------------------------------------------------------------------------

/// The folders `save_to_hub` writes under `./results/`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ResultsKind {
    /// `eval-set/`: the per-model dict (RewardBench core set).
    EvalSet,
    /// `eval-set-scores/`: the per-example scores of the core set.
    EvalSetScores,
    /// `pref-sets/`: the per-model dict on the prior preference sets (`--pref_sets`).
    PrefSets,
    /// `pref-sets-scores/`: the per-example scores on the prior preference sets.
    PrefSetsScores,
}

impl ResultsKind {
    /// The `target_path` string: `"eval-set/"`, `"eval-set-scores/"`, ...
    pub fn target_path(self) -> &'static str {
        match self {
            ResultsKind::EvalSet => "eval-set/",
            ResultsKind::EvalSetScores => "eval-set-scores/",
            ResultsKind::PrefSets => "pref-sets/",
            ResultsKind::PrefSetsScores => "pref-sets-scores/",
        }
    }
}

fn concat_path(parts: &[&std::ffi::OsStr]) -> PathBuf {
    let mut s = OsString::new();
    for part in parts {
        s.push(part);
    }
    PathBuf::from(s)
}

/// `f"{results_dir}/{target_path}{name}.json"` as `save_to_hub` builds it (with `results_dir` the
/// `./results` folder): a `/` in the name makes sub-folders, and a name starting with `/` (a
/// local model path) lands under the folder too (`eval-set//abs/path.json`). `name` is the model
/// name plus the save modifier (`_ref_free` for reference-free DPO).
pub fn results_path(results_dir: &Path, kind: ResultsKind, name: &str) -> PathBuf {
    concat_path(&[
        results_dir.as_os_str(),
        "/".as_ref(),
        kind.target_path().as_ref(),
        name.as_ref(),
        ".json".as_ref(),
    ])
}

/// The two paths the `rewardbench` CLI writes: `output_dir + model + ".json"` (plain string
/// concatenation, so `output_dir` should end with `/`, as its default `results/` does) and
/// `os.path.join(output_dir, f"{model}_outputs.jsonl")` (where a model starting with `/` discards
/// `output_dir`, as Python's `os.path.join` does).
pub fn cli_paths(output_dir: &str, model: &str) -> (PathBuf, PathBuf) {
    let json = PathBuf::from(format!("{output_dir}{model}.json"));
    let outputs_name = format!("{model}_outputs.jsonl");
    let outputs = if outputs_name.starts_with('/') || output_dir.is_empty() {
        PathBuf::from(outputs_name)
    } else if output_dir.ends_with('/') {
        PathBuf::from(format!("{output_dir}{outputs_name}"))
    } else {
        PathBuf::from(format!("{output_dir}/{outputs_name}"))
    };
    (json, outputs)
}

/// Why a result file could not be read or written. Every message starts with the file.
#[derive(Debug, thiserror::Error)]
pub enum ResultsError {
    #[error("{file}: {source}")]
    Io {
        file: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{file}: invalid JSON: {source}")]
    Json {
        file: String,
        #[source]
        source: PyJsonError,
    },
    #[error("{file}: {reason}")]
    Layout { file: String, reason: String },
    #[error("{file}: key \"{key}\": {reason}")]
    Key {
        file: String,
        key: String,
        reason: String,
    },
    /// Columns of a table of different lengths.
    #[error("{what}: column \"{column}\" has {len} rows, expected {expected}")]
    Ragged {
        what: String,
        column: String,
        len: usize,
        expected: usize,
    },
}

fn write_file(path: &Path, text: &str) -> Result<(), ResultsError> {
    let io = |source| ResultsError::Io {
        file: path.display().to_string(),
        source,
    };
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(io)?;
    }
    std::fs::write(path, text).map_err(io)
}

/// Reads a JSON file with [`pyjson::loads`], naming the file in errors.
pub fn read_py_json(path: &Path) -> Result<PyValue, ResultsError> {
    let file = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|source| ResultsError::Io {
        file: file.clone(),
        source,
    })?;
    pyjson::loads(&text).map_err(|source| ResultsError::Json { file, source })
}

// ------------------------------------------------------------------------------------------------
// eval-set/{model}.json and metrics.json
// ------------------------------------------------------------------------------------------------

/// `model_type` of a DPO model scored against a reference model.
pub const MODEL_TYPE_DPO: &str = "DPO";
/// `model_type` of a reference-free DPO run (`run_dpo.py` without `--ref_model`).
pub const MODEL_TYPE_DPO_REF_FREE: &str = "DPO Ref. Free";

/// The name a model's results are saved under (`save_to_hub(..., args.model + save_modifier,
/// ...)`): `run_dpo.py` sets `save_modifier = "_ref_free"` for reference-free runs and `""`
/// otherwise; `run_rm.py` saves under the model name. `model_type` is the dict's `model_type`.
pub fn results_name(model: &str, model_type: &str) -> String {
    if model_type == MODEL_TYPE_DPO_REF_FREE {
        format!("{model}_ref_free")
    } else {
        model.to_owned()
    }
}

/// The per-model dict of `run_rm.py` / `run_dpo.py` (`results_grouped`).
#[derive(Clone, Debug, PartialEq)]
pub struct EvalSetResults {
    /// `args.model`.
    pub model: String,
    /// `run_dpo.py` only: `Some(None)` writes `"ref_model": null` (reference-free), `None` leaves
    /// the key out (`run_rm.py`).
    pub ref_model: Option<Option<String>>,
    /// `"Seq. Classifier"`, `"DPO"`, `"DPO Ref. Free"`, ... (`REWARD_MODEL_CONFIG[...]["model_type"]`).
    pub model_type: String,
    /// `"tokenizer"` when the tokenizer's own template was used, else the FastChat template name;
    /// `None` writes `null`.
    pub chat_template: Option<String>,
    /// `num_correct / num_total` per subset present (written in sorted order, like `np.unique`).
    pub accuracies: SubsetAccuracies,
    /// Keys read from a file that are none of the above (kept by [`EvalSetResults::read`], written
    /// after the accuracies by [`EvalSetResults::to_dict`]).
    pub extra: PyDict,
}

impl EvalSetResults {
    /// A `run_rm.py` dict (no `ref_model` key).
    pub fn new(
        model: impl Into<String>,
        model_type: impl Into<String>,
        chat_template: Option<String>,
        accuracies: SubsetAccuracies,
    ) -> Self {
        EvalSetResults {
            model: model.into(),
            ref_model: None,
            model_type: model_type.into(),
            chat_template,
            accuracies,
            extra: Vec::new(),
        }
    }

    /// A `scripts/run_dpo.py` dict: `ref_model` always written (`null` when reference-free),
    /// `model_type` `"DPO"` or `"DPO Ref. Free"`, and `chat_template` `"tokenizer"`: run_dpo.py
    /// writes `args.chat_template if not hasattr(tokenizer, "chat_template") else "tokenizer"`,
    /// and every transformers tokenizer has that attribute (`PreTrainedTokenizerBase.__init__`
    /// sets it, `None` when the tokenizer has no template), so it is always `"tokenizer"`. Save it
    /// under [`results_name`].
    pub fn dpo(
        model: impl Into<String>,
        ref_model: Option<String>,
        accuracies: SubsetAccuracies,
    ) -> Self {
        let model_type = if ref_model.is_some() {
            MODEL_TYPE_DPO
        } else {
            MODEL_TYPE_DPO_REF_FREE
        };
        EvalSetResults {
            ref_model: Some(ref_model),
            ..EvalSetResults::new(model, model_type, Some("tokenizer".into()), accuracies)
        }
    }

    /// The dict in the order the scripts build it: `model`, (`ref_model`,) `model_type`,
    /// `chat_template`, the subsets sorted, then any extra keys.
    pub fn to_dict(&self) -> PyDict {
        let mut d: PyDict = vec![("model".into(), self.model.as_str().into())];
        if let Some(ref_model) = &self.ref_model {
            d.push(("ref_model".into(), ref_model.clone().into()));
        }
        d.push(("model_type".into(), self.model_type.as_str().into()));
        d.push(("chat_template".into(), self.chat_template.clone().into()));
        for (subset, acc) in &self.accuracies {
            d.push((subset.clone(), PyValue::Float(*acc)));
        }
        d.extend(self.extra.iter().cloned());
        d
    }

    /// `run_v2.py`'s `results_grouped`: `model`, `model_type` (`"Seq. Classifier"`, the only
    /// one of `REWARD_MODEL_CONFIG["default_v2"]`), `chat_template` (`"tokenizer"` or the FastChat
    /// name), then one score per subset present (the Ties composite for Ties).
    pub fn best_of_n(model: impl Into<String>, chat_template: &str, scores: &Rb2Scores) -> Self {
        EvalSetResults::new(
            model,
            "Seq. Classifier",
            Some(chat_template.to_owned()),
            scores.subsets.clone(),
        )
    }

    /// `results/eval-set/{model}.json`: `json.dumps(d, indent=4, sort_keys=True)`, no newline.
    pub fn eval_set_json(&self) -> String {
        pyjson::dumps(&PyValue::Dict(self.to_dict()), Some(4), true)
    }

    /// Beaker's `/output/metrics.json`: `json.dump(d, f)` (insertion order, one line, no newline).
    pub fn metrics_json(&self) -> String {
        pyjson::dumps(&PyValue::Dict(self.to_dict()), None, false)
    }

    /// Writes [`Self::eval_set_json`] to [`results_path`]`(results_dir, kind, name)` (creating the
    /// folders) and returns the path. `kind` is [`ResultsKind::EvalSet`] or
    /// [`ResultsKind::PrefSets`]; `name` is the model name plus any save modifier.
    pub fn write_eval_set(
        &self,
        results_dir: &Path,
        kind: ResultsKind,
        name: &str,
    ) -> Result<PathBuf, ResultsError> {
        let path = results_path(results_dir, kind, name);
        write_file(&path, &self.eval_set_json())?;
        Ok(path)
    }

    /// Writes [`Self::metrics_json`] to `path` (creating its folder).
    pub fn write_metrics(&self, path: &Path) -> Result<(), ResultsError> {
        write_file(path, &self.metrics_json())
    }

    /// Reads an existing `metrics.json` or `eval-set/{model}.json` (either layout).
    pub fn read(path: &Path) -> Result<Self, ResultsError> {
        let value = read_py_json(path)?;
        Self::from_value(&path.display().to_string(), &value)
    }

    /// Interprets a parsed results dict; `file` names the source in errors. `model` must be a
    /// string; `model_type` a string (missing: `""`); `chat_template` a string or null (missing:
    /// null); `ref_model`, if present, a string or null. Every other key holding a number is a
    /// subset accuracy (ints are taken as floats); keys holding anything else are kept in
    /// `extra`.
    pub fn from_value(file: &str, value: &PyValue) -> Result<Self, ResultsError> {
        let dict = value.as_dict().ok_or_else(|| ResultsError::Layout {
            file: file.to_owned(),
            reason: format!(
                "expected a JSON object (the results dict), found {}",
                value.type_name()
            ),
        })?;
        let key_error = |key: &str, reason: String| ResultsError::Key {
            file: file.to_owned(),
            key: key.to_owned(),
            reason,
        };
        let mut results = EvalSetResults::new(String::new(), String::new(), None, BTreeMap::new());
        let mut saw_model = false;
        for (key, v) in dict {
            match key.as_str() {
                "model" => {
                    results.model = v
                        .as_str()
                        .ok_or_else(|| {
                            key_error(key, format!("expected a string, found {}", v.type_name()))
                        })?
                        .to_owned();
                    saw_model = true;
                }
                "model_type" => {
                    results.model_type = v
                        .as_str()
                        .ok_or_else(|| {
                            key_error(key, format!("expected a string, found {}", v.type_name()))
                        })?
                        .to_owned();
                }
                "chat_template" | "ref_model" => {
                    let s = match v {
                        PyValue::Null => None,
                        PyValue::Str(s) => Some(s.clone()),
                        _ => {
                            return Err(key_error(
                                key,
                                format!("expected a string or null, found {}", v.type_name()),
                            ))
                        }
                    };
                    if key == "chat_template" {
                        results.chat_template = s;
                    } else {
                        results.ref_model = Some(s);
                    }
                }
                _ => match v.as_f64() {
                    Some(acc) => {
                        results.accuracies.insert(key.clone(), acc);
                    }
                    None => results.extra.push((key.clone(), v.clone())),
                },
            }
        }
        if !saw_model {
            return Err(key_error("model", "missing".into()));
        }
        Ok(results)
    }
}

// ------------------------------------------------------------------------------------------------
// eval-set-scores/{model}.json
// ------------------------------------------------------------------------------------------------

/// One scored pair, as `run_rm.py` keeps it.
#[derive(Clone, Debug, PartialEq)]
pub struct ScoredPair {
    pub id: ExampleId,
    pub subset: String,
    /// The formatted chosen conversation (`text_chosen`).
    pub text_chosen: String,
    pub text_rejected: String,
    /// The strict win (`results`: 1 or 0).
    pub win: bool,
    /// The model's output for the chosen text: `logits.tolist()` of the row, `[x]` for one label.
    pub scores_chosen: Vec<f64>,
    pub scores_rejected: Vec<f64>,
}

/// `results/eval-set-scores/{model}.json`: a column dict (`out_dataset.to_dict()`) plus the scalar
/// keys `model`, `model_type`, `chat_template`, written with `json.dumps(indent=4,
/// sort_keys=True)`. Build it with [`EvalSetScores::classifier`] (the `run_rm.py` layout) or
/// [`EvalSetScores::dpo`], or fill `columns` directly.
#[derive(Clone, Debug, PartialEq)]
pub struct EvalSetScores {
    /// Column name → one value per row.
    pub columns: Vec<(String, Vec<PyValue>)>,
    pub model: String,
    pub model_type: String,
    /// `args.chat_template` (not `"tokenizer"`: `run_rm.py` writes the argument here); `None`
    /// writes `null`.
    pub chat_template: Option<String>,
}

impl From<&ExampleId> for PyValue {
    fn from(id: &ExampleId) -> Self {
        match id {
            ExampleId::Int(n) => PyValue::Int(*n),
            ExampleId::Str(s) => PyValue::Str(s.clone()),
        }
    }
}

fn pair_columns(pairs: &[ScoredPair]) -> [(String, Vec<PyValue>); 4] {
    [
        (
            "text_chosen".into(),
            pairs
                .iter()
                .map(|p| p.text_chosen.as_str().into())
                .collect(),
        ),
        (
            "text_rejected".into(),
            pairs
                .iter()
                .map(|p| p.text_rejected.as_str().into())
                .collect(),
        ),
        (
            "results".into(),
            pairs
                .iter()
                .map(|p| PyValue::Int(i64::from(p.win)))
                .collect(),
        ),
        (
            "subset".into(),
            pairs.iter().map(|p| p.subset.as_str().into()).collect(),
        ),
    ]
}

fn float_list(xs: &[f64]) -> PyValue {
    PyValue::List(xs.iter().map(|&x| PyValue::Float(x)).collect())
}

impl EvalSetScores {
    /// `run_rm.py`: columns `text_chosen`, `text_rejected`, `results`, `subset`, `id`,
    /// `scores_chosen`, `scores_rejected`, the scores as one list per row (`[[x], ...]`).
    pub fn classifier(
        pairs: &[ScoredPair],
        model: impl Into<String>,
        model_type: impl Into<String>,
        chat_template: Option<String>,
    ) -> Self {
        let mut columns: Vec<(String, Vec<PyValue>)> = pair_columns(pairs).into();
        columns.push(("id".into(), pairs.iter().map(|p| (&p.id).into()).collect()));
        columns.push((
            "scores_chosen".into(),
            pairs.iter().map(|p| float_list(&p.scores_chosen)).collect(),
        ));
        columns.push((
            "scores_rejected".into(),
            pairs
                .iter()
                .map(|p| float_list(&p.scores_rejected))
                .collect(),
        ));
        EvalSetScores {
            columns,
            model: model.into(),
            model_type: model_type.into(),
            chat_template,
        }
    }

    /// The same file for a pipeline returning one float per row (`[batch]` tensors:
    /// StarlingPipeline, GRMPipeline): every one-element `scores_chosen` / `scores_rejected` list
    /// becomes its float, as `rewards.float().cpu().numpy().tolist()` gives them to run_rm.py.
    pub fn with_scalar_scores(mut self) -> Self {
        for (name, values) in &mut self.columns {
            if name == "scores_chosen" || name == "scores_rejected" {
                for value in values.iter_mut() {
                    if let PyValue::List(items) = value {
                        if let [single] = items.as_slice() {
                            *value = single.clone();
                        }
                    }
                }
            }
        }
        self
    }

    /// `scripts/run_dpo.py`: `text_chosen`, `text_rejected`, `results`, `subset`, `prompt` (the
    /// templated prompt, one per pair) and the scores as one float per row (the first element of
    /// each score list). No `id` column: run_dpo.py loads `keep_columns=["text_chosen",
    /// "text_rejected", "id", "prompt"]`, copies the ids out and then `remove_columns("id")`
    /// before `out_dataset.to_dict()`. Its `model_type` key is always `"DPO"` and its
    /// `chat_template` is `args.chat_template` (also for reference-free runs, as upstream writes
    /// them).
    pub fn dpo(
        pairs: &[ScoredPair],
        prompts: &[String],
        model: impl Into<String>,
        chat_template: Option<String>,
    ) -> Self {
        let mut columns: Vec<(String, Vec<PyValue>)> = pair_columns(pairs).into();
        columns.push((
            "prompt".into(),
            prompts.iter().map(|p| p.as_str().into()).collect(),
        ));
        let first = |xs: &[f64]| xs.first().map_or(PyValue::Null, |&x| PyValue::Float(x));
        columns.push((
            "scores_chosen".into(),
            pairs.iter().map(|p| first(&p.scores_chosen)).collect(),
        ));
        columns.push((
            "scores_rejected".into(),
            pairs.iter().map(|p| first(&p.scores_rejected)).collect(),
        ));
        EvalSetScores {
            columns,
            model: model.into(),
            model_type: "DPO".into(),
            chat_template,
        }
    }

    /// `run_v2.py`: `out_dataset.to_dict()` after `reroll_and_score_dataset`, one row per prompt
    /// in dataset order: `text` (each completion after the chat template), `scores` (`[[x], ...]`,
    /// one single-label logit list per completion), `results` (the best-of-N credit), `subset`,
    /// `id`, `num_correct`; then `model`, `model_type` and `chat_template` (`"tokenizer"` or the
    /// FastChat name). `texts[i]` are the formatted completions of `rows[i]`.
    ///
    /// `results` is `(1 / np.sum(scores == max)) if scores[0] == max else 0`: a float where the
    /// chosen completion has the top score and the int 0 elsewhere, so pandas makes the column
    /// float64 (`0.0`) if any row has credit and int64 (`0`) if none does.
    pub fn best_of_n(
        rows: &[ScoredRow],
        texts: &[Vec<String>],
        model: impl Into<String>,
        chat_template: &str,
    ) -> Result<Self, ResultsError> {
        if texts.len() != rows.len() {
            return Err(ResultsError::Ragged {
                what: "RewardBench 2 scores".into(),
                column: "text".into(),
                len: texts.len(),
                expected: rows.len(),
            });
        }
        for (i, (row, text)) in rows.iter().zip(texts).enumerate() {
            if text.len() != row.scores.len() {
                return Err(ResultsError::Ragged {
                    what: format!("RewardBench 2 scores, row {} (id {})", i + 1, row.id),
                    column: "text".into(),
                    len: text.len(),
                    expected: row.scores.len(),
                });
            }
        }
        let credits: Vec<f64> = rows.iter().map(|r| best_of_n_credit(&r.scores)).collect();
        let any_credit = credits.iter().any(|&c| c > 0.0);
        let results = credits
            .iter()
            .map(|&c| {
                if any_credit {
                    PyValue::Float(c)
                } else {
                    PyValue::Int(0)
                }
            })
            .collect();
        let columns = vec![
            (
                "text".to_owned(),
                texts
                    .iter()
                    .map(|t| PyValue::List(t.iter().map(|s| s.as_str().into()).collect()))
                    .collect(),
            ),
            (
                "scores".to_owned(),
                rows.iter()
                    .map(|r| PyValue::List(r.scores.iter().map(|&x| float_list(&[x])).collect()))
                    .collect(),
            ),
            ("results".to_owned(), results),
            (
                "subset".to_owned(),
                rows.iter().map(|r| r.subset.as_str().into()).collect(),
            ),
            (
                "id".to_owned(),
                rows.iter().map(|r| (&r.id).into()).collect(),
            ),
            (
                "num_correct".to_owned(),
                rows.iter()
                    .map(|r| PyValue::Int(r.num_correct as i64))
                    .collect(),
            ),
        ];
        Ok(EvalSetScores {
            columns,
            model: model.into(),
            model_type: "Seq. Classifier".into(),
            chat_template: Some(chat_template.to_owned()),
        })
    }

    /// The file of scored preference pairs as the script for `model_type` writes it: run_dpo.py's
    /// ([`EvalSetScores::dpo`], which needs `prompts`) for `"DPO"` and `"DPO Ref. Free"`, else
    /// run_rm.py's ([`EvalSetScores::classifier`]). `chat_template` is the scripts'
    /// `args.chat_template`; save it under [`results_name`]`(model, model_type)`.
    pub fn of_pairs(
        pairs: &[ScoredPair],
        prompts: Option<&[String]>,
        model: &str,
        model_type: &str,
        chat_template: Option<String>,
    ) -> Result<Self, ResultsError> {
        if model_type != MODEL_TYPE_DPO && model_type != MODEL_TYPE_DPO_REF_FREE {
            return Ok(EvalSetScores::classifier(
                pairs,
                model,
                model_type,
                chat_template,
            ));
        }
        let prompts = prompts.ok_or_else(|| ResultsError::Layout {
            file: format!("eval-set-scores/{}.json", results_name(model, model_type)),
            reason: "a DPO model's file has a prompt column, and no prompts were given".into(),
        })?;
        if prompts.len() != pairs.len() {
            return Err(ResultsError::Ragged {
                what: format!("eval-set-scores/{}.json", results_name(model, model_type)),
                column: "prompt".into(),
                len: prompts.len(),
                expected: pairs.len(),
            });
        }
        Ok(EvalSetScores::dpo(pairs, prompts, model, chat_template))
    }

    /// The dict: the columns, then `model`, `model_type`, `chat_template`.
    pub fn to_dict(&self) -> PyDict {
        let mut d: PyDict = self
            .columns
            .iter()
            .map(|(name, values)| (name.clone(), PyValue::List(values.clone())))
            .collect();
        d.push(("model".into(), self.model.as_str().into()));
        d.push(("model_type".into(), self.model_type.as_str().into()));
        d.push(("chat_template".into(), self.chat_template.clone().into()));
        d
    }

    /// The file text: `json.dumps(d, indent=4, sort_keys=True)`, no newline.
    pub fn to_json(&self) -> String {
        pyjson::dumps(&PyValue::Dict(self.to_dict()), Some(4), true)
    }

    /// Writes [`Self::to_json`] to [`results_path`]`(results_dir, kind, name)` and returns the path
    /// (`kind`: [`ResultsKind::EvalSetScores`] or [`ResultsKind::PrefSetsScores`]).
    pub fn write(
        &self,
        results_dir: &Path,
        kind: ResultsKind,
        name: &str,
    ) -> Result<PathBuf, ResultsError> {
        let path = results_path(results_dir, kind, name);
        write_file(&path, &self.to_json())?;
        Ok(path)
    }
}

// ------------------------------------------------------------------------------------------------
// The rewardbench CLI: {model}.json, {model}_outputs.jsonl and {model}_all.jsonl
// ------------------------------------------------------------------------------------------------

/// `{output_dir}{model}.json` of the `rewardbench` CLI (`final_results`).
#[derive(Clone, Debug, PartialEq)]
pub struct CliResults {
    /// `sum(results) / len(results)` over all rows ([`crate::v1::cli_accuracy`]).
    pub accuracy: f64,
    pub num_prompts: usize,
    pub model: String,
    pub ref_model: Option<String>,
    /// `args.tokenizer` or else `args.model`.
    pub tokenizer: String,
    pub chat_template: Option<String>,
    /// Per-subset accuracies, only for the `allenai/reward-bench` dataset (else `null`).
    pub extra_results: Option<SubsetAccuracies>,
}

impl CliResults {
    pub fn to_dict(&self) -> PyDict {
        vec![
            ("accuracy".into(), PyValue::Float(self.accuracy)),
            ("num_prompts".into(), PyValue::Int(self.num_prompts as i64)),
            ("model".into(), self.model.as_str().into()),
            ("ref_model".into(), self.ref_model.clone().into()),
            ("tokenizer".into(), self.tokenizer.as_str().into()),
            ("chat_template".into(), self.chat_template.clone().into()),
            (
                "extra_results".into(),
                match &self.extra_results {
                    Some(acc) => PyValue::Dict(
                        acc.iter()
                            .map(|(k, v)| (k.clone(), PyValue::Float(*v)))
                            .collect(),
                    ),
                    None => PyValue::Null,
                },
            ),
        ]
    }

    /// `json.dump(final_results, f)`: one line, no newline.
    pub fn to_json(&self) -> String {
        pyjson::dumps(&PyValue::Dict(self.to_dict()), None, false)
    }

    /// Writes [`Self::to_json`] to the first of [`cli_paths`] and returns it.
    pub fn write(&self, output_dir: &str) -> Result<PathBuf, ResultsError> {
        let (path, _) = cli_paths(output_dir, &self.model);
        write_file(&path, &self.to_json())?;
        Ok(path)
    }
}

/// `{model}_outputs.jsonl` of the `rewardbench` CLI (`save_jsonl(combined_data)`): one
/// `json.dump` line per prompt with the keys `prompt`, `results`, `scores_chosen`,
/// `scores_rejected`, `text_chosen`, `text_rejected`, then the metadata columns (for the
/// RewardBench core set: `chosen`, `chosen_model`, `rejected`, `rejected_model`, `subset`, `id`,
/// whichever the dataset has).
#[derive(Clone, Debug, PartialEq, Default)]
pub struct CliOutputs {
    /// The `prompt` column (the templated prompt string for the core set).
    pub prompt: Vec<PyValue>,
    pub results: Vec<bool>,
    /// Per row, `logits.tolist()`. Flattened as upstream's `unwrap_if_list_of_lists` does: row `i`
    /// gets element `i` of the concatenation, which is its own score for one-label models.
    pub scores_chosen: Vec<Vec<f64>>,
    pub scores_rejected: Vec<Vec<f64>>,
    pub text_chosen: Vec<String>,
    pub text_rejected: Vec<String>,
    pub metadata: Vec<(String, Vec<PyValue>)>,
}

impl CliOutputs {
    /// The JSON Lines text. Errors if a column is shorter than `prompt` (where Python would
    /// raise `IndexError`).
    pub fn to_jsonl(&self) -> Result<String, ResultsError> {
        let n = self.prompt.len();
        let flat = |rows: &[Vec<f64>]| -> Vec<PyValue> {
            rows.iter()
                .flatten()
                .map(|&x| PyValue::Float(x))
                .collect::<Vec<_>>()
        };
        let mut columns: Vec<(String, Vec<PyValue>)> = vec![
            ("prompt".into(), self.prompt.clone()),
            (
                "results".into(),
                self.results
                    .iter()
                    .map(|&w| PyValue::Int(i64::from(w)))
                    .collect(),
            ),
            ("scores_chosen".into(), flat(&self.scores_chosen)),
            ("scores_rejected".into(), flat(&self.scores_rejected)),
            (
                "text_chosen".into(),
                self.text_chosen.iter().map(|s| s.as_str().into()).collect(),
            ),
            (
                "text_rejected".into(),
                self.text_rejected
                    .iter()
                    .map(|s| s.as_str().into())
                    .collect(),
            ),
        ];
        columns.extend(self.metadata.iter().cloned());
        save_jsonl(n, &columns)
    }

    /// Writes [`Self::to_jsonl`] to the second of [`cli_paths`] and returns it.
    pub fn write(&self, output_dir: &str, model: &str) -> Result<PathBuf, ResultsError> {
        let (_, path) = cli_paths(output_dir, model);
        write_file(&path, &self.to_jsonl()?)?;
        Ok(path)
    }
}

/// `save_jsonl(save_filename, table)` of `rewardbench/rewardbench.py`: `len(table["prompt"])`
/// rows (the first column), each `json.dump({key: table[key][i] for key in table})` plus `"\n"`.
/// Errors if a column is shorter (where Python would raise `IndexError`).
fn save_jsonl(n: usize, columns: &[(String, Vec<PyValue>)]) -> Result<String, ResultsError> {
    for (name, values) in columns {
        if values.len() < n {
            return Err(ResultsError::Ragged {
                what: "CLI outputs".into(),
                column: name.clone(),
                len: values.len(),
                expected: n,
            });
        }
    }
    let mut out = String::new();
    for i in 0..n {
        let row: PyDict = columns
            .iter()
            .map(|(name, values)| (name.clone(), values[i].clone()))
            .collect();
        out.push_str(&pyjson::dumps(&PyValue::Dict(row), None, false));
        out.push('\n');
    }
    Ok(out)
}

/// `{model}_outputs.jsonl` of the `rewardbench` CLI for instruction data (a `messages` column,
/// no chosen / rejected): one line per conversation with the keys `prompt`, `results` (the
/// conversation's score, flattened by `unwrap_if_list_of_lists` as in [`CliOutputs`]), `text`,
/// then the metadata columns. The CLI writes no `{model}.json` for such data (no accuracy).
#[derive(Clone, Debug, PartialEq, Default)]
pub struct CliInstructionOutputs {
    /// The `prompt` column: the first message's content, templated by FastChat when the
    /// tokenizer has no chat template (`prepare_dialogue`), as is otherwise.
    pub prompt: Vec<PyValue>,
    /// Per row, `logits.tolist()`.
    pub scores: Vec<Vec<f64>>,
    /// The templated conversation.
    pub text: Vec<String>,
    pub metadata: Vec<(String, Vec<PyValue>)>,
}

impl CliInstructionOutputs {
    /// The JSON Lines text (errors like [`CliOutputs::to_jsonl`]).
    pub fn to_jsonl(&self) -> Result<String, ResultsError> {
        let mut columns: Vec<(String, Vec<PyValue>)> = vec![
            ("prompt".into(), self.prompt.clone()),
            (
                "results".into(),
                self.scores
                    .iter()
                    .flatten()
                    .map(|&x| PyValue::Float(x))
                    .collect(),
            ),
            (
                "text".into(),
                self.text.iter().map(|s| s.as_str().into()).collect(),
            ),
        ];
        columns.extend(self.metadata.iter().cloned());
        save_jsonl(self.prompt.len(), &columns)
    }

    /// Writes [`Self::to_jsonl`] to the second of [`cli_paths`] and returns it.
    pub fn write(&self, output_dir: &str, model: &str) -> Result<PathBuf, ResultsError> {
        let (_, path) = cli_paths(output_dir, model);
        write_file(&path, &self.to_jsonl()?)?;
        Ok(path)
    }
}

/// `args.output_dir + args.model + "_all.jsonl"`: what the CLI's `--save_all` writes (plain
/// string concatenation, like [`cli_paths`]'s `{model}.json`).
pub fn cli_all_path(output_dir: &str, model: &str) -> PathBuf {
    PathBuf::from(format!("{output_dir}{model}_all.jsonl"))
}

/// The `--save_all` file of the `rewardbench` CLI: per pair, `json.dumps({"chosen": chosen,
/// "rejected": rejected}) + "\n"` over the unflattened per-row scores: a classifier's
/// `logits.tolist()` row (`[x]`), a DPO model's float.
#[derive(Clone, Debug, PartialEq, Default)]
pub struct CliAllScores {
    pub chosen: Vec<PyValue>,
    pub rejected: Vec<PyValue>,
}

impl CliAllScores {
    /// Classifier rows: each row's logits as a list.
    pub fn classifier(chosen: &[Vec<f64>], rejected: &[Vec<f64>]) -> Self {
        CliAllScores {
            chosen: chosen.iter().map(|r| float_list(r)).collect(),
            rejected: rejected.iter().map(|r| float_list(r)).collect(),
        }
    }

    /// DPO rewards: one float per row.
    pub fn dpo(chosen: &[f64], rejected: &[f64]) -> Self {
        CliAllScores {
            chosen: chosen.iter().map(|&x| PyValue::Float(x)).collect(),
            rejected: rejected.iter().map(|&x| PyValue::Float(x)).collect(),
        }
    }

    /// The file text (`zip` stops at the shorter column, as in Python).
    pub fn to_jsonl(&self) -> String {
        let mut out = String::new();
        for (chosen, rejected) in self.chosen.iter().zip(&self.rejected) {
            let row: PyDict = vec![
                ("chosen".into(), chosen.clone()),
                ("rejected".into(), rejected.clone()),
            ];
            out.push_str(&pyjson::dumps(&PyValue::Dict(row), None, false));
            out.push('\n');
        }
        out
    }

    /// Writes [`Self::to_jsonl`] to [`cli_all_path`] and returns it.
    pub fn write(&self, output_dir: &str, model: &str) -> Result<PathBuf, ResultsError> {
        let path = cli_all_path(output_dir, model);
        write_file(&path, &self.to_jsonl())?;
        Ok(path)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_follow_the_python_strings() {
        let root = Path::new("results");
        assert_eq!(
            results_path(root, ResultsKind::EvalSet, "org/model"),
            PathBuf::from("results/eval-set/org/model.json")
        );
        assert_eq!(
            results_path(root, ResultsKind::EvalSetScores, "/abs/rm"),
            PathBuf::from("results/eval-set-scores//abs/rm.json")
        );
        assert_eq!(
            cli_paths("results/", "org/m"),
            (
                PathBuf::from("results/org/m.json"),
                PathBuf::from("results/org/m_outputs.jsonl")
            )
        );
        assert_eq!(
            cli_paths("out", "/abs/m").1,
            PathBuf::from("/abs/m_outputs.jsonl")
        );
        assert_eq!(
            cli_paths("out", "m").1,
            PathBuf::from("out/m_outputs.jsonl")
        );
    }

    #[test]
    fn scalar_pipelines_write_one_float_per_row() {
        let pair = ScoredPair {
            id: ExampleId::Int(3),
            subset: "s".into(),
            text_chosen: "c".into(),
            text_rejected: "r".into(),
            win: true,
            scores_chosen: vec![0.5],
            scores_rejected: vec![0.25],
        };
        let rows = EvalSetScores::classifier(&[pair], "m", "Seq. Classifier", None);
        let scalar = rows.clone().with_scalar_scores();
        let column = |scores: &EvalSetScores, name: &str| {
            scores
                .columns
                .iter()
                .find(|(n, _)| n == name)
                .map(|(_, values)| values.clone())
                .unwrap()
        };
        let list = |x: f64| PyValue::List(vec![PyValue::Float(x)]);
        assert_eq!(column(&rows, "scores_chosen"), vec![list(0.5)]);
        assert_eq!(column(&scalar, "scores_chosen"), vec![PyValue::Float(0.5)]);
        assert_eq!(
            column(&scalar, "scores_rejected"),
            vec![PyValue::Float(0.25)]
        );
        // every other column as it was
        for (name, values) in &rows.columns {
            if !name.starts_with("scores_") {
                assert_eq!(&column(&scalar, name), values, "{name}");
            }
        }
    }
}
