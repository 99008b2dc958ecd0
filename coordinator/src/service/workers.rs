//! `Workers`: register, lease, heartbeat, stream results, complete, fail.
//!
//! A worker is its registration: Register answers a fresh id and a random secret, and every
//! other call must carry both (`worker_id`, `worker_secret`); the secret is checked before the
//! call touches anything, so one worker cannot lease as, stream into, complete or fail for
//! another (PERMISSION_DENIED). Nothing here answers with another worker's id or leases.

use std::sync::Arc;

use herd_rpc::v1::{
    lease_response::Outcome, workers_server::Workers, CompleteRequest, CompleteResponse,
    FailRequest, FailResponse, FailureKind, HeartbeatRequest, HeartbeatResponse, LeaseRef,
    LeaseRequest, LeaseResponse, RegisterRequest, RegisterResponse, ResultBatch,
    StreamResultsResponse,
};
use tonic::{Request, Response, Status, Streaming};

use super::convert;
use crate::app::{now_ms, Coordinator};
use crate::config::Limits;
use crate::domain::{ExampleScores, LeaseId};
use crate::observe::METRICS;
use crate::security::{rate_limited, LeaseLimiter};
use crate::state::{LeaseOutcome, Store, StoreError};
use herd_telemetry as telemetry;

pub struct WorkersService {
    coord: Arc<Coordinator>,
    /// per-worker Lease rate (None: unlimited)
    lease_limiter: Option<Arc<LeaseLimiter>>,
    /// most rewards in one ResultBatch
    max_results_per_message: usize,
}

impl WorkersService {
    pub fn new(coord: Arc<Coordinator>) -> Self {
        WorkersService {
            coord,
            lease_limiter: None,
            max_results_per_message: usize::MAX,
        }
    }

    /// Applies `coord serve`'s limits (lease rate, rewards per message).
    pub fn with_limits(mut self, limits: &Limits) -> Self {
        self.lease_limiter = LeaseLimiter::new(limits);
        self.max_results_per_message = limits.max_results_per_message;
        self
    }

    /// Runs `f(store, worker_id)` on the store once `secret` is checked against the registration
    /// of `worker_id` (unknown id: NOT_FOUND, register again; wrong secret: PERMISSION_DENIED).
    async fn as_worker<T, F>(&self, worker_id: String, secret: String, f: F) -> Result<T, Status>
    where
        T: Send + 'static,
        F: FnOnce(&Store, &str) -> Result<T, StoreError> + Send + 'static,
    {
        Ok(self
            .coord
            .with_store(authenticated(worker_id, secret, f))
            .await?)
    }

    /// [`Self::as_worker`] for a result message: it waits for an ingest slot first (see
    /// [`super::Coordinator::ingest`]).
    async fn as_ingesting_worker<T, F>(
        &self,
        worker_id: String,
        secret: String,
        f: F,
    ) -> Result<T, Status>
    where
        T: Send + 'static,
        F: FnOnce(&Store, &str) -> Result<T, StoreError> + Send + 'static,
    {
        Ok(self
            .coord
            .ingest(authenticated(worker_id, secret, f))
            .await?)
    }
}

/// `f(store, worker_id)`, run only once the worker's secret matches its registration.
fn authenticated<T>(
    worker_id: String,
    secret: String,
    f: impl FnOnce(&Store, &str) -> Result<T, StoreError>,
) -> impl FnOnce(&Store) -> Result<T, StoreError> {
    move |s| {
        s.check_worker(&worker_id, &secret)?;
        f(s, &worker_id)
    }
}

fn lease_of(lease: Option<LeaseRef>) -> Result<LeaseId, Status> {
    lease
        .map(LeaseId::from)
        .ok_or_else(|| Status::invalid_argument("the request names no lease"))
}

#[tonic::async_trait]
impl Workers for WorkersService {
    #[tracing::instrument(name = "coord.register", skip_all, fields(name = %request.get_ref().name))]
    async fn register(
        &self,
        request: Request<RegisterRequest>,
    ) -> Result<Response<RegisterResponse>, Status> {
        let req = request.into_inner();
        let caps = req.capabilities.unwrap_or_default();
        let name = req.name.clone();
        let device = caps.device.clone();
        let secret = crate::security::random_token()
            .map_err(|e| Status::internal(format!("worker secret: {e:#}")))?;
        let stored = secret.clone();
        let id = self
            .coord
            .with_store(move |s| s.register(&req.name, &caps, &stored, now_ms()))
            .await?;
        tracing::info!(worker = %id, name = %name, device = %device, "worker registered");
        let policy = self.coord.store.policy();
        Ok(Response::new(RegisterResponse {
            worker_id: id,
            heartbeat_interval_ms: policy.retry_after_ms(),
            lease_timeout_ms: policy.lease_timeout_ms.min(u32::MAX as u64) as u32,
            worker_secret: secret,
        }))
    }

    #[tracing::instrument(name = "coord.lease", skip_all, fields(worker = %request.get_ref().worker_id))]
    async fn lease(
        &self,
        request: Request<LeaseRequest>,
    ) -> Result<Response<LeaseResponse>, Status> {
        let req = request.into_inner();
        let worker = req.worker_id.clone();
        // the rate is counted after the secret check: nobody can spend another worker's budget
        let limiter = self.lease_limiter.clone();
        let outcome = self
            .as_worker(req.worker_id, req.worker_secret, move |s, id| {
                if let Some(Err(wait)) = limiter.map(|l| l.check(id)) {
                    return Ok(Err(wait));
                }
                // the examples are copied for the wire here, on the blocking pool and outside the
                // store's write gate: they are most of a lease's bytes
                s.lease(id, &req.cached_checkpoints, now_ms())
                    .map(|outcome| Ok(outcome.map(|grant| convert::lease(&grant))))
            })
            .await?;
        let outcome = outcome.map_err(|wait| {
            tracing::debug!(worker = %worker, "lease rate limit");
            rate_limited(wait)
        })?;
        let retry = self.coord.store.policy().retry_after_ms();
        let outcome = match outcome {
            LeaseOutcome::Leased(mut lease) => {
                // a child of the sweep's trace; the worker's task span is this span's child
                let checkpoint = lease
                    .checkpoint
                    .as_ref()
                    .map(|c| c.name.as_str())
                    .unwrap_or("");
                let lease_ref = lease.lease.unwrap_or_default();
                let span = tracing::info_span!(
                    parent: None,
                    "lease",
                    sweep = %lease.sweep,
                    worker = %worker,
                    checkpoint = %checkpoint,
                    task = lease_ref.task_id,
                    epoch = lease_ref.epoch,
                    examples = lease.examples.len(),
                );
                telemetry::set_parent(&span, self.coord.traces.context(&lease.sweep));
                lease.traceparent = telemetry::traceparent(&span);
                METRICS.leases.inc();
                Outcome::Lease(lease)
            }
            LeaseOutcome::Draining => Outcome::RetryAfterMs(retry),
            LeaseOutcome::Idle { all_finished } => {
                if all_finished && self.coord.exit_when_done {
                    self.coord.note_shutdown(&worker);
                    tracing::info!(worker = %worker, "every sweep is finished: worker told to shut down");
                    Outcome::Shutdown(true)
                } else {
                    Outcome::RetryAfterMs(retry)
                }
            }
        };
        Ok(Response::new(LeaseResponse {
            outcome: Some(outcome),
        }))
    }

    #[tracing::instrument(name = "coord.heartbeat", skip_all, fields(worker = %request.get_ref().worker_id))]
    async fn heartbeat(
        &self,
        request: Request<HeartbeatRequest>,
    ) -> Result<Response<HeartbeatResponse>, Status> {
        let req = request.into_inner();
        let leases: Vec<LeaseId> = req.leases.into_iter().map(LeaseId::from).collect();
        let revoked = self
            .as_worker(req.worker_id, req.worker_secret, move |s, id| {
                s.heartbeat(id, &leases, req.draining, req.stats.as_ref(), now_ms())
            })
            .await?;
        Ok(Response::new(HeartbeatResponse {
            revoked: revoked.into_iter().map(LeaseRef::from).collect(),
        }))
    }

    #[tracing::instrument(name = "coord.stream_results", skip_all)]
    async fn stream_results(
        &self,
        request: Request<Streaming<ResultBatch>>,
    ) -> Result<Response<StreamResultsResponse>, Status> {
        // a child of the worker's `stream` span
        let merge = tracing::info_span!(
            parent: None,
            "merge",
            task = tracing::field::Empty,
            stored = tracing::field::Empty,
            duplicates = tracing::field::Empty,
        );
        telemetry::set_parent(&merge, telemetry::extract(request.metadata()));
        let mut stream = request.into_inner();
        let mut total = StreamResultsResponse::default();
        while let Some(batch) = stream.message().await? {
            let lease = lease_of(batch.lease)?;
            merge.record("task", lease.task_id);
            if batch.rewards.len() > self.max_results_per_message {
                return Err(Status::invalid_argument(format!(
                    "{} rewards in one ResultBatch; at most {} (send smaller batches)",
                    batch.rewards.len(),
                    self.max_results_per_message
                )));
            }
            let worker = batch.worker_id.clone();
            let rewards: Vec<ExampleScores> =
                batch.rewards.into_iter().map(ExampleScores::from).collect();
            let counts = self
                .as_ingesting_worker(batch.worker_id, batch.worker_secret, move |s, id| {
                    s.store_results(id, &lease, &rewards, now_ms())
                })
                .await;
            match counts {
                Ok(counts) => {
                    METRICS.results_stored.inc_by(counts.stored);
                    METRICS.result_duplicates.inc_by(counts.duplicates);
                    total.stored += counts.stored;
                    total.duplicates += counts.duplicates;
                }
                Err(status) => {
                    tracing::warn!(
                        worker = %worker,
                        task = lease.task_id,
                        epoch = lease.epoch,
                        code = ?status.code(),
                        "result stream refused: {}",
                        status.message()
                    );
                    return Err(status);
                }
            }
        }
        merge.record("stored", total.stored);
        merge.record("duplicates", total.duplicates);
        Ok(Response::new(total))
    }

    #[tracing::instrument(name = "coord.complete", skip_all, fields(worker = %request.get_ref().worker_id))]
    async fn complete(
        &self,
        request: Request<CompleteRequest>,
    ) -> Result<Response<CompleteResponse>, Status> {
        let span = tracing::info_span!(parent: None, "complete", first = tracing::field::Empty);
        telemetry::set_parent(&span, telemetry::extract(request.metadata()));
        let req = request.into_inner();
        let lease = lease_of(req.lease)?;
        let _hold = self.coord.hold();
        let outcome = self
            .as_worker(req.worker_id, req.worker_secret, move |s, id| {
                s.complete_with(
                    id,
                    &lease,
                    &req.model_type,
                    &req.chat_template,
                    req.scalar_output,
                    now_ms(),
                )
            })
            .await?;
        span.record("first", outcome.first);
        METRICS.completed.inc();
        self.coord.sweeps_finished(outcome.finished_sweeps);
        Ok(Response::new(CompleteResponse {
            first: outcome.first,
        }))
    }

    #[tracing::instrument(name = "coord.fail", skip_all, fields(worker = %request.get_ref().worker_id, kind = request.get_ref().kind))]
    async fn fail(&self, request: Request<FailRequest>) -> Result<Response<FailResponse>, Status> {
        let req = request.into_inner();
        let lease = lease_of(req.lease)?;
        let kind = FailureKind::try_from(req.kind).unwrap_or(FailureKind::Unspecified);
        METRICS
            .failures
            .with_label_values(&[crate::observe::failure_label(kind).as_str()])
            .inc();
        let _hold = self.coord.hold();
        let transition = self
            .as_worker(req.worker_id, req.worker_secret, move |s, id| {
                s.fail(id, &lease, kind.into(), &req.reason, now_ms())
            })
            .await?;
        self.coord.sweeps_finished(transition.finished_sweeps);
        Ok(Response::new(FailResponse {}))
    }
}
