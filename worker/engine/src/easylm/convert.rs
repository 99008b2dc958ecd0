//! `worker convert`: an EasyLM checkpoint → a Hugging Face folder that transformers loads:
//! safetensors shards of about 5 GB (`__metadata__ {"format": "pt"}`), `model.safetensors.index.json`
//! when there is more than one, `config.json` for `LlamaForSequenceClassification` or
//! `LlamaForCausalLM`, and the tokenizer files when given.
//!
//! Two passes over the source: a header scan (seeking past the tensor bytes) settles the config,
//! checks every name and shape, and lays out the shards, so each shard's safetensors header is
//! written before its data; then one sequential read streams every tensor into its shard in file
//! order, transposing and permuting in bands on this thread while a writer thread writes the
//! shards (`O_DIRECT` where the filesystem takes it). Nothing is written before the scan has
//! passed, and files appear under their final names only once complete.

use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::Instant;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde_json::{json, Map, Value};

use super::checkpoint::{Checkpoint, EasyLmOptions, ScanEntry, Scratch};
use super::mapping::{self, convert_dtype};
use super::shard_file::ShardFile;
use super::sizes::ModelConfig;
use super::stream::FloatDtype;
use super::EasyLmError;

/// Element type of the written tensors.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum OutputDtype {
    /// bfloat16 (float32 sources rounded to nearest even, like torch `.to(torch.bfloat16)`)
    Bf16,
    /// float32 (exact for every source dtype)
    Fp32,
    /// each tensor as stored in the checkpoint
    Keep,
}

impl OutputDtype {
    fn target(self, stored: FloatDtype) -> FloatDtype {
        match self {
            Self::Bf16 => FloatDtype::BF16,
            Self::Fp32 => FloatDtype::F32,
            Self::Keep => stored,
        }
    }
}

/// transformers' default `max_shard_size` ("5GB" = 5·10⁹ bytes).
pub const DEFAULT_SHARD_BYTES: u64 = 5_000_000_000;

#[derive(Clone, Debug)]
pub struct ConvertOptions {
    pub easylm: EasyLmOptions,
    pub dtype: OutputDtype,
    /// a shard is closed before it would grow past this many bytes of tensor data
    pub shard_bytes: u64,
    /// a tokenizer folder (its tokenizer files are copied) or a single tokenizer file
    pub tokenizer: Option<PathBuf>,
    /// replace a model already in the output folder
    pub overwrite: bool,
    /// draw a progress bar on stderr (when it is a terminal)
    pub progress: bool,
}

impl Default for ConvertOptions {
    fn default() -> Self {
        Self {
            easylm: EasyLmOptions::default(),
            dtype: OutputDtype::Bf16,
            shard_bytes: DEFAULT_SHARD_BYTES,
            tokenizer: None,
            overwrite: false,
            progress: false,
        }
    }
}

#[derive(Clone, Debug)]
pub struct ConvertReport {
    pub config: ModelConfig,
    pub tensors: usize,
    pub parameters: u64,
    pub skipped_records: usize,
    /// bytes of the source file
    pub bytes_read: u64,
    /// bytes of tensor data written
    pub bytes_written: u64,
    pub seconds: f64,
    pub files: Vec<PathBuf>,
    /// the largest tensor in the checkpoint, and what the converter's buffers held at most
    pub largest_tensor_bytes: u64,
    pub peak_buffer_bytes: usize,
}

impl ConvertReport {
    pub fn bytes_per_second(&self) -> f64 {
        self.bytes_read as f64 / self.seconds.max(1e-9)
    }
}

/// Files transformers' tokenizers read, copied from a tokenizer folder.
pub const TOKENIZER_FILES: &[&str] = &[
    "tokenizer.json",
    "tokenizer.model",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "added_tokens.json",
    "chat_template.jinja",
    "chat_template.json",
];

/// Files of a previous conversion that `--overwrite` replaces.
fn is_model_file(name: &str) -> bool {
    name == "config.json"
        || name == "model.safetensors.index.json"
        || (name.starts_with("model") && name.ends_with(".safetensors"))
        || name.ends_with(".safetensors.partial")
}

/// Converts `src` into a Hugging Face folder `out`.
pub fn convert(
    src: &Path,
    out: &Path,
    options: &ConvertOptions,
) -> Result<ConvertReport, EasyLmError> {
    let started = Instant::now();
    let checkpoint = Checkpoint::open(src, &options.easylm)?;
    tracing::info!(
        checkpoint = %src.display(),
        size = checkpoint.config.size.unwrap_or("custom"),
        architecture = checkpoint.config.architecture(),
        tensors = checkpoint.entries.len(),
        skipped = checkpoint.skipped,
        "scanned"
    );
    write_folder(&checkpoint, out, options, started)
}

struct Shard {
    name: String,
    entries: std::ops::Range<usize>,
    data_bytes: u64,
}

fn plan_shards(sizes: &[u64], limit: u64) -> Vec<std::ops::Range<usize>> {
    let mut shards = Vec::new();
    let (mut start, mut bytes) = (0, 0u64);
    for (i, &size) in sizes.iter().enumerate() {
        if i > start && bytes + size > limit {
            shards.push(start..i);
            start = i;
            bytes = 0;
        }
        bytes += size;
    }
    if start < sizes.len() || shards.is_empty() {
        shards.push(start..sizes.len());
    }
    shards
}

/// The safetensors header for `entries` (with their output dtype and shape), padded with spaces
/// to a multiple of 8 bytes as the safetensors library does.
fn safetensors_header(tensors: &[(String, FloatDtype, Vec<u64>, u64)]) -> Vec<u8> {
    let mut header = Map::new();
    header.insert("__metadata__".into(), json!({"format": "pt"}));
    let mut offset = 0u64;
    for (name, dtype, shape, bytes) in tensors {
        header.insert(
            name.clone(),
            json!({
                "dtype": dtype.safetensors_name(),
                "shape": shape,
                "data_offsets": [offset, offset + bytes],
            }),
        );
        offset += bytes;
    }
    let mut text = Value::Object(header).to_string().into_bytes();
    while !text.len().is_multiple_of(8) {
        text.push(b' ');
    }
    text
}

fn prepare_output(out: &Path, overwrite: bool) -> Result<(), EasyLmError> {
    if out.exists() && !out.is_dir() {
        return Err(EasyLmError::io(out, "exists and is not a folder"));
    }
    std::fs::create_dir_all(out).map_err(|e| EasyLmError::io(out, e))?;
    let mut existing = Vec::new();
    for entry in std::fs::read_dir(out).map_err(|e| EasyLmError::io(out, e))? {
        let entry = entry.map_err(|e| EasyLmError::io(out, e))?;
        let name = entry.file_name().to_string_lossy().to_string();
        if is_model_file(&name) {
            existing.push(entry.path());
        }
    }
    if existing.is_empty() {
        return Ok(());
    }
    if !overwrite {
        return Err(EasyLmError::io(
            out,
            format!(
                "already holds a model ({}); pass --overwrite to replace it",
                existing
                    .iter()
                    .filter_map(|p| p.file_name())
                    .map(|n| n.to_string_lossy().to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        ));
    }
    for path in existing {
        std::fs::remove_file(&path).map_err(|e| EasyLmError::io(&path, e))?;
    }
    Ok(())
}

fn progress_bar(total: u64, show: bool) -> ProgressBar {
    if !show {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::with_draw_target(Some(total), ProgressDrawTarget::stderr());
    let style = ProgressStyle::with_template(
        "converting [{elapsed_precise}] {bar:40} {binary_bytes}/{binary_total_bytes} ({binary_bytes_per_sec}, eta {eta})",
    )
    .unwrap_or_else(|_| ProgressStyle::default_bar());
    bar.set_style(style);
    bar
}

const WRITER_STOPPED: &str = "the writer thread stopped";

fn is_writer_stopped(error: &EasyLmError) -> bool {
    matches!(error, EasyLmError::Config(message) if message == WRITER_STOPPED)
}

/// Bands of output in flight between the converting thread and the writer.
const BANDS_IN_FLIGHT: usize = 2;

enum WriteMsg {
    /// start a shard: its safetensors header and how many data bytes follow
    Open {
        path: PathBuf,
        partial: PathBuf,
        header: Vec<u8>,
        data_bytes: u64,
    },
    /// the next bytes of the open shard
    Data(Vec<u8>),
}

struct OpenShard {
    writer: ShardFile,
    partial: PathBuf,
    path: PathBuf,
    written: u64,
    expected: u64,
}

/// The writer thread: writes shards as the messages come, returns (partial, final) paths of the
/// shards it completed. Emptied data buffers go back through `recycle`.
fn write_shards(
    messages: mpsc::Receiver<WriteMsg>,
    recycle: mpsc::Sender<Vec<u8>>,
) -> Result<Vec<(PathBuf, PathBuf)>, EasyLmError> {
    let mut open: Option<OpenShard> = None;
    let mut finished = Vec::new();
    for message in messages {
        match message {
            WriteMsg::Open {
                path,
                partial,
                header,
                data_bytes,
            } => {
                if let Some(done) = open.take() {
                    finished.push(close_shard(done)?);
                }
                let mut writer = ShardFile::create(&partial, 8 + header.len() as u64 + data_bytes)
                    .map_err(|e| EasyLmError::io(&partial, e))?;
                writer
                    .write_all(&(header.len() as u64).to_le_bytes())
                    .and_then(|()| writer.write_all(&header))
                    .map_err(|e| EasyLmError::io(&partial, e))?;
                open = Some(OpenShard {
                    writer,
                    partial,
                    path,
                    written: 0,
                    expected: data_bytes,
                });
            }
            WriteMsg::Data(data) => {
                let shard = open.as_mut().ok_or_else(|| {
                    EasyLmError::Config("internal: data before any shard".to_string())
                })?;
                shard
                    .writer
                    .write_all(&data)
                    .map_err(|e| EasyLmError::io(&shard.partial, e))?;
                shard.written += data.len() as u64;
                let _ = recycle.send(data);
            }
        }
    }
    if let Some(done) = open.take() {
        finished.push(close_shard(done)?);
    }
    Ok(finished)
}

fn write_folder(
    checkpoint: &Checkpoint,
    out: &Path,
    options: &ConvertOptions,
    started: Instant,
) -> Result<ConvertReport, EasyLmError> {
    let entries = &checkpoint.entries;
    let out_dtypes: Vec<FloatDtype> = entries
        .iter()
        .map(|e| options.dtype.target(e.dtype))
        .collect();
    let out_bytes: Vec<u64> = entries
        .iter()
        .zip(&out_dtypes)
        .map(|(e, d)| e.data_len / e.dtype.size() as u64 * d.size() as u64)
        .collect();
    let ranges = plan_shards(&out_bytes, options.shard_bytes.max(1));
    let count = ranges.len();
    let shards: Vec<Shard> = ranges
        .into_iter()
        .enumerate()
        .map(|(i, range)| Shard {
            name: if count == 1 {
                "model.safetensors".to_string()
            } else {
                format!("model-{:05}-of-{count:05}.safetensors", i + 1)
            },
            data_bytes: out_bytes[range.clone()].iter().sum(),
            entries: range,
        })
        .collect();

    prepare_output(out, options.overwrite)?;
    let bar = progress_bar(checkpoint.file_len, options.progress);

    // This thread reads and transposes; a writer thread writes (direct I/O where the filesystem
    // allows, see shard_file.rs), so the CPU work overlaps the device's writes. Band buffers go round between the two (bounded: the channel
    // holds BANDS_IN_FLIGHT, plus one being written and one being filled).
    let (to_writer, from_reader) = mpsc::sync_channel::<WriteMsg>(BANDS_IN_FLIGHT);
    let (recycle, recycled) = mpsc::channel::<Vec<u8>>();
    let mut scratch = Scratch::default();
    let mut band_buffers = 0usize;
    let mut index = 0usize;
    let mut written_total = 0u64;
    let (read_result, write_result) = std::thread::scope(|scope| {
        let writer = scope.spawn(move || write_shards(from_reader, recycle));
        let result = checkpoint.for_each_tensor(|entry: &ScanEntry, stream| {
            let i = index;
            index += 1;
            let send = |msg: WriteMsg| {
                to_writer
                    .send(msg)
                    .map_err(|_| EasyLmError::Config(WRITER_STOPPED.to_string()))
            };
            if let Some(shard) = shards.iter().find(|s| s.entries.start == i) {
                let tensors: Vec<(String, FloatDtype, Vec<u64>, u64)> = shard
                    .entries
                    .clone()
                    .map(|j| {
                        (
                            entries[j].key.hf_name(),
                            out_dtypes[j],
                            checkpoint.hf_shape(&entries[j]),
                            out_bytes[j],
                        )
                    })
                    .collect();
                send(WriteMsg::Open {
                    path: out.join(&shard.name),
                    partial: out.join(format!("{}.partial", shard.name)),
                    header: safetensors_header(&tensors),
                    data_bytes: shard.data_bytes,
                })?;
            }
            let target = out_dtypes[i];
            let elem = entry.dtype.size() as u64;
            let mut sent = 0u64;
            checkpoint.stream_hf_bands(entry, stream, &mut scratch, |first, band| {
                let elements = band.len() as u64 / elem;
                let mut next = recycled.try_recv().unwrap_or_else(|_| {
                    band_buffers += 1;
                    Vec::new()
                });
                let data = if target == entry.dtype {
                    // hand over the band itself; the recycled buffer becomes the next band
                    std::mem::swap(band, &mut next);
                    next
                } else {
                    convert_dtype(band, entry.dtype, target, &mut next);
                    next
                };
                sent += data.len() as u64;
                send(WriteMsg::Data(data))?;
                bar.set_position(entry.offset + (first + elements) * elem);
                Ok(())
            })?;
            if sent != out_bytes[i] {
                return Err(EasyLmError::Config(format!(
                    "internal: {} produced {sent} bytes, expected {}",
                    entry.name, out_bytes[i]
                )));
            }
            written_total += sent;
            Ok(())
        });
        drop(to_writer);
        let written = writer.join().unwrap_or_else(|_| {
            Err(EasyLmError::Config(
                "the writer thread panicked".to_string(),
            ))
        });
        (result, written)
    });
    // the reader's error, unless it only says the writer stopped (then the writer's says why)
    let failure = match (read_result, write_result) {
        (Ok(()), Ok(finished)) => Ok(finished),
        (Err(read), Err(write)) if is_writer_stopped(&read) => Err(write),
        (Err(read), _) => Err(read),
        (Ok(()), Err(write)) => Err(write),
    };
    let finished = match failure {
        Ok(finished) => finished,
        Err(error) => {
            bar.abandon();
            for shard in &shards {
                let _ = std::fs::remove_file(out.join(format!("{}.partial", shard.name)));
            }
            return Err(error.in_file(&checkpoint.path));
        }
    };
    let peak = scratch.held() + band_buffers * mapping::BAND_BYTES;
    bar.finish_and_clear();

    let mut files = Vec::new();
    for (partial, path) in finished {
        std::fs::rename(&partial, &path).map_err(|e| EasyLmError::io(&path, e))?;
        files.push(path);
    }
    if shards.len() > 1 {
        let mut weight_map: Vec<(String, String)> = Vec::new();
        for shard in &shards {
            for j in shard.entries.clone() {
                weight_map.push((entries[j].key.hf_name(), shard.name.clone()));
            }
        }
        weight_map.sort();
        let map: Map<String, Value> = weight_map
            .into_iter()
            .map(|(name, file)| (name, Value::String(file)))
            .collect();
        let index = json!({
            "metadata": {"total_size": written_total},
            "weight_map": map,
        });
        let path = out.join("model.safetensors.index.json");
        write_json(&path, &index)?;
        files.push(path);
    }
    let torch_dtype = match options.dtype {
        OutputDtype::Bf16 => "bfloat16",
        OutputDtype::Fp32 => "float32",
        OutputDtype::Keep => entries
            .iter()
            .find(|e| e.key.param == super::mapping::Param::Embedding)
            .map(|e| match e.dtype {
                FloatDtype::BF16 => "bfloat16",
                FloatDtype::F16 => "float16",
                FloatDtype::F32 => "float32",
            })
            .unwrap_or("bfloat16"),
    };
    let config_path = out.join("config.json");
    write_json(&config_path, &checkpoint.config.hf_config_json(torch_dtype))?;
    files.push(config_path);
    if let Some(tokenizer) = &options.tokenizer {
        files.extend(copy_tokenizer(tokenizer, out)?);
    }
    Ok(ConvertReport {
        config: checkpoint.config.clone(),
        tensors: entries.len(),
        parameters: checkpoint.parameter_count(),
        skipped_records: checkpoint.skipped,
        bytes_read: checkpoint.file_len,
        bytes_written: written_total,
        seconds: started.elapsed().as_secs_f64(),
        files,
        largest_tensor_bytes: checkpoint.largest_tensor_bytes(),
        peak_buffer_bytes: peak,
    })
}

fn close_shard(shard: OpenShard) -> Result<(PathBuf, PathBuf), EasyLmError> {
    shard
        .writer
        .finish()
        .map_err(|e| EasyLmError::io(&shard.partial, e))?;
    if shard.written != shard.expected {
        return Err(EasyLmError::io(
            &shard.partial,
            format!(
                "internal: wrote {} bytes of tensor data, the header promised {}",
                shard.written, shard.expected
            ),
        ));
    }
    Ok((shard.partial, shard.path))
}

fn write_json(path: &Path, value: &Value) -> Result<(), EasyLmError> {
    let mut text = serde_json::to_string_pretty(value).map_err(|e| EasyLmError::io(path, e))?;
    text.push('\n');
    std::fs::write(path, text).map_err(|e| EasyLmError::io(path, e))
}

/// What EasyLM's converter writes beside a bare SentencePiece `tokenizer.model`
/// (`convert_easylm_to_hf.py::write_tokenizer`).
fn easylm_tokenizer_config() -> (Value, Value) {
    let token = |content: &str| json!({"content": content, "lstrip": false, "normalized": true, "rstrip": false, "single_word": false});
    let special = json!({
        "bos_token": token("<s>"),
        "eos_token": token("</s>"),
        "unk_token": token("<unk>"),
    });
    let config = json!({
        "add_bos_token": true,
        "add_eos_token": false,
        "bos_token": token("<s>"),
        "clean_up_tokenization_spaces": false,
        "eos_token": token("</s>"),
        "model_max_length": 4096,
        "pad_token": null,
        "sp_model_kwargs": {},
        "tokenizer_class": "LlamaTokenizer",
        "unk_token": token("<unk>"),
    });
    (config, special)
}

/// Copies tokenizer files into `out`: the known files of a folder, or one file (a SentencePiece
/// `*.model` becomes `tokenizer.model`, with EasyLM's tokenizer_config.json and
/// special_tokens_map.json; a `*.json` becomes `tokenizer.json`).
pub fn copy_tokenizer(src: &Path, out: &Path) -> Result<Vec<PathBuf>, EasyLmError> {
    let copy = |from: &Path, name: &str| -> Result<PathBuf, EasyLmError> {
        let to = out.join(name);
        std::fs::copy(from, &to).map_err(|e| EasyLmError::io(from, e))?;
        Ok(to)
    };
    let mut written = Vec::new();
    if src.is_dir() {
        for name in TOKENIZER_FILES {
            let from = src.join(name);
            if from.is_file() {
                written.push(copy(&from, name)?);
            }
        }
        if written.is_empty() {
            return Err(EasyLmError::io(
                src,
                format!(
                    "no tokenizer files here (looked for {})",
                    TOKENIZER_FILES.join(", ")
                ),
            ));
        }
        return Ok(written);
    }
    if !src.is_file() {
        return Err(EasyLmError::io(src, "tokenizer not found"));
    }
    let extension = src.extension().and_then(|e| e.to_str()).unwrap_or("");
    match extension {
        "model" => {
            written.push(copy(src, "tokenizer.model")?);
            let (config, special) = easylm_tokenizer_config();
            for (name, value) in [
                ("tokenizer_config.json", config),
                ("special_tokens_map.json", special),
            ] {
                let path = out.join(name);
                if !path.exists() {
                    write_json(&path, &value)?;
                    written.push(path);
                }
            }
        }
        "json" => written.push(copy(src, "tokenizer.json")?),
        _ => {
            return Err(EasyLmError::io(
                src,
                "expected a tokenizer folder, a SentencePiece *.model or a tokenizer *.json",
            ))
        }
    }
    Ok(written)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shards_like_transformers() {
        assert_eq!(plan_shards(&[4, 4, 4], 10), vec![0..2, 2..3]);
        assert_eq!(plan_shards(&[4, 4, 4], 12), vec![0..3]);
        // a tensor larger than the limit gets a shard of its own
        assert_eq!(plan_shards(&[2, 20, 2], 10), vec![0..1, 1..2, 2..3]);
        assert_eq!(plan_shards(&[], 10), vec![0..0]);
    }

    #[test]
    fn header_is_padded_json() {
        let header = safetensors_header(&[("a".into(), FloatDtype::BF16, vec![2, 3], 12)]);
        assert_eq!(header.len() % 8, 0);
        let value: Value = serde_json::from_slice(&header).unwrap();
        assert_eq!(value["__metadata__"]["format"], "pt");
        assert_eq!(value["a"]["data_offsets"], json!([0, 12]));
    }
}
