//! Test support for every crate of the workspace: where the workspace and the shared data are,
//! the committed fixtures ([`fixtures`]), the EasyLM record writer ([`easylm_records`]), the fuzz
//! seeds replayed on stable ([`fuzz_seeds`]), and the one way a test deals with a prerequisite
//! the machine lacks (the shared data, the GCS emulator, the Python environment).
//!
//! A missing prerequisite fails the test when `$CI` is set (to anything but empty, `0` or
//! `false`): CI runs every test or fails. Elsewhere the test is skipped, and says so in exactly
//! one line, `SKIPPED: <test>: <reason>`, written to stderr past the test harness's output
//! capture (so `cargo test` shows it for a passing test too) and appended to the file
//! `$HERD_SKIP_LOG` names, which scripts/test collects.

pub mod easylm_records;
pub mod fixtures;
pub mod fuzz_seeds;
pub mod process;

use std::io::Write;
use std::path::{Path, PathBuf};

use herd_storage::gcs::emulator::{self, FakeGcs};

/// The file every skip line is appended to, when set.
pub const SKIP_LOG_ENV: &str = "HERD_SKIP_LOG";
/// Overrides where the shared data folder is (default: `shared/` beside the workspace root).
pub const SHARED_ENV: &str = "HERD_SHARED";

/// Overrides the workspace root, for test binaries run on another machine than the one that
/// built them (bench/gpu/run runs the parity tests' binaries on a GPU machine this way).
pub const WORKSPACE_ROOT_ENV: &str = "HERD_WORKSPACE_ROOT";

/// The workspace root: `$HERD_WORKSPACE_ROOT`, else where this crate was built (it lives in
/// `tests/testkit/`).
pub fn workspace_root() -> PathBuf {
    if let Some(root) = std::env::var_os(WORKSPACE_ROOT_ENV).filter(|r| !r.is_empty()) {
        return PathBuf::from(root);
    }
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .ancestors()
        .nth(2)
        .expect("tests/testkit lies two levels below the workspace root")
        .to_path_buf()
}

/// The shared data folder: `$HERD_SHARED`, else `shared/` beside the workspace root (where the
/// development machines and CI keep it). Whether it exists is for [`shared_path`] to check.
pub fn shared() -> PathBuf {
    match std::env::var_os(SHARED_ENV) {
        Some(dir) if !dir.is_empty() => PathBuf::from(dir),
        _ => workspace_root()
            .parent()
            .expect("the workspace root has a parent")
            .join("shared"),
    }
}

/// Whether missing prerequisites fail tests: `$CI` set to anything but empty, `0` or `false`.
pub fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|value| {
        !matches!(
            value.trim().to_ascii_lowercase().as_str(),
            "" | "0" | "false"
        )
    })
}

/// `<test target>::<test>`: libtest names each test's thread after the test; the target is the
/// test executable's name without cargo's hash suffix.
fn test_name() -> String {
    let target = std::env::current_exe()
        .ok()
        .and_then(|exe| {
            let stem = exe.file_stem()?.to_string_lossy().into_owned();
            Some(match stem.rsplit_once('-') {
                Some((name, hash)) if hash.chars().all(|c| c.is_ascii_hexdigit()) => {
                    name.to_string()
                }
                _ => stem,
            })
        })
        .unwrap_or_else(|| "test".to_string());
    match std::thread::current().name() {
        Some(name) if name != "main" => format!("{target}::{name}"),
        _ => target,
    }
}

/// Reports the missing prerequisite `what` (`how` says how to get it): panics under CI; elsewhere
/// writes the one skip line, and the caller returns from the test.
#[track_caller]
pub fn missing(what: &str, how: &str) {
    let test = test_name();
    assert!(
        !in_ci(),
        "{test}: {what} is missing, and CI=true requires every test to run: {how}"
    );
    let line = format!("SKIPPED: {test}: {what} is missing ({how})");
    // straight to the stderr handle: the print macros would be captured for a passing test
    let _ = writeln!(std::io::stderr().lock(), "{line}");
    if let Some(log) = std::env::var_os(SKIP_LOG_ENV).filter(|p| !p.is_empty()) {
        let appended = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .and_then(|mut file| file.write_all(format!("{line}\n").as_bytes()));
        if let Err(e) = appended {
            panic!(
                "{test}: cannot record the skip in ${SKIP_LOG_ENV} ({}): {e}",
                Path::new(&log).display()
            );
        }
    }
}

/// `found`, or (when it is `None`) [`missing`]`(what, how)` and `None`.
#[track_caller]
pub fn require<T>(found: Option<T>, what: &str, how: &str) -> Option<T> {
    if found.is_none() {
        missing(what, how);
    }
    found
}

/// A file or folder of the shared data (`relative` to [`shared`]), required.
#[track_caller]
pub fn shared_path(relative: &str) -> Option<PathBuf> {
    let path = shared().join(relative);
    require(
        path.exists().then(|| path.clone()),
        &format!("the shared data {}", path.display()),
        &format!("put the shared data folder beside the checkout, or set ${SHARED_ENV} to it"),
    )
}

/// A running fake-gcs-server (required; one that is installed but does not start fails).
#[track_caller]
pub fn fake_gcs() -> Option<FakeGcs> {
    require(
        emulator::binary(),
        "fake-gcs-server",
        "run scripts/setup, then `source scripts/env`; or set $HERD_FAKE_GCS_SERVER",
    )?;
    Some(
        FakeGcs::start()
            .unwrap_or_else(|e| panic!("fake-gcs-server is installed but does not start: {e}")),
    )
}

/// The herd Python environment's interpreter (torch + transformers), required:
/// `$HERD_PYTHON` as given, else `$HERD_CACHE/venv-torch-2.11.0/bin/python` (default cache
/// `~/.cache/herd`).
#[track_caller]
pub fn venv_python() -> Option<PathBuf> {
    let found = match std::env::var_os("HERD_PYTHON") {
        Some(python) if !python.is_empty() => Some(PathBuf::from(python)),
        _ => herd_cache()
            .map(|cache| cache.join("venv-torch-2.11.0/bin/python"))
            .filter(|python| python.is_file()),
    };
    require(
        found,
        "the herd Python environment (torch + transformers)",
        "run scripts/setup; or set $HERD_PYTHON to an interpreter that has them",
    )
}

/// Where scripts/setup installs the tools: `$HERD_CACHE`, else `~/.cache/herd`.
pub fn herd_cache() -> Option<PathBuf> {
    std::env::var_os("HERD_CACHE")
        .filter(|dir| !dir.is_empty())
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|home| Path::new(&home).join(".cache/herd")))
}

/// The deploy validators' interpreter (deploy/validate/requirements.txt: kubernetes-validate,
/// beaker-py), required: `$HERD_CACHE/venv-deploy-validate/bin/python`.
#[track_caller]
pub fn deploy_python() -> Option<PathBuf> {
    require(
        herd_cache()
            .map(|cache| cache.join("venv-deploy-validate/bin/python"))
            .filter(|python| python.is_file()),
        "the deploy validators' Python environment (kubernetes-validate, beaker-py)",
        "run scripts/setup (it installs deploy/validate/requirements.txt into \
         $HERD_CACHE/venv-deploy-validate)",
    )
}

/// The deploy validators' Node packages (deploy/validate/package.json: @grafana/schema,
/// typescript), required: the `node_modules` folder of `$HERD_CACHE/node-deploy-validate`.
#[track_caller]
pub fn deploy_node_modules() -> Option<PathBuf> {
    require(
        herd_cache()
            .map(|cache| cache.join("node-deploy-validate/node_modules"))
            .filter(|dir| dir.join("typescript").is_dir() && dir.join("@grafana/schema").is_dir()),
        "the deploy validators' Node packages (@grafana/schema, typescript) and node",
        "run scripts/setup (it runs npm ci for deploy/validate/package.json into \
         $HERD_CACHE/node-deploy-validate)",
    )
}

/// A program on `$PATH` (e.g. `prometheus`, `promtool` from Debian's prometheus package), required.
#[track_caller]
pub fn program(name: &str, how: &str) -> Option<PathBuf> {
    let found = std::env::var_os("PATH").and_then(|path| {
        std::env::split_paths(&path)
            .map(|dir| dir.join(name))
            .find(|candidate| candidate.is_file())
    });
    require(found, &format!("the program {name}"), how)
}
