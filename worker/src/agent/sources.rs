//! Where a lease's checkpoint and tokenizer come from: a local path (used as it is), a GCS
//! object or folder (fetched into the local cache), or the Hugging Face hub.

use std::path::PathBuf;

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

/// The worker's sources: the checkpoint cache and the clients that fill it.
pub struct Sources {
    cache_dir: PathBuf,
    cache_bytes: u64,
}

impl Sources {
    pub async fn new(cache_dir: PathBuf, cache_bytes: u64) -> anyhow::Result<Self> {
        Ok(Self {
            cache_dir,
            cache_bytes,
        })
    }

    pub fn cache_dir(&self) -> &std::path::Path {
        &self.cache_dir
    }

    pub fn cache_bytes(&self) -> u64 {
        self.cache_bytes
    }

    /// Checkpoint URIs in the local cache (reported to the scheduler for locality).
    pub fn cached_uris(&self) -> Vec<String> {
        Vec::new()
    }

    /// Drops a cached copy that turned out to be bad, so the next lease downloads it again.
    pub fn forget(&self, uri: &str) {
        tracing::debug!(uri, "nothing cached to forget");
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
            Location::GcsObject(_) | Location::GcsFolder(_) => Err(SourceError::Unsupported {
                uri: uri.to_string(),
                reason: "gs:// sources are not supported by this build of the worker yet".into(),
            }),
            Location::Hub(name) => Err(SourceError::Unsupported {
                uri: uri.to_string(),
                reason: format!(
                    "Hugging Face hub models (hf:{name}) are not supported by the worker yet; \
                     download the folder and pass its path"
                ),
            }),
        }
    }

    /// Fetches `uri` into the cache ahead of its lease; local paths need nothing.
    pub async fn prefetch(&self, uri: &str) {
        if let Location::Local(_) = Location::parse(uri, false) {
            return;
        }
        match self.resolve(uri, false).await {
            Ok(resolved) => tracing::info!(uri, path = %resolved.path.display(), "prefetched"),
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
        let sources = Sources::new(std::env::temp_dir(), 1 << 30).await.unwrap();
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
