//! Trace ids without a span layer, for a service that exports nothing.
//!
//! Recording OpenTelemetry spans that go nowhere cost 17% of a cached
//! read's throughput (attributes built, spans started and ended, for no
//! reader). With no exporter configured, [`IdLayer`] replaces the span
//! layer: every span gets a W3C trace id and span id, a child shares its
//! parent's trace, and a caller's `traceparent` is joined. Logs still carry
//! `trace_id` and `span_id`, and the job queue still carries the trace, at
//! the cost of two random numbers per span.
//!
//! Rules, each for a way the trace would otherwise break:
//! - **A span takes its parent's trace at creation**, from the explicit
//!   parent or the current span, so a query's span is in its request's trace.
//! - **A remote parent replaces the trace before the span is entered**
//!   ([`adopt`]), as `set_parent` does for the span layer: children created
//!   earlier would keep the old trace.
//! - **A new trace is marked sampled**, as the span layer's default sampler
//!   marks it, so a downstream service that exports (the worker) records
//!   its part; a caller's own flag is carried as it came.

use opentelemetry::trace::{SpanContext, SpanId, TraceFlags, TraceId, TraceState};
use opentelemetry_sdk::trace::{IdGenerator as _, RandomIdGenerator};
use tracing::span::{Attributes, Id};
use tracing::{Span, Subscriber};
use tracing_subscriber::Registry;
use tracing_subscriber::layer::{Context, Layer};
use tracing_subscriber::registry::LookupSpan;

/// A span's place in its trace.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Ids {
    pub(crate) trace_id: TraceId,
    pub(crate) span_id: SpanId,
    pub(crate) flags: TraceFlags,
}

impl Ids {
    /// The W3C `traceparent` naming this span (the propagator writes the
    /// real one; tests compare with this).
    #[cfg(test)]
    pub(crate) fn traceparent(self) -> String {
        format!("00-{}-{}-{:02x}", self.trace_id, self.span_id, self.flags.to_u8())
    }
}

/// Gives every span [`Ids`]; see the module documentation.
pub(crate) struct IdLayer;

impl<S> Layer<S> for IdLayer
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, ctx: Context<'_, S>) {
        let Some(span) = ctx.span(id) else { return };
        let parent = match attrs.parent() {
            Some(parent) => ctx.span(parent),
            None if attrs.is_contextual() => ctx.lookup_current(),
            None => None,
        };
        let inherited = parent.and_then(|parent| parent.extensions().get::<Ids>().copied());
        let generator = RandomIdGenerator::default();
        let ids = match inherited {
            Some(parent) => Ids { span_id: generator.new_span_id(), ..parent },
            None => Ids {
                trace_id: generator.new_trace_id(),
                span_id: generator.new_span_id(),
                flags: TraceFlags::SAMPLED,
            },
        };
        span.extensions_mut().insert(ids);
    }
}

/// The ids of `span`, when [`IdLayer`] is installed.
pub(crate) fn of(span: &Span) -> Option<Ids> {
    let mut found = None;
    span.with_subscriber(|(id, dispatch)| {
        if let Some(registry) = dispatch.downcast_ref::<Registry>() {
            found = registry.span(id).and_then(|data| data.extensions().get::<Ids>().copied());
        }
    });
    found
}

/// Makes `span` part of the remote `parent`'s trace (its own span id stays).
/// Returns whether `span` had ids to change.
pub(crate) fn adopt(span: &Span, parent: &SpanContext) -> bool {
    let mut adopted = false;
    span.with_subscriber(|(id, dispatch)| {
        let Some(registry) = dispatch.downcast_ref::<Registry>() else { return };
        let Some(data) = registry.span(id) else { return };
        let mut extensions = data.extensions_mut();
        if let Some(ids) = extensions.get_mut::<Ids>() {
            ids.trace_id = parent.trace_id();
            ids.flags = parent.trace_flags();
            adopted = true;
        }
    });
    adopted
}

/// The context of a span that has [`Ids`], for the propagator.
pub(crate) fn context(ids: Ids) -> SpanContext {
    SpanContext::new(ids.trace_id, ids.span_id, ids.flags, false, TraceState::default())
}

#[cfg(test)]
mod tests {
    use std::io::Write;
    use std::sync::{Arc, Mutex, PoisonError};

    use opentelemetry_sdk::propagation::TraceContextPropagator;
    use tracing_subscriber::layer::SubscriberExt as _;

    use super::*;
    use crate::propagation::{TRACEPARENT, headers_of, set_parent_from_headers};
    use crate::{BoxMakeWriter, LogFormat};

    #[derive(Clone, Default)]
    struct Lines(Arc<Mutex<Vec<u8>>>);

    impl Write for Lines {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap_or_else(PoisonError::into_inner).extend_from_slice(bytes);
            Ok(bytes.len())
        }

        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn without_a_span_layer_spans_join_the_callers_trace_and_logs_and_the_next_hop_carry_it() {
        opentelemetry::global::set_text_map_propagator(TraceContextPropagator::new());
        let lines = Lines::default();
        let writer = lines.clone();
        let subscriber = tracing_subscriber::registry()
            .with(IdLayer)
            .with(crate::logs::layer(LogFormat::Json, BoxMakeWriter::new(move || writer.clone())));
        let trace = "4bf92f3577b34da6a3ce929d0e0e4736";
        let (carried, query_ids, root_ids) = tracing::subscriber::with_default(subscriber, || {
            let request = tracing::info_span!("request");
            let mut headers = http::HeaderMap::new();
            let incoming = format!("00-{trace}-00f067aa0ba902b7-01");
            headers.insert(TRACEPARENT, incoming.parse().expect("a header value"));
            set_parent_from_headers(&request, &headers);
            let _entered = request.enter();
            let query = tracing::info_span!("query");
            query.in_scope(|| tracing::info!("inside the query"));
            let root = tracing::info_span!(parent: None, "elsewhere");
            (headers_of(&query), of(&query).expect("ids"), of(&root).expect("ids"))
        });
        // The query is in the caller's trace, with a span id of its own.
        assert_eq!(query_ids.trace_id.to_string(), trace);
        assert_ne!(query_ids.span_id.to_string(), "00f067aa0ba902b7");
        assert_eq!(carried, vec![(TRACEPARENT, query_ids.traceparent())]);
        assert!(query_ids.traceparent().ends_with("-01"), "the caller's flag is carried");
        // A span outside any request starts a trace of its own, sampled.
        assert_ne!(root_ids.trace_id, query_ids.trace_id);
        assert_eq!(root_ids.flags, TraceFlags::SAMPLED);
        // The log line names the query's span in the caller's trace.
        let text = String::from_utf8(lines.0.lock().unwrap_or_else(PoisonError::into_inner).clone())
            .expect("utf-8 logs");
        let line: serde_json::Value =
            serde_json::from_str(text.lines().next().expect("a line")).expect("JSON");
        assert_eq!(line["trace_id"], trace, "{line}");
        assert_eq!(line["span_id"], query_ids.span_id.to_string(), "{line}");
    }
}
