//! `HubOptions::from_env` and the environment-driven loaders. This file holds a single test, so
//! setting variables cannot race with other tests (each test file is its own process).

use std::path::Path;

use herd_rewardbench::dataset::load_pairs;
use herd_storage::hub::{load_pairs_from, HubOptions};

#[test]
fn environment_selects_cache_offline_mode_and_token() {
    let home = tempfile::tempdir().unwrap();
    let hub = home.path().join("hub");
    let repo = hub.join("datasets--allenai--reward-bench");
    let commit = "89abcdef0123456789abcdef0123456789abcdef";
    std::fs::create_dir_all(repo.join("refs")).unwrap();
    std::fs::write(repo.join("refs/main"), commit).unwrap();
    let file = repo
        .join("snapshots")
        .join(commit)
        .join("data/filtered-00000-of-00001.parquet");
    std::fs::create_dir_all(file.parent().unwrap()).unwrap();
    let golden = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../rewardbench/tests/golden/parquet/reward-bench/filtered-00000-of-00001.parquet");
    std::fs::copy(&golden, &file).unwrap();
    std::fs::write(home.path().join("token"), "hf_from_file\n").unwrap();

    for name in [
        "HF_HUB_CACHE",
        "HUGGINGFACE_HUB_CACHE",
        "HF_TOKEN",
        "HUGGING_FACE_HUB_TOKEN",
        "HF_TOKEN_PATH",
        "HF_ENDPOINT",
        "HF_DATASETS_OFFLINE",
    ] {
        std::env::remove_var(name);
    }
    std::env::set_var("HF_HOME", home.path());
    std::env::set_var("HF_HUB_OFFLINE", "1");

    let opts = HubOptions::from_env();
    assert_eq!(opts.cache_dir, hub);
    assert!(opts.offline);
    assert_eq!(opts.token.as_deref(), Some("hf_from_file"));
    assert_eq!(opts.endpoint, None);

    std::env::set_var("HF_TOKEN", "hf_from_env");
    std::env::set_var("HF_ENDPOINT", "http://127.0.0.1:9");
    let opts = HubOptions::from_env();
    assert_eq!(opts.token.as_deref(), Some("hf_from_env"));
    assert_eq!(opts.endpoint.as_deref(), Some("http://127.0.0.1:9"));

    let pairs = load_pairs_from("hf://datasets/allenai/reward-bench", Some("filtered")).unwrap();
    assert_eq!(pairs, load_pairs(&golden).unwrap());
    // a local path goes through the same entry point
    assert_eq!(
        load_pairs_from(golden.to_str().unwrap(), None).unwrap(),
        pairs
    );

    std::env::set_var("HF_HUB_OFFLINE", "false");
    std::env::set_var("HF_DATASETS_OFFLINE", "yes");
    assert!(HubOptions::from_env().offline);
    std::env::set_var("HF_DATASETS_OFFLINE", "0");
    assert!(!HubOptions::from_env().offline);

    std::env::set_var("HF_HUB_CACHE", home.path().join("elsewhere"));
    assert_eq!(
        HubOptions::from_env().cache_dir,
        home.path().join("elsewhere")
    );
}
