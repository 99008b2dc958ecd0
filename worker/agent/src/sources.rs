//! Where a lease's checkpoint and tokenizer come from: a local path (used as it is), a GCS
//! object or folder (fetched into the local cache), or the Hugging Face hub.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use anyhow::Context;
use herd_storage::cache::{Cache, CacheError};
use herd_storage::gcs::{GcsClient, GcsError};

/// A checkpoint or tokenizer location as a lease names it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Location {
    Local(PathBuf),
    /// `gs://bucket/object`: one file (an EasyLM checkpoint)
    GcsObject(String),
    /// `gs://bucket/prefix/`: a folder (a tokenizer or a Hugging Face model)
    GcsFolder(String),
    /// `hf:org/name`
    Hub(String),
}

impl Location {
    /// `folder`: the caller knows the location is a folder (an HF model, a tokenizer), so a
    /// `gs://` URI without the trailing slash is still read as a prefix.
    pub fn parse(uri: &str, folder: bool) -> Location {
        if let Some(rest) = uri.strip_prefix("gs://") {
            if uri.ends_with('/') {
                Location::GcsFolder(uri.to_string())
            } else if folder {
                Location::GcsFolder(format!("gs://{rest}/"))
            } else {
                Location::GcsObject(uri.to_string())
            }
        } else if let Some(name) = uri.strip_prefix("hf:") {
            Location::Hub(name.trim_start_matches("//").to_string())
        } else {
            Location::Local(PathBuf::from(uri.strip_prefix("file://").unwrap_or(uri)))
        }
    }
}

/// Why a location could not be made local.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    #[error("{uri}: not found ({detail})")]
    NotFound { uri: String, detail: String },
    /// the bytes arrived but are wrong (checksum mismatch, truncated object)
    #[error("{uri}: {reason}")]
    Corrupt { uri: String, reason: String },
    /// a kind of location this worker cannot read
    #[error("{uri}: {reason}")]
    Unsupported { uri: String, reason: String },
    /// network, credentials, disk: may work on a retry
    #[error("{uri}: {error:#}")]
    Transient { uri: String, error: anyhow::Error },
}

impl SourceError {
    /// The location itself is bad or gone: retrying the same checkpoint elsewhere is pointless.
    pub fn is_permanent(&self) -> bool {
        !matches!(self, SourceError::Transient { .. })
    }
}

/// A location made local. Holding it keeps a cached entry pinned (not evicted).
pub struct Resolved {
    pub uri: String,
    pub path: PathBuf,
    /// the local copy lives in the cache (and is removed from it if it turns out to be bad)
    pub cached: bool,
    /// bytes downloaded to resolve it (0 when it was already local or cached)
    pub downloaded_bytes: u64,
    _pin: Option<Box<dyn std::any::Any + Send + Sync>>,
}

impl std::fmt::Debug for Resolved {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Resolved")
            .field("uri", &self.uri)
            .field("path", &self.path)
            .field("cached", &self.cached)
            .finish()
    }
}

/// Logs a download's progress at info every few seconds and keeps its running total.
struct DownloadProgress {
    uri: String,
    bytes: AtomicU64,
    started: Instant,
    last_log: Mutex<Instant>,
}

impl DownloadProgress {
    const EVERY: Duration = Duration::from_secs(5);

    fn new(uri: &str) -> Self {
        Self {
            uri: uri.to_string(),
            bytes: AtomicU64::new(0),
            started: Instant::now(),
            last_log: Mutex::new(Instant::now()),
        }
    }

    fn update(&self, total: u64) {
        self.bytes.store(total, Ordering::Relaxed);
        let mut last = self.last_log.lock().unwrap_or_else(|p| p.into_inner());
        if last.elapsed() >= Self::EVERY {
            *last = Instant::now();
            let seconds = self.started.elapsed().as_secs_f64();
            tracing::info!(
                uri = %self.uri,
                "downloading: {:.1} MB in {seconds:.0}s ({:.1} MB/s)",
                total as f64 / 1e6,
                total as f64 / 1e6 / seconds.max(1e-9)
            );
        }
    }
}

/// Sorts a cache/GCS failure: gone or corrupt is the checkpoint's fault, the rest may pass.
fn classify(uri: &str, error: CacheError) -> SourceError {
    let uri = uri.to_string();
    match error {
        error if error.is_not_found() => SourceError::NotFound {
            uri,
            detail: error.to_string(),
        },
        CacheError::Gcs(GcsError::Checksum { .. } | GcsError::Size { .. }) => {
            SourceError::Corrupt {
                uri,
                reason: error.to_string(),
            }
        }
        CacheError::Gcs(GcsError::InvalidUri { .. })
        | CacheError::UnsafeName { .. }
        | CacheError::Invalid { .. } => SourceError::Unsupported {
            uri,
            reason: error.to_string(),
        },
        error => SourceError::Transient {
            uri,
            error: error.into(),
        },
    }
}

/// The worker's sources: the checkpoint cache and the GCS client that fills it (made on first
/// use, so a worker that only reads local paths needs no credentials).
pub struct Sources {
    cache: Cache,
    gcs: tokio::sync::OnceCell<GcsClient>,
}

impl Sources {
    pub async fn new(cache_dir: PathBuf, cache_bytes: u64) -> anyhow::Result<Self> {
        let cache = Cache::open(&cache_dir, cache_bytes)
            .with_context(|| format!("opening the checkpoint cache {}", cache_dir.display()))?;
        tracing::info!(
            cache = %cache_dir.display(),
            entries = cache.cached_uris().len(),
            used_gb = cache.used_bytes() as f64 / 1e9,
            max_gb = cache_bytes as f64 / 1e9,
            "checkpoint cache"
        );
        Ok(Self {
            cache,
            gcs: tokio::sync::OnceCell::new(),
        })
    }

    /// Checkpoint URIs in the local cache (reported to the scheduler for locality).
    pub fn cached_uris(&self) -> Vec<String> {
        self.cache.cached_uris()
    }

    /// Drops a cached copy that turned out to be bad, so the next lease downloads it again.
    pub fn forget(&self, uri: &str) {
        if let Err(error) = self.cache.remove(uri) {
            tracing::warn!(uri, "could not remove the bad cache entry: {error}");
        }
    }

    async fn gcs(&self, uri: &str) -> Result<&GcsClient, SourceError> {
        self.gcs
            .get_or_try_init(GcsClient::from_env)
            .await
            .map_err(|error| SourceError::Transient {
                uri: uri.to_string(),
                error: error.into(),
            })
    }

    async fn fetch(&self, uri: &str, folder: bool) -> Result<Resolved, SourceError> {
        let client = self.gcs(uri).await?;
        let progress = DownloadProgress::new(uri);
        let report = |total: u64| progress.update(total);
        let entry = if folder {
            self.cache.fetch_prefix(client, uri, &report).await
        } else {
            self.cache.fetch_object(client, uri, &report).await
        }
        .map_err(|error| classify(uri, error))?;
        let downloaded_bytes = progress.bytes.load(Ordering::Relaxed);
        if downloaded_bytes > 0 {
            tracing::info!(
                uri,
                "downloaded {:.1} MB in {:.1}s",
                downloaded_bytes as f64 / 1e6,
                progress.started.elapsed().as_secs_f64()
            );
        }
        Ok(Resolved {
            uri: entry.uri().to_string(),
            path: entry.path().to_path_buf(),
            cached: true,
            downloaded_bytes,
            _pin: Some(Box::new(entry)),
        })
    }

    /// Makes `uri` local. `folder`: it names a folder (HF model, tokenizer) rather than a file.
    pub async fn resolve(&self, uri: &str, folder: bool) -> Result<Resolved, SourceError> {
        match Location::parse(uri, folder) {
            Location::Local(path) => {
                if !path.exists() {
                    return Err(SourceError::NotFound {
                        uri: uri.to_string(),
                        detail: format!("no such file or folder {}", path.display()),
                    });
                }
                Ok(Resolved {
                    uri: uri.to_string(),
                    path,
                    cached: false,
                    downloaded_bytes: 0,
                    _pin: None,
                })
            }
            Location::GcsObject(object) => self.fetch(&object, false).await,
            Location::GcsFolder(prefix) => self.fetch(&prefix, true).await,
            Location::Hub(name) => Err(SourceError::Unsupported {
                uri: uri.to_string(),
                reason: format!(
                    "Hugging Face hub models (hf:{name}) are not supported by the worker yet; \
                     download the folder and pass its path"
                ),
            }),
        }
    }

    /// Fetches `uri` into the cache ahead of its lease (an object, or a folder when there is no
    /// such object); local paths need nothing. The entry is left unpinned.
    pub async fn prefetch(&self, uri: &str) {
        let started = Instant::now();
        let result = match Location::parse(uri, false) {
            Location::Local(_) | Location::Hub(_) => return,
            Location::GcsFolder(prefix) => self.fetch(&prefix, true).await,
            Location::GcsObject(object) => match self.fetch(&object, false).await {
                Err(SourceError::NotFound { .. }) => self.fetch(&object, true).await,
                other => other,
            },
        };
        match result {
            Ok(resolved) => tracing::info!(
                uri,
                downloaded_mb = resolved.downloaded_bytes as f64 / 1e6,
                "prefetched in {:.1}s",
                started.elapsed().as_secs_f64()
            ),
            Err(error) => tracing::warn!(uri, "prefetch failed: {error}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_locations() {
        assert_eq!(
            Location::parse("gs://b/run/streaming_params", false),
            Location::GcsObject("gs://b/run/streaming_params".into())
        );
        assert_eq!(
            Location::parse("gs://b/tok", true),
            Location::GcsFolder("gs://b/tok/".into())
        );
        assert_eq!(
            Location::parse("gs://b/tok/", false),
            Location::GcsFolder("gs://b/tok/".into())
        );
        assert_eq!(
            Location::parse("hf:org/name", true),
            Location::Hub("org/name".into())
        );
        assert_eq!(
            Location::parse("/data/model", true),
            Location::Local("/data/model".into())
        );
    }

    #[tokio::test]
    async fn a_missing_local_path_is_not_found_and_permanent() {
        let dir = tempfile::tempdir().unwrap();
        let sources = Sources::new(dir.path().join("cache"), 1 << 30)
            .await
            .unwrap();
        let error = sources
            .resolve("/nonexistent/herd/streaming_params", false)
            .await
            .unwrap_err();
        assert!(error.is_permanent());
        assert!(error
            .to_string()
            .contains("/nonexistent/herd/streaming_params"));
    }
}
