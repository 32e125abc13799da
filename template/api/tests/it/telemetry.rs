//! Traces, logs and metrics of the api, read the way operators read them:
//! spans as an OTLP collector receives them (over HTTP/protobuf here; the
//! worker's tests use gRPC), JSON log lines, and `/metrics` parsed and
//! checked by `promtool`.

use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use testkit::otlp::{Protocol, ReceivedSpan, traced};

use crate::helpers::{sample, spawn_app};

fn find<'a>(spans: &'a [ReceivedSpan], name: &str, parent: &str) -> &'a ReceivedSpan {
    spans.iter().find(|s| s.name == name && s.parent_span_id == parent).unwrap_or_else(|| {
        let all: Vec<_> =
            spans.iter().map(|s| format!("{} {} <- {}", s.name, s.span_id, s.parent_span_id)).collect();
        panic!("no {name:?} span under {parent}: {all:#?}")
    })
}

#[tokio::test]
async fn a_request_span_is_named_by_its_route_joins_the_callers_trace_and_holds_its_queries() {
    let traced = traced(Protocol::HttpProtobuf);
    let app = spawn_app().await;
    let id = app.items("v1").create_ok("Lamp").await["id"].as_str().expect("an id").to_owned();

    let trace = format!("{:032x}", uuid::Uuid::now_v7().as_u128());
    let caller = "b7ad6b7169203331";
    let path = format!("/v1/items/{id}");
    let response = app
        .send_anonymous(Method::GET, &path, &[("traceparent", &format!("00-{trace}-{caller}-01"))], None)
        .await;
    assert_eq!(response.status(), StatusCode::OK);
    let missing = format!("/v1/items/{}", uuid::Uuid::now_v7());
    let other = format!("{:032x}", uuid::Uuid::now_v7().as_u128());
    let response = app
        .send_anonymous(Method::GET, &missing, &[("traceparent", &format!("00-{other}-{caller}-01"))], None)
        .await;
    assert_eq!(response.status(), StatusCode::NOT_FOUND);

    let spans = traced
        .receiver
        .wait_for(Duration::from_secs(20), |spans| {
            spans.iter().any(|s| s.trace_id == trace && s.kind == "server")
                && spans.iter().any(|s| s.trace_id == other && s.kind == "server")
        })
        .await;
    let trace_spans: Vec<ReceivedSpan> = spans.iter().filter(|s| s.trace_id == trace).cloned().collect();
    let server = find(&trace_spans, "GET /v1/items/{id}", caller);
    assert_eq!(server.kind, "server");
    for (key, value) in [
        ("http.request.method", "GET"),
        ("http.route", "/v1/items/{id}"),
        ("url.path", path.as_str()),
        ("http.response.status_code", "200"),
        ("network.protocol.version", "1.1"),
    ] {
        assert_eq!(server.attr(key), Some(value), "{key}: {:#?}", server.attributes);
    }
    assert_eq!(server.status, "unset");
    // The Postgres load (and, with Redis, the cache lookup) nest under the
    // request, wherever in the handler they happen.
    let nested = |span: &ReceivedSpan| {
        let mut parent = span.parent_span_id.clone();
        while let Some(up) = trace_spans.iter().find(|s| s.span_id == parent) {
            if up.span_id == server.span_id {
                return true;
            }
            parent.clone_from(&up.parent_span_id);
        }
        false
    };
    let select = trace_spans.iter().find(|s| s.name == "SELECT items").expect("the item's query");
    assert!(nested(select), "the query is inside the request");
    assert_eq!(select.kind, "client");
    assert_eq!(select.attr("db.system.name"), Some("postgresql"));
    assert_eq!(select.attr("db.collection.name"), Some("items"));
{% if redis %}    let lookup = trace_spans.iter().find(|s| s.name == "HMGET").expect("the cache lookup");
    assert!(nested(lookup));
    assert_eq!((lookup.kind, lookup.attr("db.system.name")), ("client", Some("redis")));
{% endif %}
    // A 404 is the client's error: the server span is not marked failed.
    let not_found = spans.iter().find(|s| s.trace_id == other && s.kind == "server").expect("the 404's span");
    assert_eq!(not_found.attr("http.response.status_code"), Some("404"));
    assert_eq!(not_found.status, "unset");

    // The request's log line carries its trace and span ids.
    let lines: Vec<Value> = traced.log_lines().iter().filter_map(|l| serde_json::from_str(l).ok()).collect();
    let answered = lines
        .iter()
        .find(|l| l["trace_id"] == trace.as_str() && l["message"] == "answered")
        .unwrap_or_else(|| panic!("the request's log line among {} lines", lines.len()));
    assert_eq!(answered["span_id"], server.span_id.as_str());
    assert_eq!(answered["span"]["http.route"], "/v1/items/{id}");
}

#[tokio::test]
async fn metrics_move_by_exactly_the_traffic_sent_and_pass_promtool() {
    let app = spawn_app().await;
    let series = |method: &str, route: &str, status: u16| {
        format!(
{% raw %}            "http_server_request_duration_seconds_count{{http_request_method=\"{method}\",http_route=\"{route}\",http_response_status_code=\"{status}\"}}"{% endraw %}
        )
    };
    let created = series("POST", "/v1/items", 201);
    let read = series("GET", "/v1/items/{id}", 200);
    let missing = series("GET", "/v1/items/{id}", 404);
    let invalid = series("POST", "/v1/items", 422);
    let unmatched = series("GET", "unmatched", 404);
    #[allow(clippy::cast_possible_truncation, reason = "request counts are small whole numbers")]
    let count = |metrics: &str, series: &str| sample(metrics, series).unwrap_or(0.0).round() as i64;
    let before = app.metrics().await;

    let mut ids = Vec::new();
    for name in ["a", "b", "c"] {
        ids.push(app.items("v1").create_ok(name).await["id"].as_str().expect("an id").to_owned());
    }
    for id in &ids[..2] {
        assert_eq!(app.items("v1").get(id, &[]).await.status(), StatusCode::OK);
    }
    let nobody = uuid::Uuid::now_v7().to_string();
    assert_eq!(app.items("v1").get(&nobody, &[]).await.status(), StatusCode::NOT_FOUND);
    assert_eq!(app.items("v1").create(&json!({"name": ""})).await.status(), StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(app.send(Method::GET, "/no/such/path", &[], None).await.status(), StatusCode::NOT_FOUND);

    let after = app.metrics().await;
    for (series, sent) in [(&created, 3), (&read, 2), (&missing, 1), (&invalid, 1), (&unmatched, 1)] {
        assert_eq!(count(&after, series) - count(&before, series), sent, "{series}\n{after}");
    }
    // The scrape itself is the one request in flight.
    assert_eq!(sample(&after, "http_server_active_requests"), Some(1.0), "{after}");
    // Every Postgres checkout was timed: three creates and at least the
    // loads of the reads.
    let waits = |m: &str| count(m, "db_client_connection_wait_time_seconds_count");
    assert!(waits(&after) - waits(&before) >= 4, "{after}");
    for name in ["db_client_connection_max", "db_client_connections_usage{state=\"idle\"}", "build_info{"] {
        assert!(after.contains(name), "{name} is exposed:\n{after}");
    }
    assert!(after.contains("otel_sdk_spans_exported_total"), "{after}");
    testkit::promtool::check_metrics(&after);
}
