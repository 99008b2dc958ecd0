//! Harness for herd's multi-process tests: the real `coord` and `worker` binaries, the real
//! fake-gcs-server, tiny EasyLM checkpoints generated from a seed, all on 127.0.0.1.

pub mod bins;
pub mod easylm;
pub mod fixture;
pub mod procs;
pub mod proxy;
pub mod scenario;
pub mod scores_file;
