//! Any preference or instruction dataset, read the way the `rewardbench` CLI reads a dataset
//! that is not `allenai/reward-bench`: `load_and_process_dataset` of `rewardbench/utils.py`
//! (rewardbench 0.1.4, with the `datasets` 5 of its reference environment).
//!
//! What that function does, and what is kept here:
//! - every column of the file is kept, in file order ([`GenericRow`] holds the whole row; a key
//!   missing from a row reads as `null`, as a column `datasets` fills with `None`);
//! - `question`, else `input`, is renamed `prompt` when there is no `prompt` column;
//! - preference data (`chosen` and `rejected` columns) wins over instruction data (`messages`),
//!   unless `prioritize_instructions` (the CLI's `--prioritize_scoring`); neither is the CLI's
//!   `ValueError` ([`NOT_RECOGNIZED`]);
//! - preference data: `process_preference_data` runs on every row (its guard
//!   `not isinstance(features["prompt"], list)` is always true with `datasets` >= 4, whose list
//!   feature is a `List` object): `prompt = chosen[:-1]`, `chosen = chosen[-1]["content"]`,
//!   `rejected = rejected[-1]["content"]` (the Hugging Face preference format, e.g.
//!   `ultrafeedback_binarized`). A dataset whose first row has a string `chosen` (the RewardBench
//!   layout, where the CLI raises `TypeError`) is read as RewardBench rows instead
//!   ([`PreferencePair`]'s reader: prompt string or turns, unique ids);
//! - instruction data: `prompt = messages[0]["content"]`; each conversation is scored alone and
//!   there is no accuracy.
//!
//! The formatting itself (`prepare_dialogue*`) is [`crate::chat`]'s; the CLI's output columns are
//! written by [`crate::files::CliOutputs`] / [`crate::files::CliInstructionOutputs`] with
//! [`GenericDataset::metadata`].

use std::collections::HashMap;

use serde_json::{Map, Value};

use super::{DatasetError, DatasetRow, ExampleId, PreferencePair, Prompt, RowContext, RowLocation};
use crate::chat::Message;
use crate::pyjson::PyValue;

/// The CLI's error for data with neither preference nor instruction columns.
pub const NOT_RECOGNIZED: &str =
    "Dataset format not recognized. It should contain either 'chosen' \
    and 'rejected' columns for preference data, or a 'messages' column for instruction data.";

/// One row with all its columns, in file order.
#[derive(Clone, Debug, PartialEq)]
pub struct GenericRow {
    /// `FILE#INDEX` (0-based): the loaders' duplicate check must pass, and the CLI keys
    /// nothing by id.
    pub index: ExampleId,
    pub columns: Map<String, Value>,
}

impl DatasetRow for GenericRow {
    const COLUMNS: &'static [&'static str] = &[];
    const ALL_COLUMNS: bool = true;

    /// A top-level object whose values are all arrays is a column dict (what `datasets`' JSON
    /// loader reads with `pa.Table.from_pydict`).
    fn is_column_dict(map: &Map<String, Value>) -> bool {
        !map.is_empty() && map.values().all(Value::is_array)
    }

    fn from_row(ctx: &RowContext<'_>, map: &Map<String, Value>) -> Result<Self, DatasetError> {
        Ok(GenericRow {
            // unique across the shards of one source too (the CLI keys nothing by id)
            index: ExampleId::Str(format!("{}#{}", ctx.file, ctx.index)),
            columns: map.clone(),
        })
    }

    fn id(&self) -> &ExampleId {
        &self.index
    }
}

/// Preference pairs or conversations to score one by one.
#[derive(Clone, Debug, PartialEq)]
pub enum GenericData {
    Preference(Vec<PreferencePair>),
    /// Each conversation as written (roles kept: the tokenizer's template sees them; FastChat
    /// re-assigns them by position).
    Instruction(Vec<Vec<Message>>),
}

/// A dataset as `load_and_process_dataset` leaves it.
#[derive(Clone, Debug, PartialEq)]
pub struct GenericDataset {
    pub data: GenericData,
    /// Every column after renaming and processing, in order (a `prompt` made by processing comes
    /// last, as `datasets.map` appends new columns).
    pub columns: Vec<String>,
    /// The processed rows (`chosen` / `rejected` replaced by the last message's content).
    pub rows: Vec<Map<String, Value>>,
}

impl GenericDataset {
    /// Reads rows as the CLI does. `file` names the source in errors.
    pub fn from_rows(
        file: &str,
        rows: Vec<GenericRow>,
        prioritize_instructions: bool,
    ) -> Result<Self, DatasetError> {
        if rows.is_empty() {
            return Err(DatasetError::Empty { file: file.into() });
        }
        let mut columns: Vec<String> = Vec::new();
        for row in &rows {
            for key in row.columns.keys() {
                if !columns.contains(key) {
                    columns.push(key.clone());
                }
            }
        }
        let has = |columns: &[String], name: &str| columns.iter().any(|c| c == name);
        let rename = ["question", "input"]
            .into_iter()
            .find(|from| has(&columns, from) && !has(&columns, "prompt"));
        let mut rows: Vec<Map<String, Value>> = rows
            .into_iter()
            .map(|row| match rename {
                Some(from) => row
                    .columns
                    .into_iter()
                    .map(|(k, v)| {
                        if k == from {
                            ("prompt".into(), v)
                        } else {
                            (k, v)
                        }
                    })
                    .collect(),
                None => row.columns,
            })
            .collect();
        if let Some(from) = rename {
            for c in &mut columns {
                if c == from {
                    *c = "prompt".into();
                }
            }
        }
        let preference = has(&columns, "chosen") && has(&columns, "rejected");
        let instruction = has(&columns, "messages");
        let as_instruction = if prioritize_instructions && instruction {
            true
        } else if preference {
            false
        } else if instruction {
            true
        } else {
            return Err(DatasetError::Layout {
                file: file.into(),
                reason: format!("{NOT_RECOGNIZED} (columns: {})", columns.join(", ")),
            });
        };
        if !has(&columns, "prompt") {
            columns.push("prompt".into());
        }
        let data = if as_instruction {
            let mut conversations = Vec::with_capacity(rows.len());
            for (index, row) in rows.iter_mut().enumerate() {
                let ctx = context(file, index);
                let messages = messages(&ctx, row, "messages")?;
                let first = messages.first().ok_or_else(|| {
                    ctx.field_error("messages", "expected at least one message, found none")
                })?;
                row.insert("prompt".into(), Value::String(first.content.clone()));
                conversations.push(messages);
            }
            GenericData::Instruction(conversations)
        } else {
            // RewardBench rows (chosen is a string) or the message-list format, by the first row
            let rewardbench_rows = matches!(rows[0].get("chosen"), Some(Value::String(_)));
            let mut pairs = Vec::with_capacity(rows.len());
            let mut first_use: HashMap<ExampleId, RowLocation> = HashMap::new();
            for (index, row) in rows.iter_mut().enumerate() {
                let ctx = context(file, index);
                if rewardbench_rows {
                    let pair = PreferencePair::from_row(&ctx, row)?;
                    if let Some(first) = first_use.insert(pair.id.clone(), ctx.loc) {
                        return Err(DatasetError::DuplicateId {
                            file: file.into(),
                            id: serde_json::to_string(&pair.id).unwrap_or_default(),
                            row: ctx.loc,
                            first,
                        });
                    }
                    pairs.push(pair);
                } else {
                    pairs.push(preference_pair(&ctx, row)?);
                }
            }
            GenericData::Preference(pairs)
        };
        Ok(GenericDataset {
            data,
            columns,
            rows,
        })
    }

    /// The columns the CLI carries into `{model}_outputs.jsonl` after its own: every column but
    /// `keep` (`["prompt", "text_chosen", "text_rejected"]` for preference data, `["prompt",
    /// "text"]` for instruction data), in order, a missing value as `null`.
    pub fn metadata(&self, keep: &[&str]) -> Vec<(String, Vec<PyValue>)> {
        self.columns
            .iter()
            .filter(|c| !keep.contains(&c.as_str()))
            .map(|c| {
                let values = self
                    .rows
                    .iter()
                    .map(|row| row.get(c).map_or(PyValue::Null, py_value))
                    .collect();
                (c.clone(), values)
            })
            .collect()
    }
}

fn context(file: &str, index: usize) -> RowContext<'_> {
    RowContext {
        file,
        loc: RowLocation {
            row: index + 1,
            line: None,
        },
        index,
    }
}

/// A list of `{role, content}` objects (string values).
fn message_list(
    ctx: &RowContext<'_>,
    value: &Value,
    field: &str,
) -> Result<Vec<Message>, DatasetError> {
    let Value::Array(items) = value else {
        return Err(ctx.field_error(
            field,
            super::expected("a list of {role, content} messages", value),
        ));
    };
    items
        .iter()
        .enumerate()
        .map(|(i, item)| {
            let Value::Object(msg) = item else {
                return Err(ctx.field_error(
                    format!("{field}[{i}]"),
                    super::expected("a {role, content} object", item),
                ));
            };
            let get = |key: &str| match msg.get(key) {
                Some(Value::String(s)) => Ok(s.clone()),
                Some(other) => Err(ctx.field_error(
                    format!("{field}[{i}].{key}"),
                    super::expected("a string", other),
                )),
                None => Err(ctx.field_error(format!("{field}[{i}].{key}"), "missing (required)")),
            };
            Ok(Message {
                role: get("role")?,
                content: get("content")?,
            })
        })
        .collect()
}

fn messages(
    ctx: &RowContext<'_>,
    row: &Map<String, Value>,
    field: &str,
) -> Result<Vec<Message>, DatasetError> {
    match row.get(field) {
        Some(value) => message_list(ctx, value, field),
        None => Err(ctx.field_error(field, "missing (required)")),
    }
}

/// `process_preference_data` on one row (in place).
fn preference_pair(
    ctx: &RowContext<'_>,
    row: &mut Map<String, Value>,
) -> Result<PreferencePair, DatasetError> {
    let chosen = messages(ctx, row, "chosen")?;
    let rejected = messages(ctx, row, "rejected")?;
    let (Some(chosen_last), Some(rejected_last)) = (chosen.last(), rejected.last()) else {
        let field = if chosen.is_empty() {
            "chosen"
        } else {
            "rejected"
        };
        return Err(ctx.field_error(field, "expected at least one message, found none"));
    };
    // `example["chosen"][:-1]`: the turns before the response (RewardBench re-assigns their roles
    // by position and needs an odd number of them; the formatter checks that)
    let turns: Vec<Message> = chosen[..chosen.len() - 1].to_vec();
    if turns.is_empty() {
        return Err(ctx.field_error(
            "chosen",
            "a single message: no prompt turns before the response (chosen[:-1] is empty)",
        ));
    }
    let pair = PreferencePair {
        id: ctx
            .example_id(row)
            .unwrap_or(ExampleId::Int(ctx.index as i64)),
        prompt: Prompt::Turns(turns.clone()),
        chosen: chosen_last.content.clone(),
        rejected: rejected_last.content.clone(),
        subset: match row.get("subset") {
            Some(Value::String(s)) => Some(s.clone()),
            _ => None,
        },
        chosen_model: None,
        rejected_model: None,
    };
    let as_json = |m: &Message| {
        let mut o = Map::new();
        o.insert("role".into(), Value::String(m.role.clone()));
        o.insert("content".into(), Value::String(m.content.clone()));
        Value::Object(o)
    };
    row.insert(
        "prompt".into(),
        Value::Array(turns.iter().map(as_json).collect()),
    );
    row.insert("chosen".into(), Value::String(pair.chosen.clone()));
    row.insert("rejected".into(), Value::String(pair.rejected.clone()));
    Ok(pair)
}

/// A JSON value as Python's `json.loads` gives it (integers apart from floats, key order kept).
pub fn py_value(value: &Value) -> PyValue {
    match value {
        Value::Null => PyValue::Null,
        Value::Bool(b) => PyValue::Bool(*b),
        Value::Number(n) => match n.as_i64() {
            Some(i) => PyValue::Int(i),
            None => PyValue::Float(n.as_f64().unwrap_or(f64::NAN)),
        },
        Value::String(s) => PyValue::Str(s.clone()),
        Value::Array(items) => PyValue::List(items.iter().map(py_value).collect()),
        Value::Object(map) => {
            PyValue::Dict(map.iter().map(|(k, v)| (k.clone(), py_value(v))).collect())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dataset::{parse_rows, DataFormat};

    fn load(text: &str, prioritize: bool) -> Result<GenericDataset, DatasetError> {
        let rows: Vec<GenericRow> = parse_rows("d.jsonl", text, Some(DataFormat::JsonLines))?;
        GenericDataset::from_rows("d.jsonl", rows, prioritize)
    }

    #[test]
    fn message_lists_become_prompt_turns_and_last_contents() {
        let d = load(
            r#"{"prompt": "Q", "chosen": [{"role": "user", "content": "Q"}, {"role": "assistant", "content": "A"}], "rejected": [{"role": "user", "content": "Q"}, {"role": "assistant", "content": "B"}], "score": 1.5, "id": 7}"#,
            false,
        )
        .unwrap();
        let GenericData::Preference(pairs) = &d.data else {
            panic!()
        };
        assert_eq!(pairs[0].prompt, Prompt::Turns(vec![Message::user("Q")]));
        assert_eq!(
            (pairs[0].chosen.as_str(), pairs[0].rejected.as_str()),
            ("A", "B")
        );
        assert_eq!(pairs[0].id, ExampleId::Int(7));
        let meta = d.metadata(&["prompt", "text_chosen", "text_rejected"]);
        let names: Vec<&str> = meta.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, ["chosen", "rejected", "score", "id"]);
        assert_eq!(meta[0].1, vec![PyValue::Str("A".into())]);
        assert_eq!(meta[2].1, vec![PyValue::Float(1.5)]);
        assert_eq!(meta[3].1, vec![PyValue::Int(7)]);
    }

    #[test]
    fn instruction_data_and_the_prioritize_flag() {
        let text = r#"{"messages": [{"role": "user", "content": "Q"}, {"role": "assistant", "content": "A"}], "chosen": [{"role": "user", "content": "Q"}, {"role": "assistant", "content": "A"}], "rejected": [{"role": "user", "content": "Q"}, {"role": "assistant", "content": "B"}]}"#;
        assert!(matches!(
            load(text, false).unwrap().data,
            GenericData::Preference(_)
        ));
        let d = load(text, true).unwrap();
        let GenericData::Instruction(conversations) = &d.data else {
            panic!()
        };
        assert_eq!(conversations[0].len(), 2);
        // prompt appended last, messages[0].content
        assert_eq!(d.columns.last().unwrap(), "prompt");
        assert_eq!(d.rows[0]["prompt"], "Q");
    }

    #[test]
    fn question_is_renamed_and_errors_name_the_row() {
        let d = load(
            r#"{"question": "Q", "messages": [{"role": "user", "content": "Q"}]}"#,
            false,
        )
        .unwrap();
        assert_eq!(d.columns, ["prompt", "messages"]);
        let err = load(r#"{"text": "x"}"#, false).unwrap_err().to_string();
        assert!(
            err.contains("Dataset format not recognized") && err.contains("text"),
            "{err}"
        );
        let err = load(
            "{\"chosen\": [{\"role\": \"user\", \"content\": \"Q\"}, {\"role\": \"assistant\", \"content\": \"A\"}], \"rejected\": [{\"role\": \"user\"}]}",
            false,
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("row 1") && err.contains("rejected[0].content"),
            "{err}"
        );
    }
}
