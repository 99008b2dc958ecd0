//! `hf://` sources on the Parquet fixtures of herd-rewardbench
//! (common/rewardbench/tests/golden/parquet/, written by tests/golden/make_parquet_fixture.py),
//! inside a fake Hugging Face cache. No network: the Hub options are explicit and offline, except
//! one test that points the endpoint at a closed loopback port and checks the fall-back to the
//! cache.

use std::path::{Path, PathBuf};

use herd_rewardbench::dataset::v2::{load_best_of_n, BestOfNRow};
use herd_rewardbench::dataset::{load_pairs, ExampleId, PreferencePair};
use herd_rewardbench::v1::PREF_TEST_SETS;
use herd_storage::hub::{load_pref_test_sets, load_source, HubOptions};

/// The Parquet fixtures live with the crate that reads Parquet.
fn golden(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../rewardbench/tests/golden/parquet")
        .join(rel)
}

const COMMIT: &str = "0123456789abcdef0123456789abcdef01234567";

/// A Hub cache as huggingface_hub lays it out: blobs named by etag, snapshot entries as relative
/// symlinks to them, `refs/main` holding the commit.
fn fake_cache(root: &Path, repo: &str, files: &[(&str, &Path)]) {
    let repo_dir = root.join(format!("datasets--{}", repo.replace('/', "--")));
    std::fs::create_dir_all(repo_dir.join("refs")).unwrap();
    std::fs::create_dir_all(repo_dir.join("blobs")).unwrap();
    std::fs::write(repo_dir.join("refs/main"), COMMIT).unwrap();
    for (i, (rel, source)) in files.iter().enumerate() {
        let etag = format!("{:064x}", 0xe7a9_u64 * 1_000 + i as u64);
        let blob = repo_dir.join("blobs").join(&etag);
        std::fs::copy(source, &blob).unwrap();
        let link = repo_dir.join("snapshots").join(COMMIT).join(rel);
        std::fs::create_dir_all(link.parent().unwrap()).unwrap();
        let depth = rel.split('/').count() + 1; // snapshots/<commit>/<rel...>
        let target = format!("{}blobs/{etag}", "../".repeat(depth));
        std::os::unix::fs::symlink(target, &link).unwrap();
        assert!(link.is_file(), "{}", link.display());
    }
}

fn offline(cache: &Path) -> HubOptions {
    HubOptions {
        cache_dir: cache.to_path_buf(),
        offline: true,
        token: None,
        endpoint: None,
    }
}

fn reward_bench_cache() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    fake_cache(
        dir.path(),
        "allenai/reward-bench",
        &[
            (".gitattributes", &golden("expected.json")),
            ("README.md", &golden("expected.json")),
            (
                "data/filtered-00000-of-00001.parquet",
                &golden("reward-bench/filtered-00000-of-00001.parquet"),
            ),
            (
                "data/raw-00000-of-00001.parquet",
                &golden("reward-bench/raw-00000-of-00001.parquet"),
            ),
        ],
    );
    dir
}

#[test]
fn hf_sources_resolve_in_an_offline_cache() {
    let dir = reward_bench_cache();
    let opts = offline(dir.path());
    let local = load_pairs(&golden("reward-bench/filtered-00000-of-00001.parquet")).unwrap();

    let (pairs, resolved) = load_source::<PreferencePair>(
        "hf://datasets/allenai/reward-bench",
        Some("filtered"),
        &opts,
    )
    .unwrap();
    assert_eq!(pairs, local);
    assert!(resolved.warnings.is_empty());
    assert_eq!(resolved.files.len(), 1);
    assert!(resolved.files[0].ends_with("data/filtered-00000-of-00001.parquet"));

    let (raw, _) =
        load_source::<PreferencePair>("hf://datasets/allenai/reward-bench", Some("raw"), &opts)
            .unwrap();
    assert_eq!(raw.len(), 3);

    // an explicit file, and a pinned commit
    let (by_path, _) = load_source::<PreferencePair>(
        "hf://datasets/allenai/reward-bench/data/filtered-00000-of-00001.parquet",
        None,
        &opts,
    )
    .unwrap();
    assert_eq!(by_path, local);
    let (by_commit, _) = load_source::<PreferencePair>(
        &format!("hf://datasets/allenai/reward-bench@{COMMIT}"),
        Some("filtered"),
        &opts,
    )
    .unwrap();
    assert_eq!(by_commit, local);

    let err = load_source::<PreferencePair>("hf://datasets/allenai/reward-bench", None, &opts)
        .unwrap_err()
        .to_string();
    assert_eq!(
        err,
        "hf://datasets/allenai/reward-bench: several splits (filtered, raw): name one (offline: HF_HUB_OFFLINE is set)"
    );
    let err =
        load_source::<PreferencePair>("hf://datasets/allenai/reward-bench", Some("test"), &opts)
            .unwrap_err()
            .to_string();
    assert!(
        err.contains("no data files for split \"test\" (splits found: filtered, raw)"),
        "{err}"
    );

    let err = load_source::<PreferencePair>("hf://datasets/allenai/other", Some("x"), &opts)
        .unwrap_err()
        .to_string();
    assert!(
        err.starts_with("hf://datasets/allenai/other: not in the local Hub cache (no "),
        "{err}"
    );
    assert!(err.contains("datasets--allenai--other/refs/main"), "{err}");
    assert!(err.ends_with("(offline: HF_HUB_OFFLINE is set)"), "{err}");
}

#[test]
fn pref_sets_and_rb2_from_the_cache() {
    let dir = tempfile::tempdir().unwrap();
    let hhh = golden("pref-test-sets/anthropic_hhh-00000-of-00001.parquet");
    let names: Vec<String> = PREF_TEST_SETS
        .iter()
        .chain(["pku_better", "pku_safer"].iter())
        .map(|s| format!("data/{s}-00000-of-00001.parquet"))
        .collect();
    let files: Vec<(&str, &Path)> = names.iter().map(|n| (n.as_str(), hhh.as_path())).collect();
    fake_cache(dir.path(), "allenai/pref-test-sets", &files);
    fake_cache(
        dir.path(),
        "allenai/reward-bench-2",
        &[(
            "data/test-00000-of-00001.parquet",
            &golden("reward-bench-2/test-00000-of-00001.parquet"),
        )],
    );
    let opts = offline(dir.path());

    let (pairs, warnings) =
        load_pref_test_sets("hf://datasets/allenai/pref-test-sets", &opts).unwrap();
    assert!(warnings.is_empty());
    assert_eq!(pairs.len(), 2 * PREF_TEST_SETS.len());
    for (i, set) in PREF_TEST_SETS.iter().enumerate() {
        assert_eq!(pairs[2 * i].pair.subset.as_deref(), Some(*set));
        assert_eq!(pairs[2 * i + 1].pair.subset.as_deref(), Some(*set));
        // the fixture's own subset column became the sub-subset
        assert_eq!(pairs[2 * i].subsubset.as_deref(), Some("helpful"));
    }

    // a single split; the data files of the repository hold only one: no split needed
    let (rows, _) =
        load_source::<BestOfNRow>("hf://datasets/allenai/reward-bench-2", None, &opts).unwrap();
    assert_eq!(
        rows,
        load_best_of_n(&golden("reward-bench-2/test-00000-of-00001.parquet")).unwrap()
    );
}

#[test]
fn shards_are_concatenated_and_ids_checked_across_them() {
    let dir = tempfile::tempdir().unwrap();
    let filtered = golden("reward-bench/filtered-00000-of-00001.parquet");
    let raw = golden("reward-bench/raw-00000-of-00001.parquet");
    fake_cache(
        dir.path(),
        "org/sharded",
        &[
            ("data/train-00000-of-00002.parquet", &filtered),
            ("data/train-00001-of-00002.parquet", &raw),
            ("data/dup-00000-of-00002.parquet", &raw),
            ("data/dup-00001-of-00002.parquet", &raw),
        ],
    );
    let opts = offline(dir.path());
    let (pairs, resolved) =
        load_source::<PreferencePair>("hf://datasets/org/sharded", Some("train"), &opts).unwrap();
    assert_eq!(resolved.files.len(), 2);
    assert_eq!(pairs.len(), 14);
    assert_eq!(pairs[11].id, ExampleId::Int(1000));
    let err = load_source::<PreferencePair>("hf://datasets/org/sharded", Some("dup"), &opts)
        .unwrap_err()
        .to_string();
    assert!(
        err.starts_with("hf://datasets/org/sharded: duplicate id 1000 in "),
        "{err}"
    );
    assert!(
        err.contains("dup-00001-of-00002.parquet row 1 (already used by "),
        "{err}"
    );
}

#[test]
fn unreachable_hub_falls_back_to_the_cache() {
    let dir = reward_bench_cache();
    let opts = HubOptions {
        cache_dir: dir.path().to_path_buf(),
        offline: false,
        token: Some("hf_test_token".into()),
        // a closed port on the loopback interface: the connection is refused at once
        endpoint: Some("http://127.0.0.1:9".into()),
    };
    let (pairs, resolved) =
        load_source::<PreferencePair>("hf://datasets/allenai/reward-bench", Some("raw"), &opts)
            .unwrap();
    assert_eq!(pairs.len(), 3);
    assert_eq!(resolved.warnings.len(), 1, "{:?}", resolved.warnings);
    assert!(resolved.warnings[0].contains("using the local Hub cache"));

    let err = load_source::<PreferencePair>("hf://datasets/allenai/nothing", Some("raw"), &opts)
        .unwrap_err()
        .to_string();
    assert!(err.contains("cannot list the repository"), "{err}");
    assert!(err.contains("not in the local Hub cache"), "{err}");
}
