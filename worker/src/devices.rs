//! `--devices` and `--host-memory`: which devices a model may be split over by layers (the
//! scoring device first) and how much host memory a load stages through.

use clap::Args;
use tch::Device;

use crate::easylm_cli::parse_bytes;
use herd_engine::device::DeviceChoice;
use herd_engine::placement::{DeviceMemory, LoadOptions, DEFAULT_ACTIVATION_RESERVE};
use herd_engine::weights::DEFAULT_HOST_BUDGET;

#[derive(Args, Clone, Debug)]
pub struct PlacementArgs {
    /// devices a model too big for one is split over by layers, e.g. cuda:0,cuda:1 (default:
    /// every visible GPU when --device is auto and CUDA is present, else --device alone). The
    /// first is the scoring device. `cpu,cpu` splits a model over CPU "devices" evenly: a dry run
    /// of the split for testing, with the scores of the unsplit model
    #[arg(long, value_delimiter = ',', value_name = "LIST")]
    pub devices: Option<Vec<DeviceChoice>>,
    /// most host memory a tensor passes through while a model loads (e.g. 256MiB): weights are
    /// read from the file into their device through one buffer of at most this size, so the
    /// checkpoint never sits in host memory beside the model
    #[arg(long, value_parser = parse_bytes, default_value_t = DEFAULT_HOST_BUDGET)]
    pub host_memory: u64,
    /// most memory the model may take on each of --devices (e.g. 40GB; default: each GPU's free
    /// memory). With CPU devices it sets each one's share, so a split can be rehearsed on the CPU
    /// as it would be planned on GPUs of that size
    #[arg(long, value_parser = parse_bytes, value_name = "BYTES")]
    pub device_memory: Option<u64>,
    /// memory each GPU keeps free for activations when a model is split (e.g. 4GiB)
    #[arg(long, value_parser = parse_bytes, default_value_t = DEFAULT_ACTIVATION_RESERVE)]
    pub activation_reserve: u64,
}

impl PlacementArgs {
    /// The scoring device and how models load, from `--device` and these flags.
    pub fn resolve(&self, device: DeviceChoice) -> anyhow::Result<(Device, LoadOptions)> {
        let devices = self.devices(device)?;
        Ok((devices[0], self.load_options(&devices)))
    }

    /// How a model loads over `devices` (its scoring device first).
    pub fn load_options(&self, devices: &[Device]) -> LoadOptions {
        let devices = if devices.len() > 1 {
            devices
                .iter()
                .map(|&device| DeviceMemory {
                    device,
                    free_bytes: match (free_bytes(device), self.device_memory) {
                        (Some(free), Some(cap)) => Some(free.min(cap)),
                        (free, cap) => free.or(cap),
                    },
                })
                .collect()
        } else {
            Vec::new()
        };
        LoadOptions {
            devices,
            activation_reserve: self.activation_reserve,
            host_budget: self.host_memory,
        }
    }

    /// `--devices` resolved, or its default from `--device`.
    pub fn devices(&self, device: DeviceChoice) -> anyhow::Result<Vec<Device>> {
        match &self.devices {
            Some(list) => {
                anyhow::ensure!(!list.is_empty(), "--devices: the list is empty");
                list.iter()
                    .map(|choice| {
                        anyhow::ensure!(
                            *choice != DeviceChoice::Auto,
                            "--devices: name each device (cpu, cuda:N), not auto"
                        );
                        choice.resolve()
                    })
                    .collect()
            }
            None => {
                let resolved = device.resolve()?;
                Ok(match (device, resolved) {
                    (DeviceChoice::Auto, Device::Cuda(_)) => (0..tch::Cuda::device_count().max(1))
                        .map(|i| Device::Cuda(i as usize))
                        .collect(),
                    _ => vec![resolved],
                })
            }
        }
    }
}

/// A CUDA device's free memory as nvidia-smi reports it (None off CUDA or without nvidia-smi).
fn free_bytes(device: Device) -> Option<u64> {
    match device {
        Device::Cuda(index) => herd_agent::gpu::query(Some(index))
            .map(|memory| memory.total_bytes.saturating_sub(memory.used_bytes)),
        _ => None,
    }
}
