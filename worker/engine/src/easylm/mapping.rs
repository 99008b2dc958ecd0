//! EasyLM LLaMA parameter names → Hugging Face names, and the layout change between them.
//!
//! | EasyLM (flax, kernels are (in, out)) | Hugging Face (torch, (out, in)) | op |
//! |---|---|---|
//! | `transformer.wte.embedding` (V, D) | `model.embed_tokens.weight` | as is |
//! | `transformer.h.{i}.attention.wq.kernel` (D, H·hd) | `model.layers.{i}.self_attn.q_proj.weight` | transpose, permute rows (H heads) |
//! | `transformer.h.{i}.attention.wk.kernel` (D, KV·hd) | `...self_attn.k_proj.weight` | transpose, permute rows (KV heads) |
//! | `transformer.h.{i}.attention.{wv,wo}.kernel` | `...self_attn.{v,o}_proj.weight` | transpose |
//! | `transformer.h.{i}.feed_forward.{w1,w3,w2}.kernel` | `...mlp.{gate,up,down}_proj.weight` | transpose |
//! | `transformer.h.{i}.{attention_norm,ffn_norm}.kernel` (D,) | `...{input,post_attention}_layernorm.weight` | as is |
//! | `transformer.ln_f.kernel` (D,) | `model.norm.weight` | as is |
//! | `score.kernel` (D, 1) (reward model) | `score.weight` (1, D) | transpose |
//! | `lm_head.kernel` (D, V) (causal LM) | `lm_head.weight` (V, D) | transpose |
//!
//! Rotary: EasyLM rotates adjacent pairs (2i, 2i+1) (Meta layout), transformers rotates halves
//! (i, i + hd/2). Within each head the rows of q and k are reordered so that
//! `hf_row[h·hd + j·hd/2 + i] = easylm_row[h·hd + 2i + j]` (`w.view(n, hd/2, 2, D).transpose(1, 2)`).

use super::stream::FloatDtype;

/// A LLaMA parameter, per layer where it has one.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Param {
    Embedding,
    Q,
    K,
    V,
    O,
    Gate,
    Up,
    Down,
    InputNorm,
    PostNorm,
    FinalNorm,
    Score,
    LmHead,
}

/// The nine parameters every layer has.
pub const LAYER_PARAMS: [Param; 9] = [
    Param::Q,
    Param::K,
    Param::V,
    Param::O,
    Param::Gate,
    Param::Up,
    Param::Down,
    Param::InputNorm,
    Param::PostNorm,
];

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ParamKey {
    pub param: Param,
    pub layer: Option<u32>,
}

/// How a flax array becomes its Hugging Face tensor.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Op {
    /// same layout
    Copy,
    /// 2-D kernel (in, out) → weight (out, in)
    Transpose,
    /// transpose, then reorder rows per head from interleaved to half-split rotary layout
    TransposePermute { heads: u64 },
}

/// What a record's key is to the converter.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum KeyKind {
    Param(ParamKey),
    /// a train state's `step` or `opt_state`: not part of the model
    Skip(&'static str),
}

/// Layers above this index are refused as corrupt keys.
pub const MAX_LAYER: u32 = 4096;

pub const KNOWN_NAMES: &str = "transformer.wte.embedding, transformer.ln_f.kernel, \
transformer.h.N.attention.{wq,wk,wv,wo}.kernel, transformer.h.N.feed_forward.{w1,w2,w3}.kernel, \
transformer.h.N.{attention_norm,ffn_norm}.kernel, score.kernel, lm_head.kernel";

/// Classifies a record key (its path components). A train state's `params/params/` prefix is
/// stripped; `step` and `opt_state/...` are skipped; anything else unknown is an error.
pub fn classify(key: &[String]) -> Result<KeyKind, String> {
    let parts: Vec<&str> = key.iter().map(String::as_str).collect();
    let parts: &[&str] = match parts.as_slice() {
        ["params", "params", rest @ ..] => rest,
        ["step"] => return Ok(KeyKind::Skip("train-state step")),
        ["opt_state", ..] => return Ok(KeyKind::Skip("optimizer state")),
        other => other,
    };
    if let Some(last) = parts.last() {
        if last.starts_with("chunk_") && last[6..].bytes().all(|b| b.is_ascii_digit()) {
            return Err(split_format_message());
        }
    }
    let global = |param| Ok(KeyKind::Param(ParamKey { param, layer: None }));
    match parts {
        ["transformer", "wte", "embedding"] => global(Param::Embedding),
        ["transformer", "ln_f", "kernel"] => global(Param::FinalNorm),
        ["score", "kernel"] => global(Param::Score),
        ["lm_head", "kernel"] => global(Param::LmHead),
        ["transformer", "h", index, rest @ ..] => {
            let layer = parse_layer(index).ok_or_else(|| {
                format!("layer index {index:?} is not a number below {MAX_LAYER}")
            })?;
            let param = match rest {
                ["attention", "wq", "kernel"] => Param::Q,
                ["attention", "wk", "kernel"] => Param::K,
                ["attention", "wv", "kernel"] => Param::V,
                ["attention", "wo", "kernel"] => Param::O,
                ["feed_forward", "w1", "kernel"] => Param::Gate,
                ["feed_forward", "w3", "kernel"] => Param::Up,
                ["feed_forward", "w2", "kernel"] => Param::Down,
                ["attention_norm", "kernel"] => Param::InputNorm,
                ["ffn_norm", "kernel"] => Param::PostNorm,
                _ => return Err(unknown()),
            };
            Ok(KeyKind::Param(ParamKey {
                param,
                layer: Some(layer),
            }))
        }
        _ => Err(unknown()),
    }
}

fn unknown() -> String {
    format!("not an EasyLM LLaMA parameter (expected {KNOWN_NAMES})")
}

pub fn split_format_message() -> String {
    "the key ends in chunk_N: this is the split-record format of the unmerged `large_msgpack` \
     branch of hamishivi/EasyLM, which herd does not read; re-save the checkpoint with upstream \
     EasyLM (StreamingCheckpointer) or convert it with that branch's own loader"
        .to_string()
}

fn parse_layer(text: &str) -> Option<u32> {
    if text.is_empty() || text.len() > 5 || !text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    if text.len() > 1 && text.starts_with('0') {
        return None;
    }
    text.parse().ok().filter(|&n| n < MAX_LAYER)
}

impl ParamKey {
    /// The Hugging Face tensor name.
    pub fn hf_name(&self) -> String {
        let layer = self.layer.unwrap_or(0);
        let l = |suffix: &str| format!("model.layers.{layer}.{suffix}");
        match self.param {
            Param::Embedding => "model.embed_tokens.weight".to_string(),
            Param::FinalNorm => "model.norm.weight".to_string(),
            Param::Score => "score.weight".to_string(),
            Param::LmHead => "lm_head.weight".to_string(),
            Param::Q => l("self_attn.q_proj.weight"),
            Param::K => l("self_attn.k_proj.weight"),
            Param::V => l("self_attn.v_proj.weight"),
            Param::O => l("self_attn.o_proj.weight"),
            Param::Gate => l("mlp.gate_proj.weight"),
            Param::Up => l("mlp.up_proj.weight"),
            Param::Down => l("mlp.down_proj.weight"),
            Param::InputNorm => l("input_layernorm.weight"),
            Param::PostNorm => l("post_attention_layernorm.weight"),
        }
    }

    /// The EasyLM key (params layout), for messages.
    pub fn easylm_name(&self) -> String {
        let layer = self.layer.unwrap_or(0);
        let l = |suffix: &str| format!("transformer.h.{layer}.{suffix}");
        match self.param {
            Param::Embedding => "transformer.wte.embedding".to_string(),
            Param::FinalNorm => "transformer.ln_f.kernel".to_string(),
            Param::Score => "score.kernel".to_string(),
            Param::LmHead => "lm_head.kernel".to_string(),
            Param::Q => l("attention.wq.kernel"),
            Param::K => l("attention.wk.kernel"),
            Param::V => l("attention.wv.kernel"),
            Param::O => l("attention.wo.kernel"),
            Param::Gate => l("feed_forward.w1.kernel"),
            Param::Up => l("feed_forward.w3.kernel"),
            Param::Down => l("feed_forward.w2.kernel"),
            Param::InputNorm => l("attention_norm.kernel"),
            Param::PostNorm => l("ffn_norm.kernel"),
        }
    }
}

/// The EasyLM row (of the transposed q/k kernel) that becomes Hugging Face row `hf_row`, for heads
/// of `head_dim`: `hf_row[h·hd + j·(hd/2) + i] = easylm_row[h·hd + 2i + j]`, i < hd/2, j ∈ {0, 1}.
pub fn permuted_source_row(hf_row: u64, head_dim: u64) -> u64 {
    let half = head_dim / 2;
    let head = hf_row / head_dim;
    let within = hf_row % head_dim;
    let (j, i) = (within / half, within % half);
    head * head_dim + 2 * i + j
}

/// Output rows of a transposed tensor produced per band, in bytes (bounded scratch memory).
pub const BAND_BYTES: usize = 8 << 20;

/// Writes rows `rows` of the Hugging Face layout of a flax kernel `src` (`in_dim` × `out_dim`,
/// row-major, elements of `E` bytes) into `dst`: `dst[(o - rows.start)·in_dim + i] =
/// src[i·out_dim + source_col(o)]`, where `source_col` is the identity or the rotary permutation.
/// Cache-blocked so both sides are touched a tile at a time.
pub fn transpose_rows<const E: usize>(
    src: &[[u8; E]],
    in_dim: usize,
    out_dim: usize,
    rows: std::ops::Range<usize>,
    permute_head_dim: Option<usize>,
    dst: &mut [[u8; E]],
) {
    const TILE: usize = 32;
    debug_assert_eq!(src.len(), in_dim * out_dim);
    debug_assert_eq!(dst.len(), rows.len() * in_dim);
    let source_col: Vec<usize> = rows
        .clone()
        .map(|o| match permute_head_dim {
            Some(hd) => permuted_source_row(o as u64, hd as u64) as usize,
            None => o,
        })
        .collect();
    let band = rows.len();
    for i0 in (0..in_dim).step_by(TILE) {
        let i1 = (i0 + TILE).min(in_dim);
        for o0 in (0..band).step_by(TILE) {
            let o1 = (o0 + TILE).min(band);
            for (o, &col) in source_col.iter().enumerate().take(o1).skip(o0) {
                let out = &mut dst[o * in_dim..(o + 1) * in_dim];
                for i in i0..i1 {
                    out[i] = src[i * out_dim + col];
                }
            }
        }
    }
}

/// Views bytes as `E`-byte elements (a trailing partial element is left out).
pub fn as_elements<const E: usize>(bytes: &[u8]) -> &[[u8; E]] {
    let n = bytes.len() / E;
    // SAFETY: `[u8; E]` has size E and alignment 1, so the first n·E bytes are n valid elements,
    // borrowed for the same lifetime as `bytes`.
    unsafe { std::slice::from_raw_parts(bytes.as_ptr().cast(), n) }
}

pub fn as_elements_mut<const E: usize>(bytes: &mut [u8]) -> &mut [[u8; E]] {
    let n = bytes.len() / E;
    // SAFETY: as in `as_elements`; the mutable borrow of `bytes` is held for the result's lifetime.
    unsafe { std::slice::from_raw_parts_mut(bytes.as_mut_ptr().cast(), n) }
}

/// Rows `rows` of the Hugging Face layout of a kernel held in `src` bytes (in the source dtype),
/// written to `dst` (resized to fit).
pub fn transpose_band(
    src: &[u8],
    elem: usize,
    in_dim: usize,
    out_dim: usize,
    rows: std::ops::Range<usize>,
    permute_head_dim: Option<usize>,
    dst: &mut Vec<u8>,
) {
    // every element is written by the transpose: no need to clear what is already there
    dst.resize(rows.len() * in_dim * elem, 0);
    match elem {
        2 => transpose_rows::<2>(
            as_elements(src),
            in_dim,
            out_dim,
            rows,
            permute_head_dim,
            as_elements_mut(dst),
        ),
        _ => transpose_rows::<4>(
            as_elements(src),
            in_dim,
            out_dim,
            rows,
            permute_head_dim,
            as_elements_mut(dst),
        ),
    }
}

/// f32 → bf16 bits, rounding to nearest even like torch's `.to(torch.bfloat16)` (NaN → 0x7fc0).
pub fn f32_to_bf16(bits: u32) -> u16 {
    if bits & 0x7fff_ffff > 0x7f80_0000 {
        return 0x7fc0;
    }
    let rounding = 0x7fff + ((bits >> 16) & 1);
    (bits.wrapping_add(rounding) >> 16) as u16
}

pub fn bf16_to_f32(bits: u16) -> u32 {
    u32::from(bits) << 16
}

/// IEEE half → single, exact (subnormals, infinities and NaN included).
pub fn f16_to_f32(h: u16) -> u32 {
    let sign = u32::from(h & 0x8000) << 16;
    let exponent = u32::from((h >> 10) & 0x1f);
    let mantissa = u32::from(h & 0x03ff);
    match (exponent, mantissa) {
        (0, 0) => sign,
        (0, m) => {
            // subnormal: value = m · 2^-24; normalise
            let shift = m.leading_zeros() - 21; // bring the top set bit to bit 10
            let m = (m << shift) & 0x03ff;
            let e = 127 - 15 + 1 - shift;
            sign | (e << 23) | (m << 13)
        }
        (0x1f, 0) => sign | 0x7f80_0000,
        (0x1f, m) => sign | 0x7fc0_0000 | (m << 13),
        (e, m) => sign | ((e + 127 - 15) << 23) | (m << 13),
    }
}

/// Converts element bytes from one float dtype to another into `out` (resized to fit).
pub fn convert_dtype(src: &[u8], from: FloatDtype, to: FloatDtype, out: &mut Vec<u8>) {
    out.clear();
    if from == to {
        out.extend_from_slice(src);
        return;
    }
    let count = src.len() / from.size();
    out.resize(count * to.size(), 0);
    let to_f32 = |e: &[u8]| -> u32 {
        match from {
            FloatDtype::F32 => u32::from_le_bytes([e[0], e[1], e[2], e[3]]),
            FloatDtype::BF16 => bf16_to_f32(u16::from_le_bytes([e[0], e[1]])),
            FloatDtype::F16 => f16_to_f32(u16::from_le_bytes([e[0], e[1]])),
        }
    };
    match to {
        FloatDtype::F32 => {
            for (e, o) in src.chunks_exact(from.size()).zip(out.chunks_exact_mut(4)) {
                o.copy_from_slice(&to_f32(e).to_le_bytes());
            }
        }
        FloatDtype::BF16 => {
            for (e, o) in src.chunks_exact(from.size()).zip(out.chunks_exact_mut(2)) {
                o.copy_from_slice(&f32_to_bf16(to_f32(e)).to_le_bytes());
            }
        }
        FloatDtype::F16 => {
            // herd never writes float16 from another dtype (lossy in range); callers keep it
            unreachable!("conversion to float16 is not offered")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(path: &str) -> Vec<String> {
        path.split('/').map(str::to_string).collect()
    }

    #[test]
    fn classifies_names() {
        assert_eq!(
            classify(&key("transformer/h/12/attention/wk/kernel")),
            Ok(KeyKind::Param(ParamKey {
                param: Param::K,
                layer: Some(12)
            }))
        );
        assert_eq!(
            classify(&key("params/params/score/kernel")),
            Ok(KeyKind::Param(ParamKey {
                param: Param::Score,
                layer: None
            }))
        );
        assert!(matches!(classify(&key("step")), Ok(KeyKind::Skip(_))));
        assert!(matches!(
            classify(&key("opt_state/1/0/mu/transformer/wte/embedding")),
            Ok(KeyKind::Skip(_))
        ));
        assert!(classify(&key("transformer/h/01/attention/wq/kernel")).is_err());
        assert!(classify(&key("transformer/h/0/attention/wx/kernel"))
            .unwrap_err()
            .contains("not an EasyLM LLaMA parameter"));
        assert!(classify(&key("transformer/wte/embedding/chunk_0"))
            .unwrap_err()
            .contains("large_msgpack"));
    }

    #[test]
    fn permutation_formula() {
        // hd = 8: hf rows 0..4 take even easylm rows, 4..8 odd ones; per head
        let rows: Vec<u64> = (0..16).map(|r| permuted_source_row(r, 8)).collect();
        assert_eq!(rows, [0, 2, 4, 6, 1, 3, 5, 7, 8, 10, 12, 14, 9, 11, 13, 15]);
    }

    #[test]
    fn bf16_rounding_matches_torch() {
        // 1 + 2^-8 is a tie between 1 and 1 + 2^-7: rounds to even (1.0)
        assert_eq!(f32_to_bf16(0x3f80_8000), 0x3f80);
        // 1 + 3·2^-8 ties up to 1 + 2^-6 (even)
        assert_eq!(f32_to_bf16(0x3f81_8000), 0x3f82);
        assert_eq!(f32_to_bf16(0x3f80_8001), 0x3f81);
        assert_eq!(f32_to_bf16(f32::NAN.to_bits()), 0x7fc0);
        assert_eq!(f32_to_bf16(f32::INFINITY.to_bits()), 0x7f80);
        assert_eq!(f32_to_bf16(f32::MAX.to_bits()), 0x7f80);
    }

    #[test]
    fn f16_decoding() {
        let tiny = 2f32.powi(-24);
        let cases: [(u16, f32); 8] = [
            (0x3c00, 1.0),
            (0xc000, -2.0),
            (0x0001, tiny),
            (0x03ff, 1023.0 * tiny),
            (0x0400, 2f32.powi(-14)),
            (0x7bff, 65504.0),
            (0x7c00, f32::INFINITY),
            (0x8000, -0.0),
        ];
        for (h, f) in cases {
            assert_eq!(f32::from_bits(f16_to_f32(h)), f, "{h:#06x}");
        }
        assert!(f32::from_bits(f16_to_f32(0x7e00)).is_nan());
    }

    #[test]
    fn transposes_with_permutation() {
        // in_dim 3, out_dim 8 (one head of 8): element (i, o) = i * 8 + o
        let src: Vec<[u8; 4]> = (0..24u32).map(|v| v.to_le_bytes()).collect();
        let mut dst = vec![[0u8; 4]; 24];
        transpose_rows::<4>(&src, 3, 8, 0..8, Some(8), &mut dst);
        for o in 0..8 {
            for i in 0..3 {
                let got = u32::from_le_bytes(dst[o * 3 + i]);
                let col = permuted_source_row(o as u64, 8) as u32;
                assert_eq!(got, i as u32 * 8 + col);
            }
        }
    }
}
