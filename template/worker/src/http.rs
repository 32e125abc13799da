//! The worker's own HTTP port: `/healthz` (the process is up), `/readyz`
//! (consuming, and Postgres answers; 503 while draining) and `/metrics`.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use service::Lifecycle;
use sqlx::PgPool;

use crate::metrics::Metrics;
use telemetry::metrics::Format;

/// What the endpoints report on.
#[derive(Clone)]
pub struct Health {
    /// The pool, pinged by `/readyz`.
    pub db: PgPool,
    pub metrics: Arc<Metrics>,
    /// Set while consuming from RabbitMQ.
    pub consuming: Arc<AtomicBool>,
    /// Draining once shutdown has begun.
    pub lifecycle: Lifecycle,
}

/// The router.
pub fn router(health: Health) -> Router {
    Router::new()
        .route(
            "/healthz",
            get(|| async { ([(header::CONTENT_TYPE, "application/json")], "{\"status\":\"ok\"}") }),
        )
        .route("/readyz", get(ready))
        .route("/metrics", get(metrics))
        .with_state(health)
}

async fn ready(State(health): State<Health>) -> Response {
    let problem = if health.lifecycle.is_draining() {
        Some("draining")
    } else if !health.consuming.load(Ordering::Acquire) {
        Some("not consuming from RabbitMQ")
    } else if sqlx::query("SELECT 1").execute(&health.db).await.is_err() {
        Some("Postgres does not answer")
    } else {
        None
    };
    match problem {
        None => ([(header::CONTENT_TYPE, "application/json")], "{\"status\":\"ready\"}").into_response(),
        Some(detail) => {
            let body = serde_json::json!({
                "type": "about:blank", "title": "Service Unavailable", "status": 503,
                "detail": detail, "code": "not_ready",
            });
            (
                StatusCode::SERVICE_UNAVAILABLE,
                [(header::CONTENT_TYPE, "application/problem+json"), (header::RETRY_AFTER, "2")],
                body.to_string(),
            )
                .into_response()
        }
    }
}

async fn metrics(State(health): State<Health>, headers: HeaderMap) -> Response {
    let format = Format::negotiate(headers.get(header::ACCEPT).and_then(|v| v.to_str().ok()));
    ([(header::CONTENT_TYPE, format.content_type())], health.metrics.render(format)).into_response()
}
