//! Behaviour every route gets from the middleware stack: request ids,
//! security headers, CORS, compression and version deprecation.

use reqwest::{Method, StatusCode};

use crate::helpers::{header, spawn_app, spawn_with};

#[tokio::test]
async fn a_request_id_is_echoed_or_generated() {
    let app = spawn_app().await;
    let given = app.send(Method::GET, "/healthz", &[("x-request-id", "req-abc-123")], None).await;
    assert_eq!(header(given.headers(), "x-request-id"), Some("req-abc-123"));

    let generated = app.send(Method::GET, "/healthz", &[], None).await;
    let id = header(generated.headers(), "x-request-id").expect("an id");
    assert!(uuid::Uuid::parse_str(id).is_ok(), "{id}");
    // Errors carry it too, so a client can quote it in a bug report.
    let error = app.send(Method::GET, "/nowhere", &[], None).await;
    assert!(header(error.headers(), "x-request-id").is_some());
}

#[tokio::test]
async fn security_headers_are_on_every_response_and_credentials_mean_no_store() {
    let app = spawn_app().await;
    for path in ["/healthz", "/v1/items", "/nowhere"] {
        let response = app.send_anonymous(Method::GET, path, &[], None).await;
        assert_eq!(header(response.headers(), "x-content-type-options"), Some("nosniff"), "{path}");
        assert_eq!(
            header(response.headers(), "content-security-policy"),
            Some("frame-ancestors 'none'"),
            "{path}"
        );
    }
    let authenticated = app.send(Method::GET, "/v1/items", &[], None).await;
    assert_eq!(header(authenticated.headers(), "cache-control"), Some("no-store"));
    let unversioned = app.send(Method::GET, "/healthz", &[], None).await;
    assert_eq!(header(unversioned.headers(), "cache-control"), Some("no-store"));
}

#[tokio::test]
async fn cors_allows_only_the_configured_origins() {
    let app = spawn_with(|s| s.server.cors_allowed_origins = "https://app.example.com".into()).await;
    let preflight = async |origin: &'static str| {
        let headers = [
            ("origin", origin),
            ("access-control-request-method", "POST"),
            ("access-control-request-headers", "content-type"),
        ];
        app.send(Method::OPTIONS, "/v1/items", &headers, None).await
    };
    let allowed = preflight("https://app.example.com").await;
    assert_eq!(allowed.status(), StatusCode::OK);
    assert_eq!(header(allowed.headers(), "access-control-allow-origin"), Some("https://app.example.com"));
    let refused = preflight("https://evil.example.net").await;
    assert_eq!(header(refused.headers(), "access-control-allow-origin"), None);

    let simple = app.send(Method::GET, "/v1/items", &[("origin", "https://app.example.com")], None).await;
    let exposed =
        header(simple.headers(), "access-control-expose-headers").expect("exposed").to_ascii_lowercase();
    assert!(exposed.contains("etag") && exposed.contains("location"), "{exposed}");

    let disabled = spawn_app().await;
    let response =
        disabled.send(Method::GET, "/v1/items", &[("origin", "https://app.example.com")], None).await;
    assert_eq!(header(response.headers(), "access-control-allow-origin"), None);
}

#[tokio::test]
async fn large_responses_are_gzipped_when_the_client_accepts_it() {
    let app = spawn_app().await;
    for n in 0..20 {
        app.items("v1").create_ok(&format!("a reasonably long item name number {n}")).await;
    }
    let gzipped = app.send(Method::GET, "/v1/items?limit=20", &[("accept-encoding", "gzip")], None).await;
    assert_eq!(header(gzipped.headers(), "content-encoding"), Some("gzip"));
    let plain = app.send(Method::GET, "/v1/items?limit=20", &[], None).await;
    assert_eq!(header(plain.headers(), "content-encoding"), None);
}

#[tokio::test]
async fn a_deprecated_version_announces_its_deprecation_sunset_and_migration_guide() {
    let app = spawn_with(|s| {
        s.server.api_deprecations =
            "v1|2026-09-01T00:00:00Z|2027-03-01T00:00:00Z|https://example.com/migrate".into();
    })
    .await;
    for _ in 0..3 {
        app.items("v1").create_ok("Lamp").await;
    }
    let v1 = app.items("v1").list("limit=1").await;
    assert_eq!(header(v1.headers(), "deprecation"), Some("@1788220800"));
    assert_eq!(header(v1.headers(), "sunset"), Some("Mon, 01 Mar 2027 00:00:00 GMT"));
    let links: Vec<&str> = v1.headers().get_all("link").iter().filter_map(|v| v.to_str().ok()).collect();
    assert!(links.iter().any(|l| l.contains("rel=\"next\"")), "pagination link kept: {links:?}");
    assert!(
        links.contains(&"<https://example.com/migrate>; rel=\"deprecation\"; type=\"text/html\""),
        "{links:?}"
    );
    // Errors under the deprecated prefix say it too.
    let missing = app.items("v1").get("0190b1d4-0000-7000-8000-000000000000", &[]).await;
    assert!(header(missing.headers(), "deprecation").is_some());

    let v2 = app.items("v2").list("").await;
    assert_eq!(header(v2.headers(), "deprecation"), None);
    assert_eq!(header(v2.headers(), "sunset"), None);
}
