//! One lease end to end: resolve the checkpoint and tokenizer, load the model (or reuse the one
//! in memory), score the shard on a blocking thread, stream the rewards in batches tagged with
//! the lease, then Complete; or Fail with a kind and the full reason.

use std::time::{Duration, Instant};

use herd_rpc::client::{request, Backoff};
use herd_rpc::v1::{
    CompleteRequest, ExampleReward, FailRequest, FailureKind, Lease, LeaseRef, ResultBatch, Scoring,
};
use herd_rpc::CheckpointFormat;
use herd_telemetry as telemetry;
use tokio::sync::watch;
use tonic::Code;
use tracing::Instrument;

use super::metrics::{task_outcome, METRICS};
use super::observer::TaskOutcome;
use super::scorer::{
    CheckpointScoringError, LocalCheckpoint, PairScores, Precision, ScoredShard, ShardScorer,
    TaskFailure,
};
use super::sources::Resolved;
use super::{drain, Agent, RPC_TIMEOUT};

/// What a loaded model was loaded for: a lease naming the same is served by it.
#[derive(Clone, Debug, PartialEq)]
pub struct ModelKey {
    pub uri: String,
    pub format: String,
    pub scoring: Scoring,
}

/// A model in memory, with the cache entries it came from pinned.
pub struct Loaded<M> {
    pub key: ModelKey,
    model: M,
    _checkpoint: Resolved,
    _tokenizer: Option<Resolved>,
}

/// Why a shard's scores cannot become results: a NaN or infinite score (the coordinator refuses
/// them). The forward pass overflowed or broke; the same weights give the same numbers on every
/// retry, so it is the checkpoint's failure, named with the precision it was scored in.
fn non_finite_scores(lease: &Lease, pairs: &[PairScores], precision: &Precision) -> Option<String> {
    let bad: Vec<&herd_rpc::v1::Example> = lease
        .examples
        .iter()
        .zip(pairs)
        .filter(|(_, p)| p.chosen.iter().chain(&p.rejected).any(|x| !x.is_finite()))
        .map(|(e, _)| e)
        .collect();
    let first = bad.first()?;
    Some(format!(
        "{} of {} examples have a NaN or infinite score in {} (first: example {} at index {}): \
         {}",
        bad.len(),
        pairs.len(),
        precision.name,
        first.id,
        first.index,
        precision.non_finite_hint
    ))
}

/// How delivering results ended when it did not succeed.
enum Undelivered {
    /// revoked, stale (FAILED_PRECONDITION), another registration's (PERMISSION_DENIED) or the
    /// coordinator forgot the worker: drop the work
    Dropped(String),
    /// refused for another reason: report it as a failure
    Refused(tonic::Status),
}

/// Logs scoring progress at info every few seconds (not per batch).
struct Progress {
    total: usize,
    done: usize,
    started: Instant,
    last: Instant,
}

impl Progress {
    const EVERY: Duration = Duration::from_secs(5);

    fn new(total: usize) -> Self {
        let now = Instant::now();
        Self {
            total,
            done: 0,
            started: now,
            last: now,
        }
    }

    fn add(&mut self, n: usize) {
        self.done += n;
        if self.last.elapsed() >= Self::EVERY && self.done < self.total {
            self.last = Instant::now();
            let rate = self.done as f64 / self.started.elapsed().as_secs_f64();
            tracing::info!(
                "scoring: {}/{} sequences ({rate:.1}/s, eta {:.0}s)",
                self.done,
                self.total,
                (self.total - self.done) as f64 / rate.max(1e-9)
            );
        }
    }
}

impl<S: ShardScorer> Agent<S> {
    /// Runs one lease; on SIGTERM waits up to the grace period for it, else gives it back.
    pub(super) async fn run_lease(&mut self, lease: Lease, drain_rx: &mut watch::Receiver<bool>) {
        let lease_ref = lease.lease.unwrap_or_default();
        let shared = self.shared.clone();
        shared.hold(&lease_ref);
        let grace = self.config.drain_grace;
        // a child of the coordinator's lease span (one trace per sweep)
        let checkpoint_name = lease.checkpoint.as_ref().map_or("", |c| c.name.as_str());
        let task_span = tracing::info_span!(
            parent: None,
            "task",
            sweep = %lease.sweep,
            checkpoint = %checkpoint_name,
            task = lease_ref.task_id,
            epoch = lease_ref.epoch,
            examples = lease.examples.len(),
            outcome = tracing::field::Empty,
        );
        telemetry::set_parent(
            &task_span,
            telemetry::context_from_traceparent(&lease.traceparent),
        );
        let finished = {
            let work = self.work(&lease, lease_ref).instrument(task_span.clone());
            tokio::pin!(work);
            let mut deadline: Option<tokio::time::Instant> = shared
                .draining()
                .then(|| tokio::time::Instant::now() + grace);
            loop {
                let until_deadline = async {
                    match deadline {
                        Some(at) => tokio::time::sleep_until(at).await,
                        None => std::future::pending().await,
                    }
                };
                tokio::select! {
                    () = &mut work => break true,
                    _ = drain::started(drain_rx), if deadline.is_none() => {
                        tracing::info!(
                            task = lease_ref.task_id,
                            "draining: giving the current shard {}s to finish",
                            grace.as_secs()
                        );
                        deadline = Some(tokio::time::Instant::now() + grace);
                    }
                    () = until_deadline => break false,
                }
            }
        };
        if !finished {
            tracing::info!(
                task = lease_ref.task_id,
                epoch = lease_ref.epoch,
                "draining: the shard did not finish in time; giving the lease back"
            );
            self.fail(
                &lease_ref,
                FailureKind::Released,
                "worker draining (SIGTERM)".to_string(),
            )
            .await;
        }
        shared.release(&lease_ref);
    }

    async fn work(&mut self, lease: &Lease, lease_ref: LeaseRef) {
        let checkpoint = lease.checkpoint.clone().unwrap_or_default();
        tracing::info!(
            task = lease_ref.task_id,
            epoch = lease_ref.epoch,
            sweep = %lease.sweep,
            checkpoint = %checkpoint.name,
            uri = %checkpoint.uri,
            shard = %format!("{}..{}", lease.shard_start, lease.shard_end),
            examples = lease.examples.len(),
            "leased"
        );
        if !lease.prefetch_uri.is_empty() {
            self.start_prefetch(&lease.prefetch_uri);
        }
        let shard = match self.score(lease).await {
            Ok(shard) => shard,
            Err(failure) => {
                if self.shared.is_revoked(&lease_ref) {
                    return;
                }
                let reason = format!("{:#}", failure.error);
                tracing::warn!(
                    task = lease_ref.task_id,
                    epoch = lease_ref.epoch,
                    kind = ?failure.kind,
                    "task failed: {reason}"
                );
                self.task_ended(lease, TaskOutcome::Failed);
                self.fail(&lease_ref, failure.kind, reason).await;
                return;
            }
        };
        let mut texts = shard.texts.into_iter();
        let rewards: Vec<ExampleReward> = lease
            .examples
            .iter()
            .zip(shard.pairs)
            .map(|(example, scores)| ExampleReward {
                example_id: example.id.clone(),
                scores_chosen: scores.chosen,
                scores_rejected: scores.rejected,
                index: example.index,
                texts: texts.next().unwrap_or_default(),
            })
            .collect();
        let delivered = match self.stream(lease, lease_ref, rewards).await {
            Ok(()) => {
                self.complete(
                    lease_ref,
                    &shard.model_type,
                    &shard.chat_template,
                    shard.scalar_output,
                )
                .await
            }
            Err(undelivered) => Err(undelivered),
        };
        let outcome = match &delivered {
            Ok(true) => TaskOutcome::Completed,
            Ok(false) => TaskOutcome::Duplicate,
            Err(Undelivered::Dropped(_)) => TaskOutcome::Dropped,
            Err(Undelivered::Refused(_)) => TaskOutcome::Failed,
        };
        self.task_ended(lease, outcome);
        match delivered {
            Ok(first) => tracing::info!(
                task = lease_ref.task_id,
                epoch = lease_ref.epoch,
                first,
                "completed"
            ),
            Err(Undelivered::Dropped(why)) => tracing::info!(
                task = lease_ref.task_id,
                epoch = lease_ref.epoch,
                "dropping the shard's results: {why}"
            ),
            Err(Undelivered::Refused(status)) => {
                let reason = format!(
                    "coordinator refused the results ({:?}): {}",
                    status.code(),
                    status.message()
                );
                tracing::warn!(task = lease_ref.task_id, "{reason}");
                self.fail(&lease_ref, FailureKind::Transient, reason).await;
            }
        }
    }

    /// Counts and records how a lease ended.
    fn task_ended(&self, lease: &Lease, outcome: TaskOutcome) {
        task_outcome(outcome);
        tracing::Span::current().record("outcome", outcome.as_str());
        self.observer.task_ended(lease, outcome);
    }

    /// The shard's scores, loading the checkpoint unless the model in memory is the one leased.
    async fn score(&mut self, lease: &Lease) -> Result<ScoredShard, TaskFailure> {
        let examples = self
            .scorer
            .examples(lease)
            .map_err(TaskFailure::transient)?;
        let total = lease.examples.len() * 2;
        let checkpoint = lease.checkpoint.clone().unwrap_or_default();
        let key = ModelKey {
            uri: checkpoint.uri.clone(),
            format: checkpoint.format.clone(),
            scoring: lease.scoring.clone().unwrap_or_default(),
        };
        let loaded = match self.loaded.take() {
            Some(loaded) if loaded.key == key => {
                tracing::info!(checkpoint = %key.uri, "reusing the model in memory");
                loaded
            }
            other => {
                // free the old model's memory before loading the next one
                drop(other);
                self.load(key, lease).await?
            }
        };
        let started = Instant::now();
        let score_span = tracing::info_span!(
            "score",
            pairs = lease.examples.len(),
            tokens = tracing::field::Empty,
            batches = tracing::field::Empty,
            seconds = tracing::field::Empty,
        );
        let scorer = self.scorer.clone();
        let joined = tokio::task::spawn_blocking(move || {
            let mut progress = Progress::new(total);
            let mut batches = 0u64;
            let result = scorer.score(&loaded.model, &examples, &mut |n| {
                batches += 1;
                progress.add(n)
            });
            (loaded, result, batches)
        })
        .instrument(score_span.clone())
        .await
        .map(|(loaded, result, batches)| {
            score_span.record("batches", batches);
            METRICS.batches.inc_by(batches);
            (loaded, result)
        });
        let (loaded, result) = joined
            .map_err(|e| TaskFailure::transient(anyhow::anyhow!("scoring thread died: {e}")))?;
        self.loaded = Some(loaded);
        let shard = result.map_err(|error| {
            if error.is::<CheckpointScoringError>() {
                TaskFailure::checkpoint(error)
            } else {
                TaskFailure::transient(error)
            }
        })?;
        let seconds = started.elapsed().as_secs_f64();
        self.shared.add_scored(shard.tokens, seconds);
        score_span.record("tokens", shard.tokens);
        score_span.record("seconds", seconds);
        METRICS.tokens.inc_by(shard.tokens);
        if seconds > 0.0 {
            METRICS.tokens_per_second.set(shard.tokens as f64 / seconds);
        }
        tracing::info!(
            "scored {} pairs in {seconds:.1}s ({:.0} tokens/s)",
            shard.pairs.len(),
            shard.tokens as f64 / seconds.max(1e-9)
        );
        if shard.pairs.len() != lease.examples.len() {
            return Err(TaskFailure::transient(anyhow::anyhow!(
                "scored {} pairs for {} examples",
                shard.pairs.len(),
                lease.examples.len()
            )));
        }
        if let Some(reason) = non_finite_scores(lease, &shard.pairs, &self.scorer.precision()) {
            return Err(TaskFailure::checkpoint(anyhow::anyhow!(reason)));
        }
        Ok(shard)
    }

    async fn load(
        &mut self,
        key: ModelKey,
        lease: &Lease,
    ) -> Result<Loaded<S::Model>, TaskFailure> {
        let scoring = key.scoring.clone();
        let declared = CheckpointFormat::parse(&key.format);
        // a Hugging Face checkpoint is a folder: a gs:// URI without the slash is a prefix
        let declared_folder = declared == Some(CheckpointFormat::HuggingFace);
        if let Some(prefetch) = self.prefetches.remove(&key.uri) {
            tracing::info!(uri = %key.uri, "waiting for the prefetch of this checkpoint");
            let _ = prefetch.await;
        }
        let started = Instant::now();
        let download_span = tracing::info_span!(
            "download",
            uri = %key.uri,
            bytes = tracing::field::Empty,
            cached = tracing::field::Empty,
        );
        let resolved = self
            .sources
            .resolve(&key.uri, declared_folder)
            .instrument(download_span.clone())
            .await;
        let checkpoint = match resolved {
            Ok(resolved) => resolved,
            Err(error) if error.is_permanent() => {
                return Err(TaskFailure::checkpoint(anyhow::anyhow!(
                    "checkpoint {error}"
                )))
            }
            Err(error) => {
                return Err(TaskFailure::transient(anyhow::anyhow!(
                    "checkpoint {error}"
                )))
            }
        };
        self.shared.add_downloaded(checkpoint.downloaded_bytes);
        METRICS.download_bytes.inc_by(checkpoint.downloaded_bytes);
        download_span.record("bytes", checkpoint.downloaded_bytes);
        download_span.record("cached", checkpoint.cached);
        drop(download_span);
        tracing::debug!(uri = %key.uri, "resolved in {:.1}s", started.elapsed().as_secs_f64());
        let tokenizer = if scoring.tokenizer.is_empty() {
            None
        } else {
            let resolved = self
                .sources
                .resolve(&scoring.tokenizer, true)
                .await
                .map_err(|e| TaskFailure::transient(anyhow::anyhow!("tokenizer {e}")))?;
            self.shared.add_downloaded(resolved.downloaded_bytes);
            METRICS.download_bytes.inc_by(resolved.downloaded_bytes);
            Some(resolved)
        };
        let format = CheckpointFormat::of_local(declared, &checkpoint.path);
        if format == CheckpointFormat::EasyLm && tokenizer.is_none() {
            return Err(TaskFailure::transient(anyhow::anyhow!(
                "{} is an EasyLM checkpoint and carries no tokenizer, but the sweep names none \
                 (scoring.tokenizer is empty)",
                key.uri
            )));
        }
        let local = LocalCheckpoint {
            checkpoint: lease.checkpoint.clone().unwrap_or_default(),
            path: checkpoint.path.clone(),
            format,
            tokenizer: tokenizer.as_ref().map(|t| t.path.clone()),
            scoring,
        };
        let loading = Instant::now();
        // EasyLM msgpack -> tensors, or an HF folder loaded
        let convert_span = tracing::info_span!("convert", uri = %key.uri, format = %format);
        let scorer = self.scorer.clone();
        let joined = tokio::task::spawn_blocking(move || scorer.load(&local))
            .instrument(convert_span)
            .await
            .map_err(|e| {
                TaskFailure::transient(anyhow::anyhow!("model loading thread died: {e}"))
            })?;
        let model = match joined {
            Ok(model) => model,
            Err(failure) => {
                if failure.kind == FailureKind::Checkpoint && checkpoint.cached {
                    tracing::info!(uri = %key.uri, "removing the bad checkpoint from the cache");
                    self.sources.forget(&key.uri);
                }
                // every reason names the checkpoint file, once
                // (a cached copy is named by its URI: the cache path means nothing to a user)
                let named = !checkpoint.cached
                    && format!("{:#}", failure.error)
                        .contains(&checkpoint.path.display().to_string());
                let error = if named {
                    failure.error
                } else {
                    failure.error.context(format!("checkpoint {}", key.uri))
                };
                return Err(TaskFailure {
                    kind: failure.kind,
                    error,
                });
            }
        };
        tracing::info!(
            checkpoint = %key.uri,
            format = %format,
            "model loaded in {:.1}s",
            loading.elapsed().as_secs_f64()
        );
        Ok(Loaded {
            key,
            model,
            _checkpoint: checkpoint,
            _tokenizer: tokenizer,
        })
    }

    fn start_prefetch(&mut self, uri: &str) {
        self.prefetches.retain(|_, handle| !handle.is_finished());
        if self.prefetches.contains_key(uri)
            || self.loaded.as_ref().is_some_and(|l| l.key.uri == uri)
        {
            return;
        }
        let sources = self.sources.clone();
        let owned = uri.to_string();
        // driven on a blocking thread: the cache's download future is not provably `Send` for
        // `tokio::spawn` (higher-ranked lifetimes inside), and `block_on` needs no `Send`
        let runtime = tokio::runtime::Handle::current();
        let handle = tokio::task::spawn_blocking(move || {
            runtime.block_on(async move { sources.prefetch(&owned).await })
        });
        self.prefetches.insert(uri.to_string(), handle);
    }

    /// Streams the rewards in batches of `--stream-batch`, retrying while the coordinator is
    /// unreachable (results are stored idempotently, so a resent batch is harmless).
    async fn stream(
        &mut self,
        lease: &Lease,
        lease_ref: LeaseRef,
        rewards: Vec<ExampleReward>,
    ) -> Result<(), Undelivered> {
        let me = self.shared.registration();
        let batches: Vec<ResultBatch> = rewards
            .chunks(self.config.stream_batch.max(1))
            .map(|chunk| ResultBatch {
                worker_id: me.worker_id.clone(),
                worker_secret: me.secret.clone(),
                lease: Some(lease_ref),
                rewards: chunk.to_vec(),
            })
            .collect();
        let stream_span =
            tracing::info_span!("stream", rewards = rewards.len(), batches = batches.len(),);
        let mut backoff = Backoff::coordinator();
        loop {
            if self.shared.is_revoked(&lease_ref) {
                return Err(Undelivered::Dropped("the lease was revoked".into()));
            }
            let mut stream = tonic::Request::new(tokio_stream::iter(batches.clone()));
            // the coordinator's merge span is a child of this one
            telemetry::inject(&stream_span, stream.metadata_mut());
            let answer = self
                .client
                .stream_results(stream)
                .instrument(stream_span.clone())
                .await;
            match answer {
                Ok(response) => {
                    let response = response.into_inner();
                    tracing::debug!(
                        stored = response.stored,
                        duplicates = response.duplicates,
                        "results streamed"
                    );
                    self.observer.results_acknowledged(
                        lease,
                        &rewards,
                        response.stored,
                        response.duplicates,
                    );
                    return Ok(());
                }
                Err(status) => {
                    self.observer.rpc_failed("StreamResults", &status);
                    self.after_refusal(status, &mut backoff, "streaming results")
                        .await?
                }
            }
        }
    }

    async fn complete(
        &mut self,
        lease_ref: LeaseRef,
        model_type: &str,
        chat_template: &str,
        scalar_output: bool,
    ) -> Result<bool, Undelivered> {
        let mut backoff = Backoff::coordinator();
        loop {
            if self.shared.is_revoked(&lease_ref) {
                return Err(Undelivered::Dropped("the lease was revoked".into()));
            }
            let me = self.shared.registration();
            let message = CompleteRequest {
                worker_id: me.worker_id,
                worker_secret: me.secret,
                lease: Some(lease_ref),
                model_type: model_type.to_string(),
                chat_template: chat_template.to_string(),
                scalar_output,
            };
            let mut message = request(message, RPC_TIMEOUT);
            telemetry::inject(&tracing::Span::current(), message.metadata_mut());
            match self.client.complete(message).await {
                Ok(response) => return Ok(response.into_inner().first),
                Err(status) => {
                    self.observer.rpc_failed("Complete", &status);
                    self.after_refusal(status, &mut backoff, "completing")
                        .await?
                }
            }
        }
    }

    /// Sorts an RPC refusal during delivery: stale/forgotten -> drop, transport -> wait and
    /// retry (Ok), anything else -> refused.
    async fn after_refusal(
        &self,
        status: tonic::Status,
        backoff: &mut Backoff,
        what: &str,
    ) -> Result<(), Undelivered> {
        match status.code() {
            Code::FailedPrecondition => Err(Undelivered::Dropped(format!(
                "the lease is stale ({})",
                status.message()
            ))),
            // the lease belongs to an earlier registration of this worker (it registered again)
            Code::PermissionDenied => Err(Undelivered::Dropped(format!(
                "the lease is not this registration's ({})",
                status.message()
            ))),
            Code::NotFound => {
                self.shared.mark_forgotten();
                Err(Undelivered::Dropped(format!(
                    "the coordinator does not know this worker ({})",
                    status.message()
                )))
            }
            _ if self.retry_or_give_up(&status) => {
                let delay = backoff.next_delay();
                tracing::warn!(
                    coordinator = %self.config.coordinator,
                    "{what} failed: {}; retrying in {:.1}s",
                    status.message(),
                    delay.as_secs_f64()
                );
                tokio::time::sleep(delay).await;
                Ok(())
            }
            _ => Err(Undelivered::Refused(status)),
        }
    }

    /// Tells the coordinator the lease failed (a few tries; a lost Fail only delays the retry
    /// until the lease expires).
    pub(super) async fn fail(&mut self, lease_ref: &LeaseRef, kind: FailureKind, reason: String) {
        let mut backoff = Backoff::new(Duration::from_millis(250), Duration::from_secs(5));
        for _ in 0..5 {
            let me = self.shared.registration();
            let message = FailRequest {
                worker_id: me.worker_id,
                worker_secret: me.secret,
                lease: Some(*lease_ref),
                kind: kind as i32,
                reason: reason.clone(),
            };
            let answer = self.client.fail(request(message, RPC_TIMEOUT)).await;
            if let Err(status) = &answer {
                self.observer.rpc_failed("Fail", status);
            }
            match answer {
                Ok(_) => return,
                Err(status) if status.code() == Code::FailedPrecondition => {
                    tracing::info!(task = lease_ref.task_id, "fail: the lease is already stale");
                    return;
                }
                Err(status) if status.code() == Code::PermissionDenied => {
                    tracing::info!(
                        task = lease_ref.task_id,
                        "fail: the lease is not this registration's ({})",
                        status.message()
                    );
                    return;
                }
                Err(status) if self.retry_or_give_up(&status) => {
                    tokio::time::sleep(backoff.next_delay()).await;
                }
                Err(status) => {
                    tracing::warn!(
                        task = lease_ref.task_id,
                        "fail refused: {}",
                        status.message()
                    );
                    return;
                }
            }
        }
        tracing::warn!(
            task = lease_ref.task_id,
            "could not report the failure; the lease will expire"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use herd_rpc::v1::Example;

    fn lease(n: u32) -> Lease {
        Lease {
            examples: (0..n)
                .map(|i| Example {
                    id: format!("ex{i}"),
                    index: 10 + i,
                    ..Example::default()
                })
                .collect(),
            ..Lease::default()
        }
    }

    fn pair(chosen: f64, rejected: f64) -> PairScores {
        PairScores {
            chosen: vec![chosen],
            rejected: vec![rejected],
        }
    }

    #[test]
    fn a_shard_with_non_finite_scores_fails_its_checkpoint_naming_the_cause() {
        let half = Precision {
            name: "Half".to_string(),
            non_finite_hint: "fp16 overflows easily",
        };
        let finite = [pair(1.0, 0.5), pair(-3.0, 2.0), pair(0.0, 0.0)];
        assert_eq!(non_finite_scores(&lease(3), &finite, &half), None);
        let broken = [
            pair(1.0, 0.5),
            pair(f64::INFINITY, 2.0),
            pair(0.0, f64::NAN),
        ];
        let reason = non_finite_scores(&lease(3), &broken, &half).unwrap();
        assert!(reason.starts_with("2 of 3 examples"), "{reason}");
        assert!(reason.contains("score in Half"), "{reason}");
        assert!(reason.contains("example ex1 at index 11"), "{reason}");
        assert!(reason.ends_with(": fp16 overflows easily"), "{reason}");
    }
}
