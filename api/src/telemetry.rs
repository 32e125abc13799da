//! Telemetry: the process's `tracing` subscriber (here) and the Prometheus
//! metrics registry ([`metrics`]).
//!
//! Logs are JSON lines by default (one object per event, with the fields of
//! the enclosing request span), and the level comes from `RUST_LOG`
//! (default `info`). Per-request events are logged at `debug`: at `info` a
//! busy replica logs only what an operator needs, and the hot path stays fast.

pub mod metrics;

use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::format::FmtSpan;
use tracing_subscriber::fmt::writer::BoxMakeWriter;

use crate::config::LogFormat;

/// Installs the global subscriber. Call once, from `main`. The server logs
/// to stdout, as a container should; a command whose stdout is its output
/// (`api keys create` prints the key there) logs to stderr.
pub fn init(format: LogFormat, to_stderr: bool) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let writer =
        if to_stderr { BoxMakeWriter::new(std::io::stderr) } else { BoxMakeWriter::new(std::io::stdout) };
    let builder =
        tracing_subscriber::fmt().with_env_filter(filter).with_span_events(FmtSpan::NONE).with_writer(writer);
    match format {
        LogFormat::Json => {
            builder.json().flatten_event(true).with_current_span(true).with_span_list(false).init();
        }
        LogFormat::Pretty => builder.init(),
    }
}
