//! Client spans named and attributed by the OpenTelemetry semantic
//! conventions, and a way to mark them failed.
//!
//! ```ignore
//! store::find(&db, id).traced(telemetry::db_span!("SELECT", "items")).await
//! ```

use std::fmt::Display;

use tracing::Span;
use tracing::instrument::Instrument as _;

/// A Postgres client span: `{operation} {table}`, kind client,
/// `db.system.name = postgresql`.
#[macro_export]
macro_rules! db_span {
    ($operation:literal, $table:literal) => {
        $crate::tracing::info_span!(
            "db",
            otel.name = concat!($operation, " ", $table),
            otel.kind = "client",
            db.system.name = "postgresql",
            db.operation.name = $operation,
            db.collection.name = $table,
            db.query.summary = concat!($operation, " ", $table),
            otel.status_code = $crate::tracing::field::Empty,
            otel.status_description = $crate::tracing::field::Empty,
            error.type = $crate::tracing::field::Empty,
        )
    };
}

/// A Redis client span, kind client, `db.system.name = redis`: named by the
/// command, or by a summary such as `EVALSHA cache.put` for a script.
#[macro_export]
macro_rules! redis_span {
    ($operation:expr, $summary:expr) => {
        $crate::tracing::info_span!(
            "redis",
            otel.name = $summary,
            db.query.summary = $summary,
            otel.kind = "client",
            db.system.name = "redis",
            db.operation.name = $operation,
            otel.status_code = $crate::tracing::field::Empty,
            otel.status_description = $crate::tracing::field::Empty,
            error.type = $crate::tracing::field::Empty,
        )
    };
}

/// Marks `span` failed: status `ERROR`, the message, and `error.type`.
pub fn record_error(span: &Span, error_type: &str, error: &dyn Display) {
    span.record("otel.status_code", "ERROR");
    span.record("otel.status_description", tracing::field::display(error));
    span.record("error.type", error_type);
}

/// Runs a fallible future in a span, marking the span failed on `Err`.
pub trait Traced<T, E: Display>: Future<Output = Result<T, E>> + Sized {
    /// See the trait.
    fn traced(self, span: Span) -> impl Future<Output = Result<T, E>> {
        async move {
            let result = self.instrument(span.clone()).await;
            if let Err(err) = &result {
                record_error(&span, std::any::type_name::<E>(), err);
            }
            result
        }
    }
}

impl<T, E: Display, F: Future<Output = Result<T, E>>> Traced<T, E> for F {}
