//! The Redis item cache across two instances: single flight, invalidation
//! after commit, and the version guard against slow fills.

use std::time::Duration;

use rand::Rng as _;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::helpers::{TestApp, sample, spawn_app, spawn_configured};

async fn loads(app: &TestApp) -> f64 {
    sample(&app.metrics().await, "cache_loads_total").unwrap_or(0.0)
}

async fn get(app: &TestApp, id: &str) -> (StatusCode, Value) {
    let response = app.items("v1").get(id, &[]).await;
    let status = response.status();
    (status, response.json().await.unwrap_or(Value::Null))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stampede_on_a_cold_key_reaches_postgres_at_most_once_per_instance() {
    let first = spawn_app().await;
    let second = first.replica(|_| {}).await;
    let id = first.items("v1").create_ok("Hot").await["id"].as_str().expect("id").to_owned();

    let mut requests = Vec::new();
    for n in 0..60 {
        let app = if n % 2 == 0 { &first } else { &second };
        requests.push(get(app, &id));
    }
    let answers = futures_util::future::join_all(requests).await;
    assert!(answers.iter().all(|(status, body)| *status == StatusCode::OK && body["id"] == id.as_str()));
    let (a, b) = (loads(&first).await, loads(&second).await);
    assert!(a <= 1.0 && b <= 1.0 && a + b >= 1.0, "Postgres loads: {a} and {b}");
    // The concurrent requests may all have joined the single flight, so
    // only a read after it has landed is sure to be a hit, on either side.
    for app in [&first, &second] {
        let before = app.cache_hits().await;
        assert_eq!(get(app, &id).await.0, StatusCode::OK);
        assert!(app.cache_hits().await >= before + 1.0, "a read after the fill is a hit");
    }
    assert!(loads(&first).await + loads(&second).await <= a + b, "no further Postgres loads");
}

#[tokio::test]
async fn a_write_on_one_instance_is_seen_at_once_by_the_other() {
    let writer = spawn_app().await;
    let reader = writer.replica(|_| {}).await;
    let id = writer.items("v1").create_ok("Lamp").await["id"].as_str().expect("id").to_owned();
    for round in 1..=20 {
        // Warm the reader's cache so the next read would be a hit.
        let (_, cached) = get(&reader, &id).await;
        get(&reader, &id).await;
        let version = cached["version"].as_i64().expect("a version");
        let etag = format!("\"{version}\"");
        let body = json!({"name": format!("round {round}"), "price_cents": round, "currency": "EUR"});
        let updated = writer.items("v1").update(&id, Some(&etag), &body).await;
        assert_eq!(updated.status(), StatusCode::OK);
        let (status, seen) = get(&reader, &id).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(seen["version"], version + 1, "round {round}: the other instance served {seen}");
        assert_eq!(seen["name"], format!("round {round}"));
    }
    assert!(reader.cache_hits().await >= 20.0, "the reads between writes were cache hits");

    // A delete is seen at once too.
    assert_eq!(writer.items("v1").delete(&id, None).await.status(), StatusCode::NO_CONTENT);
    assert_eq!(get(&reader, &id).await.0, StatusCode::NOT_FOUND);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn random_reads_and_writes_with_slow_fills_leave_no_stale_entry() {
    // Every cache fill waits up to 40 ms after reading Postgres: the window
    // in which a write can commit and invalidate before the fill lands.
    let slow = |config: &mut api::Config| config.cache_fill_delay = Some(Duration::from_millis(40));
    let first = spawn_configured(|_| {}, slow).await;
    let second = first.replica_configured(slow).await;
    let mut ids = Vec::new();
    for n in 0..4 {
        ids.push(
            first.items("v1").create_ok(&format!("item {n}")).await["id"].as_str().expect("id").to_owned(),
        );
    }
    let apps = [&first, &second];
    let until = tokio::time::Instant::now() + Duration::from_secs(3);
    let reader = |seed: usize| {
        let ids = &ids;
        async move {
            let mut n = seed;
            while tokio::time::Instant::now() < until {
                n += 1;
                let (status, _) = get(apps[n % 2], &ids[n % ids.len()]).await;
                assert_eq!(status, StatusCode::OK);
            }
        }
    };
    let writer = |seed: usize| {
        let ids = &ids;
        async move {
            let mut n = seed;
            while tokio::time::Instant::now() < until {
                n += 1;
                let body = json!({"name": format!("write {n}"), "price_cents": n, "currency": "EUR"});
                let id = &ids[n % ids.len()];
                let response = apps[n % 2].items("v1").update(id, Some("*"), &body).await;
                assert_eq!(response.status(), StatusCode::OK);
                let written =
                    response.json::<Value>().await.expect("an item")["version"].as_i64().expect("version");
                // Whatever slow fills are in flight, the other instance never
                // goes back to a version before this write.
                let seen = get(apps[(n + 1) % 2], id).await.1["version"].as_i64().expect("version");
                assert!(seen >= written, "wrote version {written} of {id}, then read {seen} elsewhere");
                let pause = rand::rng().random_range(0..20);
                tokio::time::sleep(Duration::from_millis(pause)).await;
            }
        }
    };
    tokio::join!(reader(0), reader(1), reader(2), reader(3), reader(4), reader(5), writer(0), writer(1));

    // Settled: every request (and so every fill) has finished.
    let prefix = first.settings.redis.redis_key_prefix.clone();
    let redis = redis::Client::open(first.settings.redis.redis_url.as_str()).expect("a Redis URL");
    let mut conn = redis.get_multiplexed_async_connection().await.expect("Redis");
    for id in &ids {
        let version: i64 = sqlx::query_scalar("SELECT version FROM items WHERE id = $1::uuid")
            .bind(id)
            .fetch_one(&first.direct)
            .await
            .expect("the row");
        let (_, payload): (Option<i64>, Option<String>) = redis::cmd("HMGET")
            .arg(format!("{prefix}:item:{id}"))
            .arg("v")
            .arg("d")
            .query_async(&mut conn)
            .await
            .expect("the entry");
        if let Some(payload) = payload {
            let cached: Value = serde_json::from_str(&payload).expect("a cached item");
            assert_eq!(cached["version"], version, "stale entry for {id}: {cached}");
        }
        for app in apps {
            assert_eq!(get(app, id).await.1["version"], version, "an instance served a stale {id}");
        }
    }
    let stale_fills = sample(&first.metrics().await, "cache_fills_total{cache=\"items\",result=\"stale\"}")
        .unwrap_or(0.0)
        + sample(&second.metrics().await, "cache_fills_total{cache=\"items\",result=\"stale\"}")
            .unwrap_or(0.0);
    println!("fills refused by the version guard: {stale_fills}");
}

#[tokio::test]
async fn the_cache_can_be_turned_off() {
    let app = crate::helpers::spawn_with(|s| s.redis.cache_ttl = "0s".into()).await;
    let id = app.items("v1").create_ok("Lamp").await["id"].as_str().expect("id").to_owned();
    for _ in 0..3 {
        assert_eq!(
            app.send(Method::GET, &format!("/v1/items/{id}"), &[], None).await.status(),
            StatusCode::OK
        );
    }
    let metrics = app.metrics().await;
    assert_eq!(sample(&metrics, "cache_loads_total"), Some(0.0), "{metrics}");
    assert!(!metrics.contains("cache_requests_total{"), "no lookups at all: {metrics}");
}

#[tokio::test]
async fn an_unreadable_entry_is_a_miss_and_gets_replaced() {
    let app = spawn_app().await;
    let id = app.items("v1").create_ok("Lamp").await["id"].as_str().expect("id").to_owned();
    let key = format!("{}:item:{id}", app.settings.redis.redis_key_prefix);
    let redis = redis::Client::open(app.settings.redis.redis_url.as_str()).expect("a Redis URL");
    let mut conn = redis.get_multiplexed_async_connection().await.expect("Redis");
    // What an older, incompatible build might have left behind.
    let () = redis::cmd("HSET")
        .arg(&key)
        .arg("v")
        .arg(1)
        .arg("d")
        .arg("{not json")
        .query_async(&mut conn)
        .await
        .expect("HSET");
    let (status, body) = get(&app, &id).await;
    assert_eq!((status, body["name"].as_str()), (StatusCode::OK, Some("Lamp")));
    let (_, payload): (Option<i64>, Option<String>) =
        redis::cmd("HMGET").arg(&key).arg("v").arg("d").query_async(&mut conn).await.expect("HMGET");
    let cached: Value = serde_json::from_str(&payload.expect("refilled")).expect("a readable entry again");
    assert_eq!(cached["name"], "Lamp");
}
