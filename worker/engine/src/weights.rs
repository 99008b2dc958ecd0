//! Reads safetensors and `torch.save` weights ([`crate::torch_save`]) into libtorch tensors on
//! their device and dtype, one tensor at a time as the model takes it, and hands them to the
//! model through scopes: like candle's `VarBuilder`, each component loads itself from the scope
//! it is given (`w.pp("self_attn").pp("q_proj").take("weight", shape)`).
//!
//! Host memory stays bounded: opening a checkpoint reads only the files' headers; a tensor is read
//! with positioned reads (no memory map, whose pages would stay resident and count against the
//! process) either straight into its final CPU tensor (same dtype) or through one reused staging
//! buffer of at most the host budget (`--host-memory`), copied chunk by chunk into the
//! destination on its device with the dtype conversion fused into the copy. On CUDA the staging
//! buffer is pinned. The page cache the reads go through is the kernel's, not the process's.

use std::cell::RefCell;
use std::collections::HashMap;
use std::fmt::Display;
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use safetensors::{Dtype, SafeTensors};
use tch::{Device, Kind, Tensor};

use crate::error::LoadError;
use crate::placement::Placement;

/// The default host budget for staging (`--host-memory`): 256 MiB.
pub const DEFAULT_HOST_BUDGET: u64 = 256 << 20;

/// A tensor not yet read: where its bytes are in which file.
struct Stored {
    file: usize,
    /// absolute offset of the first byte in the file
    offset: u64,
    dtype: Kind,
    shape: Vec<i64>,
}

enum Slot {
    Stored(Stored),
    Loaded(Tensor),
}

/// The weights of a model, taken out by name as the model is built: what is left afterwards was
/// not used.
pub struct Weights {
    slots: RefCell<HashMap<String, Slot>>,
    files: Vec<(PathBuf, File)>,
    /// the dtype floating-point tensors are loaded in (integer buffers keep theirs)
    kind: Kind,
    /// which device each decoder layer goes to; everything else goes to its home
    placement: Placement,
    /// most bytes of host memory a tensor passes through on its way (the staging buffer)
    host_budget: u64,
    staging: RefCell<Option<Tensor>>,
}

/// A scope of a model's weights: the names under a dotted prefix, loaded onto one device.
#[derive(Clone)]
pub struct VarBuilder<'a> {
    weights: &'a Weights,
    prefix: String,
    device: Device,
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
            device: self.device,
        }
    }

    /// This scope with its tensors loaded onto `device`.
    pub fn on(&self, device: Device) -> Self {
        VarBuilder {
            device,
            ..self.clone()
        }
    }

    /// The device this scope's tensors are loaded onto.
    pub fn device(&self) -> Device {
        self.device
    }

    /// Which device each decoder layer runs on.
    pub fn placement(&self) -> &Placement {
        &self.weights.placement
    }

    /// Removes the tensor `name` of this scope, checking its shape.
    pub fn take(&self, name: &str, shape: &[i64]) -> Result<Tensor, LoadError> {
        self.weights.take(&self.pp(name).prefix, shape, self.device)
    }

    /// The shape of the tensor `name` of this scope, if the checkpoint (still) holds it: for
    /// heads whose widths only their tensors record (LDL-Reward's side files).
    pub fn shape(&self, name: &str) -> Option<Vec<i64>> {
        let full = self.pp(name).prefix;
        self.weights
            .slots
            .borrow()
            .get(&full)
            .map(|slot| match slot {
                Slot::Loaded(t) => t.size(),
                Slot::Stored(s) => s.shape.clone(),
            })
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

fn is_integer(kind: Kind) -> bool {
    matches!(kind, Kind::Int64 | Kind::Int)
}

impl Weights {
    /// The tensors of safetensors `files`, read when taken: floating-point ones in `kind` onto
    /// `device` (decoder layers: onto the device [`Weights::with_placement`] gives them).
    pub fn load(files: &[PathBuf], device: Device, kind: Kind) -> Result<Self, LoadError> {
        let mut slots = HashMap::new();
        let mut opened = Vec::new();
        for (index, path) in files.iter().enumerate() {
            let file = index_file(path, index, &mut slots)?;
            opened.push((path.clone(), file));
        }
        Ok(Self {
            slots: RefCell::new(slots),
            files: opened,
            kind,
            placement: Placement::single(device),
            host_budget: DEFAULT_HOST_BUDGET,
            staging: RefCell::new(None),
        })
    }

    /// Tensors already in memory (an EasyLM checkpoint, renamed InternLM2 weights), taken as
    /// they are (moved to a scope's device when it differs).
    pub fn from_tensors(tensors: HashMap<String, Tensor>) -> Self {
        let device = tensors.values().next().map_or(Device::Cpu, Tensor::device);
        Self {
            slots: RefCell::new(
                tensors
                    .into_iter()
                    .map(|(name, tensor)| (name, Slot::Loaded(tensor)))
                    .collect(),
            ),
            files: Vec::new(),
            kind: Kind::Float,
            placement: Placement::single(device),
            host_budget: DEFAULT_HOST_BUDGET,
            staging: RefCell::new(None),
        }
    }

    /// Adds tensors already in memory (a head's side files) beside the checkpoint's own.
    pub fn with_loaded(self, tensors: HashMap<String, Tensor>) -> Self {
        self.slots
            .borrow_mut()
            .extend(tensors.into_iter().map(|(name, t)| (name, Slot::Loaded(t))));
        self
    }

    /// Decoder layers go where `placement` puts them, the rest to its home device.
    pub fn with_placement(mut self, placement: Placement) -> Self {
        self.placement = placement;
        self
    }

    /// At most `bytes` of host memory staged per tensor (at least one element).
    pub fn with_host_budget(mut self, bytes: u64) -> Self {
        self.host_budget = bytes.max(1);
        self
    }

    /// Each tensor's name and its bytes once loaded (floating-point ones in the load dtype), for
    /// planning where the layers go.
    pub fn sizes(&self) -> Vec<(String, u64)> {
        self.slots
            .borrow()
            .iter()
            .map(|(name, slot)| {
                let bytes = match slot {
                    Slot::Loaded(t) => (t.numel() * t.kind().elt_size_in_bytes()) as u64,
                    Slot::Stored(s) => {
                        let kind = if is_integer(s.dtype) {
                            s.dtype
                        } else {
                            self.kind
                        };
                        s.shape.iter().product::<i64>() as u64 * kind.elt_size_in_bytes() as u64
                    }
                };
                (name.clone(), bytes)
            })
            .collect()
    }

    /// Every tensor by name, for a family whose checkpoint names and fuses its weights its own way
    /// (`models::internlm2`) to rename them before the model takes them: each read onto the home
    /// device.
    pub fn into_tensors(self) -> Result<HashMap<String, Tensor>, LoadError> {
        let home = self.placement.home();
        let names: Vec<String> = self.slots.borrow().keys().cloned().collect();
        let mut out = HashMap::new();
        for name in names {
            let tensor = self.take_any(&name, home)?;
            out.insert(name, tensor);
        }
        Ok(out)
    }

    /// The scope every tensor name starts from, on the home device.
    pub fn root(&self) -> VarBuilder<'_> {
        VarBuilder {
            weights: self,
            prefix: String::new(),
            device: self.placement.home(),
        }
    }

    /// Removes the tensor `name` (its full name), checking its shape, onto `device`.
    fn take(&self, name: &str, shape: &[i64], device: Device) -> Result<Tensor, LoadError> {
        let stored = match self.slots.borrow().get(name) {
            None => return Err(LoadError::tensor(name, "missing from the checkpoint")),
            Some(Slot::Loaded(t)) => t.size(),
            Some(Slot::Stored(s)) => s.shape.clone(),
        };
        if stored != shape {
            return Err(LoadError::tensor(
                name,
                format!("shape {stored:?} does not match the config's {shape:?}"),
            ));
        }
        self.take_any(name, device)
    }

    /// Removes the tensor `name`, whatever its shape, onto `device`.
    fn take_any(&self, name: &str, device: Device) -> Result<Tensor, LoadError> {
        let slot = self
            .slots
            .borrow_mut()
            .remove(name)
            .ok_or_else(|| LoadError::tensor(name, "missing from the checkpoint"))?;
        match slot {
            Slot::Loaded(tensor) if tensor.device() == device => Ok(tensor),
            Slot::Loaded(tensor) => tensor
                .f_to_device(device)
                .map_err(|e| LoadError::tensor(name, e)),
            Slot::Stored(stored) => self.read(name, &stored, device),
        }
    }

    /// Reads `stored` into a new tensor on `device` (see the module's doc for the host memory).
    fn read(&self, name: &str, stored: &Stored, device: Device) -> Result<Tensor, LoadError> {
        let (path, file) = &self.files[stored.file];
        let fail = |e: &dyn Display| LoadError::file(path, format!("tensor {name:?}: {e}"));
        let target = if is_integer(stored.dtype) {
            stored.dtype
        } else {
            self.kind
        };
        let dest =
            Tensor::f_empty(stored.shape.as_slice(), (target, device)).map_err(|e| fail(&e))?;
        let numel = dest.numel();
        if numel == 0 {
            return Ok(dest);
        }
        let elt = stored.dtype.elt_size_in_bytes();
        if device == Device::Cpu && target == stored.dtype {
            // SAFETY: `dest` is a fresh contiguous CPU tensor of exactly `numel * elt` bytes,
            // owned here and not aliased while the slice lives
            let bytes = unsafe {
                std::slice::from_raw_parts_mut(dest.data_ptr().cast::<u8>(), numel * elt)
            };
            file.read_exact_at(bytes, stored.offset)
                .map_err(|e| fail(&e))?;
            return Ok(dest);
        }
        let chunk = ((self.host_budget as usize) / elt).clamp(1, numel);
        let staging = self.staging(chunk * elt, device).map_err(|e| fail(&e))?;
        let flat = dest.view([-1]);
        let mut start = 0;
        while start < numel {
            let count = chunk.min(numel - start);
            // SAFETY: the staging buffer holds at least `chunk * elt` bytes and is only used here;
            // `copy_` below is synchronous (non_blocking false), so the buffer is free again
            // when it returns
            let bytes = unsafe {
                std::slice::from_raw_parts_mut(staging.data_ptr().cast::<u8>(), count * elt)
            };
            file.read_exact_at(bytes, stored.offset + (start * elt) as u64)
                .map_err(|e| fail(&e))?;
            let source = staging
                .narrow(0, 0, (count * elt) as i64)
                .view_dtype(stored.dtype);
            flat.narrow(0, start as i64, count as i64)
                .f_copy_(&source)
                .map_err(|e| fail(&e))?;
            start += count;
        }
        drop(flat);
        Ok(dest)
    }

    /// The reused host buffer of at least `bytes` (pinned when the tensors go to CUDA).
    fn staging(&self, bytes: usize, device: Device) -> Result<Tensor, tch::TchError> {
        let mut staging = self.staging.borrow_mut();
        let fits = staging.as_ref().is_some_and(|t| {
            t.numel() >= bytes && (!device.is_cuda() || t.f_is_pinned(device).unwrap_or(false))
        });
        if !fits {
            // the old buffer goes first, so two never sit in memory together
            *staging = None;
            let buffer = Tensor::f_empty([bytes as i64], (Kind::Uint8, Device::Cpu))?;
            *staging = Some(if device.is_cuda() {
                buffer.f_pin_memory(device)?
            } else {
                buffer
            });
        }
        Ok(staging
            .as_ref()
            .map(Tensor::shallow_clone)
            .unwrap_or_else(|| unreachable!("the staging buffer was just made")))
    }

    /// Names left over once a model is built (excluding buffers transformers used to save).
    pub fn unused(&self) -> Vec<String> {
        let mut names: Vec<String> = self
            .slots
            .borrow()
            .keys()
            .filter(|name| !name.ends_with("rotary_emb.inv_freq"))
            .cloned()
            .collect();
        names.sort();
        names
    }
}

/// Indexes the tensors of `path` into `slots` (tensor `index` of the checkpoint's files): a
/// `torch.save` archive (`.bin`, `.pt`, `.pth`) or safetensors; only headers are read.
fn index_file(
    path: &Path,
    index: usize,
    slots: &mut HashMap<String, Slot>,
) -> Result<File, LoadError> {
    let file = File::open(path).map_err(|e| LoadError::file(path, e))?;
    let pickled = path
        .extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| matches!(e, "bin" | "pt" | "pth"));
    let stored = if pickled {
        torch_save_index(path, index)?
    } else {
        safetensors_index(path, &file, index)?
    };
    for (name, stored) in stored {
        if slots.insert(name.clone(), Slot::Stored(stored)).is_some() {
            return Err(LoadError::file(
                path,
                format!("tensor {name:?} appears in more than one shard"),
            ));
        }
    }
    Ok(file)
}

/// The tensors of `torch.save` archive `path` (tensor `index` of the checkpoint's files).
#[cfg(feature = "torch-save")]
fn torch_save_index(path: &Path, index: usize) -> Result<Vec<(String, Stored)>, LoadError> {
    Ok(crate::torch_save::index(path)?
        .into_iter()
        .map(|t| {
            let stored = Stored {
                file: index,
                offset: t.offset,
                dtype: t.kind,
                shape: t.shape,
            };
            (t.name, stored)
        })
        .collect())
}

/// A build without the `torch-save` feature (the fuzz targets') reads safetensors only.
#[cfg(not(feature = "torch-save"))]
fn torch_save_index(path: &Path, _index: usize) -> Result<Vec<(String, Stored)>, LoadError> {
    Err(LoadError::file(
        path,
        "this build of herd-engine reads no torch.save checkpoints (feature `torch-save` off)",
    ))
}

/// The tensors of safetensors file `path` (opened as `file`); only the header's pages are touched.
fn safetensors_index(
    path: &Path,
    file: &File,
    index: usize,
) -> Result<Vec<(String, Stored)>, LoadError> {
    // SAFETY: the map is read-only and dropped at the end of this function; only the header is
    // read through it (its data pages are never touched, so they never become resident).
    let mmap = unsafe { memmap2::Mmap::map(file) }.map_err(|e| LoadError::file(path, e))?;
    let (header, metadata) = SafeTensors::read_metadata(&mmap)
        .map_err(|e| LoadError::file(path, format!("invalid safetensors: {e}")))?;
    let data_start = 8 + header as u64;
    let mut stored = Vec::new();
    for (name, info) in metadata.tensors() {
        let dtype = kind_of(info.dtype).ok_or_else(|| {
            LoadError::file(
                path,
                format!("tensor {name:?}: dtype {:?} is not supported", info.dtype),
            )
        })?;
        // libtorch sizes are i64: a dimension past it is refused here, at indexing, so a tensor
        // the model never takes cannot carry one either
        let shape = info
            .shape
            .iter()
            .map(|&d| i64::try_from(d))
            .collect::<Result<Vec<i64>, _>>()
            .map_err(|_| {
                LoadError::file(
                    path,
                    format!(
                        "tensor {name:?}: shape {:?} has a dimension past libtorch's i64 sizes",
                        info.shape
                    ),
                )
            })?;
        let tensor = Stored {
            file: index,
            offset: data_start + info.data_offsets.0 as u64,
            dtype,
            shape,
        };
        stored.push((name.clone(), tensor));
    }
    Ok(stored)
}

/// This process's peak resident memory (`VmHWM` of /proc/self/status) in bytes, where the
/// system reports it.
pub fn peak_host_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: u64 = line
        .trim_start_matches("VmHWM:")
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()?;
    Some(kib * 1024)
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
        // a wrong shape leaves the tensor where it was
        assert_eq!(weights.unused(), vec!["extra", "score.weight"]);
        assert!(w.pp("score").take("weight", &[2, 3]).is_ok());
        assert_eq!(weights.unused(), vec!["extra".to_string()]);
    }

    /// A safetensors file of `tensors` (name, dtype, shape, little-endian bytes).
    fn write_file(path: &Path, tensors: &[(&str, Dtype, Vec<usize>, Vec<u8>)]) {
        let views: Vec<(String, safetensors::tensor::TensorView)> = tensors
            .iter()
            .map(|(name, dtype, shape, data)| {
                let view =
                    safetensors::tensor::TensorView::new(*dtype, shape.clone(), data).unwrap();
                (name.to_string(), view)
            })
            .collect();
        safetensors::serialize_to_file(views, None, path).unwrap();
    }

    #[test]
    fn reads_each_tensor_into_its_dtype_through_any_staging_size() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("model.safetensors");
        let values: Vec<f32> = (0..37).map(|i| i as f32 * 0.37 - 5.0).collect();
        let reference = Tensor::from_slice(&values).view([37]);
        let bf16 = reference.to_kind(Kind::BFloat16);
        let mut bf16_bytes = vec![0u8; 37 * 2];
        bf16.copy_data_u8(&mut bf16_bytes, 37);
        let f32_bytes: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
        let count: Vec<u8> = 41i64.to_le_bytes().to_vec();
        write_file(
            &path,
            &[
                ("a", Dtype::BF16, vec![37], bf16_bytes),
                ("b", Dtype::F32, vec![37], f32_bytes),
                ("n", Dtype::I64, vec![1], count),
                ("empty", Dtype::BF16, vec![0, 4], Vec::new()),
            ],
        );
        let files = [path.clone()];
        for kind in [Kind::Float, Kind::BFloat16, Kind::Half] {
            // budgets below one element, of a few elements, and of everything
            for budget in [1, 6, 64, DEFAULT_HOST_BUDGET] {
                let weights = Weights::load(&files, Device::Cpu, kind)
                    .unwrap()
                    .with_host_budget(budget);
                let w = weights.root();
                let a = w.take("a", &[37]).unwrap();
                let b = w.take("b", &[37]).unwrap();
                assert_eq!(a.kind(), kind);
                assert_eq!(b.kind(), kind);
                // the conversion is libtorch's cast, as `to_kind` of the stored tensor
                assert!(a.equal(&bf16.to_kind(kind)), "{kind:?} {budget}");
                assert!(b.equal(&reference.to_kind(kind)), "{kind:?} {budget}");
                let n = w.take("n", &[1]).unwrap();
                assert_eq!((n.kind(), n.int64_value(&[0])), (Kind::Int64, 41));
                assert_eq!(w.take("empty", &[0, 4]).unwrap().numel(), 0);
                assert!(weights.unused().is_empty());
            }
        }
        // sizes in the load dtype, integers in theirs
        let weights = Weights::load(&files, Device::Cpu, Kind::Float).unwrap();
        let mut sizes = weights.sizes();
        sizes.sort();
        let expected = [("a", 148), ("b", 148), ("empty", 0), ("n", 8)];
        let expected: Vec<(String, u64)> =
            expected.iter().map(|(n, b)| (n.to_string(), *b)).collect();
        assert_eq!(sizes, expected);
        // a file that is not safetensors is named
        let broken = dir.path().join("broken.safetensors");
        std::fs::write(&broken, b"not a safetensors file").unwrap();
        let error = Weights::load(&[broken], Device::Cpu, Kind::Float)
            .err()
            .unwrap()
            .to_string();
        assert!(error.contains("broken.safetensors"), "{error}");
        assert!(error.contains("invalid safetensors"), "{error}");
    }

    #[test]
    fn scopes_load_onto_their_device() {
        let tensors = [(
            "model.layers.0.w".to_string(),
            Tensor::ones([2], (Kind::Float, Device::Cpu)),
        )]
        .into_iter()
        .collect();
        let weights = Weights::from_tensors(tensors);
        let w = weights.root().pp("model").on(Device::Cpu);
        assert_eq!(w.device(), Device::Cpu);
        assert_eq!(w.pp("layers").device(), Device::Cpu);
        assert!(!w.placement().is_split());
        assert_eq!(
            w.pp("layers").pp(0).take("w", &[2]).unwrap().device(),
            Device::Cpu
        );
    }
}
