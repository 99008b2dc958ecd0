//! herd's wire protocol and what every client of it shares: the protobuf messages and the two gRPC
//! services (`Workers`, `Sweeps`) the coordinator serves, the message-size limit, client transport
//! security and its flags, retries and backoff, the checkpoint format, the evaluation-set schema
//! and the scoring defaults.

pub mod v1 {
    tonic::include_proto!("herd.v1");
}

pub mod checkpoint;
pub mod client;
pub mod defaults;
pub mod schema;
pub mod security;

pub use checkpoint::CheckpointFormat;
pub use schema::EvalSchema;

/// The largest gRPC message either way, for the coordinator's server and every client: a lease
/// carries a whole shard's examples (every example's text), far above tonic's 4 MB default.
/// The coordinator decodes requests only up to its own, smaller `--max-message-bytes`.
pub const MAX_MESSAGE_BYTES: usize = 256 << 20;
