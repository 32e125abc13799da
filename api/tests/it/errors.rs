//! Every error leaves as problem+json with a stable code, including those
//! produced by the router and the middleware rather than the handlers.

use std::fmt::Write as _;
use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::routing::get;
use http_body_util::BodyExt;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tower::ServiceExt;

use crate::helpers::{assert_problem, header, lock_item, spawn_app, spawn_with};

#[tokio::test]
async fn malformed_json_is_a_400() {
    let app = spawn_app().await;
    let response = app
        .client_raw()
        .post(app.url("/v1/items"))
        .header("content-type", "application/json")
        .body("{\"name\": ")
        .send()
        .await
        .expect("sent");
    assert_problem(response, StatusCode::BAD_REQUEST, "malformed_json").await;
}

#[tokio::test]
async fn a_body_that_is_not_json_is_a_415() {
    let app = spawn_app().await;
    let response = app
        .client_raw()
        .post(app.url("/v1/items"))
        .header("content-type", "text/plain")
        .body("name=Lamp")
        .send()
        .await
        .expect("sent");
    assert_problem(response, StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupported_media_type").await;
}

#[tokio::test]
async fn a_body_over_the_limit_is_a_413_whether_its_length_is_declared_or_not() {
    let app = spawn_with(|s| s.server.body_limit_bytes = "2048".into()).await;
    let big = json!({"name": "x".repeat(4096), "price_cents": 1, "currency": "EUR"});
    let declared = app.items("v1").create(&big).await;
    assert_problem(declared, StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large").await;

    // Chunked: no Content-Length, so only reading the body finds the excess.
    let body = big.to_string();
    let mut stream = tokio::net::TcpStream::connect(app.addr).await.expect("connect");
    let mut request = format!(
        "POST /v1/items HTTP/1.1\r\nhost: test\r\ncontent-type: application/json\r\n\
         authorization: Bearer {}\r\ntransfer-encoding: chunked\r\nconnection: close\r\n\r\n",
        app.key
    );
    for chunk in body.as_bytes().chunks(1000) {
        let _ = write!(request, "{:x}\r\n{}\r\n", chunk.len(), std::str::from_utf8(chunk).expect("ascii"));
    }
    request.push_str("0\r\n\r\n");
    stream.write_all(request.as_bytes()).await.expect("write");
    let mut answer = String::new();
    let _ = stream.read_to_string(&mut answer).await;
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
    assert!(
        answer.contains("application/problem+json") && answer.contains("\"payload_too_large\""),
        "{answer}"
    );
    let count: i64 =
        sqlx::query_scalar("SELECT count(*) FROM items").fetch_one(&app.direct).await.expect("count");
    assert_eq!(count, 0);
}

#[tokio::test]
async fn an_unknown_route_is_a_404_and_a_wrong_method_a_405_with_allow() {
    let app = spawn_app().await;
    assert_problem(
        app.send(Method::GET, "/v3/items", &[], None).await,
        StatusCode::NOT_FOUND,
        "route_not_found",
    )
    .await;
    let response = app.send(Method::PATCH, "/v1/items", &[], None).await;
    let allow = header(response.headers(), "allow").expect("Allow").to_owned();
    assert!(allow.contains("GET") && allow.contains("POST"), "{allow}");
    assert_problem(response, StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed").await;
}

#[tokio::test]
async fn a_statement_over_the_database_time_limit_is_a_503_with_retry_after() {
    let app = spawn_with(|s| s.database.db_statement_timeout = "200ms".into()).await;
    let id = app.items("v1").create_ok("Lamp").await["id"].as_str().expect("id").to_owned();
    let lock = lock_item(&app, &id).await;
    let response = app
        .items("v1")
        .update(&id, Some("*"), &json!({"name": "x", "price_cents": 1, "currency": "EUR"}))
        .await;
    assert_eq!(header(response.headers(), "retry-after"), Some("2"));
    assert_problem(response, StatusCode::SERVICE_UNAVAILABLE, "database_timeout").await;
    drop(lock);
    // Nothing was half-written.
    let item: Value = app.items("v1").get(&id, &[]).await.json().await.expect("json");
    assert_eq!(item["version"], 1);
}

/// The service's middleware stack around `routes`, for router tests.
fn stack(routes: Router, tweak: impl FnOnce(&mut api::Settings)) -> Router {
    let mut settings = api::Settings::defaults();
    tweak(&mut settings);
    let config = settings.validate().expect("config");
    let pool = sqlx::PgPool::connect_lazy("postgres://nobody@127.0.0.1:1/none").expect("lazy pool");
    api::http::apply(routes, Arc::new(api::observability::metrics::Metrics::new(pool)), &config.server.http)
}

async fn call(router: Router, path: &str) -> (axum::http::response::Parts, Value) {
    let response = router
        .oneshot(axum::http::Request::get(path).body(Body::empty()).expect("request"))
        .await
        .expect("infallible");
    let (parts, body) = response.into_parts();
    let bytes = body.collect().await.expect("body").to_bytes();
    (parts, serde_json::from_slice(&bytes).expect("a JSON body"))
}

#[tokio::test]
async fn a_panic_is_a_500_that_reveals_nothing() {
    async fn boom() -> &'static str {
        panic!("secret table xyz is broken")
    }
    let router = stack(Router::new().route("/boom", get(boom)), |_| {});
    let (parts, problem) = call(router, "/boom").await;
    assert_eq!(parts.status, StatusCode::INTERNAL_SERVER_ERROR);
    assert_eq!(parts.headers["content-type"], "application/problem+json");
    assert!(parts.headers.contains_key("x-request-id"));
    assert!(!problem.to_string().contains("secret"), "{problem}");
    assert_eq!(problem["code"], "internal_error");
}

#[tokio::test(start_paused = true)]
async fn a_request_over_the_time_limit_is_a_504_problem() {
    let slow = get(|| async {
        tokio::time::sleep(std::time::Duration::from_mins(1)).await;
        "too late"
    });
    let router = stack(Router::new().route("/slow", slow), |s| {
        s.server.request_timeout = "1s".into();
        s.database.db_statement_timeout = "500ms".into();
    });
    let (parts, problem) = call(router, "/slow").await;
    assert_eq!(parts.status, StatusCode::GATEWAY_TIMEOUT);
    assert_eq!(parts.headers["content-type"], "application/problem+json");
    assert_eq!(problem["code"], "timeout");
}
