//! The coordinator's traces: one per sweep. `submit` (with its `plan` child) is the sweep's root
//! span; its W3C context is kept in memory by sweep name ([`SweepTraces`]), and every `lease`
//! span of the sweep is its child. The lease span's context goes to the worker in
//! `Lease.traceparent`; the worker's spans are its children and its StreamResults/Complete calls
//! carry their context back in metadata, so the coordinator's `merge` spans join the same trace;
//! `report` is a child of the sweep's context. After a coordinator restart, sweeps submitted
//! before it start a fresh trace at their next lease.

use std::collections::HashMap;
use std::sync::Mutex;

use herd_telemetry::{self as telemetry, Context};

/// The trace context of each sweep seen since this process started, by sweep name.
#[derive(Default)]
pub struct SweepTraces {
    traceparents: Mutex<HashMap<String, String>>,
}

impl SweepTraces {
    /// Remembers `span` (the sweep's `submit`) as the parent of the sweep's later spans; a sweep
    /// submitted again keeps its first trace.
    pub fn remember(&self, sweep: &str, span: &tracing::Span) {
        let traceparent = telemetry::traceparent(span);
        if traceparent.is_empty() {
            return;
        }
        let mut traces = self.traceparents.lock().unwrap_or_else(|e| e.into_inner());
        traces.entry(sweep.to_string()).or_insert(traceparent);
    }

    /// The sweep's trace context; a sweep not seen since this process started gets a fresh root
    /// `sweep` span so its leases still share one trace.
    pub fn context(&self, sweep: &str) -> Option<Context> {
        let known = self
            .traceparents
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(sweep)
            .cloned();
        if let Some(tp) = known {
            return telemetry::context_from_traceparent(&tp);
        }
        let span = tracing::info_span!(parent: None, "sweep", sweep = %sweep, resumed = true);
        self.remember(sweep, &span);
        let tp = telemetry::traceparent(&span);
        telemetry::context_from_traceparent(&tp)
    }
}
