//! Parallel ranged downloads, verified and renamed into place atomically.

use std::fs::{File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use futures::stream::{self, StreamExt, TryStreamExt};
use google_cloud_storage::model_ext::ReadRange;

use super::client::map_storage_error;
use super::{DownloadOptions, GcsClient, GcsError, ObjectInfo};

/// Marker in the names of half-written files; [`crate::cache::Cache::open`] deletes such files.
pub const TEMP_MARKER: &str = ".herd-partial-";

static TEMP_COUNTER: AtomicU64 = AtomicU64::new(0);

/// Removes the temporary file unless disarmed (error paths and cancelled futures).
struct TempGuard {
    path: Option<PathBuf>,
}

impl Drop for TempGuard {
    fn drop(&mut self) {
        if let Some(p) = self.path.take() {
            let _ = std::fs::remove_file(p);
        }
    }
}

impl GcsClient {
    /// Downloads `object` to `dest` with parallel ranged reads (`chunk_bytes` ranges,
    /// `parallelism` at once) into a temporary file beside `dest`. The CRC32C of the whole file is
    /// checked against the object's when GCS records one, the size always; then the file is
    /// fsynced and renamed atomically onto `dest` (and the directory fsynced). Reads are pinned to
    /// `object.generation` when it is known, so every range comes from the same version.
    ///
    /// `progress` is called with the running total of bytes received for this object.
    /// Returns the number of bytes written. On error (or when the future is dropped) the
    /// temporary file is removed and `dest` is untouched.
    pub async fn download(
        &self,
        object: &ObjectInfo,
        dest: &Path,
        options: &DownloadOptions,
        progress: &(dyn Fn(u64) + Send + Sync),
    ) -> Result<u64, GcsError> {
        let uri = object.uri();
        let io = |path: &Path, source: std::io::Error| GcsError::Io {
            uri: uri.clone(),
            path: path.to_path_buf(),
            source,
        };
        let dir = match dest.parent() {
            Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
            _ => PathBuf::from("."),
        };
        let file_name = dest
            .file_name()
            .ok_or_else(|| io(dest, std::io::Error::other("destination has no file name")))?
            .to_string_lossy()
            .into_owned();
        let tmp = dir.join(format!(
            ".{file_name}{TEMP_MARKER}{}-{}",
            std::process::id(),
            TEMP_COUNTER.fetch_add(1, Ordering::Relaxed)
        ));
        // create_new: never follows or reuses an existing path
        let file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&tmp)
            .map_err(|e| io(&tmp, e))?;
        let mut guard = TempGuard {
            path: Some(tmp.clone()),
        };
        file.set_len(object.size).map_err(|e| io(&tmp, e))?;

        let size = object.size;
        let chunk = options.chunk_bytes.max(1);
        let ranges: Vec<(u64, u64)> = (0..size.div_ceil(chunk))
            .map(|i| (i * chunk, chunk.min(size - i * chunk)))
            .collect();
        let received = AtomicU64::new(0);
        let file_ref = &file;
        let received_ref = &received;
        let uri_ref = &uri;
        let tmp_ref = &tmp;
        // (offset, len, crc32c of the range)
        let mut crcs: Vec<(u64, u64, u32)> = stream::iter(ranges)
            .map(|(off, len)| async move {
                let crc = self
                    .read_range(object, off, len, file_ref, tmp_ref, uri_ref, |n| {
                        let total = received_ref.fetch_add(n, Ordering::Relaxed) + n;
                        progress(total);
                    })
                    .await?;
                Ok::<_, GcsError>((off, len, crc))
            })
            .buffer_unordered(options.parallelism.max(1))
            .try_collect()
            .await?;

        crcs.sort_by_key(|c| c.0);
        let mut actual = 0u32;
        for &(_, len, crc) in &crcs {
            actual = crc32c::crc32c_combine(actual, crc, len as usize);
        }
        if let Some(expected) = object.crc32c {
            if expected != actual {
                return Err(GcsError::Checksum {
                    uri,
                    expected,
                    actual,
                });
            }
        }
        let written = file.metadata().map_err(|e| io(&tmp, e))?.len();
        if written != size {
            return Err(GcsError::Size {
                uri,
                expected: size,
                actual: written,
            });
        }
        file.sync_all().map_err(|e| io(&tmp, e))?;
        drop(file);
        std::fs::rename(&tmp, dest).map_err(|e| io(dest, e))?;
        guard.path = None;
        if let Ok(d) = File::open(&dir) {
            let _ = d.sync_all();
        }
        Ok(size)
    }

    /// Reads `len` bytes at `off` into `file` at the same offset; returns their CRC32C.
    #[allow(clippy::too_many_arguments)]
    async fn read_range(
        &self,
        object: &ObjectInfo,
        off: u64,
        len: u64,
        file: &File,
        path: &Path,
        uri: &str,
        on_bytes: impl Fn(u64),
    ) -> Result<u32, GcsError> {
        let mut req = self
            .storage
            .read_object(
                format!("projects/_/buckets/{}", object.bucket),
                &object.name,
            )
            .set_read_range(ReadRange::segment(off, len));
        if object.generation > 0 {
            req = req.set_generation(object.generation);
        }
        let mut resp = req
            .send()
            .await
            .map_err(|e| map_storage_error(e, uri, "download"))?;
        let mut pos = off;
        let mut crc = 0u32;
        while let Some(chunk) = resp.next().await {
            let chunk = chunk.map_err(|e| map_storage_error(e, uri, "download"))?;
            let n = chunk.len() as u64;
            if pos + n > off + len {
                return Err(GcsError::Size {
                    uri: uri.to_string(),
                    expected: len,
                    actual: pos + n - off,
                });
            }
            file.write_all_at(&chunk, pos).map_err(|e| GcsError::Io {
                uri: uri.to_string(),
                path: path.to_path_buf(),
                source: e,
            })?;
            crc = crc32c::crc32c_append(crc, &chunk);
            pos += n;
            on_bytes(n);
        }
        if pos != off + len {
            return Err(GcsError::Size {
                uri: uri.to_string(),
                expected: len,
                actual: pos - off,
            });
        }
        Ok(crc)
    }
}
