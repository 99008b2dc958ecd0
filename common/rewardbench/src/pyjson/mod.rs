//! Python's `json` module and `repr(float)`, byte for byte: what RewardBench's scripts write
//! is reproduced exactly, and a chat template's `tojson` renders what transformers renders.
//!
//! - [`PyValue`]: a JSON value as Python sees it (ints apart from floats, NaN allowed, dicts in
//!   insertion order).
//! - [`dumps`] / [`Encoder`]: the one encoder, a transcription of CPython's `json` encoder;
//!   [`loads`]: the parser, with `json.loads`' acceptance and error positions.
//! - [`float_repr`]: `repr(float)` (shortest round-trip digits, ties to even, as CPython).

mod decode;
mod encode;
mod float;

use std::fmt;

pub use decode::{loads, PyJsonError};
pub use encode::{dumps, DumpOptions, Encoder};
pub use float::{float_repr, json_float};

/// A JSON value as Python's `json` module sees it: integers apart from floats, floats possibly
/// NaN or infinite, objects in insertion order.
#[derive(Clone, Debug, PartialEq)]
pub enum PyValue {
    Null,
    Bool(bool),
    Int(i64),
    Float(f64),
    Str(String),
    List(Vec<PyValue>),
    Dict(PyDict),
}

/// A Python dict as the assignments that build it, in order: a key given twice keeps its first
/// position and its last value (as [`dict_get`] and [`dumps`] read it).
pub type PyDict = Vec<(String, PyValue)>;

impl PyValue {
    pub fn as_str(&self) -> Option<&str> {
        match self {
            PyValue::Str(s) => Some(s),
            _ => None,
        }
    }

    /// The value as a float, for an int or a float (a bool is not a number here).
    pub fn as_f64(&self) -> Option<f64> {
        match self {
            PyValue::Int(n) => Some(*n as f64),
            PyValue::Float(x) => Some(*x),
            _ => None,
        }
    }

    pub fn as_dict(&self) -> Option<&PyDict> {
        match self {
            PyValue::Dict(d) => Some(d),
            _ => None,
        }
    }

    /// The Python type name, for error messages (`str`, `float`, `NoneType`, ...).
    pub fn type_name(&self) -> &'static str {
        match self {
            PyValue::Null => "null",
            PyValue::Bool(_) => "bool",
            PyValue::Int(_) => "int",
            PyValue::Float(_) => "float",
            PyValue::Str(_) => "str",
            PyValue::List(_) => "list",
            PyValue::Dict(_) => "dict",
        }
    }
}

impl From<f64> for PyValue {
    fn from(x: f64) -> Self {
        PyValue::Float(x)
    }
}

impl From<i64> for PyValue {
    fn from(n: i64) -> Self {
        PyValue::Int(n)
    }
}

impl From<bool> for PyValue {
    fn from(b: bool) -> Self {
        PyValue::Bool(b)
    }
}

impl From<&str> for PyValue {
    fn from(s: &str) -> Self {
        PyValue::Str(s.to_owned())
    }
}

impl From<String> for PyValue {
    fn from(s: String) -> Self {
        PyValue::Str(s)
    }
}

impl<T: Into<PyValue>> From<Option<T>> for PyValue {
    fn from(v: Option<T>) -> Self {
        v.map_or(PyValue::Null, Into::into)
    }
}

/// Looks a key up in a dict (the last entry wins, as it would have in the Python dict).
pub fn dict_get<'a>(dict: &'a PyDict, key: &str) -> Option<&'a PyValue> {
    dict.iter().rev().find(|(k, _)| k == key).map(|(_, v)| v)
}

impl fmt::Display for PyValue {
    /// The value as `json.dumps` writes it (compact separators, insertion order).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&dumps(self, None, false))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn float_repr_layouts() {
        for (x, s) in [
            (0.1, "0.1"),
            (1e-5, "1e-05"),
            (0.0001, "0.0001"),
            (2.5e20, "2.5e+20"),
            (1e16, "1e+16"),
            (1e15, "1000000000000000.0"),
            (123.456, "123.456"),
            (-0.0, "-0.0"),
            (1.0, "1.0"),
            (5e-324, "5e-324"),
            (1.7976931348623157e308, "1.7976931348623157e+308"),
            (1.5, "1.5"),
            (100.0, "100.0"),
            (1e20, "1e+20"),
            (-2.5e-7, "-2.5e-07"),
            (0.0, "0.0"),
            (123456789.125, "123456789.125"),
            (f64::NAN, "nan"),
            (f64::NEG_INFINITY, "-inf"),
        ] {
            assert_eq!(float_repr(x), s);
        }
    }

    #[test]
    fn dumps_layouts() {
        let v = PyValue::Dict(vec![
            (
                "b".into(),
                PyValue::List(vec![PyValue::Int(1), PyValue::List(vec![])]),
            ),
            ("a".into(), PyValue::Float(f64::NAN)),
            ("c".into(), PyValue::Dict(vec![])),
        ]);
        assert_eq!(
            dumps(&v, None, false),
            r#"{"b": [1, []], "a": NaN, "c": {}}"#
        );
        assert_eq!(
            dumps(&v, Some(4), true),
            "{\n    \"a\": NaN,\n    \"b\": [\n        1,\n        []\n    ],\n    \"c\": {}\n}"
        );
        assert_eq!(
            dumps(&PyValue::Str("é😀\u{7f}\u{1}\"".into()), None, false),
            r#""\u00e9\ud83d\ude00\u007f\u0001\"""#
        );
    }

    #[test]
    fn loads_like_python() {
        let v =
            loads(r#" {"a": 1, "b": 1.0, "a": [NaN, -Infinity, 1e5, "\ud83d\ude00\/"]} "#).unwrap();
        let PyValue::Dict(d) = v else { panic!() };
        assert_eq!(d.len(), 2);
        assert_eq!(d[0].0, "a");
        assert_eq!(d[1].1, PyValue::Float(1.0));
        let PyValue::List(items) = &d[0].1 else {
            panic!()
        };
        assert!(matches!(items[0], PyValue::Float(x) if x.is_nan()));
        assert_eq!(items[1], PyValue::Float(f64::NEG_INFINITY));
        assert_eq!(items[2], PyValue::Float(1e5));
        assert_eq!(items[3], PyValue::Str("😀/".into()));
        let err = loads("{\"a\": 1,\n  \"b\" 2}").unwrap_err();
        assert_eq!((err.line, err.column), (2, 7));
        assert!(loads("[1] x").is_err());
        assert!(loads("\"a\nb\"").is_err());
        assert!(loads("01").is_err());
        assert!(loads("1.").is_err());
        assert_eq!(loads("-0").unwrap(), PyValue::Int(0));
    }
}
