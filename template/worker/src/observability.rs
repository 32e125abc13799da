//! Logs and traces from the workspace's `telemetry` crate: JSON lines by
//! default, each carrying the fields of its span (a job's id, kind and
//! attempt) and its trace and span ids, level from `RUST_LOG`; spans go out
//! over OTLP when `OTEL_EXPORTER_OTLP_ENDPOINT` is set.

/// Installs logs and traces. Call once, from `main`, inside the runtime.
pub fn init(format: telemetry::LogFormat) -> anyhow::Result<telemetry::Telemetry> {
    telemetry::init(telemetry::Settings::new("worker", format))
}
