//! The gRPC services: [`workers::WorkersService`] (what GPU workers call) and
//! [`sweeps::SweepsService`] (what `coord submit/status/results/cancel` call), both over one
//! [`Coordinator`]: the store plus what the server keeps in memory (report writing, the "every
//! sweep finished" signal, which workers were told to shut down).

pub mod sweeps;
pub mod workers;

use std::collections::HashSet;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use tokio::sync::{watch, Semaphore};
use tonic::Status;

use crate::report::SweepReport;
use crate::state::{ReportInputs, Store, StoreError};

pub use sweeps::SweepsService;
pub use workers::WorkersService;

/// Result-ingestion writes on the blocking pool at once: one writing and one waiting at the
/// store's write gate, so the gate never idles between two of them. Other messages wait for a
/// slot in arrival order without holding a blocking thread, which Lease and the other
/// scheduling calls need to reach the gate.
const INGEST_IN_FLIGHT: usize = 2;

/// State shared by both services, the reaper and the server handle.
pub struct Coordinator {
    pub store: Arc<Store>,
    /// reports go to `<out_dir>/<sweep>/`
    pub out_dir: PathBuf,
    /// answer idle workers with `shutdown` once every sweep is finished
    pub exit_when_done: bool,
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
            finished: watch::channel(finished).0,
            holds: AtomicUsize::new(0),
            told_shutdown: Mutex::new(HashSet::new()),
            ingest_slots: Arc::new(Semaphore::new(INGEST_IN_FLIGHT)),
        })
    }

    /// Runs a store call on the blocking pool.
    pub async fn with_store<T, F>(&self, f: F) -> Result<T, Status>
    where
        T: Send + 'static,
        F: FnOnce(&Store) -> Result<T, StoreError> + Send + 'static,
    {
        let store = self.store.clone();
        tokio::task::spawn_blocking(move || f(&store))
            .await
            .map_err(|e| Status::internal(format!("state task: {e}")))?
            .map_err(to_status)
    }

    /// Runs a result-ingestion store call on the blocking pool once one of the
    /// [`INGEST_IN_FLIGHT`] slots is free.
    pub async fn ingest<T, F>(&self, f: F) -> Result<T, Status>
    where
        T: Send + 'static,
        F: FnOnce(&Store) -> Result<T, StoreError> + Send + 'static,
    {
        let slot = self
            .ingest_slots
            .clone()
            .acquire_owned()
            .await
            .map_err(|e| Status::internal(format!("ingest slots: {e}")))?;
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

    /// Sweeps just finished: write their reports in the background, then signal.
    pub fn sweeps_finished(self: &Arc<Self>, sweeps: Vec<String>) {
        if sweeps.is_empty() {
            return;
        }
        let hold = self.hold();
        // not finished until the reports are written
        self.finished.send_replace(false);
        let this = self.clone();
        tokio::spawn(async move {
            let _hold = hold;
            for sweep in sweeps {
                let store = this.store.clone();
                let out_dir = this.out_dir.clone();
                let name = sweep.clone();
                let span = tracing::info_span!(parent: None, "report", sweep = %sweep);
                herd_telemetry::set_parent(&span, crate::observe::sweep_context(&sweep));
                let written = tokio::task::spawn_blocking(move || {
                    let inputs = store.report_inputs(&name)?;
                    let report = build(&inputs)?;
                    crate::report::write_report(&out_dir, &name, &report, &inputs.spec.output_csv)
                })
                .await;
                match written {
                    Ok(Ok(dir)) => {
                        tracing::info!(sweep = %sweep, dir = %dir.display(), "report written")
                    }
                    Ok(Err(e)) => tracing::warn!(sweep = %sweep, "report not written: {e:#}"),
                    Err(e) => tracing::warn!(sweep = %sweep, "report task: {e}"),
                }
                drop(span);
            }
        });
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

/// The report of a sweep from its current state; notes from the store come first.
pub fn build(inputs: &ReportInputs) -> anyhow::Result<SweepReport> {
    let mut report = if inputs.scored.is_empty() {
        SweepReport::default()
    } else {
        crate::report::build_report(&inputs.spec, &inputs.examples, &inputs.scored)?
    };
    let mut notes = inputs.notes.clone();
    notes.append(&mut report.notes);
    report.notes = notes;
    Ok(report)
}

/// A sweep name from a request, checked against the sweep-name rule (INVALID_ARGUMENT naming it).
pub fn sweep_name(name: &str) -> Result<(), Status> {
    crate::model::check_sweep_name(name).map_err(Status::invalid_argument)
}

/// Store errors as gRPC statuses.
pub fn to_status(e: StoreError) -> Status {
    match e {
        StoreError::UnknownWorker(_) | StoreError::NotFound(_) => Status::not_found(e.to_string()),
        StoreError::StaleLease(_) | StoreError::Precondition(_) => {
            Status::failed_precondition(e.to_string())
        }
        StoreError::Forbidden(_) => Status::permission_denied(e.to_string()),
        StoreError::Invalid(_) => Status::invalid_argument(e.to_string()),
        StoreError::Db(_) | StoreError::Corrupt(_) => Status::internal(e.to_string()),
    }
}
