//! GCS client against the real fake-gcs-server on 127.0.0.1 (no mocks). Without the
//! binary the tests fail under CI and skip elsewhere (herd_testkit::fake_gcs).

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use herd_storage::gcs::{DownloadOptions, GcsClient, GcsError, GcsUri, ObjectInfo};
use herd_testkit::fake_gcs;

/// Deterministic pseudo-random bytes.
fn blob(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

fn no_temp_files(dir: &std::path::Path) {
    for e in std::fs::read_dir(dir).unwrap() {
        let name = e.unwrap().file_name().to_string_lossy().into_owned();
        assert!(
            !name.contains(herd_storage::gcs::TEMP_MARKER),
            "left behind: {name}"
        );
    }
}

#[tokio::test]
async fn upload_list_stat_download() {
    let Some(gcs) = fake_gcs() else { return };
    let client = GcsClient::with_endpoint(&gcs.endpoint()).await.unwrap();
    client.create_bucket("ckpts").await.unwrap();
    client.create_bucket("ckpts").await.unwrap(); // idempotent

    let big = blob(5 * 1024 * 1024 + 123, 1);
    client
        .upload(
            "ckpts",
            "run1/step100/streaming_params",
            Bytes::from(big.clone()),
        )
        .await
        .unwrap();
    for (i, name) in [
        "run1/step100/config.json",
        "run1/step200/streaming_params",
        "run1/step200/nested/deeper/file.txt",
        "run10/other",
        "zzz",
    ]
    .iter()
    .enumerate()
    {
        client
            .upload("ckpts", name, Bytes::from(format!("payload {i} {name}")))
            .await
            .unwrap();
    }
    client.upload("ckpts", "empty", Bytes::new()).await.unwrap();

    // listing: recursive, prefix-filtered, across pages of 2
    let paged = client.clone().with_list_page_size(2);
    let names: Vec<String> = paged
        .list("ckpts", "run1/")
        .await
        .unwrap()
        .into_iter()
        .map(|o| o.name)
        .collect();
    assert_eq!(
        names,
        [
            "run1/step100/config.json",
            "run1/step100/streaming_params",
            "run1/step200/nested/deeper/file.txt",
            "run1/step200/streaming_params",
        ]
    );
    assert_eq!(paged.list("ckpts", "").await.unwrap().len(), 7);
    assert_eq!(client.list("ckpts", "run1").await.unwrap().len(), 5);
    assert!(client.list("ckpts", "nothing/").await.unwrap().is_empty());

    // stat: size, crc32c and generation from the JSON API
    let info = client
        .stat("ckpts", "run1/step100/streaming_params")
        .await
        .unwrap();
    assert_eq!(info.size, big.len() as u64);
    assert_eq!(info.crc32c, Some(crc32c::crc32c(&big)));
    assert!(info.generation > 0, "{info:?}");
    assert_eq!(info.uri(), "gs://ckpts/run1/step100/streaming_params");
    let listed = client.list("ckpts", "run1/step100/s").await.unwrap();
    assert_eq!(listed, vec![info.clone()]);

    // download in small chunks with parallelism: identical bytes, progress reaches the size
    let dir = tempfile::tempdir().unwrap();
    let dest = dir.path().join("streaming_params");
    let last = AtomicU64::new(0);
    let calls = AtomicU64::new(0);
    let opts = DownloadOptions {
        parallelism: 4,
        chunk_bytes: 256 * 1024,
    };
    let n = client
        .download(&info, &dest, &opts, &|t| {
            calls.fetch_add(1, Ordering::Relaxed);
            last.fetch_max(t, Ordering::Relaxed);
        })
        .await
        .unwrap();
    assert_eq!(n, big.len() as u64);
    assert_eq!(last.load(Ordering::Relaxed), big.len() as u64);
    assert!(calls.load(Ordering::Relaxed) >= 21);
    assert!(
        std::fs::read(&dest).unwrap() == big,
        "downloaded bytes differ"
    );
    no_temp_files(dir.path());

    // chunk bigger than the object, and an empty object
    let dest2 = dir.path().join("again");
    client
        .download(&info, &dest2, &DownloadOptions::default(), &|_| {})
        .await
        .unwrap();
    assert!(std::fs::read(&dest2).unwrap() == big);
    let empty = client.stat("ckpts", "empty").await.unwrap();
    assert_eq!(empty.size, 0);
    let dest3 = dir.path().join("empty");
    assert_eq!(
        client
            .download(&empty, &dest3, &opts, &|_| {})
            .await
            .unwrap(),
        0
    );
    assert_eq!(std::fs::read(&dest3).unwrap().len(), 0);
}

#[tokio::test]
async fn not_found_names_the_uri() {
    let Some(gcs) = fake_gcs() else { return };
    let client = GcsClient::with_endpoint(&gcs.endpoint()).await.unwrap();
    client.create_bucket("bkt").await.unwrap();
    let e = client.stat("bkt", "no/such/object").await.unwrap_err();
    assert!(e.is_not_found(), "{e:?}");
    assert!(e.to_string().contains("gs://bkt/no/such/object"), "{e}");

    let missing = ObjectInfo {
        bucket: "bkt".into(),
        name: "no/such/object".into(),
        size: 10,
        crc32c: None,
        generation: 0,
    };
    let dir = tempfile::tempdir().unwrap();
    let e = client
        .download(
            &missing,
            &dir.path().join("x"),
            &DownloadOptions::default(),
            &|_| {},
        )
        .await
        .unwrap_err();
    assert!(e.is_not_found(), "{e:?}");
    assert!(e.to_string().contains("gs://bkt/no/such/object"), "{e}");
    assert!(!dir.path().join("x").exists());
    no_temp_files(dir.path());

    let e = client.list("nobucket", "x/").await.unwrap_err();
    assert!(e.is_not_found(), "{e:?}");
    assert!(e.to_string().contains("gs://nobucket/x/"), "{e}");
}

#[tokio::test]
async fn checksum_mismatch_detected() {
    let Some(gcs) = fake_gcs() else { return };
    let client = GcsClient::with_endpoint(&gcs.endpoint()).await.unwrap();
    client.create_bucket("bkt").await.unwrap();
    let data = blob(300_000, 2);
    client
        .upload("bkt", "ckpt/params", Bytes::from(data.clone()))
        .await
        .unwrap();
    let mut info = client.stat("bkt", "ckpt/params").await.unwrap();
    let good = info.crc32c.unwrap();
    info.crc32c = Some(good ^ 1);
    let dir = tempfile::tempdir().unwrap();
    let dest = dir.path().join("params");
    let opts = DownloadOptions {
        parallelism: 3,
        chunk_bytes: 64 * 1024,
    };
    let e = client
        .download(&info, &dest, &opts, &|_| {})
        .await
        .unwrap_err();
    match &e {
        GcsError::Checksum {
            uri,
            expected,
            actual,
        } => {
            assert_eq!(uri, "gs://bkt/ckpt/params");
            assert_eq!(*expected, good ^ 1);
            assert_eq!(*actual, good);
        }
        other => panic!("expected a checksum error, got {other:?}"),
    }
    assert!(e.to_string().contains("gs://bkt/ckpt/params"), "{e}");
    assert!(
        !dest.exists(),
        "a failed download must not leave the destination"
    );
    no_temp_files(dir.path());

    // an existing destination is untouched by a failed download
    std::fs::write(&dest, b"old").unwrap();
    client
        .download(&info, &dest, &opts, &|_| {})
        .await
        .unwrap_err();
    assert_eq!(std::fs::read(&dest).unwrap(), b"old");

    // a wrong size is caught too
    info.crc32c = None;
    info.size += 5;
    let e = client
        .download(&info, &dir.path().join("sz"), &opts, &|_| {})
        .await
        .unwrap_err();
    assert!(
        matches!(e, GcsError::Size { .. }) && e.to_string().contains("gs://bkt/ckpt/params"),
        "{e:?}"
    );
}

#[tokio::test]
async fn from_env_honours_storage_emulator_host() {
    let Some(gcs) = fake_gcs() else { return };
    // without the scheme, as some tools set it
    std::env::set_var(
        "STORAGE_EMULATOR_HOST",
        gcs.endpoint().trim_start_matches("http://"),
    );
    let client = GcsClient::from_env().await.unwrap();
    std::env::remove_var("STORAGE_EMULATOR_HOST");
    assert_eq!(client.endpoint(), gcs.endpoint());
    client.create_bucket("envb").await.unwrap();
    client
        .upload("envb", "hello.txt", Bytes::from_static(b"hello world"))
        .await
        .unwrap();
    let info = client.stat("envb", "hello.txt").await.unwrap();
    assert_eq!(info.crc32c, Some(0xc99465aa));
    let dir = tempfile::tempdir().unwrap();
    let dest = dir.path().join("hello.txt");
    client
        .download(&info, &dest, &DownloadOptions::default(), &|_| {})
        .await
        .unwrap();
    assert_eq!(std::fs::read(&dest).unwrap(), b"hello world");
}

#[tokio::test]
async fn dead_endpoint_fails_in_seconds() {
    let Some(mut gcs) = fake_gcs() else { return };
    let client = GcsClient::with_endpoint(&gcs.endpoint()).await.unwrap();
    client.create_bucket("bkt").await.unwrap();
    client
        .upload("bkt", "x", Bytes::from_static(b"abc"))
        .await
        .unwrap();
    let info = client.stat("bkt", "x").await.unwrap();
    gcs.stop();
    let t = Instant::now();
    let e = client.stat("bkt", "x").await.unwrap_err();
    assert!(!e.is_not_found(), "{e:?}");
    assert!(e.to_string().contains("gs://bkt/x"), "{e}");
    let e = client.list("bkt", "").await.unwrap_err();
    assert!(e.to_string().contains("gs://bkt/"), "{e}");
    let dir = tempfile::tempdir().unwrap();
    let e = client
        .download(
            &info,
            &dir.path().join("x"),
            &DownloadOptions::default(),
            &|_| {},
        )
        .await
        .unwrap_err();
    assert!(e.to_string().contains("gs://bkt/x"), "{e}");
    assert!(
        t.elapsed() < Duration::from_secs(30),
        "took {:?}",
        t.elapsed()
    );
    no_temp_files(dir.path());
}

#[test]
fn uri_parse_errors_name_the_uri() {
    let u = GcsUri::parse("gs://ckpts/run1/").unwrap();
    assert_eq!((u.bucket.as_str(), u.object.as_str()), ("ckpts", "run1/"));
    let e = GcsUri::parse("/local/path").unwrap_err();
    assert!(e.to_string().contains("/local/path"), "{e}");
}
