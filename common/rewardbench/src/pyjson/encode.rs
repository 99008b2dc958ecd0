//! Python's `json.dumps`: one encoder for every value type that is written as JSON. The result
//! files walk a [`PyValue`] through it ([`dumps`]); the chat templates' `tojson` walks a minijinja
//! value through the same [`Encoder`], so both get the same escaping, separators, indentation
//! and float repr.

use std::convert::Infallible;
use std::fmt::Write as _;

use super::float::write_json_float;
use super::PyValue;

/// The arguments of `json.dumps` that shape its text (`allow_nan=True` always: NaN and the
/// infinities are written as `NaN`, `Infinity`, `-Infinity`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DumpOptions {
    /// Every character outside printable ASCII as `\uXXXX`.
    pub ensure_ascii: bool,
    /// `None`: one line. `Some(unit)`: a newline before every item and before the closing
    /// bracket, then `unit` once per nesting level (Python's `indent=4` is four spaces).
    pub indent: Option<String>,
    pub item_separator: String,
    pub key_separator: String,
    /// Dict keys in code-point order instead of insertion order.
    pub sort_keys: bool,
}

impl DumpOptions {
    /// `json.dumps(ensure_ascii=.., indent=.., separators=.., sort_keys=..)`. Without
    /// `separators`, Python's defaults: `(", ", ": ")`, or `(",", ": ")` with an indent.
    pub fn new(
        ensure_ascii: bool,
        indent: Option<String>,
        separators: Option<(String, String)>,
        sort_keys: bool,
    ) -> Self {
        let (item_separator, key_separator) = separators.unwrap_or_else(|| {
            let item = if indent.is_some() { "," } else { ", " };
            (item.to_owned(), ": ".to_owned())
        });
        DumpOptions {
            ensure_ascii,
            indent,
            item_separator,
            key_separator,
            sort_keys,
        }
    }
}

/// Writes one JSON text as `json.dumps` lays it out; the caller walks its value and calls one
/// method per node. Lists and dicts take their items and a closure that writes one item's value
/// (and can fail with the walker's own error type).
pub struct Encoder<'a> {
    out: String,
    options: &'a DumpOptions,
    /// How many lists and dicts enclose the next item.
    level: usize,
}

impl<'a> Encoder<'a> {
    pub fn new(options: &'a DumpOptions) -> Self {
        Encoder {
            out: String::new(),
            options,
            level: 0,
        }
    }

    /// The text written so far.
    pub fn finish(self) -> String {
        self.out
    }

    pub fn null(&mut self) {
        self.out.push_str("null");
    }

    pub fn bool(&mut self, b: bool) {
        self.out.push_str(if b { "true" } else { "false" });
    }

    /// An integer in decimal (any integer type: Python's ints have no bound).
    pub fn int(&mut self, n: impl std::fmt::Display) {
        let _ = write!(self.out, "{n}");
    }

    /// A float: Python's `repr`, or `NaN`, `Infinity`, `-Infinity`.
    pub fn float(&mut self, x: f64) {
        write_json_float(&mut self.out, x);
    }

    pub fn str(&mut self, s: &str) {
        write_str(&mut self.out, s, self.options.ensure_ascii);
    }

    /// A list of `items`, each written by `item`.
    pub fn list<T, E>(
        &mut self,
        items: &[T],
        mut item: impl FnMut(&mut Self, &T) -> Result<(), E>,
    ) -> Result<(), E> {
        self.container(['[', ']'], items.len(), |encoder, i| {
            item(encoder, &items[i])
        })
    }

    /// A dict of `entries` in the given order (sorted by key with `sort_keys`), each key written
    /// as given (a dict that repeats a key writes it twice) and each value by `value`.
    pub fn dict<K: AsRef<str>, V, E>(
        &mut self,
        mut entries: Vec<(K, V)>,
        mut value: impl FnMut(&mut Self, &V) -> Result<(), E>,
    ) -> Result<(), E> {
        if self.options.sort_keys {
            // Python sorts str keys by code point; UTF-8 byte order is the same order
            entries.sort_by(|a, b| a.0.as_ref().cmp(b.0.as_ref()));
        }
        let options = self.options;
        self.container(['{', '}'], entries.len(), |encoder, i| {
            let (key, v) = &entries[i];
            encoder.str(key.as_ref());
            encoder.out.push_str(&options.key_separator);
            value(encoder, v)
        })
    }

    /// `open`, the `len` items written by `item` with their separators and indentation, `close`;
    /// an empty container is `[]` / `{}` with no newline even when indenting.
    fn container<E>(
        &mut self,
        [open, close]: [char; 2],
        len: usize,
        mut item: impl FnMut(&mut Self, usize) -> Result<(), E>,
    ) -> Result<(), E> {
        self.out.push(open);
        if len == 0 {
            self.out.push(close);
            return Ok(());
        }
        let options = self.options;
        self.level += 1;
        for i in 0..len {
            if i > 0 {
                self.out.push_str(&options.item_separator);
            }
            self.newline();
            item(self, i)?;
        }
        self.level -= 1;
        self.newline();
        self.out.push(close);
        Ok(())
    }

    fn newline(&mut self) {
        if let Some(unit) = &self.options.indent {
            self.out.push('\n');
            for _ in 0..self.level {
                self.out.push_str(unit);
            }
        }
    }
}

/// `json.dumps(value, indent=indent, sort_keys=sort_keys)` with the defaults otherwise
/// (`ensure_ascii=True`, `allow_nan=True`; separators `", "`/`": "` without indent and
/// `","`/`": "` with it). `json.dump(value, f)` writes the same text as `indent=None`.
pub fn dumps(value: &PyValue, indent: Option<usize>, sort_keys: bool) -> String {
    let options = DumpOptions::new(true, indent.map(|n| " ".repeat(n)), None, sort_keys);
    let mut encoder = Encoder::new(&options);
    let Ok(()) = write_value(&mut encoder, value);
    encoder.finish()
}

fn write_value(encoder: &mut Encoder<'_>, value: &PyValue) -> Result<(), Infallible> {
    match value {
        PyValue::Null => encoder.null(),
        PyValue::Bool(b) => encoder.bool(*b),
        PyValue::Int(n) => encoder.int(n),
        PyValue::Float(x) => encoder.float(*x),
        PyValue::Str(s) => encoder.str(s),
        PyValue::List(items) => return encoder.list(items, write_value),
        PyValue::Dict(entries) => {
            // a PyDict lists assignments; the Python dict holds each key once, at its first
            // position with its last value
            let mut unique: Vec<(&str, &PyValue)> = Vec::with_capacity(entries.len());
            for (k, v) in entries {
                match unique.iter_mut().find(|(uk, _)| *uk == k.as_str()) {
                    Some(slot) => slot.1 = v,
                    None => unique.push((k.as_str(), v)),
                }
            }
            return encoder.dict(unique, |encoder, v| write_value(encoder, v));
        }
    }
    Ok(())
}

/// Writes `s` as a JSON string the way `json.dumps` does: `\"`, `\\`, `\b \f \n \r \t` by
/// name, other control characters as `\u00XX`; with `ensure_ascii` (Python's default) every
/// character outside printable ASCII as `\uXXXX` (lowercase hex, astral characters as a
/// surrogate pair).
fn write_str(out: &mut String, s: &str, ensure_ascii: bool) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            c if (c as u32) < 0x20 || (ensure_ascii && !(' '..='~').contains(&c)) => {
                let mut units = [0u16; 2];
                for unit in c.encode_utf16(&mut units) {
                    let _ = write!(out, "\\u{unit:04x}");
                }
            }
            c => out.push(c),
        }
    }
    out.push('"');
}
