//! Shared by the `worker` binary's tests: the committed fixtures and the EasyLM record writer
//! (herd-testkit).
// each test uses a part of it
#![allow(dead_code, unused_imports)]

pub use herd_testkit::easylm_records::*;
pub use herd_testkit::fixtures::*;
pub use herd_testkit::workspace_root as repo;

/// `worker score` on the CPU with one thread in `dtype` (fp32, bf16), run from `dir`: the
/// setting the parity tests compare with their goldens.
pub fn worker_score_cpu(dir: &std::path::Path, dtype: &str) -> std::process::Command {
    let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_worker"));
    command.current_dir(dir).args([
        "score",
        "--device",
        "cpu",
        "--dtype",
        dtype,
        "--threads",
        "1",
    ]);
    command
}

/// Asserts that a finished `worker` run exited 0, showing its stderr when it did not.
pub fn assert_success(out: &std::process::Output) {
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
