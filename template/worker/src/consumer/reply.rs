//! What the broker is told about a delivery, in one place: every path of a
//! delivery's life and of the dead-letter recorder ends here.

use lapin::message::Delivery;
use lapin::options::{BasicAckOptions, BasicNackOptions, BasicRejectOptions};

/// What to tell the broker about a delivery.
#[derive(Debug, Clone, Copy)]
pub(super) enum Reply {
    /// Done with it.
    Ack,
    /// Give it back for redelivery.
    Requeue,
    /// Dead-letter it.
    Reject,
}

/// Tells the broker. A failure means the channel is gone, and the broker
/// redelivers the message anyway.
pub(super) async fn reply(delivery: &Delivery, how: Reply) {
    let result = match how {
        Reply::Ack => delivery.ack(BasicAckOptions::default()).await,
        Reply::Requeue => {
            delivery.nack(BasicNackOptions { requeue: true, ..BasicNackOptions::default() }).await
        }
        Reply::Reject => delivery.reject(BasicRejectOptions { requeue: false }).await,
    };
    if let Err(err) = result {
        tracing::warn!(error = %telemetry::chain(&err), reply = ?how, "cannot answer the broker; it will redeliver the message");
    }
}
