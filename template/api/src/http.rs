//! The HTTP middleware stack every route runs behind, and the small
//! middlewares that are specific to this service.
//!
//! The order matters and is written once, here (outermost first):
//! request id, sensitive-header masking, trace span, request-id echo,
//! metrics, problem normalisation, security headers, CORS, compression,
//! timeout, panic catching, body limit. Everything a layer below the
//! normaliser answers on its own (504, 413, 406, a panic's 500, axum's 404
//! and 405) therefore leaves as problem+json, and the metrics see the final
//! status.

pub mod access;
pub mod conditional;
pub mod extract;
pub mod pagination;

use std::any::Any;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Body;
use axum::extract::{DefaultBodyLimit, MatchedPath, Request, State};
use axum::http::{HeaderName, HeaderValue, Method, Response, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::IntoResponse;
use tower::ServiceBuilder;
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::compression::CompressionLayer;
use tower_http::cors::{AllowOrigin, CorsLayer};
use tower_http::limit::RequestBodyLimitLayer;
use tower_http::request_id::{MakeRequestId, PropagateRequestIdLayer, RequestId, SetRequestIdLayer};
use tower_http::sensitive_headers::SetSensitiveRequestHeadersLayer;
use tower_http::timeout::TimeoutLayer;
use tower_http::trace::TraceLayer;

use crate::error::{ErrorCode, PROBLEM_JSON, PoolTimedOut, Problem};
use crate::observability::metrics::{HttpLabels, Metrics};

/// The request id header, accepted from clients (and NGINX) or generated.
pub const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// What the middleware stack needs to know.
#[derive(Debug, Clone)]
pub struct HttpConfig {
    /// A request that takes longer is answered 504.
    pub request_timeout: Duration,
    /// Largest request body accepted (413 above it).
    pub body_limit_bytes: usize,
    pub cors: Cors,
}

/// Which origins may call the API from a browser.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Cors {
    /// No CORS headers at all: browsers on other origins are refused.
    Disabled,
    /// Any origin (no credentials).
    Any,
    /// These exact origins.
    Origins(Vec<String>),
}

/// Wraps every route of `router` in the service's middleware stack.
pub fn apply(router: Router, metrics: Arc<Metrics>, config: &HttpConfig) -> Router {
    let stack = ServiceBuilder::new()
        .layer(SetRequestIdLayer::new(REQUEST_ID, RandomRequestId))
        .layer(SetSensitiveRequestHeadersLayer::new([header::AUTHORIZATION, header::COOKIE]))
        .layer(TraceLayer::new_for_http().make_span_with(request_span).on_response(record_response))
        .layer(PropagateRequestIdLayer::new(REQUEST_ID))
        .layer(middleware::from_fn_with_state(metrics, outcome))
        .option_layer(cors_layer(&config.cors))
        .layer(CompressionLayer::new())
        .layer(TimeoutLayer::with_status_code(StatusCode::GATEWAY_TIMEOUT, config.request_timeout))
        .layer(CatchPanicLayer::custom(panic_response))
        .layer(RequestBodyLimitLayer::new(config.body_limit_bytes))
        .layer(DefaultBodyLimit::max(config.body_limit_bytes));
    router.layer(stack)
}

/// The span every request runs in: an OpenTelemetry HTTP server span named
/// `{method} {route template}`, the child of the caller's span when the
/// request carries W3C `traceparent`/`tracestate`. Its fields are on every
/// log line the request produces (JSON logs include the current span and
/// the trace and span ids).
fn request_span(request: &Request) -> tracing::Span {
    let route = request.extensions().get::<MatchedPath>().map(MatchedPath::as_str);
    let method = method_label(request.method());
    let name = route.map_or_else(|| method.to_owned(), |route| format!("{method} {route}"));
    let header = |name: HeaderName| request.headers().get(name).and_then(|v| v.to_str().ok());
    let span = tracing::info_span!(
        "request",
        otel.name = name,
        otel.kind = "server",
        http.request.method = method,
        http.route = route,
        url.path = request.uri().path(),
        url.scheme = "http",
        network.protocol.version = protocol_version(request.version()),
        user_agent.original = header(header::USER_AGENT),
        http.response.status_code = tracing::field::Empty,
        otel.status_code = tracing::field::Empty,
        error.type = tracing::field::Empty,
        request_id = header(REQUEST_ID).unwrap_or(""),
        api_key = tracing::field::Empty,
    );
    telemetry::propagation::set_parent_from_headers(&span, request.headers());
    span
}

/// Completes the request span: the status, and an error status for a 5xx
/// (a 4xx is the client's error, not the server span's).
fn record_response<B>(response: &Response<B>, latency: Duration, span: &tracing::Span) {
    let status = response.status();
    span.record("http.response.status_code", status.as_u16());
    if status.is_server_error() {
        span.record("otel.status_code", "ERROR");
        span.record("error.type", status.as_str());
    }
    tracing::debug!(status = status.as_u16(), latency_ms = latency.as_secs_f64() * 1e3, "answered");
}

fn protocol_version(version: axum::http::Version) -> &'static str {
    use axum::http::Version;
    match version {
        Version::HTTP_09 => "0.9",
        Version::HTTP_10 => "1.0",
        Version::HTTP_2 => "2",
        Version::HTTP_3 => "3",
        _ => "1.1",
    }
}

fn cors_layer(cors: &Cors) -> Option<CorsLayer> {
    let origins = match cors {
        Cors::Disabled => return None,
        Cors::Any => AllowOrigin::any(),
        Cors::Origins(list) => {
            AllowOrigin::list(list.iter().map(|o| HeaderValue::from_str(o).expect("validated in config")))
        }
    };
    Some(
        CorsLayer::new()
            .allow_origin(origins)
            .allow_methods([Method::GET, Method::POST, Method::PUT, Method::DELETE])
            .allow_headers([
                header::AUTHORIZATION,
                header::CONTENT_TYPE,
                header::IF_MATCH,
                header::IF_NONE_MATCH,
            ])
            .expose_headers([header::ETAG, header::LOCATION, header::RETRY_AFTER, header::LINK, REQUEST_ID])
            .max_age(Duration::from_mins(10)),
    )
}

/// A panic becomes a plain 500 problem; the panic message goes to the log
/// only, since it may name internals.
#[allow(clippy::needless_pass_by_value, reason = "the signature CatchPanicLayer expects")]
fn panic_response(err: Box<dyn Any + Send + 'static>) -> Response<Body> {
    let message = err
        .downcast_ref::<String>()
        .map(String::as_str)
        .or_else(|| err.downcast_ref::<&str>().copied())
        .unwrap_or("unknown panic");
    tracing::error!(panic = message, "request handler panicked");
    Problem::new(ErrorCode::Internal).into_response()
}

/// A random (version 4) UUID for each request without an id, from the
/// thread's userspace generator: `MakeRequestUuid` asks the kernel for every
/// one (a `getrandom` system call per request).
#[derive(Clone, Copy)]
struct RandomRequestId;

impl MakeRequestId for RandomRequestId {
    fn make_request_id<B>(&mut self, _: &axum::http::Request<B>) -> Option<RequestId> {
        let id = uuid::Builder::from_random_bytes(rand::random()).into_uuid();
        let mut text = [0; uuid::fmt::Hyphenated::LENGTH];
        HeaderValue::from_str(id.hyphenated().encode_lower(&mut text)).ok().map(RequestId::new)
    }
}

/// Metrics, problem normalisation and security headers: three steps of the
/// stack's order (outermost first) in one middleware, because each
/// `from_fn` layer costs a service clone and a boxed future per request.
async fn outcome(State(metrics): State<Arc<Metrics>>, request: Request, next: Next) -> Response<Body> {
    let started = Instant::now();
    let route = request.extensions().get::<MatchedPath>().map(|p| p.as_str().to_owned());
    let method = method_label(request.method());
    let authenticated = request.headers().contains_key(header::AUTHORIZATION);
    let active = ActiveRequest::start(&metrics);
    let response = next.run(request).await;
    drop(active);
    let response = problem_for_bare_errors(security_headers(response, authenticated));
    record_metrics(&metrics, started, method, route, &response);
    response
}

/// Counts and times every request by method, route template and status.
fn record_metrics(
    metrics: &Metrics,
    started: Instant,
    method: &'static str,
    route: Option<String>,
    response: &Response<Body>,
) {
    if response.extensions().get::<PoolTimedOut>().is_some() {
        metrics.db_client_connection_timeouts.inc();
    }
    let labels = HttpLabels {
        http_request_method: method.into(),
        // Unmatched paths share one label so scanners cannot blow up cardinality.
        http_route: route.unwrap_or_else(|| "unmatched".to_owned()),
        http_response_status_code: response.status().as_u16(),
    };
    metrics.http_server_request_duration.get_or_create(&labels).observe(started.elapsed().as_secs_f64());
}

/// Decrements the in-flight gauge even when the client goes away mid-request
/// and the future is dropped.
struct ActiveRequest<'a>(&'a Metrics);

impl<'a> ActiveRequest<'a> {
    fn start(metrics: &'a Metrics) -> Self {
        metrics.http_server_active_requests.inc();
        Self(metrics)
    }
}

impl Drop for ActiveRequest<'_> {
    fn drop(&mut self) {
        self.0.http_server_active_requests.dec();
    }
}

/// Known methods keep their name; anything else is `_OTHER`, as the semantic
/// conventions require (bounded cardinality).
fn method_label(method: &Method) -> &'static str {
    match *method {
        Method::GET => "GET",
        Method::HEAD => "HEAD",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::DELETE => "DELETE",
        Method::PATCH => "PATCH",
        Method::OPTIONS => "OPTIONS",
        _ => "_OTHER",
    }
}

/// Gives error responses produced outside the handlers (router 404/405,
/// timeout, body limit, compression's 406) a problem+json body, keeping their
/// status and headers (such as `Allow`).
fn problem_for_bare_errors(response: Response<Body>) -> Response<Body> {
    let status = response.status();
    if !(status.is_client_error() || status.is_server_error()) || is_problem(&response) {
        return response;
    }
    let (mut parts, _) = response.into_parts();
    let problem = Problem::new(ErrorCode::for_status(status)).into_response();
    let (problem_parts, body) = problem.into_parts();
    parts.headers.remove(header::CONTENT_LENGTH);
    for (name, value) in &problem_parts.headers {
        parts.headers.insert(name, value.clone());
    }
    Response::from_parts(parts, body)
}

fn is_problem(response: &Response<Body>) -> bool {
    response.headers().get(header::CONTENT_TYPE).is_some_and(|v| v.as_bytes() == PROBLEM_JSON.as_bytes())
}

/// Headers every response carries, and `no-store` for authenticated ones
/// unless a handler chose a cache policy itself: a response to a request with
/// credentials must never land in a shared cache by accident.
fn security_headers(mut response: Response<Body>, authenticated: bool) -> Response<Body> {
    let headers = response.headers_mut();
    headers.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    headers.insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static("frame-ancestors 'none'"));
    headers.insert(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    if authenticated && !headers.contains_key(header::CACHE_CONTROL) {
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    response
}
