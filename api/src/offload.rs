//! Asynchronous jobs: accepted with 202, done by the worker.
//!
//! Submitting a job writes the job row and an outbox row in one Postgres
//! transaction, so a 202 means "durably recorded", whether RabbitMQ is up or
//! not. The [`relay`] in every replica then publishes outbox rows to
//! RabbitMQ and deletes each one only after the broker confirmed it. The
//! worker does the job once, however often the message arrives: see
//! `worker/src/consumer.rs`.
//!
//! An `Idempotency-Key` makes a submission safe to retry: per API key, the
//! same key with the same request returns the original job, and the same key
//! with a different request is refused.

pub mod relay;
pub mod store;

use std::sync::Arc;

use axum::http::HeaderMap;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::db::Db;
use tokio::sync::Notify;
use utoipa::ToSchema;
use uuid::Uuid;

/// Where a job is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema, sqlx::Type)]
#[serde(rename_all = "snake_case")]
#[sqlx(type_name = "text", rename_all = "snake_case")]
#[schema(as = JobStatus)]
pub enum Status {
    /// Accepted; waiting for a worker (or for a retry).
    Queued,
    /// A worker is doing it.
    Running,
    /// Done; `result` holds the outcome.
    Succeeded,
    /// The job reported an error that retrying cannot fix; see `error`.
    Failed,
    /// The broker gave up on its message (delivery limit reached); see `error`.
    DeadLettered,
}

impl Status {
    /// Whether the job will still change.
    pub const fn is_finished(self) -> bool {
        matches!(self, Self::Succeeded | Self::Failed | Self::DeadLettered)
    }
}

/// A job as stored.
#[derive(Debug, Clone, PartialEq, sqlx::FromRow)]
pub struct Job {
    /// Its id (UUIDv7).
    pub id: Uuid,
    pub kind: String,
    pub status: Status,
    /// Deliveries that reached a worker.
    pub attempts: i32,
    /// The outcome, once succeeded.
    pub result: Option<Value>,
    /// What went wrong, once failed or dead-lettered (or on a retry).
    pub error: Option<Value>,
    /// When it was accepted.
    pub created_at: DateTime<Utc>,
    /// When it last changed.
    pub updated_at: DateTime<Utc>,
    /// When a worker first took it.
    pub started_at: Option<DateTime<Utc>>,
    /// When it finished.
    pub finished_at: Option<DateTime<Utc>>,
}

/// A validated submission.
#[derive(Debug, Clone)]
pub struct Submission {
    pub kind: String,
    pub input: Value,
    /// The submitting API key.
    pub owner: Uuid,
    /// The client's `Idempotency-Key`, if any.
    pub idempotency_key: Option<String>,
    /// W3C trace context to carry to the worker.
    pub traceparent: String,
    /// Its vendor half, when there is one.
    pub tracestate: Option<String>,
}

impl Submission {
    /// SHA-256 of the kind and the canonical input: equal for the same
    /// request whatever its key order or whitespace.
    pub fn request_hash(&self) -> [u8; 32] {
        let mut canonical = String::new();
        canonical.push_str(&self.kind);
        canonical.push('\n');
        write_canonical(&self.input, &mut canonical);
        Sha256::digest(canonical.as_bytes()).into()
    }
}

fn write_canonical(value: &Value, out: &mut String) {
    match value {
        Value::Object(map) => {
            let mut entries: Vec<_> = map.iter().collect();
            entries.sort_by(|a, b| a.0.cmp(b.0));
            out.push('{');
            for (n, (key, value)) in entries.into_iter().enumerate() {
                if n > 0 {
                    out.push(',');
                }
                out.push_str(&Value::String(key.clone()).to_string());
                out.push(':');
                write_canonical(value, out);
            }
            out.push('}');
        }
        Value::Array(values) => {
            out.push('[');
            for (n, value) in values.iter().enumerate() {
                if n > 0 {
                    out.push(',');
                }
                write_canonical(value, out);
            }
            out.push(']');
        }
        scalar => out.push_str(&scalar.to_string()),
    }
}

/// What a submission led to.
#[derive(Debug)]
pub enum Submitted {
    /// A new job.
    Created(Job),
    /// The job an earlier request with the same key and body created.
    Replayed(Job),
    /// The key was used before with a different request.
    KeyReused,
}

/// The jobs service: submitting and reading jobs.
#[derive(Clone)]
pub struct Jobs {
    db: Db,
    /// Wakes this replica's relay as soon as a job is committed.
    relay_wake: Arc<Notify>,
}

impl Jobs {
    /// The service over `db`; `relay_wake` is the local relay's doorbell.
    pub fn new(db: Db, relay_wake: Arc<Notify>) -> Self {
        Self { db, relay_wake }
    }

    /// Records a job and its outbox row, in one statement: a submission is
    /// one round trip to Postgres, like a bare insert and commit. A reused
    /// key costs a second one, to read the job that holds it.
    pub async fn submit(&self, submission: &Submission) -> sqlx::Result<Submitted> {
        let hash = submission.request_hash();
        let mut conn = self.db.conn().await?;
        if let Some(job) = store::insert(&mut *conn, Uuid::now_v7(), submission, &hash).await? {
            drop(conn);
            self.relay_wake.notify_one();
            return Ok(Submitted::Created(job));
        }
        // The key was taken by a committed job (the insert waited for a
        // concurrent one to commit, and this statement sees it), which is
        // the answer.
        let key = submission.idempotency_key.as_deref().expect("only keyed inserts conflict");
        Ok(match store::find_by_key(&mut *conn, submission.owner, key).await? {
            Some((job, stored)) if stored == hash => Submitted::Replayed(job),
            Some(_) => Submitted::KeyReused,
            None => unreachable!("a conflicting row is committed and jobs are never deleted"),
        })
    }

    /// A job of `owner`'s; other keys' jobs do not exist for it.
    pub async fn find(&self, owner: Uuid, id: Uuid) -> sqlx::Result<Option<Job>> {
        store::find(&mut *self.db.conn().await?, owner, id).await
    }
}

/// The W3C trace context (`traceparent`, `tracestate`) to carry to the
/// worker: the request span's own, a child of the caller's span when the
/// caller sent one. With the span layer off (`OTEL_SDK_DISABLED`), the
/// caller's valid context is carried as it came, or a new trace starts.
pub fn trace_context(span: &tracing::Span, incoming: &HeaderMap) -> (String, Option<String>) {
    use telemetry::propagation::{TRACEPARENT, TRACESTATE, headers_of};
    let mut carried = headers_of(span).into_iter();
    if let Some((TRACEPARENT, traceparent)) = carried.next() {
        return (traceparent, carried.find(|(name, _)| *name == TRACESTATE).map(|(_, v)| v));
    }
    let header = |name: &str| incoming.get(name).and_then(|v| v.to_str().ok());
    let kept = header(TRACEPARENT).is_some_and(valid_traceparent);
    (traceparent(header(TRACEPARENT)), header(TRACESTATE).filter(|_| kept).map(str::to_owned))
}

/// The caller's `traceparent` when it is valid, otherwise a new trace.
fn traceparent(incoming: Option<&str>) -> String {
    if let Some(value) = incoming.filter(|v| valid_traceparent(v)) {
        return value.to_ascii_lowercase();
    }
    let trace: u128 = rand::random::<u128>().max(1);
    let span: u64 = rand::random::<u64>().max(1);
    format!("00-{trace:032x}-{span:016x}-01")
}

fn valid_traceparent(value: &str) -> bool {
    let parts: Vec<&str> = value.split('-').collect();
    let hex = |s: &str, len: usize| s.len() == len && s.bytes().all(|b| b.is_ascii_hexdigit());
    matches!(parts.as_slice(), [version, trace, span, flags]
        if hex(version, 2) && *version != "ff" && hex(trace, 32) && hex(span, 16) && hex(flags, 2)
            && trace.bytes().any(|b| b != b'0') && span.bytes().any(|b| b != b'0'))
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn submission(input: Value) -> Submission {
        Submission {
            kind: "synthetic".into(),
            input,
            owner: Uuid::nil(),
            idempotency_key: None,
            traceparent: traceparent(None),
            tracestate: None,
        }
    }

    #[test]
    fn the_request_hash_ignores_key_order_but_not_values() {
        let a = submission(json!({"work_ms": 5, "fail": {"x": [1, 2], "y": null}}));
        let b = submission(json!({"fail": {"y": null, "x": [1, 2]}, "work_ms": 5}));
        let c = submission(json!({"work_ms": 6, "fail": {"x": [1, 2], "y": null}}));
        assert_eq!(a.request_hash(), b.request_hash());
        assert_ne!(a.request_hash(), c.request_hash());
    }

    #[test]
    fn a_valid_traceparent_is_kept_and_anything_else_starts_a_trace() {
        let incoming = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        assert_eq!(traceparent(Some(incoming)), incoming);
        for bad in [
            "",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "junk",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        ] {
            let fresh = traceparent(Some(bad));
            assert!(valid_traceparent(&fresh), "{fresh}");
            assert_ne!(fresh, bad);
        }
    }
}
