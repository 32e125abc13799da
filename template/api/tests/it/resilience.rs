//! Failure modes: an exhausted pool, Postgres going away and coming back,
//! and shutdown with requests in flight.

use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::json;
use testkit::Mode;

use crate::helpers::{
    assert_problem, header, lock_item, sample, spawn_behind_proxy, spawn_behind_proxy_in, spawn_with,
    wait_for_lock_waiter,
};

#[tokio::test]
async fn an_exhausted_pool_answers_503_within_the_acquire_timeout() {
    let app = spawn_with(|s| {
        s.database.db_max_connections = "1".into();
        s.database.db_acquire_timeout = "300ms".into();
    })
    .await;
    let id = app.items("v1").create_ok("Lamp").await["id"].as_str().expect("id").to_owned();

    let held = app.app_pool.acquire().await.expect("the only connection");
    let started = Instant::now();
    let response = app.items("v1").get(&id, &[]).await;
    let waited = started.elapsed();
    assert_eq!(header(response.headers(), "retry-after"), Some("2"));
    assert_problem(response, StatusCode::SERVICE_UNAVAILABLE, "database_unavailable").await;
    // A bound, not a benchmark: the request waited for the pool, then gave
    // up instead of hanging.
    assert!(waited >= Duration::from_millis(250), "gave up before the acquire timeout: {waited:?}");
    assert!(waited < Duration::from_secs(5), "hung for {waited:?}");
    // Saturated, not broken: readiness stays up so load is not shifted
    // onto the other replicas all at once.
    assert_eq!(app.readyz().await.status(), StatusCode::OK);

    drop(held);
    assert_eq!(
        app.items("v1").get(&id, &[]).await.status(),
        StatusCode::OK,
        "recovers once a connection is free"
    );
    let metrics = app.metrics().await;
    assert_eq!(sample(&metrics, "db_client_connection_timeouts_total"), Some(1.0), "{metrics}");
}

#[tokio::test]
async fn postgres_going_away_gives_fast_503s_and_not_ready_then_recovers_by_itself() {
    let app = spawn_behind_proxy(|s| s.database.db_acquire_timeout = "2s".into()).await;
    let proxy = app.proxy.as_ref().expect("proxy");
    let id = app.items("v1").create_ok("Lamp").await["id"].as_str().expect("id").to_owned();
    assert_eq!(app.readyz().await.status(), StatusCode::OK);

    proxy.set_mode(Mode::Refuse);
    for _ in 0..3 {
        let started = Instant::now();
        let response = app.items("v1").get(&id, &[]).await;
        assert_problem(response, StatusCode::SERVICE_UNAVAILABLE, "database_unavailable").await;
        assert!(started.elapsed() < Duration::from_secs(3), "a request hung for {:?}", started.elapsed());
    }
    assert_problem(app.readyz().await, StatusCode::SERVICE_UNAVAILABLE, "not_ready").await;
    assert_eq!(app.healthz().await.status(), StatusCode::OK, "liveness is not tied to the database");

    proxy.set_mode(Mode::Pass);
    app.wait_until("readiness recovers", || async { app.readyz().await.status() == StatusCode::OK }).await;
    assert_eq!(app.items("v1").get(&id, &[]).await.status(), StatusCode::OK);
}

#[tokio::test]
async fn shutdown_turns_readiness_off_then_lets_the_in_flight_request_finish() {
    let mut app = spawn_with(|s| {
        s.server.shutdown_delay = "1s".into();
        s.server.shutdown_grace = "10s".into();
    })
    .await;
    let id = app.items("v1").create_ok("Lamp").await["id"].as_str().expect("id").to_owned();

    // A write blocked on a row lock is a request that is really in flight.
    let lock = lock_item(&app, &id).await;
    let in_flight = {
        let request = app
            .client_raw()
            .put(app.url(&format!("/v1/items/{id}")))
            .header("if-match", "\"1\"")
            .json(&json!({"name": "Renamed during shutdown", "price_cents": 1, "currency": "EUR"}));
        tokio::spawn(request.send())
    };
    wait_for_lock_waiter(&app).await;

    app.begin_shutdown();
    app.wait_until("readiness reports draining", || async {
        app.readyz().await.status() == StatusCode::SERVICE_UNAVAILABLE
    })
    .await;
    lock.commit().await.expect("release the lock");

    let response = in_flight.await.expect("task").expect("the in-flight request completes");
    assert_eq!(response.status(), StatusCode::OK);
    app.stop().await.expect("a clean stop");
    let name: String = sqlx::query_scalar("SELECT name FROM items WHERE id = $1::uuid")
        .bind(&id)
        .fetch_one(&app.direct)
        .await
        .expect("query");
    assert_eq!(name, "Renamed during shutdown");
    let refused = reqwest::Client::new().get(app.url("/healthz")).send().await;
    assert!(refused.is_err(), "the listener is closed after shutdown");
}

#[tokio::test]
async fn an_instance_started_without_postgres_answers_keyed_requests_503_until_it_loads_the_keys() {
    let app = spawn_behind_proxy_in(Mode::Refuse, |s| s.database.db_acquire_timeout = "500ms".into()).await;
    let keyed = app.items("v1").list("").await;
    // Not 401: the key may well be valid; the instance cannot tell yet.
    assert!(keyed.headers().contains_key("retry-after"));
    let body = assert_problem(keyed, StatusCode::SERVICE_UNAVAILABLE, "not_ready").await;
    assert!(body["detail"].as_str().is_some_and(|d| d.contains("API keys")), "{body}");

    app.proxy.as_ref().expect("proxy").set_mode(Mode::Pass);
    app.wait_until("the keys load once Postgres answers", || async {
        app.items("v1").list("").await.status() == StatusCode::OK
    })
    .await;
}
