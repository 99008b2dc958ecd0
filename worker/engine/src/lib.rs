//! herd's scoring engine: loads Llama-family reward models (Hugging Face folders or EasyLM
//! streaming checkpoints) into libtorch and scores preference pairs exactly as RewardBench does
//! with transformers, faster. The only crate of herd that links libtorch.
//!
//! * [`scorer`]: a scoring request end to end (tokenizer, chat template, model, batches), and the
//!   [`scorer::Scorer`] that keeps one model for several datasets.
//! * [`batching`]: plan -> pad -> forward -> scatter, the one loop every head runs in.
//! * [`classifier`] and [`dpo`]: what reward models and DPO models compute per batch.
//! * [`models`]: the architectures, their configs and heads, loaded through [`weights`].
//! * [`easylm`]: EasyLM streaming checkpoints, loaded directly or converted to a folder.

pub mod batching;
pub mod classifier;
pub mod device;
pub mod dpo;
pub mod easylm;
pub mod encode;
pub mod error;
pub mod model_dir;
pub mod models;
pub mod placement;
pub mod pooling;
pub mod provenance;
pub mod scorer;
pub mod sentencepiece;
pub mod tokenizer;
#[cfg(feature = "torch-save")]
pub mod torch_save;
pub mod weights;
