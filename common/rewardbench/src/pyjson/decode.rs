//! Python's `json.loads`: JSON text to a [`PyValue`].

use super::{PyDict, PyValue};

/// Why a JSON text could not be parsed: the 1-based line and column (in characters) of the
/// problem, as Python's `JSONDecodeError` reports it.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{message}: line {line} column {column}")]
pub struct PyJsonError {
    pub message: String,
    pub line: usize,
    pub column: usize,
}

/// Parses a JSON text as Python's `json.loads` does: `NaN`, `Infinity` and `-Infinity` are
/// accepted; numbers with a fraction or an exponent are floats (correctly rounded), others ints
/// (an int beyond 64 bits is an error here, where Python would keep it); key order is kept, and
/// a repeated key keeps its first position with its last value; control characters inside
/// strings are errors (`strict=True`); a lone surrogate escape is an error (Rust strings cannot
/// hold it).
pub fn loads(text: &str) -> Result<PyValue, PyJsonError> {
    let mut parser = Parser {
        text,
        bytes: text.as_bytes(),
        pos: 0,
    };
    parser.skip_ws();
    let value = parser.value(0)?;
    parser.skip_ws();
    if parser.pos != parser.bytes.len() {
        return Err(parser.error("Extra data"));
    }
    Ok(value)
}

struct Parser<'a> {
    text: &'a str,
    bytes: &'a [u8],
    pos: usize,
}

const MAX_DEPTH: usize = 512;

impl Parser<'_> {
    fn error(&self, message: &str) -> PyJsonError {
        self.error_at(self.pos, message)
    }

    fn error_at(&self, pos: usize, message: &str) -> PyJsonError {
        let before = &self.text[..pos.min(self.text.len())];
        let line = before.matches('\n').count() + 1;
        let column = match before.rfind('\n') {
            Some(i) => before[i + 1..].chars().count() + 1,
            None => before.chars().count() + 1,
        };
        PyJsonError {
            message: message.to_owned(),
            line,
            column,
        }
    }

    fn skip_ws(&mut self) {
        while let Some(b' ' | b'\t' | b'\n' | b'\r') = self.bytes.get(self.pos) {
            self.pos += 1;
        }
    }

    fn eat(&mut self, literal: &str) -> bool {
        if self.text[self.pos..].starts_with(literal) {
            self.pos += literal.len();
            true
        } else {
            false
        }
    }

    fn value(&mut self, depth: usize) -> Result<PyValue, PyJsonError> {
        if depth > MAX_DEPTH {
            return Err(self.error("Too deeply nested"));
        }
        match self.bytes.get(self.pos) {
            Some(b'{') => self.object(depth),
            Some(b'[') => self.array(depth),
            Some(b'"') => Ok(PyValue::Str(self.string()?)),
            Some(b'n') if self.eat("null") => Ok(PyValue::Null),
            Some(b't') if self.eat("true") => Ok(PyValue::Bool(true)),
            Some(b'f') if self.eat("false") => Ok(PyValue::Bool(false)),
            Some(b'N') if self.eat("NaN") => Ok(PyValue::Float(f64::NAN)),
            Some(b'I') if self.eat("Infinity") => Ok(PyValue::Float(f64::INFINITY)),
            Some(b'-') if self.eat("-Infinity") => Ok(PyValue::Float(f64::NEG_INFINITY)),
            Some(b'-' | b'0'..=b'9') => self.number(),
            _ => Err(self.error("Expecting value")),
        }
    }

    fn number(&mut self) -> Result<PyValue, PyJsonError> {
        let start = self.pos;
        let digits = |p: &mut Self| {
            let s = p.pos;
            while let Some(b'0'..=b'9') = p.bytes.get(p.pos) {
                p.pos += 1;
            }
            p.pos - s
        };
        if self.bytes.get(self.pos) == Some(&b'-') {
            self.pos += 1;
        }
        match self.bytes.get(self.pos) {
            Some(b'0') => self.pos += 1,
            Some(b'1'..=b'9') => {
                digits(self);
            }
            _ => return Err(self.error_at(start, "Expecting value")),
        }
        let mut is_float = false;
        // a fraction or exponent only counts when complete, as in Python's NUMBER_RE
        if self.bytes.get(self.pos) == Some(&b'.') {
            let save = self.pos;
            self.pos += 1;
            if digits(self) == 0 {
                self.pos = save;
            } else {
                is_float = true;
            }
        }
        if let Some(b'e' | b'E') = self.bytes.get(self.pos) {
            let save = self.pos;
            self.pos += 1;
            if let Some(b'+' | b'-') = self.bytes.get(self.pos) {
                self.pos += 1;
            }
            if digits(self) == 0 {
                self.pos = save;
            } else {
                is_float = true;
            }
        }
        let literal = &self.text[start..self.pos];
        if is_float {
            literal
                .parse::<f64>()
                .map(PyValue::Float)
                .map_err(|_| self.error_at(start, "Invalid number"))
        } else {
            literal
                .parse::<i64>()
                .map(PyValue::Int)
                .map_err(|_| self.error_at(start, "Integer out of the 64-bit range"))
        }
    }

    fn hex4(&mut self) -> Result<u32, PyJsonError> {
        let start = self.pos;
        let s = self
            .text
            .get(self.pos..self.pos + 4)
            .filter(|s| s.bytes().all(|b| b.is_ascii_hexdigit()))
            .ok_or_else(|| self.error_at(start - 1, "Invalid \\uXXXX escape"))?;
        self.pos += 4;
        Ok(u32::from_str_radix(s, 16).expect("4 hex digits"))
    }

    fn string(&mut self) -> Result<String, PyJsonError> {
        let start = self.pos;
        self.pos += 1; // opening quote
        let mut out = String::new();
        loop {
            let chunk_start = self.pos;
            while let Some(&b) = self.bytes.get(self.pos) {
                if b == b'"' || b == b'\\' || b < 0x20 {
                    break;
                }
                self.pos += 1;
            }
            out.push_str(&self.text[chunk_start..self.pos]);
            match self.bytes.get(self.pos) {
                None => return Err(self.error_at(start, "Unterminated string starting at")),
                Some(b'"') => {
                    self.pos += 1;
                    return Ok(out);
                }
                Some(b'\\') => {
                    self.pos += 1;
                    let esc = *self
                        .bytes
                        .get(self.pos)
                        .ok_or_else(|| self.error_at(start, "Unterminated string starting at"))?;
                    self.pos += 1;
                    match esc {
                        b'"' => out.push('"'),
                        b'\\' => out.push('\\'),
                        b'/' => out.push('/'),
                        b'b' => out.push('\u{8}'),
                        b'f' => out.push('\u{c}'),
                        b'n' => out.push('\n'),
                        b'r' => out.push('\r'),
                        b't' => out.push('\t'),
                        b'u' => {
                            let esc_pos = self.pos - 2;
                            let mut code = self.hex4()?;
                            if (0xd800..0xdc00).contains(&code)
                                && self.text[self.pos..].starts_with("\\u")
                            {
                                let save = self.pos;
                                self.pos += 2;
                                let low = self.hex4()?;
                                if (0xdc00..0xe000).contains(&low) {
                                    code = 0x10000 + ((code - 0xd800) << 10) + (low - 0xdc00);
                                } else {
                                    self.pos = save;
                                }
                            }
                            let c = char::from_u32(code).ok_or_else(|| {
                                self.error_at(esc_pos, "Lone surrogate escape (not representable)")
                            })?;
                            out.push(c);
                        }
                        _ => return Err(self.error_at(self.pos - 2, "Invalid \\escape")),
                    }
                }
                Some(_) => return Err(self.error("Invalid control character at")),
            }
        }
    }

    fn array(&mut self, depth: usize) -> Result<PyValue, PyJsonError> {
        self.pos += 1;
        let mut items = Vec::new();
        self.skip_ws();
        if self.bytes.get(self.pos) == Some(&b']') {
            self.pos += 1;
            return Ok(PyValue::List(items));
        }
        loop {
            self.skip_ws();
            items.push(self.value(depth + 1)?);
            self.skip_ws();
            match self.bytes.get(self.pos) {
                Some(b',') => self.pos += 1,
                Some(b']') => {
                    self.pos += 1;
                    return Ok(PyValue::List(items));
                }
                _ => return Err(self.error("Expecting ',' delimiter")),
            }
        }
    }

    fn object(&mut self, depth: usize) -> Result<PyValue, PyJsonError> {
        self.pos += 1;
        let mut entries: PyDict = Vec::new();
        self.skip_ws();
        if self.bytes.get(self.pos) == Some(&b'}') {
            self.pos += 1;
            return Ok(PyValue::Dict(entries));
        }
        loop {
            self.skip_ws();
            if self.bytes.get(self.pos) != Some(&b'"') {
                return Err(self.error("Expecting property name enclosed in double quotes"));
            }
            let key = self.string()?;
            self.skip_ws();
            if self.bytes.get(self.pos) != Some(&b':') {
                return Err(self.error("Expecting ':' delimiter"));
            }
            self.pos += 1;
            self.skip_ws();
            let value = self.value(depth + 1)?;
            match entries.iter_mut().find(|(k, _)| *k == key) {
                Some(slot) => slot.1 = value,
                None => entries.push((key, value)),
            }
            self.skip_ws();
            match self.bytes.get(self.pos) {
                Some(b',') => self.pos += 1,
                Some(b'}') => {
                    self.pos += 1;
                    return Ok(PyValue::Dict(entries));
                }
                _ => return Err(self.error("Expecting ',' delimiter")),
            }
        }
    }
}
