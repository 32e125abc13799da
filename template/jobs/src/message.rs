//! The message the outbox relay publishes and the worker consumes.
//!
//! It carries only the job's id and kind: the input, status and result live
//! in the `jobs` row, which is the source of truth. A small message keeps
//! the broker fast, and a redelivered or duplicated message can never carry
//! stale input.

use lapin::BasicProperties;
use lapin::types::{AMQPValue, FieldTable, LongString, ShortString};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// Header carrying the W3C trace context of the span that published the
/// message (whose parent is the request that submitted the job).
pub const TRACEPARENT: &str = "traceparent";
/// The vendor half of the W3C trace context, when there is one.
pub const TRACESTATE: &str = "tracestate";
/// Header quorum queues set to the number of earlier delivery attempts.
pub const DELIVERY_COUNT: &str = "x-delivery-count";
/// AMQP delivery mode for messages that survive a broker restart.
const PERSISTENT: u8 = 2;

/// The body of a job message (JSON).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobMessage {
    /// The job's id; also the AMQP `message_id`.
    pub id: Uuid,
    /// The job's kind, such as `items_report`.
    pub kind: String,
}

impl JobMessage {
    /// The body bytes.
    pub fn to_bytes(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("a job message serialises")
    }

    /// Parses a body; `None` for anything that is not a job message.
    pub fn from_bytes(bytes: &[u8]) -> Option<Self> {
        serde_json::from_slice(bytes).ok()
    }

    /// Properties of a published job message: persistent, JSON, the job id as
    /// the message id (so duplicates are recognisable), the kind as the type,
    /// and the trace context (`traceparent`, `tracestate`) in the headers.
    pub fn properties<S: AsRef<str>>(&self, trace: &[(&str, S)]) -> BasicProperties {
        let mut headers = FieldTable::default();
        for (name, value) in trace {
            headers.insert((*name).into(), AMQPValue::LongString(LongString::from(value.as_ref())));
        }
        BasicProperties::default()
            .with_delivery_mode(PERSISTENT)
            .with_content_type(ShortString::from("application/json"))
            .with_message_id(ShortString::from(self.id.to_string()))
            .with_type(ShortString::from(self.kind.as_str()))
            .with_headers(headers)
    }
}

/// A string header of a message, if present.
pub fn header_str(properties: &BasicProperties, name: &str) -> Option<String> {
    match properties.headers().as_ref()?.inner().get(name)? {
        AMQPValue::LongString(value) => Some(value.to_string()),
        AMQPValue::ShortString(value) => Some(value.as_str().to_owned()),
        _ => None,
    }
}

/// An integer header of a message, if present (any integer width).
pub fn header_int(properties: &BasicProperties, name: &str) -> Option<i64> {
    match properties.headers().as_ref()?.inner().get(name)? {
        AMQPValue::ShortShortInt(v) => Some(i64::from(*v)),
        AMQPValue::ShortShortUInt(v) => Some(i64::from(*v)),
        AMQPValue::ShortInt(v) => Some(i64::from(*v)),
        AMQPValue::ShortUInt(v) => Some(i64::from(*v)),
        AMQPValue::LongInt(v) => Some(i64::from(*v)),
        AMQPValue::LongUInt(v) => Some(i64::from(*v)),
        AMQPValue::LongLongInt(v) => Some(*v),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_message_round_trips_and_garbage_is_not_a_message() {
        let message = JobMessage { id: Uuid::now_v7(), kind: "items_report".into() };
        assert_eq!(JobMessage::from_bytes(&message.to_bytes()), Some(message.clone()));
        assert_eq!(JobMessage::from_bytes(b"{\"id\":1}"), None);
        assert_eq!(JobMessage::from_bytes(b"\xff"), None);
    }

    #[test]
    fn properties_carry_the_id_the_trace_and_persistence() {
        let message = JobMessage { id: Uuid::now_v7(), kind: "synthetic".into() };
        let traceparent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        let properties = message.properties(&[(TRACEPARENT, traceparent), (TRACESTATE, "vendor=1")]);
        assert_eq!(
            properties.message_id().as_ref().map(ShortString::as_str),
            Some(message.id.to_string().as_str())
        );
        assert_eq!(*properties.delivery_mode(), Some(PERSISTENT));
        assert_eq!(header_str(&properties, TRACEPARENT).as_deref(), Some(traceparent));
        assert_eq!(header_str(&properties, TRACESTATE).as_deref(), Some("vendor=1"));
        assert_eq!(header_int(&properties, DELIVERY_COUNT), None);
    }
}
