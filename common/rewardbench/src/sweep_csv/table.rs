//! The sweep frame and its CSV text, as pandas' `DataFrame.to_csv(path)` writes it.

use std::fmt::Write as _;

use crate::pyjson::float_repr;

/// One cell of the frame: the Python object pandas holds (or NaN/None: [`Cell::Missing`]).
#[derive(Clone, Debug, PartialEq)]
pub enum Cell {
    /// NaN or None: dropped by `dropna`, written as an empty field.
    Missing,
    Bool(bool),
    Int(i64),
    Float(f64),
    Str(String),
}

impl Cell {
    /// The value as a float (ints and bools converted), `None` for missing values and strings.
    pub fn as_f64(&self) -> Option<f64> {
        match self {
            Cell::Int(n) => Some(*n as f64),
            Cell::Float(x) => Some(*x),
            Cell::Bool(b) => Some(f64::from(u8::from(*b))),
            Cell::Missing | Cell::Str(_) => None,
        }
    }

    pub fn as_str(&self) -> Option<&str> {
        match self {
            Cell::Str(s) => Some(s),
            _ => None,
        }
    }

    pub fn is_missing(&self) -> bool {
        matches!(self, Cell::Missing)
    }
}

/// The numpy dtype of a column, which decides how `to_csv` writes its values.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ColumnKind {
    /// `object`: each value as Python's `str()` (`repr` for floats, `True`, `3`, the string).
    Object,
    /// `int64`: integers.
    Int64,
    /// `float64`: every value as a float (`12.0`), numpy's `str`, which is Python's `repr`.
    Float64,
}

/// A named column.
#[derive(Clone, Debug, PartialEq)]
pub struct Column {
    pub name: String,
    pub kind: ColumnKind,
    pub cells: Vec<Cell>,
}

/// The row label `to_csv` writes in the first, unnamed column.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RowLabel {
    /// Counts mode: the row's position in the merged frame (before `dropna` and the sort).
    Position(usize),
    /// Name mode: the experiment name.
    Name(String),
}

/// The frame `fetch_evals_rewardbench` returns: row labels and columns in order.
#[derive(Clone, Debug, PartialEq)]
pub struct SweepTable {
    pub labels: Vec<RowLabel>,
    pub columns: Vec<Column>,
}

impl SweepTable {
    pub fn num_rows(&self) -> usize {
        self.labels.len()
    }

    pub fn column(&self, name: &str) -> Option<&Column> {
        self.columns.iter().find(|c| c.name == name)
    }

    pub fn column_names(&self) -> impl Iterator<Item = &str> {
        self.columns.iter().map(|c| c.name.as_str())
    }

    /// `to_csv()` with pandas' defaults: `,` separator, `"` quoting only where needed
    /// (`csv.QUOTE_MINIMAL`), `\n` line ends, the unnamed row-label column first with an empty
    /// header, missing values as empty fields.
    pub fn to_csv(&self) -> String {
        let mut out = String::new();
        push_field(&mut out, "");
        for column in &self.columns {
            out.push(',');
            push_field(&mut out, &column.name);
        }
        out.push('\n');
        let mut buf = String::new();
        for (row, label) in self.labels.iter().enumerate() {
            match label {
                RowLabel::Position(n) => {
                    let _ = write!(out, "{n}");
                }
                RowLabel::Name(name) => push_field(&mut out, name),
            }
            for column in &self.columns {
                out.push(',');
                buf.clear();
                format_cell(&mut buf, &column.cells[row], column.kind);
                push_field(&mut out, &buf);
            }
            out.push('\n');
        }
        out
    }
}

fn format_cell(out: &mut String, cell: &Cell, kind: ColumnKind) {
    match (cell, kind) {
        (Cell::Missing, _) => {}
        (Cell::Float(x), _) => out.push_str(&float_repr(*x)),
        (Cell::Int(n), ColumnKind::Float64) => out.push_str(&float_repr(*n as f64)),
        (Cell::Int(n), _) => {
            let _ = write!(out, "{n}");
        }
        (Cell::Bool(b), ColumnKind::Object) => out.push_str(if *b { "True" } else { "False" }),
        (Cell::Bool(b), ColumnKind::Int64) => out.push(if *b { '1' } else { '0' }),
        (Cell::Bool(b), ColumnKind::Float64) => out.push_str(if *b { "1.0" } else { "0.0" }),
        (Cell::Str(s), _) => out.push_str(s),
    }
}

/// Python's `csv` writer with `QUOTE_MINIMAL` and `lineterminator="\n"` (CPython 3.11): a field
/// holding the separator, the quote character or a `\n` is quoted, with quotes doubled.
fn push_field(out: &mut String, field: &str) {
    if field.contains([',', '"', '\n']) {
        out.push('"');
        out.push_str(&field.replace('"', "\"\""));
        out.push('"');
    } else {
        out.push_str(field);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_quoting_and_kinds() {
        let table = SweepTable {
            labels: vec![RowLabel::Position(3), RowLabel::Name("a, \"b\"".into())],
            columns: vec![
                Column {
                    name: "x,y".into(),
                    kind: ColumnKind::Object,
                    cells: vec![Cell::Float(1e-5), Cell::Missing],
                },
                Column {
                    name: "n".into(),
                    kind: ColumnKind::Float64,
                    cells: vec![Cell::Int(12), Cell::Float(0.5)],
                },
                Column {
                    name: "s".into(),
                    kind: ColumnKind::Object,
                    cells: vec![Cell::Str("0042".into()), Cell::Bool(true)],
                },
            ],
        };
        assert_eq!(
            table.to_csv(),
            ",\"x,y\",n,s\n3,1e-05,12.0,0042\n\"a, \"\"b\"\"\",,0.5,True\n"
        );
    }
}
