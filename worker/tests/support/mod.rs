//! Shared by the `worker` binary's tests: the committed fixtures and the EasyLM record writer
//! (herd-testkit).
// each test uses a part of it
#![allow(dead_code, unused_imports)]

pub use herd_testkit::easylm_records::*;
pub use herd_testkit::fixtures::*;
pub use herd_testkit::workspace_root as repo;
