//! msgpack primitives over any byte source, hand-decoded: the EasyLM format uses a handful of
//! msgpack types (arrays, maps, strings, binaries, unsigned ints, bools, exts), and decoding them
//! here keeps the reader streaming (a tensor's bytes are never buffered by a msgpack library),
//! lets every error name the byte offset where the input went wrong, and needs no dependency.
//!
//! Every length read from the input is checked against what can still be in the file before
//! anything is allocated, so corrupt input ends in an error, never in a panic or a huge allocation.

use std::fs::File;
use std::io::{self, BufReader, Read};
use std::path::Path;

use super::EasyLmError;

/// A byte source for the streaming reader: any `Read` works (wrap it in [`Sequential`]); sources
/// that can seek skip unwanted payloads (optimizer state) without reading them.
pub trait Source: Read {
    /// Skips `n` bytes; returns how many were skipped (fewer only at end of input).
    fn skip(&mut self, n: u64) -> io::Result<u64>;
    /// Bytes left to read, when known, so impossible lengths are refused before allocating.
    fn remaining(&self) -> Option<u64> {
        None
    }
}

/// A local file, buffered; skips by seeking.
pub struct FileSource {
    inner: BufReader<File>,
    len: u64,
    pos: u64,
}

impl FileSource {
    pub fn open(path: &Path) -> Result<Self, EasyLmError> {
        let file = File::open(path).map_err(|e| EasyLmError::io(path, e))?;
        let len = file.metadata().map_err(|e| EasyLmError::io(path, e))?.len();
        Ok(Self {
            inner: BufReader::with_capacity(1 << 20, file),
            len,
            pos: 0,
        })
    }
}

impl Read for FileSource {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.pos += n as u64;
        Ok(n)
    }
}

impl Source for FileSource {
    fn skip(&mut self, n: u64) -> io::Result<u64> {
        let n = n.min(self.len.saturating_sub(self.pos));
        let step = i64::try_from(n).map_err(|_| io::Error::other("skip too large"))?;
        self.inner.seek_relative(step)?;
        self.pos += n;
        Ok(n)
    }

    fn remaining(&self) -> Option<u64> {
        Some(self.len.saturating_sub(self.pos))
    }
}

/// Bytes in memory (tests, small inputs).
impl Source for &[u8] {
    fn skip(&mut self, n: u64) -> io::Result<u64> {
        let n = usize::try_from(n).unwrap_or(usize::MAX).min(self.len());
        *self = &self[n..];
        Ok(n as u64)
    }

    fn remaining(&self) -> Option<u64> {
        Some(self.len() as u64)
    }
}

/// Any `Read` (a network stream, a pipe): skips by reading and discarding.
pub struct Sequential<R>(pub R);

impl<R: Read> Read for Sequential<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.0.read(buf)
    }
}

impl<R: Read> Source for Sequential<R> {
    fn skip(&mut self, n: u64) -> io::Result<u64> {
        io::copy(&mut (&mut self.0).take(n), &mut io::sink())
    }
}

/// Longest string accepted for a key component or a dtype name.
pub const MAX_STR: u64 = 4096;

/// A msgpack reader that knows its absolute byte offset and the record it is in.
pub struct MsgReader<S> {
    src: S,
    pos: u64,
    /// the key of the record being read, for error messages
    pub(crate) key: Option<String>,
}

/// What a msgpack marker byte starts, for error messages.
pub fn describe(marker: u8) -> &'static str {
    match marker {
        0x00..=0x7f | 0xcc..=0xcf => "an unsigned integer",
        0xe0..=0xff | 0xd0..=0xd3 => "an integer",
        0x80..=0x8f | 0xde | 0xdf => "a map",
        0x90..=0x9f | 0xdc | 0xdd => "an array",
        0xa0..=0xbf | 0xd9..=0xdb => "a string",
        0xc0 => "nil",
        0xc1 => "the reserved byte 0xc1",
        0xc2 | 0xc3 => "a boolean",
        0xc4..=0xc6 => "a binary",
        0xc7..=0xc9 | 0xd4..=0xd8 => "an extension",
        0xca | 0xcb => "a float",
    }
}

impl<S: Source> MsgReader<S> {
    pub fn new(src: S) -> Self {
        Self {
            src,
            pos: 0,
            key: None,
        }
    }

    /// Absolute offset of the next byte.
    pub fn position(&self) -> u64 {
        self.pos
    }

    pub fn error(&self, offset: u64, reason: impl Into<String>) -> EasyLmError {
        EasyLmError::Format {
            offset,
            key: self.key.clone(),
            reason: reason.into(),
        }
    }

    fn io_error(&self, e: io::Error) -> EasyLmError {
        self.error(self.pos, format!("read failed: {e}"))
    }

    /// Reads up to `buf.len()` bytes; 0 only at end of input.
    pub fn read_some(&mut self, buf: &mut [u8]) -> Result<usize, EasyLmError> {
        loop {
            match self.src.read(buf) {
                Ok(n) => {
                    self.pos += n as u64;
                    return Ok(n);
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(self.io_error(e)),
            }
        }
    }

    /// Fills `buf` or fails naming `what` and where the input ended.
    pub fn fill(&mut self, buf: &mut [u8], what: &str) -> Result<(), EasyLmError> {
        let start = self.pos;
        let mut done = 0;
        while done < buf.len() {
            let n = self.read_some(&mut buf[done..])?;
            if n == 0 {
                return Err(self.error(
                    self.pos,
                    format!(
                        "truncated: the input ends inside {what} ({} of {} bytes from byte {start})",
                        done,
                        buf.len()
                    ),
                ));
            }
            done += n;
        }
        Ok(())
    }

    /// The next byte, or `None` at a clean end of input.
    pub fn next_byte(&mut self) -> Result<Option<u8>, EasyLmError> {
        let mut byte = [0u8; 1];
        match self.read_some(&mut byte)? {
            0 => Ok(None),
            _ => Ok(Some(byte[0])),
        }
    }

    pub fn byte(&mut self, what: &str) -> Result<u8, EasyLmError> {
        let mut byte = [0u8; 1];
        self.fill(&mut byte, what)?;
        Ok(byte[0])
    }

    fn be(&mut self, width: usize, what: &str) -> Result<u64, EasyLmError> {
        let mut bytes = [0u8; 8];
        self.fill(&mut bytes[8 - width..], what)?;
        Ok(u64::from_be_bytes(bytes))
    }

    /// Skips `n` bytes that must all be present.
    pub fn skip(&mut self, n: u64, what: &str) -> Result<(), EasyLmError> {
        let start = self.pos;
        let skipped = self.src.skip(n).map_err(|e| self.io_error(e))?;
        self.pos += skipped;
        if skipped < n {
            return Err(self.error(
                self.pos,
                format!(
                    "truncated: the input ends inside {what} ({skipped} of {n} bytes from byte {start})"
                ),
            ));
        }
        Ok(())
    }

    /// Bytes that can still follow the current position, when the source knows its length.
    pub fn remaining_hint(&self) -> Option<u64> {
        self.src.remaining()
    }

    /// Refuses a length that cannot fit in what is left of the input.
    pub fn check_available(&self, n: u64, what: &str) -> Result<(), EasyLmError> {
        if let Some(left) = self.remaining_hint() {
            if n > left {
                return Err(self.error(
                    self.pos,
                    format!(
                        "truncated or corrupt: {what} needs {n} bytes but the input ends after {left} more"
                    ),
                ));
            }
        }
        Ok(())
    }

    /// Length of an array whose marker was already read.
    pub fn array_len(&mut self, marker: u8, what: &str, at: u64) -> Result<u64, EasyLmError> {
        match marker {
            0x90..=0x9f => Ok(u64::from(marker & 0x0f)),
            0xdc => self.be(2, what),
            0xdd => self.be(4, what),
            other => Err(self.error(
                at,
                format!(
                    "expected {what} (a msgpack array), found {} (byte 0x{other:02x})",
                    describe(other)
                ),
            )),
        }
    }

    /// Length of a map whose marker was already read; `None` if the marker is not a map.
    pub fn map_len(&mut self, marker: u8, what: &str) -> Result<Option<u64>, EasyLmError> {
        match marker {
            0x80..=0x8f => Ok(Some(u64::from(marker & 0x0f))),
            0xde => self.be(2, what).map(Some),
            0xdf => self.be(4, what).map(Some),
            _ => Ok(None),
        }
    }

    /// Length of a byte string: msgpack bin, or str as packers before msgpack 1.0 wrote bytes.
    pub fn bytes_len(&mut self, marker: u8, what: &str) -> Result<Option<u64>, EasyLmError> {
        match marker {
            0xa0..=0xbf => Ok(Some(u64::from(marker & 0x1f))),
            0xc4 | 0xd9 => self.be(1, what).map(Some),
            0xc5 | 0xda => self.be(2, what).map(Some),
            0xc6 | 0xdb => self.be(4, what).map(Some),
            _ => Ok(None),
        }
    }

    /// An unsigned integer whose marker was already read (non-negative signed ints accepted).
    pub fn uint(&mut self, marker: u8, what: &str, at: u64) -> Result<u64, EasyLmError> {
        let value = match marker {
            0x00..=0x7f => return Ok(u64::from(marker)),
            0xcc => return self.be(1, what),
            0xcd => return self.be(2, what),
            0xce => return self.be(4, what),
            0xcf => return self.be(8, what),
            0xd0 => i64::from(self.be(1, what)? as u8 as i8),
            0xd1 => i64::from(self.be(2, what)? as u16 as i16),
            0xd2 => i64::from(self.be(4, what)? as u32 as i32),
            0xd3 => self.be(8, what)? as i64,
            0xe0..=0xff => i64::from(marker as i8),
            other => {
                return Err(self.error(
                    at,
                    format!(
                        "expected {what} (an integer), found {} (byte 0x{other:02x})",
                        describe(other)
                    ),
                ))
            }
        };
        u64::try_from(value).map_err(|_| self.error(at, format!("{what} is negative ({value})")))
    }

    /// A UTF-8 string (str, or bin as raw packers wrote it) of at most `max` bytes.
    pub fn string(&mut self, what: &str, max: u64) -> Result<String, EasyLmError> {
        let at = self.pos;
        let marker = self.byte(what)?;
        self.string_after(marker, what, max, at)
    }

    pub fn string_after(
        &mut self,
        marker: u8,
        what: &str,
        max: u64,
        at: u64,
    ) -> Result<String, EasyLmError> {
        let len = self.bytes_len(marker, what)?.ok_or_else(|| {
            self.error(
                at,
                format!(
                    "expected {what} (a string), found {} (byte 0x{marker:02x})",
                    describe(marker)
                ),
            )
        })?;
        if len > max {
            return Err(self.error(
                at,
                format!("{what} is {len} bytes long; at most {max} expected (corrupt input?)"),
            ));
        }
        self.check_available(len, what)?;
        let mut bytes = vec![0u8; len as usize];
        self.fill(&mut bytes, what)?;
        String::from_utf8(bytes).map_err(|_| self.error(at, format!("{what} is not UTF-8")))
    }

    /// The header of an ext: (type code, data length). `None` if the marker is not an ext.
    pub fn ext_header(&mut self, marker: u8, what: &str) -> Result<Option<(i8, u64)>, EasyLmError> {
        let len = match marker {
            0xd4 => 1,
            0xd5 => 2,
            0xd6 => 4,
            0xd7 => 8,
            0xd8 => 16,
            0xc7 => self.be(1, what)?,
            0xc8 => self.be(2, what)?,
            0xc9 => self.be(4, what)?,
            _ => return Ok(None),
        };
        let code = self.byte(what)? as i8;
        Ok(Some((code, len)))
    }

    pub fn boolean(&mut self, what: &str) -> Result<bool, EasyLmError> {
        let at = self.pos;
        match self.byte(what)? {
            0xc2 => Ok(false),
            0xc3 => Ok(true),
            other => Err(self.error(
                at,
                format!(
                    "expected {what} (a boolean), found {} (byte 0x{other:02x})",
                    describe(other)
                ),
            )),
        }
    }
}
