//! Tiny EasyLM reward-model checkpoints in the reference byte layout (streaming msgpack records
//! `[key path, flax to_bytes(ndarray)]`, bf16), generated from a seed so that each checkpoint of
//! a sweep ranks pairs differently. The vocabulary is Llama-2's (32000), so the real tokenizer in
//! ../shared/data/tokenizers/llama2 can feed it.

/// Shapes: hidden 16, 2 heads / 1 kv head of 8, ffn 24, 2 layers, vocab 32000.
pub const NUM_HEADS: i64 = 2;
const VOCAB: u64 = 32000;
const HIDDEN: u64 = 16;
const KV: u64 = 8;
const FFN: u64 = 24;
const LAYERS: u32 = 2;

/// The streaming_params bytes of a tiny reward model.
pub fn tiny_reward_model(seed: u64) -> Vec<u8> {
    let mut out = Vec::new();
    let mut n = 0u64;
    let mut add = |key: String, shape: &[u64]| {
        n += 1;
        let count: u64 = shape.iter().product();
        let parts: Vec<&str> = key.split('/').collect();
        out.extend(record(
            &parts,
            &ndarray(shape, &bf16_values(count, seed * 1000 + n)),
        ));
    };
    let (v, d, kv, f) = (VOCAB, HIDDEN, KV, FFN);
    add("transformer/wte/embedding".into(), &[v, d]);
    for i in 0..LAYERS {
        let h = format!("transformer/h/{i}");
        add(format!("{h}/attention/wq/kernel"), &[d, d]);
        add(format!("{h}/attention/wk/kernel"), &[d, kv]);
        add(format!("{h}/attention/wv/kernel"), &[d, kv]);
        add(format!("{h}/attention/wo/kernel"), &[d, d]);
        add(format!("{h}/feed_forward/w1/kernel"), &[d, f]);
        add(format!("{h}/feed_forward/w3/kernel"), &[d, f]);
        add(format!("{h}/feed_forward/w2/kernel"), &[f, d]);
        add(format!("{h}/attention_norm/kernel"), &[d]);
        add(format!("{h}/ffn_norm/kernel"), &[d]);
    }
    add("transformer/ln_f/kernel".into(), &[d]);
    add("score/kernel".into(), &[d, 1]);
    out
}

/// Uniform values in [-0.5, 0.5) as bf16 bytes (little endian), from a 64-bit LCG.
fn bf16_values(count: u64, seed: u64) -> Vec<u8> {
    let mut state = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    let mut out = Vec::with_capacity(count as usize * 2);
    for _ in 0..count {
        state = state
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        let unit = ((state >> 40) as f32) / ((1u64 << 24) as f32) - 0.5;
        out.extend(((unit.to_bits() >> 16) as u16).to_le_bytes());
    }
    out
}

fn record(key: &[&str], payload: &[u8]) -> Vec<u8> {
    let mut out = vec![0x92, 0x90 | key.len() as u8];
    for part in key {
        out.extend(str_bytes(part));
    }
    out.extend(bin_bytes(payload));
    out
}

/// flax `to_bytes(ndarray)`: ext 1 holding `[shape, "bfloat16", buffer]`.
fn ndarray(shape: &[u64], data: &[u8]) -> Vec<u8> {
    let mut inner = vec![0x93, 0x90 | shape.len() as u8];
    for &dim in shape {
        inner.push(0xce);
        inner.extend((dim as u32).to_be_bytes());
    }
    inner.extend(str_bytes("bfloat16"));
    inner.extend(bin_bytes(data));
    let mut out = vec![0xc9];
    out.extend((inner.len() as u32).to_be_bytes());
    out.push(1);
    out.extend(inner);
    out
}

fn str_bytes(text: &str) -> Vec<u8> {
    let mut out = vec![0xd9, text.len() as u8];
    out.extend(text.as_bytes());
    out
}

fn bin_bytes(data: &[u8]) -> Vec<u8> {
    let mut out = vec![0xc6];
    out.extend((data.len() as u32).to_be_bytes());
    out.extend(data);
    out
}
