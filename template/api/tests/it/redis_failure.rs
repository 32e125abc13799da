//! Redis killed, then Redis slow: the API keeps answering without a 5xx from
//! the cache or the limiter, each policy fails open or closed as configured,
//! and normal service returns within seconds. The Redis here is the test's
//! own (killed) or behind a fault proxy (slowed): the shared one is never
//! touched.

use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde_json::json;
use testkit::{FaultProxy, Mode, RedisServer};

use crate::helpers::{TestApp, assert_problem, sample, spawn_with};

async fn metric(app: &TestApp, series: &str) -> Option<f64> {
    sample(&app.metrics().await, series)
}

async fn backend(app: &TestApp, name: &str) -> bool {
    metric(app, &format!("rate_limit_backend{{backend=\"{name}\"}}")).await == Some(1.0)
}

/// A burst of reads and writes; every answer must be a success.
async fn traffic_succeeds(app: &TestApp, id: &str) {
    for round in 0..10 {
        let read = app.items("v1").get(id, &[]).await.status();
        assert_eq!(read, StatusCode::OK, "read {round}");
        let body =
            json!({"name": format!("during the outage {round}"), "price_cents": round, "currency": "EUR"});
        let write = app.items("v1").update(id, Some("*"), &body).await.status();
        assert_eq!(write, StatusCode::OK, "write {round}");
        assert_eq!(app.items("v2").list("").await.status(), StatusCode::OK, "list {round}");
    }
}

/// Reads until one is a cache hit and the shared limiter is back.
async fn wait_for_recovery(app: &TestApp, id: &str) -> Duration {
    let started = tokio::time::Instant::now();
    app.wait_until("the cache and the shared limiter are back", || async {
        let before = app.cache_hits().await;
        app.items("v1").get(id, &[]).await;
        app.cache_hits().await > before && backend(app, "redis").await
    })
    .await;
    started.elapsed()
}

#[tokio::test]
async fn a_killed_redis_costs_no_errors_fails_open_or_closed_as_configured_and_recovers() {
    let mut redis = RedisServer::start().await.expect("a Redis of our own");
    let open = spawn_with(|s| {
        s.redis.redis_url = redis.url();
        s.access.rate_limit_key = "1000/1s".into();
    })
    .await;
    let closed = open
        .replica(|s| {
            s.redis.rate_limit_fail_closed = "key".into();
        })
        .await;
    let id = open.items("v1").create_ok("Lamp").await["id"].as_str().expect("id").to_owned();
    open.items("v1").get(&id, &[]).await;
    open.items("v1").get(&id, &[]).await;
    assert!(open.cache_hits().await >= 1.0);
    assert!(backend(&open, "redis").await);

    redis.kill();
    traffic_succeeds(&open, &id).await;
    assert!(backend(&open, "local").await, "fail-open falls back to the per-replica limiter");
    assert_eq!(metric(&open, "redis_circuit_state").await, Some(1.0), "repeated failures open the circuit");
    // The fail-closed replica refuses with 503 and Retry-After instead.
    let refused = closed.items("v1").list("").await;
    assert!(refused.headers().contains_key("retry-after"));
    assert_problem(refused, StatusCode::SERVICE_UNAVAILABLE, "rate_limiter_unavailable").await;
    // The fallback still limits: a per-replica limiter, not none.
    let strict = open.replica(|s| s.access.rate_limit_key = "2/1m".into()).await;
    let mut statuses = Vec::new();
    for _ in 0..4 {
        statuses.push(strict.send(Method::GET, "/v1/items", &[], None).await.status());
    }
    assert!(statuses.contains(&StatusCode::TOO_MANY_REQUESTS), "{statuses:?}");

    redis.restart().await.expect("Redis restarts");
    let took = wait_for_recovery(&open, &id).await;
    assert!(took < Duration::from_secs(5), "recovery took {took:?}");
    closed
        .wait_until("the fail-closed replica admits again", || async {
            closed.items("v1").list("").await.status() == StatusCode::OK
        })
        .await;
    assert_eq!(metric(&open, "redis_circuit_state").await, Some(0.0));
}

#[tokio::test]
async fn a_slow_redis_is_cut_off_by_the_timeout_and_the_breaker_and_recovers() {
    let shared = testkit::services::redis_url().expect("a Redis for the tests");
    let redis = redis::Client::open(shared.as_str()).expect("a Redis URL");
    let info = redis.get_connection_info();
    let upstream = tokio::net::lookup_host(info.addr().to_string())
        .await
        .ok()
        .and_then(|mut addrs| addrs.next())
        .expect("the Redis address");
    let proxy = FaultProxy::start(upstream).await.expect("a proxy");
    let app = spawn_with(|s| s.redis.redis_url = format!("redis://127.0.0.1:{}", proxy.addr().port())).await;
    let id = app.items("v1").create_ok("Lamp").await["id"].as_str().expect("id").to_owned();
    app.items("v1").get(&id, &[]).await;
    app.items("v1").get(&id, &[]).await;
    assert!(app.cache_hits().await >= 1.0);

    // Far slower than REDIS_TIMEOUT (50 ms): every call would time out.
    proxy.set_mode(Mode::Delay(Duration::from_millis(400)));
    traffic_succeeds(&app, &id).await;
    assert_eq!(metric(&app, "redis_circuit_state").await, Some(1.0), "timeouts open the circuit");
    assert!(backend(&app, "local").await);
    assert!(metric(&app, "cache_requests_total{cache=\"items\",result=\"bypass\"}").await >= Some(1.0));

    proxy.set_mode(Mode::Pass);
    let took = wait_for_recovery(&app, &id).await;
    assert!(took < Duration::from_secs(5), "recovery took {took:?}");
    assert_eq!(app.send(Method::GET, "/readyz", &[], None).await.status(), StatusCode::OK);
}
