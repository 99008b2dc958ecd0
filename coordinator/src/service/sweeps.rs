//! `Sweeps`: submit, status, results, cancel.

use std::sync::Arc;

use herd_rpc::v1::{
    sweeps_server::Sweeps, CancelRequest, CancelResponse, ResultsRequest, ResultsResponse,
    StatusRequest, StatusResponse, SubmitRequest, SubmitResponse,
};
use tonic::{Request, Response, Status};

use crate::app::{now_ms, Coordinator};
use herd_telemetry as telemetry;

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
        let parent = telemetry::extract(request.metadata());
        let request = request.into_inner();
        let spec = request
            .spec
            .ok_or_else(|| Status::invalid_argument("the request has no sweep spec"))?;
        super::sweep_name(&spec.name)?;
        let (outcome, retried) = self
            .coord
            .submit(spec, request.retry_failed, parent)
            .await?;
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
        Ok(Response::new(status.into()))
    }

    #[tracing::instrument(name = "coord.results", skip_all, fields(sweep = %request.get_ref().sweep))]
    async fn results(
        &self,
        request: Request<ResultsRequest>,
    ) -> Result<Response<ResultsResponse>, Status> {
        let sweep = request.into_inner().sweep;
        super::sweep_name(&sweep)?;
        let (inputs, report) = self.coord.current_report(&sweep).await?;
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
