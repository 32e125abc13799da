//! Telemetry: the process's logs and traces come from the workspace's
//! `telemetry` crate (OpenTelemetry over OTLP, JSON logs carrying the
//! trace); the Prometheus registry is here ([`metrics`]).
//!
//! Logs are JSON lines by default, and the level comes from `RUST_LOG`
//! (default `info`). Per-request events are logged at `debug`: at `info` a
//! busy replica logs only what an operator needs, and the hot path stays fast.

pub mod metrics;

/// Installs logs and traces. Call once, from `main`, inside the runtime. The
/// server logs to stdout, as a container should; a command whose stdout is
/// its output (`api keys create` prints the key there) logs to stderr.
pub fn init(format: telemetry::LogFormat, to_stderr: bool) -> anyhow::Result<telemetry::Telemetry> {
    let settings = telemetry::Settings::new("api", format);
    let settings = if to_stderr { settings.to_stderr() } else { settings };
    telemetry::init(settings)
}
