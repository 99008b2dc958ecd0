//! Where and in which precision to run: chosen automatically, overridable from the CLI.

use std::str::FromStr;

use tch::{Device, Kind};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DeviceChoice {
    Auto,
    Cpu,
    Cuda(usize),
}

impl FromStr for DeviceChoice {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "auto" => Ok(Self::Auto),
            "cpu" => Ok(Self::Cpu),
            "cuda" => Ok(Self::Cuda(0)),
            _ => s
                .strip_prefix("cuda:")
                .and_then(|n| n.parse().ok())
                .map(Self::Cuda)
                .ok_or_else(|| {
                    format!("unknown device {s:?} (expected auto, cpu, cuda or cuda:N)")
                }),
        }
    }
}

/// What `--device auto` looks at: whether libtorch sees a CUDA device, and whether this machine
/// has an NVIDIA driver at all.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CudaProbe {
    /// `tch::Cuda::is_available()`: libtorch initialised CUDA and counts at least one device
    pub available: bool,
    /// the NVIDIA kernel driver's version line (`/proc/driver/nvidia/version`), when loaded
    pub driver: Option<String>,
    /// `CUDA_VISIBLE_DEVICES`, when set
    pub visible_devices: Option<String>,
}

impl CudaProbe {
    /// This machine's state.
    pub fn here() -> Self {
        Self {
            available: tch::Cuda::is_available(),
            driver: std::fs::read_to_string("/proc/driver/nvidia/version")
                .ok()
                .and_then(|text| text.lines().next().map(|l| l.trim().to_string())),
            visible_devices: std::env::var("CUDA_VISIBLE_DEVICES").ok(),
        }
    }

    /// `--device auto`: the first CUDA device when libtorch has one; CPU on a machine without an
    /// NVIDIA driver, or whose GPUs are hidden on purpose (`CUDA_VISIBLE_DEVICES` empty or -1).
    /// A machine with a driver whose GPUs libtorch cannot use (a driver too old for the CUDA
    /// build, a broken install) is an error, not a silent fall back to CPU in fp32: that would
    /// take hours and tens of GB of host memory for a 13B model.
    pub fn auto(&self) -> Result<Device, String> {
        if self.available {
            return Ok(Device::Cuda(0));
        }
        let hidden = self
            .visible_devices
            .as_deref()
            .is_some_and(|list| list.trim().is_empty() || list.trim().starts_with("-1"));
        match &self.driver {
            Some(driver) if !hidden => Err(format!(
                "--device auto: this machine has an NVIDIA driver ({driver}) but libtorch cannot \
                 use any CUDA device (CUDA_VISIBLE_DEVICES={}). libtorch needs a driver that \
                 supports its CUDA build (torch 2.11.0+cu130: R580 or newer); check \
                 `nvidia-smi`, or pass --device cpu to score on the CPU on purpose",
                self.visible_devices.as_deref().unwrap_or("unset"),
            )),
            _ => Ok(Device::Cpu),
        }
    }
}

impl DeviceChoice {
    pub fn resolve(self) -> anyhow::Result<Device> {
        match self {
            Self::Auto => CudaProbe::here().auto().map_err(anyhow::Error::msg),
            Self::Cpu => Ok(Device::Cpu),
            Self::Cuda(n) => {
                let available = tch::Cuda::device_count() as usize;
                anyhow::ensure!(
                    n < available,
                    "device cuda:{n} requested but {available} CUDA device(s) are available"
                );
                Ok(Device::Cuda(n))
            }
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum DtypeChoice {
    /// bf16 on CUDA, fp32 on CPU
    Auto,
    Fp32,
    Bf16,
    Fp16,
}

impl DtypeChoice {
    pub fn resolve(self, device: Device) -> Kind {
        match self {
            Self::Auto if device.is_cuda() => Kind::BFloat16,
            Self::Auto | Self::Fp32 => Kind::Float,
            Self::Bf16 => Kind::BFloat16,
            Self::Fp16 => Kind::Half,
        }
    }
}

/// What a NaN or infinite score most likely means when scoring in `kind`.
pub fn non_finite_hint(kind: Kind) -> &'static str {
    match kind {
        Kind::Half => "fp16 overflows easily: score in bf16 or fp32 (--dtype)",
        Kind::Float | Kind::Double => "the weights or activations hold non-finite values",
        _ => "score in fp32 (--dtype fp32) to tell overflow from broken weights",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_devices() {
        assert_eq!("auto".parse(), Ok(DeviceChoice::Auto));
        assert_eq!("cuda:3".parse(), Ok(DeviceChoice::Cuda(3)));
        assert!("tpu".parse::<DeviceChoice>().unwrap_err().contains("tpu"));
    }

    #[test]
    fn auto_fails_loudly_when_a_driver_is_there_but_cuda_is_not() {
        let probe = |available: bool, driver: Option<&str>, visible: Option<&str>| CudaProbe {
            available,
            driver: driver.map(str::to_string),
            visible_devices: visible.map(str::to_string),
        };
        let driver = Some("NVRM version: NVIDIA UNIX x86_64 Kernel Module  535.54.03");
        assert_eq!(probe(true, driver, None).auto(), Ok(Device::Cuda(0)));
        // no driver: a CPU machine
        assert_eq!(probe(false, None, None).auto(), Ok(Device::Cpu));
        assert_eq!(probe(false, None, Some("0")).auto(), Ok(Device::Cpu));
        // GPUs hidden on purpose
        assert_eq!(probe(false, driver, Some("")).auto(), Ok(Device::Cpu));
        assert_eq!(probe(false, driver, Some("-1")).auto(), Ok(Device::Cpu));
        // a driver libtorch cannot use: an error that says what to check
        let error = probe(false, driver, None).auto().unwrap_err();
        assert!(error.contains("535.54.03"), "{error}");
        assert!(error.contains("--device cpu"), "{error}");
        assert!(error.contains("CUDA_VISIBLE_DEVICES=unset"), "{error}");
        let error = probe(false, driver, Some("3")).auto().unwrap_err();
        assert!(error.contains("CUDA_VISIBLE_DEVICES=3"), "{error}");
    }

    #[test]
    fn auto_dtype_is_fp32_on_cpu() {
        assert_eq!(DtypeChoice::Auto.resolve(Device::Cpu), Kind::Float);
        assert_eq!(DtypeChoice::Auto.resolve(Device::Cuda(0)), Kind::BFloat16);
    }

    #[test]
    fn non_finite_scores_are_read_by_precision() {
        assert!(non_finite_hint(Kind::Half).contains("fp16 overflows"));
        assert!(non_finite_hint(Kind::Float).contains("non-finite values"));
        assert!(non_finite_hint(Kind::BFloat16).contains("--dtype fp32"));
    }
}
