//! The service's Prometheus metrics, in one registry owned by the app.
//!
//! A registry per [`App`](crate::App) rather than a process-global recorder:
//! tests run many apps in one process, and each must see exactly its own
//! traffic. Names follow the OpenTelemetry HTTP and database semantic
//! conventions as Prometheus renders them (`http.server.request.duration`
//! becomes `http_server_request_duration_seconds`). This module declares the
//! HTTP and Postgres metrics; every other subsystem declares its own and
//! registers them here through [`Metrics::register`], so nothing here
//! depends on a subsystem.

use std::borrow::Cow;
use std::sync::{Mutex, MutexGuard, PoisonError};

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::{Metric, Registry, Unit};
use sqlx::PgPool;
use telemetry::metrics::{BuildInfo, ExportCollector, Format, PoolCollector};

/// Labels of the HTTP server metrics.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct HttpLabels {
    /// `http.request.method`.
    pub http_request_method: Cow<'static, str>,
    /// `http.route`: the route template, never the raw path (bounded cardinality).
    pub http_route: String,
    /// `http.response.status_code`.
    pub http_response_status_code: u16,
}

type HistogramFamily<L> = Family<L, Histogram, fn() -> Histogram>;

/// Every metric the api exposes.
#[derive(Debug)]
pub struct Metrics {
    /// Locked only to register (while the app is built) and to render.
    registry: Mutex<Registry>,
    /// Request durations; `_count` is the request counter per route and status.
    pub http_server_request_duration: HistogramFamily<HttpLabels>,
    /// Requests being served right now.
    pub http_server_active_requests: Gauge,
    /// Times a request gave up waiting for a pooled connection.
    pub db_client_connection_timeouts: Counter,
    /// How long checkouts waited for a pooled connection.
    pub db_client_connection_wait_time: Histogram,
}

/// Latency buckets in seconds, from 1 ms to 10 s: the HTTP semantic
/// conventions' advice with a finer low end, since most answers take < 5 ms.
const DURATION_BUCKETS: [f64; 14] =
    [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 10.0];

/// Pool wait buckets in seconds: an idle pool answers in microseconds; a
/// saturated one makes requests queue for milliseconds to seconds.
const WAIT_BUCKETS: [f64; 11] = [0.0001, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0];

fn duration_histogram() -> Histogram {
    Histogram::new(DURATION_BUCKETS)
}

impl Metrics {
    /// Builds the registry; `pool` is observed at scrape time.
    pub fn new(pool: PgPool) -> Self {
        let mut registry = Registry::default();
        let http_server_request_duration: HistogramFamily<HttpLabels> =
            Family::new_with_constructor(duration_histogram);
        registry.register_with_unit(
            "http_server_request_duration",
            "Duration of HTTP server requests",
            Unit::Seconds,
            http_server_request_duration.clone(),
        );
        let http_server_active_requests = Gauge::default();
        registry.register(
            "http_server_active_requests",
            "Number of active HTTP server requests",
            http_server_active_requests.clone(),
        );
        let db_client_connection_timeouts = Counter::default();
        registry.register(
            "db_client_connection_timeouts",
            "Times a request timed out waiting for a pooled Postgres connection",
            db_client_connection_timeouts.clone(),
        );
        let db_client_connection_wait_time = Histogram::new(WAIT_BUCKETS);
        registry.register_with_unit(
            "db_client_connection_wait_time",
            "Time a checkout waited for a pooled Postgres connection",
            Unit::Seconds,
            db_client_connection_wait_time.clone(),
        );
        registry.register_collector(Box::new(BuildInfo { service: "api" }));
        registry.register_collector(Box::new(PoolCollector(pool)));
        registry.register_collector(Box::new(ExportCollector(telemetry::export_stats())));
        Self {
            registry: Mutex::new(registry),
            http_server_request_duration,
            http_server_active_requests,
            db_client_connection_timeouts,
            db_client_connection_wait_time,
        }
    }

    /// Adds a subsystem's metric. Each subsystem declares and registers its
    /// own (`ratelimit`, `redis_client`, `items::cache`, `offload::relay`):
    /// this module knows none of them.
    pub fn register(&self, name: &str, help: &str, metric: impl Metric) {
        self.registry().register(name, help, metric);
    }

    /// [`Metrics::register`] with a unit (`_seconds` and the like).
    pub fn register_with_unit(&self, name: &str, help: &str, unit: Unit, metric: impl Metric) {
        self.registry().register_with_unit(name, help, unit, metric);
    }

    fn registry(&self) -> MutexGuard<'_, Registry> {
        self.registry.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Every metric, in the exposition `format`.
    pub fn render(&self, format: Format) -> String {
        telemetry::metrics::render(&self.registry(), format)
    }
}
