//! The job path's speed, measured against raw lapin publish-with-confirm in
//! the same run (read the ratios; absolute figures move with the machine).
//! Ignored in the test suite: `cargo xtask bench --jobs` runs it in release.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use lapin::BasicProperties;
use lapin::options::{BasicPublishOptions, ConfirmSelectOptions, QueueDeclareOptions, QueueDeleteOptions};
use lapin::types::{AMQPValue, FieldTable, LongString};
use reqwest::StatusCode;
use serde_json::json;
use tokio::time::Instant;
use uuid::Uuid;

use crate::helpers::{Endpoints, Stack};

/// Concurrent publishers, and concurrent HTTP clients.
const CONCURRENCY: usize = 64;
/// The api's pool: enough connections for the clients' concurrent commits.
const POOL: u32 = 32;
/// Seconds each throughput phase runs.
const SECONDS: u64 = 5;
/// Jobs per second offered in the latency phase, and for how long.
const PACED_RATE: u64 = 100;
const PACED_SECONDS: u64 = 10;

#[tokio::test(flavor = "multi_thread")]
#[ignore = "a benchmark: cargo xtask bench --jobs"]
async fn jobs_throughput_and_latency() {
    let stack = Stack::start_with(
        |db| Endpoints {
            database_url: db.url(),
            amqp_url: testkit::services::amqp_url().expect("a RabbitMQ"),
        },
        |config| config.database.max_connections = POOL,
    )
    .await;
    let raw = raw_publish_rate(&stack).await;
    let item = json!({"name": "bench", "price_cents": 100, "currency": "EUR"});
    let (_, create_rate) = post_rate(&stack, "/v1/items", &item, StatusCode::CREATED).await;
    let (accepted, submit_rate) =
        post_rate(&stack, "/v1/jobs", &json!({"kind": "synthetic"}), StatusCode::ACCEPTED).await;

    // Let the relay drain the outbox, so the worker starts on a full queue.
    let drained = Instant::now();
    loop {
        let pending: i64 =
            sqlx::query_scalar("SELECT count(*) FROM job_outbox").fetch_one(&stack.db).await.expect("count");
        if pending == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let relay_tail = drained.elapsed();

    let started = Instant::now();
    let worker = stack
        .worker(|cli| {
            cli.worker_concurrency = "16".into();
            cli.database.db_max_connections = "20".into();
        })
        .await;
    wait_done(&stack).await;
    #[allow(clippy::cast_precision_loss, reason = "thousands of jobs")]
    let work_rate = accepted as f64 / started.elapsed().as_secs_f64();

    // Latency at a steady, moderate rate: from the 202 to the commit.
    let mut ids = Vec::new();
    let pause = Duration::from_micros(1_000_000 / PACED_RATE);
    let mut tick = tokio::time::interval(pause);
    for _ in 0..PACED_RATE * PACED_SECONDS {
        tick.tick().await;
        let response = stack.submit(&json!({"kind": "synthetic"})).await.expect("submitted");
        assert_eq!(response.status(), StatusCode::ACCEPTED);
        let job: serde_json::Value = response.json().await.expect("a job");
        ids.push(Uuid::parse_str(job["id"].as_str().expect("an id")).expect("a uuid"));
    }
    wait_done(&stack).await;
    let (p50, p99): (f64, f64) = sqlx::query_as(
        "SELECT percentile_cont(0.5) WITHIN GROUP (ORDER BY extract(epoch FROM finished_at - created_at)),
                percentile_cont(0.99) WITHIN GROUP (ORDER BY extract(epoch FROM finished_at - created_at))
         FROM jobs WHERE id = ANY($1)",
    )
    .bind(&ids)
    .fetch_one(&stack.db)
    .await
    .expect("percentiles");

    println!("\njobs benchmark ({CONCURRENCY} concurrent clients, api pool {POOL}, {SECONDS} s per phase)");
    println!("  raw lapin publish + confirm (persistent, quorum queue): {raw:>9.0} msg/s");
    println!(
        "  POST /v1/jobs → 202 (Postgres transaction, outbox):     {submit_rate:>9.0} req/s  = {:.2}× raw publish, {:.2}× item create",
        submit_rate / raw,
        submit_rate / create_rate
    );
    println!("  POST /v1/items → 201 (one insert, for reference):      {create_rate:>9.0} req/s");
    println!("  relay tail after the submissions stopped:              {:>9.2} s", relay_tail.as_secs_f64());
    println!(
        "  worker, 16 at once, empty synthetic jobs:               {work_rate:>9.0} jobs/s ({accepted} jobs)"
    );
    println!("  submit-to-done at {PACED_RATE}/s: p50 {:.1} ms, p99 {:.1} ms", p50 * 1000.0, p99 * 1000.0);
    worker.stop().await;
    stack.finish().await;
}

async fn wait_done(stack: &Stack) {
    loop {
        let open: i64 = sqlx::query_scalar("SELECT count(*) FROM jobs WHERE status <> 'succeeded'")
            .fetch_one(&stack.db)
            .await
            .expect("count");
        if open == 0 {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Messages per second that `CONCURRENCY` publishers get confirmed, each
/// waiting for its confirm before the next publish, into a durable quorum
/// queue with persistent messages: what the relay does, without Postgres.
async fn raw_publish_rate(stack: &Stack) -> f64 {
    let url = testkit::services::amqp_url().expect("a RabbitMQ");
    let connection = jobs::broker::connect(&url, "bench raw publish").await.expect("connecting");
    let channel = connection.create_channel().await.expect("a channel");
    channel.confirm_select(ConfirmSelectOptions::default()).await.expect("confirms");
    let queue = format!("{}.bench", stack.topology.queue());
    let mut arguments = FieldTable::default();
    arguments.insert("x-queue-type".into(), AMQPValue::LongString(LongString::from("quorum")));
    let durable = QueueDeclareOptions { durable: true, ..QueueDeclareOptions::default() };
    channel.queue_declare(queue.as_str().into(), durable, arguments).await.expect("a queue");
    let published = Arc::new(AtomicU64::new(0));
    let deadline = Instant::now() + Duration::from_secs(SECONDS);
    let body = serde_json::to_vec(&json!({"id": Uuid::now_v7(), "kind": "synthetic"})).expect("a body");
    let mut publishers = Vec::new();
    for _ in 0..CONCURRENCY {
        let (channel, queue, published, body) =
            (channel.clone(), queue.clone(), published.clone(), body.clone());
        publishers.push(tokio::spawn(async move {
            while Instant::now() < deadline {
                let properties = BasicProperties::default().with_delivery_mode(2);
                let options = BasicPublishOptions { mandatory: true, ..BasicPublishOptions::default() };
                let confirm = channel
                    .basic_publish("".into(), queue.as_str().into(), options, &body, properties)
                    .await
                    .expect("publish");
                assert!(confirm.await.expect("a confirm").is_ack());
                published.fetch_add(1, Ordering::Relaxed);
            }
        }));
    }
    for publisher in publishers {
        publisher.await.expect("a publisher");
    }
    let _ = channel.queue_delete(queue.as_str().into(), QueueDeleteOptions::default()).await;
    let _ = connection.close(200, "done".into()).await;
    #[allow(clippy::cast_precision_loss, reason = "message counts")]
    let rate = published.load(Ordering::Relaxed) as f64 / SECONDS as f64;
    rate
}

/// Answers per second from `CONCURRENCY` clients posting `body` to `path`
/// for `SECONDS`, each answer `expected`.
async fn post_rate(stack: &Stack, path: &str, body: &serde_json::Value, expected: StatusCode) -> (u64, f64) {
    let answered = Arc::new(AtomicU64::new(0));
    let deadline = Instant::now() + Duration::from_secs(SECONDS);
    let started = Instant::now();
    let mut clients = Vec::new();
    for _ in 0..CONCURRENCY {
        let (client, url, answered, body) =
            (stack.client().clone(), format!("http://{}{path}", stack.api), answered.clone(), body.clone());
        clients.push(tokio::spawn(async move {
            while Instant::now() < deadline {
                let response = client.post(&url).json(&body).send().await.expect("sent");
                assert_eq!(response.status(), expected);
                answered.fetch_add(1, Ordering::Relaxed);
            }
        }));
    }
    for client in clients {
        client.await.expect("a client");
    }
    let count = answered.load(Ordering::Relaxed);
    #[allow(clippy::cast_precision_loss, reason = "request counts")]
    let rate = count as f64 / started.elapsed().as_secs_f64();
    (count, rate)
}
