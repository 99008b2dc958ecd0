//! A small writer of EasyLM streaming checkpoints: msgpack records `[key path, flax
//! to_bytes(ndarray)]` with the minimal encodings msgpack-python writes. Used by the engine's and
//! the worker's tests to craft inputs the fixture script does not, and by the multi-process tests
//! of tests/ for their tiny sweep checkpoints. Depends on nothing of herd.

pub fn str_bytes(text: &str) -> Vec<u8> {
    let mut out = Vec::new();
    let n = text.len();
    if n < 32 {
        out.push(0xa0 | n as u8);
    } else if n < 256 {
        out.extend([0xd9, n as u8]);
    } else {
        out.push(0xda);
        out.extend((n as u16).to_be_bytes());
    }
    out.extend(text.as_bytes());
    out
}

pub fn bin_bytes(data: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    let n = data.len();
    if n < 256 {
        out.extend([0xc4, n as u8]);
    } else if n < 65536 {
        out.push(0xc5);
        out.extend((n as u16).to_be_bytes());
    } else {
        out.push(0xc6);
        out.extend((n as u32).to_be_bytes());
    }
    out.extend(data);
    out
}

pub fn uint_bytes(v: u64) -> Vec<u8> {
    if v < 128 {
        vec![v as u8]
    } else if v < 65536 {
        let mut out = vec![0xcd];
        out.extend((v as u16).to_be_bytes());
        out
    } else {
        let mut out = vec![0xce];
        out.extend((v as u32).to_be_bytes());
        out
    }
}

pub fn array_header(n: usize) -> Vec<u8> {
    assert!(n < 16);
    vec![0x90 | n as u8]
}

pub fn ext_bytes(code: u8, data: &[u8]) -> Vec<u8> {
    let n = data.len();
    let mut out = match n {
        1 => vec![0xd4],
        2 => vec![0xd5],
        4 => vec![0xd6],
        8 => vec![0xd7],
        16 => vec![0xd8],
        n if n < 256 => vec![0xc7, n as u8],
        n if n < 65536 => {
            let mut v = vec![0xc8];
            v.extend((n as u16).to_be_bytes());
            v
        }
        n => {
            let mut v = vec![0xc9];
            v.extend((n as u32).to_be_bytes());
            v
        }
    };
    out.push(code);
    out.extend(data);
    out
}

/// flax `to_bytes(ndarray)`.
pub fn ndarray(shape: &[u64], dtype: &str, data: &[u8]) -> Vec<u8> {
    let mut inner = array_header(3);
    inner.extend(array_header(shape.len()));
    for &d in shape {
        inner.extend(uint_bytes(d));
    }
    inner.extend(str_bytes(dtype));
    inner.extend(bin_bytes(data));
    ext_bytes(1, &inner)
}

/// One streaming record `[key, payload]`.
pub fn record(key: &[&str], payload: &[u8]) -> Vec<u8> {
    let mut out = vec![0x92];
    out.extend(array_header(key.len()));
    for part in key {
        out.extend(str_bytes(part));
    }
    out.extend(bin_bytes(payload));
    out
}

/// A tensor of a crafted checkpoint.
#[derive(Clone, Debug)]
pub struct Tensor {
    pub key: Vec<String>,
    pub shape: Vec<u64>,
    pub dtype: String,
    pub data: Vec<u8>,
}

impl Tensor {
    pub fn encode(&self) -> Vec<u8> {
        let key: Vec<&str> = self.key.iter().map(String::as_str).collect();
        record(&key, &ndarray(&self.shape, &self.dtype, &self.data))
    }
}

/// Deterministic bf16 bytes of small values.
pub fn bf16_data(count: u64, seed: u64) -> Vec<u8> {
    let mut state = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    let mut out = Vec::with_capacity(count as usize * 2);
    for _ in 0..count {
        state = state
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        let unit = ((state >> 40) as f32) / ((1u64 << 24) as f32) - 0.5;
        let bits = (unit * 0.5).to_bits();
        out.extend(((bits >> 16) as u16).to_le_bytes());
    }
    out
}

/// The sizes of a LLaMA model (`kv`: the width of the k and v projections).
pub struct LlamaShape {
    pub vocab: u64,
    pub hidden: u64,
    pub kv: u64,
    pub ffn: u64,
    pub layers: u32,
}

/// The tensors of a LLaMA reward model under EasyLM's keys, in checkpoint order, each filled by
/// [`bf16_data`] with the seed `seed_of(position)`.
pub fn llama_reward_model(shape: &LlamaShape, seed_of: impl Fn(u64) -> u64) -> Vec<Tensor> {
    let LlamaShape {
        vocab: v,
        hidden: d,
        kv,
        ffn: f,
        layers,
    } = *shape;
    let mut tensors = Vec::new();
    let mut add = |key: String, shape: Vec<u64>| {
        let count = shape.iter().product();
        let seed = seed_of(tensors.len() as u64);
        tensors.push(Tensor {
            key: key.split('/').map(str::to_string).collect(),
            shape,
            dtype: "bfloat16".to_string(),
            data: bf16_data(count, seed),
        });
    };
    add("transformer/wte/embedding".into(), vec![v, d]);
    for i in 0..layers {
        let h = format!("transformer/h/{i}");
        add(format!("{h}/attention/wq/kernel"), vec![d, d]);
        add(format!("{h}/attention/wk/kernel"), vec![d, kv]);
        add(format!("{h}/attention/wv/kernel"), vec![d, kv]);
        add(format!("{h}/attention/wo/kernel"), vec![d, d]);
        add(format!("{h}/feed_forward/w1/kernel"), vec![d, f]);
        add(format!("{h}/feed_forward/w3/kernel"), vec![d, f]);
        add(format!("{h}/feed_forward/w2/kernel"), vec![f, d]);
        add(format!("{h}/attention_norm/kernel"), vec![d]);
        add(format!("{h}/ffn_norm/kernel"), vec![d]);
    }
    add("transformer/ln_f/kernel".into(), vec![d]);
    add("score/kernel".into(), vec![d, 1]);
    tensors
}

/// The streaming_params bytes of `tensors`.
pub fn encode(tensors: &[Tensor]) -> Vec<u8> {
    tensors.iter().flat_map(Tensor::encode).collect()
}
