//! API keys, scopes, client addresses, rate limits and the HTTP cache
//! policy, through real instances. These hold with Redis and without it.

use std::time::Duration;

use reqwest::{Method, Response, StatusCode};
use serde_json::json;

use crate::helpers::{TestApp, assert_problem, header, spawn_app, spawn_with};

/// Creates a key in the app's database and waits until the app accepts it.
async fn new_key(app: &TestApp, scopes: &str, rate: Option<&str>) -> String {
    let (_, key) = api::api_keys::create(&app.direct, "access test", scopes, rate).await.expect("a key");
    let auth = format!("Bearer {key}");
    app.wait_until("the app loads the new key", || async {
        app.send(Method::GET, "/v1/items", &[("authorization", &auth)], None).await.status()
            != StatusCode::UNAUTHORIZED
    })
    .await;
    key
}

fn bearer(key: &str) -> String {
    format!("Bearer {key}")
}

fn lamp() -> serde_json::Value {
    json!({"name": "Lamp", "price_cents": 1999, "currency": "EUR"})
}

#[tokio::test]
async fn writes_need_a_key_and_bad_keys_are_401_with_a_challenge() {
    let app = spawn_app().await;
    let anonymous = app.send_anonymous(Method::POST, "/v1/items", &[], Some(&lamp())).await;
    assert_eq!(header(anonymous.headers(), "www-authenticate"), Some("Bearer realm=\"api\""));
    assert_problem(anonymous, StatusCode::UNAUTHORIZED, "unauthorized").await;

    for credentials in ["Bearer ak_00000000_not-a-real-key", "Basic dXNlcjpwYXNz", "Bearer", "ak_x"] {
        let response = app.send(Method::GET, "/v1/items", &[("authorization", credentials)], None).await;
        assert!(
            header(response.headers(), "www-authenticate").is_some_and(|v| v.contains("invalid_token")),
            "{credentials}"
        );
        assert_problem(response, StatusCode::UNAUTHORIZED, "invalid_api_key").await;
    }
    // Nothing was written.
    let count: i64 =
        sqlx::query_scalar("SELECT count(*) FROM items").fetch_one(&app.direct).await.expect("count");
    assert_eq!(count, 0);
}

#[tokio::test]
async fn a_key_without_the_scope_is_403_and_one_with_it_passes() {
    let app = spawn_app().await;
    let reader = new_key(&app, "items:read", None).await;
    let denied =
        app.send(Method::POST, "/v1/items", &[("authorization", &bearer(&reader))], Some(&lamp())).await;
    assert!(
        header(denied.headers(), "www-authenticate").is_some_and(|v| v.contains("scope=\"items:write\""))
    );
    let body = assert_problem(denied, StatusCode::FORBIDDEN, "insufficient_scope").await;
    assert!(body["detail"].as_str().is_some_and(|d| d.contains("items:write")), "{body}");

    let writer = new_key(&app, "items:write", None).await;
    let created = app
        .send(
            Method::POST,
            "/v2/items",
            &[("authorization", &bearer(&writer))],
            Some(&json!({
                "name": "Lamp", "price": {"amount_minor": 1, "currency": "EUR"}
            })),
        )
        .await;
    assert_eq!(created.status(), StatusCode::CREATED);
    // Write does not imply read.
    let read = app.send(Method::GET, "/v1/items", &[("authorization", &bearer(&writer))], None).await;
    assert_problem(read, StatusCode::FORBIDDEN, "insufficient_scope").await;
}

#[tokio::test]
async fn a_revoked_key_is_refused_within_about_a_second() {
    let app = spawn_app().await;
    let key = new_key(&app, api::api_keys::DEFAULT_SCOPES, None).await;
    let prefix = api::api_keys::prefix_of(&key).expect("a prefix").to_owned();
    assert!(api::api_keys::store::revoke(&app.direct, &prefix).await.expect("revoke"));
    let revoked_at = tokio::time::Instant::now();
    app.wait_until("the revocation reaches the app", || async {
        app.send(Method::GET, "/v1/items", &[("authorization", &bearer(&key))], None).await.status()
            == StatusCode::UNAUTHORIZED
    })
    .await;
    // API_KEY_REFRESH is 1 s; allow for a slow machine, not for a missed poll.
    assert!(revoked_at.elapsed() < Duration::from_secs(3), "took {:?}", revoked_at.elapsed());
    // Other keys are untouched.
    assert_eq!(app.items("v1").list("").await.status(), StatusCode::OK);
}

#[tokio::test]
async fn anonymous_reads_are_public_and_keyed_reads_are_not_stored() {
    let app = spawn_app().await;
    let item = app.items("v1").create_ok("Lamp").await;
    let path = format!("/v1/items/{}", item["id"].as_str().expect("id"));

    let public = app.send_anonymous(Method::GET, &path, &[], None).await;
    assert_eq!(public.status(), StatusCode::OK);
    assert_eq!(header(public.headers(), "cache-control"), Some("public, max-age=5"));
    let varies = vary(&public);
    assert!(varies.contains("authorization") && varies.contains("accept-encoding"), "{varies}");
    let etag = header(public.headers(), "etag").expect("an etag").to_owned();

    // A revalidation keeps the same validator and policy.
    let revalidated = app.send_anonymous(Method::GET, &path, &[("if-none-match", &etag)], None).await;
    assert_eq!(revalidated.status(), StatusCode::NOT_MODIFIED);
    assert_eq!(header(revalidated.headers(), "etag"), Some(etag.as_str()));
    assert_eq!(header(revalidated.headers(), "cache-control"), Some("public, max-age=5"));

    let keyed = app.send(Method::GET, &path, &[], None).await;
    assert_eq!(header(keyed.headers(), "cache-control"), Some("no-store"));
    assert!(vary(&keyed).contains("authorization"));
    // Errors are never public.
    let missing =
        app.send_anonymous(Method::GET, "/v1/items/00000000-0000-7000-8000-000000000000", &[], None).await;
    assert_eq!(missing.status(), StatusCode::NOT_FOUND);
    assert_eq!(header(missing.headers(), "cache-control"), None);
}

/// Every `Vary` value, joined and lowercased.
fn vary(response: &Response) -> String {
    let values: Vec<&str> =
        response.headers().get_all("vary").iter().filter_map(|v| v.to_str().ok()).collect();
    values.join(", ").to_ascii_lowercase()
}

/// The entries of a Structured Field list: (policy name, integer parameters).
fn structured_list(response: &Response, name: &str) -> Vec<(String, Vec<(String, i64)>)> {
    let value = header(response.headers(), name).unwrap_or_else(|| panic!("{name} missing"));
    let list: sfv::List = sfv::Parser::new(value)
        .parse()
        .unwrap_or_else(|err| panic!("{name}: {value:?} is not a list: {err}"));
    list.into_iter()
        .map(|entry| {
            let sfv::ListEntry::Item(item) = entry else { panic!("{name}: inner list in {value:?}") };
            let policy =
                item.bare_item.as_string().unwrap_or_else(|| panic!("{name}: {value:?}")).as_str().to_owned();
            let params = item
                .params
                .iter()
                .map(|(k, v)| (k.as_str().to_owned(), v.as_integer().map_or(-1, i64::from)))
                .collect();
            (policy, params)
        })
        .collect()
}

fn param(params: &[(String, i64)], name: &str) -> i64 {
    params.iter().find(|(k, _)| k == name).unwrap_or_else(|| panic!("no {name} in {params:?}")).1
}

#[tokio::test]
async fn limited_responses_carry_structured_rate_limit_fields_and_429_can_be_waited_out() {
    let app = spawn_with(|s| s.access.rate_limit_key = "2/2s".into()).await;
    let ok = app.items("v1").list("").await;
    assert_eq!(ok.status(), StatusCode::OK);
    let policies = structured_list(&ok, "ratelimit-policy");
    assert_eq!(policies.len(), 1);
    assert_eq!(policies[0].0, "key");
    assert_eq!((param(&policies[0].1, "q"), param(&policies[0].1, "w")), (2, 2));
    let state = structured_list(&ok, "ratelimit");
    assert_eq!(param(&state[0].1, "r"), 1);

    let mut limited = None;
    for _ in 0..5 {
        let response = app.items("v1").list("").await;
        assert!(structured_list(&response, "ratelimit").iter().all(|(_, p)| param(p, "r") >= 0));
        if response.status() == StatusCode::TOO_MANY_REQUESTS {
            limited = Some(response);
            break;
        }
    }
    let limited = limited.expect("the third request within the window is limited");
    let retry_after: u64 =
        header(limited.headers(), "retry-after").expect("Retry-After").parse().expect("whole seconds");
    assert!((1..=2).contains(&retry_after), "{retry_after}");
    assert_eq!(param(&structured_list(&limited, "ratelimit")[0].1, "r"), 0);
    assert_problem(limited, StatusCode::TOO_MANY_REQUESTS, "rate_limited").await;

    // A client that waits exactly as told is admitted.
    tokio::time::sleep(Duration::from_secs(retry_after)).await;
    assert_eq!(app.items("v1").list("").await.status(), StatusCode::OK);
}

#[tokio::test]
async fn writes_have_their_own_tighter_limit_and_keys_their_own_rate() {
    let app = spawn_with(|s| s.access.rate_limit_writes = "1/1m".into()).await;
    app.items("v1").create_ok("first").await;
    let second = app.items("v1").create(&lamp()).await;
    let policies = structured_list(&second, "ratelimit-policy");
    assert_eq!(policies.iter().map(|(p, _)| p.as_str()).collect::<Vec<_>>(), ["key", "writes"]);
    assert_problem(second, StatusCode::TOO_MANY_REQUESTS, "rate_limited").await;
    // Reads are still fine.
    assert_eq!(app.items("v1").list("").await.status(), StatusCode::OK);

    // A key created with its own rate gets that rate, not the default.
    let slow = new_key(&app, "items:read", Some("1/1m")).await;
    let auth = bearer(&slow);
    // new_key's probe used the one request.
    let refused = app.send(Method::GET, "/v1/items", &[("authorization", &auth)], None).await;
    assert_eq!(refused.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(param(&structured_list(&refused, "ratelimit-policy")[0].1, "q"), 1);
}

#[tokio::test]
async fn an_under_quota_key_is_never_limited_while_another_is_flooded() {
    let app = spawn_with(|s| s.access.rate_limit_key = "20/1s".into()).await;
    let quiet = new_key(&app, "items:read", None).await;
    let quiet_auth = bearer(&quiet);
    let flood = async {
        let mut limited = 0;
        for _ in 0..200 {
            if app.items("v1").list("").await.status() == StatusCode::TOO_MANY_REQUESTS {
                limited += 1;
            }
        }
        limited
    };
    let steady = async {
        let mut statuses = Vec::new();
        for _ in 0..10 {
            statuses.push(
                app.send(Method::GET, "/v1/items", &[("authorization", &quiet_auth)], None).await.status(),
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        statuses
    };
    let (limited, statuses) = tokio::join!(flood, steady);
    assert!(limited > 0, "the flood was never limited");
    assert!(statuses.iter().all(|s| *s == StatusCode::OK), "{statuses:?}");
}

#[tokio::test]
async fn anonymous_limits_follow_the_client_address_only_behind_a_trusted_proxy() {
    let forwarded = |ip: &'static str| [("x-forwarded-for", ip)];
    // Untrusted peer: X-Forwarded-For is the client's own claim and ignored.
    let app = spawn_with(|s| s.access.rate_limit_ip = "2/1m".into()).await;
    for ip in ["203.0.113.1", "203.0.113.2"] {
        assert_eq!(
            app.send_anonymous(Method::GET, "/v1/items", &forwarded(ip), None).await.status(),
            StatusCode::OK
        );
    }
    let spoofed = app.send_anonymous(Method::GET, "/v1/items", &forwarded("203.0.113.3"), None).await;
    assert_eq!(spoofed.status(), StatusCode::TOO_MANY_REQUESTS, "a forged header bought a fresh quota");

    // Behind a trusted proxy, each client address has its own quota.
    let app = spawn_with(|s| {
        s.access.rate_limit_ip = "2/1m".into();
        s.access.trusted_proxies = "127.0.0.1/32".into();
    })
    .await;
    for _ in 0..2 {
        let response = app.send_anonymous(Method::GET, "/v1/items", &forwarded("203.0.113.1"), None).await;
        assert_eq!(response.status(), StatusCode::OK);
    }
    let third = app.send_anonymous(Method::GET, "/v1/items", &forwarded("203.0.113.1"), None).await;
    assert_eq!(third.status(), StatusCode::TOO_MANY_REQUESTS);
    let other = app.send_anonymous(Method::GET, "/v1/items", &forwarded("203.0.113.2"), None).await;
    assert_eq!(other.status(), StatusCode::OK);
    // A client cannot escape by prepending addresses: the proxy's own entry is last.
    let prepended =
        app.send_anonymous(Method::GET, "/v1/items", &forwarded("198.51.100.9, 203.0.113.1"), None).await;
    assert_eq!(prepended.status(), StatusCode::TOO_MANY_REQUESTS);
}

#[tokio::test]
async fn health_metrics_and_docs_are_never_limited() {
    let app = spawn_with(|s| s.access.rate_limit_ip = "1/1m".into()).await;
    assert_eq!(app.send_anonymous(Method::GET, "/v1/items", &[], None).await.status(), StatusCode::OK);
    let limited = app.send_anonymous(Method::GET, "/v1/items", &[], None).await;
    assert_eq!(limited.status(), StatusCode::TOO_MANY_REQUESTS);
    for _ in 0..5 {
        assert_eq!(app.send_anonymous(Method::GET, "/healthz", &[], None).await.status(), StatusCode::OK);
        assert_eq!(
            app.send_anonymous(Method::GET, "/openapi.json", &[], None).await.status(),
            StatusCode::OK
        );
    }
    let metrics = app.metrics().await;
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("rate_limit_decisions_total{policy=\"ip\",decision=\"limited\"")),
        "{metrics}"
    );
}

#[tokio::test]
async fn without_shared_state_each_replica_admits_its_share_of_the_rate() {
    let first = spawn_with(|s| {
        s.access.rate_limit_key = "4/1m".into();
        s.access.rate_limit_replicas = "2".into();
{% if redis %}        s.redis.redis_url = String::new();
{% endif %}    })
    .await;
    let second = first.replica(|_| {}).await;
    for app in [&first, &second] {
        let statuses: Vec<StatusCode> =
            [app.items("v1").list("").await, app.items("v1").list("").await, app.items("v1").list("").await]
                .iter()
                .map(Response::status)
                .collect();
        assert_eq!(statuses, [StatusCode::OK, StatusCode::OK, StatusCode::TOO_MANY_REQUESTS]);
    }
    assert!(first.metrics().await.contains("rate_limit_backend{backend=\"local\"} 1"));
}
