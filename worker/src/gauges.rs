//! Saturation gauges read on a timer, for dashboards, alerts and autoscaling:
//! each queue's depth and consumers from RabbitMQ (a passive declare on a
//! connection of its own), and the oldest waiting job's age from Postgres.
//! Each side keeps going while the other is away.

use std::sync::Arc;
use std::time::Duration;

use lapin::options::QueueDeclareOptions;
use lapin::types::FieldTable;
use lapin::{Channel, Connection};
use secrecy::ExposeSecret;
use sqlx::PgPool;

use crate::config::Config;
use crate::metrics::{Metrics, QueueLabels};

/// How often the gauges are refreshed.
const INTERVAL: Duration = Duration::from_secs(5);

/// Refreshes the gauges until aborted.
pub(crate) async fn watch(config: Config, db: PgPool, metrics: Arc<Metrics>) {
    tokio::join!(watch_queues(&config, &metrics), watch_age(&db, &metrics));
}

async fn watch_age(db: &PgPool, metrics: &Metrics) {
    let mut tick = tokio::time::interval(INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        // Served by the partial index on queued jobs.
        let age: sqlx::Result<f64> = sqlx::query_scalar(
            "SELECT coalesce(extract(epoch FROM now() - min(created_at)), 0)::float8
             FROM jobs WHERE status = 'queued'",
        )
        .fetch_one(db)
        .await;
        match age {
            Ok(age) => {
                metrics.jobs_oldest_queued_age_seconds.set(age);
            }
            Err(err) => {
                tracing::debug!(error = %telemetry::chain(&err), "cannot read the oldest queued job's age");
            }
        }
    }
}

async fn watch_queues(config: &Config, metrics: &Metrics) {
    let queues = [config.topology.queue(), config.topology.dead_letter_queue()];
    let mut tick = tokio::time::interval(INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // The first look waits one interval: by then the consumer has declared
    // the queues, and a passive declare of a queue not there yet (which the
    // broker answers by closing the channel, logged by lapin as an error)
    // does not greet every fresh start.
    tick.tick().await;
    let mut link: Option<(Connection, Channel)> = None;
    loop {
        tick.tick().await;
        if link.as_ref().is_none_or(|(_, channel)| !channel.status().connected()) {
            link = open(config).await;
        }
        let Some((_, channel)) = &link else { continue };
        for queue in &queues {
            let passive = QueueDeclareOptions { passive: true, ..QueueDeclareOptions::default() };
            match channel.queue_declare(queue.as_str().into(), passive, FieldTable::default()).await {
                Ok(state) => {
                    let labels = QueueLabels { queue: queue.clone() };
                    metrics
                        .messaging_queue_depth
                        .get_or_create(&labels)
                        .set(i64::from(state.message_count()));
                    metrics
                        .messaging_queue_consumers
                        .get_or_create(&labels)
                        .set(i64::from(state.consumer_count()));
                }
                Err(err) => {
                    // A missing queue closes the channel: start over next tick.
                    tracing::debug!(error = %telemetry::chain(&err), queue, "cannot read the queue's depth");
                    link = None;
                    break;
                }
            }
        }
    }
}

async fn open(config: &Config) -> Option<(Connection, Channel)> {
    let name = format!("{}-gauges", config.name);
    let connection = jobs::broker::connect(config.amqp_url.expose_secret(), &name).await.ok()?;
    let channel = connection.create_channel().await.ok()?;
    Some((connection, channel))
}
