//! herd's worker: loads Llama-family reward models from Hugging Face folders and scores
//! preference pairs with libtorch exactly as RewardBench does (with transformers), faster.

pub mod agent;
pub mod allocator;
pub mod batching;
pub mod device;
pub mod dpo;
pub mod easylm;
pub mod encode;
pub mod error;
pub mod model_dir;
pub mod models;
pub mod output;
pub mod pipeline;
pub mod scoring;
pub mod tokenizer;
pub mod weights;
