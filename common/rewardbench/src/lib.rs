//! RewardBench semantics, with no I/O service behind them (no async runtime, RPC, tracing export,
//! cloud storage or libtorch): what the worker needs to format and score examples and what the
//! coordinator needs to merge scores into RewardBench's numbers and files.
//!
//! - [`chat`]: conversations as the reward model sees them (Jinja chat templates, FastChat).
//! - [`dataset`]: evaluation datasets (JSONL, JSON, Parquet): preference pairs and best-of-n rows.
//! - [`v1`]: RewardBench 1 subsets, sections and scores; [`v1::bootstrap`] its confidence
//!   intervals. [`v2`]: RewardBench 2 scoring.
//! - [`pyjson`]: Python's `json` and `repr(float)` byte for byte, used by [`files`] and by the
//!   chat templates' `tojson`.
//! - [`files`]: the result files the RewardBench scripts and CLI write, one writer each.
//! - [`sweep_csv`]: the sweep CSV of allenai/hybrid-preferences.
//! - `summary` (feature `plot`): a sweep's Markdown table and PNG plot.

pub mod chat;
pub mod dataset;
pub mod files;
pub mod pyjson;
#[cfg(feature = "plot")]
pub mod summary;
pub mod sweep_csv;
pub mod v1;
pub mod v2;
