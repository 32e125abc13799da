//! Telemetry shared by every service: the `tracing` subscriber, OpenTelemetry
//! traces over OTLP, JSON logs that carry the trace, W3C propagation, and the
//! metrics every service exposes the same way.
//!
//! Configured by the standard OpenTelemetry variables only:
//!
//! | Variable | Effect |
//! |---|---|
//! | `OTEL_EXPORTER_OTLP_ENDPOINT` (or `…_TRACES_ENDPOINT`) | Where spans go. Unset or empty: nothing is recorded or exported and nothing errors; spans still get ids, so logs and the job queue still carry the trace. |
//! | `OTEL_EXPORTER_OTLP_PROTOCOL` (or `…_TRACES_PROTOCOL`) | `http/protobuf` (the default, port 4318) or `grpc` (port 4317). |
//! | `OTEL_EXPORTER_OTLP_TIMEOUT`, `OTEL_EXPORTER_OTLP_HEADERS` | Per-export timeout (10 s) and extra headers, read by the exporter. |
//! | `OTEL_SERVICE_NAME`, `OTEL_RESOURCE_ATTRIBUTES` | The resource. The service name defaults to `<project>-api` / `<project>-worker`. |
//! | `OTEL_TRACES_SAMPLER`, `OTEL_TRACES_SAMPLER_ARG` | The sampler when spans are exported (default `parentbased_always_on`). With no endpoint no span is recorded at all: spans get ids only (`ids.rs`), so logs and the job queue still carry the trace. |
//! | `OTEL_BSP_MAX_QUEUE_SIZE`, `OTEL_BSP_SCHEDULE_DELAY`, `OTEL_BSP_MAX_EXPORT_BATCH_SIZE`, `OTEL_BSP_EXPORT_TIMEOUT` | The export queue (see [`export`]). |
//! | `OTEL_TRACES_EXPORTER=none`, `OTEL_SDK_DISABLED=true` | No export; disabled also drops the span layer entirely. |

pub mod export;
mod ids;
pub mod logs;
pub mod metrics;
pub mod propagation;
pub mod spans;

use std::str::FromStr;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use anyhow::{Context as _, bail};
use opentelemetry::KeyValue;
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::{SdkTracerProvider, SpanExporter as _};
use tracing_subscriber::filter::{LevelFilter, Targets};
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::util::SubscriberInitExt as _;
use tracing_subscriber::{EnvFilter, Layer as _};

pub use export::ExportStats;
pub use logs::chain;
pub use tracing_subscriber::fmt::writer::BoxMakeWriter;
// For the span macros, so callers need no direct dependency.
#[doc(hidden)]
pub use tracing;

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    /// JSON lines, for machines, each carrying `trace_id` and `span_id`.
    Json,
    /// Human-readable, for a terminal.
    Pretty,
}

impl FromStr for LogFormat {
    type Err = String;

    fn from_str(value: &str) -> Result<Self, Self::Err> {
        match value {
            "json" => Ok(Self::Json),
            "pretty" => Ok(Self::Pretty),
            other => Err(format!("expected json or pretty, got {other:?}")),
        }
    }
}

/// How long a service's shutdown waits for queued spans to be exported.
pub const FLUSH_BOUND: Duration = Duration::from_secs(5);

/// Reads a variable by name.
pub type Vars = Box<dyn Fn(&str) -> Option<String>>;

/// What a service tells [`init`] about itself.
pub struct Settings {
    /// `service.name` when neither `OTEL_SERVICE_NAME` nor
    /// `OTEL_RESOURCE_ATTRIBUTES` names one.
    pub service_name: String,
    pub log_format: LogFormat,
    /// Where log lines go (stdout for a server).
    pub writer: BoxMakeWriter,
    /// Reads a variable: the process environment, or a test's own.
    pub vars: Vars,
}

impl Settings {
    /// Logs to stdout, as a container should.
    pub fn new(service: &str, log_format: LogFormat) -> Self {
        Self {
            service_name: format!("{}-{service}", env!("PROJECT_NAME")),
            log_format,
            writer: BoxMakeWriter::new(std::io::stdout),
            vars: Box::new(|name| std::env::var(name).ok()),
        }
    }

    /// Reads the variables (`OTEL_*`, `RUST_LOG`) from `vars` instead of
    /// the environment: for tests, which cannot safely change their own.
    #[must_use]
    pub fn with_vars(mut self, vars: impl Fn(&str) -> Option<String> + 'static) -> Self {
        self.vars = Box::new(vars);
        self
    }

    /// Logs to stderr: for a command whose stdout is its output.
    #[must_use]
    pub fn to_stderr(self) -> Self {
        self.with_writer(BoxMakeWriter::new(std::io::stderr))
    }

    /// Logs to `writer` instead (stderr for a command whose stdout is its
    /// output; a buffer in tests).
    #[must_use]
    pub fn with_writer(mut self, writer: BoxMakeWriter) -> Self {
        self.writer = writer;
        self
    }
}

/// The installed telemetry. Keep it alive for the life of the process and
/// call [`Telemetry::shutdown`] last, to flush what is still queued.
#[derive(Debug)]
pub struct Telemetry {
    provider: Option<SdkTracerProvider>,
    exporter: Option<export::Handle>,
}

impl Telemetry {
    /// Exports what is queued, waiting at most `bound`, then stops. Spans
    /// still queued when the bound runs out are counted as dropped.
    pub async fn shutdown(self, bound: Duration) {
        if let Some(exporter) = self.exporter {
            exporter.flush(bound).await;
        }
        if let Some(provider) = self.provider {
            // Our processor's shutdown does not block; the provider's own
            // bookkeeping is all that is left.
            let _ = tokio::task::spawn_blocking(move || provider.shutdown()).await;
        }
    }
}

static STATS: OnceLock<Arc<ExportStats>> = OnceLock::new();

/// The span export's counters: zeros until [`init`] installs an exporter.
pub fn export_stats() -> Arc<ExportStats> {
    STATS.get_or_init(Arc::default).clone()
}

/// Installs the global subscriber and propagator, and the span exporter
/// when one is configured. Call once per process, inside the Tokio runtime.
pub fn init(settings: Settings) -> anyhow::Result<Telemetry> {
    let env = Env::read(&settings.vars);
    let filter = (settings.vars)("RUST_LOG")
        .and_then(|directives| EnvFilter::try_new(directives).ok())
        .unwrap_or_else(|| EnvFilter::new("info"));
    // `RUST_LOG` chooses the log lines only: spans are recorded at `info`
    // (or finer, when `RUST_LOG` asks for it) whatever it says, so quiet
    // logs never mean missing traces. The exporter's own transport records
    // only warnings, so it cannot trace itself into the queue. (The span
    // layer itself takes no filter of its own: a span layer behind a
    // per-layer filter loses the parents of the spans it records.)
    let verbosity = filter.max_level_hint().map_or(LevelFilter::INFO, |hint| hint.max(LevelFilter::INFO));
    let recorded = Targets::new().with_default(verbosity).with_targets(
        ["h2", "hyper", "hyper_util", "tonic", "tower"].map(|target| (target, LevelFilter::WARN)),
    );
    if !env.disabled {
        opentelemetry::global::set_text_map_propagator(TraceContextPropagator::new());
    }
    let (provider, exporter) = match &env.endpoint {
        Some(endpoint) if !env.disabled => tracer_provider(&settings, &env, endpoint)?,
        _ => (None, None),
    };
    // Spans are recorded only when they go somewhere; otherwise they get
    // ids alone (see `ids`).
    let ids = (!env.disabled && provider.is_none()).then_some(ids::IdLayer);
    let fmt = logs::layer(settings.log_format, settings.writer).with_filter(filter);
    let otel = provider.as_ref().map(|provider| {
        tracing_opentelemetry::layer()
            .with_tracer(provider.tracer(env!("CARGO_PKG_NAME")))
            .with_tracked_inactivity(false)
            // Nothing here reads `opentelemetry::Context::current()` (the
            // propagators take the span's own context), and activating a
            // context on every poll of every span is the layer's largest
            // fixed cost.
            .with_context_activation(false)
            .with_location(false)
            .with_threads(false)
    });
    tracing_subscriber::registry()
        .with(recorded)
        .with(otel)
        .with(ids)
        .with(fmt)
        .try_init()
        .context("installing the logger")?;
    if let Some(endpoint) = env.endpoint.as_ref().filter(|_| exporter.is_some()) {
        tracing::info!(endpoint, protocol = env.protocol, "exporting traces over OTLP");
    }
    Ok(Telemetry { provider, exporter })
}

/// The tracer provider, exporting to `endpoint` through the bounded batcher.
fn tracer_provider(
    settings: &Settings,
    env: &Env,
    endpoint: &str,
) -> anyhow::Result<(Option<SdkTracerProvider>, Option<export::Handle>)> {
    let resource = resource(&settings.service_name);
    let mut exporter = span_exporter(env, endpoint)?;
    exporter.set_resource(&resource);
    let config = export::Config::from_lookup(&settings.vars)?;
    let (processor, handle) = export::BoundedBatcher::start(exporter, config);
    // The first init wins, as with the subscriber itself.
    let _ = STATS.set(handle.stats.clone());
    let provider =
        SdkTracerProvider::builder().with_resource(resource).with_span_processor(processor).build();
    Ok((Some(provider), Some(handle)))
}

/// The standard variables this crate reads itself.
struct Env {
    disabled: bool,
    endpoint: Option<String>,
    protocol: &'static str,
}

impl Env {
    fn read(vars: &dyn Fn(&str) -> Option<String>) -> Self {
        let var = |name: &str| vars(name).map(|v| v.trim().to_owned()).filter(|v| !v.is_empty());
        let disabled = var("OTEL_SDK_DISABLED").is_some_and(|v| v.eq_ignore_ascii_case("true"));
        let exporter_off = var("OTEL_TRACES_EXPORTER").is_some_and(|v| v.eq_ignore_ascii_case("none"));
        let protocol =
            var("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL").or_else(|| var("OTEL_EXPORTER_OTLP_PROTOCOL"));
        let protocol = match protocol.as_deref() {
            None | Some("http/protobuf") => "http/protobuf",
            Some("grpc") => "grpc",
            Some(_) => "unsupported",
        };
        // The signal's own variable is the URL as it is; the generic one is
        // a base, under which OTLP/HTTP posts to `/v1/traces`.
        let endpoint = var("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT").or_else(|| {
            var("OTEL_EXPORTER_OTLP_ENDPOINT").map(|base| {
                if protocol == "grpc" { base } else { format!("{}/v1/traces", base.trim_end_matches('/')) }
            })
        });
        Self { disabled, endpoint: endpoint.filter(|_| !exporter_off), protocol }
    }
}

fn span_exporter(env: &Env, endpoint: &str) -> anyhow::Result<opentelemetry_otlp::SpanExporter> {
    use opentelemetry_otlp::{Protocol, SpanExporter, WithExportConfig as _};
    if env.protocol == "unsupported" {
        bail!("OTEL_EXPORTER_OTLP_PROTOCOL must be grpc or http/protobuf");
    }
    // The builder reads the timeout and headers from the standard variables
    // itself; building does not connect.
    let exporter = if env.protocol == "grpc" {
        SpanExporter::builder().with_tonic().with_protocol(Protocol::Grpc).with_endpoint(endpoint).build()
    } else {
        SpanExporter::builder()
            .with_http()
            .with_protocol(Protocol::HttpBinary)
            .with_endpoint(endpoint)
            .build()
    };
    exporter.context("configuring the OTLP span exporter (check OTEL_EXPORTER_OTLP_ENDPOINT)")
}

/// The resource: the SDK's detectors (`OTEL_SERVICE_NAME`,
/// `OTEL_RESOURCE_ATTRIBUTES`), with the service's defaults underneath.
fn resource(service_name: &str) -> Resource {
    let named = std::env::var("OTEL_SERVICE_NAME").is_ok_and(|v| !v.is_empty())
        || std::env::var("OTEL_RESOURCE_ATTRIBUTES").is_ok_and(|v| v.contains("service.name="));
    let mut builder = Resource::builder();
    if !named {
        builder = builder.with_service_name(service_name.to_owned());
    }
    builder.with_attribute(KeyValue::new("service.version", env!("CARGO_PKG_VERSION"))).build()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &'static [(&'static str, &'static str)]) -> Env {
        Env::read(&|name| pairs.iter().find(|(k, _)| *k == name).map(|(_, v)| (*v).to_owned()))
    }

    #[test]
    fn the_standard_variables_choose_the_export() {
        let none = env(&[]);
        assert!(none.endpoint.is_none() && !none.disabled);
        assert_eq!(none.protocol, "http/protobuf", "the specification's default");
        let http = env(&[("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4318/")]);
        assert_eq!(http.endpoint.as_deref(), Some("http://collector:4318/v1/traces"));
        let grpc = env(&[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4317"),
            ("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc"),
        ]);
        assert_eq!((grpc.endpoint.as_deref(), grpc.protocol), (Some("http://collector:4317"), "grpc"));
        let signal = env(&[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://ignored:4318"),
            ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "http://traces:4318/custom"),
        ]);
        assert_eq!(signal.endpoint.as_deref(), Some("http://traces:4318/custom"), "taken as it is");
        let off = env(&[("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4318"), ("OTEL_TRACES_EXPORTER", "none")]);
        assert!(off.endpoint.is_none());
        assert!(env(&[("OTEL_SDK_DISABLED", "TRUE")]).disabled);
        let json = env(&[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4318"),
            ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/json"),
        ]);
        let err = span_exporter(&json, "http://c:4318").expect_err("refused");
        assert!(err.to_string().contains("grpc or http/protobuf"), "{err}");
    }

    #[test]
    fn log_formats_parse_and_others_are_refused() {
        assert_eq!("json".parse(), Ok(LogFormat::Json));
        assert_eq!("pretty".parse(), Ok(LogFormat::Pretty));
        assert!("yaml".parse::<LogFormat>().is_err());
    }
}
