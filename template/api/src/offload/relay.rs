//! The outbox relay: publishes committed jobs to RabbitMQ.
//!
//! Every replica runs one. Replicas share the work without electing a
//! leader: each pass locks a batch of due rows with `FOR UPDATE SKIP
//! LOCKED`, so two relays never hold the same row, and a relay that dies
//! releases its rows when its transaction does.
//!
//! A pass publishes the batch (persistent, `mandatory`, the job id as the
//! message id, the trace context in the headers), awaits every publisher
//! confirm under one deadline, then in the same transaction deletes the rows
//! the broker confirmed and schedules the rest for a retry with backoff. A
//! message the broker returned (no queue to route to) or nacked does not
//! count as published.
//!
//! A crash between the confirms and the commit leaves rows that were in fact
//! published: they are published again, and the worker recognises the
//! duplicate. That is the price of never losing a job, and the relay
//! failpoint test provokes it on purpose.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::Duration;

use anyhow::Context;
use jobs::broker::{self, Backoff};
use jobs::{JobMessage, Topology};
use lapin::options::{BasicPublishOptions, ConfirmSelectOptions};
use lapin::{Channel, Confirmation};
use secrecy::{ExposeSecret, SecretString};
use sqlx::PgPool;
use telemetry::spans::Traced as _;
use tokio::sync::Notify;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tracing::Instrument as _;
use uuid::Uuid;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Unit;

use crate::observability::metrics::Metrics;

/// An outbox row due for publishing, with the trace context of the request
/// that submitted its job.
#[derive(sqlx::FromRow)]
struct Due {
    id: Uuid,
    kind: String,
    traceparent: Option<String>,
    tracestate: Option<String>,
}

/// How often the outbox lag metric is refreshed.
const LAG_INTERVAL: Duration = Duration::from_secs(1);

/// The relay's settings.
#[derive(Debug, Clone)]
pub struct RelayConfig {
    /// The broker.
    pub url: SecretString,
    /// Queue names.
    pub topology: Topology,
    /// Longest wait between passes when nothing wakes the relay (rows
    /// written by other replicas, retries coming due).
    pub poll: Duration,
    /// Rows per pass.
    pub batch: u32,
    /// How long the broker may take to confirm a batch.
    pub confirm_timeout: Duration,
    /// Test hook: crash this many passes between the confirms and the commit.
    pub crash_after_confirm: Option<Arc<AtomicU32>>,
}

/// Why a pass ended early.
enum Failure {
    /// Postgres failed: retry the pass on the same broker connection.
    Database(anyhow::Error),
    /// The broker link failed (or the relay crashed): start over.
    Broker(anyhow::Error),
}

/// What the broker made of a batch.
struct Batch {
    /// Confirmed: delete their rows.
    published: Vec<Uuid>,
    /// Not confirmed: retry their rows later, for these reasons.
    failed: Vec<Uuid>,
    reasons: Vec<String>,
    /// Set when the link failed: the relay starts over after this pass.
    broken: Option<anyhow::Error>,
}

/// A running relay.
pub struct Relay {
    db: PgPool,
    config: RelayConfig,
    wake: Arc<Notify>,
    metrics: RelayMetrics,
}

/// Labels of the publish failures.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutboxLabels {
    /// `returned` (unroutable), `nacked`, `timeout` (no confirm in time),
    /// `connection` (the link died while waiting) or `unconfirmed`.
    reason: &'static str,
}

/// The relay's metrics. Registered with the app whether or not the relay
/// runs, so dashboards and alerts read zeros rather than gaps.
#[derive(Clone)]
pub struct RelayMetrics {
    /// Jobs in the outbox, not yet confirmed by RabbitMQ.
    pending: Gauge,
    /// Age of the oldest outbox row: how far publishing lags behind.
    lag_seconds: Gauge<f64, AtomicU64>,
    /// Job messages the broker confirmed.
    published: Counter,
    /// Job messages not confirmed, by reason; their rows are retried.
    publish_failures: Family<OutboxLabels, Counter>,
    /// Times the relay lost its connection (or crashed) and started over.
    restarts: Counter,
    /// 1 while the relay is connected to RabbitMQ.
    amqp_connected: Gauge,
}

impl RelayMetrics {
    /// Declares the relay's metrics in `metrics`.
    pub fn register(metrics: &Metrics) -> Self {
        let pending = Gauge::default();
        metrics.register(
            "outbox_pending",
            "Jobs in the outbox, not yet confirmed by RabbitMQ",
            pending.clone(),
        );
        let lag_seconds = Gauge::<f64, AtomicU64>::default();
        metrics.register_with_unit(
            "outbox_lag",
            "Age of the oldest job not yet confirmed by RabbitMQ",
            Unit::Seconds,
            lag_seconds.clone(),
        );
        let published = Counter::default();
        metrics.register("outbox_published", "Job messages RabbitMQ confirmed", published.clone());
        let publish_failures = Family::<OutboxLabels, Counter>::default();
        metrics.register(
            "outbox_publish_failures",
            "Job messages RabbitMQ did not confirm, by reason (their rows are retried)",
            publish_failures.clone(),
        );
        let restarts = Counter::default();
        metrics.register(
            "outbox_relay_restarts",
            "Times the outbox relay lost its connection or crashed and started over",
            restarts.clone(),
        );
        let amqp_connected = Gauge::default();
        metrics.register(
            "amqp_connected",
            "1 while the outbox relay is connected to RabbitMQ",
            amqp_connected.clone(),
        );
        Self { pending, lag_seconds, published, publish_failures, restarts, amqp_connected }
    }
}

impl Relay {
    /// Starts the relay and its lag gauge. Abort the handle to stop it:
    /// stopping mid-pass is safe (see the module documentation).
    pub fn spawn(
        db: PgPool,
        config: RelayConfig,
        wake: Arc<Notify>,
        metrics: RelayMetrics,
    ) -> JoinHandle<()> {
        let relay = Arc::new(Self { db, config, wake, metrics });
        tokio::spawn(async move {
            tokio::join!(relay.clone().supervise(), relay.watch_lag());
        })
    }

    /// Connects, relays until the connection fails, and starts over.
    async fn supervise(self: Arc<Self>) {
        let mut backoff = Backoff::default();
        loop {
            let error = self.session(&mut backoff).await;
            self.metrics.amqp_connected.set(0);
            self.metrics.restarts.inc();
            let delay = backoff.next_delay();
            tracing::warn!(error = format!("{error:#}"), retry_in = ?delay, "outbox relay stopped; restarting");
            tokio::time::sleep(delay).await;
        }
    }

    async fn session(&self, backoff: &mut Backoff) -> anyhow::Error {
        let url = self.config.url.expose_secret();
        let connection = match broker::connect(url, concat!(env!("PROJECT_NAME"), "-api relay")).await {
            Ok(connection) => connection,
            Err(err) => return err.into(),
        };
        let error = match self.relay(&connection, backoff).await {
            Ok(never) => match never {},
            Err(err) => err,
        };
        // A dead link would hang a polite close: give it a moment, then drop.
        let _ =
            tokio::time::timeout(Duration::from_secs(1), connection.close(200, "relay restarting".into()))
                .await;
        error
    }

    async fn relay(
        &self,
        connection: &lapin::Connection,
        backoff: &mut Backoff,
    ) -> anyhow::Result<std::convert::Infallible> {
        let channel = connection.create_channel().await.context("opening a channel")?;
        channel
            .confirm_select(ConfirmSelectOptions::default())
            .await
            .context("enabling publisher confirms")?;
        self.config.topology.declare(&channel).await.context("declaring the topology")?;
        self.metrics.amqp_connected.set(1);
        tracing::info!(queue = self.config.topology.queue(), "outbox relay connected");
        let mut first = true;
        let mut database_backoff = Backoff::default();
        loop {
            let relayed = match self.pass(&channel).await {
                Ok(relayed) => relayed,
                // Postgres trouble is no reason to drop the broker connection.
                Err(Failure::Database(err)) => {
                    let delay = database_backoff.next_delay();
                    tracing::warn!(error = format!("{err:#}"), retry_in = ?delay, "outbox pass failed");
                    tokio::time::sleep(delay).await;
                    continue;
                }
                Err(Failure::Broker(err)) => return Err(err),
            };
            database_backoff.reset();
            if first {
                // Only a connection that carried a pass resets the backoff.
                backoff.reset();
                first = false;
            }
            if relayed < self.config.batch as usize {
                tokio::select! {
                    () = self.wake.notified() => {}
                    () = tokio::time::sleep(self.config.poll) => {}
                }
            }
        }
    }

    /// One batch: lock, publish, await confirms, delete or reschedule, commit.
    async fn pass(&self, channel: &Channel) -> Result<usize, Failure> {
        let mut tx =
            self.db.begin().await.context("starting an outbox transaction").map_err(Failure::Database)?;
        let due: Vec<Due> = sqlx::query_as(
            "SELECT o.job_id AS id, j.kind, j.traceparent, j.tracestate
             FROM job_outbox o JOIN jobs j ON j.id = o.job_id
             WHERE o.next_attempt_at <= now()
             ORDER BY o.next_attempt_at, o.job_id
             LIMIT $1
             FOR UPDATE OF o SKIP LOCKED",
        )
        .bind(i64::from(self.config.batch))
        .fetch_all(&mut *tx)
        .traced(telemetry::db_span!("SELECT", "job_outbox"))
        .await
        .context("reading the outbox")
        .map_err(Failure::Database)?;
        if due.is_empty() {
            tx.commit().await.context("committing").map_err(Failure::Database)?;
            return Ok(0);
        }

        let Batch { published, failed, reasons, broken } = self.publish(channel, &due).await;

        if let Some(crashes) = &self.config.crash_after_confirm
            && crashes.fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| n.checked_sub(1)).is_ok()
        {
            // Dropping the transaction rolls it back: the rows stay, though
            // the broker has their messages.
            return Err(Failure::Broker(anyhow::anyhow!(
                "failpoint: crashed between the confirms and the commit"
            )));
        }

        sqlx::query("DELETE FROM job_outbox WHERE job_id = ANY($1)")
            .bind(&published)
            .execute(&mut *tx)
            .traced(telemetry::db_span!("DELETE", "job_outbox"))
            .await
            .context("deleting published rows")
            .map_err(Failure::Database)?;
        if !failed.is_empty() {
            sqlx::query(
                "UPDATE job_outbox o
                 SET attempts = o.attempts + 1,
                     last_error = f.error,
                     next_attempt_at = now() + least(interval '30 seconds',
                                                     interval '100 milliseconds' * power(2, o.attempts))
                 FROM unnest($1::uuid[], $2::text[]) AS f(id, error)
                 WHERE o.job_id = f.id",
            )
            .bind(&failed)
            .bind(&reasons)
            .execute(&mut *tx)
            .traced(telemetry::db_span!("UPDATE", "job_outbox"))
            .await
            .context("rescheduling unpublished rows")
            .map_err(Failure::Database)?;
        }
        tx.commit().await.context("committing the outbox pass").map_err(Failure::Database)?;
        self.metrics.published.inc_by(published.len() as u64);
        match broken {
            Some(err) => Err(Failure::Broker(err)),
            None => Ok(due.len()),
        }
    }

    /// Publishes `due` and awaits every confirm under one deadline.
    async fn publish(&self, channel: &Channel, due: &[Due]) -> Batch {
        let queue = self.config.topology.queue();
        let mandatory = BasicPublishOptions { mandatory: true, ..BasicPublishOptions::default() };
        let mut confirms = Vec::with_capacity(due.len());
        let mut broken: Option<anyhow::Error> = None;
        for job in due {
            let message = JobMessage { id: job.id, kind: job.kind.clone() };
            let body = message.to_bytes();
            // A producer span per message, the child of the submitting
            // request's span; it lasts until the broker's confirm.
            let span = tracing::info_span!(
                "publish",
                otel.name = format!("publish {queue}"),
                otel.kind = "producer",
                messaging.system = "rabbitmq",
                messaging.operation.type = "send",
                messaging.operation.name = "publish",
                messaging.destination.name = queue.as_str(),
                messaging.rabbitmq.destination.routing_key = queue.as_str(),
                messaging.message.id = %job.id,
                messaging.message.body.size = body.len(),
                job.kind = job.kind.as_str(),
                otel.status_code = tracing::field::Empty,
                otel.status_description = tracing::field::Empty,
                error.type = tracing::field::Empty,
            );
            // The worker's span follows this one.
            let trace =
                telemetry::propagation::continue_from(&span, job.traceparent.clone(), job.tracestate.clone());
            let properties = message.properties(&trace);
            let sent = channel
                .basic_publish("".into(), queue.as_str().into(), mandatory, &body, properties)
                .instrument(span.clone())
                .await;
            match sent {
                Ok(confirm) => confirms.push((job.id, confirm, span)),
                Err(err) => {
                    telemetry::spans::record_error(&span, "connection", &err);
                    broken = Some(anyhow::Error::from(err).context("publishing"));
                    break;
                }
            }
        }

        let deadline = Instant::now() + self.config.confirm_timeout;
        let mut published = Vec::with_capacity(confirms.len());
        let (mut failed, mut reasons) = (Vec::new(), Vec::new());
        for (id, confirm, span) in confirms {
            let failure = match tokio::time::timeout_at(deadline, confirm).await {
                Ok(Ok(Confirmation::Ack(None))) => {
                    published.push(id);
                    continue;
                }
                Ok(Ok(Confirmation::Ack(Some(returned)))) => {
                    ("returned", format!("returned by the broker: {}", returned.reply_text))
                }
                Ok(Ok(Confirmation::Nack(_))) => ("nacked", "nacked by the broker".to_owned()),
                Ok(Ok(Confirmation::NotRequested)) => {
                    ("unconfirmed", "publisher confirms are off".to_owned())
                }
                Ok(Err(err)) => {
                    broken.get_or_insert_with(|| anyhow::anyhow!("awaiting a confirm: {err}"));
                    ("connection", err.to_string())
                }
                Err(_) => {
                    broken.get_or_insert_with(|| {
                        anyhow::anyhow!("no confirm within {:?}", self.config.confirm_timeout)
                    });
                    ("timeout", "no confirm in time".to_owned())
                }
            };
            telemetry::spans::record_error(&span, failure.0, &failure.1);
            self.metrics.publish_failures.get_or_create(&OutboxLabels { reason: failure.0 }).inc();
            failed.push(id);
            reasons.push(failure.1);
        }
        Batch { published, failed, reasons, broken }
    }

    /// Keeps `outbox_pending` and `outbox_lag_seconds` current, whether or
    /// not the broker is reachable (that is when they matter most).
    async fn watch_lag(self: Arc<Self>) {
        let mut tick = tokio::time::interval(LAG_INTERVAL);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let lag: sqlx::Result<(i64, f64)> = sqlx::query_as(
                "SELECT count(*), coalesce(extract(epoch FROM now() - min(created_at)), 0)::float8 FROM job_outbox",
            )
            .fetch_one(&self.db)
            .await;
            match lag {
                Ok((pending, seconds)) => {
                    self.metrics.pending.set(pending);
                    self.metrics.lag_seconds.set(seconds);
                }
                Err(err) => tracing::debug!(error = %telemetry::chain(&err), "cannot read the outbox lag"),
            }
        }
    }
}
