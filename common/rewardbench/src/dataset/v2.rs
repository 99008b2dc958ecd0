//! RewardBench 2 data (`allenai/reward-bench-2`, split `test`): best-of-N rows, one prompt with
//! lists of correct (`chosen`) and incorrect (`rejected`) completions.
//!
//! Row schema (the Hub's `dataset_info`): `id: string`, `prompt: string`, `chosen: list<string>`,
//! `rejected: list<string>`, `num_correct: int64`, `num_incorrect: int64`,
//! `total_completions: int64`, `models: list<string>`, `subset: string`, `additional_metadata`.
//! This loader reads `id`, `prompt`, `chosen`, `rejected`, `num_correct`, `total_completions` and
//! `subset`; the other columns are ignored. Files are read by the loaders of [`crate::dataset`]
//! (JSON Lines, JSON arrays, column dicts and Parquet), with the same errors naming file, row and
//! field.
//!
//! The reference (`rewardbench/utils.py::load_bon_dataset_v2`) unrolls each row into
//! `total_completions` rows, `chosen` first and then `rejected`, and regroups the scores by
//! `total_completions`: [`BestOfNRow::completions`] gives that order. Where the reference would
//! silently misalign the groups (a `total_completions` that is not `len(chosen) + len(rejected)`),
//! this loader reports the row instead.

use std::path::Path;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::dataset::{
    expected, load_rows, parse_rows, DataFormat, DatasetError, DatasetRow, ExampleId, Prompt,
    RowContext,
};

/// One RewardBench 2 prompt with its completions.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BestOfNRow {
    /// `"<n>"`-like ids in the scored subsets; `"ref:<n>"` / `"tied:<n>"` in Ties.
    pub id: ExampleId,
    pub prompt: Prompt,
    /// The correct completions (one outside Ties).
    pub chosen: Vec<String>,
    /// The incorrect completions (three outside Ties).
    pub rejected: Vec<String>,
    /// How many of the completions, in [`BestOfNRow::completions`] order, count as correct
    /// (`scores[:num_correct]` in the Ties scorer). Defaults to `chosen.len()`.
    pub num_correct: usize,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subset: Option<String>,
}

impl BestOfNRow {
    /// All completions in the order the reference scores them: `chosen` then `rejected`.
    pub fn completions(&self) -> impl Iterator<Item = &str> {
        self.chosen
            .iter()
            .chain(self.rejected.iter())
            .map(String::as_str)
    }

    /// `len(chosen) + len(rejected)` (the `total_completions` column).
    pub fn total_completions(&self) -> usize {
        self.chosen.len() + self.rejected.len()
    }
}

/// The columns [`BestOfNRow`] reads.
const COLUMNS: [&str; 7] = [
    "id",
    "prompt",
    "chosen",
    "rejected",
    "num_correct",
    "total_completions",
    "subset",
];

impl DatasetRow for BestOfNRow {
    const COLUMNS: &'static [&'static str] = &COLUMNS;

    /// A row's `prompt` is a string (or a list of messages, each an object); in a column dict it
    /// is a list of those, and `chosen` is a list of lists.
    fn is_column_dict(map: &Map<String, Value>) -> bool {
        match map.get("chosen") {
            Some(Value::Array(items)) => !items.is_empty() && items.iter().all(Value::is_array),
            _ => false,
        }
    }

    fn from_row(ctx: &RowContext<'_>, map: &Map<String, Value>) -> Result<Self, DatasetError> {
        let prompt = ctx.prompt(map)?;
        let id = ctx.example_id(map)?;
        let chosen = string_list(ctx, map, "chosen")?;
        if chosen.is_empty() {
            return Err(ctx.field_error(
                "chosen",
                "expected at least one completion, found an empty list",
            ));
        }
        let rejected = string_list(ctx, map, "rejected")?;
        let total = chosen.len() + rejected.len();
        let num_correct = match optional_count(ctx, map, "num_correct")? {
            None => chosen.len(),
            Some(n) if n <= total => n,
            Some(n) => {
                return Err(ctx.field_error(
                    "num_correct",
                    format!("{n} is more than the {total} completions of the row"),
                ))
            }
        };
        if let Some(n) = optional_count(ctx, map, "total_completions")? {
            if n != total {
                return Err(ctx.field_error(
                    "total_completions",
                    format!(
                        "{n}, but the row has {} chosen + {} rejected = {total} completions",
                        chosen.len(),
                        rejected.len()
                    ),
                ));
            }
        }
        Ok(BestOfNRow {
            id,
            prompt,
            chosen,
            rejected,
            num_correct,
            subset: ctx.optional_string(map, "subset")?,
        })
    }

    fn id(&self) -> &ExampleId {
        &self.id
    }
}

fn string_list(
    ctx: &RowContext<'_>,
    map: &Map<String, Value>,
    field: &str,
) -> Result<Vec<String>, DatasetError> {
    match map.get(field) {
        Some(Value::Array(items)) => items
            .iter()
            .enumerate()
            .map(|(i, item)| match item {
                Value::String(s) => Ok(s.clone()),
                other => Err(ctx.field_error(format!("{field}[{i}]"), expected("a string", other))),
            })
            .collect(),
        Some(other) => Err(ctx.field_error(field, expected("a list of strings", other))),
        None => Err(ctx.field_error(field, "missing (required)")),
    }
}

fn optional_count(
    ctx: &RowContext<'_>,
    map: &Map<String, Value>,
    field: &str,
) -> Result<Option<usize>, DatasetError> {
    match map.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Number(n)) => match n.as_u64().and_then(|n| usize::try_from(n).ok()) {
            Some(n) => Ok(Some(n)),
            None => Err(ctx.field_error(
                field,
                format!("expected a non-negative integer, found the number {n}"),
            )),
        },
        Some(other) => Err(ctx.field_error(field, expected("a non-negative integer", other))),
    }
}

/// Loads the best-of-N rows of a JSON / JSON Lines / Parquet file.
pub fn load_best_of_n(path: &Path) -> Result<Vec<BestOfNRow>, DatasetError> {
    load_rows(path)
}

/// Parses best-of-N rows from JSON / JSON Lines text (see [`crate::dataset::parse_pairs`]).
pub fn parse_best_of_n(
    file: &str,
    text: &str,
    format: Option<DataFormat>,
) -> Result<Vec<BestOfNRow>, DatasetError> {
    parse_rows(file, text, format)
}
