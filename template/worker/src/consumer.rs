//! Consuming jobs. This file is the supervisor (the connection, the
//! consumers, the drain); `delivery.rs` is one delivery's life,
//! `dead_letters.rs` the dead-letter status recorder, `patience.rs` the one
//! way to wait out Postgres, and `reply.rs` what the broker is told.
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

mod dead_letters;
mod delivery;
mod patience;
mod reply;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::Context as _;
use futures_util::StreamExt as _;
use jobs::broker::{self, Backoff};
use lapin::Connection;
use lapin::options::{BasicCancelOptions, BasicConsumeOptions, BasicQosOptions, ConfirmSelectOptions};
use lapin::types::FieldTable;
use secrecy::ExposeSecret;
use service::Lifecycle;
use sqlx::PgPool;
use tokio::sync::{Semaphore, watch};
use tokio::task::JoinSet;
use tokio::time::Instant;
use uuid::Uuid;

use crate::config::Config;
use crate::metrics::Metrics;

/// Unacked dead-letter copies the status recorder holds at once.
const STATUS_PREFETCH: u16 = 32;

/// The consuming side of a worker.
pub struct Runner {
    config: Config,
    db: PgPool,
    metrics: Arc<Metrics>,
    consuming: Arc<AtomicBool>,
    lifecycle: Lifecycle,
    permits: Arc<Semaphore>,
}

impl Runner {
    /// A runner; `consuming` and `lifecycle` are shared with the health endpoints.
    pub fn new(
        config: Config,
        db: PgPool,
        metrics: Arc<Metrics>,
        consuming: Arc<AtomicBool>,
        lifecycle: Lifecycle,
    ) -> Self {
        let permits = Arc::new(Semaphore::new(usize::from(config.concurrency)));
        Self { config, db, metrics, consuming, lifecycle, permits }
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
}
