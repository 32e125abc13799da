//! One delivery's life: read the message, take the job, run its effect in
//! the transaction that records it, then tell the broker (the rules, and
//! the races they close, are in the header of `consumer.rs`).

use std::sync::Arc;
use std::time::Duration;

use jobs::JobMessage;
use jobs::message::{self, TRACEPARENT, TRACESTATE};
use lapin::message::Delivery;
use lapin::options::BasicPublishOptions;
use lapin::{Channel, Confirmation};
use serde_json::json;
use sqlx::PgPool;
use tokio::time::Instant;
use tracing::Instrument as _;
use uuid::Uuid;

use super::Runner;
use super::patience::patiently;
use super::reply::{Reply, reply};
use crate::kinds::{self, Context, JobError};
use crate::metrics::KindLabels;
use crate::store::{self, Start, Started};

/// How long the broker may take to confirm a retry copy.
const RETRY_CONFIRM_TIMEOUT: Duration = Duration::from_secs(5);

/// How one delivery ended.
#[derive(Debug)]
enum Outcome {
    Succeeded,
    Duplicate,
    Transient { error: String, attempt: i32 },
    Permanent(String),
    Panicked,
    Missing,
    DatabaseAway(sqlx::Error),
}

impl Runner {
    pub(super) async fn handle(self: Arc<Self>, delivery: Delivery, channel: Channel) {
        let Some(message) = JobMessage::from_bytes(&delivery.data) else {
            tracing::error!("an unreadable message; dead-lettering it");
            self.metrics.processed("unknown", "rejected");
            reply(&delivery, Reply::Reject).await;
            return;
        };
        if delivery.redelivered {
            self.metrics.jobs_redelivered.inc();
        }
        let traceparent = message::header_str(&delivery.properties, TRACEPARENT);
        let tracestate = message::header_str(&delivery.properties, TRACESTATE);
        let queue = self.config.topology.queue();
        // The consumer span: the child of the relay's publish span, so the
        // submitting request and this delivery share one trace.
        let span = tracing::info_span!(
            "process",
            otel.name = format!("process {queue}"),
            otel.kind = "consumer",
            messaging.system = "rabbitmq",
            messaging.operation.type = "process",
            messaging.operation.name = "process",
            messaging.destination.name = queue.as_str(),
            messaging.message.id = %message.id,
            messaging.message.body.size = delivery.data.len(),
            messaging.rabbitmq.message.delivery_tag = delivery.delivery_tag,
            job_id = %message.id,
            kind = %message.kind,
            otel.status_code = tracing::field::Empty,
            otel.status_description = tracing::field::Empty,
            error.type = tracing::field::Empty,
        );
        // A retry copy carries this delivery's context on.
        let trace = telemetry::propagation::continue_from(&span, traceparent, tracestate);
        let consume = span.clone();
        async move {
            let Ok(_permit) = self.permits.clone().acquire_owned().await else { return };
            if self.lifecycle.is_draining() {
                // Not started: back to the queue for another worker.
                reply(&delivery, Reply::Requeue).await;
                return;
            }
            let started = Instant::now();
            self.metrics.jobs_in_flight.inc();
            let job = tracing::info_span!(
                "job",
                otel.name = format!("job {}", message.kind),
                job.id = %message.id,
                job.kind = %message.kind,
                job.attempt = tracing::field::Empty,
                otel.status_code = tracing::field::Empty,
                otel.status_description = tracing::field::Empty,
                error.type = tracing::field::Empty,
            );
            let outcome = self.process(&message).instrument(job.clone()).await;
            let label = self.conclude(&message, &trace, &delivery, &channel, outcome).await;
            if !matches!(label, "succeeded" | "duplicate") {
                telemetry::spans::record_error(&job, label, &label);
                telemetry::spans::record_error(&consume, label, &label);
            }
            drop(job);
            self.metrics.jobs_in_flight.dec();
            self.metrics.processed(&message.kind, label);
            self.metrics
                .job_duration
                .get_or_create(&KindLabels { kind: message.kind.clone() })
                .observe(started.elapsed().as_secs_f64());
        }
        .instrument(span)
        .await;
    }

    async fn process(&self, message: &JobMessage) -> Outcome {
        let id = message.id;
        let started = match self.patiently(|| store::take(&self.db, id)).await {
            Ok(Start::Started(started)) => started,
            Ok(Start::Finished) => return Outcome::Duplicate,
            Ok(Start::Missing) => return Outcome::Missing,
            Err(err) => return Outcome::DatabaseAway(err),
        };
        tracing::Span::current().record("job.attempt", started.attempts);
        tracing::debug!("started");
        // In its own task, so that a panicking job is caught, not fatal.
        let run = || {
            tokio::spawn(
                effect(self.db.clone(), id, started.clone(), self.config.name.clone())
                    .instrument(tracing::Span::current()),
            )
        };
        match patiently(run, transient_database_failure, || self.lifecycle.is_draining()).await {
            Err(_) => Outcome::Panicked,
            Ok(Ok(true)) => Outcome::Succeeded,
            Ok(Ok(false)) => Outcome::Duplicate,
            Ok(Err(JobError::Transient(error))) => Outcome::Transient { error, attempt: started.attempts },
            Ok(Err(JobError::Permanent(error))) => Outcome::Permanent(error),
            Ok(Err(JobError::Database(err))) if store::is_transient(&err) => Outcome::DatabaseAway(err),
            Ok(Err(JobError::Database(err))) => {
                Outcome::Transient { error: format!("database: {err}"), attempt: started.attempts }
            }
        }
    }

    /// Acks, retries or dead-letters; returns the metric's outcome label.
    async fn conclude(
        &self,
        message: &JobMessage,
        trace: &[(&'static str, String)],
        delivery: &Delivery,
        channel: &Channel,
        outcome: Outcome,
    ) -> &'static str {
        let id = message.id;
        match outcome {
            Outcome::Succeeded => {
                tracing::info!("job succeeded");
                reply(delivery, Reply::Ack).await;
                "succeeded"
            }
            Outcome::Duplicate => {
                tracing::info!("job already finished; acknowledging the duplicate delivery");
                reply(delivery, Reply::Ack).await;
                "duplicate"
            }
            Outcome::Transient { error, attempt } if attempt < self.config.max_attempts => {
                let delay = self.config.retry_delay(attempt);
                tracing::warn!(error, retry_in = ?delay, "job failed; retrying later");
                let recorded =
                    self.patiently(|| store::retry_later(&self.db, id, &error, delay.as_millis())).await;
                // Recorded, then the retry copy, then the ack: a crash in
                // between at worst delivers the job twice, which its guard
                // makes harmless.
                if recorded.is_ok() && self.publish_retry(channel, message, trace, delay).await {
                    reply(delivery, Reply::Ack).await;
                    "retried"
                } else {
                    reply(delivery, Reply::Requeue).await;
                    "requeued"
                }
            }
            Outcome::Transient { error, attempt } => {
                let error = format!("gave up after {attempt} attempts: {error}");
                self.fail(delivery, id, error).await
            }
            Outcome::Permanent(error) => self.fail(delivery, id, error).await,
            Outcome::Panicked => {
                tracing::error!(
                    "job panicked; returning it to the queue (its delivery limit dead-letters a poison message)"
                );
                reply(delivery, Reply::Requeue).await;
                "panicked"
            }
            Outcome::Missing => {
                tracing::error!("no such job; dead-lettering the message");
                reply(delivery, Reply::Reject).await;
                "rejected"
            }
            Outcome::DatabaseAway(err) => {
                tracing::error!(error = %telemetry::chain(&err), "the database stayed away; returning the job to the queue");
                reply(delivery, Reply::Requeue).await;
                "requeued"
            }
        }
    }

    /// Records a permanent failure and dead-letters the message.
    async fn fail(&self, delivery: &Delivery, id: Uuid, error: String) -> &'static str {
        tracing::error!(error, "job failed permanently; dead-lettering it");
        let error = json!({ "message": error });
        if self.patiently(|| store::finish_unsuccessfully(&self.db, id, "failed", &error)).await.is_ok() {
            reply(delivery, Reply::Reject).await;
            "failed"
        } else {
            reply(delivery, Reply::Requeue).await;
            "requeued"
        }
    }

    /// Publishes a copy of the message to the delay queue for `delay` and
    /// waits for the broker's confirm.
    async fn publish_retry(
        &self,
        channel: &Channel,
        message: &JobMessage,
        trace: &[(&'static str, String)],
        delay: Duration,
    ) -> bool {
        let queue = self.config.topology.retry_queue(delay);
        let options = BasicPublishOptions { mandatory: true, ..BasicPublishOptions::default() };
        let body = message.to_bytes();
        let published = channel.basic_publish(
            "".into(),
            queue.as_str().into(),
            options,
            &body,
            message.properties(trace),
        );
        let confirmed = async {
            match published.await?.await? {
                Confirmation::Ack(None) => Ok(true),
                other => {
                    tracing::warn!(confirmation = ?other, "the broker did not take the retry");
                    Ok::<bool, lapin::Error>(false)
                }
            }
        };
        match tokio::time::timeout(RETRY_CONFIRM_TIMEOUT, confirmed).await {
            Ok(Ok(taken)) => taken,
            Ok(Err(err)) => {
                tracing::warn!(error = %telemetry::chain(&err), "cannot publish the retry");
                false
            }
            Err(_) => false,
        }
    }
}

/// How the effect's task ended: its result, or its panic.
type EffectEnd = Result<Result<bool, JobError>, tokio::task::JoinError>;

/// The database failure in an effect's end worth waiting out.
fn transient_database_failure(end: &EffectEnd) -> Option<&sqlx::Error> {
    match end {
        Ok(Err(JobError::Database(err))) if store::is_transient(err) => Some(err),
        _ => None,
    }
}

/// The effect's transaction: lock the unfinished job, run it, record the
/// effect and the result, commit. `false` when the job had finished.
async fn effect(db: PgPool, id: Uuid, started: Started, worker: String) -> Result<bool, JobError> {
    let mut tx = db.begin().await?;
    if !store::lock_unfinished(&mut tx, id).await? {
        return Ok(false);
    }
    let mut ctx = Context { tx: &mut tx, job_id: id, attempt: started.attempts };
    let result = kinds::run(&started.kind, &started.input, &mut ctx).await?;
    store::succeed(&mut tx, id, started.attempts, &worker, &result).await?;
    tx.commit().await?;
    Ok(true)
}
