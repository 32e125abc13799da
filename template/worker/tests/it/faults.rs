//! Faults survived with a job stream running. Each test keeps a ledger of
//! the 202s it received and checks it against the database at the end:
//! nothing lost, nothing done twice, nothing unexpected. Redeliveries and
//! duplicate publishes are allowed, and reported.

use std::time::Duration;

use serde_json::{Value, json};
use testkit::{FaultProxy, Mode, RabbitServer};
use tokio::time::Instant;

use crate::helpers::{
    Endpoints, Expect, Ledger, Stack, count, deliveries, relay_crashes, shared_broker, shared_postgres, via,
    wait_until,
};

async fn running(stack: &Stack) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM jobs WHERE status = 'running'")
        .fetch_one(&stack.db)
        .await
        .expect("counting running jobs")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_broker_restarted_twice_once_by_sigkill_loses_nothing() {
    // A node of this test's own: the shared broker stays up for the others.
    let mut broker = RabbitServer::start().await.expect("a RabbitMQ node of the test's own");
    let url = broker.url();
    let mut stack =
        Stack::start_with(|db| Endpoints { database_url: db.url(), amqp_url: url.clone() }, |_| {}).await;
    stack.inspect_broker_at(url);
    let worker = stack.worker(|_| {}).await;
    let connected = || async { count(&worker.metrics().await, "amqp_connected ") == 1 };
    let ledger = Ledger::default();
    let restarts = async {
        tokio::time::sleep(Duration::from_secs(1)).await;
        broker.kill().await;
        tokio::time::sleep(Duration::from_millis(500)).await;
        broker.restart().await.expect("the node restarts");
        wait_until("the worker is back", Duration::from_secs(30), connected).await;
        tokio::time::sleep(Duration::from_secs(1)).await;
        broker.stop().await;
        broker.restart().await.expect("the node restarts again");
        wait_until("the worker is back again", Duration::from_secs(30), connected).await;
    };
    tokio::join!(ledger.stream(&stack, 100, 200, Duration::from_millis(250)), restarts);
    let report = ledger.settle(&stack, "broker restarted twice", Duration::from_secs(90)).await;
    eprintln!("broker restarts: {}", deliveries(&worker.metrics().await));
    assert_eq!(report.refused, 0, "the broker being down never costs a 202: {report:?}");
    assert!(count(&worker.metrics().await, "amqp_reconnects_total") >= 2);
    assert!(count(&stack.api_metrics().await, "outbox_relay_restarts_total") >= 2);
    worker.stop().await;
    stack.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_killed_while_holding_deliveries_loses_nothing() {
    let stack = Stack::start().await;
    let mut doomed = stack.worker_process(|cli| cli.worker_concurrency = "4".into()).await;
    let ledger = Ledger::default();
    let kill = async {
        wait_until("the worker holds running jobs", Duration::from_secs(20), || async {
            running(&stack).await >= 2
        })
        .await;
        doomed.signal("KILL");
        doomed.child.wait().await.expect("the worker died");
    };
    tokio::join!(ledger.stream(&stack, 40, 200, Duration::from_millis(20)), kill);
    let successor = stack.worker(|_| {}).await;
    let report = ledger.settle(&stack, "worker SIGKILL", Duration::from_mins(1)).await;
    eprintln!("worker SIGKILL, successor: {}", deliveries(&successor.metrics().await));
    assert!(report.redeliveries >= 2, "the killed worker's jobs came back: {report:?}");
    successor.stop().await;
    stack.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_told_to_stop_finishes_its_jobs_starts_no_more_and_exits_0() {
    let stack = Stack::start().await;
    let mut draining = stack
        .worker_process(|cli| {
            cli.worker_concurrency = "4".into();
            cli.shutdown_grace = "20s".into();
        })
        .await;
    let ledger = Ledger::default();
    ledger.stream(&stack, 12, 1500, Duration::ZERO).await;
    wait_until("four jobs are running", Duration::from_secs(20), || async { running(&stack).await == 4 })
        .await;
    let started: Vec<uuid::Uuid> = sqlx::query_scalar("SELECT id FROM jobs WHERE status = 'running'")
        .fetch_all(&stack.db)
        .await
        .expect("running jobs");

    let signalled = Instant::now();
    draining.signal("TERM");
    let ((), status) = tokio::join!(
        ledger.stream(&stack, 4, 10, Duration::from_millis(50)),
        tokio::time::timeout(Duration::from_secs(25), draining.child.wait()),
    );
    let status = status.expect("it exits within the grace").expect("an exit status");
    assert!(status.success(), "SIGTERM exits 0, got {status}");
    assert!(signalled.elapsed() < Duration::from_secs(20), "it exited within the grace");
    let finished: i64 =
        sqlx::query_scalar("SELECT count(*) FROM jobs WHERE id = ANY($1) AND status = 'succeeded'")
            .bind(&started)
            .fetch_one(&stack.db)
            .await
            .expect("count");
    assert_eq!(finished, 4, "the jobs it had started were finished before it exited");

    let successor = stack.worker(|_| {}).await;
    let report = ledger.settle(&stack, "worker SIGTERM", Duration::from_mins(1)).await;
    let most: i32 =
        sqlx::query_scalar("SELECT max(attempts) FROM jobs").fetch_one(&stack.db).await.expect("max");
    assert_eq!(most, 1, "no job was started twice: {report:?}");
    successor.stop().await;
    stack.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_blackholed_link_is_caught_by_the_heartbeat_and_loses_nothing() {
    let (direct, broker) = shared_broker().await;
    let proxy = FaultProxy::start(broker).await.expect("a proxy");
    // One-second heartbeats: a silent link is declared dead after two.
    let amqp_url = via(&direct, proxy.addr(), "heartbeat=1");
    let mut stack = Stack::start_with(|db| Endpoints { database_url: db.url(), amqp_url }, |_| {}).await;
    stack.inspect_broker_at(direct);
    let worker = stack.worker(|_| {}).await;
    let ledger = Ledger::default();
    let partition = async {
        tokio::time::sleep(Duration::from_secs(1)).await;
        // No FIN, no RST: only the heartbeat can tell.
        proxy.set_mode(Mode::Blackhole);
        let cut = Instant::now();
        wait_until("the worker notices the dead link", Duration::from_secs(15), || async {
            count(&worker.metrics().await, "amqp_connected ") == 0
        })
        .await;
        let noticed = cut.elapsed();
        tokio::time::sleep(Duration::from_secs(2)).await;
        proxy.set_mode(Mode::Pass);
        noticed
    };
    let ((), noticed) = tokio::join!(ledger.stream(&stack, 60, 10, Duration::from_millis(50)), partition);
    ledger.settle(&stack, "blackholed link", Duration::from_mins(1)).await;
    eprintln!("blackhole detected after {noticed:?}: {}", deliveries(&worker.metrics().await));
    assert!(noticed < Duration::from_secs(6), "detected by heartbeat, not by a TCP timeout: {noticed:?}");
    assert!(count(&worker.metrics().await, "amqp_reconnects_total") >= 1);
    worker.stop().await;
    stack.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_relay_crash_between_confirm_and_commit_duplicates_publishes_but_not_effects() {
    let stack = Stack::start_with(
        |db| Endpoints {
            database_url: db.url(),
            amqp_url: testkit::services::amqp_url().expect("a RabbitMQ"),
        },
        |config| config.relay.as_mut().expect("a relay").crash_after_confirm = Some(relay_crashes(3)),
    )
    .await;
    let worker = stack.worker(|_| {}).await;
    let ledger = Ledger::default();
    ledger.stream(&stack, 40, 5, Duration::from_millis(10)).await;
    let report = ledger.settle(&stack, "relay failpoint", Duration::from_mins(1)).await;
    assert!(count(&stack.api_metrics().await, "outbox_relay_restarts_total") >= 3);
    let metrics = worker.metrics().await;
    let duplicates = count(&metrics, "jobs_processed_total{kind=\"synthetic\",outcome=\"duplicate\"}");
    eprintln!("relay failpoint: {duplicates} duplicate deliveries recognised: {report:?}");
    assert!(duplicates >= 3, "each crash republished what the broker had confirmed");
    worker.stop().await;
    stack.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_restarting_under_load_loses_nothing() {
    let proxy = FaultProxy::start(shared_postgres().await).await.expect("a proxy");
    let port = proxy.addr().port();
    let stack = Stack::start_with(
        |db| Endpoints {
            database_url: db.url_via("127.0.0.1", port),
            amqp_url: testkit::services::amqp_url().expect("a RabbitMQ"),
        },
        |_| {},
    )
    .await;
    let worker = stack.worker(|_| {}).await;
    let ledger = Ledger::default();
    let restart = async {
        tokio::time::sleep(Duration::from_secs(1)).await;
        // Every connection reset, every new one refused: a restart.
        proxy.set_mode(Mode::Refuse);
        tokio::time::sleep(Duration::from_secs(3)).await;
        proxy.set_mode(Mode::Pass);
    };
    tokio::join!(ledger.stream(&stack, 60, 10, Duration::from_millis(80)), restart);
    let report = ledger.settle(&stack, "Postgres restart", Duration::from_secs(90)).await;
    assert!(
        report.refused > 0,
        "submissions during the outage were refused, not falsely accepted: {report:?}"
    );
    worker.stop().await;
    stack.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_poison_message_is_dead_lettered_once_after_the_delivery_limit_while_good_jobs_flow() {
    let stack = Stack::start().await;
    let worker = stack.worker(|_| {}).await;
    let ledger = Ledger::default();
    let poison = json!({"kind": "synthetic", "input": {"fail": "panic"}});
    let poisoned = ledger.submit(&stack, &poison, Expect::DeadLettered).await.expect("accepted");
    ledger.stream(&stack, 30, 5, Duration::from_millis(10)).await;
    let report = ledger.settle(&stack, "poison message", Duration::from_mins(1)).await;

    let job: Value = stack.get(&format!("/v1/jobs/{poisoned}")).await.json().await.expect("a job");
    let limit = i64::from(jobs::topology::DELIVERY_LIMIT);
    let attempts = job["attempts"].as_i64().expect("attempts");
    assert!((limit..=limit + 1).contains(&attempts), "delivered up to the limit, got {attempts}");
    assert_eq!(job["error"]["reason"], "delivery_limit", "{job}");
    let dead_letters = stack.topology.dead_letter_queue();
    wait_until("the poison reaches the DLQ", Duration::from_secs(10), || async {
        stack.queue_depth(&dead_letters).await == 1
    })
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(stack.queue_depth(&dead_letters).await, 1, "exactly once");
    let metrics = worker.metrics().await;
    assert_eq!(count(&metrics, "jobs_dead_lettered_total"), 1);
    assert_eq!(count(&metrics, "jobs_processed_total{kind=\"synthetic\",outcome=\"panicked\"}"), attempts);
    eprintln!("poison: {attempts} deliveries, then the DLQ: {report:?}");
    worker.stop().await;
    stack.finish().await;
}
