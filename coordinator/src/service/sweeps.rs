//! `Sweeps`: submit, status, results, cancel.

use std::sync::Arc;

use herd_rpc::v1::{
    sweeps_server::Sweeps, CancelRequest, CancelResponse, ResultsRequest, ResultsResponse,
    StatusRequest, StatusResponse, SubmitRequest, SubmitResponse,
};
use tonic::{Request, Response, Status};

use super::Coordinator;
use crate::observe;
use crate::scheduler::now_ms;
use herd_telemetry as telemetry;
use tracing::Instrument;

pub struct SweepsService {
    coord: Arc<Coordinator>,
}

impl SweepsService {
    pub fn new(coord: Arc<Coordinator>) -> Self {
        SweepsService { coord }
    }
}

#[tonic::async_trait]
impl Sweeps for SweepsService {
    #[tracing::instrument(name = "coord.submit", skip_all)]
    async fn submit(
        &self,
        request: Request<SubmitRequest>,
    ) -> Result<Response<SubmitResponse>, Status> {
        // the sweep's root span (or the caller's child, when it sent a trace context)
        let parent = telemetry::extract(request.metadata());
        let request = request.into_inner();
        let retry_failed = request.retry_failed;
        let spec = request
            .spec
            .ok_or_else(|| Status::invalid_argument("the request has no sweep spec"))?;
        super::sweep_name(&spec.name)?;
        let submit_span = tracing::info_span!(
            parent: None,
            "submit",
            sweep = %spec.name,
            checkpoints = tracing::field::Empty,
            tasks = tracing::field::Empty,
            examples = tracing::field::Empty,
        );
        telemetry::set_parent(&submit_span, parent);
        let plan_span = tracing::info_span!(parent: &submit_span, "plan", sweep = %spec.name);
        let checkpoints = crate::planner::list_checkpoints(&spec)
            .instrument(plan_span.clone())
            .await
            .map_err(|e| Status::invalid_argument(format!("{e:#}")))?;
        let for_examples = spec.clone();
        let examples =
            tokio::task::spawn_blocking(move || crate::planner::load_examples(&for_examples))
                .instrument(plan_span.clone())
                .await
                .map_err(|e| Status::internal(format!("planner task: {e}")))?
                .map_err(|e| Status::invalid_argument(format!("{e:#}")))?;
        let (outcome, retried) = self
            .coord
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
        observe::remember_sweep(&outcome.sweep, &submit_span);
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
        self.coord.refresh_finished().await;
        Ok(Response::new(SubmitResponse {
            sweep: outcome.sweep,
            checkpoints_added: outcome.checkpoints_added,
            checkpoints_skipped: outcome.checkpoints_skipped,
            tasks_added: outcome.tasks_added,
            examples: outcome.examples,
            checkpoints_retried: retried.checkpoints,
            tasks_retried: retried.tasks,
        }))
    }

    #[tracing::instrument(name = "coord.status", skip_all)]
    async fn status(
        &self,
        request: Request<StatusRequest>,
    ) -> Result<Response<StatusResponse>, Status> {
        let sweep = request.into_inner().sweep;
        if !sweep.is_empty() {
            super::sweep_name(&sweep)?;
        }
        let status = self
            .coord
            .with_store(move |s| {
                let filter = (!sweep.is_empty()).then_some(sweep.as_str());
                s.status(filter, now_ms())
            })
            .await?;
        Ok(Response::new(status))
    }

    #[tracing::instrument(name = "coord.results", skip_all, fields(sweep = %request.get_ref().sweep))]
    async fn results(
        &self,
        request: Request<ResultsRequest>,
    ) -> Result<Response<ResultsResponse>, Status> {
        let sweep = request.into_inner().sweep;
        super::sweep_name(&sweep)?;
        let name = sweep.clone();
        let inputs = self
            .coord
            .with_store(move |s| s.report_inputs(&name))
            .await?;
        let (inputs, report) = tokio::task::spawn_blocking(move || {
            let report = super::build(&inputs);
            (inputs, report)
        })
        .await
        .map_err(|e| Status::internal(format!("report task: {e}")))?;
        // a report that cannot be built (e.g. the CSV needs subsets this evaluation set lacks)
        // still answers: state and notes, with the reason
        let report = report.unwrap_or_else(|e| {
            tracing::warn!(sweep = %sweep, "report not built: {e:#}");
            let mut notes = inputs.notes.clone();
            notes.push(format!("no report: {e:#}"));
            crate::report::SweepReport {
                notes,
                ..Default::default()
            }
        });
        Ok(Response::new(ResultsResponse {
            sweep,
            complete: inputs.complete,
            checkpoints: report.checkpoints,
            csv: report.csv,
            output_csv: inputs.spec.output_csv,
            notes: report.notes,
        }))
    }

    #[tracing::instrument(name = "coord.cancel", skip_all, fields(sweep = %request.get_ref().sweep))]
    async fn cancel(
        &self,
        request: Request<CancelRequest>,
    ) -> Result<Response<CancelResponse>, Status> {
        let sweep = request.into_inner().sweep;
        super::sweep_name(&sweep)?;
        let name = sweep.clone();
        let cancelled = self
            .coord
            .with_store(move |s| s.cancel(&name, now_ms()))
            .await?;
        tracing::info!(sweep = %sweep, tasks = cancelled, "sweep cancelled");
        self.coord.refresh_finished().await;
        Ok(Response::new(CancelResponse {
            tasks_cancelled: cancelled,
        }))
    }
}
