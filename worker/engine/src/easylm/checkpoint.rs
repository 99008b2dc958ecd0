//! An EasyLM LLaMA checkpoint: a header scan (every record's name, shape and dtype, read with
//! seeks past the tensor bytes), the config resolved from it, and the direct load of its tensors
//! into libtorch in Hugging Face layout on the target device and dtype (no files written).

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use tch::{Device, Kind, Tensor};

use super::mapping::{self, classify, KeyKind, Op, Param, ParamKey, LAYER_PARAMS};
use super::reader::{FileSource, Source};
use super::sizes::{self, ModelConfig, Overrides, Shapes};
use super::stream::{Dtype, FloatDtype, RecordStream, Value};
use super::EasyLmError;
use crate::error::LoadError;
use crate::models::HeadKind;
use crate::weights::Weights;

/// How to read a checkpoint's config: a size from the table (or recognised from the shapes)
/// and flags that override it.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct EasyLmOptions {
    pub size: Option<String>,
    pub overrides: Overrides,
}

/// One parameter record, as the scan found it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ScanEntry {
    pub key: ParamKey,
    /// the record's key joined with '.' (as in the file, train-state prefix included)
    pub name: String,
    pub offset: u64,
    pub shape: Vec<u64>,
    pub dtype: FloatDtype,
    pub data_len: u64,
    pub chunked: bool,
}

/// The records of a checkpoint, in file order, and what was skipped.
#[derive(Clone, Debug, Default)]
pub struct Scan {
    pub entries: Vec<ScanEntry>,
    /// records that are not model parameters (train-state step, optimizer state)
    pub skipped: usize,
    /// bytes read or skipped (the file length once the scan finished)
    pub bytes: u64,
}

fn tensor_error(name: &str, offset: u64, reason: impl Into<String>) -> EasyLmError {
    EasyLmError::Tensor {
        key: name.to_string(),
        offset,
        reason: reason.into(),
    }
}

/// Reads every record header of `stream` (tensor bytes are skipped), checking names and dtypes.
pub fn scan<S: Source>(stream: &mut RecordStream<S>) -> Result<Scan, EasyLmError> {
    let mut scan = Scan::default();
    let mut seen: HashMap<ParamKey, u64> = HashMap::new();
    while let Some(record) = stream.next_record()? {
        let key = match classify(&record.key) {
            Ok(KeyKind::Param(key)) => key,
            Ok(KeyKind::Skip(_)) => {
                scan.skipped += 1;
                continue;
            }
            Err(reason) => return Err(tensor_error(&record.name, record.offset, reason)),
        };
        let header = match record.value {
            Value::Tensor(header) => header,
            Value::SplitPiece(_) => {
                return Err(tensor_error(
                    &record.name,
                    record.offset,
                    mapping::split_format_message(),
                ))
            }
            Value::Other(what) => {
                return Err(tensor_error(
                    &record.name,
                    record.offset,
                    format!("the value is {what}, not a flax array"),
                ))
            }
        };
        let dtype = match header.dtype {
            Dtype::Float(dtype) => dtype,
            Dtype::Other { name, .. } => {
                return Err(tensor_error(
                    &record.name,
                    record.offset,
                    format!("dtype {name:?} is not supported for LLaMA parameters (expected bfloat16, float16 or float32)"),
                ))
            }
        };
        if let Some(first) = seen.insert(key, record.offset) {
            return Err(tensor_error(
                &record.name,
                record.offset,
                format!("appears twice (first at byte {first})"),
            ));
        }
        scan.entries.push(ScanEntry {
            key,
            name: record.name,
            offset: record.offset,
            shape: header.shape,
            dtype,
            data_len: header.data_len,
            chunked: header.chunked,
        });
    }
    scan.bytes = stream.position();
    Ok(scan)
}

/// The shapes a LLaMA checkpoint must have, read off its records.
pub fn infer_shapes(entries: &[ScanEntry]) -> Result<Shapes, EasyLmError> {
    let by_key: HashMap<ParamKey, &ScanEntry> = entries.iter().map(|e| (e.key, e)).collect();
    let global = |param| ParamKey { param, layer: None };
    let missing = |key: ParamKey| {
        EasyLmError::Config(format!(
            "the checkpoint has no {} (is it an EasyLM LLaMA checkpoint?)",
            key.easylm_name()
        ))
    };
    let matrix = |key: ParamKey| -> Result<(i64, i64), EasyLmError> {
        let entry = by_key.get(&key).ok_or_else(|| missing(key))?;
        match entry.shape.as_slice() {
            [rows, cols] => Ok((*rows as i64, *cols as i64)),
            other => Err(tensor_error(
                &entry.name,
                entry.offset,
                format!("shape {other:?}; a 2-D kernel was expected"),
            )),
        }
    };
    let (vocab, hidden) = matrix(global(Param::Embedding))?;
    by_key
        .get(&global(Param::FinalNorm))
        .ok_or_else(|| missing(global(Param::FinalNorm)))?;

    let layers: BTreeMap<u32, Vec<Param>> =
        entries.iter().fold(BTreeMap::new(), |mut layers, e| {
            if let Some(layer) = e.key.layer {
                layers
                    .entry(layer)
                    .or_insert_with(Vec::new)
                    .push(e.key.param);
            }
            layers
        });
    if layers.is_empty() {
        return Err(EasyLmError::Config(
            "the checkpoint has no transformer.h.N layers".to_string(),
        ));
    }
    let count = layers.len() as u32;
    for expected in 0..count {
        if !layers.contains_key(&expected) {
            let last = layers.keys().next_back().copied().unwrap_or_default();
            return Err(EasyLmError::Config(format!(
                "layer {expected} is missing (layers go up to {last})"
            )));
        }
        for param in LAYER_PARAMS {
            let key = ParamKey {
                param,
                layer: Some(expected),
            };
            if !by_key.contains_key(&key) {
                return Err(missing(key));
            }
        }
    }
    let layer0 = |param| ParamKey {
        param,
        layer: Some(0),
    };
    let (_, q_dim) = matrix(layer0(Param::Q))?;
    let (_, kv_dim) = matrix(layer0(Param::K))?;
    let (_, intermediate) = matrix(layer0(Param::Gate))?;

    let score = by_key.contains_key(&global(Param::Score));
    let lm_head = by_key.contains_key(&global(Param::LmHead));
    let (head, num_labels) = match (score, lm_head) {
        (true, false) => (
            HeadKind::SequenceClassification,
            matrix(global(Param::Score))?.1,
        ),
        (false, true) => (HeadKind::CausalLm, 0),
        (true, true) => {
            return Err(EasyLmError::Config(
                "the checkpoint has both score.kernel and lm_head.kernel; expected one head"
                    .to_string(),
            ))
        }
        (false, false) => return Err(EasyLmError::Config(
            "the checkpoint has neither score.kernel (reward model) nor lm_head.kernel (causal LM)"
                .to_string(),
        )),
    };
    Ok(Shapes {
        vocab,
        hidden,
        intermediate,
        layers: i64::from(count),
        q_dim,
        kv_dim,
        head,
        num_labels,
    })
}

/// The flax shape `key` must have under `config`.
pub fn expected_flax_shape(key: &ParamKey, config: &ModelConfig) -> Vec<u64> {
    let c = config;
    let (v, d, f) = (c.vocab_size, c.hidden_size, c.intermediate_size);
    let (q, kv) = (c.num_heads * c.head_dim, c.num_kv_heads * c.head_dim);
    let shape: Vec<i64> = match key.param {
        Param::Embedding => vec![v, d],
        Param::Q => vec![d, q],
        Param::K | Param::V => vec![d, kv],
        Param::O => vec![q, d],
        Param::Gate | Param::Up => vec![d, f],
        Param::Down => vec![f, d],
        Param::InputNorm | Param::PostNorm | Param::FinalNorm => vec![d],
        Param::Score => vec![d, c.num_labels],
        Param::LmHead => vec![d, v],
    };
    shape.into_iter().map(|n| n as u64).collect()
}

/// Scratch buffers reused across tensors: the source of a transpose (grows to the largest
/// transposed tensor) and one band of output.
#[derive(Default)]
pub struct Scratch {
    pub source: Vec<u8>,
    pub band: Vec<u8>,
    pub converted: Vec<u8>,
}

impl Scratch {
    /// Bytes held by the buffers (their capacity).
    pub fn held(&self) -> usize {
        self.source.capacity() + self.band.capacity() + self.converted.capacity()
    }
}

/// An EasyLM LLaMA checkpoint on local disk: records scanned, config resolved.
#[derive(Clone, Debug)]
pub struct Checkpoint {
    pub path: PathBuf,
    pub entries: Vec<ScanEntry>,
    pub skipped: usize,
    pub file_len: u64,
    pub config: ModelConfig,
}

impl Checkpoint {
    /// Scans `path` (headers only) and settles its config.
    pub fn open(path: &Path, options: &EasyLmOptions) -> Result<Self, EasyLmError> {
        let source = FileSource::open(path)?;
        let file_len = source.remaining().unwrap_or(0);
        let mut stream = RecordStream::new(source);
        let scan = scan(&mut stream).map_err(|e| e.in_file(path))?;
        Self::from_scan(path, scan, file_len, options).map_err(|e| e.in_file(path))
    }

    pub fn from_scan(
        path: &Path,
        scan: Scan,
        file_len: u64,
        options: &EasyLmOptions,
    ) -> Result<Self, EasyLmError> {
        let shapes = infer_shapes(&scan.entries)?;
        let config = sizes::resolve(&shapes, options.size.as_deref(), &options.overrides)?;
        for entry in &scan.entries {
            let expected = expected_flax_shape(&entry.key, &config);
            if entry.shape != expected {
                return Err(tensor_error(
                    &entry.name,
                    entry.offset,
                    format!(
                        "shape {:?} does not fit the config (expected {expected:?}: hidden {}, {} heads of {}, {} kv heads, intermediate {}, vocab {})",
                        entry.shape,
                        config.hidden_size,
                        config.num_heads,
                        config.head_dim,
                        config.num_kv_heads,
                        config.intermediate_size,
                        config.vocab_size
                    ),
                ));
            }
        }
        Ok(Self {
            path: path.to_path_buf(),
            entries: scan.entries,
            skipped: scan.skipped,
            file_len,
            config,
        })
    }

    pub fn head(&self) -> HeadKind {
        self.config.head
    }

    /// How `entry` becomes its Hugging Face tensor.
    pub fn op(&self, entry: &ScanEntry) -> Op {
        match entry.key.param {
            Param::Embedding | Param::InputNorm | Param::PostNorm | Param::FinalNorm => Op::Copy,
            Param::Q => Op::TransposePermute {
                heads: self.config.num_heads as u64,
            },
            Param::K => Op::TransposePermute {
                heads: self.config.num_kv_heads as u64,
            },
            _ => Op::Transpose,
        }
    }

    /// The Hugging Face shape of `entry`.
    pub fn hf_shape(&self, entry: &ScanEntry) -> Vec<u64> {
        match (self.op(entry), entry.shape.as_slice()) {
            (Op::Copy, shape) => shape.to_vec(),
            (_, [rows, cols]) => vec![*cols, *rows],
            (_, shape) => shape.to_vec(),
        }
    }

    /// Bytes of the largest tensor in the file.
    pub fn largest_tensor_bytes(&self) -> u64 {
        self.entries.iter().map(|e| e.data_len).max().unwrap_or(0)
    }

    /// Bytes of parameters (as stored).
    pub fn parameter_bytes(&self) -> u64 {
        self.entries.iter().map(|e| e.data_len).sum()
    }

    pub fn parameter_count(&self) -> u64 {
        self.entries
            .iter()
            .map(|e| e.data_len / e.dtype.size() as u64)
            .sum()
    }

    /// Walks the file again and calls `each(entry, stream)` for every parameter record, in file
    /// order, with `stream` in front of the record's tensor bytes. Fails if the file no longer
    /// matches the scan.
    pub fn for_each_tensor(
        &self,
        mut each: impl FnMut(&ScanEntry, &mut RecordStream<FileSource>) -> Result<(), EasyLmError>,
    ) -> Result<(), EasyLmError> {
        let mut stream = RecordStream::new(FileSource::open(&self.path)?);
        let mut next = 0usize;
        let changed = |name: &str, offset: u64| {
            tensor_error(
                name,
                offset,
                "the file changed since it was scanned (records differ); run again",
            )
        };
        while let Some(record) = stream.next_record()? {
            match classify(&record.key) {
                Ok(KeyKind::Param(_)) => {}
                Ok(KeyKind::Skip(_)) => continue,
                Err(reason) => return Err(tensor_error(&record.name, record.offset, reason)),
            }
            let entry = self
                .entries
                .get(next)
                .filter(|e| e.name == record.name && e.offset == record.offset)
                .ok_or_else(|| changed(&record.name, record.offset))?;
            match &record.value {
                Value::Tensor(h) if h.shape == entry.shape && h.data_len == entry.data_len => {}
                _ => return Err(changed(&record.name, record.offset)),
            }
            next += 1;
            each(entry, &mut stream)?;
        }
        if next != self.entries.len() {
            return Err(EasyLmError::Format {
                offset: stream.position(),
                key: None,
                reason: "the file changed since it was scanned (fewer records); run again"
                    .to_string(),
            });
        }
        Ok(())
    }

    /// The current tensor of `stream` in Hugging Face layout, in the source dtype, as bands of
    /// consecutive elements: `emit(first_element, band)`. `emit` may take the band's buffer
    /// (`std::mem::take` or swap in another), which saves a copy when it hands bands to a writer
    /// thread. Memory: for transposed tensors the source tensor plus one band; for copied ones one
    /// band.
    pub fn stream_hf_bands<S: Source>(
        &self,
        entry: &ScanEntry,
        stream: &mut RecordStream<S>,
        scratch: &mut Scratch,
        mut emit: impl FnMut(u64, &mut Vec<u8>) -> Result<(), EasyLmError>,
    ) -> Result<(), EasyLmError> {
        let elem = entry.dtype.size();
        let op = self.op(entry);
        match (op, entry.shape.as_slice()) {
            (Op::Copy, _) | (_, [_]) => {
                let band = (mapping::BAND_BYTES / elem * elem) as u64;
                let mut done = 0u64;
                while done < entry.data_len {
                    let n = band.min(entry.data_len - done) as usize;
                    scratch.band.resize(n, 0);
                    stream.read_data_exact(&mut scratch.band)?;
                    emit(done / elem as u64, &mut scratch.band)?;
                    done += n as u64;
                }
                stream.finish_tensor()
            }
            (_, [rows, cols]) => {
                stream.read_data_to(entry.data_len, &mut scratch.source)?;
                let (in_dim, out_dim) = (*rows as usize, *cols as usize);
                let permute = match op {
                    Op::TransposePermute { heads } if heads > 0 => Some(out_dim / heads as usize),
                    _ => None,
                };
                let rows_per_band = (mapping::BAND_BYTES / (in_dim.max(1) * elem)).max(1);
                let mut start = 0;
                while start < out_dim {
                    let end = (start + rows_per_band).min(out_dim);
                    mapping::transpose_band(
                        &scratch.source,
                        elem,
                        in_dim,
                        out_dim,
                        start..end,
                        permute,
                        &mut scratch.band,
                    );
                    emit((start * in_dim) as u64, &mut scratch.band)?;
                    start = end;
                }
                Ok(())
            }
            (_, shape) => Err(tensor_error(
                &entry.name,
                entry.offset,
                format!("shape {shape:?} cannot be transposed"),
            )),
        }
    }

    /// Every parameter as a libtorch tensor named as transformers names it, on `device` in `kind`.
    pub fn load_tensors(
        &self,
        device: Device,
        kind: Kind,
    ) -> Result<HashMap<String, Tensor>, EasyLmError> {
        let _no_grad = tch::no_grad_guard();
        let mut tensors = HashMap::with_capacity(self.entries.len());
        let mut scratch = Scratch::default();
        let torch_error = |entry: &ScanEntry, e: tch::TchError| {
            tensor_error(&entry.name, entry.offset, format!("libtorch: {e}"))
        };
        self.for_each_tensor(|entry, stream| {
            let shape: Vec<i64> = self.hf_shape(entry).iter().map(|&d| d as i64).collect();
            let tensor = Tensor::f_empty(shape.as_slice(), (kind, device))
                .map_err(|e| torch_error(entry, e))?;
            let flat = tensor.f_view([-1]).map_err(|e| torch_error(entry, e))?;
            let stored = entry.dtype.kind();
            let elem = entry.dtype.size();
            self.stream_hf_bands(entry, stream, &mut scratch, |first, bytes| {
                let n = (bytes.len() / elem) as i64;
                let mut slot = flat
                    .f_narrow(0, first as i64, n)
                    .map_err(|e| torch_error(entry, e))?;
                // SAFETY: `band` views `bytes` (n elements of `stored`, contiguous, on the CPU)
                // without copying; it is dropped at the end of this closure, while `bytes` is
                // still borrowed and unchanged. A fresh tensor per band instead costs an 8 MB
                // allocation, page faults and zeroing each time (slower than the copy itself).
                let band =
                    unsafe { Tensor::f_from_blob(bytes.as_ptr(), &[n], &[1], stored, Device::Cpu) }
                        .map_err(|e| torch_error(entry, e))?;
                // converts dtype and moves to the device
                slot.f_copy_(&band).map_err(|e| torch_error(entry, e))
            })?;
            tensors.insert(entry.key.hf_name(), tensor);
            Ok(())
        })
        .map_err(|e| e.in_file(&self.path))?;
        Ok(tensors)
    }

    /// The weights for `Decoder::load` and the heads.
    pub fn load_weights(&self, device: Device, kind: Kind) -> Result<Weights, LoadError> {
        let started = std::time::Instant::now();
        let tensors = self.load_tensors(device, kind)?;
        tracing::info!(
            checkpoint = %self.path.display(),
            tensors = tensors.len(),
            bytes = self.parameter_bytes(),
            seconds = started.elapsed().as_secs_f64(),
            "EasyLM checkpoint loaded"
        );
        Ok(Weights::from_tensors(tensors))
    }
}
