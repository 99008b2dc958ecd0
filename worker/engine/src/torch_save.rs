//! Checkpoints written by PyTorch's `torch.save` (`pytorch_model.bin`, its shards, `*.pt` side
//! files): where each tensor's bytes are, so [`crate::weights`] reads them lazily with positioned
//! reads exactly as it reads safetensors.
//!
//! Since torch 1.6 `torch.save` writes a zip archive: `<root>/data.pkl`, a pickle of the saved
//! object whose tensors are `torch._utils._rebuild_tensor_v2(storage, offset, size, stride, ...)`
//! over persistent storages, and one `<root>/data/<key>` entry per storage, stored uncompressed.
//! candle-core's pickle reader walks `data.pkl` (a restricted interpreter: nothing in the file is
//! executed) and gives each top-level tensor's dtype, layout and storage entry; the zip archive
//! gives the entry's data offset. A tensor is taken only when it is contiguous (any offset into its
//! storage), which is what `state_dict()` saves; several names may share one storage (tied or
//! aliased weights), each read on its own.
//!
//! libtorch itself cannot read these files from C++: `torch::jit::_load_parameters` (tch's
//! `Tensor::loadz_multi`) rejects the `OrderedDict` every `state_dict()` is, and the pre-1.6 legacy
//! format (no zip) is refused here with the re-save command.

use std::collections::HashMap;
use std::fs::File;
use std::io::BufReader;
use std::path::Path;

use candle_core::pickle::{read_pth_tensor_info, TensorInfo};
use candle_core::DType;
use tch::Kind;

use crate::error::LoadError;

/// One tensor of a `torch.save` archive, not yet read.
#[derive(Debug, Clone, PartialEq)]
pub struct SavedTensor {
    pub name: String,
    /// absolute offset of its first byte in the file
    pub offset: u64,
    pub kind: Kind,
    pub shape: Vec<i64>,
}

/// The tensors of the `torch.save` archive `path` (a state dict: a dict of tensors at the top
/// level), or an error naming the file and why it cannot be read.
pub fn index(path: &Path) -> Result<Vec<SavedTensor>, LoadError> {
    let fail = |reason: String| LoadError::file(path, reason);
    let file = File::open(path).map_err(|e| fail(e.to_string()))?;
    let mut archive = match zip::ZipArchive::new(BufReader::new(file)) {
        Ok(archive) => archive,
        Err(e) => {
            return Err(fail(format!(
                "not a torch.save zip archive ({e}); a checkpoint saved in the legacy format \
                 (torch < 1.6, `_use_new_zipfile_serialization=False`) must be re-saved once with \
                 python -c \"import torch; torch.save(torch.load('{name}', map_location='cpu'), \
                 '{name}')\"",
                name = path.file_name().unwrap_or_default().to_string_lossy()
            )))
        }
    };
    // the reader is a pickle interpreter over untrusted bytes: a malformed file that trips it is
    // an error of this file, not a crash of the worker
    let infos = std::panic::catch_unwind(|| read_pth_tensor_info(path, false, None))
        .map_err(|_| fail("malformed data.pkl (the pickle reader gave up)".to_string()))?
        .map_err(|e| fail(format!("unreadable data.pkl: {e}")))?;
    if infos.is_empty() {
        return Err(fail(
            "no tensors at the top level of the saved object: herd reads a state dict \
             (`torch.save(model.state_dict(), f)`), not a pickled module or a nested dict"
                .to_string(),
        ));
    }
    let mut entries: HashMap<String, (u64, u64)> = HashMap::new();
    let mut tensors = Vec::with_capacity(infos.len());
    for info in infos {
        let (start, size) = match entries.get(&info.path) {
            Some(&entry) => entry,
            None => {
                let entry = storage_entry(&mut archive, &info)
                    .map_err(|reason| fail(format!("tensor {:?}: {reason}", info.name)))?;
                entries.insert(info.path.clone(), entry);
                entry
            }
        };
        let tensor = locate(&info, start, size)
            .map_err(|reason| fail(format!("tensor {:?}: {reason}", info.name)))?;
        tensors.push(tensor);
    }
    Ok(tensors)
}

/// The data offset and size of the storage entry `info` points into.
fn storage_entry(
    archive: &mut zip::ZipArchive<BufReader<File>>,
    info: &TensorInfo,
) -> Result<(u64, u64), String> {
    let entry = archive
        .by_name(&info.path)
        .map_err(|e| format!("storage entry {:?}: {e}", info.path))?;
    if entry.compression() != zip::CompressionMethod::Stored {
        return Err(format!(
            "storage entry {:?} is compressed ({:?}); torch.save stores storages uncompressed",
            info.path,
            entry.compression()
        ));
    }
    let start = entry
        .data_start()
        .ok_or_else(|| format!("storage entry {:?} has no data offset", info.path))?;
    Ok((start, entry.size()))
}

/// Where `info`'s bytes lie in a storage entry at `start` of `size` bytes.
fn locate(info: &TensorInfo, start: u64, size: u64) -> Result<SavedTensor, String> {
    let kind = match info.dtype {
        DType::BF16 => Kind::BFloat16,
        DType::F16 => Kind::Half,
        DType::F32 => Kind::Float,
        DType::F64 => Kind::Double,
        DType::I64 => Kind::Int64,
        other => return Err(format!("dtype {other:?} is not supported")),
    };
    let dims = info.layout.dims();
    let shape = dims
        .iter()
        .map(|&d| i64::try_from(d))
        .collect::<Result<Vec<i64>, _>>()
        .map_err(|_| format!("shape {dims:?} has a dimension past libtorch's i64 sizes"))?;
    // contiguous row-major strides, dimensions of size 1 taking any stride
    let mut expected = 1usize;
    for (&dim, &stride) in dims.iter().zip(info.layout.stride()).rev() {
        if dim != 1 && stride != expected {
            return Err(format!(
                "a non-contiguous view (shape {dims:?}, strides {:?}); save it with \
                 `.contiguous()`",
                info.layout.stride()
            ));
        }
        expected = expected.saturating_mul(dim);
    }
    let bytes = (expected as u64).checked_mul(info.dtype.size_in_bytes() as u64);
    let offset = info.layout.start_offset() as u64;
    match bytes.and_then(|b| b.checked_add(offset)) {
        Some(end) if end <= size => Ok(SavedTensor {
            name: info.name.clone(),
            offset: start + offset,
            kind,
            shape,
        }),
        _ => Err(format!(
            "shape {dims:?} at byte {offset} runs past its storage entry {:?} of {size} bytes",
            info.path
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_file_that_is_not_a_zip_archive_names_the_resave_command() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("legacy.pt");
        // the legacy format starts with a pickled magic number, not a zip header
        std::fs::write(&path, b"\x80\x02\x8a\x0alz\xfc\x9cF\xf9 j\xa8P\x19.").unwrap();
        let error = index(&path).unwrap_err().to_string();
        assert!(error.contains("legacy.pt"), "{error}");
        assert!(error.contains("not a torch.save zip archive"), "{error}");
        assert!(
            error.contains("torch.save(torch.load('legacy.pt'"),
            "{error}"
        );
    }
}
