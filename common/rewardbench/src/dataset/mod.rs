//! Evaluation data for the worker: preference pairs from JSON / JSON Lines / Parquet files.
//!
//! The row schema is RewardBench v1's `filtered` split
//! (`{"prompt", "chosen", "chosen_model", "rejected", "rejected_model", "subset", "id"}`). The prompt
//! may also be a list of `{role, content}` messages, as in the prior preference sets
//! (`allenai/pref-test-sets`). Columns other than these are ignored.
//!
//! Accepted file layouts:
//! - JSON Lines: one object per line, blank lines skipped (`.jsonl`, `.ndjson`, and also `.json`
//!   files holding several top-level objects, which is what `datasets.Dataset.to_json` writes);
//! - JSON: an array of row objects, or a column dict `{"prompt": [...], "chosen": [...], ...}` as
//!   `datasets.Dataset.to_dict()` writes it, or a single row object;
//! - Parquet (`.parquet`, or any file starting with the `PAR1` magic): the Hub's files; see
//!   [`parquet`].
//!
//! The extension picks the layout; files with any other extension are sniffed from their content.
//! Every error names the file, and where it applies the 1-based row, the field and the reason.
//!
//! The loaders are generic over the row type ([`DatasetRow`]): [`PreferencePair`] here, and the
//! best-of-N rows of RewardBench 2 in [`v2`]. Data on the Hugging Face Hub
//! (`hf://datasets/ORG/NAME`) is resolved to local files by `herd_storage::hub`.

pub mod generic;
pub mod parquet;
pub mod prior_sets;
pub mod v2;

use std::collections::HashMap;
use std::fmt;
use std::path::Path;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::chat::Message;

/// The prompt of a preference pair.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Prompt {
    /// A single user turn (RewardBench v1: `prompt` is a string).
    Text(String),
    /// A conversation (prior preference sets: a list of `{role, content}` messages).
    Turns(Vec<Message>),
}

impl Prompt {
    /// The prompt as chat messages: a text prompt becomes one `user` turn.
    pub fn to_messages(&self) -> Vec<Message> {
        match self {
            Prompt::Text(text) => vec![Message::new("user", text.clone())],
            Prompt::Turns(turns) => turns.clone(),
        }
    }

    /// The prompt text, if the prompt is a plain string.
    pub fn as_text(&self) -> Option<&str> {
        match self {
            Prompt::Text(text) => Some(text),
            Prompt::Turns(_) => None,
        }
    }
}

/// The id of an example, kept as it came: a JSON integer or a JSON string. Rows without an id (or
/// with a `null` id) get their 0-based row index. Serialises back to the same JSON type; `Display`
/// writes the integer, or the string without quotes.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(untagged)]
pub enum ExampleId {
    Int(i64),
    Str(String),
}

impl fmt::Display for ExampleId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ExampleId::Int(n) => write!(f, "{n}"),
            ExampleId::Str(s) => f.write_str(s),
        }
    }
}

impl From<i64> for ExampleId {
    fn from(n: i64) -> Self {
        ExampleId::Int(n)
    }
}

impl From<String> for ExampleId {
    fn from(s: String) -> Self {
        ExampleId::Str(s)
    }
}

impl From<&str> for ExampleId {
    fn from(s: &str) -> Self {
        ExampleId::Str(s.to_owned())
    }
}

/// One prompt with a chosen (preferred) and a rejected completion.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PreferencePair {
    pub id: ExampleId,
    pub prompt: Prompt,
    pub chosen: String,
    pub rejected: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subset: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub chosen_model: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rejected_model: Option<String>,
}

/// Where a row sits in its file: the 1-based row number and, for JSON Lines, the 1-based line
/// number (they differ only when blank lines were skipped).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RowLocation {
    pub row: usize,
    pub line: Option<usize>,
}

impl fmt::Display for RowLocation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.line {
            Some(line) if line != self.row => write!(f, "row {} (line {line})", self.row),
            _ => write!(f, "row {}", self.row),
        }
    }
}

/// Why a dataset could not be loaded. Every message starts with the file name.
#[derive(Debug, thiserror::Error)]
pub enum DatasetError {
    #[error("{file}: cannot read the file: {source}")]
    Io {
        file: String,
        #[source]
        source: std::io::Error,
    },
    /// The text is not valid JSON (whole document, or one JSON Lines row when `row` is set).
    #[error("{file}: {}invalid JSON: {message}", row.map(|r| format!("{r}: ")).unwrap_or_default())]
    Syntax {
        file: String,
        row: Option<RowLocation>,
        message: String,
    },
    /// A row is not a JSON object.
    #[error("{file}: {row}: {reason}")]
    Row {
        file: String,
        row: RowLocation,
        reason: String,
    },
    /// A field of a row is missing or has the wrong type. `field` is a path such as `chosen` or
    /// `prompt[1].content`.
    #[error("{file}: {row}: field \"{field}\": {reason}")]
    Field {
        file: String,
        row: RowLocation,
        field: String,
        reason: String,
    },
    #[error("{file}: {row}: duplicate id {id} (already used by {first})")]
    DuplicateId {
        file: String,
        /// The id as JSON (strings quoted).
        id: String,
        row: RowLocation,
        first: RowLocation,
    },
    /// The document is valid JSON but not a layout this loader understands.
    #[error("{file}: {reason}")]
    Layout { file: String, reason: String },
    #[error("{file}: the dataset is empty (no rows)")]
    Empty { file: String },
    /// A Parquet file could not be decoded: the file as a whole (`row` unset), or one row, or
    /// one column (a type this loader cannot turn into a value).
    #[error(
        "{file}: {}{}{message}",
        row.map(|r| format!("{r}: ")).unwrap_or_default(),
        column.as_ref().map(|c| format!("column \"{c}\": ")).unwrap_or_default()
    )]
    Parquet {
        file: String,
        row: Option<RowLocation>,
        column: Option<String>,
        message: String,
    },
    /// An `hf://` source could not be resolved to local files (`file` is the source as given).
    #[error("{file}: {reason}")]
    Hub { file: String, reason: String },
}

/// A row type the loaders can read: [`PreferencePair`] (RewardBench v1 and the prior preference
/// sets) and [`v2::BestOfNRow`] (RewardBench 2).
pub trait DatasetRow: Sized {
    /// The columns this row type reads; other columns are ignored (and not decoded from Parquet).
    const COLUMNS: &'static [&'static str];

    /// Reads every column instead of [`Self::COLUMNS`] ([`generic::GenericRow`]); a column dict
    /// then takes its row count from its first column.
    const ALL_COLUMNS: bool = false;

    /// Whether the loaders decode `column`.
    fn reads_column(column: &str) -> bool {
        Self::ALL_COLUMNS || Self::COLUMNS.contains(&column)
    }

    /// Whether a top-level JSON object is a column dict (`Dataset.to_dict()`) rather than one row.
    fn is_column_dict(map: &Map<String, Value>) -> bool;

    /// Parses one row; every error names `ctx`'s file and row.
    fn from_row(ctx: &RowContext<'_>, map: &Map<String, Value>) -> Result<Self, DatasetError>;

    /// The row's id (ids must be unique within a file).
    fn id(&self) -> &ExampleId;
}

/// Where a row being parsed comes from, with helpers that read its fields and build errors
/// naming the file, the row and the field.
#[derive(Clone, Copy, Debug)]
pub struct RowContext<'a> {
    pub file: &'a str,
    pub loc: RowLocation,
    /// The 0-based row index: the id of a row without one.
    pub index: usize,
}

impl RowContext<'_> {
    /// A [`DatasetError::Field`] for this row.
    pub fn field_error(&self, field: impl Into<String>, reason: impl Into<String>) -> DatasetError {
        DatasetError::Field {
            file: self.file.into(),
            row: self.loc,
            field: field.into(),
            reason: reason.into(),
        }
    }

    /// A required string field.
    pub fn required_string(
        &self,
        map: &Map<String, Value>,
        field: &str,
    ) -> Result<String, DatasetError> {
        match map.get(field) {
            Some(Value::String(s)) => Ok(s.clone()),
            Some(other) => Err(self.field_error(field, expected("a string", other))),
            None => Err(self.field_error(field, "missing (required)")),
        }
    }

    /// An optional string field (missing or `null` gives `None`).
    pub fn optional_string(
        &self,
        map: &Map<String, Value>,
        field: &str,
    ) -> Result<Option<String>, DatasetError> {
        match map.get(field) {
            Some(Value::String(s)) => Ok(Some(s.clone())),
            None | Some(Value::Null) => Ok(None),
            Some(other) => Err(self.field_error(field, expected("a string or null", other))),
        }
    }

    /// The `prompt` field: a string, or a non-empty list of `{role, content}` messages.
    pub fn prompt(&self, map: &Map<String, Value>) -> Result<Prompt, DatasetError> {
        parse_prompt(self, map)
    }

    /// The `id` field: an integer or a string; missing or `null` gives the row index.
    pub fn example_id(&self, map: &Map<String, Value>) -> Result<ExampleId, DatasetError> {
        match map.get("id") {
            None | Some(Value::Null) => Ok(ExampleId::Int(self.index as i64)),
            Some(Value::String(s)) => Ok(ExampleId::Str(s.clone())),
            Some(Value::Number(n)) => match n.as_i64() {
                Some(n) => Ok(ExampleId::Int(n)),
                None => Err(self.field_error(
                    "id",
                    format!("expected an integer (64-bit) or a string, found the number {n}"),
                )),
            },
            Some(other) => Err(self.field_error("id", expected("an integer or a string", other))),
        }
    }
}

impl DatasetRow for PreferencePair {
    const COLUMNS: &'static [&'static str] = &FIELDS;

    fn is_column_dict(map: &Map<String, Value>) -> bool {
        matches!(map.get("chosen"), Some(Value::Array(_)))
    }

    fn from_row(ctx: &RowContext<'_>, map: &Map<String, Value>) -> Result<Self, DatasetError> {
        parse_row(ctx, map)
    }

    fn id(&self) -> &ExampleId {
        &self.id
    }
}

/// A file layout, for [`parse_pairs`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DataFormat {
    /// One JSON object per line.
    JsonLines,
    /// A JSON array of objects, a column dict, or a single object.
    Json,
}

impl DataFormat {
    /// The layout an extension promises: `jsonl`/`ndjson` → JSON Lines, `json` → JSON, anything
    /// else → `None` (sniff the content).
    pub fn from_path(path: &Path) -> Option<DataFormat> {
        let ext = path.extension()?.to_str()?.to_ascii_lowercase();
        match ext.as_str() {
            "jsonl" | "ndjson" => Some(DataFormat::JsonLines),
            "json" => Some(DataFormat::Json),
            _ => None,
        }
    }
}

/// Loads the preference pairs of a JSON / JSON Lines / Parquet file (see the module docs for the
/// layouts).
pub fn load_pairs(path: &Path) -> Result<Vec<PreferencePair>, DatasetError> {
    load_rows(path)
}

/// Parses preference pairs from text. `file` is only used in error messages; `format` is the
/// layout hint (`None`: sniff the content). A hint is not binding: a `.json` file holding JSON
/// Lines, or a `.jsonl` file holding a JSON array, is still read.
pub fn parse_pairs(
    file: &str,
    text: &str,
    format: Option<DataFormat>,
) -> Result<Vec<PreferencePair>, DatasetError> {
    parse_rows(file, text, format)
}

/// Loads the rows of a JSON / JSON Lines / Parquet file: Parquet when the extension is
/// `.parquet` or the file starts with the `PAR1` magic, otherwise as [`parse_rows`].
pub fn load_rows<T: DatasetRow>(path: &Path) -> Result<Vec<T>, DatasetError> {
    let file = path.display().to_string();
    let io_error = |source| DatasetError::Io {
        file: file.clone(),
        source,
    };
    let parquet_ext = path
        .extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| e.eq_ignore_ascii_case("parquet"));
    let bytes = if parquet_ext {
        None
    } else {
        Some(std::fs::read(path).map_err(io_error)?)
    };
    match bytes {
        Some(bytes) if !bytes.starts_with(b"PAR1") => {
            let text = String::from_utf8(bytes).map_err(|err| {
                io_error(std::io::Error::new(
                    std::io::ErrorKind::InvalidData,
                    err.utf8_error(),
                ))
            })?;
            parse_rows(&file, &text, DataFormat::from_path(path))
        }
        _ => finish_rows(&file, parquet::read_parquet_rows(&file, path)?),
    }
}

/// Parses rows from JSON / JSON Lines text; see [`parse_pairs`].
pub fn parse_rows<T: DatasetRow>(
    file: &str,
    text: &str,
    format: Option<DataFormat>,
) -> Result<Vec<T>, DatasetError> {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    if text.trim_start().is_empty() {
        return Err(DatasetError::Empty { file: file.into() });
    }
    let jsonl_hint = format == Some(DataFormat::JsonLines);
    let rows = if jsonl_hint && first_line_is_object(text) {
        parse_json_lines(file, text)?
    } else {
        match serde_json::from_str::<Value>(text) {
            Ok(doc) => parse_json_document(file, doc)?,
            // Several top-level values: JSON Lines (what `Dataset.to_json` writes by default).
            // With a `.jsonl` name, report the broken row rather than the whole document.
            Err(_) if jsonl_hint || first_line_is_object(text) => parse_json_lines(file, text)?,
            Err(err) => return Err(syntax_error(file, None, &err)),
        }
    };
    finish_rows(file, rows)
}

/// Rejects an empty dataset and duplicate ids, and drops the row locations.
pub(crate) fn finish_rows<T: DatasetRow>(
    file: &str,
    rows: Vec<(RowLocation, T)>,
) -> Result<Vec<T>, DatasetError> {
    if rows.is_empty() {
        return Err(DatasetError::Empty { file: file.into() });
    }
    check_unique_ids(file, &rows)?;
    Ok(rows.into_iter().map(|(_, row)| row).collect())
}

fn first_line_is_object(text: &str) -> bool {
    text.lines()
        .find(|line| !line.trim().is_empty())
        .is_some_and(|line| matches!(serde_json::from_str::<Value>(line), Ok(Value::Object(_))))
}

fn syntax_error(file: &str, row: Option<RowLocation>, err: &serde_json::Error) -> DatasetError {
    let full = err.to_string();
    let message = match row {
        // A JSON Lines row is one line: report the column only, not serde's "line 1".
        Some(_) => {
            let suffix = format!(" at line {} column {}", err.line(), err.column());
            match full.strip_suffix(&suffix) {
                Some(msg) => format!("{msg} at column {}", err.column()),
                None => full,
            }
        }
        None => full,
    };
    DatasetError::Syntax {
        file: file.into(),
        row,
        message,
    }
}

fn parse_json_lines<T: DatasetRow>(
    file: &str,
    text: &str,
) -> Result<Vec<(RowLocation, T)>, DatasetError> {
    let mut rows = Vec::new();
    for (line_index, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let loc = RowLocation {
            row: rows.len() + 1,
            line: Some(line_index + 1),
        };
        let value: Value =
            serde_json::from_str(line).map_err(|err| syntax_error(file, Some(loc), &err))?;
        let row = parse_row_value(file, loc, rows.len(), &value)?;
        rows.push((loc, row));
    }
    Ok(rows)
}

fn parse_json_document<T: DatasetRow>(
    file: &str,
    doc: Value,
) -> Result<Vec<(RowLocation, T)>, DatasetError> {
    match doc {
        Value::Array(rows) => rows
            .iter()
            .enumerate()
            .map(|(index, value)| {
                let loc = RowLocation {
                    row: index + 1,
                    line: None,
                };
                parse_row_value(file, loc, index, value).map(|row| (loc, row))
            })
            .collect(),
        Value::Object(map) if T::is_column_dict(&map) => parse_column_dict(file, &map),
        Value::Object(map) => {
            let loc = RowLocation { row: 1, line: None };
            let ctx = RowContext {
                file,
                loc,
                index: 0,
            };
            Ok(vec![(loc, T::from_row(&ctx, &map)?)])
        }
        other => Err(DatasetError::Layout {
            file: file.into(),
            reason: format!(
                "expected an array of row objects, a column dict or JSON Lines, found {}",
                kind(&other)
            ),
        }),
    }
}

/// The fields [`PreferencePair`] reads; in a column dict they must all be arrays of the same
/// length.
const FIELDS: [&str; 7] = [
    "prompt",
    "chosen",
    "rejected",
    "subset",
    "id",
    "chosen_model",
    "rejected_model",
];

fn parse_column_dict<T: DatasetRow>(
    file: &str,
    map: &Map<String, Value>,
) -> Result<Vec<(RowLocation, T)>, DatasetError> {
    let length_column = if T::ALL_COLUMNS {
        map.keys().next().map_or("chosen", String::as_str)
    } else {
        "chosen"
    };
    let rows = match map.get(length_column) {
        Some(Value::Array(values)) => values.len(),
        _ => {
            return Err(DatasetError::Layout {
                file: file.into(),
                reason: format!("column dict: column \"{length_column}\" must be an array"),
            })
        }
    };
    let fields: Vec<&str> = if T::ALL_COLUMNS {
        map.keys().map(String::as_str).collect()
    } else {
        T::COLUMNS.to_vec()
    };
    let mut columns: Vec<(&str, &Vec<Value>)> = Vec::new();
    for field in fields {
        match map.get(field) {
            None => {}
            Some(Value::Array(values)) if values.len() == rows => columns.push((field, values)),
            Some(Value::Array(values)) => {
                return Err(DatasetError::Layout {
                    file: file.into(),
                    reason: format!(
                        "column dict: column \"{field}\" has {} values but column \"{length_column}\" has {rows}",
                        values.len()
                    ),
                })
            }
            Some(other) => {
                return Err(DatasetError::Layout {
                    file: file.into(),
                    reason: format!(
                        "column dict: column \"{field}\" must be an array, found {}",
                        kind(other)
                    ),
                })
            }
        }
    }
    (0..rows)
        .map(|index| {
            let loc = RowLocation {
                row: index + 1,
                line: None,
            };
            let row: Map<String, Value> = columns
                .iter()
                .map(|(field, values)| ((*field).to_owned(), values[index].clone()))
                .collect();
            let ctx = RowContext { file, loc, index };
            T::from_row(&ctx, &row).map(|parsed| (loc, parsed))
        })
        .collect()
}

fn parse_row_value<T: DatasetRow>(
    file: &str,
    loc: RowLocation,
    index: usize,
    value: &Value,
) -> Result<T, DatasetError> {
    match value {
        Value::Object(map) => T::from_row(&RowContext { file, loc, index }, map),
        other => Err(DatasetError::Row {
            file: file.into(),
            row: loc,
            reason: format!("expected a JSON object, found {}", kind(other)),
        }),
    }
}

fn parse_prompt(ctx: &RowContext<'_>, map: &Map<String, Value>) -> Result<Prompt, DatasetError> {
    match map.get("prompt") {
        Some(Value::String(s)) => Ok(Prompt::Text(s.clone())),
        Some(Value::Array(items)) => {
            if items.is_empty() {
                return Err(ctx.field_error(
                    "prompt",
                    "expected at least one message, found an empty array",
                ));
            }
            let mut turns = Vec::with_capacity(items.len());
            for (i, item) in items.iter().enumerate() {
                let Value::Object(msg) = item else {
                    return Err(ctx.field_error(
                        format!("prompt[{i}]"),
                        expected("a {role, content} object", item),
                    ));
                };
                let get = |key: &str| match msg.get(key) {
                    Some(Value::String(s)) => Ok(s.clone()),
                    Some(other) => {
                        Err(ctx
                            .field_error(format!("prompt[{i}].{key}"), expected("a string", other)))
                    }
                    None => {
                        Err(ctx.field_error(format!("prompt[{i}].{key}"), "missing (required)"))
                    }
                };
                let role = get("role")?;
                let content = get("content")?;
                turns.push(Message { role, content });
            }
            Ok(Prompt::Turns(turns))
        }
        Some(other) => Err(ctx.field_error(
            "prompt",
            expected("a string or a list of {role, content} messages", other),
        )),
        None => Err(ctx.field_error("prompt", "missing (required)")),
    }
}

fn parse_row(
    ctx: &RowContext<'_>,
    map: &Map<String, Value>,
) -> Result<PreferencePair, DatasetError> {
    let prompt = ctx.prompt(map)?;
    let id = ctx.example_id(map)?;
    Ok(PreferencePair {
        id,
        prompt,
        chosen: ctx.required_string(map, "chosen")?,
        rejected: ctx.required_string(map, "rejected")?,
        subset: ctx.optional_string(map, "subset")?,
        chosen_model: ctx.optional_string(map, "chosen_model")?,
        rejected_model: ctx.optional_string(map, "rejected_model")?,
    })
}

fn check_unique_ids<T: DatasetRow>(
    file: &str,
    rows: &[(RowLocation, T)],
) -> Result<(), DatasetError> {
    let mut seen: HashMap<&ExampleId, RowLocation> = HashMap::with_capacity(rows.len());
    for (loc, row) in rows {
        let id = row.id();
        if let Some(first) = seen.insert(id, *loc) {
            return Err(DatasetError::DuplicateId {
                file: file.into(),
                id: serde_json::to_string(id).unwrap_or_else(|_| id.to_string()),
                row: *loc,
                first,
            });
        }
    }
    Ok(())
}

pub(crate) fn expected(what: &str, found: &Value) -> String {
    format!("expected {what}, found {}", kind(found))
}

/// How a JSON value's type reads in an error message.
pub(crate) fn kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

impl<'a> From<&'a Prompt> for crate::chat::Prompt<'a> {
    fn from(prompt: &'a Prompt) -> Self {
        match prompt {
            Prompt::Text(text) => crate::chat::Prompt::Text(text),
            Prompt::Turns(turns) => crate::chat::Prompt::Turns(turns),
        }
    }
}
