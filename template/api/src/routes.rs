//! Every route of the service, and the OpenAPI document built from them.
//!
//! Routes are registered through `utoipa-axum`, so a route cannot exist
//! without its OpenAPI description: the document is a by-product of the
//! router, not a second list to keep in sync.

pub mod health;
pub mod v1;
pub mod v2;

use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::http::header;
use axum::middleware;
use axum::routing::get;
use utoipa::OpenApi;
use utoipa_axum::router::OpenApiRouter;

use crate::error::{ApiError, ErrorCode, PROBLEM_JSON};
use crate::http::HttpConfig;
use crate::http::access::{self, Access};
use crate::state::AppState;
use crate::versioning::{Deprecations, announce_deprecation};

/// The document's fixed parts; paths and schemas come from the routes.
#[derive(OpenApi)]
#[openapi(
    info(
        description = "Versioned HTTP API. Errors are RFC 9457 problem+json with a stable `code`."
    ),
    tags(
        (name = "items", description = "The items resource"),
{% if worker %}        (name = "jobs", description = "Asynchronous jobs: 202 Accepted, then poll"),
{% endif %}        (name = "operations", description = "Health, readiness and metrics"),
    )
)]
struct ApiDoc;

/// Every API route, versions nested under their prefix, each version with
/// its deprecation headers when configured and behind the access guard
/// (keys, scopes, limits; absent only when building the document).
fn api_routes(deprecations: &Deprecations, access: Option<&Arc<Access>>) -> OpenApiRouter<AppState> {
    let version = |name: &str, routes: OpenApiRouter<AppState>| {
        let routes = match access {
            Some(access) => routes.layer(middleware::from_fn_with_state(access.clone(), access::guard)),
            None => routes,
        };
        match deprecations.headers_for(name) {
            Some(headers) => routes.layer(middleware::from_fn_with_state(headers, announce_deprecation)),
            None => routes,
        }
    };
    OpenApiRouter::with_openapi(ApiDoc::openapi())
        .merge(health::router())
        .nest("/v1", version("v1", v1::router()))
        .nest("/v2", version("v2", v2::router()))
}

/// The OpenAPI document.
pub fn openapi() -> utoipa::openapi::OpenApi {
    titled(api_routes(&Deprecations::default(), None).into_openapi())
}

fn titled(mut doc: utoipa::openapi::OpenApi) -> utoipa::openapi::OpenApi {
    doc.info.title = format!("{} API", env!("PROJECT_NAME"));
    secured(doc)
}

/// Documents what the access guard does to every versioned operation, in
/// one place rather than on each handler: the bearer scheme (optional for
/// reads, required for writes) and the 401, 403 and 429 answers.
fn secured(mut doc: utoipa::openapi::OpenApi) -> utoipa::openapi::OpenApi {
    use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityRequirement, SecurityScheme};
    use utoipa::openapi::{Content, Ref, ResponseBuilder};

    doc.components
        .get_or_insert_default()
        .add_security_scheme("api_key", SecurityScheme::Http(Http::new(HttpAuthScheme::Bearer)));
    let problem = |description: &str| {
        ResponseBuilder::new()
            .description(description)
            .content(PROBLEM_JSON, Content::new(Some(Ref::from_schema_name("Problem"))))
            .build()
    };
    for (path, item) in &mut doc.paths.paths {
        if !path.starts_with("/v") {
            continue;
        }
        let operations =
            [(&mut item.get, false), (&mut item.post, true), (&mut item.put, true), (&mut item.delete, true)];
        for (operation, write) in operations {
            let Some(operation) = operation else { continue };
            let key = SecurityRequirement::new("api_key", Vec::<String>::new());
            operation.security =
                Some(if write { vec![key] } else { vec![SecurityRequirement::default(), key] });
            let responses = &mut operation.responses.responses;
            responses.insert(
                "401".into(),
                problem("No API key (writes need one), or an unknown or revoked key").into(),
            );
            responses
                .insert("403".into(), problem("The API key lacks the scope this operation needs").into());
            responses.insert(
                "429".into(),
                problem("A rate limit is exhausted; see Retry-After, RateLimit and RateLimit-Policy").into(),
            );
        }
    }
    doc
}

/// The complete router: API routes, `/openapi.json`, the interactive docs
/// and the middleware stack.
pub fn router(state: AppState, http: &HttpConfig, deprecations: &Deprecations) -> Router {
    let metrics = state.metrics.clone();
    let (routes, openapi) = api_routes(deprecations, Some(&state.access)).split_for_parts();
    // Serialised once: the document cannot change while the process runs.
    let document = Bytes::from(serde_json::to_vec(&titled(openapi)).expect("the document serialises"));
    let routes = routes.route(
        "/openapi.json",
        get(move || async move { ([(header::CONTENT_TYPE, "application/json")], document) }),
    );
{% if docs %}    let routes = routes.merge(docs());
{% endif %}    crate::http::apply(routes.fallback(route_not_found).with_state(state), metrics, http)
}

{% if docs %}/// Swagger UI at `/docs/`, reading `/openapi.json`. Its assets are compiled
/// into the binary (the crate's `vendored` feature): no CDN, no download at
/// build time, so the page works offline and behind strict egress rules.
fn docs() -> utoipa_swagger_ui::SwaggerUi {
    utoipa_swagger_ui::SwaggerUi::new("/docs").config(utoipa_swagger_ui::Config::new(["/openapi.json"]))
}
{% endif %}
async fn route_not_found() -> ApiError {
    ApiError::code(ErrorCode::RouteNotFound)
}
