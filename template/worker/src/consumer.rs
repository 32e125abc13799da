//! Consuming jobs: the supervisor loop, each delivery's life, and the
//! dead-letter status recorder.
//!
//! **A delivery's life.** Take the job (`running`, attempts + 1), then run
//! its effect in one transaction that first locks the job row and checks
//! the job is unfinished, and that also marks it `succeeded`. Ack only
//! after that commit. So:
//!
//! - a redelivery of a finished job finds it finished and is acked with no
//!   effect (`duplicate`);
//! - two deliveries of one job at once (a duplicate publish) serialise on
//!   the row lock, and the second finds the job finished;
//! - a crash before the commit leaves no effect, and the broker redelivers.
//!
//! **Failures.** A transient error is recorded on the job, a copy of the
//! message waits in a delay queue, and the delivery is acked. A permanent
//! error, or running out of attempts, finishes the job as `failed` and
//! rejects the message to the dead-letter queue. A panic returns the
//! message to the queue: if it keeps panicking, the queue's delivery limit
//! dead-letters it, and the recorder marks the job `dead_lettered`. While
//! Postgres is away, a delivery is held and retried, not bounced.
//!
//! **Connection.** One supervisor loop: connect, declare, consume; on any
//! connection or channel error, rebuild everything with backoff. Deliveries
//! that were in flight are redelivered by the broker; their jobs' guard
//! makes that harmless.
//!
//! **Shutdown.** Stop consuming (`basic.cancel`), let started jobs finish
//! within the grace, return the rest (unstarted deliveries go back when the
//! channel closes), and close.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::Context as _;
use futures_util::StreamExt as _;
use jobs::JobMessage;
use jobs::broker::{self, Backoff};
use jobs::message::{self, TRACEPARENT, TRACESTATE};
use lapin::message::Delivery;
use lapin::options::{
    BasicAckOptions, BasicCancelOptions, BasicConsumeOptions, BasicNackOptions, BasicPublishOptions,
    BasicQosOptions, BasicRejectOptions, ConfirmSelectOptions,
};
use lapin::types::FieldTable;
use lapin::{Channel, Confirmation, Connection};
use secrecy::ExposeSecret;
use serde_json::json;
use sqlx::PgPool;
use tokio::sync::{Semaphore, watch};
use tokio::task::JoinSet;
use tokio::time::Instant;
use tracing::Instrument as _;
use uuid::Uuid;

use crate::config::Config;
use crate::kinds::{self, Context, JobError};
use crate::metrics::{KindLabels, Metrics};
use crate::store::{self, Start, Started};

/// Unacked dead-letter copies the status recorder holds at once.
const STATUS_PREFETCH: u16 = 32;
/// How long Postgres may stay away while a delivery is held before the
/// delivery is returned to the queue.
const DATABASE_PATIENCE: Duration = Duration::from_mins(1);
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

/// The consuming side of a worker.
pub struct Runner {
    config: Config,
    db: PgPool,
    metrics: Arc<Metrics>,
    consuming: Arc<AtomicBool>,
    draining: Arc<AtomicBool>,
    permits: Arc<Semaphore>,
}

impl Runner {
    /// A runner; `consuming` and `draining` are shared with the health endpoints.
    pub fn new(
        config: Config,
        db: PgPool,
        metrics: Arc<Metrics>,
        consuming: Arc<AtomicBool>,
        draining: Arc<AtomicBool>,
    ) -> Self {
        let permits = Arc::new(Semaphore::new(usize::from(config.concurrency)));
        Self { config, db, metrics, consuming, draining, permits }
    }

    /// Consumes until `stop` turns true, reconnecting whenever the
    /// connection is lost, then drains.
    pub async fn supervise(self: Arc<Self>, mut stop: watch::Receiver<bool>) {
        let mut tasks = JoinSet::new();
        let mut backoff = Backoff::default();
        while !*stop.borrow() {
            let result = self.session(&mut tasks, &mut stop, &mut backoff).await;
            self.consuming.store(false, Ordering::Release);
            self.metrics.amqp_connected.set(0);
            match result {
                Ok(()) => return,
                Err(err) => {
                    self.metrics.amqp_reconnects.inc();
                    let delay = backoff.next_delay();
                    tracing::warn!(error = format!("{err:#}"), retry_in = ?delay, "lost RabbitMQ; reconnecting");
                    tokio::select! {
                        () = tokio::time::sleep(delay) => {}
                        _ = stop.changed() => {}
                    }
                }
            }
        }
        // Stopped while disconnected: finish what was started all the same.
        self.drain(&mut tasks).await;
    }

    async fn session(
        self: &Arc<Self>,
        tasks: &mut JoinSet<()>,
        stop: &mut watch::Receiver<bool>,
        backoff: &mut Backoff,
    ) -> anyhow::Result<()> {
        let name = format!("{}-worker {}", env!("PROJECT_NAME"), self.config.name);
        let connection = broker::connect(self.config.amqp_url.expose_secret(), &name).await?;
        let result = self.consume(&connection, tasks, stop, backoff).await;
        // A dead link would hang a polite close: give it a moment, then drop.
        let _ = tokio::time::timeout(Duration::from_secs(1), connection.close(200, "worker stopping".into()))
            .await;
        result
    }

    async fn consume(
        self: &Arc<Self>,
        connection: &Connection,
        tasks: &mut JoinSet<()>,
        stop: &mut watch::Receiver<bool>,
        backoff: &mut Backoff,
    ) -> anyhow::Result<()> {
        let topology = &self.config.topology;
        let channel = connection.create_channel().await.context("opening a channel")?;
        channel.confirm_select(ConfirmSelectOptions::default()).await.context("enabling confirms")?;
        topology.declare(&channel).await.context("declaring the topology")?;
        topology
            .declare_retries(&channel, &self.config.retry_delays)
            .await
            .context("declaring retry queues")?;
        channel.basic_qos(self.config.concurrency, BasicQosOptions::default()).await?;
        let tag = format!("{}-{}", self.config.name, Uuid::now_v7());
        let mut work = channel
            .basic_consume(
                topology.queue().into(),
                tag.as_str().into(),
                BasicConsumeOptions::default(),
                FieldTable::default(),
            )
            .await
            .context("consuming the work queue")?;
        let status_channel = connection.create_channel().await.context("opening the status channel")?;
        status_channel.basic_qos(STATUS_PREFETCH, BasicQosOptions::default()).await?;
        let mut dead = status_channel
            .basic_consume(
                topology.status_queue().into(),
                format!("{tag}-status").into(),
                BasicConsumeOptions::default(),
                FieldTable::default(),
            )
            .await
            .context("consuming the status queue")?;
        self.consuming.store(true, Ordering::Release);
        self.metrics.amqp_connected.set(1);
        backoff.reset();
        tracing::info!(queue = topology.queue(), prefetch = self.config.concurrency, "consuming");
        loop {
            tokio::select! {
                delivery = work.next() => match delivery {
                    Some(Ok(delivery)) => {
                        tasks.spawn(self.clone().handle(delivery, channel.clone()));
                    }
                    Some(Err(err)) => return Err(err).context("consuming"),
                    None => anyhow::bail!("the broker cancelled the consumer"),
                },
                delivery = dead.next() => match delivery {
                    Some(Ok(delivery)) => {
                        tasks.spawn(self.clone().record_dead_letter(delivery));
                    }
                    Some(Err(err)) => return Err(err).context("consuming dead letters"),
                    None => anyhow::bail!("the broker cancelled the status consumer"),
                },
                Some(_) = tasks.join_next(), if !tasks.is_empty() => {}
                _ = stop.changed() => {
                    // No new deliveries from here on; those already sent
                    // but not started go back to the queue when the
                    // channel closes.
                    tracing::info!(grace = ?self.config.shutdown_grace, "stopping: finishing started jobs");
                    let _ = channel.basic_cancel(tag.as_str().into(), BasicCancelOptions::default()).await;
                    let _ = status_channel.basic_cancel(format!("{tag}-status").into(), BasicCancelOptions::default()).await;
                    self.drain(tasks).await;
                    let _ = channel.close(200, "worker stopping".into()).await;
                    return Ok(());
                }
            }
        }
    }

    /// Waits for started jobs within the grace, then abandons the rest
    /// (their transactions roll back and the broker redelivers them).
    async fn drain(&self, tasks: &mut JoinSet<()>) {
        let deadline = Instant::now() + self.config.shutdown_grace;
        while !tasks.is_empty() {
            if tokio::time::timeout_at(deadline, tasks.join_next()).await.is_err() {
                tracing::warn!(abandoned = tasks.len(), "shutdown grace expired; abandoning running jobs");
                for _ in 0..tasks.len() {
                    self.metrics.processed("unknown", "abandoned");
                }
                tasks.abort_all();
                break;
            }
        }
    }

    async fn handle(self: Arc<Self>, delivery: Delivery, channel: Channel) {
        let Some(message) = JobMessage::from_bytes(&delivery.data) else {
            tracing::error!("an unreadable message; dead-lettering it");
            self.metrics.processed("unknown", "rejected");
            settle(&delivery, Settle::Reject).await;
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
            if self.draining.load(Ordering::Acquire) {
                // Not started: back to the queue for another worker.
                settle(&delivery, Settle::Requeue).await;
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
            let label = self.settle(&message, &trace, &delivery, &channel, outcome).await;
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
        let give_up = Instant::now() + DATABASE_PATIENCE;
        let mut delay = Duration::from_millis(100);
        loop {
            // In its own task, so that a panicking job is caught, not fatal.
            let effect = tokio::spawn(
                effect(self.db.clone(), id, started.clone(), self.config.name.clone())
                    .instrument(tracing::Span::current()),
            );
            return match effect.await {
                Err(_) => Outcome::Panicked,
                Ok(Ok(true)) => Outcome::Succeeded,
                Ok(Ok(false)) => Outcome::Duplicate,
                Ok(Err(JobError::Transient(error))) => {
                    Outcome::Transient { error, attempt: started.attempts }
                }
                Ok(Err(JobError::Permanent(error))) => Outcome::Permanent(error),
                Ok(Err(JobError::Database(err))) if store::is_transient(&err) => {
                    if Instant::now() + delay > give_up || self.draining.load(Ordering::Acquire) {
                        return Outcome::DatabaseAway(err);
                    }
                    tracing::warn!(error = %telemetry::chain(&err), retry_in = ?delay, "the database failed during the job; retrying");
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(Duration::from_secs(5));
                    continue;
                }
                Ok(Err(JobError::Database(err))) => {
                    Outcome::Transient { error: format!("database: {err}"), attempt: started.attempts }
                }
            };
        }
    }

    /// Acks, retries or dead-letters; returns the metric's outcome label.
    async fn settle(
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
                settle(delivery, Settle::Ack).await;
                "succeeded"
            }
            Outcome::Duplicate => {
                tracing::info!("job already finished; acknowledging the duplicate delivery");
                settle(delivery, Settle::Ack).await;
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
                    settle(delivery, Settle::Ack).await;
                    "retried"
                } else {
                    settle(delivery, Settle::Requeue).await;
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
                settle(delivery, Settle::Requeue).await;
                "panicked"
            }
            Outcome::Missing => {
                tracing::error!("no such job; dead-lettering the message");
                settle(delivery, Settle::Reject).await;
                "rejected"
            }
            Outcome::DatabaseAway(err) => {
                tracing::error!(error = %telemetry::chain(&err), "the database stayed away; returning the job to the queue");
                settle(delivery, Settle::Requeue).await;
                "requeued"
            }
        }
    }

    /// Records a permanent failure and dead-letters the message.
    async fn fail(&self, delivery: &Delivery, id: Uuid, error: String) -> &'static str {
        tracing::error!(error, "job failed permanently; dead-lettering it");
        let error = json!({ "message": error });
        if self.patiently(|| store::finish_unsuccessfully(&self.db, id, "failed", &error)).await.is_ok() {
            settle(delivery, Settle::Reject).await;
            "failed"
        } else {
            settle(delivery, Settle::Requeue).await;
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

    /// Marks a dead-lettered job as such (unless it finished otherwise, as a
    /// permanently failed job has), then acks the copy. The original stays
    /// in the dead-letter queue for operators.
    async fn record_dead_letter(self: Arc<Self>, delivery: Delivery) {
        let id = delivery
            .properties
            .message_id()
            .as_ref()
            .and_then(|id| Uuid::parse_str(id.as_str()).ok())
            .or_else(|| JobMessage::from_bytes(&delivery.data).map(|m| m.id));
        let Some(id) = id else {
            settle(&delivery, Settle::Ack).await;
            return;
        };
        let reason = message::header_str(&delivery.properties, "x-first-death-reason")
            .unwrap_or_else(|| "unknown".into());
        let error = json!({ "message": format!("dead-lettered by RabbitMQ ({reason})"), "reason": reason });
        match self.patiently(|| store::finish_unsuccessfully(&self.db, id, "dead_lettered", &error)).await {
            Ok(changed) => {
                if changed {
                    self.metrics.jobs_dead_lettered.inc();
                    tracing::error!(job_id = %id, reason, "job dead-lettered");
                }
                settle(&delivery, Settle::Ack).await;
            }
            Err(_) => settle(&delivery, Settle::Requeue).await,
        }
    }

    /// Runs a database call, waiting out transient failures (Postgres
    /// restarting, the pool exhausted) for up to [`DATABASE_PATIENCE`].
    async fn patiently<T, F, Fut>(&self, mut call: F) -> sqlx::Result<T>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = sqlx::Result<T>>,
    {
        let give_up = Instant::now() + DATABASE_PATIENCE;
        let mut delay = Duration::from_millis(100);
        loop {
            match call().await {
                Err(err) if store::is_transient(&err) && Instant::now() + delay <= give_up => {
                    tracing::warn!(error = %telemetry::chain(&err), retry_in = ?delay, "database call failed; retrying");
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(Duration::from_secs(5));
                }
                result => return result,
            }
        }
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

/// What to tell the broker about a delivery.
#[derive(Debug, Clone, Copy)]
enum Settle {
    /// Done with it.
    Ack,
    /// Give it back for redelivery.
    Requeue,
    /// Dead-letter it.
    Reject,
}

/// Settles a delivery. A failure means the channel is gone, and the broker
/// redelivers the message anyway.
async fn settle(delivery: &Delivery, how: Settle) {
    let result = match how {
        Settle::Ack => delivery.ack(BasicAckOptions::default()).await,
        Settle::Requeue => {
            delivery.nack(BasicNackOptions { requeue: true, ..BasicNackOptions::default() }).await
        }
        Settle::Reject => delivery.reject(BasicRejectOptions { requeue: false }).await,
    };
    if let Err(err) = result {
        tracing::warn!(error = %telemetry::chain(&err), settle = ?how, "cannot settle the delivery; the broker will redeliver it");
    }
}
