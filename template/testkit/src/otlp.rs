//! An in-process OTLP trace receiver: what a collector would receive, kept
//! for the test to read. It speaks both transports the services export
//! with: gRPC (tonic, on one port) and HTTP/protobuf (`POST /v1/traces`,
//! on another).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::any_value::Value;
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue};
use prost::Message as _;
use tokio::net::TcpListener;
use tokio::sync::Notify;

/// One span as the collector got it, flattened for assertions.
#[derive(Debug, Clone)]
pub struct ReceivedSpan {
    /// `service.name` of the resource that sent it.
    pub service: String,
    /// Every attribute of that resource.
    pub resource: BTreeMap<String, String>,
    /// Hex trace id.
    pub trace_id: String,
    /// Hex span id.
    pub span_id: String,
    /// Hex parent span id; empty for a root.
    pub parent_span_id: String,
    /// The W3C `tracestate` the span carries.
    pub trace_state: String,
    /// The span name.
    pub name: String,
    /// `server`, `client`, `producer`, `consumer` or `internal`.
    pub kind: &'static str,
    /// Attributes, values rendered as strings.
    pub attributes: BTreeMap<String, String>,
    /// `unset`, `ok` or `error`.
    pub status: &'static str,
}

impl ReceivedSpan {
    /// An attribute's value, if set.
    pub fn attr(&self, key: &str) -> Option<&str> {
        self.attributes.get(key).map(String::as_str)
    }
}

#[derive(Default)]
struct Store {
    /// Count spans without keeping them (for benchmarks).
    count_only: bool,
    counted: std::sync::atomic::AtomicU64,
    spans: Mutex<Vec<ReceivedSpan>>,
    requests: Mutex<u64>,
    arrived: Notify,
}

impl Store {
    fn take(&self, request: ExportTraceServiceRequest) {
        if self.count_only {
            let n: usize =
                request.resource_spans.iter().flat_map(|r| &r.scope_spans).map(|s| s.spans.len()).sum();
            self.counted.fetch_add(n as u64, std::sync::atomic::Ordering::Relaxed);
            *self.requests.lock().expect("not poisoned") += 1;
            return;
        }
        let mut spans = self.spans.lock().expect("not poisoned");
        for resource_spans in request.resource_spans {
            let resource =
                resource_spans.resource.as_ref().map(|r| attributes(&r.attributes)).unwrap_or_default();
            let service = resource.get("service.name").cloned().unwrap_or_default();
            for scope in resource_spans.scope_spans {
                for span in scope.spans {
                    spans.push(ReceivedSpan {
                        service: service.clone(),
                        resource: resource.clone(),
                        trace_id: hex(&span.trace_id),
                        span_id: hex(&span.span_id),
                        parent_span_id: hex(&span.parent_span_id),
                        trace_state: span.trace_state.clone(),
                        kind: match span.kind {
                            2 => "server",
                            3 => "client",
                            4 => "producer",
                            5 => "consumer",
                            _ => "internal",
                        },
                        status: match span.status.map(|s| s.code) {
                            Some(1) => "ok",
                            Some(2) => "error",
                            _ => "unset",
                        },
                        attributes: attributes(&span.attributes),
                        name: span.name,
                    });
                }
            }
        }
        *self.requests.lock().expect("not poisoned") += 1;
        self.arrived.notify_waiters();
    }
}

fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write as _;
    bytes.iter().fold(String::with_capacity(bytes.len() * 2), |mut out, b| {
        let _ = write!(out, "{b:02x}");
        out
    })
}

fn attributes(list: &[KeyValue]) -> BTreeMap<String, String> {
    list.iter().map(|kv| (kv.key.clone(), value(kv.value.as_ref()))).collect()
}

fn value(value: Option<&AnyValue>) -> String {
    match value.and_then(|v| v.value.as_ref()) {
        Some(Value::StringValue(s)) => s.clone(),
        Some(Value::BoolValue(b)) => b.to_string(),
        Some(Value::IntValue(i)) => i.to_string(),
        Some(Value::DoubleValue(d)) => d.to_string(),
        Some(other) => format!("{other:?}"),
        None => String::new(),
    }
}

/// A running receiver; it stops with the test's runtime.
#[derive(Clone)]
pub struct Receiver {
    grpc: SocketAddr,
    http: SocketAddr,
    store: Arc<Store>,
}

struct Grpc(Arc<Store>);

#[tonic::async_trait]
impl TraceService for Grpc {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        self.0.take(request.into_inner());
        Ok(tonic::Response::new(ExportTraceServiceResponse { partial_success: None }))
    }
}

async fn http_export(State(store): State<Arc<Store>>, body: Bytes) -> impl IntoResponse {
    match ExportTraceServiceRequest::decode(body) {
        Ok(request) => {
            store.take(request);
            let reply = ExportTraceServiceResponse { partial_success: None }.encode_to_vec();
            (StatusCode::OK, [(header::CONTENT_TYPE, "application/x-protobuf")], reply).into_response()
        }
        Err(err) => (StatusCode::BAD_REQUEST, err.to_string()).into_response(),
    }
}

impl Receiver {
    /// Listens on two free local ports.
    pub async fn start() -> anyhow::Result<Self> {
        Self::listen(Store::default()).await
    }

    /// A receiver that only counts the spans it accepts, keeping none (for
    /// benchmarks, where spans arrive by the million).
    pub async fn start_counting() -> anyhow::Result<Self> {
        Self::listen(Store { count_only: true, ..Store::default() }).await
    }

    async fn listen(store: Store) -> anyhow::Result<Self> {
        let store = Arc::new(store);
        let grpc_listener = TcpListener::bind("127.0.0.1:0").await?;
        let http_listener = TcpListener::bind("127.0.0.1:0").await?;
        let (grpc, http) = (grpc_listener.local_addr()?, http_listener.local_addr()?);
        let service = TraceServiceServer::new(Grpc(store.clone()));
        tokio::spawn(
            tonic::transport::Server::builder()
                .add_service(service)
                .serve_with_incoming(tonic::transport::server::TcpIncoming::from(grpc_listener)),
        );
        let router = axum::Router::new()
            .route("/v1/traces", axum::routing::post(http_export))
            .with_state(store.clone());
        tokio::spawn(async move { axum::serve(http_listener, router).await });
        Ok(Self { grpc, http, store })
    }

    /// `OTEL_EXPORTER_OTLP_ENDPOINT` for `OTEL_EXPORTER_OTLP_PROTOCOL=grpc`.
    pub fn grpc_endpoint(&self) -> String {
        format!("http://{}", self.grpc)
    }

    /// The gRPC port's address (to put a fault proxy in front of).
    pub fn grpc_addr(&self) -> SocketAddr {
        self.grpc
    }

    /// `OTEL_EXPORTER_OTLP_ENDPOINT` for `http/protobuf`.
    pub fn http_endpoint(&self) -> String {
        format!("http://{}", self.http)
    }

    /// Spans received so far by a counting receiver.
    pub fn counted(&self) -> u64 {
        self.store.counted.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Every span received so far.
    pub fn spans(&self) -> Vec<ReceivedSpan> {
        self.store.spans.lock().expect("not poisoned").clone()
    }

    /// Export requests received so far.
    pub fn requests(&self) -> u64 {
        *self.store.requests.lock().expect("not poisoned")
    }

    /// The spans of one trace.
    pub fn trace(&self, trace_id: &str) -> Vec<ReceivedSpan> {
        self.spans().into_iter().filter(|s| s.trace_id == trace_id).collect()
    }

    /// Waits until `done` holds for the spans received, and returns them;
    /// panics with everything received when `timeout` runs out.
    pub async fn wait_for(
        &self,
        timeout: Duration,
        done: impl Fn(&[ReceivedSpan]) -> bool,
    ) -> Vec<ReceivedSpan> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let arrived = self.store.arrived.notified();
            let spans = self.spans();
            if done(&spans) {
                return spans;
            }
            if tokio::time::timeout_at(deadline, arrived).await.is_err() {
                let names: Vec<String> =
                    spans.iter().map(|s| format!("{} {} ({})", s.trace_id, s.name, s.service)).collect();
                panic!(
                    "the expected spans did not arrive within {timeout:?}; received:\n{}",
                    names.join("\n")
                );
            }
        }
    }
}

/// The transport the services export with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    /// OTLP/gRPC.
    Grpc,
    /// OTLP/HTTP with protobuf bodies.
    HttpProtobuf,
}

/// The process's telemetry, installed once and exporting to a receiver of
/// its own, with every log line kept for the test to read.
pub struct Traced {
    /// Where the spans arrive.
    pub receiver: Receiver,
    /// The transport in use (the first caller's choice).
    pub protocol: Protocol,
    logs: Arc<Mutex<Vec<u8>>>,
}

impl Traced {
    /// Every JSON log line written so far.
    pub fn log_lines(&self) -> Vec<String> {
        let logs = self.logs.lock().expect("not poisoned");
        String::from_utf8_lossy(&logs).lines().map(str::to_owned).collect()
    }
}

struct SharedWriter(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for SharedWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().expect("not poisoned").extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

static TRACED: std::sync::OnceLock<Traced> = std::sync::OnceLock::new();

/// Installs the process-wide subscriber and span exporter, as `main` does,
/// exporting over `protocol` to a [`Receiver`]; later calls return the same
/// (with the first caller's protocol). The receiver and the export task
/// run on a runtime of their own, so they outlive any one test.
pub fn traced(protocol: Protocol) -> &'static Traced {
    TRACED.get_or_init(|| {
        let (ready, installed) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(1)
                .enable_all()
                .build()
                .expect("a runtime for the receiver");
            runtime.block_on(async move {
                let receiver = Receiver::start().await.expect("an OTLP receiver");
                let (endpoint, name) = match protocol {
                    Protocol::Grpc => (receiver.grpc_endpoint(), "grpc"),
                    Protocol::HttpProtobuf => (receiver.http_endpoint(), "http/protobuf"),
                };
                let logs = Arc::new(Mutex::new(Vec::new()));
                let writer = logs.clone();
                let vars = move |var: &str| match var {
                    "OTEL_EXPORTER_OTLP_ENDPOINT" => Some(endpoint.clone()),
                    "OTEL_EXPORTER_OTLP_PROTOCOL" => Some(name.to_owned()),
                    "OTEL_BSP_SCHEDULE_DELAY" => Some("50".to_owned()),
                    "RUST_LOG" => Some("info,api=debug,worker=debug".to_owned()),
                    _ => None,
                };
                let settings = telemetry::Settings::new("test", telemetry::LogFormat::Json)
                    .with_writer(telemetry::BoxMakeWriter::new(move || SharedWriter(writer.clone())))
                    .with_vars(vars);
                let telemetry = telemetry::init(settings).expect("installing telemetry");
                ready.send(Traced { receiver, protocol, logs }).expect("the test waits");
                // Installed for the life of the process.
                let _telemetry = telemetry;
                std::future::pending::<()>().await;
            });
        });
        installed.recv().expect("telemetry installed")
    })
}
