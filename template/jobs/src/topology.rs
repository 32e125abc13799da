//! Queue and exchange names and arguments, declared by the application
//! itself (idempotently, on every connection) so a fresh broker needs no
//! setup.
//!
//! ```text
//! relay ──► {p}.jobs (quorum, x-delivery-limit) ──► worker
//!             ▲    │ rejected / over the delivery limit
//!             │    ▼
//!             │  {p}.jobs.dlx (fanout) ──► {p}.jobs.dlq         parked for operators
//!             │                        └─► {p}.jobs.dlq.status  the worker records the status
//!             │
//!           {p}.jobs.retry.{delay} (quorum, x-message-ttl) ◄── worker, after a transient failure
//! ```
//!
//! Every queue is a durable quorum queue: replicated on a cluster, durable on
//! one node. Dead-lettering is at-least-once (which needs `reject-publish`
//! overflow), so a message the broker gives up on reaches the DLQ even if
//! the broker crashes while moving it. The delayed-message plugin is not
//! assumed: a retry waits in a queue whose message TTL is its delay, and
//! then dead-letters back to the work queue.

use std::time::Duration;

use lapin::options::{ExchangeDeclareOptions, QueueBindOptions, QueueDeclareOptions, QueueDeleteOptions};
use lapin::types::{AMQPValue, FieldTable, LongString};
use lapin::{Channel, ExchangeKind};

/// Deliveries of one message before the broker dead-letters it. Redelivery
/// is normal (a worker crashed, a connection dropped); a message that keeps
/// coming back is poison (it kills or wedges whoever takes it).
pub const DELIVERY_LIMIT: i32 = 5;

/// The names of one deployment's queues, all under one prefix (the project
/// name by default; tests use their own).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Topology {
    prefix: String,
}

impl Topology {
    /// Names under `prefix`.
    pub fn new(prefix: impl Into<String>) -> Self {
        Self { prefix: prefix.into() }
    }

    /// The work queue.
    pub fn queue(&self) -> String {
        format!("{}.jobs", self.prefix)
    }

    /// The exchange that dead-lettered messages go to.
    pub fn dead_letter_exchange(&self) -> String {
        format!("{}.jobs.dlx", self.prefix)
    }

    /// Where dead-lettered messages stay, for operators to inspect or replay.
    pub fn dead_letter_queue(&self) -> String {
        format!("{}.jobs.dlq", self.prefix)
    }

    /// A copy of every dead-lettered message, which the worker consumes to
    /// record the job as `dead_lettered`.
    pub fn status_queue(&self) -> String {
        format!("{}.jobs.dlq.status", self.prefix)
    }

    /// The queue a retry waits `delay` in.
    pub fn retry_queue(&self, delay: Duration) -> String {
        format!("{}.jobs.retry.{}ms", self.prefix, delay.as_millis())
    }

    /// Declares the work queue and the dead-letter path. Both the api (so a
    /// mandatory publish finds its queue before any worker ran) and the
    /// worker call this; the arguments must be identical on both sides,
    /// which is why they live here.
    pub async fn declare(&self, channel: &Channel) -> lapin::Result<()> {
        let durable = ExchangeDeclareOptions { durable: true, ..ExchangeDeclareOptions::default() };
        channel
            .exchange_declare(
                self.dead_letter_exchange().into(),
                ExchangeKind::Fanout,
                durable,
                FieldTable::default(),
            )
            .await?;
        let mut work = quorum();
        work.insert("x-delivery-limit".into(), AMQPValue::LongInt(DELIVERY_LIMIT));
        dead_letter_to(&mut work, &self.dead_letter_exchange(), None);
        declare_queue(channel, &self.queue(), work).await?;
        for queue in [self.dead_letter_queue(), self.status_queue()] {
            declare_queue(channel, &queue, quorum()).await?;
            channel
                .queue_bind(
                    queue.as_str().into(),
                    self.dead_letter_exchange().into(),
                    "".into(),
                    QueueBindOptions::default(),
                    FieldTable::default(),
                )
                .await?;
        }
        Ok(())
    }

    /// Declares one retry queue per delay: a message waits there for its
    /// delay, then returns to the work queue through the default exchange.
    pub async fn declare_retries(&self, channel: &Channel, delays: &[Duration]) -> lapin::Result<()> {
        for delay in delays {
            let mut arguments = quorum();
            let ttl = i64::try_from(delay.as_millis()).unwrap_or(i64::MAX);
            arguments.insert("x-message-ttl".into(), AMQPValue::LongLongInt(ttl));
            dead_letter_to(&mut arguments, "", Some(&self.queue()));
            declare_queue(channel, &self.retry_queue(*delay), arguments).await?;
        }
        Ok(())
    }

    /// Deletes every queue and the exchange (tests clean up with this).
    pub async fn delete(&self, channel: &Channel, delays: &[Duration]) -> lapin::Result<()> {
        let mut queues = vec![self.queue(), self.dead_letter_queue(), self.status_queue()];
        queues.extend(delays.iter().map(|d| self.retry_queue(*d)));
        for queue in queues {
            channel.queue_delete(queue.as_str().into(), QueueDeleteOptions::default()).await?;
        }
        channel
            .exchange_delete(
                self.dead_letter_exchange().into(),
                lapin::options::ExchangeDeleteOptions::default(),
            )
            .await
    }
}

fn quorum() -> FieldTable {
    let mut arguments = FieldTable::default();
    arguments.insert("x-queue-type".into(), AMQPValue::LongString(LongString::from("quorum")));
    arguments
}

fn dead_letter_to(arguments: &mut FieldTable, exchange: &str, routing_key: Option<&str>) {
    arguments.insert("x-dead-letter-exchange".into(), AMQPValue::LongString(LongString::from(exchange)));
    if let Some(key) = routing_key {
        arguments.insert("x-dead-letter-routing-key".into(), AMQPValue::LongString(LongString::from(key)));
    }
    arguments
        .insert("x-dead-letter-strategy".into(), AMQPValue::LongString(LongString::from("at-least-once")));
    // At-least-once dead-lettering requires it: a full queue refuses new
    // messages (the publisher sees a nack) instead of dropping old ones.
    arguments.insert("x-overflow".into(), AMQPValue::LongString(LongString::from("reject-publish")));
}

async fn declare_queue(channel: &Channel, name: &str, arguments: FieldTable) -> lapin::Result<()> {
    let durable = QueueDeclareOptions { durable: true, ..QueueDeclareOptions::default() };
    channel.queue_declare(name.into(), durable, arguments).await.map(drop)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_name_carries_the_prefix() {
        let topology = Topology::new("acme");
        assert_eq!(topology.queue(), "acme.jobs");
        assert_eq!(topology.dead_letter_queue(), "acme.jobs.dlq");
        assert_eq!(topology.status_queue(), "acme.jobs.dlq.status");
        assert_eq!(topology.retry_queue(Duration::from_secs(5)), "acme.jobs.retry.5000ms");
    }
}
