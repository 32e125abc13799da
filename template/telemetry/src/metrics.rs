//! Metrics every service exposes the same way: the span export's counters
//! and the Postgres pool, both read at scrape time so the hot path pays
//! nothing for them.

use std::fmt::Write as _;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use sqlx::PgPool;

use crate::ExportStats;

/// `otel_sdk_spans_exported_total` and `otel_sdk_spans_dropped_total{reason}`.
#[derive(Debug)]
pub struct ExportCollector(pub Arc<ExportStats>);

impl Collector for ExportCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let stats = &self.0;
        ConstCounter::new(stats.exported.load(Ordering::Relaxed)).encode(encoder.encode_descriptor(
            "otel_sdk_spans_exported",
            "Spans the OTLP collector accepted",
            None,
            MetricType::Counter,
        )?)?;
        let mut dropped = encoder.encode_descriptor(
            "otel_sdk_spans_dropped",
            "Spans not exported, by reason: queue_full (the collector is slow or away), export_failed, shutdown",
            None,
            MetricType::Counter,
        )?;
        for (reason, counter) in [
            ("queue_full", &stats.dropped_queue_full),
            ("export_failed", &stats.dropped_export_failed),
            ("shutdown", &stats.dropped_at_shutdown),
        ] {
            ConstCounter::new(counter.load(Ordering::Relaxed))
                .encode(dropped.encode_family(&[("reason", reason)])?)?;
        }
        Ok(())
    }
}

/// The pool's size, idle connections and ceiling, following the database
/// client semantic conventions (`db.client.connection.count{state}`,
/// `db.client.connection.max`).
#[derive(Debug)]
pub struct PoolCollector(pub PgPool);

impl Collector for PoolCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let size = self.0.size();
        let idle = u32::try_from(self.0.num_idle()).unwrap_or(u32::MAX);
        let mut usage = encoder.encode_descriptor(
            "db_client_connections_usage",
            "Postgres connections in the pool, by state",
            None,
            MetricType::Gauge,
        )?;
        for (state, value) in [("idle", idle), ("used", size.saturating_sub(idle))] {
            ConstGauge::new(value).encode(usage.encode_family(&[("state", state)])?)?;
        }
        let max = ConstGauge::new(self.0.options().get_max_connections());
        max.encode(encoder.encode_descriptor(
            "db_client_connection_max",
            "Most connections the pool may open",
            None,
            MetricType::Gauge,
        )?)
    }
}

/// `build_info{service, version} 1`: a gauge, as Prometheus's own
/// conventions have it (the OpenMetrics `info` type is not one
/// Prometheus's text parser or `promtool` read).
#[derive(Debug)]
pub struct BuildInfo {
    /// `api` or `worker`.
    pub service: &'static str,
}

impl Collector for BuildInfo {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let mut family = encoder.encode_descriptor(
            "build_info",
            "Build information: always 1",
            None,
            MetricType::Gauge,
        )?;
        let labels = [("service", self.service), ("version", env!("CARGO_PKG_VERSION"))];
        ConstGauge::new(1).encode(family.encode_family(&labels)?)
    }
}

/// The two exposition formats a scraper may ask for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// OpenMetrics 1.0, what Prometheus asks for first.
    OpenMetrics,
    /// The classic Prometheus text format 0.0.4, for everything else
    /// (`curl`, `promtool check metrics`, older scrapers).
    Text,
}

impl Format {
    /// The format an `Accept` header asks for.
    pub fn negotiate(accept: Option<&str>) -> Self {
        if accept.is_some_and(|a| a.contains("application/openmetrics-text")) {
            Self::OpenMetrics
        } else {
            Self::Text
        }
    }

    /// Its `Content-Type`.
    pub fn content_type(self) -> &'static str {
        match self {
            Self::OpenMetrics => "application/openmetrics-text; version=1.0.0; charset=utf-8",
            Self::Text => "text/plain; version=0.0.4; charset=utf-8",
        }
    }
}

/// Renders `registry` in `format`.
pub fn render(registry: &prometheus_client::registry::Registry, format: Format) -> String {
    let mut out = String::with_capacity(8 * 1024);
    prometheus_client::encoding::text::encode(&mut out, registry).expect("writing to a String cannot fail");
    match format {
        Format::OpenMetrics => out,
        Format::Text => to_text_format(&out),
    }
}

/// OpenMetrics to the Prometheus text format: a counter family's `HELP`
/// and `TYPE` name its `_total` samples, and `UNIT` and `EOF` go.
fn to_text_format(openmetrics: &str) -> String {
    let mut out = String::with_capacity(openmetrics.len());
    let mut help: Option<&str> = None;
    for line in openmetrics.lines() {
        if line.starts_with("# HELP ") {
            help = Some(line);
            continue;
        }
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').unwrap_or((rest, "untyped"));
            let name = if kind == "counter" { format!("{name}_total") } else { name.to_owned() };
            if let Some(text) = help.take().and_then(|h| h.splitn(4, ' ').nth(3)) {
                let _ = writeln!(out, "# HELP {name} {text}");
            }
            let _ = writeln!(out, "# TYPE {name} {kind}");
            continue;
        }
        if line.starts_with("# UNIT ") || line == "# EOF" {
            continue;
        }
        out.push_str(line);
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use prometheus_client::metrics::counter::Counter;
    use prometheus_client::metrics::gauge::Gauge;
    use prometheus_client::registry::{Registry, Unit};

    use super::*;

    #[test]
    fn the_text_format_names_counters_by_their_samples_and_drops_openmetrics_only_lines() {
        let mut registry = Registry::default();
        let counter = Counter::<u64>::default();
        counter.inc_by(3);
        registry.register("jobs", "Jobs done", counter);
        registry.register_with_unit("lag", "Lag", Unit::Seconds, Gauge::<i64>::default());
        let open = render(&registry, Format::OpenMetrics);
        assert!(open.contains("# TYPE jobs counter\njobs_total 3\n") && open.ends_with("# EOF\n"), "{open}");
        let text = render(&registry, Format::Text);
        assert_eq!(
            text,
            "# HELP jobs_total Jobs done.\n# TYPE jobs_total counter\njobs_total 3\n\
             # HELP lag_seconds Lag.\n# TYPE lag_seconds gauge\nlag_seconds 0\n"
        );
        assert_eq!(
            Format::negotiate(Some("application/openmetrics-text;version=1.0.0,*/*;q=0.1")),
            Format::OpenMetrics
        );
        assert_eq!(Format::negotiate(Some("*/*")), Format::Text);
        assert_eq!(Format::negotiate(None), Format::Text);
    }
}
