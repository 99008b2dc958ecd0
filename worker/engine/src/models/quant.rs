//! Weight-only int8 for the decoder's linear layers (`--weights int8`, off by default): a trade of
//! exactness for memory. Each weight [out, in] becomes int8 values and one float32 scale per
//! output channel, symmetric: `scale = max_j |w[i, j]| / 127`, `q = round(w / scale)` in
//! -127..=127. A forward pass dequantises one weight at a time (`q * scale` in float32, rounded
//! once to the activations' dtype) and multiplies as before, so activations, norms, attention
//! and the heads are untouched; embeddings, norms and heads are never quantised. Scores move by
//! the rounding of the weights (tests/int8_agreement.rs reports how far on the goldens' rows),
//! which is why it is never the default: RewardBench's numbers come from the full weights.
//!
//! The weights are quantised after the model is loaded, so the peak while loading is the full
//! model's; what is saved is the memory the model holds while scoring (room for larger batches,
//! or for another model). fp8 would need a GPU with fp8 matmuls (Hopper and later) and is not
//! implemented.

use std::fmt;
use std::str::FromStr;

use tch::{Kind, Tensor};

/// How a model's linear weights are held (`--weights`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum WeightFormat {
    /// as loaded, in the run's dtype
    #[default]
    Full,
    /// the decoder's linear weights in int8 with a scale per output channel
    Int8,
}

impl FromStr for WeightFormat {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "full" => Ok(Self::Full),
            "int8" => Ok(Self::Int8),
            _ => Err(format!(
                "unknown weight format {s:?} (expected full or int8)"
            )),
        }
    }
}

impl fmt::Display for WeightFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Full => "full",
            Self::Int8 => "int8",
        })
    }
}

/// A linear layer's weight [out, in]: as loaded, or int8 per output channel.
pub enum LinearWeight {
    Full(Tensor),
    Int8 {
        /// int8 [out, in]
        values: Tensor,
        /// float32 [out, 1]
        scales: Tensor,
        /// the dtype the weight had, which the activations have
        kind: Kind,
    },
}

/// Bytes of the linear weights before and after quantisation.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Quantized {
    /// weights quantised
    pub tensors: usize,
    /// their bytes as loaded
    pub bytes_before: i64,
    /// their bytes as int8 values plus float32 scales
    pub bytes_after: i64,
}

impl Quantized {
    pub fn add(&mut self, other: Quantized) {
        self.tensors += other.tensors;
        self.bytes_before += other.bytes_before;
        self.bytes_after += other.bytes_after;
    }
}

fn bytes(t: &Tensor) -> i64 {
    t.numel() as i64 * t.kind().elt_size_in_bytes() as i64
}

impl LinearWeight {
    /// The weight the matmul uses, in the loaded dtype (dequantised for int8).
    pub fn dense(&self) -> Tensor {
        match self {
            Self::Full(weight) => weight.shallow_clone(),
            Self::Int8 {
                values,
                scales,
                kind,
            } => (values.to_kind(Kind::Float) * scales).to_kind(*kind),
        }
    }

    /// Quantises a full weight in place (an int8 one stays as it is); what it saved.
    pub fn quantize(&mut self) -> Quantized {
        let Self::Full(weight) = self else {
            return Quantized::default();
        };
        let before = bytes(weight);
        let w = weight.to_kind(Kind::Float);
        let max = w.abs().amax([1].as_slice(), true);
        // an all-zero row keeps scale 1 (its values are 0 either way)
        let scales = max.where_self(&max.gt(0.0), &max.ones_like()) / 127.0;
        let values = (&w / &scales)
            .round()
            .clamp(-127.0, 127.0)
            .to_kind(Kind::Int8);
        let kind = weight.kind();
        let after = bytes(&values) + bytes(&scales);
        *self = Self::Int8 {
            values,
            scales,
            kind,
        };
        Quantized {
            tensors: 1,
            bytes_before: before,
            bytes_after: after,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::Device;

    #[test]
    fn per_channel_int8_round_trips_within_half_a_step() {
        tch::manual_seed(3);
        let w = Tensor::randn([6, 40], (Kind::Float, Device::Cpu));
        // a row of zeros and a row with one large weight
        let _ = w.get(2).fill_(0.0);
        let _ = w.get(4).get(7).fill_(50.0);
        let mut linear = LinearWeight::Full(w.shallow_clone());
        let saved = linear.quantize();
        assert_eq!(saved.tensors, 1);
        assert_eq!(saved.bytes_before, 6 * 40 * 4);
        assert_eq!(saved.bytes_after, 6 * 40 + 6 * 4);
        let LinearWeight::Int8 { values, scales, .. } = &linear else {
            panic!("not quantised");
        };
        assert_eq!(values.kind(), Kind::Int8);
        assert_eq!(values.abs().max().int64_value(&[]), 127);
        let back = linear.dense();
        let step = (w.abs().amax([1].as_slice(), true) / 127.0).clamp_min(1e-30);
        // every weight within half a step of its channel (plus float32 rounding)
        let worst = ((&back - &w).abs() / &step).max().double_value(&[]);
        assert!(worst <= 0.5 + 1e-4, "{worst}");
        assert_eq!(back.get(2).abs().sum(Kind::Float).double_value(&[]), 0.0);
        assert_eq!(back.get(4).get(7).double_value(&[]), 50.0);
        assert_eq!(scales.size(), [6, 1]);
        // quantising again changes nothing
        assert_eq!(linear.quantize(), Quantized::default());
    }

    #[test]
    fn formats_parse() {
        assert_eq!("int8".parse::<WeightFormat>(), Ok(WeightFormat::Int8));
        assert_eq!("full".parse::<WeightFormat>(), Ok(WeightFormat::Full));
        assert!("fp8"
            .parse::<WeightFormat>()
            .unwrap_err()
            .contains("full or int8"));
    }
}
