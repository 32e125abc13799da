//! Observability of the job path: one trace from the submitting request,
//! through the outbox and RabbitMQ, to the worker that finishes the job,
//! received by an in-process OTLP collector; logs that join up with it;
//! and worker metrics that count exactly the work done.

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{Value, json};
use testkit::otlp::{Protocol, ReceivedSpan, traced};

use crate::helpers::{Stack, count, total, wait_until};

fn one<'a>(spans: &'a [ReceivedSpan], name: &str) -> &'a ReceivedSpan {
    let found: Vec<_> = spans.iter().filter(|s| s.name == name).collect();
    assert_eq!(found.len(), 1, "one {name:?} span expected; the trace holds {:#?}", names(spans));
    found[0]
}

fn names(spans: &[ReceivedSpan]) -> Vec<String> {
    spans.iter().map(|s| format!("{} [{}] {} <- {}", s.name, s.kind, s.span_id, s.parent_span_id)).collect()
}

fn assert_attrs(span: &ReceivedSpan, expected: &[(&str, &str)]) {
    for (key, value) in expected {
        assert_eq!(span.attr(key), Some(*value), "{key} of {:?}: {:#?}", span.name, span.attributes);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_trace_follows_a_job_from_the_request_through_rabbitmq_to_the_worker() {
    let traced = traced(Protocol::Grpc);
    let stack = Stack::start().await;
    let worker = stack.worker(|_| {}).await;

    let trace = format!("{:032x}", uuid::Uuid::now_v7().as_u128());
    let caller = "00f067aa0ba902b7";
    let traceparent = format!("00-{trace}-{caller}-01");
    let response = stack
        .submit_with(
            &json!({"kind": "synthetic"}),
            &[("traceparent", &traceparent), ("tracestate", "vendor=abc")],
        )
        .await
        .expect("submitted");
    assert_eq!(response.status(), StatusCode::ACCEPTED);
    let id = response.json::<Value>().await.expect("a job")["id"].as_str().expect("an id").to_owned();
    let queue = stack.topology.queue();

    let spans = traced
        .receiver
        .wait_for(Duration::from_secs(30), |spans| {
            let here: Vec<_> = spans.iter().filter(|s| s.trace_id == trace).collect();
            here.iter().any(|s| s.name == "job synthetic")
                && here.iter().any(|s| s.name == format!("process {queue}"))
                && here
                    .iter()
                    .any(|s| s.name == "UPDATE jobs" && s.attr("db.system.name") == Some("postgresql"))
        })
        .await;
    let spans: Vec<ReceivedSpan> = spans.into_iter().filter(|s| s.trace_id == trace).collect();

    // The HTTP server span: named by the route template, the caller's child.
    let server = one(&spans, "POST /v1/jobs");
    assert_eq!((server.kind, server.parent_span_id.as_str()), ("server", caller));
    assert_eq!(server.trace_state, "vendor=abc", "the caller's tracestate is honoured");
    assert_attrs(
        server,
        &[
            ("http.request.method", "POST"),
            ("http.route", "/v1/jobs"),
            ("url.path", "/v1/jobs"),
            ("url.scheme", "http"),
            ("http.response.status_code", "202"),
        ],
    );
    // Its queries, as client spans under it.
    let insert = one(&spans, "INSERT jobs");
    assert_eq!((insert.kind, insert.parent_span_id.as_str()), ("client", server.span_id.as_str()));
    assert_attrs(
        insert,
        &[("db.system.name", "postgresql"), ("db.operation.name", "INSERT"), ("db.collection.name", "jobs")],
    );
    // The relay's producer span continues the request's trace from the outbox row.
    let publish = one(&spans, &format!("publish {queue}"));
    assert_eq!((publish.kind, publish.parent_span_id.as_str()), ("producer", server.span_id.as_str()));
    assert_eq!(publish.trace_state, "vendor=abc", "tracestate travels through the outbox");
    assert_attrs(
        publish,
        &[
            ("messaging.system", "rabbitmq"),
            ("messaging.operation.type", "send"),
            ("messaging.destination.name", queue.as_str()),
            ("messaging.message.id", id.as_str()),
        ],
    );
    // The worker's consumer span continues from the message headers.
    let process = one(&spans, &format!("process {queue}"));
    assert_eq!((process.kind, process.parent_span_id.as_str()), ("consumer", publish.span_id.as_str()));
    assert_eq!(process.trace_state, "vendor=abc", "tracestate travels through the message");
    assert_attrs(
        process,
        &[
            ("messaging.system", "rabbitmq"),
            ("messaging.operation.type", "process"),
            ("messaging.destination.name", queue.as_str()),
            ("messaging.message.id", id.as_str()),
        ],
    );
    let job = one(&spans, "job synthetic");
    assert_eq!((job.kind, job.parent_span_id.as_str()), ("internal", process.span_id.as_str()));
    assert_attrs(job, &[("job.id", id.as_str()), ("job.kind", "synthetic"), ("job.attempt", "1")]);
    assert_eq!(job.status, "unset", "a job that succeeded is not an error");
    // The worker's own queries hang under the job.
    let take = spans
        .iter()
        .find(|s| s.name == "UPDATE jobs" && s.parent_span_id == job.span_id)
        .unwrap_or_else(|| panic!("the job's UPDATE under the job span: {:#?}", names(&spans)));
    assert_eq!(take.kind, "client");

    // Logs join up: the request's and the job's lines carry the same trace,
    // and the span ids of the spans they were written in.
    let lines: Vec<Value> = traced
        .log_lines()
        .iter()
        .filter_map(|line| serde_json::from_str::<Value>(line).ok())
        .filter(|line| line["trace_id"] == trace.as_str())
        .collect();
    let answered = lines
        .iter()
        .find(|line| line["message"] == "answered" && line["span"]["http.route"] == "/v1/jobs")
        .unwrap_or_else(|| panic!("the request's log line: {lines:#?}"));
    assert_eq!(answered["span_id"], server.span_id.as_str());
    let succeeded = lines
        .iter()
        .find(|line| line["message"] == "job succeeded")
        .unwrap_or_else(|| panic!("the job's log line: {lines:#?}"));
    assert_eq!(succeeded["span_id"], process.span_id.as_str());
    assert_eq!(succeeded["span"]["job_id"], id.as_str());

    worker.stop().await;
    stack.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn worker_metrics_count_exactly_the_jobs_done_and_report_the_queues() {
    let stack = Stack::start().await;
    let worker = stack.worker(|_| {}).await;
    let before = worker.metrics().await;
    for _ in 0..5 {
        let response = stack.submit(&json!({"kind": "synthetic"})).await.expect("submitted");
        assert_eq!(response.status(), StatusCode::ACCEPTED);
    }
    let response =
        stack.submit(&json!({"kind": "synthetic", "input": {"fail": "permanent"}})).await.expect("submitted");
    assert_eq!(response.status(), StatusCode::ACCEPTED);
    let succeeded = "jobs_processed_total{kind=\"synthetic\",outcome=\"succeeded\"}";
    let failed = "jobs_processed_total{kind=\"synthetic\",outcome=\"failed\"}";
    wait_until("six jobs settled", Duration::from_secs(30), || async {
        let metrics = worker.metrics().await;
        count(&metrics, succeeded) + count(&metrics, failed) >= 6
    })
    .await;
    let queue = stack.topology.queue();
    let consumers = format!("messaging_queue_consumers{{queue=\"{queue}\"}}");
    // The gauges refresh every few seconds.
    wait_until("the queue gauges", Duration::from_secs(15), || async {
        let metrics = worker.metrics().await;
        count(&metrics, &consumers) == 1 && total(&metrics, "jobs_oldest_queued_age_seconds") < 0.001
    })
    .await;
    let after = worker.metrics().await;
    assert_eq!(count(&after, succeeded) - count(&before, succeeded), 5, "{after}");
    assert_eq!(count(&after, failed) - count(&before, failed), 1, "{after}");
    let durations = "job_duration_seconds_count{kind=\"synthetic\"}";
    assert_eq!(count(&after, durations) - count(&before, durations), 6, "one duration per delivery");
    assert_eq!(count(&after, &format!("messaging_queue_depth{{queue=\"{queue}\"}}")), 0);
    let dlq = stack.topology.dead_letter_queue();
    assert!(total(&after, &format!("messaging_queue_depth{{queue=\"{dlq}\"}}")) <= 1.0, "{after}");
    assert!(after.contains("\ndb_client_connection_max "), "the pool is reported: {after}");
    assert!(after.contains("otel_sdk_spans_dropped_total{reason=\"queue_full\"}"), "{after}");
    assert!(after.contains("build_info{service=\"worker\",version="), "{after}");
    testkit::promtool::check_metrics(&after);
    worker.stop().await;
    stack.finish().await;
}
