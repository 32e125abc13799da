//! What operators and tooling rely on: health, readiness, metrics, the
//! OpenAPI document, the docs page, and the binary's own contract.

use std::process::{Command, Stdio};
use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde_json::Value;

use crate::helpers::{assert_problem, sample, spawn_app};

#[tokio::test]
async fn liveness_and_readiness_are_ok_on_a_healthy_instance() {
    let app = spawn_app().await;
    let live = app.healthz().await;
    assert_eq!(live.status(), StatusCode::OK);
    assert_eq!(live.json::<Value>().await.expect("json")["status"], "ok");
    assert_eq!(app.readyz().await.status(), StatusCode::OK);
}

#[tokio::test]
async fn metrics_count_exactly_the_traffic_sent() {
    let app = spawn_app().await;
    let id = app.items("v1").create_ok("Lamp").await["id"].as_str().expect("id").to_owned();
    for _ in 0..7 {
        assert_eq!(app.items("v1").get(&id, &[]).await.status(), StatusCode::OK);
    }
    for _ in 0..3 {
        app.send(Method::GET, "/not/a/route", &[], None).await;
    }
    let metrics = app.metrics().await;
    let count = |route: &str, status: u16, method: &str| {
        sample(
            &metrics,
            &format!(
{% raw %}                "http_server_request_duration_seconds_count{{http_request_method=\"{method}\",http_route=\"{route}\",http_response_status_code=\"{status}\"}}"{% endraw %}
            ),
        )
    };
    assert_eq!(count("/v1/items/{id}", 200, "GET"), Some(7.0), "{metrics}");
    assert_eq!(count("/v1/items", 201, "POST"), Some(1.0));
    // Unknown paths share one label: scanners cannot explode cardinality.
    assert_eq!(count("unmatched", 404, "GET"), Some(3.0));
    assert!(!metrics.contains("/not/a/route"));
    assert_eq!(sample(&metrics, "db_client_connection_max"), Some(10.0));
    assert!(metrics.contains("db_client_connection_count{state=\"idle\"}"));
    assert_eq!(
        sample(&metrics, "http_server_active_requests"),
        Some(1.0),
        "only the scrape itself is in flight"
    );
    assert!(metrics.contains("build_info{version=\""));
    assert!(metrics.trim_end().ends_with("# EOF"));
}

#[tokio::test]
async fn the_openapi_document_describes_every_route_and_matches_the_snapshot() {
    let app = spawn_app().await;
    let served = app.openapi().await;
    assert_eq!(served["openapi"], "3.1.0");
    let paths: Vec<&str> = served["paths"].as_object().expect("paths").keys().map(String::as_str).collect();
    for path in
        ["/healthz", "/readyz", "/metrics", "/v1/items", "/v1/items/{id}", "/v2/items", "/v2/items/{id}"]
    {
        assert!(paths.contains(&path), "{path} missing from {paths:?}");
    }
    let mut operation_ids: Vec<&str> = served["paths"]
        .as_object()
        .expect("paths")
        .values()
        .flat_map(|item| item.as_object().expect("path item").values())
        .filter_map(|op| op["operationId"].as_str())
        .collect();
    let total = operation_ids.len();
    operation_ids.sort_unstable();
    operation_ids.dedup();
    assert_eq!(operation_ids.len(), total, "operation ids are unique");
    assert_eq!(served, serde_json::to_value(api::routes::openapi()).expect("json"));
    insta::assert_json_snapshot!("openapi", served);
}

{% if docs %}#[tokio::test]
async fn the_docs_page_works_offline() {
    let app = spawn_app().await;
    let page = app.send(Method::GET, "/docs/", &[], None).await;
    assert_eq!(page.status(), StatusCode::OK);
    let html = page.text().await.expect("html");
    assert!(html.contains("swagger-ui"), "{html}");
    // Every script and stylesheet comes from this server, none from a CDN.
    let assets: Vec<&str> = html
        .split(['"', '\''])
        .filter(|s| {
            std::path::Path::new(s)
                .extension()
                .is_some_and(|e| e.eq_ignore_ascii_case("js") || e.eq_ignore_ascii_case("css"))
        })
        .collect();
    assert!(!assets.is_empty(), "{html}");
    for asset in assets {
        assert!(!asset.starts_with("http"), "{asset} would need the network");
        let path = format!("/docs/{}", asset.trim_start_matches("./"));
        let response = app.send(Method::GET, &path, &[], None).await;
        assert_eq!(response.status(), StatusCode::OK, "{path}");
    }
    let init =
        app.send(Method::GET, "/docs/swagger-initializer.js", &[], None).await.text().await.expect("js");
    assert!(init.contains("/openapi.json"), "{init}");
}
{% endif %}{% unless docs %}
#[tokio::test]
async fn there_are_no_docs_pages_when_the_option_is_off() {
    let app = spawn_app().await;
    let page = app.send(Method::GET, "/docs/", &[], None).await;
    assert_problem(page, StatusCode::NOT_FOUND, "route_not_found").await;
    assert_eq!(app.openapi().await["openapi"], "3.1.0", "the document is still served");
}
{% endunless %}
#[tokio::test]
async fn readiness_is_a_problem_when_the_database_is_gone() {
    // An instance pointed at a port where nothing listens starts anyway
    // (the pool is lazy) and says it is not ready.
    let app = crate::helpers::spawn_with(|s| {
        s.database_url = "postgres://postgres@127.0.0.1:1/nothing".into();
        s.db_acquire_timeout = "300ms".into();
    })
    .await;
    assert_eq!(app.healthz().await.status(), StatusCode::OK, "liveness touches no dependency");
    assert_problem(app.readyz().await, StatusCode::SERVICE_UNAVAILABLE, "not_ready").await;
}

fn api_binary() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_api"));
    command.env_remove("DATABASE_URL").env("LOG_FORMAT", "json").stdout(Stdio::null()).stderr(Stdio::piped());
    command
}

#[test]
fn the_binary_reports_every_configuration_problem_at_once_and_exits_2() {
    let output = api_binary()
        .env("PORT", "not-a-port")
        .env("DB_ACQUIRE_TIMEOUT", "forever")
        .env("CORS_ALLOWED_ORIGINS", "example.com")
        .output()
        .expect("runs");
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("3 problems"), "{stderr}");
    for name in ["PORT", "DB_ACQUIRE_TIMEOUT", "CORS_ALLOWED_ORIGINS"] {
        assert!(stderr.contains(name), "{name}: {stderr}");
    }
}

#[tokio::test]
async fn migrate_creates_the_database_and_is_idempotent() {
    let admin = testkit::services::postgres_url().expect("postgres");
    let base = admin.rsplit_once('/').expect("a database in the URL").0;
    let name = format!("migrate_{}", uuid::Uuid::now_v7().simple());
    let url = format!("{base}/{name}");
    for _ in 0..2 {
        let status = api_binary().arg("migrate").env("DATABASE_URL", &url).status().expect("runs");
        assert!(status.success());
    }
    let pool = sqlx::PgPool::connect(&url).await.expect("the database exists");
    let tables: i64 =
        sqlx::query_scalar("SELECT count(*) FROM information_schema.tables WHERE table_name = 'items'")
            .fetch_one(&pool)
            .await
            .expect("query");
    assert_eq!(tables, 1);
    pool.close().await;
    let admin_pool = sqlx::PgPool::connect(&admin).await.expect("admin");
    sqlx::query(sqlx::AssertSqlSafe(format!("DROP DATABASE \"{name}\" WITH (FORCE)")))
        .execute(&admin_pool)
        .await
        .expect("cleanup");
}

#[tokio::test]
async fn sigterm_drains_and_exits_zero_logging_json_lines() {
    let database = testkit::TestDatabase::create(&api::db::MIGRATOR).await.expect("db");
    let port = std::net::TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr").port();
    let mut child = api_binary()
        .env("DATABASE_URL", database.url())
        .env("HOST", "127.0.0.1")
        .env("PORT", port.to_string())
        .env("RUST_LOG", "info")
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawns");
    let client = reqwest::Client::builder().no_proxy().build().expect("client");
    let url = format!("http://127.0.0.1:{port}/readyz");
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while !client.get(&url).send().await.is_ok_and(|r| r.status() == StatusCode::OK) {
        assert!(std::time::Instant::now() < deadline, "the binary never became ready");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let killed = Command::new("kill").args(["-TERM", &child.id().to_string()]).status().expect("kill");
    assert!(killed.success());
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break status;
        }
        assert!(std::time::Instant::now() < deadline, "the binary did not exit after SIGTERM");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(status.success(), "exit status {status}");

    let mut stdout = String::new();
    std::io::Read::read_to_string(&mut child.stdout.take().expect("stdout"), &mut stdout).expect("logs");
    let events: Vec<Value> =
        stdout.lines().map(|line| serde_json::from_str(line).expect("every log line is JSON")).collect();
    let messages: Vec<&str> = events.iter().filter_map(|e| e["message"].as_str()).collect();
    let position = |needle: &str| messages.iter().position(|m| m.contains(needle));
    let (serving, draining, stopped) =
        (position("serving HTTP"), position("readiness is now 503"), position("stopped"));
    assert!(serving < draining && draining < stopped && serving.is_some(), "{messages:?}");
    assert!(events.iter().all(|e| e["level"].is_string() && e["timestamp"].is_string()));
}

#[test]
fn the_configuration_doc_lists_every_setting() {
    use clap::CommandFactory;
    let doc = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/configuration.md"))
        .expect("docs/configuration.md");
    let command = api::Cli::command();
    let variables: Vec<String> = command
        .get_arguments()
        .filter_map(|arg| arg.get_env())
        .map(|env| env.to_string_lossy().into_owned())
        .collect();
    assert!(variables.len() >= 15, "{variables:?}");
    for variable in variables {
        assert!(doc.contains(&format!("| `{variable}` |")), "docs/configuration.md lacks {variable}");
    }
}
