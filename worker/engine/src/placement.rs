//! Where a model's layers live when it does not fit on one device: a split by layers into
//! consecutive stages, each on one device, planned from each layer's bytes (in the dtype it is
//! loaded in) and each device's free memory. The decoder runs each layer on its stage's device
//! and moves the hidden states between stages (`models::decoder`).
//!
//! The embeddings, the final norm and the head stay on the first device (where the batches are
//! built and the scores read), so the first stage is charged for them; the hidden states come
//! back to it after the last layer.

use std::fmt;
use std::ops::Range;

use tch::Device;

/// One device's share of the layers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Stage {
    pub device: Device,
    /// decoder layers `layers.start..layers.end` run here
    pub layers: Range<usize>,
}

/// A device and the bytes a model may take on it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DeviceMemory {
    pub device: Device,
    /// free bytes; `None` when unknown: a CUDA device whose memory could not be read is assumed to
    /// hold what it is given, and a list of CPU "devices" (a dry run of a split on a machine
    /// without GPUs) shares the model evenly
    pub free_bytes: Option<u64>,
}

/// How a model is loaded: over which devices, staging through how much host memory.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LoadOptions {
    /// the devices the layers may be split over, the scoring device first (fewer than two: the
    /// scoring device alone, as given to the load)
    pub devices: Vec<DeviceMemory>,
    /// bytes kept free on each device for activations when planning a split
    pub activation_reserve: u64,
    /// most host bytes a tensor is staged through while loading (`--host-memory`)
    pub host_budget: u64,
}

impl Default for LoadOptions {
    fn default() -> Self {
        Self {
            devices: Vec::new(),
            activation_reserve: DEFAULT_ACTIVATION_RESERVE,
            host_budget: crate::weights::DEFAULT_HOST_BUDGET,
        }
    }
}

/// Bytes each CUDA device keeps for activations when a model is split: 4 GiB, the transient
/// memory of a 13B model at 16,384 tokens plus margin.
pub const DEFAULT_ACTIVATION_RESERVE: u64 = 4 << 30;

/// The model does not fit on the devices given.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PlacementError {
    pub needed_bytes: u64,
    pub offered_bytes: u64,
    pub reason: String,
}

impl fmt::Display for PlacementError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "the model does not fit on the devices given: {} (it needs {:.2} GiB with the \
             activation reserve, the devices offer {:.2} GiB, short by {:.2} GiB)",
            self.reason,
            gib(self.needed_bytes),
            gib(self.offered_bytes),
            gib(self.needed_bytes.saturating_sub(self.offered_bytes))
        )
    }
}

impl std::error::Error for PlacementError {}

fn gib(bytes: u64) -> f64 {
    bytes as f64 / f64::from(1u32 << 30)
}

/// Splits `layer_bytes.len()` layers over `devices` (in order) into consecutive stages: each
/// device holds at most its free bytes less `reserve` (activations), the first device also the
/// embeddings and the head (`embed_bytes + head_bytes`). Layers fill each device in turn (the
/// fewest devices; a device that cannot take one more layer hands over to the next), so a model
/// that fits on the first device is one stage. Devices left over are not used.
pub fn plan_placement(
    layer_bytes: &[u64],
    embed_bytes: u64,
    head_bytes: u64,
    devices: &[(Device, u64)],
    reserve: u64,
) -> Result<Vec<Stage>, PlacementError> {
    let total = embed_bytes + head_bytes + layer_bytes.iter().sum::<u64>();
    let short = |reason: String, used: usize| PlacementError {
        needed_bytes: total + reserve * used.max(1) as u64,
        offered_bytes: devices
            .iter()
            .take(used.max(1))
            .fold(0u64, |sum, d| sum.saturating_add(d.1)),
        reason,
    };
    let Some(&(first, first_free)) = devices.first() else {
        return Err(short("no device given".to_string(), 0));
    };
    let capacity = |free: u64| free.saturating_sub(reserve);
    if embed_bytes + head_bytes > capacity(first_free) {
        return Err(PlacementError {
            needed_bytes: embed_bytes + head_bytes + reserve,
            offered_bytes: first_free,
            reason: format!(
                "the embeddings and head alone do not fit on {first:?} (the first device)"
            ),
        });
    }
    let mut stages: Vec<Stage> = Vec::new();
    let mut layer = 0;
    for (index, &(device, free)) in devices.iter().enumerate() {
        let mut used = if index == 0 {
            embed_bytes + head_bytes
        } else {
            0
        };
        let start = layer;
        while layer < layer_bytes.len() && used + layer_bytes[layer] <= capacity(free) {
            used += layer_bytes[layer];
            layer += 1;
        }
        if layer > start {
            stages.push(Stage {
                device,
                layers: start..layer,
            });
        }
        if layer == layer_bytes.len() {
            // a model without layers still runs its embeddings and head on the first device
            if stages.is_empty() {
                stages.push(Stage {
                    device: first,
                    layers: 0..0,
                });
            }
            return Ok(stages);
        }
    }
    Err(short(
        format!(
            "layers {}..{} ({} bytes each at most) find no room after {} device(s)",
            layer,
            layer_bytes.len(),
            layer_bytes[layer..].iter().max().copied().unwrap_or(0),
            devices.len()
        ),
        devices.len(),
    ))
}

/// Which device each decoder layer runs on: the stages of [`plan_placement`], or one device.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Placement {
    stages: Vec<Stage>,
    /// where everything outside the stages lives (embeddings, final norm, head)
    home: Device,
}

impl Placement {
    /// Every layer on `device`.
    pub fn single(device: Device) -> Self {
        Self {
            stages: Vec::new(),
            home: device,
        }
    }

    /// `stages` (from [`plan_placement`]; the first stage's device is the home).
    pub fn staged(stages: Vec<Stage>) -> Self {
        let home = stages.first().map_or(Device::Cpu, |s| s.device);
        Self { stages, home }
    }

    pub fn home(&self) -> Device {
        self.home
    }

    /// The device of decoder layer `layer` (the home when no stage names it).
    pub fn device_of(&self, layer: usize) -> Device {
        self.stages
            .iter()
            .find(|s| s.layers.contains(&layer))
            .map_or(self.home, |s| s.device)
    }

    /// More than one stage: the model is split.
    pub fn is_split(&self) -> bool {
        self.stages.len() > 1
    }

    pub fn stages(&self) -> &[Stage] {
        &self.stages
    }
}

/// The budgets [`plan_placement`] works with: each device's free bytes, unbounded where unknown.
pub fn budgets(devices: &[DeviceMemory]) -> Vec<(Device, u64)> {
    devices
        .iter()
        .map(|d| (d.device, d.free_bytes.unwrap_or(u64::MAX)))
        .collect()
}

/// A dry run of a split (CPU "devices", whose memory is the host's): the layers shared out over
/// `devices` evenly by bytes, each layer to the device its middle byte falls on, so every device
/// gets layers when there are at least as many layers as devices.
pub fn split_evenly(layer_bytes: &[u64], devices: &[Device]) -> Vec<Stage> {
    let total: u64 = layer_bytes.iter().sum();
    let n = devices.len().max(1) as u128;
    // (device index, stage): consecutive layers of one index form a stage (the devices may
    // repeat, as in a CPU dry run)
    let mut stages: Vec<(usize, Stage)> = Vec::new();
    let mut before = 0u64;
    for (layer, &bytes) in layer_bytes.iter().enumerate() {
        // twice the middle byte's offset, over twice the total, times the device count
        let middle = u128::from(2 * before + bytes);
        let slot = if total == 0 {
            (layer as u128 * n) / layer_bytes.len() as u128
        } else {
            middle * n / (2 * u128::from(total))
        };
        let index = (slot as usize).min(devices.len() - 1);
        before += bytes;
        match stages.last_mut() {
            Some((last, stage)) if *last == index => stage.layers.end = layer + 1,
            _ => stages.push((
                index,
                Stage {
                    device: devices[index],
                    layers: layer..layer + 1,
                },
            )),
        }
    }
    stages.into_iter().map(|(_, stage)| stage).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const GB: u64 = 1_000_000_000;

    #[test]
    fn a_model_that_fits_one_device_is_one_stage() {
        let stages = plan_placement(
            &[GB; 32],
            GB,
            GB / 2,
            &[(Device::Cuda(0), 80 * GB), (Device::Cuda(1), 80 * GB)],
            4 * GB,
        )
        .unwrap();
        assert_eq!(
            stages,
            vec![Stage {
                device: Device::Cuda(0),
                layers: 0..32
            }]
        );
    }

    #[test]
    fn a_70b_shape_splits_over_two_80gb_devices_by_bytes() {
        // Llama-2-70B in bf16: 80 layers of 1.71 GB (hidden 8192, intermediate 28672, 8 kv
        // heads), embeddings and a reward head 1.05 GB
        let layer = 2 * (2 * 8192 * 8192 + 2 * 8192 * 1024 + 3 * 8192 * 28672 + 2 * 8192);
        let embed = 2 * 32000 * 8192;
        let stages = plan_placement(
            &[layer; 80],
            embed,
            2 * 8192,
            &[(Device::Cuda(0), 80 * GB), (Device::Cuda(1), 80 * GB)],
            4 * GB,
        )
        .unwrap();
        assert_eq!(stages.len(), 2);
        assert_eq!(stages[0].device, Device::Cuda(0));
        assert_eq!(stages[1].device, Device::Cuda(1));
        // consecutive and complete
        assert_eq!(stages[0].layers.start, 0);
        assert_eq!(stages[0].layers.end, stages[1].layers.start);
        assert_eq!(stages[1].layers.end, 80);
        // the first device is filled to its budget: one more layer would not fit
        let first = embed + 2 * 8192 + layer * stages[0].layers.len() as u64;
        assert!(first <= 76 * GB && first + layer > 76 * GB, "{first}");
        let placement = Placement::staged(stages.clone());
        assert!(placement.is_split());
        assert_eq!(placement.home(), Device::Cuda(0));
        assert_eq!(placement.device_of(0), Device::Cuda(0));
        assert_eq!(placement.device_of(79), Device::Cuda(1));
        assert_eq!(placement.device_of(stages[1].layers.start), Device::Cuda(1));
    }

    #[test]
    fn a_model_too_big_names_the_shortfall() {
        let error = plan_placement(
            &[2 * GB; 80],
            GB,
            0,
            &[(Device::Cuda(0), 80 * GB), (Device::Cuda(1), 80 * GB)],
            4 * GB,
        )
        .unwrap_err();
        assert_eq!(error.needed_bytes, 161 * GB + 8 * GB);
        assert_eq!(error.offered_bytes, 160 * GB);
        let message = error.to_string();
        assert!(message.contains("does not fit"), "{message}");
        assert!(message.contains("layers 75..80"), "{message}");
        assert!(message.contains("short by"), "{message}");
        // the embeddings alone
        let error = plan_placement(&[GB], 10 * GB, 0, &[(Device::Cuda(0), 8 * GB)], 0).unwrap_err();
        assert!(
            error.to_string().contains("embeddings and head alone"),
            "{error}"
        );
        assert!(plan_placement(&[GB], 0, 0, &[], 0).is_err());
    }

    #[test]
    fn cpu_dry_runs_share_the_layers_evenly() {
        let two = [Device::Cpu, Device::Cpu];
        let stages = split_evenly(&[10; 8], &two);
        assert_eq!(
            stages.iter().map(|s| s.layers.clone()).collect::<Vec<_>>(),
            [0..4, 4..8]
        );
        // two layers over two devices: one each (the tiny fixtures)
        let stages = split_evenly(&[7, 7], &two);
        assert_eq!(
            stages.iter().map(|s| s.layers.clone()).collect::<Vec<_>>(),
            [0..1, 1..2]
        );
        // by bytes, not by count
        let stages = split_evenly(&[30, 5, 5, 5, 5], &two);
        assert_eq!(
            stages.iter().map(|s| s.layers.clone()).collect::<Vec<_>>(),
            [0..1, 1..5]
        );
        // three devices, five layers: consecutive, complete
        let stages = split_evenly(&[1; 5], &[Device::Cpu; 3]);
        assert_eq!(
            stages.iter().map(|s| s.layers.clone()).collect::<Vec<_>>(),
            [0..2, 2..3, 3..5]
        );
        // a CUDA device whose memory is unknown takes everything (as before placement)
        let unknown = DeviceMemory {
            device: Device::Cuda(0),
            free_bytes: None,
        };
        assert_eq!(budgets(&[unknown]), vec![(Device::Cuda(0), u64::MAX)]);
    }
}
