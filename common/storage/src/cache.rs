//! The worker's local checkpoint cache: `gs://` objects (checkpoint files) and prefixes (tokenizer or
//! Hugging Face model folders) kept on local disk, bounded in bytes, evicted least-recently-used.
//!
//! Layout under the root:
//! ```text
//! root/entries/<32 hex digits: digest of the uri>/entry.json    sidecar: uri, size, crc32c, generation,
//!                                                               last_used, and one record per file
//! root/entries/<digest>/data/<basename of the object>           an object entry
//! root/entries/<digest>/data/<relative names>                   a prefix entry (the folder is `data`)
//! root/staging/...                                              downloads in progress, evicted entries
//!                                                               being deleted; wiped by `Cache::open`
//! ```
//! Entry directories are named by a digest of the uri, never by object names. A download goes into
//! a fresh staging directory, is verified (size, and CRC32C when GCS records one), fsynced, gets
//! its sidecar, and only then is the whole directory renamed into `entries/`, so an entry that
//! exists is complete. Sidecar updates (last use) are written to a temporary file and renamed.
//!
//! A hit is checked against GCS metadata first (one `stat` or listing request): a changed
//! generation, size or CRC32C means the cached copy is stale and is downloaded again. When GCS
//! cannot be reached (transport errors, HTTP 5xx) a cached copy is served with a warning. The local
//! check on a hit is the file sizes recorded at download (the CRC32C was verified then; re-reading a
//! 26 GB checkpoint on every hit would defeat the cache).
//!
//! Budget: before a download, least-recently-used entries that are not pinned (no live
//! [`CachedEntry`]) are evicted until the new entry fits in `max_bytes`. **An entry larger than
//! `max_bytes` on its own, or one that cannot fit because the rest is pinned, is still fetched,
//! with a warning** (a worker must be able to score every checkpoint); the cache is then over
//! budget until the pins drop and the next fetch evicts. Pinned entries are never evicted.
//!
//! Symlinks are never followed: `open` deletes entries whose directory, sidecar or files are not
//! plain directories/files, and deletion uses `remove_dir_all`, which removes links, not targets.

use std::collections::HashMap;
use std::fs;
use std::io::Write;
use std::path::{Component, Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use futures::stream::{self, StreamExt, TryStreamExt};
use serde::{Deserialize, Serialize};

use crate::gcs::{DownloadOptions, GcsClient, GcsError, GcsUri, ObjectInfo};

const SIDECAR: &str = "entry.json";
const DATA: &str = "data";
const SIDECAR_VERSION: u32 = 1;

static STAGING_COUNTER: AtomicU64 = AtomicU64::new(0);

#[derive(thiserror::Error, Debug)]
pub enum CacheError {
    #[error(transparent)]
    Gcs(#[from] GcsError),
    #[error("checkpoint cache: {}: {source}", path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{uri}: refusing object name '{name}' under the prefix: {reason}")]
    UnsafeName {
        uri: String,
        name: String,
        reason: String,
    },
    #[error("{uri}: changed in GCS, but the cached copy is in use by another task; retry when it is released")]
    InUse { uri: String },
    #[error("{uri}: {reason}")]
    Invalid { uri: String, reason: String },
}

impl CacheError {
    pub fn is_not_found(&self) -> bool {
        matches!(self, CacheError::Gcs(e) if e.is_not_found())
    }
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> CacheError + '_ {
    move |source| CacheError::Io {
        path: path.to_path_buf(),
        source,
    }
}

#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
enum Kind {
    Object,
    Prefix,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
struct FileRecord {
    /// relative to the entry's data folder
    name: String,
    size: u64,
    crc32c: Option<u32>,
    generation: i64,
}

#[derive(Serialize, Deserialize, Clone, Debug)]
struct Sidecar {
    version: u32,
    uri: String,
    kind: Kind,
    /// total bytes of the files
    size: u64,
    /// the object's (Object kind only)
    crc32c: Option<u32>,
    generation: i64,
    /// logical clock: unix milliseconds, strictly increasing within a process
    last_used: u64,
    files: Vec<FileRecord>,
}

struct Entry {
    dir: PathBuf,
    meta: Sidecar,
}

impl Entry {
    fn path(&self) -> PathBuf {
        match self.meta.kind {
            Kind::Object => self.dir.join(DATA).join(&self.meta.files[0].name),
            Kind::Prefix => self.dir.join(DATA),
        }
    }
}

#[derive(Default)]
struct State {
    entries: HashMap<String, Entry>,
    pins: HashMap<String, usize>,
    locks: HashMap<String, Arc<tokio::sync::Mutex<()>>>,
    /// bytes of downloads in progress
    reserved: u64,
    clock: u64,
}

impl State {
    fn tick(&mut self) -> u64 {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0);
        self.clock = now.max(self.clock + 1);
        self.clock
    }
    fn used(&self) -> u64 {
        self.entries.values().map(|e| e.meta.size).sum()
    }
    fn pinned(&self, uri: &str) -> bool {
        self.pins.get(uri).copied().unwrap_or(0) > 0
    }
}

struct Inner {
    entries_dir: PathBuf,
    staging_dir: PathBuf,
    max_bytes: u64,
    download: DownloadOptions,
    state: Mutex<State>,
}

/// The local checkpoint cache. Cheap to clone (shared state); safe to use from many tokio tasks:
/// concurrent fetches of one uri download it once.
#[derive(Clone)]
pub struct Cache {
    inner: Arc<Inner>,
}

/// A cached file (object) or folder (prefix). Pins the entry against eviction while alive.
pub struct CachedEntry {
    inner: Arc<Inner>,
    uri: String,
    path: PathBuf,
    size: u64,
}

impl CachedEntry {
    /// The file (object) or folder (prefix).
    pub fn path(&self) -> &Path {
        &self.path
    }
    /// The uri as cached (a prefix always ends with '/').
    pub fn uri(&self) -> &str {
        &self.uri
    }
    /// Bytes on disk.
    pub fn size(&self) -> u64 {
        self.size
    }
}

impl std::fmt::Debug for CachedEntry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CachedEntry")
            .field("uri", &self.uri)
            .field("path", &self.path)
            .finish()
    }
}

impl Drop for CachedEntry {
    fn drop(&mut self) {
        let mut st = self.inner.state.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(n) = st.pins.get_mut(&self.uri) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                st.pins.remove(&self.uri);
            }
        }
    }
}

/// 128-bit FNV-1a of `s`, as 32 hex digits (stable across versions and platforms).
fn digest(s: &str) -> String {
    let mut h: u128 = 0x6c62272e07bb014262b821756295c58d;
    for b in s.bytes() {
        h ^= b as u128;
        h = h.wrapping_mul(0x0000000001000000000000000000013B);
    }
    format!("{h:032x}")
}

/// Checks a relative object name (below a prefix) and turns it into a relative path.
fn safe_relative(name: &str) -> Result<PathBuf, &'static str> {
    if name.is_empty() {
        return Err("the relative name is empty");
    }
    if name.starts_with('/') {
        return Err("absolute path");
    }
    if name.contains('\0') || name.contains('\\') {
        return Err("NUL or backslash in the name");
    }
    let mut out = PathBuf::new();
    for part in name.split('/') {
        match part {
            "" => return Err("empty path component ('//' or a trailing '/')"),
            "." | ".." => return Err("'.' or '..' component"),
            p if p.len() > 255 => return Err("a path component is longer than 255 bytes"),
            p => out.push(p),
        }
    }
    // belt and braces: only normal components
    if !out.components().all(|c| matches!(c, Component::Normal(_))) {
        return Err("resolves outside the folder");
    }
    Ok(out)
}

/// Basename of an object for its cached file; "object" when it is not a safe single component.
fn object_file_name(object: &str) -> String {
    let base = object.rsplit('/').next().unwrap_or("");
    match safe_relative(base) {
        Ok(_) => base.to_string(),
        Err(_) => "object".to_string(),
    }
}

fn is_plain_dir(p: &Path) -> bool {
    fs::symlink_metadata(p).map(|m| m.is_dir()).unwrap_or(false)
}

fn write_sidecar(dir: &Path, meta: &Sidecar) -> Result<(), CacheError> {
    // a name of its own: workers sharing the cache root may update one entry's sidecar at once,
    // and each must rename a complete file of its own into place
    let tmp = dir.join(format!(
        "{SIDECAR}.tmp-{}-{}",
        std::process::id(),
        STAGING_COUNTER.fetch_add(1, Ordering::Relaxed)
    ));
    let path = dir.join(SIDECAR);
    let bytes = serde_json::to_vec_pretty(meta).expect("sidecar serializes");
    let mut f = fs::File::create(&tmp).map_err(io_err(&tmp))?;
    f.write_all(&bytes).map_err(io_err(&tmp))?;
    f.sync_all().map_err(io_err(&tmp))?;
    drop(f);
    fs::rename(&tmp, &path).map_err(io_err(&path))
}

/// Checks an entry directory found on disk; returns its sidecar when complete and sane.
fn load_entry(dir: &Path) -> Result<Sidecar, String> {
    if !is_plain_dir(dir) {
        return Err("not a directory (symlink?)".into());
    }
    let side = dir.join(SIDECAR);
    let m = fs::symlink_metadata(&side).map_err(|e| format!("{SIDECAR}: {e}"))?;
    if !m.is_file() {
        return Err(format!("{SIDECAR} is not a plain file"));
    }
    let meta: Sidecar = serde_json::from_slice(&fs::read(&side).map_err(|e| e.to_string())?)
        .map_err(|e| format!("{SIDECAR}: {e}"))?;
    if meta.version != SIDECAR_VERSION {
        return Err(format!("sidecar version {}", meta.version));
    }
    let name = dir.file_name().and_then(|n| n.to_str()).unwrap_or("");
    if digest(&meta.uri) != name {
        return Err(format!(
            "directory name does not match the digest of {}",
            meta.uri
        ));
    }
    if meta.files.is_empty() || (meta.kind == Kind::Object && meta.files.len() != 1) {
        return Err("no files recorded".into());
    }
    if meta.files.iter().map(|f| f.size).sum::<u64>() != meta.size {
        return Err("recorded sizes disagree".into());
    }
    let data = dir.join(DATA);
    if !is_plain_dir(&data) {
        return Err("data folder missing or not a plain directory".into());
    }
    for f in &meta.files {
        let rel = safe_relative(&f.name).map_err(|r| format!("file '{}': {r}", f.name))?;
        // every component must be a plain directory, the last a plain file: no symlinks
        let mut p = data.clone();
        let n = rel.components().count();
        for (i, c) in rel.components().enumerate() {
            p.push(c);
            let m = fs::symlink_metadata(&p).map_err(|e| format!("{}: {e}", p.display()))?;
            let ok = if i + 1 == n { m.is_file() } else { m.is_dir() };
            if !ok {
                return Err(format!("{}: not a plain file or directory", p.display()));
            }
            if i + 1 == n && m.len() != f.size {
                return Err(format!(
                    "{}: {} bytes on disk, {} recorded",
                    p.display(),
                    m.len(),
                    f.size
                ));
            }
        }
    }
    Ok(meta)
}

/// Deletes leftovers of interrupted writes (download temp files, sidecar temps) below `dir`.
fn remove_temp_files(dir: &Path) {
    let Ok(rd) = fs::read_dir(dir) else { return };
    for e in rd.flatten() {
        let p = e.path();
        let Ok(m) = fs::symlink_metadata(&p) else {
            continue;
        };
        let name = e.file_name().to_string_lossy().into_owned();
        if m.is_dir() {
            remove_temp_files(&p);
        } else if name.contains(crate::gcs::TEMP_MARKER)
            || name.starts_with(&format!("{SIDECAR}.tmp"))
        {
            let _ = fs::remove_file(&p);
        }
    }
}

/// An entry is still good if the remote metadata matches what was downloaded.
fn same_files(a: &[FileRecord], b: &[FileRecord]) -> bool {
    a == b
}

/// Unreachable GCS (as opposed to "it says no"): serve a cached copy instead of failing.
fn is_unreachable(e: &GcsError) -> bool {
    match e {
        GcsError::Request { .. } => true,
        GcsError::Http { status, .. } => *status >= 500,
        _ => false,
    }
}

/// Whether the process that named a staging directory (`<what>-<pid>-<n>`) is still running
/// on this machine (`/proc/<pid>` exists; where there is no /proc, none is taken as running).
/// This process's own leftovers cannot exist yet when the cache opens.
fn staging_owner_alive(name: &str) -> bool {
    let mut parts = name.rsplit('-');
    let (Some(_counter), Some(pid)) = (parts.next(), parts.next()) else {
        return false;
    };
    match pid.parse::<u32>() {
        Ok(pid) if pid != std::process::id() => Path::new("/proc").join(pid.to_string()).exists(),
        _ => false,
    }
}

impl Cache {
    /// Opens (creating) the cache at `root` with a budget of `max_bytes`, rebuilding the index
    /// from the sidecars on disk. Half-written downloads and incomplete or unsafe entries
    /// (symlinks, missing files, size mismatch) are deleted.
    pub fn open(root: &Path, max_bytes: u64) -> Result<Cache, CacheError> {
        Self::open_with(root, max_bytes, DownloadOptions::default())
    }

    /// [`Cache::open`] with explicit download options (parallelism, chunk size).
    pub fn open_with(
        root: &Path,
        max_bytes: u64,
        download: DownloadOptions,
    ) -> Result<Cache, CacheError> {
        let entries_dir = root.join("entries");
        let staging_dir = root.join("staging");
        for d in [root, &entries_dir, &staging_dir] {
            fs::create_dir_all(d).map_err(io_err(d))?;
            if !is_plain_dir(d) {
                return Err(CacheError::Io {
                    path: d.to_path_buf(),
                    source: std::io::Error::other("not a plain directory (a symlink?)"),
                });
            }
        }
        // staging holds interrupted downloads and unfinished deletions, and, on a root shared by
        // several workers, the downloads in progress of the others: a name ends in
        // `-<pid>-<n>`, and what a live process is writing is left to it
        for e in fs::read_dir(&staging_dir)
            .map_err(io_err(&staging_dir))?
            .flatten()
        {
            let p = e.path();
            if staging_owner_alive(&e.file_name().to_string_lossy()) {
                continue;
            }
            let r = if is_plain_dir(&p) {
                fs::remove_dir_all(&p)
            } else {
                fs::remove_file(&p)
            };
            if let Err(err) = r {
                tracing::warn!(path = %p.display(), error = %err, "checkpoint cache: could not delete a leftover");
            }
        }
        let mut state = State::default();
        for e in fs::read_dir(&entries_dir)
            .map_err(io_err(&entries_dir))?
            .flatten()
        {
            let dir = e.path();
            remove_temp_files(&dir);
            match load_entry(&dir) {
                Ok(meta) => {
                    state.clock = state.clock.max(meta.last_used);
                    state.entries.insert(meta.uri.clone(), Entry { dir, meta });
                }
                Err(reason) => {
                    tracing::warn!(path = %dir.display(), %reason, "checkpoint cache: deleting an incomplete or unsafe entry");
                    let r = if is_plain_dir(&dir) {
                        fs::remove_dir_all(&dir)
                    } else {
                        fs::remove_file(&dir)
                    };
                    if let Err(err) = r {
                        tracing::warn!(path = %dir.display(), error = %err, "checkpoint cache: could not delete");
                    }
                }
            }
        }
        Ok(Cache {
            inner: Arc::new(Inner {
                entries_dir,
                staging_dir,
                max_bytes,
                download,
                state: Mutex::new(state),
            }),
        })
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.inner.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The uris cached now, sorted (prefixes end with '/').
    pub fn cached_uris(&self) -> Vec<String> {
        let mut v: Vec<String> = self.state().entries.keys().cloned().collect();
        v.sort();
        v
    }

    /// Bytes held by complete entries (downloads in progress not included).
    pub fn used_bytes(&self) -> u64 {
        self.state().used()
    }

    /// The budget given to [`Cache::open`].
    pub fn max_bytes(&self) -> u64 {
        self.inner.max_bytes
    }

    /// Deletes the entry for `uri` (an object, or a prefix with or without the trailing '/'),
    /// e.g. after it turned out corrupt. It is deleted even while pinned: holders' paths stop
    /// existing (open files stay readable). Removing a uri that is not cached is not an error.
    pub fn remove(&self, uri: &str) -> Result<(), CacheError> {
        let victim = {
            let mut st = self.state();
            let key = if st.entries.contains_key(uri) {
                uri.to_string()
            } else {
                format!("{}/", uri.trim_end_matches('/'))
            };
            match st.entries.remove(&key) {
                Some(e) => self.move_to_staging(&e.dir, "removed")?,
                None => return Ok(()),
            }
        };
        fs::remove_dir_all(&victim).map_err(io_err(&victim))
    }

    /// Renames an entry directory into staging (fast, atomic) so it can be deleted outside the lock.
    fn move_to_staging(&self, dir: &Path, why: &str) -> Result<PathBuf, CacheError> {
        let to = self.inner.staging_dir.join(format!(
            "{why}-{}-{}",
            std::process::id(),
            STAGING_COUNTER.fetch_add(1, Ordering::Relaxed)
        ));
        fs::rename(dir, &to).map_err(io_err(dir))?;
        Ok(to)
    }

    fn uri_lock(&self, uri: &str) -> Arc<tokio::sync::Mutex<()>> {
        self.state()
            .locks
            .entry(uri.to_string())
            .or_default()
            .clone()
    }

    fn pin(&self, st: &mut State, uri: &str) -> Option<CachedEntry> {
        let last_used = st.tick();
        let e = st.entries.get_mut(uri)?;
        e.meta.last_used = last_used;
        if let Err(err) = write_sidecar(&e.dir, &e.meta) {
            tracing::warn!(%uri, error = %err, "checkpoint cache: could not record the last use");
        }
        let entry = CachedEntry {
            inner: self.inner.clone(),
            uri: uri.to_string(),
            path: e.path(),
            size: e.meta.size,
        };
        *st.pins.entry(uri.to_string()).or_default() += 1;
        Some(entry)
    }

    /// A hit: the entry exists with these files (when `remote` is given) and its files are on
    /// disk with the recorded sizes. A damaged entry is deleted.
    fn lookup(&self, uri: &str, remote: Option<&[FileRecord]>) -> Option<CachedEntry> {
        let (entry, dir) = {
            let mut st = self.state();
            if !st.entries.contains_key(uri) {
                self.adopt_from_disk(&mut st, uri);
            }
            let e = st.entries.get(uri)?;
            if let Some(r) = remote {
                if !same_files(&e.meta.files, r) {
                    return None;
                }
            }
            let dir = e.dir.clone();
            (self.pin(&mut st, uri)?, dir)
        };
        match load_entry(&dir) {
            Ok(_) => Some(entry),
            Err(reason) => {
                tracing::warn!(%uri, %reason, "checkpoint cache: cached copy damaged, fetching again");
                drop(entry);
                let _ = self.remove(uri);
                None
            }
        }
    }

    /// An entry another process sharing this cache root published after [`Cache::open`] read the
    /// index: taken into the index when it is complete and is this uri's.
    fn adopt_from_disk(&self, st: &mut State, uri: &str) -> bool {
        let dir = self.inner.entries_dir.join(digest(uri));
        match load_entry(&dir) {
            Ok(meta) if meta.uri == uri => {
                st.clock = st.clock.max(meta.last_used);
                st.entries.insert(uri.to_string(), Entry { dir, meta });
                true
            }
            _ => false,
        }
    }

    /// Moves a finished download from staging to `entries/<digest>` (one rename, so an entry that
    /// exists is complete) and returns the entry's sidecar.
    ///
    /// Workers sharing the cache root may download the same uri at the same time: the first
    /// rename wins, and the next one finds a non-empty directory in its way (`ENOTEMPTY`). Then
    /// the winner's entry is kept when it is complete and holds the same files (same
    /// generations, sizes and CRC32C), and this copy is discarded; a damaged or different
    /// entry in the way is moved aside and this copy takes its place. Nothing complete is lost.
    fn publish(&self, uri: &str, staging: &Path, meta: Sidecar) -> Result<Sidecar, CacheError> {
        let dir = self.inner.entries_dir.join(digest(uri));
        let mut last_error = None;
        for _ in 0..3 {
            match fs::rename(staging, &dir) {
                Ok(()) => {
                    if let Ok(d) = fs::File::open(&self.inner.entries_dir) {
                        let _ = d.sync_all();
                    }
                    return Ok(meta);
                }
                Err(e) if fs::symlink_metadata(&dir).is_ok() => {
                    match load_entry(&dir) {
                        Ok(theirs)
                            if theirs.uri == uri && same_files(&theirs.files, &meta.files) =>
                        {
                            tracing::info!(%uri, "checkpoint cache: another worker published this entry first; using its copy");
                            let _ = fs::remove_dir_all(staging);
                            return Ok(theirs);
                        }
                        _ => {
                            tracing::warn!(%uri, "checkpoint cache: replacing a damaged or outdated entry published by another worker");
                            let aside = self.move_to_staging(&dir, "replaced");
                            if let Ok(aside) = aside {
                                let _ = fs::remove_dir_all(aside);
                            }
                        }
                    }
                    last_error = Some(e);
                }
                Err(e) => {
                    last_error = Some(e);
                    break;
                }
            }
        }
        let _ = fs::remove_dir_all(staging);
        Err(CacheError::Io {
            path: dir,
            source: last_error.unwrap_or_else(|| std::io::Error::other("could not publish")),
        })
    }

    /// Makes room for `size` bytes: evicts least-recently-used unpinned entries (never `keep`),
    /// then reserves the bytes. Deletes the victims outside the lock.
    fn reserve(&self, uri: &str, size: u64) -> Result<(), CacheError> {
        let mut victims = Vec::new();
        {
            let mut st = self.state();
            let max = self.inner.max_bytes;
            if size > max {
                tracing::warn!(%uri, size, max_bytes = max, "checkpoint cache: entry is larger than the whole cache budget; fetching it anyway");
            }
            let mut order: Vec<(u64, String)> = st
                .entries
                .iter()
                .filter(|(k, _)| k.as_str() != uri && !st.pinned(k))
                .map(|(k, e)| (e.meta.last_used, k.clone()))
                .collect();
            order.sort();
            let mut order = order.into_iter();
            while st.used() + st.reserved + size > max {
                let Some((_, victim)) = order.next() else {
                    if size <= max {
                        tracing::warn!(%uri, size, used = st.used(), max_bytes = max, "checkpoint cache: over budget, the rest is pinned; fetching anyway");
                    }
                    break;
                };
                let e = st.entries.remove(&victim).expect("listed above");
                tracing::info!(uri = %victim, size = e.meta.size, "checkpoint cache: evicting");
                match self.move_to_staging(&e.dir, "evicted") {
                    Ok(p) => victims.push(p),
                    Err(err) => {
                        tracing::warn!(uri = %victim, error = %err, "checkpoint cache: could not evict")
                    }
                }
            }
            st.reserved += size;
        }
        for v in victims {
            if let Err(err) = fs::remove_dir_all(&v) {
                tracing::warn!(path = %v.display(), error = %err, "checkpoint cache: could not delete an evicted entry");
            }
        }
        Ok(())
    }

    fn unreserve(&self, size: u64) {
        let mut st = self.state();
        st.reserved = st.reserved.saturating_sub(size);
    }

    /// A gs:// object (a checkpoint file): the cached file if present and current (GCS generation,
    /// size and CRC32C as recorded at download; local size checked), else downloaded into the
    /// cache, evicting least-recently-used unpinned entries until it fits. `progress` receives the
    /// running total of bytes downloaded (never called on a hit).
    pub async fn fetch_object(
        &self,
        client: &GcsClient,
        uri: &str,
        progress: &(dyn Fn(u64) + Send + Sync),
    ) -> Result<CachedEntry, CacheError> {
        let parsed = GcsUri::parse(uri)?;
        if parsed.object.is_empty() || parsed.object.ends_with('/') {
            return Err(CacheError::Invalid {
                uri: uri.to_string(),
                reason: "names a bucket or a prefix, not an object (use fetch_prefix for folders)"
                    .into(),
            });
        }
        let uri = parsed.to_string();
        let lock = self.uri_lock(&uri);
        let _guard = lock.lock().await;

        let info = match client.stat(&parsed.bucket, &parsed.object).await {
            Ok(i) => i,
            Err(e) if is_unreachable(&e) => {
                if let Some(hit) = self.lookup(&uri, None) {
                    tracing::warn!(%uri, error = %e, "GCS unreachable; using the cached copy");
                    return Ok(hit);
                }
                return Err(e.into());
            }
            Err(e) => return Err(e.into()),
        };
        let file_name = object_file_name(&parsed.object);
        let files = vec![FileRecord {
            name: file_name.clone(),
            size: info.size,
            crc32c: info.crc32c,
            generation: info.generation,
        }];
        if let Some(hit) = self.lookup(&uri, Some(&files)) {
            return Ok(hit);
        }
        let downloads = [(info.clone(), PathBuf::from(&file_name))];
        self.download_entry(client, &uri, Kind::Object, files, &downloads, progress)
            .await
    }

    /// A gs:// prefix (a tokenizer or HF model folder): every object under it, kept in a folder
    /// with the same relative names. `gs://b/tok` means the folder `tok/`. Relative names that are
    /// absolute, contain `.` or `..`, empty components, or backslashes are refused with an error
    /// naming the object; zero-byte "folder" placeholders (names ending in '/') are skipped. An
    /// empty prefix is NotFound. `progress` receives the running total over all files.
    pub async fn fetch_prefix(
        &self,
        client: &GcsClient,
        uri: &str,
        progress: &(dyn Fn(u64) + Send + Sync),
    ) -> Result<CachedEntry, CacheError> {
        let parsed = GcsUri::parse(uri)?;
        let prefix = if parsed.object.is_empty() || parsed.object.ends_with('/') {
            parsed.object.clone()
        } else {
            format!("{}/", parsed.object)
        };
        let uri = format!("gs://{}/{}", parsed.bucket, prefix);
        let lock = self.uri_lock(&uri);
        let _guard = lock.lock().await;

        let listing = match client.list(&parsed.bucket, &prefix).await {
            Ok(l) => l,
            Err(e) if is_unreachable(&e) => {
                if let Some(hit) = self.lookup(&uri, None) {
                    tracing::warn!(%uri, error = %e, "GCS unreachable; using the cached copy");
                    return Ok(hit);
                }
                return Err(e.into());
            }
            Err(e) => return Err(e.into()),
        };
        let mut files = Vec::new();
        let mut downloads = Vec::new();
        for obj in listing {
            let rel = &obj.name[prefix.len()..];
            let placeholder = rel.is_empty()
                || (rel.ends_with('/') && safe_relative(rel.trim_end_matches('/')).is_ok());
            if placeholder && obj.size == 0 {
                continue; // a zero-byte folder placeholder ("tok/" or "tok/sub/")
            }
            let path = safe_relative(rel).map_err(|reason| CacheError::UnsafeName {
                uri: obj.uri(),
                name: rel.to_string(),
                reason: reason.to_string(),
            })?;
            files.push(FileRecord {
                name: rel.to_string(),
                size: obj.size,
                crc32c: obj.crc32c,
                generation: obj.generation,
            });
            downloads.push((obj, path));
        }
        if files.is_empty() {
            return Err(GcsError::NotFound { uri }.into());
        }
        // a name that is both a file and a folder ("a" and "a/b") cannot be laid out
        let names: std::collections::HashSet<&str> =
            files.iter().map(|f| f.name.as_str()).collect();
        for f in &files {
            let mut idx = 0;
            while let Some(pos) = f.name[idx..].find('/') {
                let parent = &f.name[..idx + pos];
                if names.contains(parent) {
                    return Err(CacheError::UnsafeName {
                        uri: format!("{uri}{parent}"),
                        name: parent.to_string(),
                        reason: format!("is both a file and the folder of '{}'", f.name),
                    });
                }
                idx += pos + 1;
            }
        }
        if let Some(hit) = self.lookup(&uri, Some(&files)) {
            return Ok(hit);
        }
        self.download_entry(client, &uri, Kind::Prefix, files, &downloads, progress)
            .await
    }

    async fn download_entry(
        &self,
        client: &GcsClient,
        uri: &str,
        kind: Kind,
        files: Vec<FileRecord>,
        downloads: &[(ObjectInfo, PathBuf)],
        progress: &(dyn Fn(u64) + Send + Sync),
    ) -> Result<CachedEntry, CacheError> {
        let size: u64 = files.iter().map(|f| f.size).sum();
        // a stale copy: replace it unless someone is using it
        let stale = {
            let mut st = self.state();
            if st.entries.contains_key(uri) {
                if st.pinned(uri) {
                    return Err(CacheError::InUse {
                        uri: uri.to_string(),
                    });
                }
                let e = st.entries.remove(uri).expect("checked");
                Some(self.move_to_staging(&e.dir, "stale")?)
            } else {
                None
            }
        };
        if let Some(s) = stale {
            let _ = fs::remove_dir_all(&s);
        }
        self.reserve(uri, size)?;
        let result = self
            .download_into_staging(client, uri, kind, files, downloads, progress)
            .await;
        self.unreserve(size);
        let (staging, meta) = result?;
        let dir = self.inner.entries_dir.join(digest(uri));
        let mut st = self.state();
        let meta = self.publish(uri, &staging, meta)?;
        st.entries.insert(uri.to_string(), Entry { dir, meta });
        Ok(self.pin(&mut st, uri).expect("just inserted"))
    }

    async fn download_into_staging(
        &self,
        client: &GcsClient,
        uri: &str,
        kind: Kind,
        files: Vec<FileRecord>,
        downloads: &[(ObjectInfo, PathBuf)],
        progress: &(dyn Fn(u64) + Send + Sync),
    ) -> Result<(PathBuf, Sidecar), CacheError> {
        let staging = self.inner.staging_dir.join(format!(
            "{}-{}-{}",
            digest(uri),
            std::process::id(),
            STAGING_COUNTER.fetch_add(1, Ordering::Relaxed)
        ));
        // removes the staging directory on error or cancellation
        struct Cleanup(Option<PathBuf>);
        impl Drop for Cleanup {
            fn drop(&mut self) {
                if let Some(p) = self.0.take() {
                    let _ = fs::remove_dir_all(p);
                }
            }
        }
        fs::create_dir(&staging).map_err(io_err(&staging))?;
        let mut cleanup = Cleanup(Some(staging.clone()));
        let data = staging.join(DATA);
        fs::create_dir(&data).map_err(io_err(&data))?;

        let total = AtomicU64::new(0);
        let total_ref = &total;
        let data_ref = &data;
        let opts = &self.inner.download;
        // small files (tokenizers) several at a time; each large file uses ranged parallelism
        let per_file = if downloads.len() > 1 {
            opts.parallelism.clamp(1, 4)
        } else {
            1
        };
        stream::iter(downloads.iter())
            .map(|(obj, rel)| async move {
                let dest = data_ref.join(rel);
                if let Some(parent) = dest.parent() {
                    fs::create_dir_all(parent).map_err(io_err(parent))?;
                }
                let last = AtomicU64::new(0);
                let on_progress = |n: u64| {
                    let prev = last.swap(n, Ordering::Relaxed);
                    let t = total_ref.fetch_add(n.saturating_sub(prev), Ordering::Relaxed)
                        + n.saturating_sub(prev);
                    progress(t);
                };
                client.download(obj, &dest, opts, &on_progress).await?;
                Ok::<(), CacheError>(())
            })
            .buffer_unordered(per_file)
            .try_collect::<Vec<()>>()
            .await?;

        let (crc32c, generation) = match kind {
            Kind::Object => (files[0].crc32c, files[0].generation),
            Kind::Prefix => (None, files.iter().map(|f| f.generation).max().unwrap_or(0)),
        };
        let meta = Sidecar {
            version: SIDECAR_VERSION,
            uri: uri.to_string(),
            kind,
            size: files.iter().map(|f| f.size).sum(),
            crc32c,
            generation,
            last_used: self.state().tick(),
            files,
        };
        write_sidecar(&staging, &meta)?;
        cleanup.0 = None;
        Ok((staging, meta))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A finished download in staging, as `download_into_staging` leaves it.
    fn staged(
        cache: &Cache,
        name: &str,
        uri: &str,
        bytes: &[u8],
        generation: i64,
    ) -> (PathBuf, Sidecar) {
        let staging = cache.inner.staging_dir.join(name);
        fs::create_dir_all(staging.join(DATA)).unwrap();
        fs::write(staging.join(DATA).join("f"), bytes).unwrap();
        let meta = Sidecar {
            version: SIDECAR_VERSION,
            uri: uri.into(),
            kind: Kind::Object,
            size: bytes.len() as u64,
            crc32c: None,
            generation,
            last_used: 1,
            files: vec![FileRecord {
                name: "f".into(),
                size: bytes.len() as u64,
                crc32c: None,
                generation,
            }],
        };
        write_sidecar(&staging, &meta).unwrap();
        (staging, meta)
    }

    #[test]
    fn opening_keeps_the_downloads_of_live_workers_on_a_shared_root() {
        let root = tempfile::tempdir().unwrap();
        let cache = Cache::open(root.path(), 1 << 20).unwrap();
        let staging = cache.inner.staging_dir.clone();
        // another worker on this machine (this process's parent stands in for it), mid-download
        let live = staging.join(format!("abc-{}-7", std::os::unix::process::parent_id()));
        fs::create_dir_all(live.join(DATA)).unwrap();
        fs::write(live.join(DATA).join("part"), b"bytes").unwrap();
        // a worker that died mid-download (pid 0 is never a process), and a name of no process
        let dead = staging.join("abc-0-3");
        fs::create_dir_all(&dead).unwrap();
        let odd = staging.join("leftover");
        fs::write(&odd, b"x").unwrap();
        Cache::open(root.path(), 1 << 20).unwrap();
        assert_eq!(fs::read(live.join(DATA).join("part")).unwrap(), b"bytes");
        assert!(!dead.exists() && !odd.exists());
    }

    #[test]
    fn a_second_publish_of_the_same_entry_keeps_the_first() {
        let root = tempfile::tempdir().unwrap();
        let cache = Cache::open(root.path(), 1 << 20).unwrap();
        let uri = "gs://b/ckpt";
        let (first, meta) = staged(&cache, "one", uri, b"abc", 5);
        cache.publish(uri, &first, meta).unwrap();
        let entry = cache.inner.entries_dir.join(digest(uri));
        // the loser of the race: same files, its rename meets a non-empty directory
        let (second, meta) = staged(&cache, "two", uri, b"abc", 5);
        let kept = cache.publish(uri, &second, meta).unwrap();
        assert_eq!(kept.generation, 5);
        assert!(!second.exists(), "the loser's copy is discarded");
        assert_eq!(fs::read(entry.join(DATA).join("f")).unwrap(), b"abc");
        // a newer generation replaces an outdated entry in the way
        let (third, meta) = staged(&cache, "three", uri, b"abcd", 6);
        let kept = cache.publish(uri, &third, meta).unwrap();
        assert_eq!(kept.generation, 6);
        assert_eq!(fs::read(entry.join(DATA).join("f")).unwrap(), b"abcd");
        assert_eq!(load_entry(&entry).unwrap().generation, 6);
        assert_eq!(fs::read_dir(&cache.inner.staging_dir).unwrap().count(), 0);
    }

    #[test]
    fn relative_names() {
        assert_eq!(
            safe_relative("a/b.json").unwrap(),
            PathBuf::from("a/b.json")
        );
        for bad in [
            "",
            "/abs",
            "a//b",
            "a/../../x",
            "..",
            ".",
            "a/./b",
            "a/",
            "a\\b",
        ] {
            assert!(safe_relative(bad).is_err(), "{bad}");
        }
        assert_eq!(
            object_file_name("run/step1/streaming_params"),
            "streaming_params"
        );
        assert_eq!(object_file_name("run/.."), "object");
    }

    #[test]
    fn digest_is_stable() {
        assert_eq!(digest("gs://b/x").len(), 32);
        assert_eq!(digest("gs://b/x"), digest("gs://b/x"));
        assert_ne!(digest("gs://b/x"), digest("gs://b/y"));
        // FNV-1a 128 of "" is the offset basis
        assert_eq!(digest(""), "6c62272e07bb014262b821756295c58d");
    }
}
