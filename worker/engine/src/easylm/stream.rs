//! The records of an EasyLM streaming checkpoint and the flax arrays inside them.
//!
//! ```text
//! record  := [key: array of str, payload: bin (or legacy str)]        one per tensor, back to back
//! payload := ext(1 | 3, [shape: array of uint, dtype: str, buffer: bin])   flax ndarray, any ext framing
//!          | {"__msgpack_chunked_array__": true, "shape": {"0": d0, ..}, "chunks": {"0": ext, ..}}
//!          | anything else (a train state's `step` int): reported as `Value::Other`, skipped
//! ```
//!
//! [`RecordStream::next_record`] reads a record's key and the array header (shape, dtype) and
//! stops in front of the element bytes; the caller then streams them with
//! [`RecordStream::read_data`] (chunked arrays read as one contiguous buffer) or lets the next
//! `next_record` skip them. Nothing but the caller's buffers holds tensor data.

use super::reader::{describe, MsgReader, Source, MAX_STR};
use super::EasyLmError;

/// Float element types of LLaMA parameters.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum FloatDtype {
    BF16,
    F16,
    F32,
}

impl FloatDtype {
    pub fn size(self) -> usize {
        match self {
            Self::BF16 | Self::F16 => 2,
            Self::F32 => 4,
        }
    }

    /// The numpy `dtype.name` flax writes.
    pub fn numpy_name(self) -> &'static str {
        match self {
            Self::BF16 => "bfloat16",
            Self::F16 => "float16",
            Self::F32 => "float32",
        }
    }

    /// The safetensors dtype string.
    pub fn safetensors_name(self) -> &'static str {
        match self {
            Self::BF16 => "BF16",
            Self::F16 => "F16",
            Self::F32 => "F32",
        }
    }

    pub fn kind(self) -> tch::Kind {
        match self {
            Self::BF16 => tch::Kind::BFloat16,
            Self::F16 => tch::Kind::Half,
            Self::F32 => tch::Kind::Float,
        }
    }
}

/// An array's dtype as named in the file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Dtype {
    Float(FloatDtype),
    /// Any other numpy name; `itemsize` when herd knows it (to check the buffer length).
    Other {
        name: String,
        itemsize: Option<u64>,
    },
}

impl Dtype {
    pub fn from_name(name: &str) -> Self {
        let float = match name {
            "bfloat16" => Some(FloatDtype::BF16),
            "float16" => Some(FloatDtype::F16),
            "float32" => Some(FloatDtype::F32),
            _ => None,
        };
        if let Some(float) = float {
            return Self::Float(float);
        }
        let itemsize = match name {
            "bool" | "int8" | "uint8" => Some(1),
            "int16" | "uint16" => Some(2),
            "int32" | "uint32" => Some(4),
            "float64" | "int64" | "uint64" | "complex64" => Some(8),
            "complex128" => Some(16),
            _ => None,
        };
        Self::Other {
            name: name.to_string(),
            itemsize,
        }
    }

    pub fn itemsize(&self) -> Option<u64> {
        match self {
            Self::Float(f) => Some(f.size() as u64),
            Self::Other { itemsize, .. } => *itemsize,
        }
    }

    pub fn name(&self) -> &str {
        match self {
            Self::Float(f) => f.numpy_name(),
            Self::Other { name, .. } => name,
        }
    }
}

/// Shape and dtype of the array in a record; its bytes follow.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TensorHeader {
    pub shape: Vec<u64>,
    pub dtype: Dtype,
    /// stored in flax's chunked-array form
    pub chunked: bool,
    /// element bytes that follow (product of the shape times the item size)
    pub data_len: u64,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Value {
    Tensor(TensorHeader),
    /// A piece of a tensor split over several records (`<key>/chunk_N`) as written by the unmerged
    /// `large_msgpack` branch of hamishivi/EasyLM; not decoded.
    SplitPiece(u64),
    /// Not an array (e.g. the `step` int of a train state); its payload is skipped.
    Other(String),
}

#[derive(Clone, Debug)]
pub struct Record {
    pub key: Vec<String>,
    /// the key joined with '.', as EasyLM's converter flattens it
    pub name: String,
    /// byte offset of the record's first byte
    pub offset: u64,
    pub value: Value,
}

/// Most components in a key path and most dimensions in a shape.
const MAX_KEY_PARTS: u64 = 64;
const MAX_DIMS: u64 = 32;
const MAX_CHUNKED_FIELDS: u64 = 16;

struct DataState {
    payload_end: u64,
    dtype: Dtype,
    /// element bytes not yet handed out
    total_left: u64,
    /// bytes left in the buffer being read
    in_buffer: u64,
    /// chunked arrays: chunks still to come, index of the next one, and map fields after "chunks"
    chunks_left: u64,
    next_chunk: u64,
    trailing_fields: u64,
    saw_marker: bool,
}

enum State {
    /// between records
    Idle,
    /// inside a record's payload that will only be skipped
    Payload { end: u64 },
    /// in front of (or inside) a tensor's element bytes
    Data(DataState),
}

pub struct RecordStream<S> {
    r: MsgReader<S>,
    state: State,
}

fn product(shape: &[u64]) -> Option<u64> {
    shape.iter().try_fold(1u64, |acc, &d| acc.checked_mul(d))
}

/// `chunk_<digits>`: a trailing key component of the `large_msgpack` split format.
fn split_piece(last: &str) -> Option<u64> {
    let digits = last.strip_prefix("chunk_")?;
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

impl<S: Source> RecordStream<S> {
    pub fn new(src: S) -> Self {
        Self {
            r: MsgReader::new(src),
            state: State::Idle,
        }
    }

    /// Byte offset of the next byte to be read.
    pub fn position(&self) -> u64 {
        self.r.position()
    }

    fn err(&self, offset: u64, reason: impl Into<String>) -> EasyLmError {
        self.r.error(offset, reason)
    }

    /// The next record's key and array header, or `None` at the end of the file. Unread element
    /// bytes of the previous record are skipped.
    pub fn next_record(&mut self) -> Result<Option<Record>, EasyLmError> {
        self.skip_rest()?;
        self.r.key = None;
        let offset = self.r.position();
        let Some(marker) = self.r.next_byte()? else {
            return Ok(None);
        };
        let len = match marker {
            0x92 => 2,
            0xdc | 0xdd => self.r.array_len(marker, "a record", offset)?,
            other => {
                return Err(self.err(
                    offset,
                    format!(
                        "expected the start of a record (a msgpack array [key, value], byte 0x92), \
                         found {} (byte 0x{other:02x}); not an EasyLM streaming checkpoint, or corrupt",
                        describe(other)
                    ),
                ))
            }
        };
        if len != 2 {
            return Err(self.err(
                offset,
                format!("a record is an array of 2 ([key, value]), found {len} elements"),
            ));
        }
        let key = self.read_key()?;
        let name = key.join(".");
        self.r.key = Some(name.clone());

        let payload_at = self.r.position();
        let marker = self.r.byte("the record's value")?;
        let payload_len = self
            .r
            .bytes_len(marker, "the record's value")?
            .ok_or_else(|| {
                self.err(
                    payload_at,
                    format!(
                        "expected the record's value to be bytes (flax to_bytes output), found {} (byte 0x{marker:02x})",
                        describe(marker)
                    ),
                )
            })?;
        self.r.check_available(payload_len, "the record's value")?;
        let payload_end = self.r.position() + payload_len;

        if let Some(piece) = key.last().and_then(|last| split_piece(last)) {
            self.state = State::Payload { end: payload_end };
            return Ok(Some(Record {
                key,
                name,
                offset,
                value: Value::SplitPiece(piece),
            }));
        }
        let value = self.read_payload_header(payload_end)?;
        Ok(Some(Record {
            key,
            name,
            offset,
            value,
        }))
    }

    fn read_key(&mut self) -> Result<Vec<String>, EasyLmError> {
        let at = self.r.position();
        let marker = self.r.byte("the record's key")?;
        let parts = self.r.array_len(marker, "the record's key path", at)?;
        if parts == 0 || parts > MAX_KEY_PARTS {
            return Err(self.err(
                at,
                format!("a key path has 1..={MAX_KEY_PARTS} components, found {parts}"),
            ));
        }
        let mut key = Vec::with_capacity(parts as usize);
        for _ in 0..parts {
            let at = self.r.position();
            let marker = self.r.byte("a key component")?;
            let part = match marker {
                0x00..=0x7f | 0xcc..=0xd3 | 0xe0..=0xff => {
                    self.r.uint(marker, "a key component", at)?.to_string()
                }
                _ => self
                    .r
                    .string_after(marker, "a key component", MAX_STR, at)?,
            };
            key.push(part);
        }
        Ok(key)
    }

    fn read_payload_header(&mut self, payload_end: u64) -> Result<Value, EasyLmError> {
        if payload_end == self.r.position() {
            self.state = State::Idle;
            return Ok(Value::Other("empty bytes".to_string()));
        }
        let at = self.r.position();
        let marker = self.r.byte("the flax payload")?;
        if let Some((code, len)) = self.r.ext_header(marker, "an ndarray extension header")? {
            let ext_end = self.r.position() + len;
            if ext_end != payload_end {
                return Err(self.err(
                    at,
                    format!(
                        "the extension holds {len} bytes but the record's value has {} bytes for it",
                        payload_end.saturating_sub(self.r.position())
                    ),
                ));
            }
            if code != 1 && code != 3 {
                self.state = State::Payload { end: payload_end };
                return Ok(Value::Other(format!(
                    "msgpack extension type {code} (flax: 1 = ndarray, 2 = complex, 3 = numpy scalar)"
                )));
            }
            let (shape, dtype, buffer_len) = self.ndarray_header(ext_end)?;
            self.state = State::Data(DataState {
                payload_end,
                dtype: dtype.clone(),
                total_left: buffer_len,
                in_buffer: buffer_len,
                chunks_left: 0,
                next_chunk: 0,
                trailing_fields: 0,
                saw_marker: true,
            });
            return Ok(Value::Tensor(TensorHeader {
                shape,
                dtype,
                chunked: false,
                data_len: buffer_len,
            }));
        }
        if let Some(fields) = self.r.map_len(marker, "a chunked-array map")? {
            return self.chunked_header(fields, payload_end, at);
        }
        self.state = State::Payload { end: payload_end };
        Ok(Value::Other(describe(marker).to_string()))
    }

    /// `[shape, dtype name, buffer]` inside an ndarray ext ending at `ext_end`; returns the buffer
    /// length, with the reader in front of the buffer.
    fn ndarray_header(&mut self, ext_end: u64) -> Result<(Vec<u64>, Dtype, u64), EasyLmError> {
        let at = self.r.position();
        let marker = self.r.byte("an ndarray header")?;
        let n = self.r.array_len(marker, "an ndarray header", at)?;
        if n != 3 {
            return Err(self.err(
                at,
                format!("an ndarray is [shape, dtype, buffer]; found an array of {n}"),
            ));
        }
        let shape_at = self.r.position();
        let marker = self.r.byte("an ndarray shape")?;
        let dims = self.r.array_len(marker, "an ndarray shape", shape_at)?;
        if dims > MAX_DIMS {
            return Err(self.err(shape_at, format!("a shape with {dims} dimensions")));
        }
        let mut shape = Vec::with_capacity(dims as usize);
        for _ in 0..dims {
            let at = self.r.position();
            let marker = self.r.byte("a dimension")?;
            shape.push(self.r.uint(marker, "a dimension", at)?);
        }
        let dtype_at = self.r.position();
        let dtype = Dtype::from_name(&self.r.string("the dtype name", 64)?);
        let buffer_at = self.r.position();
        let marker = self.r.byte("the array buffer")?;
        let len = self
            .r
            .bytes_len(marker, "the array buffer")?
            .ok_or_else(|| {
                self.err(
                    buffer_at,
                    format!(
                        "expected the array buffer (bytes), found {} (byte 0x{marker:02x})",
                        describe(marker)
                    ),
                )
            })?;
        let end = self.r.position() + len;
        if end != ext_end {
            return Err(self.err(
                buffer_at,
                format!(
                    "the array buffer is {len} bytes but its extension leaves {} bytes for it",
                    ext_end.saturating_sub(self.r.position())
                ),
            ));
        }
        if let Some(itemsize) = dtype.itemsize() {
            let expected = product(&shape).and_then(|n| n.checked_mul(itemsize));
            if expected != Some(len) {
                return Err(self.err(
                    dtype_at,
                    format!(
                        "shape {shape:?} of {} needs {} bytes but the buffer holds {len}",
                        dtype.name(),
                        expected.map_or("an overflowing number of".to_string(), |e| e.to_string())
                    ),
                ));
            }
        }
        Ok((shape, dtype, len))
    }

    /// flax's map for leaves over 1 GiB: `{"__msgpack_chunked_array__": true, "shape": {"0": d0,
    /// ..}, "chunks": {"0": ndarray, ..}}`, chunks being 1-D slices of the flattened array.
    fn chunked_header(
        &mut self,
        fields: u64,
        payload_end: u64,
        at: u64,
    ) -> Result<Value, EasyLmError> {
        if fields > MAX_CHUNKED_FIELDS {
            return Err(self.err(
                at,
                format!("a map of {fields} fields is not a flax chunked array"),
            ));
        }
        let mut shape: Option<Vec<u64>> = None;
        let mut saw_marker = false;
        for field in 0..fields {
            let field_at = self.r.position();
            let name = self.r.string("a chunked-array field name", 64)?;
            match name.as_str() {
                "__msgpack_chunked_array__" => {
                    if !self.r.boolean("__msgpack_chunked_array__")? {
                        return Err(self.err(field_at, "__msgpack_chunked_array__ is false"));
                    }
                    saw_marker = true;
                }
                "shape" => {
                    let map_at = self.r.position();
                    let marker = self.r.byte("the chunked-array shape")?;
                    let dims = self
                        .r
                        .map_len(marker, "the chunked-array shape")?
                        .ok_or_else(|| {
                            self.err(
                                map_at,
                                format!(
                                    "expected the chunked-array shape (a map), found {}",
                                    describe(marker)
                                ),
                            )
                        })?;
                    if dims > MAX_DIMS {
                        return Err(self.err(map_at, format!("a shape with {dims} dimensions")));
                    }
                    let mut dims_read = Vec::with_capacity(dims as usize);
                    for i in 0..dims {
                        let key_at = self.r.position();
                        let key = self.r.string("a shape index", 16)?;
                        if key != i.to_string() {
                            return Err(self.err(
                                key_at,
                                format!("chunked-array shape index {key:?} where \"{i}\" belongs"),
                            ));
                        }
                        let at = self.r.position();
                        let marker = self.r.byte("a dimension")?;
                        dims_read.push(self.r.uint(marker, "a dimension", at)?);
                    }
                    shape = Some(dims_read);
                }
                "chunks" => {
                    let Some(shape) = shape.take() else {
                        return Err(self.err(
                            field_at,
                            "chunked array lists its chunks before its shape (flax writes the shape first)",
                        ));
                    };
                    let map_at = self.r.position();
                    let marker = self.r.byte("the chunk map")?;
                    let chunks = self.r.map_len(marker, "the chunk map")?.ok_or_else(|| {
                        self.err(
                            map_at,
                            format!("expected the chunk map, found {}", describe(marker)),
                        )
                    })?;
                    return self.first_chunk(
                        shape,
                        chunks,
                        fields - field - 1,
                        saw_marker,
                        payload_end,
                        map_at,
                    );
                }
                other => {
                    return Err(self.err(
                        field_at,
                        format!(
                            "the value is a map but not a flax chunked array (field {other:?})"
                        ),
                    ))
                }
            }
        }
        Err(self.err(at, "chunked array without a \"chunks\" field"))
    }

    fn first_chunk(
        &mut self,
        shape: Vec<u64>,
        chunks: u64,
        trailing_fields: u64,
        saw_marker: bool,
        payload_end: u64,
        at: u64,
    ) -> Result<Value, EasyLmError> {
        if chunks == 0 {
            if product(&shape) != Some(0) {
                return Err(self.err(
                    at,
                    format!("chunked array of shape {shape:?} has no chunks"),
                ));
            }
            // a zero-size array: no dtype is recorded; any float works
            let dtype = Dtype::Float(FloatDtype::F32);
            self.state = State::Data(DataState {
                payload_end,
                dtype: dtype.clone(),
                total_left: 0,
                in_buffer: 0,
                chunks_left: 0,
                next_chunk: 0,
                trailing_fields,
                saw_marker,
            });
            return Ok(Value::Tensor(TensorHeader {
                shape,
                dtype,
                chunked: true,
                data_len: 0,
            }));
        }
        let (dtype, first_len) = self.chunk_header(0, None)?;
        let Some(itemsize) = dtype.itemsize() else {
            return Err(self.err(
                at,
                format!("chunked array of unknown dtype {:?}", dtype.name()),
            ));
        };
        let total = product(&shape)
            .and_then(|n| n.checked_mul(itemsize))
            .ok_or_else(|| self.err(at, format!("shape {shape:?} overflows")))?;
        if first_len > total {
            return Err(self.err(
                at,
                format!(
                    "chunk 0 holds {first_len} bytes, more than the {total} of shape {shape:?}"
                ),
            ));
        }
        self.state = State::Data(DataState {
            payload_end,
            dtype: dtype.clone(),
            total_left: total,
            in_buffer: first_len,
            chunks_left: chunks - 1,
            next_chunk: 1,
            trailing_fields,
            saw_marker,
        });
        Ok(Value::Tensor(TensorHeader {
            shape,
            dtype,
            chunked: true,
            data_len: total,
        }))
    }

    /// Key and ndarray header of chunk `index`; returns its dtype and buffer length.
    fn chunk_header(
        &mut self,
        index: u64,
        expect: Option<&Dtype>,
    ) -> Result<(Dtype, u64), EasyLmError> {
        let key_at = self.r.position();
        let key = self.r.string("a chunk index", 32)?;
        if key != index.to_string() {
            return Err(self.err(
                key_at,
                format!("chunk {key:?} where chunk \"{index}\" belongs (chunks must be in order)"),
            ));
        }
        let at = self.r.position();
        let marker = self.r.byte("a chunk")?;
        let Some((code, len)) = self.r.ext_header(marker, "a chunk")? else {
            return Err(self.err(
                at,
                format!(
                    "chunk {index}: expected an ndarray extension, found {}",
                    describe(marker)
                ),
            ));
        };
        if code != 1 {
            return Err(self.err(
                at,
                format!("chunk {index}: extension type {code}, expected 1 (ndarray)"),
            ));
        }
        self.r.check_available(len, "a chunk")?;
        let ext_end = self.r.position() + len;
        let (shape, dtype, buffer) = self.ndarray_header(ext_end)?;
        if shape.len() != 1 {
            return Err(self.err(
                at,
                format!("chunk {index} has shape {shape:?}; flax chunks are 1-D"),
            ));
        }
        if let Some(expected) = expect {
            if *expected != dtype {
                return Err(self.err(
                    at,
                    format!(
                        "chunk {index} is {} but chunk 0 is {}",
                        dtype.name(),
                        expected.name()
                    ),
                ));
            }
        }
        Ok((dtype, buffer))
    }

    /// Reads element bytes of the current tensor into `buf`; returns 0 once all were read (and
    /// the record was checked to end where its payload ends).
    pub fn read_data(&mut self, buf: &mut [u8]) -> Result<usize, EasyLmError> {
        loop {
            let State::Data(d) = &mut self.state else {
                return Ok(0);
            };
            if d.in_buffer > 0 {
                let want = (buf.len() as u64).min(d.in_buffer) as usize;
                if want == 0 {
                    return Ok(0);
                }
                let got = self.r.read_some(&mut buf[..want])?;
                let State::Data(d) = &mut self.state else {
                    unreachable!("state cannot change during a read")
                };
                if got == 0 {
                    let missing = d.in_buffer;
                    return Err(self.err(
                        self.r.position(),
                        format!("truncated: the input ends inside the tensor data ({missing} bytes of the buffer missing)"),
                    ));
                }
                d.in_buffer -= got as u64;
                d.total_left -= got as u64;
                return Ok(got);
            }
            if d.chunks_left > 0 {
                let index = d.next_chunk;
                let dtype = d.dtype.clone();
                let at = self.r.position();
                let (_, len) = self.chunk_header(index, Some(&dtype))?;
                let State::Data(d) = &mut self.state else {
                    unreachable!("state cannot change while reading a chunk header")
                };
                if len > d.total_left {
                    return Err(self.r.error(
                        at,
                        format!(
                            "chunk {index} holds {len} bytes but only {} remain of the array's shape",
                            d.total_left
                        ),
                    ));
                }
                d.in_buffer = len;
                d.chunks_left -= 1;
                d.next_chunk += 1;
                continue;
            }
            if d.total_left > 0 {
                let left = d.total_left;
                return Err(self.err(
                    self.r.position(),
                    format!("the chunks end {left} bytes short of the array's shape"),
                ));
            }
            self.finish_data()?;
            return Ok(0);
        }
    }

    /// After the last element byte: the chunked map's remaining fields, then the payload must end.
    fn finish_data(&mut self) -> Result<(), EasyLmError> {
        let State::Data(d) = &self.state else {
            return Ok(());
        };
        let (payload_end, trailing, mut saw_marker) =
            (d.payload_end, d.trailing_fields, d.saw_marker);
        for _ in 0..trailing {
            let at = self.r.position();
            let name = self.r.string("a chunked-array field name", 64)?;
            if name != "__msgpack_chunked_array__" {
                return Err(self.err(at, format!("unexpected chunked-array field {name:?}")));
            }
            if !self.r.boolean("__msgpack_chunked_array__")? {
                return Err(self.err(at, "__msgpack_chunked_array__ is false"));
            }
            saw_marker = true;
        }
        if !saw_marker {
            return Err(self.err(
                self.r.position(),
                "chunked-array map without \"__msgpack_chunked_array__\": true",
            ));
        }
        let pos = self.r.position();
        if pos != payload_end {
            return Err(self.err(
                pos,
                format!(
                    "{} unexpected bytes after the array inside the record's value",
                    payload_end.saturating_sub(pos)
                ),
            ));
        }
        self.state = State::Idle;
        Ok(())
    }

    /// Fills `buf` with the next element bytes; fails if the tensor has fewer left.
    pub fn read_data_exact(&mut self, buf: &mut [u8]) -> Result<(), EasyLmError> {
        let mut done = 0;
        while done < buf.len() {
            let n = self.read_data(&mut buf[done..])?;
            if n == 0 {
                return Err(self.err(
                    self.r.position(),
                    format!(
                        "the tensor has {done} bytes left but {} were expected",
                        buf.len()
                    ),
                ));
            }
            done += n;
        }
        Ok(())
    }

    /// All element bytes of the current tensor into `out` (resized to fit; its capacity is reused).
    pub fn read_data_to(&mut self, data_len: u64, out: &mut Vec<u8>) -> Result<(), EasyLmError> {
        let len = usize::try_from(data_len)
            .map_err(|_| self.err(self.r.position(), "tensor larger than memory"))?;
        // every byte is overwritten below: only newly grown capacity gets zeroed
        out.resize(len, 0);
        self.read_data_exact(out)?;
        self.finish_tensor()
    }

    /// After all of a tensor's bytes were read: checks nothing is left and validates the rest of
    /// its record (remaining chunked-array fields, the payload's end).
    pub fn finish_tensor(&mut self) -> Result<(), EasyLmError> {
        let mut probe = [0u8; 1];
        match self.read_data(&mut probe)? {
            0 => Ok(()),
            _ => Err(self.err(
                self.r.position(),
                "the tensor has more bytes than its shape",
            )),
        }
    }

    /// Skips whatever is left of the current record.
    pub fn skip_rest(&mut self) -> Result<(), EasyLmError> {
        let end = match &self.state {
            State::Idle => return Ok(()),
            State::Payload { end } => *end,
            State::Data(d) => d.payload_end,
        };
        let pos = self.r.position();
        self.r
            .skip(end.saturating_sub(pos), "the rest of the record")?;
        self.state = State::Idle;
        Ok(())
    }
}
