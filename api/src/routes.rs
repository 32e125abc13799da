//! Every route of the service, and the OpenAPI document built from them.
//!
//! Routes are registered through `utoipa-axum`, so a route cannot exist
//! without its OpenAPI description: the document is a by-product of the
//! router, not a second list to keep in sync.

pub mod health;
pub mod items;
pub mod v1;
pub mod v2;

use axum::Router;
use axum::middleware;
use utoipa::OpenApi;
use utoipa_axum::router::OpenApiRouter;
use utoipa_swagger_ui::SwaggerUi;

use crate::config::Config;
use crate::error::{ApiError, ErrorCode};
use crate::state::AppState;
use crate::versioning::{Deprecations, announce_deprecation};

/// The document's fixed parts; paths and schemas come from the routes.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "gantry API",
        description = "Versioned HTTP API. Errors are RFC 9457 problem+json with a stable `code`."
    ),
    tags(
        (name = "items", description = "The items resource"),
        (name = "operations", description = "Health, readiness and metrics"),
    )
)]
struct ApiDoc;

/// Every API route, versions nested under their prefix, each version with
/// its deprecation headers when configured.
fn api_routes(deprecations: &Deprecations) -> OpenApiRouter<AppState> {
    let version = |name: &str, routes: OpenApiRouter<AppState>| match deprecations.headers_for(name) {
        Some(headers) => routes.layer(middleware::from_fn_with_state(headers, announce_deprecation)),
        None => routes,
    };
    OpenApiRouter::with_openapi(ApiDoc::openapi())
        .merge(health::router())
        .nest("/v1", version("v1", v1::router()))
        .nest("/v2", version("v2", v2::router()))
}

/// The OpenAPI document.
pub fn openapi() -> utoipa::openapi::OpenApi {
    api_routes(&Deprecations::default()).into_openapi()
}

/// The complete router: API routes, `/openapi.json`, `/docs` (Swagger UI,
/// served from the binary, no network needed) and the middleware stack.
pub fn router(state: AppState, config: &Config) -> Router {
    let metrics = state.metrics.clone();
    let (routes, openapi) = api_routes(&config.deprecations).split_for_parts();
    let complete = routes
        .merge(SwaggerUi::new("/docs").url("/openapi.json", openapi))
        .fallback(route_not_found)
        .with_state(state);
    crate::http::apply(complete, metrics, config)
}

async fn route_not_found() -> ApiError {
    ApiError::code(ErrorCode::RouteNotFound)
}
