//! The checkpoint cache against the real fake-gcs-server on 127.0.0.1 (no mocks). Without the
//! binary the tests fail under CI and skip elsewhere (herd_testkit::fake_gcs).

use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;
use herd_storage::cache::{Cache, CacheError};
use herd_storage::gcs::emulator::FakeGcs;
use herd_storage::gcs::{DownloadOptions, GcsClient};
use herd_testkit::fake_gcs;

async fn setup(objects: &[(&str, Vec<u8>)]) -> Option<(FakeGcs, GcsClient)> {
    let gcs = fake_gcs()?;
    let client = GcsClient::with_endpoint(&gcs.endpoint()).await.unwrap();
    client.create_bucket("bkt").await.unwrap();
    for (name, data) in objects {
        client
            .upload("bkt", name, Bytes::from(data.clone()))
            .await
            .unwrap();
    }
    Some((gcs, client))
}

fn opts() -> DownloadOptions {
    DownloadOptions {
        parallelism: 3,
        chunk_bytes: 4096,
    }
}

/// Counts downloaded bytes (progress reports running totals per fetch; we keep the max per call).
struct Counter(AtomicU64);
impl Counter {
    fn new() -> Self {
        Counter(AtomicU64::new(0))
    }
    fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

async fn fetch(
    cache: &Cache,
    client: &GcsClient,
    uri: &str,
    counter: &Counter,
) -> herd_storage::cache::CachedEntry {
    let seen = AtomicU64::new(0);
    let e = cache
        .fetch_object(client, uri, &|t| {
            seen.fetch_max(t, Ordering::Relaxed);
        })
        .await
        .unwrap_or_else(|e| panic!("{uri}: {e}"));
    counter
        .0
        .fetch_add(seen.load(Ordering::Relaxed), Ordering::Relaxed);
    e
}

#[tokio::test]
async fn fetch_twice_downloads_once() {
    let data = vec![7u8; 10_000];
    let Some((_gcs, client)) = setup(&[("run/step1/streaming_params", data.clone())]).await else {
        return;
    };
    let root = tempfile::tempdir().unwrap();
    let cache = Cache::open_with(root.path(), 1 << 20, opts()).unwrap();
    let n = Counter::new();
    let uri = "gs://bkt/run/step1/streaming_params";
    let a = fetch(&cache, &client, uri, &n).await;
    assert_eq!(n.get(), 10_000);
    assert_eq!(std::fs::read(a.path()).unwrap(), data);
    assert!(a.path().starts_with(root.path().join("entries")));
    assert_eq!(a.path().file_name().unwrap(), "streaming_params");
    assert_eq!(a.uri(), uri);
    let b = fetch(&cache, &client, uri, &n).await;
    assert_eq!(n.get(), 10_000, "second fetch must not download");
    assert_eq!(a.path(), b.path());
    assert_eq!(cache.used_bytes(), 10_000);
    assert_eq!(cache.cached_uris(), vec![uri.to_string()]);

    // concurrent fetches of a new object download it once
    let c2 = cache.clone();
    let cl2 = client.clone();
    client
        .upload("bkt", "other", Bytes::from(vec![1u8; 20_000]))
        .await
        .unwrap();
    let n2 = Counter::new();
    let (x, y) = tokio::join!(
        fetch(&cache, &client, "gs://bkt/other", &n2),
        fetch(&c2, &cl2, "gs://bkt/other", &n2)
    );
    assert_eq!(n2.get(), 20_000);
    assert_eq!(x.path(), y.path());

    // a changed object (new generation) is downloaded again
    drop((a, b));
    client
        .upload(
            "bkt",
            "run/step1/streaming_params",
            Bytes::from(vec![9u8; 5000]),
        )
        .await
        .unwrap();
    let c = fetch(&cache, &client, uri, &n).await;
    assert_eq!(std::fs::read(c.path()).unwrap(), vec![9u8; 5000]);
    assert_eq!(cache.used_bytes(), 25_000);

    // an object uri that is a prefix is refused with the uri named
    let e = cache
        .fetch_object(&client, "gs://bkt/run/", &|_| {})
        .await
        .unwrap_err();
    assert!(e.to_string().contains("gs://bkt/run/"), "{e}");
    let e = cache
        .fetch_object(&client, "gs://bkt/missing", &|_| {})
        .await
        .unwrap_err();
    assert!(
        e.is_not_found() && e.to_string().contains("gs://bkt/missing"),
        "{e}"
    );
}

#[tokio::test]
async fn lru_eviction_by_bytes_keeps_the_most_recent() {
    let objs: Vec<(&str, Vec<u8>)> = ["a", "b", "c", "d"]
        .iter()
        .map(|n| (*n, vec![n.as_bytes()[0]; 1000]))
        .collect();
    let Some((_gcs, client)) = setup(&objs).await else {
        return;
    };
    let root = tempfile::tempdir().unwrap();
    let cache = Cache::open_with(root.path(), 3000, opts()).unwrap();
    let n = Counter::new();
    drop(fetch(&cache, &client, "gs://bkt/a", &n).await);
    drop(fetch(&cache, &client, "gs://bkt/b", &n).await);
    drop(fetch(&cache, &client, "gs://bkt/a", &n).await); // a is now more recent than b
    drop(fetch(&cache, &client, "gs://bkt/c", &n).await);
    assert_eq!(cache.used_bytes(), 3000);
    assert_eq!(n.get(), 3000);
    drop(fetch(&cache, &client, "gs://bkt/d", &n).await);
    assert_eq!(
        cache.cached_uris(),
        ["gs://bkt/a", "gs://bkt/c", "gs://bkt/d"]
    );
    assert_eq!(cache.used_bytes(), 3000);
    // evicted files are gone from disk
    let dirs = std::fs::read_dir(root.path().join("entries"))
        .unwrap()
        .count();
    assert_eq!(dirs, 3);
}

#[tokio::test]
async fn pinned_entries_survive_eviction() {
    let objs: Vec<(&str, Vec<u8>)> = ["a", "b", "c", "d"]
        .iter()
        .map(|n| (*n, vec![n.as_bytes()[0]; 1000]))
        .collect();
    let Some((_gcs, client)) = setup(&objs).await else {
        return;
    };
    let root = tempfile::tempdir().unwrap();
    let cache = Cache::open_with(root.path(), 2000, opts()).unwrap();
    let n = Counter::new();
    let a = fetch(&cache, &client, "gs://bkt/a", &n).await; // pinned, and the oldest
    drop(fetch(&cache, &client, "gs://bkt/b", &n).await);
    let c = fetch(&cache, &client, "gs://bkt/c", &n).await; // must evict b, not a
    assert_eq!(cache.cached_uris(), ["gs://bkt/a", "gs://bkt/c"]);
    assert!(a.path().exists());
    // everything pinned: fetched anyway (over budget, with a warning), nothing pinned evicted
    let d = fetch(&cache, &client, "gs://bkt/d", &n).await;
    assert_eq!(
        cache.cached_uris(),
        ["gs://bkt/a", "gs://bkt/c", "gs://bkt/d"]
    );
    assert_eq!(cache.used_bytes(), 3000);
    assert!(a.path().exists() && c.path().exists() && d.path().exists());
    // once released, the next fetch brings the cache back under budget (LRU: a, then c)
    drop((a, c, d));
    drop(fetch(&cache, &client, "gs://bkt/b", &n).await);
    assert_eq!(cache.cached_uris(), ["gs://bkt/b", "gs://bkt/d"]);
    assert_eq!(cache.used_bytes(), 2000);
    // an entry larger than the whole budget is still fetched
    client
        .upload("bkt", "huge", Bytes::from(vec![0u8; 5000]))
        .await
        .unwrap();
    let h = fetch(&cache, &client, "gs://bkt/huge", &n).await;
    assert_eq!(std::fs::metadata(h.path()).unwrap().len(), 5000);
    assert_eq!(cache.cached_uris(), ["gs://bkt/huge"]);
}

#[tokio::test]
async fn restart_rebuilds_index_and_removes_temp_files() {
    let Some((_gcs, client)) = setup(&[("a", vec![1u8; 3000]), ("p/x.json", b"{}".to_vec())]).await
    else {
        return;
    };
    let root = tempfile::tempdir().unwrap();
    let n = Counter::new();
    let (path_a, path_p) = {
        let cache = Cache::open_with(root.path(), 1 << 20, opts()).unwrap();
        let a = fetch(&cache, &client, "gs://bkt/a", &n).await;
        let p = cache
            .fetch_prefix(&client, "gs://bkt/p", &|_| {})
            .await
            .unwrap();
        (a.path().to_path_buf(), p.path().to_path_buf())
    };
    // leftovers of a crash: a half-written download in staging (its writer, pid 0, is gone), a
    // partial file inside an entry, an entry directory without its sidecar, a sidecar temp file,
    // and a symlinked entry
    let staging = root.path().join("staging");
    std::fs::create_dir_all(staging.join("deadbeef-0-1/data")).unwrap();
    std::fs::write(
        staging.join("deadbeef-0-1/data/.x.herd-partial-1-1"),
        b"half",
    )
    .unwrap();
    let partial = path_a
        .parent()
        .unwrap()
        .join(format!(".a{}9-9", herd_storage::gcs::TEMP_MARKER));
    std::fs::write(&partial, b"half").unwrap();
    let incomplete = root.path().join("entries/00000000000000000000000000000000");
    std::fs::create_dir_all(incomplete.join("data")).unwrap();
    std::fs::write(incomplete.join("data/f"), b"x").unwrap();
    let side_tmp = path_a
        .parent()
        .unwrap()
        .parent()
        .unwrap()
        .join("entry.json.tmp");
    std::fs::write(&side_tmp, b"{").unwrap();
    let outside = tempfile::tempdir().unwrap();
    std::os::unix::fs::symlink(
        outside.path(),
        root.path().join("entries/11111111111111111111111111111111"),
    )
    .unwrap();

    let cache = Cache::open_with(root.path(), 1 << 20, opts()).unwrap();
    assert_eq!(cache.cached_uris(), ["gs://bkt/a", "gs://bkt/p/"]);
    assert_eq!(cache.used_bytes(), 3002);
    assert!(!partial.exists() && !side_tmp.exists() && !incomplete.exists());
    assert_eq!(std::fs::read_dir(&staging).unwrap().count(), 0);
    assert!(!root
        .path()
        .join("entries/11111111111111111111111111111111")
        .exists());
    assert!(
        outside.path().exists(),
        "a symlink's target is never touched"
    );
    let before = n.get();
    let a = fetch(&cache, &client, "gs://bkt/a", &n).await;
    assert_eq!(n.get(), before, "served from the rebuilt index");
    assert_eq!(a.path(), path_a);
    let p = cache
        .fetch_prefix(&client, "gs://bkt/p/", &|_| panic!("no download expected"))
        .await
        .unwrap();
    assert_eq!(p.path(), path_p);

    // a damaged entry (file truncated behind the cache's back) is dropped at the next open
    drop(a);
    std::fs::write(&path_a, b"short").unwrap();
    let cache = Cache::open_with(root.path(), 1 << 20, opts()).unwrap();
    assert_eq!(cache.cached_uris(), ["gs://bkt/p/"]);
}

#[tokio::test]
async fn prefix_fetch_keeps_relative_names() {
    let Some((_gcs, client)) = setup(&[
        ("models/tok/tokenizer.json", b"{\"t\":1}".to_vec()),
        ("models/tok/sub/config.json", b"{\"c\":2}".to_vec()),
        ("models/tok/", Vec::new()), // folder placeholder
        ("models/tok2/not-included", b"x".to_vec()),
    ])
    .await
    else {
        return;
    };
    let root = tempfile::tempdir().unwrap();
    let cache = Cache::open_with(root.path(), 1 << 20, opts()).unwrap();
    let total = AtomicU64::new(0);
    let e = cache
        .fetch_prefix(&client, "gs://bkt/models/tok", &|t| {
            total.fetch_max(t, Ordering::Relaxed);
        })
        .await
        .unwrap();
    assert_eq!(e.uri(), "gs://bkt/models/tok/");
    assert_eq!(total.load(Ordering::Relaxed), 14);
    assert_eq!(
        std::fs::read(e.path().join("tokenizer.json")).unwrap(),
        b"{\"t\":1}"
    );
    assert_eq!(
        std::fs::read(e.path().join("sub/config.json")).unwrap(),
        b"{\"c\":2}"
    );
    let mut top: Vec<String> = std::fs::read_dir(e.path())
        .unwrap()
        .map(|d| d.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    top.sort();
    assert_eq!(top, ["sub", "tokenizer.json"]);
    // same prefix with a trailing slash is the same entry, no download
    let again = cache
        .fetch_prefix(&client, "gs://bkt/models/tok/", &|_| {
            panic!("no download expected")
        })
        .await
        .unwrap();
    assert_eq!(again.path(), e.path());
    let missing = cache
        .fetch_prefix(&client, "gs://bkt/nothing-here", &|_| {})
        .await
        .unwrap_err();
    assert!(
        missing.is_not_found() && missing.to_string().contains("gs://bkt/nothing-here/"),
        "{missing}"
    );
}

#[tokio::test]
async fn traversal_names_refused() {
    let Some((_gcs, client)) = setup(&[
        ("evil1/a/../../x", b"x".to_vec()),
        ("evil2//abs", b"x".to_vec()),
        ("evil3/a//b", b"x".to_vec()),
        ("evil4/./x", b"x".to_vec()),
    ])
    .await
    else {
        return;
    };
    let root = tempfile::tempdir().unwrap();
    let cache = Cache::open_with(root.path(), 1 << 20, opts()).unwrap();
    for (prefix, name) in [
        ("evil1", "a/../../x"),
        ("evil2", "/abs"),
        ("evil3", "a//b"),
        ("evil4", "./x"),
    ] {
        let e = cache
            .fetch_prefix(&client, &format!("gs://bkt/{prefix}"), &|_| {})
            .await
            .unwrap_err();
        assert!(matches!(e, CacheError::UnsafeName { .. }), "{e:?}");
        let msg = e.to_string();
        assert!(
            msg.contains(&format!("gs://bkt/{prefix}/{name}"))
                && msg.contains(&format!("'{name}'")),
            "{msg}"
        );
    }
    assert!(cache.cached_uris().is_empty());
    assert!(!root.path().join("x").exists() && !root.path().join("entries/x").exists());
    assert_eq!(
        std::fs::read_dir(root.path().join("staging"))
            .unwrap()
            .count(),
        0
    );
}

#[tokio::test]
async fn remove_works() {
    let Some((_gcs, client)) = setup(&[("a", vec![1u8; 100]), ("t/x", vec![2u8; 10])]).await else {
        return;
    };
    let root = tempfile::tempdir().unwrap();
    let cache = Cache::open_with(root.path(), 1 << 20, opts()).unwrap();
    let n = Counter::new();
    let a = fetch(&cache, &client, "gs://bkt/a", &n).await;
    let path = a.path().to_path_buf();
    cache.remove("gs://bkt/a").unwrap(); // even while pinned (a corrupt checkpoint)
    assert!(!path.exists());
    assert!(cache.cached_uris().is_empty());
    assert_eq!(cache.used_bytes(), 0);
    drop(a);
    cache.remove("gs://bkt/a").unwrap(); // not cached: fine
    drop(fetch(&cache, &client, "gs://bkt/a", &n).await);
    assert_eq!(n.get(), 200, "downloaded again after remove");
    let t = cache
        .fetch_prefix(&client, "gs://bkt/t", &|_| {})
        .await
        .unwrap();
    drop(t);
    cache.remove("gs://bkt/t").unwrap(); // a prefix, without its trailing slash
    assert_eq!(cache.cached_uris(), ["gs://bkt/a"]);
}

#[tokio::test]
async fn cached_copy_served_when_gcs_is_unreachable() {
    let Some((mut gcs, client)) = setup(&[("a", vec![1u8; 100]), ("t/x", vec![2u8; 10])]).await
    else {
        return;
    };
    let root = tempfile::tempdir().unwrap();
    let cache = Cache::open_with(root.path(), 1 << 20, opts()).unwrap();
    let n = Counter::new();
    let path = fetch(&cache, &client, "gs://bkt/a", &n)
        .await
        .path()
        .to_path_buf();
    drop(
        cache
            .fetch_prefix(&client, "gs://bkt/t", &|_| {})
            .await
            .unwrap(),
    );
    gcs.stop();
    let a = fetch(&cache, &client, "gs://bkt/a", &n).await;
    assert_eq!(a.path(), path);
    assert_eq!(n.get(), 100);
    cache
        .fetch_prefix(&client, "gs://bkt/t", &|_| {})
        .await
        .unwrap();
    // nothing cached: the error names the uri
    let e = cache
        .fetch_object(&client, "gs://bkt/never", &|_| {})
        .await
        .unwrap_err();
    assert!(
        !e.is_not_found() && e.to_string().contains("gs://bkt/never"),
        "{e}"
    );
}

/// Workers sharing one cache root (one `Cache` each, as separate processes have) fetch the same
/// checkpoint and tokenizer folder at once: every fetch succeeds, all get the same complete
/// entry, and the root ends with one entry per uri and nothing left in staging. (Before the fix,
/// the losers' rename onto the winner's non-empty entry failed with "Directory not empty".)
#[tokio::test]
async fn workers_sharing_a_cache_root_fetch_the_same_uri_at_once() {
    let data: Vec<u8> = (0..600_000u32).map(|i| (i * 7 % 251) as u8).collect();
    let Some((_gcs, client)) = setup(&[
        ("run/step1/streaming_params", data.clone()),
        ("tok/tokenizer.json", b"{\"t\": 1}".to_vec()),
        ("tok/sub/x.model", vec![3u8; 5000]),
    ])
    .await
    else {
        return;
    };
    let root = tempfile::tempdir().unwrap();
    let uri = "gs://bkt/run/step1/streaming_params";
    for round in 0..3 {
        // a fresh root each round but the first: entries published before a cache opened are
        // adopted, entries published while it downloaded are raced
        let root = if round == 0 {
            root.path().to_path_buf()
        } else {
            let dir = root.path().join(format!("round{round}"));
            std::fs::create_dir_all(&dir).unwrap();
            dir
        };
        let caches: Vec<Cache> = (0..6)
            .map(|_| Cache::open_with(&root, 1 << 30, opts()).unwrap())
            .collect();
        let late = Cache::open_with(&root, 1 << 30, opts()).unwrap();
        let fetches = caches.iter().map(|cache| {
            let client = client.clone();
            async move {
                let object = cache.fetch_object(&client, uri, &|_| {}).await;
                let prefix = cache.fetch_prefix(&client, "gs://bkt/tok", &|_| {}).await;
                (object, prefix)
            }
        });
        let results = futures::future::join_all(fetches).await;
        let mut paths = std::collections::BTreeSet::new();
        for (object, prefix) in results {
            let object = object.unwrap_or_else(|e| panic!("round {round}: {e}"));
            let prefix = prefix.unwrap_or_else(|e| panic!("round {round}: {e}"));
            assert_eq!(std::fs::read(object.path()).unwrap(), data);
            assert_eq!(
                std::fs::read(prefix.path().join("sub/x.model")).unwrap(),
                vec![3u8; 5000]
            );
            paths.insert(object.path().to_path_buf());
        }
        assert_eq!(paths.len(), 1, "one entry for all workers");
        assert_eq!(std::fs::read_dir(root.join("entries")).unwrap().count(), 2);
        assert_eq!(std::fs::read_dir(root.join("staging")).unwrap().count(), 0);
        let reopened = Cache::open_with(&root, 1 << 30, opts()).unwrap();
        assert_eq!(
            reopened.cached_uris(),
            ["gs://bkt/run/step1/streaming_params", "gs://bkt/tok/"]
        );
        // a cache opened before the entry existed finds it on disk instead of downloading
        let again = late
            .fetch_object(&client, uri, &|_| panic!("no download expected"))
            .await
            .unwrap();
        assert_eq!(std::fs::read(again.path()).unwrap(), data);
    }
}
