//! The span exporter cannot hurt: with the collector unreachable or
//! blackholed, the real `api` binary answers as fast as it does with no
//! exporter at all (the three run side by side, loaded in alternation, in
//! this one test), counts the spans it drops, and still shuts down within
//! its flush bound.

use std::time::Duration;

use testkit::otlp::Receiver;
use testkit::{FaultProxy, Mode, TestDatabase};
use tokio::time::Instant;

use crate::helpers::sample;
use crate::process::{ApiProcess, client};

/// One request's worst acceptable time here: far above any healthy answer,
/// far below the export timeout a blocked request would wait out.
const EXPORT_TIMEOUT_MS: u64 = 3000;

/// A replica under measurement.
struct Measured {
    process: ApiProcess,
    latencies: Vec<Duration>,
}

impl Measured {
    async fn start(name: &'static str, database_url: &str, otel: &[(&str, String)]) -> Self {
        let mut env = vec![("DATABASE_URL", database_url.to_owned()), ("RATE_LIMIT_IP", "off".to_owned())];
        env.extend(otel.iter().cloned());
        Self { process: ApiProcess::start(name, &env).await, latencies: Vec::new() }
    }

    fn name(&self) -> &str {
        &self.process.name
    }

    /// `requests` GETs from `concurrency` clients, each timed.
    async fn load(&mut self, requests: usize, concurrency: usize) {
        let url = self.process.url("/v1/items?limit=5");
        let mut clients = tokio::task::JoinSet::new();
        for _ in 0..concurrency {
            let url = url.clone();
            clients.spawn(async move {
                let client = client();
                let mut latencies = Vec::new();
                for _ in 0..requests / concurrency {
                    let started = Instant::now();
                    let response = client.get(&url).send().await.expect("an answer");
                    assert!(response.status().is_success(), "{}", response.status());
                    latencies.push(started.elapsed());
                }
                latencies
            });
        }
        while let Some(latencies) = clients.join_next().await {
            self.latencies.extend(latencies.expect("a client"));
        }
    }

    fn percentile(&self, p: f64) -> Duration {
        let mut sorted = self.latencies.clone();
        sorted.sort();
        #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss, clippy::cast_precision_loss)]
        let at = ((sorted.len() as f64 - 1.0) * p).round() as usize;
        sorted[at]
    }
}

/// Export settings that make trouble show quickly: a small queue, frequent
/// batches, and a per-export timeout well above any healthy request.
fn exporting_to(endpoint: String) -> Vec<(&'static str, String)> {
    vec![
        ("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint),
        ("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc".to_owned()),
        ("OTEL_EXPORTER_OTLP_TIMEOUT", EXPORT_TIMEOUT_MS.to_string()),
        ("OTEL_BSP_SCHEDULE_DELAY", "100".to_owned()),
        ("OTEL_BSP_MAX_QUEUE_SIZE", "64".to_owned()),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_or_blackholed_collector_costs_spans_never_latency_and_shutdown_stays_bounded() {
    let database = TestDatabase::create(&api::db::MIGRATOR).await.expect("a test database");
    let receiver = Receiver::start().await.expect("a receiver");
    // Accepts connections and never answers: the worst kind of collector.
    let blackhole = FaultProxy::start(receiver.grpc_addr()).await.expect("a proxy");
    blackhole.set_mode(Mode::Blackhole);
    let closed = std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).expect("a port");

    let url = database.url();
    let mut apis = [
        Measured::start("no exporter", &url, &[]).await,
        Measured::start("collector unreachable", &url, &exporting_to(format!("http://{closed}"))).await,
        Measured::start("collector blackholed", &url, &exporting_to(format!("http://{}", blackhole.addr())))
            .await,
    ];
    // Alternating rounds, so whatever else the machine does hits all three.
    for _ in 0..5 {
        for api in &mut apis {
            api.load(80, 4).await;
        }
    }
    let [off, unreachable, blackholed] = apis;
    let limit = Duration::from_millis(EXPORT_TIMEOUT_MS / 2);
    for api in [&unreachable, &blackholed] {
        let (p50, p99) = (api.percentile(0.5), api.percentile(0.99));
        eprintln!(
            "{}: p50 {p50:?} p99 {p99:?} (no exporter: p50 {:?} p99 {:?})",
            api.name(),
            off.percentile(0.5),
            off.percentile(0.99)
        );
        // A request that waited on the export would take the export timeout.
        assert!(api.percentile(1.0) < limit, "{}: a request took {:?}", api.name(), api.percentile(1.0));
        assert!(
            p50 <= off.percentile(0.5) * 3 + Duration::from_millis(5),
            "{}: p50 {p50:?} against {:?} without an exporter",
            api.name(),
            off.percentile(0.5)
        );
    }

    // The spans that could not go out are counted, by reason.
    let dropped = |metrics: &str, reason: &str| {
        sample(metrics, &format!("otel_sdk_spans_dropped_total{{reason=\"{reason}\"}}")).unwrap_or(0.0)
    };
    let metrics = unreachable.process.metrics().await;
    assert!(dropped(&metrics, "export_failed") > 0.0, "{metrics}");
    assert_eq!(sample(&metrics, "otel_sdk_spans_exported_total"), Some(0.0));
    let metrics = blackholed.process.metrics().await;
    assert!(dropped(&metrics, "queue_full") > 0.0, "a full queue drops spans: {metrics}");
    assert_eq!(sample(&metrics, "otel_sdk_spans_exported_total"), Some(0.0));
    assert_eq!(receiver.requests(), 0, "nothing got through the blackhole");

    // Shutdown waits for the export at most its flush bound, then exits 0.
    let bound = telemetry::FLUSH_BOUND + Duration::from_secs(3);
    for mut api in [off, unreachable, blackholed] {
        let took = api.process.terminate().await;
        let name = api.name();
        eprintln!("{name}: exited {took:?} after SIGTERM");
        assert!(took < bound, "{name}: shutdown took {took:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_binary_exports_by_the_standard_variables_and_honours_the_sampler() {
    let database = TestDatabase::create(&api::db::MIGRATOR).await.expect("a test database");
    let (kept, dropped) =
        (Receiver::start().await.expect("a receiver"), Receiver::start().await.expect("a receiver"));
    let url = database.url();
    let mut named = exporting_to(kept.grpc_endpoint());
    named.push(("OTEL_SERVICE_NAME", "checkout-api".to_owned()));
    named.push(("OTEL_RESOURCE_ATTRIBUTES", "deployment.environment.name=test".to_owned()));
    let mut sampled_out = exporting_to(dropped.grpc_endpoint());
    sampled_out.push(("OTEL_TRACES_SAMPLER", "always_off".to_owned()));
    let mut apis = [
        Measured::start("exporting", &url, &named).await,
        Measured::start("sampled out", &url, &sampled_out).await,
    ];
    for api in &mut apis {
        api.load(20, 2).await;
    }
    let spans = kept
        .wait_for(Duration::from_secs(20), |spans| {
            spans.iter().filter(|s| s.name == "GET /v1/items").count() >= 20
        })
        .await;
    let server = spans.iter().find(|s| s.name == "GET /v1/items").expect("a server span");
    assert_eq!(server.service, "checkout-api", "OTEL_SERVICE_NAME names the resource");
    assert_eq!(server.resource.get("deployment.environment.name").map(String::as_str), Some("test"));
    assert!(server.resource.contains_key("service.version"), "{:?}", server.resource);
    assert_eq!(server.kind, "server");
    // The sampled-out replica records nothing and exports nothing.
    let metrics = apis[1].process.metrics().await;
    assert_eq!(sample(&metrics, "otel_sdk_spans_exported_total"), Some(0.0), "{metrics}");
    assert_eq!(sample(&metrics, "otel_sdk_spans_dropped_total{reason=\"queue_full\"}"), Some(0.0));
    assert_eq!(dropped.requests(), 0, "no export request from the sampled-out replica");
    for mut api in apis {
        api.process.terminate().await;
    }
}
