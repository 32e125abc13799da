//! Operational endpoints: liveness, readiness and metrics.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::http::{HeaderMap, header};
use axum::response::IntoResponse;
use serde::Serialize;
use sqlx::PgPool;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::db;
use crate::error::{ErrorCode, Problem};
use crate::http::extract::Json;
use service::Lifecycle;

use crate::observability::metrics::Metrics;
use crate::state::AppState;
use telemetry::metrics::Format;

/// How long readiness waits for Postgres. Kubernetes probes time out after
/// 1 s by default; answering "not ready" in time beats timing out.
const READINESS_TIMEOUT: Duration = Duration::from_millis(800);

/// The operational routes.
pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(get_healthz)).routes(routes!(get_readyz)).routes(routes!(get_metrics))
}

/// Health status.
#[derive(Debug, Serialize, ToSchema)]
pub struct Health {
    /// `ok`.
    #[schema(example = "ok")]
    pub status: &'static str,
}

/// Liveness: the process runs and serves HTTP. Touches no dependency, so a
/// database outage never gets healthy replicas restarted.
#[utoipa::path(get, path = "/healthz", tag = "operations", responses((status = OK, body = Health)))]
pub async fn get_healthz() -> Json<Health> {
    Json(Health { status: "ok" })
}

/// Readiness: this replica should receive traffic. 503 while draining or
/// when Postgres cannot be reached.
#[utoipa::path(
    get,
    path = "/readyz",
    tag = "operations",
    responses(
        (status = OK, body = Health),
        (status = SERVICE_UNAVAILABLE, body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn get_readyz(
    State(db): State<PgPool>,
    State(lifecycle): State<Lifecycle>,
) -> Result<Json<Health>, Problem> {
    if lifecycle.is_draining() {
        return Err(Problem::new(ErrorCode::NotReady).with_detail("The instance is shutting down."));
    }
    // A saturated pool has proven connections: the replica is busy, not
    // broken. Failing readiness here would shift its load onto the others
    // and cascade.
    if db.size() >= db.options().get_max_connections() && db.num_idle() == 0 {
        return Ok(Json(Health { status: "ok" }));
    }
    match tokio::time::timeout(READINESS_TIMEOUT, db::ping(&db)).await {
        Ok(Ok(())) => Ok(Json(Health { status: "ok" })),
        Ok(Err(err)) => {
            tracing::warn!(error = %telemetry::chain(&err), "readiness: Postgres check failed");
            Err(Problem::new(ErrorCode::NotReady).with_detail("Postgres is unreachable."))
        }
        Err(_) => Err(Problem::new(ErrorCode::NotReady).with_detail("Postgres did not answer in time.")),
    }
}

/// Prometheus metrics: OpenMetrics when the scraper asks for it (as
/// Prometheus does), the classic text format otherwise. Internal: the edge
/// does not route it.
#[utoipa::path(
    get,
    path = "/metrics",
    tag = "operations",
    responses((status = OK, body = String, content_type = "application/openmetrics-text"))
)]
pub async fn get_metrics(State(metrics): State<Arc<Metrics>>, headers: HeaderMap) -> impl IntoResponse {
    let format = Format::negotiate(headers.get(header::ACCEPT).and_then(|v| v.to_str().ok()));
    ([(header::CONTENT_TYPE, format.content_type())], metrics.render(format))
}
