//! The HTTP side of jobs: 202 and `Location`, polling with `Retry-After`,
//! `Idempotency-Key`, ownership and bad input. The relay is off here (jobs
//! stay in the outbox); the worker's tests run the whole path.

use reqwest::{Method, Response, StatusCode};
use serde_json::{Value, json};

use crate::helpers::{TestApp, assert_problem, header, spawn_app};

async fn submit(app: &TestApp, body: &Value, idempotency_key: Option<&str>) -> Response {
    let headers: Vec<(&str, &str)> =
        idempotency_key.map(|key| ("idempotency-key", key)).into_iter().collect();
    app.send(Method::POST, "/v1/jobs", &headers, Some(body)).await
}

async fn outbox_rows(app: &TestApp) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM job_outbox")
        .fetch_one(&app.direct)
        .await
        .expect("counting the outbox")
}

async fn other_key(app: &TestApp, scopes: &str) -> String {
    let (_, key) = api::api_keys::create(&app.direct, "other", scopes, None).await.expect("a key");
    // Keys reach the app's in-memory ring within API_KEY_REFRESH.
    app.wait_until("the new key is known", || async {
        let response =
            app.send(Method::GET, "/v1/items", &[("authorization", &format!("Bearer {key}"))], None).await;
        response.status() != StatusCode::UNAUTHORIZED
    })
    .await;
    key
}

#[tokio::test]
async fn a_job_is_accepted_with_202_and_location_and_polled_with_retry_after() {
    let app = spawn_app().await;
    let response = submit(&app, &json!({"kind": "items_report", "input": {"currency": "EUR"}}), None).await;
    assert_eq!(response.status(), StatusCode::ACCEPTED);
    let location = header(response.headers(), "location").expect("a Location").to_owned();
    assert_eq!(header(response.headers(), "retry-after"), Some("1"));
    assert_eq!(header(response.headers(), "cache-control"), Some("no-store"));
    let body: Value = response.json().await.expect("a job");
    let id = body["id"].as_str().expect("an id");
    assert_eq!(location, format!("/v1/jobs/{id}"));
    assert_eq!(body["href"], location.as_str());
    assert_eq!(body["status"], "queued");
    assert_eq!(body["attempts"], 0);
    assert_eq!(body["kind"], "items_report");
    // Durably recorded: the job and its outbox row, before the 202.
    assert_eq!(outbox_rows(&app).await, 1);

    let polled = app.send(Method::GET, &location, &[], None).await;
    assert_eq!(polled.status(), StatusCode::OK);
    assert_eq!(header(polled.headers(), "retry-after"), Some("1"));
    let polled: Value = polled.json().await.expect("a job");
    assert_eq!(polled["id"], id);
    assert_eq!(polled["status"], "queued");

    // Finished jobs are not polled again.
    sqlx::query("UPDATE jobs SET status = 'succeeded', result = '{\"items\": 0}', finished_at = now() WHERE id = $1::uuid")
        .bind(id)
        .execute(&app.direct)
        .await
        .expect("finishing the job");
    let done = app.send(Method::GET, &location, &[], None).await;
    assert_eq!(done.status(), StatusCode::OK);
    assert_eq!(header(done.headers(), "retry-after"), None);
    let done: Value = done.json().await.expect("a job");
    assert_eq!((done["status"].as_str(), done["result"]["items"].as_i64()), (Some("succeeded"), Some(0)));
}

#[tokio::test]
async fn an_idempotency_key_replays_the_same_request_and_refuses_a_different_one() {
    let app = spawn_app().await;
    let body = json!({"kind": "synthetic", "input": {"work_ms": 5, "fail": "never"}});
    let first = submit(&app, &body, Some("order-42")).await;
    assert_eq!(first.status(), StatusCode::ACCEPTED);
    assert_eq!(header(first.headers(), "idempotent-replayed"), None);
    let first: Value = first.json().await.expect("a job");

    // The same request, its keys in another order: the original job.
    let same = json!({"input": {"fail": "never", "work_ms": 5}, "kind": "synthetic"});
    let again = submit(&app, &same, Some("order-42")).await;
    assert_eq!(again.status(), StatusCode::ACCEPTED);
    assert_eq!(header(again.headers(), "idempotent-replayed"), Some("true"));
    assert_eq!(header(again.headers(), "location"), first["href"].as_str());
    let again: Value = again.json().await.expect("a job");
    assert_eq!(again["id"], first["id"]);

    // A different request under the same key.
    let different = json!({"kind": "synthetic", "input": {"work_ms": 6}});
    let refused = submit(&app, &different, Some("order-42")).await;
    assert_problem(refused, StatusCode::UNPROCESSABLE_ENTITY, "idempotency_key_reused").await;

    // Keys are per API key: another key's "order-42" is its own.
    let other = other_key(&app, api::api_keys::DEFAULT_SCOPES).await;
    let auth = format!("Bearer {other}");
    let theirs = app
        .send(
            Method::POST,
            "/v1/jobs",
            &[("authorization", &auth), ("idempotency-key", "order-42")],
            Some(&different),
        )
        .await;
    assert_eq!(theirs.status(), StatusCode::ACCEPTED);
    let theirs: Value = theirs.json().await.expect("a job");
    assert_ne!(theirs["id"], first["id"]);
    assert_eq!(outbox_rows(&app).await, 2, "one job per key, each in the outbox once");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_duplicates_all_get_the_one_job() {
    let app = spawn_app().await;
    let body = json!({"kind": "items_report"});
    let attempts = (0..20).map(|_| submit(&app, &body, Some("retry-storm")));
    let responses = futures_util::future::join_all(attempts).await;
    let mut ids = Vec::new();
    for response in responses {
        assert_eq!(response.status(), StatusCode::ACCEPTED);
        let job: Value = response.json().await.expect("a job");
        ids.push(job["id"].as_str().expect("an id").to_owned());
    }
    ids.dedup();
    assert_eq!(ids.len(), 1, "every duplicate got the same job");
    let jobs: i64 =
        sqlx::query_scalar("SELECT count(*) FROM jobs").fetch_one(&app.direct).await.expect("count");
    assert_eq!((jobs, outbox_rows(&app).await), (1, 1));
}

#[tokio::test]
async fn jobs_belong_to_their_key_and_need_one() {
    let app = spawn_app().await;
    let created: Value =
        submit(&app, &json!({"kind": "items_report"}), None).await.json().await.expect("a job");
    let location = created["href"].as_str().expect("a link");

    let anonymous = app.send_anonymous(Method::GET, location, &[], None).await;
    assert!(header(anonymous.headers(), "www-authenticate").is_some_and(|v| v.starts_with("Bearer")));
    assert_problem(anonymous, StatusCode::UNAUTHORIZED, "unauthorized").await;
    let anonymous =
        app.send_anonymous(Method::POST, "/v1/jobs", &[], Some(&json!({"kind": "items_report"}))).await;
    assert_problem(anonymous, StatusCode::UNAUTHORIZED, "unauthorized").await;

    let stranger = format!("Bearer {}", other_key(&app, api::api_keys::DEFAULT_SCOPES).await);
    let hidden = app.send(Method::GET, location, &[("authorization", &stranger)], None).await;
    assert_problem(hidden, StatusCode::NOT_FOUND, "not_found").await;

    let reader = format!("Bearer {}", other_key(&app, "items:read").await);
    let refused = app
        .send(Method::POST, "/v1/jobs", &[("authorization", &reader)], Some(&json!({"kind": "items_report"})))
        .await;
    assert_problem(refused, StatusCode::FORBIDDEN, "insufficient_scope").await;
}

#[tokio::test]
async fn bad_submissions_are_problems_that_record_nothing() {
    let app = spawn_app().await;
    let unknown = submit(&app, &json!({"kind": "mine_bitcoin"}), None).await;
    let body = assert_problem(unknown, StatusCode::UNPROCESSABLE_ENTITY, "validation_failed").await;
    assert_eq!(body["errors"][0]["pointer"], "/kind");

    let too_long = submit(&app, &json!({"kind": "synthetic", "input": {"work_ms": 60_001}}), None).await;
    let body = assert_problem(too_long, StatusCode::UNPROCESSABLE_ENTITY, "validation_failed").await;
    assert_eq!(body["errors"][0]["pointer"], "/input/work_ms");

    let extra = submit(&app, &json!({"kind": "items_report", "input": {"colour": "red"}}), None).await;
    let body = assert_problem(extra, StatusCode::UNPROCESSABLE_ENTITY, "validation_failed").await;
    assert_eq!(body["errors"][0]["pointer"], "/input");

    let missing = submit(&app, &json!({"input": {}}), None).await;
    assert_problem(missing, StatusCode::UNPROCESSABLE_ENTITY, "validation_failed").await;

    let long_key = "k".repeat(256);
    for key in [long_key.as_str(), "with space"] {
        let refused = submit(&app, &json!({"kind": "items_report"}), Some(key)).await;
        assert_problem(refused, StatusCode::BAD_REQUEST, "invalid_header").await;
    }

    let bad_id = app.send(Method::GET, "/v1/jobs/not-a-uuid", &[], None).await;
    assert_problem(bad_id, StatusCode::BAD_REQUEST, "invalid_path").await;
    let unknown_id = app.send(Method::GET, &format!("/v1/jobs/{}", uuid::Uuid::now_v7()), &[], None).await;
    assert_problem(unknown_id, StatusCode::NOT_FOUND, "not_found").await;

    let jobs: i64 =
        sqlx::query_scalar("SELECT count(*) FROM jobs").fetch_one(&app.direct).await.expect("count");
    assert_eq!((jobs, outbox_rows(&app).await), (0, 0));
}
