//! The sweep CSV of the hybrid-preferences project, byte for byte as
//! `scripts/fetch_evals_rewardbench.py` writes it (allenai/hybrid-preferences HEAD `7a17ed3`;
//! the counts mode as of `23cec2b`, 2024-09-23).
//!
//! Inputs: the evaluated experiments in listing order, each a name and its `metrics.json` dict
//! ([`Experiment`]), and, in counts mode, the `counts/regressor_feats_*.json` files
//! ([`FeatureCounts`], read in file-name order by [`read_feature_counts_dir`]). The reference:
//!
//! 1. builds the subset frame (`pd.DataFrame({name: metrics}).T.drop(columns=["model"])`): one
//!    column per metrics key in order of first appearance, every value a Python object;
//! 2. computes `Chat`, `Chat Hard`, `Safety`, `Reasoning` as `Σ acc·w / Σ w` over the section's
//!    subsets with its own copy of `EXAMPLE_COUNTS` (xstest 250/154: [`XstestWeighting::Legacy`],
//!    the default of [`SweepOptions`]), a missing value counting 0, and `Overall` as their mean;
//!    and sorts by `Overall` descending (numpy's unstable generic quicksort, see [`npsort`]);
//! 3. counts mode: keeps experiments whose name contains `ID`, parses `uuid` ([`parse_uuid`]) and
//!    `budget` ([`parse_budget`], rescaled by `--dataset_total_size` with [`rescale_budget`]),
//!    left-merges the subset columns and then the feature counts on `uuid`, and drops every row
//!    with a missing value (no feature file, a missing subset, a null `chat_template`, ...); a
//!    count column becomes float (`12.0`) when the merge left any row without features.
//!    Name mode (no feature files): joins on the experiment name, keeps missing values (written as
//!    empty fields).
//! 4. moves `model_type`, `chat_template` first, adds `label = int(Overall > threshold)` when
//!    `--gpt4_threshold_score` is given and non-zero, sorts by `Overall` descending again and
//!    writes `to_csv` (the first column: the merged row position, or the experiment name).
//!
//! The column order is therefore: (row label), `model_type`, `chat_template`, `Chat`,
//! `Chat Hard`, `Safety`, `Reasoning`, `Overall`, `uuid`, `budget`, the other metrics keys (the 23
//! subsets, sorted as metrics.json has them), the feature counts in file order, `label`.
//!
//! Cases where the reference raises are errors here, naming the experiment, file or key: a name
//! with `ID` but no `ID__<hex>__` or no `SWAPS_<n>`, a subset no experiment has, no feature files,
//! a non-numeric accuracy. Merges that would need pandas' `_x`/`_y` suffixes (a metrics key or
//! feature named like another column) are refused. The `--experiments_file` mode (binary feature
//! hashes, superseded by the counts) is not reproduced.

mod intervals;
mod names;
pub mod npsort;
mod table;

use std::path::{Path, PathBuf};

pub use intervals::with_confidence_intervals;
pub use names::{parse_budget, parse_uuid, rescale_budget};
pub use table::{Cell, Column, ColumnKind, RowLabel, SweepTable};

use crate::files::{read_py_json, EvalSetResults, ResultsError};
use crate::pyjson::{PyDict, PyValue};
use crate::v1::{example_count, XstestWeighting, SUBSET_MAPPING};

/// Why the sweep table could not be built. Messages name the experiment, file or key.
#[derive(Debug, thiserror::Error)]
pub enum SweepError {
    #[error(transparent)]
    Results(#[from] ResultsError),
    #[error("{file}: cannot list the feature-count files: {source}")]
    ListDir {
        file: String,
        #[source]
        source: std::io::Error,
    },
    #[error("experiment \"{experiment}\": {reason}")]
    Experiment { experiment: String, reason: String },
    #[error("experiment \"{experiment}\": key \"{key}\": {reason}")]
    Metric {
        experiment: String,
        key: String,
        reason: String,
    },
    #[error("{file}: {reason}")]
    Features { file: String, reason: String },
    #[error("{reason}")]
    Frame { reason: String },
}

fn frame_error(reason: impl Into<String>) -> SweepError {
    SweepError::Frame {
        reason: reason.into(),
    }
}

/// One evaluated experiment: its name as Beaker lists it (e.g.
/// `rm-eval-helpsteer2-counts-tulu2_13b_rm_human_datamodel_counts_7000_ID__<hex>__SWAPS_4026`)
/// and its `metrics.json` dict.
#[derive(Clone, Debug, PartialEq)]
pub struct Experiment {
    pub name: String,
    pub metrics: PyDict,
}

impl Experiment {
    pub fn new(name: impl Into<String>, metrics: PyDict) -> Self {
        Experiment {
            name: name.into(),
            metrics,
        }
    }

    /// Reads a `metrics.json` (or `eval-set/{model}.json`) as this experiment's metrics.
    pub fn read(name: impl Into<String>, metrics_json: &Path) -> Result<Self, SweepError> {
        let value = read_py_json(metrics_json)?;
        match value {
            PyValue::Dict(metrics) => Ok(Experiment::new(name, metrics)),
            other => Err(SweepError::Results(ResultsError::Layout {
                file: metrics_json.display().to_string(),
                reason: format!(
                    "expected a JSON object of metrics, found {}",
                    other.type_name()
                ),
            })),
        }
    }

    /// A run scored here: its metrics dict is what `metrics.json` would hold.
    pub fn from_results(name: impl Into<String>, results: &EvalSetResults) -> Self {
        Experiment::new(name, results.to_dict())
    }
}

/// One `counts/regressor_feats_ID__<uuid>__SWAPS_<n>.json` file: feature string → count.
#[derive(Clone, Debug, PartialEq)]
pub struct FeatureCounts {
    /// The file (for messages); its stem carries the uuid.
    pub file: String,
    /// `re.search(r"ID__([a-f0-9]+)__", stem).group(1)`.
    pub uuid: String,
    /// The counts in file order: ints (or floats, or null).
    pub counts: PyDict,
}

impl FeatureCounts {
    /// Feature counts from a file stem (`regressor_feats_ID__<uuid>__SWAPS_<n>`) and its dict.
    pub fn new(file: impl Into<String>, stem: &str, counts: PyDict) -> Result<Self, SweepError> {
        let file = file.into();
        let uuid = parse_uuid(stem)
            .ok_or_else(|| SweepError::Features {
                file: file.clone(),
                reason: "the file name has no ID__<lowercase hex>__".into(),
            })?
            .to_owned();
        Ok(FeatureCounts { file, uuid, counts })
    }

    /// Reads one feature-count file.
    pub fn read(path: &Path) -> Result<Self, SweepError> {
        let file = path.display().to_string();
        let stem = path
            .file_stem()
            .and_then(|s| s.to_str())
            .ok_or_else(|| SweepError::Features {
                file: file.clone(),
                reason: "the file name is not UTF-8".into(),
            })?
            .to_owned();
        match read_py_json(path)? {
            PyValue::Dict(counts) => FeatureCounts::new(file, &stem, counts),
            other => Err(SweepError::Features {
                file,
                reason: format!(
                    "expected a JSON object of counts, found {}",
                    other.type_name()
                ),
            }),
        }
    }
}

/// The `*.json` files of a feature-count directory, sorted by file name (the reference takes
/// `glob("*.json")` in the file system's order, which only matters for the order of feature
/// columns that appear in some files and not in others, and of files sharing a uuid).
pub fn read_feature_counts_dir(dir: &Path) -> Result<Vec<FeatureCounts>, SweepError> {
    let list_error = |source| SweepError::ListDir {
        file: dir.display().to_string(),
        source,
    };
    let mut paths: Vec<PathBuf> = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(list_error)? {
        let entry = entry.map_err(list_error)?;
        let name = entry.file_name();
        if name.to_str().is_some_and(|n| n.ends_with(".json")) {
            paths.push(entry.path());
        }
    }
    paths.sort();
    paths.iter().map(|p| FeatureCounts::read(p)).collect()
}

/// The experiments of a folder of `<experiment name>.json` metrics files (as downloaded from
/// Beaker, or herd's `metrics/`), in file-name order, keeping the names that contain `matching`
/// (the reference's `--experiment_prefix`, which it passes to Beaker's experiment listing as
/// `match`: "only include experiments matching the text"). Other files are ignored; a `.json`
/// file whose name is not UTF-8 or that is not a JSON object of metrics is an error naming it.
pub fn read_metrics_dir(dir: &Path, matching: Option<&str>) -> Result<Vec<Experiment>, SweepError> {
    let list_error = |source| SweepError::ListDir {
        file: dir.display().to_string(),
        source,
    };
    let mut found: Vec<(String, PathBuf)> = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(list_error)? {
        let entry = entry.map_err(list_error)?;
        let path = entry.path();
        let file_name = entry.file_name();
        let Some(name) = file_name.to_str() else {
            if file_name.to_string_lossy().ends_with(".json") {
                return Err(SweepError::Experiment {
                    experiment: file_name.to_string_lossy().into_owned(),
                    reason: format!("{}: the file name is not UTF-8", path.display()),
                });
            }
            continue;
        };
        let Some(stem) = name.strip_suffix(".json") else {
            continue;
        };
        if stem.is_empty() || !path.is_file() {
            continue;
        }
        if matching.is_some_and(|text| !stem.contains(text)) {
            continue;
        }
        found.push((stem.to_owned(), path));
    }
    found.sort();
    found
        .into_iter()
        .map(|(name, path)| Experiment::read(name, &path))
        .collect()
}

/// Options of the reference script that change the table.
#[derive(Clone, Debug, PartialEq)]
pub struct SweepOptions {
    /// The `EXAMPLE_COUNTS` xstest weights: the script's copy has the pre-2024-09-10 values
    /// ([`XstestWeighting::Legacy`], the default here); `Current` scores as RewardBench does now.
    pub weighting: XstestWeighting,
    /// `--dataset_total_size`: rescale budgets to a 7000-row dataset (`None` or 0: keep them as
    /// the strings in the names).
    pub dataset_total_size: Option<u64>,
    /// `--gpt4_threshold_score`: add `label = int(Overall > threshold)` (`None` or 0.0: no label,
    /// as `if thresh:` is false for 0.0).
    pub label_threshold: Option<f64>,
}

impl Default for SweepOptions {
    fn default() -> Self {
        SweepOptions {
            weighting: XstestWeighting::Legacy,
            dataset_total_size: None,
            label_threshold: None,
        }
    }
}

/// The section columns, in the reference's order.
pub const CATEGORY_COLUMNS: [&str; 5] = ["Chat", "Chat Hard", "Safety", "Reasoning", "Overall"];

/// The table `fetch_evals_rewardbench` returns for these experiments: counts mode with
/// `features` (the feature-count files; an empty slice is an error, as `pd.concat([])` is), name
/// mode without.
pub fn build_sweep_table(
    experiments: &[Experiment],
    features: Option<&[FeatureCounts]>,
    options: &SweepOptions,
) -> Result<SweepTable, SweepError> {
    let exps = dedupe_experiments(experiments);
    let subset_frame = SubsetFrame::new(&exps)?;
    let categories: Vec<[f64; 5]> = (0..exps.len())
        .map(|i| subset_frame.categories(i, options.weighting))
        .collect::<Result<_, _>>()?;
    let sorted =
        npsort::nargsort_descending(&categories.iter().map(|c| Some(c[4])).collect::<Vec<_>>());
    let category_cells = |i: usize| categories[i].iter().map(|&x| Cell::Float(x));

    let mut frame = match features {
        Some(features) => {
            let cat_rows: Vec<usize> = sorted
                .iter()
                .copied()
                .filter(|&i| exps[i].name.contains("ID"))
                .collect();
            let sub_rows: Vec<usize> = (0..exps.len())
                .filter(|&i| exps[i].name.contains("ID"))
                .collect();
            let uuid_of = |i: usize| {
                parse_uuid(&exps[i].name).ok_or_else(|| SweepError::Experiment {
                    experiment: exps[i].name.clone(),
                    reason: "the name contains \"ID\" but no ID__<lowercase hex>__ (the reference fails here)".into(),
                })
            };
            // the left frame: categories, uuid, budget
            let mut left = Frame::new(
                CATEGORY_COLUMNS
                    .iter()
                    .map(|c| (c.to_string(), ColumnKind::Object))
                    .chain([("uuid".to_string(), ColumnKind::Object)])
                    .chain([(
                        "budget".to_string(),
                        if options.dataset_total_size.unwrap_or(0) != 0 {
                            ColumnKind::Int64
                        } else {
                            ColumnKind::Object
                        },
                    )])
                    .collect(),
            );
            let mut left_uuids = Vec::new();
            for &i in &cat_rows {
                left_uuids.push(uuid_of(i)?);
            }
            for (&i, uuid) in cat_rows.iter().zip(&left_uuids) {
                let name = &exps[i].name;
                let budget = parse_budget(name).ok_or_else(|| SweepError::Experiment {
                    experiment: name.clone(),
                    reason: "the name has no SWAPS_<digits> (the reference fails here)".into(),
                })?;
                let budget = match options.dataset_total_size {
                    Some(size) if size != 0 => {
                        Cell::Int(rescale_budget(budget, size).ok_or_else(|| {
                            SweepError::Experiment {
                                experiment: name.clone(),
                                reason: format!(
                                    "cannot rescale budget {budget} by dataset size {size}"
                                ),
                            }
                        })?)
                    }
                    _ => Cell::Str(budget.to_owned()),
                };
                let mut row: Vec<Cell> = category_cells(i).collect();
                row.push(Cell::Str(uuid.to_string()));
                row.push(budget);
                left.rows.push(row);
            }
            // the subset frame of the ID experiments, with its uuid column
            if subset_frame.columns.iter().any(|c| c == "uuid") {
                return Err(frame_error(
                    "a metrics key is named \"uuid\", which the reference overwrites (not supported)",
                ));
            }
            let mut right = Frame::new(
                subset_frame
                    .columns
                    .iter()
                    .map(|c| (c.clone(), ColumnKind::Object))
                    .collect(),
            );
            let mut right_keys = Vec::new();
            for &i in &sub_rows {
                right_keys.push(uuid_of(i)?.to_owned());
                right.rows.push(subset_frame.cells[i].clone());
            }
            let left_keys: Vec<String> = left_uuids.iter().map(|s| s.to_string()).collect();
            let merged = left.merge_left(&left_keys, &right, &right_keys)?;
            let merged_keys: Vec<String> = merged
                .rows
                .iter()
                .map(|r| r[5].as_str().expect("uuid").to_owned())
                .collect();
            let (feature_frame, feature_keys) = feature_frame(features)?;
            let mut merged = merged.merge_left(&merged_keys, &feature_frame, &feature_keys)?;
            // dropna
            let mut labels = Vec::new();
            let mut rows = Vec::new();
            for (pos, row) in merged.rows.into_iter().enumerate() {
                if !row.iter().any(Cell::is_missing) {
                    labels.push(RowLabel::Position(pos));
                    rows.push(row);
                }
            }
            merged.rows = rows;
            (merged, labels)
        }
        None => {
            let mut frame = Frame::new(
                CATEGORY_COLUMNS
                    .iter()
                    .map(|c| (c.to_string(), ColumnKind::Object))
                    .collect(),
            );
            for name in &subset_frame.columns {
                if frame.has(name) {
                    return Err(frame_error(format!(
                        "the metrics key \"{name}\" is also a computed column (not supported)"
                    )));
                }
                frame.columns.push((name.clone(), ColumnKind::Object));
            }
            let mut labels = Vec::new();
            for &i in &sorted {
                let mut row: Vec<Cell> = category_cells(i).collect();
                row.extend(subset_frame.cells[i].iter().cloned());
                frame.rows.push(row);
                labels.push(RowLabel::Name(exps[i].name.clone()));
            }
            (frame, labels)
        }
    };

    // model_type and chat_template first
    let (table, labels) = &mut frame;
    let mut order = Vec::new();
    for meta in ["model_type", "chat_template"] {
        order.push(
            table.position(meta).ok_or_else(|| {
                frame_error(format!("no experiment has the metrics key \"{meta}\""))
            })?,
        );
    }
    let rest: Vec<usize> = (0..table.columns.len())
        .filter(|c| !order.contains(c))
        .collect();
    order.extend(rest);
    table.select(&order);

    // label
    if let Some(threshold) = options.label_threshold.filter(|&t| t != 0.0) {
        let overall = table.position("Overall").expect("Overall");
        table.columns.push(("label".into(), ColumnKind::Int64));
        for row in &mut table.rows {
            let above = row[overall].as_f64().is_some_and(|x| x > threshold);
            row.push(Cell::Int(i64::from(above)));
        }
    }

    // sort by Overall descending, then drop repeated row labels (keep the first)
    let overall = table.position("Overall").expect("Overall");
    let order = npsort::nargsort_descending(
        &table
            .rows
            .iter()
            .map(|r| r[overall].as_f64())
            .collect::<Vec<_>>(),
    );
    let mut out_labels: Vec<RowLabel> = Vec::with_capacity(order.len());
    let mut out_rows = Vec::with_capacity(order.len());
    for i in order {
        if !out_labels.contains(&labels[i]) {
            out_labels.push(labels[i].clone());
            out_rows.push(std::mem::take(&mut table.rows[i]));
        }
    }
    let columns = table
        .columns
        .iter()
        .enumerate()
        .map(|(c, (name, kind))| Column {
            name: name.clone(),
            kind: *kind,
            cells: out_rows.iter().map(|r| r[c].clone()).collect(),
        })
        .collect();
    Ok(SweepTable {
        labels: out_labels,
        columns,
    })
}

/// [`build_sweep_table`] written as the CSV text.
pub fn sweep_csv(
    experiments: &[Experiment],
    features: Option<&[FeatureCounts]>,
    options: &SweepOptions,
) -> Result<String, SweepError> {
    Ok(build_sweep_table(experiments, features, options)?.to_csv())
}

/// `{name: metrics for ...}`: a repeated name keeps its first position and its last metrics.
fn dedupe_experiments(experiments: &[Experiment]) -> Vec<&Experiment> {
    let mut out: Vec<&Experiment> = Vec::with_capacity(experiments.len());
    for exp in experiments {
        match out.iter_mut().find(|e| e.name == exp.name) {
            Some(slot) => *slot = exp,
            None => out.push(exp),
        }
    }
    out
}

/// `pd.DataFrame({name: metrics}).transpose().drop(columns=["model"])`.
struct SubsetFrame<'a> {
    names: Vec<&'a str>,
    columns: Vec<String>,
    /// `cells[experiment][column]`.
    cells: Vec<Vec<Cell>>,
}

impl<'a> SubsetFrame<'a> {
    fn new(exps: &[&'a Experiment]) -> Result<Self, SweepError> {
        let mut columns: Vec<String> = Vec::new();
        for exp in exps {
            for (key, _) in &exp.metrics {
                if !columns.contains(key) {
                    columns.push(key.clone());
                }
            }
        }
        let model = columns.iter().position(|c| c == "model").ok_or_else(|| {
            frame_error(if exps.is_empty() {
                "no experiments".to_owned()
            } else {
                "no experiment has the metrics key \"model\" (the reference drops it)".to_owned()
            })
        })?;
        columns.remove(model);
        let mut cells = Vec::with_capacity(exps.len());
        for exp in exps {
            let mut row = Vec::with_capacity(columns.len());
            for column in &columns {
                let cell = match crate::pyjson::dict_get(&exp.metrics, column) {
                    None | Some(PyValue::Null) => Cell::Missing,
                    Some(PyValue::Float(x)) if x.is_nan() => Cell::Missing,
                    Some(PyValue::Float(x)) => Cell::Float(*x),
                    Some(PyValue::Int(n)) => Cell::Int(*n),
                    Some(PyValue::Bool(b)) => Cell::Bool(*b),
                    Some(PyValue::Str(s)) => Cell::Str(s.clone()),
                    Some(other) => {
                        return Err(SweepError::Metric {
                            experiment: exp.name.clone(),
                            key: column.clone(),
                            reason: format!(
                                "a {} value cannot go into a CSV cell (not supported)",
                                other.type_name()
                            ),
                        })
                    }
                };
                row.push(cell);
            }
            cells.push(row);
        }
        Ok(SubsetFrame {
            names: exps.iter().map(|e| e.name.as_str()).collect(),
            columns,
            cells,
        })
    }

    /// `get_category_scores` for one experiment: `[Chat, Chat Hard, Safety, Reasoning, Overall]`.
    fn categories(&self, i: usize, weighting: XstestWeighting) -> Result<[f64; 5], SweepError> {
        let mut out = [0.0f64; 5];
        for (slot, (_, subsets)) in out.iter_mut().zip(SUBSET_MAPPING.iter()) {
            let mut sum: Option<Num> = None;
            let mut total = 0i128;
            for &subset in subsets.iter() {
                let c = self
                    .columns
                    .iter()
                    .position(|c| c == subset)
                    .ok_or_else(|| {
                        frame_error(format!(
                            "no experiment has the subset \"{subset}\" (the reference fails here)"
                        ))
                    })?;
                let weight = i128::from(example_count(subset, weighting).expect("a subset"));
                total += weight;
                // NaN * w is skipped by sum(skipna=True): it adds 0
                let product = match &self.cells[i][c] {
                    Cell::Missing => Num::Int(0),
                    Cell::Int(n) => Num::Int(i128::from(*n) * weight),
                    Cell::Bool(b) => Num::Int(i128::from(*b) * weight),
                    Cell::Float(x) => Num::Float(x * weight as f64),
                    Cell::Str(_) => {
                        return Err(SweepError::Metric {
                            experiment: self.names[i].to_owned(),
                            key: subset.to_owned(),
                            reason: "a string where an accuracy should be".into(),
                        })
                    }
                };
                sum = Some(match sum {
                    None => product,
                    Some(acc) => acc.add(product),
                });
            }
            *slot = sum.unwrap_or(Num::Int(0)).div(total);
        }
        // DataFrame.mean(axis=1): NaN sections (only from infinities) are skipped
        let present: Vec<f64> = out[..4].iter().copied().filter(|x| !x.is_nan()).collect();
        out[4] = match present.split_first() {
            Some((first, rest)) => {
                rest.iter().fold(*first, |acc, x| acc + x) / present.len() as f64
            }
            None => f64::NAN,
        };
        Ok(out)
    }
}

/// A Python number in the category sums (ints stay exact until they meet a float).
#[derive(Clone, Copy, Debug)]
enum Num {
    Int(i128),
    Float(f64),
}

impl Num {
    fn to_f64(self) -> f64 {
        match self {
            Num::Int(n) => n as f64,
            Num::Float(x) => x,
        }
    }

    fn add(self, other: Num) -> Num {
        match (self, other) {
            (Num::Int(a), Num::Int(b)) => match a.checked_add(b) {
                Some(s) => Num::Int(s),
                None => Num::Float(a as f64 + b as f64),
            },
            (a, b) => Num::Float(a.to_f64() + b.to_f64()),
        }
    }

    /// Python's true division by an int: exact operands give the correctly rounded quotient.
    fn div(self, denominator: i128) -> f64 {
        self.to_f64() / denominator as f64
    }
}

/// A row-major frame under construction.
struct Frame {
    columns: Vec<(String, ColumnKind)>,
    rows: Vec<Vec<Cell>>,
}

impl Frame {
    fn new(columns: Vec<(String, ColumnKind)>) -> Self {
        Frame {
            columns,
            rows: Vec::new(),
        }
    }

    fn has(&self, name: &str) -> bool {
        self.columns.iter().any(|(c, _)| c == name)
    }

    fn position(&self, name: &str) -> Option<usize> {
        self.columns.iter().position(|(c, _)| c == name)
    }

    fn select(&mut self, order: &[usize]) {
        self.columns = order.iter().map(|&c| self.columns[c].clone()).collect();
        for row in &mut self.rows {
            *row = order
                .iter()
                .map(|&c| std::mem::replace(&mut row[c], Cell::Missing))
                .collect();
        }
    }

    /// `self.merge(right, on="uuid", how="left")` where `right` holds no key column (its keys are
    /// given apart): every left row in order, each joined with every right row of the same key in
    /// right order, or with missing values when none has it (which turns int columns float).
    fn merge_left(
        &self,
        left_keys: &[String],
        right: &Frame,
        right_keys: &[String],
    ) -> Result<Frame, SweepError> {
        for (name, _) in &right.columns {
            if self.has(name) {
                return Err(frame_error(format!(
                    "the column \"{name}\" comes from both sides of a merge (pandas would suffix it \
                     _x/_y; not supported)"
                )));
            }
        }
        let mut merged = Frame::new(
            self.columns
                .iter()
                .chain(right.columns.iter())
                .cloned()
                .collect(),
        );
        let mut unmatched = false;
        for (row, key) in self.rows.iter().zip(left_keys) {
            let mut found = false;
            for (right_row, right_key) in right.rows.iter().zip(right_keys) {
                if right_key == key {
                    found = true;
                    merged
                        .rows
                        .push(row.iter().chain(right_row.iter()).cloned().collect());
                }
            }
            if !found {
                unmatched = true;
                merged.rows.push(
                    row.iter()
                        .cloned()
                        .chain(std::iter::repeat_n(Cell::Missing, right.columns.len()))
                        .collect(),
                );
            }
        }
        if unmatched {
            for (_, kind) in &mut merged.columns[self.columns.len()..] {
                if *kind == ColumnKind::Int64 {
                    *kind = ColumnKind::Float64;
                }
            }
        }
        Ok(merged)
    }
}

/// The counts start at a mid-1971 timestamp when all of a file's counts are above it: pandas'
/// `read_json` then turns the file into dates.
const PANDAS_MIN_STAMP: f64 = 31_536_000.0;

/// `pd.concat([read_json(f, typ="dictionary") as one row per file])`: one column per feature in
/// order of first appearance; a file whose counts are all integral is an int64 row (floats such
/// as `3.0` coerced, as `read_json` does), else a float64 row; a column is int64 only if every
/// file has it as int.
fn feature_frame(features: &[FeatureCounts]) -> Result<(Frame, Vec<String>), SweepError> {
    if features.is_empty() {
        return Err(frame_error(
            "no feature-count files (pd.concat of nothing fails in the reference)",
        ));
    }
    let mut names: Vec<String> = Vec::new();
    let mut float_column: Vec<bool> = Vec::new();
    let mut parsed: Vec<(Vec<(usize, Cell)>, bool)> = Vec::new();
    for file in features {
        let mut cells = Vec::new();
        let mut is_float_file = false;
        let mut numbers = Vec::new();
        for (key, value) in &file.counts {
            let c = match names.iter().position(|n| n == key) {
                Some(c) => c,
                None => {
                    names.push(key.clone());
                    float_column.push(false);
                    names.len() - 1
                }
            };
            let cell = match value {
                PyValue::Int(n) => Cell::Int(*n),
                PyValue::Float(x) if x.is_nan() => {
                    is_float_file = true;
                    Cell::Missing
                }
                PyValue::Float(x) => {
                    if x.fract() != 0.0 || x.abs() >= 9.2e18 {
                        is_float_file = true;
                    }
                    Cell::Float(*x)
                }
                PyValue::Null => {
                    is_float_file = true;
                    Cell::Missing
                }
                other => {
                    return Err(SweepError::Features {
                        file: file.file.clone(),
                        reason: format!(
                            "key \"{key}\": expected a count, found {}",
                            other.type_name()
                        ),
                    })
                }
            };
            if let Some(x) = cell.as_f64() {
                numbers.push(x);
            }
            cells.push((c, cell));
        }
        if !numbers.is_empty() && numbers.iter().all(|&x| x > PANDAS_MIN_STAMP) {
            return Err(SweepError::Features {
                file: file.file.clone(),
                reason: "every count is above 31536000, which pandas' read_json turns into dates \
                         (not supported)"
                    .into(),
            });
        }
        parsed.push((cells, is_float_file));
    }
    let mut frame = Frame::new(Vec::new());
    for (cells, is_float_file) in &parsed {
        let mut row = vec![Cell::Missing; names.len()];
        let mut has = vec![false; names.len()];
        for (c, cell) in cells {
            has[*c] = true;
            row[*c] = match cell {
                // an int file: integral floats become ints
                Cell::Float(x) if !is_float_file => Cell::Int(*x as i64),
                Cell::Int(n) if *is_float_file => Cell::Float(*n as f64),
                other => other.clone(),
            };
            if *is_float_file {
                float_column[*c] = true;
            }
        }
        for (c, present) in has.iter().enumerate() {
            if !present {
                float_column[c] = true;
            }
        }
        frame.rows.push(row);
    }
    frame.columns = names
        .into_iter()
        .zip(float_column)
        .map(|(name, is_float)| {
            (
                name,
                if is_float {
                    ColumnKind::Float64
                } else {
                    ColumnKind::Int64
                },
            )
        })
        .collect();
    let keys = features.iter().map(|f| f.uuid.clone()).collect();
    Ok((frame, keys))
}
