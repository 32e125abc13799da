//! The job path when nothing breaks, and when jobs themselves fail.

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{Value, json};
use testkit::{FaultProxy, Mode};
use uuid::Uuid;

use crate::helpers::{Endpoints, Expect, Ledger, Stack, count, shared_broker, total, via, wait_until};

async fn job(stack: &Stack, id: Uuid) -> (Value, Option<String>) {
    let response = stack.get(&format!("/v1/jobs/{id}")).await;
    assert_eq!(response.status(), StatusCode::OK);
    let retry_after = response.headers().get("retry-after").map(|v| v.to_str().expect("text").to_owned());
    (response.json().await.expect("a job"), retry_after)
}

async fn add_item(stack: &Stack, name: &str, price: i64, currency: &str) {
    sqlx::query("INSERT INTO items (id, name, price_amount_minor, currency) VALUES ($1, $2, $3, $4)")
        .bind(Uuid::now_v7())
        .bind(name)
        .bind(price)
        .bind(currency)
        .execute(&stack.db)
        .await
        .expect("an item");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn accepted_jobs_are_done_once_and_their_results_are_visible() {
    let stack = Stack::start().await;
    for (name, price, currency) in [("lamp", 1000, "EUR"), ("desk", 3001, "EUR"), ("pen", 250, "USD")] {
        add_item(&stack, name, price, currency).await;
    }
    let worker = stack.worker(|_| {}).await;
    let ledger = Ledger::default();
    let report = ledger
        .submit(&stack, &json!({"kind": "items_report", "input": {"currency": "EUR"}}), Expect::Succeeded)
        .await
        .expect("accepted");
    let everything =
        ledger.submit(&stack, &json!({"kind": "items_report"}), Expect::Succeeded).await.expect("accepted");
    ledger.stream(&stack, 30, 5, Duration::ZERO).await;
    let figures = ledger.settle(&stack, "happy path", Duration::from_secs(30)).await;
    assert_eq!(figures.accepted, 32);

    let (eur, retry_after) = job(&stack, report).await;
    assert_eq!(retry_after, None, "a finished job is not polled again");
    assert_eq!((eur["status"].as_str(), eur["attempts"].as_i64()), (Some("succeeded"), Some(1)));
    assert!(eur["finished_at"].is_string() && eur["started_at"].is_string());
    let expected = json!({"items": 2, "currencies": [
        {"currency": "EUR", "items": 2, "total_minor": 4001, "min_minor": 1000, "max_minor": 3001, "average_minor": 2001}
    ]});
    assert_eq!(eur["result"], expected);
    let (all, _) = job(&stack, everything).await;
    assert_eq!(all["result"]["items"], 3);
    assert_eq!(all["result"]["currencies"][1]["currency"], "USD");

    // Everything was published once the broker confirmed it.
    let outbox: i64 =
        sqlx::query_scalar("SELECT count(*) FROM job_outbox").fetch_one(&stack.db).await.expect("count");
    assert_eq!(outbox, 0);
    assert!(count(&stack.api_metrics().await, "outbox_published_total") >= 32);
    let metrics = worker.metrics().await;
    assert_eq!(count(&metrics, "jobs_processed_total{kind=\"synthetic\",outcome=\"succeeded\"}"), 30);
    assert_eq!(count(&metrics, "jobs_processed_total{kind=\"items_report\",outcome=\"succeeded\"}"), 2);
    worker.stop().await;
    stack.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jobs_accepted_while_rabbitmq_is_down_are_published_when_it_returns() {
    let (direct, broker) = shared_broker().await;
    let proxy = FaultProxy::start(broker).await.expect("a proxy");
    proxy.set_mode(Mode::Refuse);
    let amqp_url = via(&direct, proxy.addr(), "");
    let stack = Stack::start_with(|db| Endpoints { database_url: db.url(), amqp_url }, |_| {}).await;
    let worker = stack.spawn_worker(|_| {}).await;
    let ledger = Ledger::default();
    ledger.stream(&stack, 10, 0, Duration::ZERO).await;
    // Every one is a 202: accepted means recorded, not published.
    assert_eq!((ledger.accepted().await, 10), (10, 10));
    wait_until("the outbox lag shows", Duration::from_secs(10), || async {
        let metrics = stack.api_metrics().await;
        count(&metrics, "outbox_pending ") == 10 && total(&metrics, "outbox_lag_seconds ") > 0.0
    })
    .await;
    assert_eq!(worker.readiness().await, StatusCode::SERVICE_UNAVAILABLE, "not consuming, not ready");
    let queued: i64 = sqlx::query_scalar("SELECT count(*) FROM jobs WHERE status = 'queued'")
        .fetch_one(&stack.db)
        .await
        .expect("count");
    assert_eq!(queued, 10);

    proxy.set_mode(Mode::Pass);
    ledger.settle(&stack, "broker down at submission", Duration::from_secs(30)).await;
    worker.wait_ready().await;
    let metrics = stack.api_metrics().await;
    assert!(count(&metrics, "outbox_relay_restarts_total") >= 1);
    worker.stop().await;
    stack.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failing_jobs_are_retried_with_backoff_then_failed_into_the_dead_letter_queue() {
    let stack = Stack::start().await;
    let worker = stack.worker(|cli| cli.job_max_attempts = "3".into()).await;
    let ledger = Ledger::default();
    let flaky = json!({"kind": "synthetic", "input": {"fail": "transient", "failures": 2}});
    let recovers = ledger.submit(&stack, &flaky, Expect::Succeeded).await.expect("accepted");
    let hopeless = json!({"kind": "synthetic", "input": {"fail": "transient", "failures": 10}});
    let gives_up = ledger.submit(&stack, &hopeless, Expect::Failed).await.expect("accepted");
    let broken = json!({"kind": "synthetic", "input": {"fail": "permanent"}});
    let fails = ledger.submit(&stack, &broken, Expect::Failed).await.expect("accepted");
    ledger.stream(&stack, 10, 1, Duration::ZERO).await;
    ledger.settle(&stack, "failing jobs", Duration::from_secs(30)).await;

    let (recovered, _) = job(&stack, recovers).await;
    assert_eq!(recovered["attempts"], 3);
    assert_eq!(recovered["error"], Value::Null, "a success clears the last error");
    assert_eq!(recovered["result"]["succeeded_on_attempt"], 3);
    let (gave_up, _) = job(&stack, gives_up).await;
    assert_eq!(gave_up["attempts"], 3);
    assert!(gave_up["error"]["message"].as_str().is_some_and(|m| m.starts_with("gave up after 3 attempts")));
    let (failed, _) = job(&stack, fails).await;
    assert_eq!(
        (failed["attempts"].as_i64(), failed["error"]["message"].as_str()),
        (Some(1), Some("synthetic permanent failure"))
    );

    // Both failures wait in the dead-letter queue; the status copies were consumed.
    wait_until("both failures are dead-lettered", Duration::from_secs(10), || async {
        stack.queue_depth(&stack.topology.dead_letter_queue()).await == 2
            && stack.queue_depth(&stack.topology.status_queue()).await == 0
    })
    .await;
    let metrics = worker.metrics().await;
    assert_eq!(count(&metrics, "jobs_processed_total{kind=\"synthetic\",outcome=\"retried\"}"), 4);
    assert_eq!(count(&metrics, "jobs_processed_total{kind=\"synthetic\",outcome=\"failed\"}"), 2);
    worker.stop().await;
    stack.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_worker_binary_serves_health_and_metrics_and_logs_job_and_trace_ids() {
    let stack = Stack::start().await;
    let mut worker = stack.worker_process(|_| {}).await;
    let client = reqwest::Client::builder().no_proxy().build().expect("a client");
    let health = client.get(format!("http://{}/healthz", worker.addr)).send().await.expect("healthz");
    assert_eq!(health.status(), StatusCode::OK);
    // The image's HEALTHCHECK: the same binary asks its own port.
    let healthcheck = |port: u16| {
        std::process::Command::new(env!("CARGO_BIN_EXE_worker"))
            .arg("healthcheck")
            .env_clear()
            .env("PORT", port.to_string())
            .output()
            .expect("worker healthcheck")
    };
    assert!(healthcheck(worker.addr.port()).status.success());
    let closed = std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).expect("a port");
    let down = healthcheck(closed.port());
    assert_eq!(down.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&down.stderr).starts_with("unhealthy: "));

    let trace = "4bf92f3577b34da6a3ce929d0e0e4736";
    let traceparent = format!("00-{trace}-00f067aa0ba902b7-01");
    let response = stack
        .submit_with(&json!({"kind": "synthetic"}), &[("traceparent", &traceparent)])
        .await
        .expect("submitted");
    assert_eq!(response.status(), StatusCode::ACCEPTED);
    let id = response.json::<Value>().await.expect("a job")["id"].as_str().expect("an id").to_owned();
    wait_until("the worker logged the job", Duration::from_secs(20), || async {
        worker.logs.lock().await.lines().any(|line| line.contains("job succeeded") && line.contains(&id))
    })
    .await;
    let logs = worker.logs.lock().await.clone();
    let line =
        logs.lines().find(|line| line.contains("job succeeded") && line.contains(&id)).expect("the line");
    let line: Value = serde_json::from_str(line).expect("a JSON log line");
    assert_eq!(line["span"]["job_id"], id.as_str(), "{line}");
    assert_eq!(line["trace_id"], trace, "{line}");
    assert_eq!(line["span_id"].as_str().map(str::len), Some(16), "{line}");
    assert_eq!(line["span"]["kind"], "synthetic");
    let metrics = worker.metrics().await;
    assert_eq!(count(&metrics, "jobs_processed_total{kind=\"synthetic\",outcome=\"succeeded\"}"), 1);
    assert_eq!(count(&metrics, "amqp_connected "), 1);

    worker.signal("TERM");
    let status = tokio::time::timeout(Duration::from_secs(15), worker.child.wait())
        .await
        .expect("exits")
        .expect("status");
    assert!(status.success(), "SIGTERM exits 0, got {status}");
    stack.finish().await;
}
