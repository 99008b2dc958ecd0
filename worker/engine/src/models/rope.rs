//! Rotary position embeddings in transformers' layout (rotate_half over two halves), with
//! frequencies computed in float32 exactly as transformers does so fp32 scores agree.

use tch::{Device, Kind, Tensor};

use super::config::{DecoderConfig, RopeScaling};

/// Inverse frequencies, one per pair of head dimensions.
pub fn inverse_frequencies(config: &DecoderConfig, device: Device) -> Tensor {
    let dim = config.head_dim;
    let exponents = Tensor::arange_start_step(0, dim, 2, (Kind::Int64, device))
        .to_kind(Kind::Float)
        / (dim as f64);
    let inv_freq = Tensor::pow_scalar(config.rope_theta, &exponents).reciprocal();
    match &config.rope_scaling {
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
            // scalar / tensor in the same order as transformers, so rounding matches
            let wavelen = inv_freq.full_like(2.0 * std::f64::consts::PI) / &inv_freq;
            let scaled = inv_freq.where_self(&wavelen.le(low_freq_wavelen), &(&inv_freq / *factor));
            let smooth = (wavelen.full_like(*old_context) / &wavelen - *low_freq_factor)
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
