//! Log lines: JSON objects (one per event, with the fields of the enclosing
//! span) that carry the OpenTelemetry `trace_id` and `span_id` of the span
//! they were written in, so a log line leads to its trace and back.
//!
//! Errors are logged with [`chain`]: the error and every cause under it,
//! each message once.

use std::error::Error;
use std::fmt::{self, Write as _};

use opentelemetry::trace::TraceContextExt as _;
use tracing::{Event, Subscriber};
use tracing_subscriber::Layer;
use tracing_subscriber::fmt::FmtContext;
use tracing_subscriber::fmt::format::{self, FormatEvent, FormatFields, JsonFields, Writer};
use tracing_subscriber::fmt::writer::BoxMakeWriter;
use tracing_subscriber::registry::LookupSpan;

use crate::LogFormat;

/// The log layer for `format`, writing to `writer`.
pub fn layer<S>(format: LogFormat, writer: BoxMakeWriter) -> Box<dyn Layer<S> + Send + Sync>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    match format {
        LogFormat::Json => tracing_subscriber::fmt::layer()
            .fmt_fields(JsonFields::new())
            .event_format(WithTraceIds(
                format::format().json().flatten_event(true).with_current_span(true).with_span_list(false),
            ))
            .with_writer(writer)
            .boxed(),
        LogFormat::Pretty => tracing_subscriber::fmt::layer().with_writer(writer).boxed(),
    }
}

/// Wraps the JSON formatter and appends the trace and span ids of the
/// event's span to each object.
struct WithTraceIds<F>(F);

impl<S, N, F> FormatEvent<S, N> for WithTraceIds<F>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'w> FormatFields<'w> + 'static,
    F: FormatEvent<S, N>,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        let span = event.parent().cloned().or_else(|| ctx.lookup_current().map(|s| s.id()));
        // The span layer's context when spans are exported, else the span's
        // own ids (`crate::ids`).
        let ids = span.and_then(|id| {
            let exported = tracing::dispatcher::get_default(|dispatch| {
                tracing_opentelemetry::get_otel_context(&id, dispatch)
            })
            .map(|cx| cx.span().span_context().clone())
            .filter(opentelemetry::trace::SpanContext::is_valid);
            exported.or_else(|| {
                let own = ctx.span(&id)?.extensions().get::<crate::ids::Ids>().copied()?;
                Some(crate::ids::context(own))
            })
        });
        let Some(ids) = ids else { return self.0.format_event(ctx, writer, event) };
        let mut line = String::with_capacity(256);
        self.0.format_event(ctx, Writer::new(&mut line), event)?;
        // The JSON formatter writes `{…}\n`: reopen the object.
        let Some(body) = line.trim_end().strip_suffix('}') else { return writer.write_str(&line) };
        writeln!(writer, r#"{body},"trace_id":"{}","span_id":"{}"}}"#, ids.trace_id(), ids.span_id())
    }
}

/// An error and its causes, each message once: `a: b: c`. A cause whose
/// message its parent already includes (a `thiserror` `{0}` wrapper, or an
/// `anyhow` context printed with `{:#}`) is not repeated.
pub fn chain(err: &(dyn Error + 'static)) -> String {
    let mut out = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        let message = cause.to_string();
        if !message.is_empty() && !out.contains(&message) {
            let _ = write!(out, ": {message}");
        }
        source = cause.source();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug)]
    struct Wrapped(std::io::Error);

    impl fmt::Display for Wrapped {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            write!(f, "loading the item: {}", self.0)
        }
    }

    impl Error for Wrapped {
        fn source(&self) -> Option<&(dyn Error + 'static)> {
            Some(&self.0)
        }
    }

    #[test]
    fn each_cause_appears_once() {
        let io = || std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "connection refused");
        // The wrapper already prints its cause: not repeated.
        assert_eq!(chain(&Wrapped(io())), "loading the item: connection refused");
        // anyhow contexts are separate messages: all of them, in order.
        let err = anyhow::Error::from(io()).context("connecting").context("serving");
        assert_eq!(chain(err.as_ref()), "serving: connecting: connection refused");
    }
}
