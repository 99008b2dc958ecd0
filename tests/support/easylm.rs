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

use herd_testkit::easylm_records::{encode, llama_reward_model, LlamaShape};

/// The streaming_params bytes of a tiny reward model.
pub fn tiny_reward_model(seed: u64) -> Vec<u8> {
    let shape = LlamaShape {
        vocab: VOCAB,
        hidden: HIDDEN,
        kv: KV,
        ffn: FFN,
        layers: LAYERS,
    };
    encode(&llama_reward_model(&shape, |tensor| {
        seed * 1000 + tensor + 1
    }))
}
