//! Reads safetensors weights into libtorch tensors on the target device and dtype, one tensor
//! at a time from a memory map (peak host memory: one tensor, not the checkpoint), and hands them
//! to the model through scopes: like candle's `VarBuilder`, each component loads itself from the
//! scope it is given (`w.pp("self_attn").pp("q_proj").take("weight", shape)`).

use std::cell::RefCell;
use std::collections::HashMap;
use std::fmt::Display;
use std::path::{Path, PathBuf};

use safetensors::{Dtype, SafeTensors};
use tch::{Device, Kind, Tensor};

use crate::error::LoadError;

/// The weights of a model, taken out by name as the model is built: what is left afterwards was
/// not used.
pub struct Weights {
    tensors: RefCell<HashMap<String, Tensor>>,
}

/// A scope of a model's weights: the names under a dotted prefix.
#[derive(Clone)]
pub struct VarBuilder<'a> {
    weights: &'a Weights,
    prefix: String,
}

impl VarBuilder<'_> {
    /// The scope `name` below this one (`model` -> `model.layers` -> `model.layers.0`).
    pub fn pp(&self, name: impl Display) -> Self {
        VarBuilder {
            weights: self.weights,
            prefix: if self.prefix.is_empty() {
                name.to_string()
            } else {
                format!("{}.{name}", self.prefix)
            },
        }
    }

    /// Removes the tensor `name` of this scope, checking its shape.
    pub fn take(&self, name: &str, shape: &[i64]) -> Result<Tensor, LoadError> {
        self.weights.take(&self.pp(name).prefix, shape)
    }

    /// The shape of the tensor `name` of this scope, if the checkpoint (still) holds it: for
    /// heads whose widths only their tensors record (LDL-Reward's side files).
    pub fn shape(&self, name: &str) -> Option<Vec<i64>> {
        let full = self.pp(name).prefix;
        self.weights.tensors.borrow().get(&full).map(Tensor::size)
    }
}

fn kind_of(dtype: Dtype) -> Option<Kind> {
    Some(match dtype {
        Dtype::BF16 => Kind::BFloat16,
        Dtype::F16 => Kind::Half,
        Dtype::F32 => Kind::Float,
        Dtype::F64 => Kind::Double,
        // integer buffers (safe-rlhf's `normalizer.count`, BatchNorm's `num_batches_tracked`) keep
        // their dtype
        Dtype::I64 => Kind::Int64,
        Dtype::I32 => Kind::Int,
        _ => return None,
    })
}

impl Weights {
    pub fn load(files: &[PathBuf], device: Device, kind: Kind) -> Result<Self, LoadError> {
        let mut tensors = HashMap::new();
        for file in files {
            load_file(file, device, kind, &mut tensors)?;
        }
        Ok(Self::from_tensors(tensors))
    }

    pub fn from_tensors(tensors: HashMap<String, Tensor>) -> Self {
        Self {
            tensors: RefCell::new(tensors),
        }
    }

    /// Every tensor by name, for a family whose checkpoint names and fuses its weights its own way
    /// (`models::internlm2`) to rename them before the model takes them.
    pub fn into_tensors(self) -> HashMap<String, Tensor> {
        self.tensors.into_inner()
    }

    /// The scope every tensor name starts from.
    pub fn root(&self) -> VarBuilder<'_> {
        VarBuilder {
            weights: self,
            prefix: String::new(),
        }
    }

    /// Removes the tensor `name` (its full name), checking its shape.
    fn take(&self, name: &str, shape: &[i64]) -> Result<Tensor, LoadError> {
        let tensor = self
            .tensors
            .borrow_mut()
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
            .borrow()
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
        let tensor = match stored {
            Kind::Int64 | Kind::Int => host.to_device(device),
            _ => host.to_device(device).to_kind(kind),
        };
        if into.insert(name.clone(), tensor).is_some() {
            return Err(LoadError::file(
                path,
                format!("tensor {name:?} appears in more than one shard"),
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scopes_take_tensors_by_their_full_dotted_name() {
        let tensors = [
            "model.layers.0.self_attn.q_proj.weight",
            "score.weight",
            "extra",
        ]
        .into_iter()
        .map(|name| {
            (
                name.to_string(),
                Tensor::zeros([2, 3], (Kind::Float, Device::Cpu)),
            )
        })
        .collect();
        let weights = Weights::from_tensors(tensors);
        let w = weights.root();
        let layer = w.pp("model").pp("layers").pp(0);
        let q = layer.pp("self_attn").pp("q_proj").take("weight", &[2, 3]);
        assert_eq!(q.unwrap().size(), vec![2, 3]);
        // taken once; a wrong shape or a missing tensor is named in full
        let again = layer.pp("self_attn").pp("q_proj").take("weight", &[2, 3]);
        let error = again.err().unwrap().to_string();
        assert!(
            error.contains("\"model.layers.0.self_attn.q_proj.weight\""),
            "{error}"
        );
        assert!(error.contains("missing"), "{error}");
        let error = w
            .pp("score")
            .take("weight", &[1, 3])
            .err()
            .unwrap()
            .to_string();
        assert!(
            error.contains("\"score.weight\"") && error.contains("[1, 3]"),
            "{error}"
        );
        assert_eq!(weights.unused(), vec!["extra".to_string()]);
    }
}
