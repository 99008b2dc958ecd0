//! Shared pieces of herd that need no libtorch: chat formatting, evaluation datasets and
//! RewardBench scoring. The worker and the coordinator both build on these.

pub mod bootstrap;
pub mod cache;
pub mod chat;
pub mod dataset;
pub mod dataset_v2;
pub mod gcs;
pub mod hub;
pub mod parquet_rows;
pub mod pyjson;
pub mod results;
pub mod rewardbench;
pub mod rewardbench2;
pub mod summary;
pub mod sweep;
pub mod telemetry;
