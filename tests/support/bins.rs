//! Where the binaries under test are: next to the test executable's `deps/` folder.

use std::path::PathBuf;

/// `target/<profile>/<name>`, built by `cargo test --workspace` (the coordinator's and the
/// worker's own integration tests need their binaries) and by scripts/test beforehand.
pub fn binary(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("the test executable's path");
    let profile_dir = exe
        .parent()
        .and_then(|deps| deps.parent())
        .expect("target/<profile>/deps/<test>");
    let path = profile_dir.join(name);
    assert!(
        path.exists(),
        "{} is missing: build the binaries first (`cargo build --workspace --bins`, as scripts/test does)",
        path.display()
    );
    path
}
