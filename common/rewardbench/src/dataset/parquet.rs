//! Rows of Parquet files, as the Hugging Face Hub stores datasets (`data/<split>-00000-of-00001.parquet`).
//!
//! Each row is turned into a JSON object holding only the columns the row type reads
//! ([`DatasetRow::COLUMNS`]; the others are not decoded), and then parsed by the same code as a
//! JSON row, so a malformed value gives the same error as in JSON Lines: file, 1-based row and
//! field (the column, or a path inside it such as `prompt[1].content`).
//!
//! Types: strings (UTF-8 byte arrays), integers, booleans, floats, nulls, lists (`chosen` of
//! RewardBench 2, `list<string>`) and structs (`prompt` of the prior preference sets,
//! `list<struct{content, role}>`) are read; maps become objects. Decimal, date and time columns
//! are reported as unsupported if a row type reads them.
//!
//! Compression: uncompressed and Snappy (the Hub's files and pyarrow's default). Other codecs
//! give an error naming the file and the codec.
//!
//! This uses the `parquet` crate's record reader and not its Arrow reader: the row types read a
//! handful of string/list columns, and leaving out the `arrow-*` crates keeps the build small.

use std::fs::File;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::Path;
use std::sync::Arc;

use parquet::basic::Compression;
use parquet::file::reader::{FileReader, SerializedFileReader};
use parquet::record::{Field, Row};
use parquet::schema::types::Type;
use serde_json::{Map, Number, Value};

use crate::dataset::{DatasetError, DatasetRow, RowContext, RowLocation};

/// Reads the rows of a Parquet file (see the module docs).
pub fn load_parquet_rows<T: DatasetRow>(path: &Path) -> Result<Vec<T>, DatasetError> {
    let file = path.display().to_string();
    let rows = read_parquet_rows(&file, path)?;
    crate::dataset::finish_rows(&file, rows)
}

pub(crate) fn read_parquet_rows<T: DatasetRow>(
    file: &str,
    path: &Path,
) -> Result<Vec<(RowLocation, T)>, DatasetError> {
    let handle = File::open(path).map_err(|source| DatasetError::Io {
        file: file.into(),
        source,
    })?;
    let file_error = |message: String| DatasetError::Parquet {
        file: file.into(),
        row: None,
        column: None,
        message,
    };
    let reader = SerializedFileReader::new(handle)
        .map_err(|err| file_error(format!("not a readable Parquet file: {err}")))?;

    let schema = reader.metadata().file_metadata().schema();
    let available: Vec<&str> = schema.get_fields().iter().map(|f| f.name()).collect();
    let selected: Vec<Arc<Type>> = schema
        .get_fields()
        .iter()
        .filter(|f| T::reads_column(f.name()))
        .cloned()
        .collect();
    let total_rows = reader.metadata().file_metadata().num_rows();
    if total_rows == 0 {
        return Ok(Vec::new());
    }
    if selected.is_empty() {
        return Err(DatasetError::Layout {
            file: file.into(),
            reason: format!(
                "none of the columns {:?} is in the file (its columns: {:?})",
                T::COLUMNS,
                available
            ),
        });
    }
    // Codecs this build cannot decode: say so before decoding, naming the column.
    for row_group in reader.metadata().row_groups() {
        for chunk in row_group.columns() {
            let top = chunk
                .column_path()
                .parts()
                .first()
                .cloned()
                .unwrap_or_default();
            let codec = chunk.compression();
            if T::reads_column(&top)
                && !matches!(codec, Compression::UNCOMPRESSED | Compression::SNAPPY)
            {
                return Err(DatasetError::Parquet {
                    file: file.into(),
                    row: None,
                    column: Some(top),
                    message: format!(
                        "compressed with {codec}, which herd does not read (Snappy and uncompressed only; rewrite the file with pyarrow's default compression)"
                    ),
                });
            }
        }
    }
    let projection = Type::group_type_builder(schema.name())
        .with_fields(selected)
        .build()
        .map_err(|err| file_error(format!("cannot select the columns: {err}")))?;

    // The record reader panics on some malformed files instead of returning an error.
    let decoded = catch_unwind(AssertUnwindSafe(|| {
        let mut rows = Vec::with_capacity(usize::try_from(total_rows).unwrap_or(0));
        let iter = reader
            .get_row_iter(Some(projection))
            .map_err(|err| file_error(format!("cannot read the rows: {err}")))?;
        for (index, row) in iter.enumerate() {
            let loc = RowLocation {
                row: index + 1,
                line: None,
            };
            let row = row.map_err(|err| DatasetError::Parquet {
                file: file.into(),
                row: Some(loc),
                column: None,
                message: format!("cannot decode the row: {err}"),
            })?;
            let map = row_to_json(file, loc, &row)?;
            let ctx = RowContext { file, loc, index };
            rows.push((loc, T::from_row(&ctx, &map)?));
        }
        Ok(rows)
    }));
    match decoded {
        Ok(result) => result,
        Err(panic) => {
            let what = panic
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| panic.downcast_ref::<&str>().map(|s| (*s).to_owned()))
                .unwrap_or_else(|| "unknown error".into());
            Err(file_error(format!("the Parquet reader failed: {what}")))
        }
    }
}

fn row_to_json(
    file: &str,
    loc: RowLocation,
    row: &Row,
) -> Result<Map<String, Value>, DatasetError> {
    let mut map = Map::new();
    for (column, field) in row.get_column_iter() {
        let value = field_to_json(field).map_err(|message| DatasetError::Parquet {
            file: file.into(),
            row: Some(loc),
            column: Some(column.clone()),
            message,
        })?;
        map.insert(column.clone(), value);
    }
    Ok(map)
}

/// A Parquet value as JSON. Non-finite floats become `null` (JSON has no NaN).
fn field_to_json(field: &Field) -> Result<Value, String> {
    Ok(match field {
        Field::Null => Value::Null,
        Field::Bool(b) => Value::Bool(*b),
        Field::Byte(n) => Value::from(*n),
        Field::Short(n) => Value::from(*n),
        Field::Int(n) => Value::from(*n),
        Field::Long(n) => Value::from(*n),
        Field::UByte(n) => Value::from(*n),
        Field::UShort(n) => Value::from(*n),
        Field::UInt(n) => Value::from(*n),
        Field::ULong(n) => Value::from(*n),
        Field::Float16(x) => float(f64::from(*x)),
        Field::Float(x) => float(f64::from(*x)),
        Field::Double(x) => float(*x),
        Field::Str(s) => Value::String(s.clone()),
        Field::Bytes(bytes) => match std::str::from_utf8(bytes.data()) {
            Ok(s) => Value::String(s.to_owned()),
            Err(err) => return Err(format!("a binary value is not UTF-8 text ({err})")),
        },
        Field::Group(row) => {
            let mut map = Map::new();
            for (name, field) in row.get_column_iter() {
                map.insert(name.clone(), field_to_json(field)?);
            }
            Value::Object(map)
        }
        Field::ListInternal(list) => Value::Array(
            list.elements()
                .iter()
                .map(field_to_json)
                .collect::<Result<_, _>>()?,
        ),
        Field::MapInternal(entries) => {
            let mut map = Map::new();
            for (key, value) in entries.entries() {
                let key = match field_to_json(key)? {
                    Value::String(s) => s,
                    other => other.to_string(),
                };
                map.insert(key, field_to_json(value)?);
            }
            Value::Object(map)
        }
        other => {
            return Err(format!(
                "unsupported Parquet value {other} (decimal, date and time columns are not read)"
            ))
        }
    })
}

fn float(x: f64) -> Value {
    Number::from_f64(x).map_or(Value::Null, Value::Number)
}
