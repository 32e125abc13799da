//! W3C trace context across process boundaries: HTTP headers in, and any
//! string map (outbox rows, AMQP headers) out and back in.
//!
//! The span layer's context moves when spans are exported; with no exporter
//! the spans' own ids do ([`crate::ids`]). When the SDK is disabled these
//! are no-ops, and callers fall back to carrying the incoming `traceparent`.

use opentelemetry::propagation::{Extractor, Injector};
use opentelemetry::trace::TraceContextExt as _;
use tracing::Span;
use tracing_opentelemetry::OpenTelemetrySpanExt as _;

/// The W3C headers, by name.
pub const TRACEPARENT: &str = "traceparent";
/// The vendor-specific companion of [`TRACEPARENT`].
pub const TRACESTATE: &str = "tracestate";

/// Makes `span` a child of the remote span named by `headers`
/// (`traceparent`, `tracestate`), if they name a valid one. Call it before
/// the span is first entered.
pub fn set_parent_from_headers(span: &Span, headers: &http::HeaderMap) {
    set_parent(span, &HeaderExtractor(headers));
}

/// Makes `span` a child of the remote span named by a stored `traceparent`
/// (and `tracestate`), as carried by an outbox row or a message header.
pub fn set_parent_from(span: &Span, traceparent: Option<&str>, tracestate: Option<&str>) {
    let Some(traceparent) = traceparent else { return };
    set_parent(span, &Stored { traceparent, tracestate });
}

fn set_parent(span: &Span, carrier: &dyn Extractor) {
    let cx = opentelemetry::global::get_text_map_propagator(|p| p.extract(carrier));
    let remote = cx.span().span_context().clone();
    if remote.is_valid() {
        // Fails for a span already started, which would be a bug here, or
        // when the span layer is off: then the span's own ids join the
        // trace, if it has any (none when the SDK is disabled).
        if span.set_parent(cx).is_err() {
            crate::ids::adopt(span, &remote);
        }
    }
}

/// One hop of a message: makes `span` the child of the stored context and
/// returns the context to carry to the next hop: `span`'s own, or, when
/// spans are not recorded (`OTEL_SDK_DISABLED`), the stored one as it came.
pub fn continue_from(
    span: &Span,
    traceparent: Option<String>,
    tracestate: Option<String>,
) -> Vec<(&'static str, String)> {
    set_parent_from(span, traceparent.as_deref(), tracestate.as_deref());
    let carried = headers_of(span);
    if !carried.is_empty() {
        return carried;
    }
    traceparent.map(|v| (TRACEPARENT, v)).into_iter().chain(tracestate.map(|v| (TRACESTATE, v))).collect()
}

/// The W3C headers naming `span`, to carry to the next hop: `traceparent`
/// and, when there is one, `tracestate`. Empty when spans are not recorded.
pub fn headers_of(span: &Span) -> Vec<(&'static str, String)> {
    let mut cx = span.context();
    if !cx.span().span_context().is_valid() {
        let Some(ids) = crate::ids::of(span) else { return Vec::new() };
        cx = cx.with_remote_span_context(crate::ids::context(ids));
    }
    let mut out = Pairs(Vec::with_capacity(2));
    opentelemetry::global::get_text_map_propagator(|p| p.inject_context(&cx, &mut out));
    out.0
}

struct HeaderExtractor<'a>(&'a http::HeaderMap);

impl Extractor for HeaderExtractor<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|v| v.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(http::HeaderName::as_str).collect()
    }
}

struct Stored<'a> {
    traceparent: &'a str,
    tracestate: Option<&'a str>,
}

impl Extractor for Stored<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        match key {
            TRACEPARENT => Some(self.traceparent),
            TRACESTATE => self.tracestate,
            _ => None,
        }
    }

    fn keys(&self) -> Vec<&str> {
        vec![TRACEPARENT, TRACESTATE]
    }
}

struct Pairs(Vec<(&'static str, String)>);

impl Injector for Pairs {
    fn set(&mut self, key: &str, value: String) {
        // The propagator writes an empty `tracestate` for a span without
        // one: nothing to carry.
        if value.is_empty() {
            return;
        }
        let key = match key {
            TRACEPARENT => TRACEPARENT,
            TRACESTATE => TRACESTATE,
            _ => return,
        };
        self.0.push((key, value));
    }
}
