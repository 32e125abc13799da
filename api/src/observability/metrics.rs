//! The service's Prometheus metrics, in one registry owned by the app.
//!
//! A registry per [`App`](crate::App) rather than a process-global recorder:
//! tests run many apps in one process, and each must see exactly its own
//! traffic. Names follow the OpenTelemetry HTTP and database semantic
//! conventions as Prometheus renders them (`http.server.request.duration`
//! becomes `http_server_request_duration_seconds`). Each subsystem records
//! into the families declared here (the rate limiter its decisions and its
//! backend, the cache its lookups); nothing here calls back into them.

use std::borrow::Cow;
// @template if worker
use std::sync::atomic::AtomicU64;
// @template endif

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::{Registry, Unit};
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

/// Labels of the rate-limit decision counter.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct LimitLabels {
    /// The policy (`key`, `ip`, `writes`).
    pub policy: &'static str,
    /// `allowed`, `limited` or `unavailable` (failed closed).
    pub decision: &'static str,
    /// Which limiter decided: `redis` (shared) or `local` (this replica).
    pub backend: &'static str,
}

/// Labels of a rate-limit backend gauge.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct BackendLabels {
    /// `redis` or `local`.
    pub backend: &'static str,
}

// @template if redis
/// Labels of the cache counters.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CacheLabels {
    /// Which cache (`items`).
    pub cache: &'static str,
    /// Lookups: `hit`, `miss` or `bypass` (Redis unavailable). Fills:
    /// `stored`, `stale` (a newer version was already there) or `failed`.
    pub result: &'static str,
}
// @template endif

// @template if worker
/// Labels of the outbox publish failures.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutboxLabels {
    /// `returned` (unroutable), `nacked`, `timeout` (no confirm in time),
    /// `connection` (the link died while waiting) or `unconfirmed`.
    pub reason: &'static str,
}
// @template endif

type HistogramFamily<L> = Family<L, Histogram, fn() -> Histogram>;

/// Every metric the api exposes.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    /// Request durations; `_count` is the request counter per route and status.
    pub http_server_request_duration: HistogramFamily<HttpLabels>,
    /// Requests being served right now.
    pub http_server_active_requests: Gauge,
    /// Times a request gave up waiting for a pooled connection.
    pub db_client_connection_timeouts: Counter,
    /// How long checkouts waited for a pooled connection.
    pub db_client_connection_wait_time: Histogram,
    /// Rate-limit decisions per policy, outcome and backend.
    pub rate_limit_decisions: Family<LimitLabels, Counter>,
    /// 1 for the limiter that decided last (`redis` or `local`), 0 for the other.
    pub rate_limit_backend: Family<BackendLabels, Gauge>,
    // @template if redis
    /// The Redis circuit breaker: 0 closed, 1 open, 2 half-open.
    pub redis_circuit_state: Gauge,
    /// Cache lookups by result.
    pub cache_requests: Family<CacheLabels, Counter>,
    /// Cache fills by result.
    pub cache_fills: Family<CacheLabels, Counter>,
    /// Postgres loads made on behalf of the cache (after single flight).
    pub cache_loads: Counter,
    /// Invalidations Redis did not take at once, retried in the background.
    pub cache_invalidations_deferred: Counter,
    // @template endif
    // @template if worker
    /// Jobs in the outbox, not yet confirmed by RabbitMQ.
    pub outbox_pending: Gauge,
    /// Age of the oldest outbox row: how far publishing lags behind.
    pub outbox_lag_seconds: Gauge<f64, AtomicU64>,
    /// Job messages the broker confirmed.
    pub outbox_published: Counter,
    /// Job messages not confirmed, by reason; their rows are retried.
    pub outbox_publish_failures: Family<OutboxLabels, Counter>,
    /// Times the relay lost its connection (or crashed) and started over.
    pub outbox_relay_restarts: Counter,
    /// 1 while the relay is connected to RabbitMQ.
    pub amqp_connected: Gauge,
    // @template endif
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
    #[allow(clippy::too_many_lines, reason = "one registration per metric, all in one place")]
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
        let rate_limit_decisions = Family::<LimitLabels, Counter>::default();
        registry.register(
            "rate_limit_decisions",
            "Rate-limit decisions by policy, decision and backend",
            rate_limit_decisions.clone(),
        );
        let rate_limit_backend = Family::<BackendLabels, Gauge>::default();
        registry.register(
            "rate_limit_backend",
            "1 for the rate limiter in use (redis: shared by all replicas; local: this replica's own)",
            rate_limit_backend.clone(),
        );
        // @template if redis
        let redis_circuit_state = Gauge::default();
        registry.register(
            "redis_circuit_state",
            "Redis circuit breaker: 0 closed, 1 open (calls skipped), 2 half-open (probing)",
            redis_circuit_state.clone(),
        );
        let cache_requests = Family::<CacheLabels, Counter>::default();
        registry.register("cache_requests", "Cache lookups by result", cache_requests.clone());
        let cache_fills = Family::<CacheLabels, Counter>::default();
        registry.register("cache_fills", "Cache fills by result", cache_fills.clone());
        let cache_loads = Counter::default();
        registry.register("cache_loads", "Postgres loads made to fill the cache", cache_loads.clone());
        let cache_invalidations_deferred = Counter::default();
        registry.register(
            "cache_invalidations_deferred",
            "Cache invalidations retried in the background because Redis did not take them",
            cache_invalidations_deferred.clone(),
        );
        // @template endif
        // @template if worker
        let outbox_pending = Gauge::default();
        registry.register(
            "outbox_pending",
            "Jobs in the outbox, not yet confirmed by RabbitMQ",
            outbox_pending.clone(),
        );
        let outbox_lag_seconds = Gauge::<f64, AtomicU64>::default();
        registry.register_with_unit(
            "outbox_lag",
            "Age of the oldest job not yet confirmed by RabbitMQ",
            Unit::Seconds,
            outbox_lag_seconds.clone(),
        );
        let outbox_published = Counter::default();
        registry.register("outbox_published", "Job messages RabbitMQ confirmed", outbox_published.clone());
        let outbox_publish_failures = Family::<OutboxLabels, Counter>::default();
        registry.register(
            "outbox_publish_failures",
            "Job messages RabbitMQ did not confirm, by reason (their rows are retried)",
            outbox_publish_failures.clone(),
        );
        let outbox_relay_restarts = Counter::default();
        registry.register(
            "outbox_relay_restarts",
            "Times the outbox relay lost its connection or crashed and started over",
            outbox_relay_restarts.clone(),
        );
        let amqp_connected = Gauge::default();
        registry.register(
            "amqp_connected",
            "1 while the outbox relay is connected to RabbitMQ",
            amqp_connected.clone(),
        );
        // @template endif
        registry.register_collector(Box::new(BuildInfo { service: "api" }));
        registry.register_collector(Box::new(PoolCollector(pool)));
        registry.register_collector(Box::new(ExportCollector(telemetry::export_stats())));
        Self {
            registry,
            http_server_request_duration,
            http_server_active_requests,
            db_client_connection_timeouts,
            db_client_connection_wait_time,
            rate_limit_decisions,
            rate_limit_backend,
            // @template if redis
            redis_circuit_state,
            cache_requests,
            cache_fills,
            cache_loads,
            cache_invalidations_deferred,
            // @template endif
            // @template if worker
            outbox_pending,
            outbox_lag_seconds,
            outbox_published,
            outbox_publish_failures,
            outbox_relay_restarts,
            amqp_connected,
            // @template endif
        }
    }

    // @template if worker
    /// Counts a job message the broker did not confirm.
    pub fn outbox_publish_failure(&self, reason: &'static str) {
        self.outbox_publish_failures.get_or_create(&OutboxLabels { reason }).inc();
    }
    // @template endif

    /// Every metric, in the exposition `format`.
    pub fn render(&self, format: Format) -> String {
        telemetry::metrics::render(&self.registry, format)
    }
}
