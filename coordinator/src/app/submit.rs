//! Submit: plan a sweep (list its checkpoints, load its evaluation set), store it, optionally
//! plan its failed checkpoints again, and start the sweep's trace.

use herd_rpc::v1::SweepSpec;
use herd_telemetry::{self as telemetry, Context};
use tracing::Instrument;

use super::{now_ms, AppError, Coordinator};
use crate::state::{RetryOutcome, SubmitOutcome};

impl Coordinator {
    /// Plans and stores `spec` (a name already stored gets only its new checkpoints); with
    /// `retry_failed`, its failed and cancelled checkpoints are planned again. The `submit` span
    /// (a child of `parent`, the caller's trace, if any) becomes the sweep's trace.
    pub async fn submit(
        &self,
        spec: SweepSpec,
        retry_failed: bool,
        parent: Option<Context>,
    ) -> Result<(SubmitOutcome, RetryOutcome), AppError> {
        // the sweep's root span (or the caller's child, when it sent a trace context)
        let submit_span = tracing::info_span!(
            parent: None,
            "submit",
            sweep = %spec.name,
            checkpoints = tracing::field::Empty,
            tasks = tracing::field::Empty,
            examples = tracing::field::Empty,
        );
        telemetry::set_parent(&submit_span, parent);
        // settings a worker would refuse, refused before any checkpoint is listed
        crate::presets::check_scoring(&spec).map_err(|e| AppError::Plan(format!("{e:#}")))?;
        let plan_span = tracing::info_span!(parent: &submit_span, "plan", sweep = %spec.name);
        let checkpoints = crate::planner::list_checkpoints(&spec)
            .instrument(plan_span.clone())
            .await
            .map_err(|e| AppError::Plan(format!("{e:#}")))?;
        let for_examples = spec.clone();
        let examples =
            tokio::task::spawn_blocking(move || crate::planner::load_examples(&for_examples))
                .instrument(plan_span.clone())
                .await
                .map_err(|e| AppError::Task(format!("planner task: {e}")))?
                .map_err(|e| AppError::Plan(format!("{e:#}")))?;
        let (outcome, retried) = self
            .with_store(move |s| {
                let outcome = s.submit(&spec, &checkpoints, &examples, now_ms())?;
                let retried = if retry_failed {
                    s.retry_failed(&spec.name, now_ms())?
                } else {
                    Default::default()
                };
                Ok((outcome, retried))
            })
            .instrument(plan_span.clone())
            .await?;
        drop(plan_span);
        submit_span.record("checkpoints", outcome.checkpoints_added);
        submit_span.record("tasks", outcome.tasks_added);
        submit_span.record("examples", outcome.examples);
        self.traces.remember(&outcome.sweep, &submit_span);
        tracing::info!(
            sweep = %outcome.sweep,
            created = outcome.created,
            checkpoints_added = outcome.checkpoints_added,
            checkpoints_skipped = outcome.checkpoints_skipped,
            tasks_added = outcome.tasks_added,
            examples = outcome.examples,
            checkpoints_retried = retried.checkpoints,
            tasks_retried = retried.tasks,
            "sweep submitted"
        );
        self.refresh_finished().await;
        Ok((outcome, retried))
    }
}
