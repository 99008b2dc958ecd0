//! Rotary position embeddings in transformers' layout (rotate_half over two halves), with
//! frequencies computed in float32 exactly as transformers does so fp32 scores agree.

use tch::{Device, Kind, Tensor};

use super::config::{DecoderConfig, RopeScaling};

/// Inverse frequencies, one per pair of head dimensions, on `device`. They are computed on the
/// CPU and then moved, as transformers computes them when it builds the rotary embedding (on the
/// CPU, before the model moves to its device): a GPU's `pow` may round differently in the last
/// place.
pub fn inverse_frequencies(config: &DecoderConfig, device: Device) -> Tensor {
    cpu_inverse_frequencies(config.head_dim, config.rope_theta, &config.rope_scaling)
        .to_device(device)
}

/// transformers' `ROPE_INIT_FUNCTIONS` (modeling_rope_utils.py) in float32 on the CPU. Python's
/// `scalar / tensor` is `tensor.reciprocal() * scalar` (torch/_tensor.py `__rdiv__`), so it is
/// written that way here: a true division can differ in the last place.
fn cpu_inverse_frequencies(dim: i64, theta: f64, scaling: &RopeScaling) -> Tensor {
    // `1.0 / (base ** (torch.arange(0, dim, 2, dtype=torch.int64).float() / dim))`
    let exponents = Tensor::arange_start_step(0, dim, 2, (Kind::Int64, Device::Cpu))
        .to_kind(Kind::Float)
        / (dim as f64);
    let inv_freq = Tensor::pow_scalar(theta, &exponents).reciprocal();
    match scaling {
        RopeScaling::None => inv_freq,
        RopeScaling::Linear { factor } => inv_freq / *factor,
        RopeScaling::Llama3 {
            factor,
            low_freq_factor,
            high_freq_factor,
            original_max_position_embeddings: old_context,
        } => {
            let low_freq_wavelen = old_context / low_freq_factor;
            let high_freq_wavelen = old_context / high_freq_factor;
            // `wavelen = 2 * math.pi / inv_freq`
            let wavelen = inv_freq.reciprocal() * (2.0 * std::f64::consts::PI);
            let scaled = inv_freq.where_self(&wavelen.le(low_freq_wavelen), &(&inv_freq / *factor));
            // `(old_context_len / wavelen - low_freq_factor) / (high_freq_factor - low_freq_factor)`
            let smooth = (wavelen.reciprocal() * *old_context - *low_freq_factor)
                / (high_freq_factor - low_freq_factor);
            let smoothed: Tensor = (1.0 - &smooth) * &scaled / *factor + &smooth * &scaled;
            let medium = wavelen
                .ge(high_freq_wavelen)
                .logical_and(&wavelen.le(low_freq_wavelen));
            smoothed.where_self(&medium, &scaled)
        }
    }
}

/// cos and sin tables for positions 0..len, shaped [1, 1, len, head_dim] in `kind`.
pub struct RotaryTables {
    pub cos: Tensor,
    pub sin: Tensor,
}

impl RotaryTables {
    pub fn new(inv_freq: &Tensor, len: i64, kind: Kind) -> Self {
        let positions = Tensor::arange(len, (Kind::Float, inv_freq.device()));
        let freqs = positions.outer(inv_freq);
        let angles = Tensor::cat(&[&freqs, &freqs], -1);
        let shape = [1, 1, len, -1];
        Self {
            cos: angles.cos().to_kind(kind).view(shape),
            sin: angles.sin().to_kind(kind).view(shape),
        }
    }

    /// Tables for explicit positions [batch, len] (forked sequences restart their positions),
    /// shaped [batch, 1, len, head_dim].
    pub fn for_positions(inv_freq: &Tensor, positions: &Tensor, kind: Kind) -> Self {
        let freqs = positions.to_kind(Kind::Float).unsqueeze(-1) * inv_freq;
        let angles = Tensor::cat(&[&freqs, &freqs], -1).unsqueeze(1);
        Self {
            cos: angles.cos().to_kind(kind),
            sin: angles.sin().to_kind(kind),
        }
    }

    /// Applies the rotation to [batch, heads, len, head_dim].
    pub fn apply(&self, x: &Tensor) -> Tensor {
        let half = x.size().last().copied().unwrap_or(0) / 2;
        let first = x.narrow(-1, 0, half);
        let second = x.narrow(-1, half, half);
        let rotated = Tensor::cat(&[&second.neg(), &first], -1);
        x * &self.cos + rotated * &self.sin
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The device rope tests run on: HERD_TEST_DEVICE (cpu, cuda or cuda:N; default cpu).
    fn test_device() -> Device {
        match std::env::var("HERD_TEST_DEVICE") {
            Ok(name) => name
                .parse::<crate::device::DeviceChoice>()
                .and_then(|choice| choice.resolve().map_err(|e| e.to_string()))
                .unwrap_or_else(|e| panic!("HERD_TEST_DEVICE={name}: {e}")),
            Err(_) => Device::Cpu,
        }
    }

    /// transformers' own values (tests/golden/make_rope_goldens.py), bit for bit, also after the
    /// move to the test device.
    #[test]
    fn inverse_frequencies_are_transformers_bit_for_bit() {
        let path =
            herd_testkit::workspace_root().join("tests/golden/rope/inverse_frequencies.json");
        let golden: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        let device = test_device();
        for case in golden["cases"].as_array().unwrap() {
            let name = case["name"].as_str().unwrap();
            let scaling = &case["rope_scaling"];
            let f = |key: &str| scaling[key].as_f64().unwrap();
            let scaling = match scaling["rope_type"].as_str() {
                None => RopeScaling::None,
                Some("linear") => RopeScaling::Linear {
                    factor: f("factor"),
                },
                Some("llama3") => RopeScaling::Llama3 {
                    factor: f("factor"),
                    low_freq_factor: f("low_freq_factor"),
                    high_freq_factor: f("high_freq_factor"),
                    original_max_position_embeddings: f("original_max_position_embeddings"),
                },
                Some(other) => panic!("{name}: rope type {other}"),
            };
            let dim = case["head_dim"].as_i64().unwrap();
            let theta = case["rope_theta"].as_f64().unwrap();
            let ours = cpu_inverse_frequencies(dim, theta, &scaling)
                .to_device(device)
                .to_device(Device::Cpu);
            let ours: Vec<u32> = Vec::<f32>::try_from(&ours)
                .unwrap()
                .iter()
                .map(|v| v.to_bits())
                .collect();
            let want: Vec<u32> = case["bits"]
                .as_array()
                .unwrap()
                .iter()
                .map(|b| b.as_u64().unwrap() as u32)
                .collect();
            assert_eq!(ours, want, "{name} on {device:?}");
        }
    }
}
