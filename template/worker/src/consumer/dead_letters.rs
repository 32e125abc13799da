//! The dead-letter status recorder: when RabbitMQ dead-letters a message
//! (its delivery limit reached, or rejected), a copy reaches the status
//! queue, and this marks the job `dead_lettered` so that a client polling it
//! learns the end. The original stays in the dead-letter queue for operators.

use std::sync::Arc;

use jobs::JobMessage;
use jobs::message;
use lapin::message::Delivery;
use serde_json::json;
use uuid::Uuid;

use super::Runner;
use super::reply::{Reply, reply};
use crate::store;

impl Runner {
    /// Marks a dead-lettered job as such (unless it finished otherwise, as a
    /// permanently failed job has), then acks the copy. The original stays
    /// in the dead-letter queue for operators.
    pub(super) async fn record_dead_letter(self: Arc<Self>, delivery: Delivery) {
        let id = delivery
            .properties
            .message_id()
            .as_ref()
            .and_then(|id| Uuid::parse_str(id.as_str()).ok())
            .or_else(|| JobMessage::from_bytes(&delivery.data).map(|m| m.id));
        let Some(id) = id else {
            reply(&delivery, Reply::Ack).await;
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
                reply(&delivery, Reply::Ack).await;
            }
            Err(_) => reply(&delivery, Reply::Requeue).await,
        }
    }
}
