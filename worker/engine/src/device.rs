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

impl DeviceChoice {
    pub fn resolve(self) -> anyhow::Result<Device> {
        match self {
            Self::Auto if tch::Cuda::is_available() => Ok(Device::Cuda(0)),
            Self::Auto | Self::Cpu => Ok(Device::Cpu),
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
