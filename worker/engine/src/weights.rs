//! Reads safetensors weights into libtorch tensors on the target device and dtype, one tensor
//! at a time from a memory map (peak host memory: one tensor, not the checkpoint).

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use safetensors::{Dtype, SafeTensors};
use tch::{Device, Kind, Tensor};

use crate::error::LoadError;

/// The weights of a model, taken out by name as the model is built.
pub struct Weights {
    tensors: HashMap<String, Tensor>,
}

fn kind_of(dtype: Dtype) -> Option<Kind> {
    Some(match dtype {
        Dtype::BF16 => Kind::BFloat16,
        Dtype::F16 => Kind::Half,
        Dtype::F32 => Kind::Float,
        Dtype::F64 => Kind::Double,
        _ => return None,
    })
}

impl Weights {
    pub fn load(files: &[PathBuf], device: Device, kind: Kind) -> Result<Self, LoadError> {
        let mut tensors = HashMap::new();
        for file in files {
            load_file(file, device, kind, &mut tensors)?;
        }
        Ok(Self { tensors })
    }

    pub fn from_tensors(tensors: HashMap<String, Tensor>) -> Self {
        Self { tensors }
    }

    /// Removes the tensor `name`, checking its shape.
    pub fn take(&mut self, name: &str, shape: &[i64]) -> Result<Tensor, LoadError> {
        let tensor = self
            .tensors
            .remove(name)
            .ok_or_else(|| LoadError::tensor(name, "missing from the checkpoint"))?;
        if tensor.size() != shape {
            return Err(LoadError::tensor(
                name,
                format!(
                    "shape {:?} does not match the config's {:?}",
                    tensor.size(),
                    shape
                ),
            ));
        }
        Ok(tensor)
    }

    /// Names left over once a model is built (excluding buffers transformers used to save).
    pub fn unused(&self) -> Vec<String> {
        let mut names: Vec<String> = self
            .tensors
            .keys()
            .filter(|name| !name.ends_with("rotary_emb.inv_freq"))
            .cloned()
            .collect();
        names.sort();
        names
    }
}

fn load_file(
    path: &Path,
    device: Device,
    kind: Kind,
    into: &mut HashMap<String, Tensor>,
) -> Result<(), LoadError> {
    let file = std::fs::File::open(path).map_err(|e| LoadError::file(path, e))?;
    // SAFETY: the map is read-only and only read while `file` is open in this function; a
    // checkpoint rewritten underneath a running worker is outside what herd supports.
    let mmap = unsafe { memmap2::Mmap::map(&file) }.map_err(|e| LoadError::file(path, e))?;
    let st = SafeTensors::deserialize(&mmap)
        .map_err(|e| LoadError::file(path, format!("invalid safetensors: {e}")))?;
    for (name, view) in st.tensors() {
        let stored = kind_of(view.dtype()).ok_or_else(|| {
            LoadError::file(
                path,
                format!("tensor {name:?}: dtype {:?} is not supported", view.dtype()),
            )
        })?;
        let shape: Vec<i64> = view.shape().iter().map(|&d| d as i64).collect();
        let host = Tensor::f_from_data_size(view.data(), &shape, stored)
            .map_err(|e| LoadError::file(path, format!("tensor {name:?}: {e}")))?;
        let tensor = host.to_device(device).to_kind(kind);
        if into.insert(name.clone(), tensor).is_some() {
            return Err(LoadError::file(
                path,
                format!("tensor {name:?} appears in more than one shard"),
            ));
        }
    }
    Ok(())
}
