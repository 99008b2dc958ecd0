//! The application layer between the gRPC services and the store: the [`Coordinator`] (the store
//! plus what the server keeps in memory: the "every sweep finished" signal, which workers were
//! told to shut down, the ingest slots, the sweeps' traces), submit orchestration ([`submit`]:
//! plan, store, trace), the report writer ([`reports`]) and the sweeps' trace map ([`traces`]).
//! It speaks domain types and [`AppError`]; the services convert to and from the wire.

pub mod reports;
pub mod submit;
pub mod traces;

use std::collections::HashSet;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use tokio::sync::{watch, Semaphore};

use crate::state::{Store, StoreError};
use traces::SweepTraces;

/// Result-ingestion writes on the blocking pool at once: one writing and one waiting at the
/// store's write gate, so the gate never idles between two of them. Other messages wait for a
/// slot in arrival order without holding a blocking thread, which Lease and the other
/// scheduling calls need to reach the gate.
const INGEST_IN_FLIGHT: usize = 2;

/// Milliseconds since the Unix epoch: the time every store call is given (lease deadlines are
/// absolute, so they survive a restart).
pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// Why an application call failed.
#[derive(Debug, thiserror::Error)]
pub enum AppError {
    #[error(transparent)]
    Store(#[from] StoreError),
    /// the sweep cannot be planned as submitted (no checkpoint found, unreadable evaluation set)
    #[error("{0}")]
    Plan(String),
    /// a task of the blocking pool ended without an answer
    #[error("{0}")]
    Task(String),
}

/// State shared by both services, the reaper and the server handle.
pub struct Coordinator {
    pub store: Arc<Store>,
    /// reports go to `<out_dir>/<sweep>/`
    pub out_dir: PathBuf,
    /// answer idle workers with `shutdown` once every sweep is finished
    pub exit_when_done: bool,
    /// each sweep's trace context
    pub traces: SweepTraces,
    /// true while every sweep is finished and no report is being written
    finished: watch::Sender<bool>,
    /// state changes that may finish a sweep, and report writers, under way
    holds: AtomicUsize,
    told_shutdown: Mutex<HashSet<String>>,
    /// see [`INGEST_IN_FLIGHT`]
    ingest_slots: Arc<Semaphore>,
}

impl Coordinator {
    pub fn new(store: Arc<Store>, out_dir: PathBuf, exit_when_done: bool) -> Arc<Self> {
        let finished = store.all_finished().unwrap_or(false);
        Arc::new(Coordinator {
            store,
            out_dir,
            exit_when_done,
            traces: SweepTraces::default(),
            finished: watch::channel(finished).0,
            holds: AtomicUsize::new(0),
            told_shutdown: Mutex::new(HashSet::new()),
            ingest_slots: Arc::new(Semaphore::new(INGEST_IN_FLIGHT)),
        })
    }

    /// Runs a store call on the blocking pool.
    pub async fn with_store<T, F>(&self, f: F) -> Result<T, AppError>
    where
        T: Send + 'static,
        F: FnOnce(&Store) -> Result<T, StoreError> + Send + 'static,
    {
        let store = self.store.clone();
        Ok(tokio::task::spawn_blocking(move || f(&store))
            .await
            .map_err(|e| AppError::Task(format!("state task: {e}")))??)
    }

    /// Runs a result-ingestion store call on the blocking pool once one of the
    /// [`INGEST_IN_FLIGHT`] slots is free.
    pub async fn ingest<T, F>(&self, f: F) -> Result<T, AppError>
    where
        T: Send + 'static,
        F: FnOnce(&Store) -> Result<T, StoreError> + Send + 'static,
    {
        let slot = self
            .ingest_slots
            .clone()
            .acquire_owned()
            .await
            .map_err(|e| AppError::Task(format!("ingest slots: {e}")))?;
        // the slot is freed when the store call ends, even if this caller went away before
        self.with_store(move |s| {
            let _slot = slot;
            f(s)
        })
        .await
    }

    /// A receiver that is true while every sweep is finished and its report written.
    pub fn finished(&self) -> watch::Receiver<bool> {
        self.finished.subscribe()
    }

    /// Re-reads "every sweep finished" from the store.
    pub async fn refresh_finished(&self) {
        let all = self.with_store(|s| s.all_finished()).await.unwrap_or(false);
        let done = all && self.holds.load(Ordering::SeqCst) == 0;
        self.finished.send_replace(done);
    }

    pub(crate) fn note_shutdown(&self, worker_id: &str) {
        let mut told = self.told_shutdown.lock().unwrap_or_else(|e| e.into_inner());
        told.insert(worker_id.to_string());
    }

    /// Workers that were answered `shutdown`.
    pub fn told_shutdown(&self) -> HashSet<String> {
        self.told_shutdown
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Holds "every sweep finished" false while a state change that may finish a sweep, or its
    /// report, is under way; dropping the last hold re-reads the flag.
    pub(crate) fn hold(self: &Arc<Self>) -> Hold {
        self.holds.fetch_add(1, Ordering::SeqCst);
        Hold(self.clone())
    }
}

/// See [`Coordinator::hold`].
pub(crate) struct Hold(Arc<Coordinator>);

impl Drop for Hold {
    fn drop(&mut self) {
        if self.0.holds.fetch_sub(1, Ordering::SeqCst) == 1 {
            if let Ok(runtime) = tokio::runtime::Handle::try_current() {
                let coordinator = self.0.clone();
                runtime.spawn(async move { coordinator.refresh_finished().await });
            }
        }
    }
}
