//! The worker's Prometheus metrics, one registry per [`Worker`](crate::Worker).

use std::sync::atomic::AtomicU64;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::{Registry, Unit};
use sqlx::PgPool;
use telemetry::metrics::{BuildInfo, ExportCollector, Format, PoolCollector};

/// Labels of the processed-jobs counter.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct JobLabels {
    /// The job kind (`unknown` when the message could not be read).
    pub kind: String,
    /// `succeeded`; `duplicate` (already done: a redelivery or a duplicate
    /// publish); `retried` (transient failure, sent to a delay queue);
    /// `failed` (permanent, dead-lettered); `panicked` (returned to the
    /// queue; its delivery limit dead-letters a poison message);
    /// `requeued` (the database stayed away); `rejected` (unreadable or
    /// unknown, dead-lettered); `abandoned` (still running when the
    /// shutdown grace ran out).
    pub outcome: &'static str,
}

/// Labels of the queue gauges.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct QueueLabels {
    /// The queue's name.
    pub queue: String,
}

/// Labels of the job duration histogram.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KindLabels {
    /// The job kind.
    pub kind: String,
}

type HistogramFamily<L> = Family<L, Histogram, fn() -> Histogram>;

/// Every metric the worker exposes.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    /// Deliveries handled, by kind and outcome.
    pub jobs_processed: Family<JobLabels, Counter>,
    /// Deliveries the broker marked as redelivered.
    pub jobs_redelivered: Counter,
    /// Jobs being worked on right now.
    pub jobs_in_flight: Gauge,
    /// Time from taking a delivery to settling it, by kind.
    pub job_duration: HistogramFamily<KindLabels>,
    /// Jobs recorded as dead-lettered from the status queue.
    pub jobs_dead_lettered: Counter,
    /// 1 while consuming from RabbitMQ.
    pub amqp_connected: Gauge,
    /// Times the connection was lost and rebuilt.
    pub amqp_reconnects: Counter,
    /// Messages ready in each queue (the work queue and the dead letters),
    /// as RabbitMQ last reported them.
    pub messaging_queue_depth: Family<QueueLabels, Gauge>,
    /// Consumers attached to each queue: every worker replica, or nobody.
    pub messaging_queue_consumers: Family<QueueLabels, Gauge>,
    /// Age of the oldest job still waiting to start: the queue-age SLO.
    pub jobs_oldest_queued_age_seconds: Gauge<f64, AtomicU64>,
}

fn duration_histogram() -> Histogram {
    Histogram::new([0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0])
}

impl Metrics {
    /// Builds the registry; `pool` is observed at scrape time.
    pub fn new(pool: PgPool) -> Self {
        let mut registry = Registry::default();
        let jobs_processed = Family::<JobLabels, Counter>::default();
        registry.register(
            "jobs_processed",
            "Job deliveries handled, by kind and outcome",
            jobs_processed.clone(),
        );
        let jobs_redelivered = Counter::default();
        registry.register(
            "jobs_redelivered",
            "Deliveries RabbitMQ marked as redelivered",
            jobs_redelivered.clone(),
        );
        let jobs_in_flight = Gauge::default();
        registry.register("jobs_in_flight", "Jobs being worked on", jobs_in_flight.clone());
        let job_duration: HistogramFamily<KindLabels> = Family::new_with_constructor(duration_histogram);
        registry.register_with_unit(
            "job_duration",
            "Time to handle a job delivery",
            Unit::Seconds,
            job_duration.clone(),
        );
        let jobs_dead_lettered = Counter::default();
        registry.register("jobs_dead_lettered", "Jobs recorded as dead-lettered", jobs_dead_lettered.clone());
        let amqp_connected = Gauge::default();
        registry.register("amqp_connected", "1 while consuming from RabbitMQ", amqp_connected.clone());
        let amqp_reconnects = Counter::default();
        registry.register(
            "amqp_reconnects",
            "Times the RabbitMQ connection was rebuilt",
            amqp_reconnects.clone(),
        );
        let messaging_queue_depth = Family::<QueueLabels, Gauge>::default();
        registry.register(
            "messaging_queue_depth",
            "Messages ready in the queue, as RabbitMQ reports them",
            messaging_queue_depth.clone(),
        );
        let messaging_queue_consumers = Family::<QueueLabels, Gauge>::default();
        registry.register(
            "messaging_queue_consumers",
            "Consumers attached to the queue",
            messaging_queue_consumers.clone(),
        );
        let jobs_oldest_queued_age_seconds = Gauge::<f64, AtomicU64>::default();
        registry.register_with_unit(
            "jobs_oldest_queued_age",
            "Age of the oldest job still waiting to start",
            Unit::Seconds,
            jobs_oldest_queued_age_seconds.clone(),
        );
        registry.register_collector(Box::new(PoolCollector(pool)));
        registry.register_collector(Box::new(ExportCollector(telemetry::export_stats())));
        registry.register_collector(Box::new(BuildInfo { service: "worker" }));
        Self {
            registry,
            jobs_processed,
            jobs_redelivered,
            jobs_in_flight,
            job_duration,
            jobs_dead_lettered,
            amqp_connected,
            amqp_reconnects,
            messaging_queue_depth,
            messaging_queue_consumers,
            jobs_oldest_queued_age_seconds,
        }
    }

    /// Counts one handled delivery.
    pub fn processed(&self, kind: &str, outcome: &'static str) {
        self.jobs_processed.get_or_create(&JobLabels { kind: kind.to_owned(), outcome }).inc();
    }

    /// Every metric, in the exposition `format`.
    pub fn render(&self, format: Format) -> String {
        telemetry::metrics::render(&self.registry, format)
    }
}
