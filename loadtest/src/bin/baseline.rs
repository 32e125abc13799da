//! The baseline every api benchmark is a ratio against: bare axum on the same
//! runtime, answering `GET /json` with a body the size of one item, and
//! nothing else (no middleware, no database). `GET /v1/baseline` answers the
//! same, for runs behind the edge, which routes only versioned paths.
//!
//! With `REDIS_URL` set, `GET /redis` answers the same after exactly one
//! Redis round trip (a `GET`) over one multiplexed connection: the floor for
//! any handler that asks Redis anything.

use axum::Router;
use axum::routing::get;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let port = std::env::var("PORT").unwrap_or_else(|_| "8090".to_owned());
    let body = serde_json::json!({
        "id": "01a22019-4136-7579-879a-c6c4d2a989b3",
        "name": "Desk lamp",
        "description": null,
        "price_cents": 1999,
        "currency": "EUR",
        "version": 1,
        "created_at": "2026-11-28T03:00:55.825575Z",
        "updated_at": "2026-11-28T03:00:55.825575Z"
    });
    let json = {
        let body = body.clone();
        get(move || std::future::ready(axum::Json(body.clone())))
    };
    #[allow(unused_mut, reason = "without the redis option there is nothing to add")]
    let mut app = Router::new().route("/json", json.clone()).route("/v1/baseline", json);
    // @template if redis
    if let Some(url) = std::env::var("REDIS_URL").ok().filter(|url| !url.is_empty()) {
        let redis = redis::aio::ConnectionManager::new(redis::Client::open(url)?).await?;
        app = app.route(
            "/redis",
            get(move || {
                let (mut redis, body) = (redis.clone(), body.clone());
                async move {
                    let found: Result<Option<String>, _> =
                        redis::cmd("GET").arg("baseline:item").query_async(&mut redis).await;
                    found.map(|_| axum::Json(body)).map_err(|_| axum::http::StatusCode::SERVICE_UNAVAILABLE)
                }
            }),
        );
    }
    // @template endif
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port.parse::<u16>().unwrap_or(8090))).await?;
    axum::serve(listener, app).await?;
    Ok(())
}
