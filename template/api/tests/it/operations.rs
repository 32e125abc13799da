//! What operators and tooling rely on: health, readiness, metrics, the
//! OpenAPI document, the docs page, and the binary's own contract.

use std::process::{Command, Stdio};
use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde_json::Value;

use crate::helpers::{assert_problem, header, sample, spawn_app};

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
    assert!(metrics.contains("db_client_connections_usage{state=\"idle\"}"));
    assert_eq!(
        sample(&metrics, "http_server_active_requests"),
        Some(1.0),
        "only the scrape itself is in flight"
    );
    assert!(metrics.contains("build_info{service=\"api\",version=\""));
    // The classic text format by default (curl, promtool); OpenMetrics for
    // a scraper that asks for it, as Prometheus does.
    assert!(metrics.contains("# TYPE http_server_active_requests gauge") && !metrics.contains("# EOF"));
    let open = app
        .send(
            Method::GET,
            "/metrics",
            &[("accept", "application/openmetrics-text;version=1.0.0,*/*;q=0.1")],
            None,
        )
        .await;
    assert_eq!(
        header(open.headers(), "content-type"),
        Some("application/openmetrics-text; version=1.0.0; charset=utf-8")
    );
    assert!(open.text().await.expect("text").trim_end().ends_with("# EOF"));
}

#[tokio::test]
async fn the_openapi_document_describes_every_route_and_matches_the_snapshot() {
    let app = spawn_app().await;
    #[allow(unused_mut, reason = "changed only when the project has jobs")]
    let mut served = app.openapi().await;
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
{% if worker %}    // Jobs are an optional part of a project: their share of the document
    // has its own snapshot, so the rest is the same with or without them.
    let jobs = split_off_jobs(&mut served);
    insta::assert_json_snapshot!("openapi-jobs", jobs);
{% endif %}    insta::assert_json_snapshot!("openapi", served);
}

{% if worker %}/// Moves the jobs paths, schemas and tag out of `doc` into a document of their own.
fn split_off_jobs(doc: &mut serde_json::Value) -> serde_json::Value {
    let take = |container: &mut serde_json::Value, is_jobs: fn(&str) -> bool| {
        let map = container.as_object_mut().expect("an object");
        let keys: Vec<String> = map.keys().filter(|k| is_jobs(k)).cloned().collect();
        keys.into_iter()
            .map(|k| {
                let v = map.remove(&k).expect("present");
                (k, v)
            })
            .collect::<serde_json::Map<_, _>>()
    };
    let paths = take(&mut doc["paths"], |path| path.starts_with("/v1/jobs"));
    let schemas =
        take(&mut doc["components"]["schemas"], |name| name.starts_with("v1.Job") || name == "JobStatus");
    let tags = doc["tags"].as_array_mut().expect("tags");
    let jobs_tags: Vec<serde_json::Value> = tags.iter().filter(|t| t["name"] == "jobs").cloned().collect();
    tags.retain(|t| t["name"] != "jobs");
    assert!(!paths.is_empty() && !schemas.is_empty() && !jobs_tags.is_empty(), "the jobs part is there");
    serde_json::json!({"paths": paths, "schemas": schemas, "tags": jobs_tags})
}
{% endif %}
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
        s.database.database_url = "postgres://postgres@127.0.0.1:1/nothing".into();
        s.database.db_acquire_timeout = "300ms".into();
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

#[test]
fn bad_key_options_are_refused_before_anything_connects_and_exit_2() {
    let output = api_binary()
        .args(["keys", "create", "--name", "", "--scopes", "items:delete", "--rate", "lots"])
        // Nothing listens here: the refusal must come before any connection.
        .env("DATABASE_URL", "postgres://nobody@127.0.0.1:1/nothing")
        .stdout(Stdio::piped())
        .output()
        .expect("runs");
    assert_eq!(output.status.code(), Some(2));
    assert!(output.stdout.is_empty(), "no key may be printed");
    let stderr = String::from_utf8_lossy(&output.stderr);
    for part in ["--name", "items:delete", "--rate"] {
        assert!(stderr.contains(part), "{part}: {stderr}");
    }

    // Valid options, unreachable database: a failure, logged to stderr, so
    // `KEY=$(api keys create …)` never captures a log line as the key.
    let output = api_binary()
        .args(["keys", "create", "--name", "ci"])
        .env("DATABASE_URL", "postgres://nobody@127.0.0.1:1/nothing")
        .env("DB_ACQUIRE_TIMEOUT", "1s")
        .stdout(Stdio::piped())
        .output()
        .expect("runs");
    assert_eq!(output.status.code(), Some(1));
    assert!(output.stdout.is_empty(), "stdout: {}", String::from_utf8_lossy(&output.stdout));
    assert!(String::from_utf8_lossy(&output.stderr).contains("storing the key"));
}

/// A database name nobody has created yet on the test Postgres, and the
/// admin URL to drop it with afterwards.
fn uncreated_database() -> (String, String, String) {
    let admin = testkit::services::postgres_url().expect("postgres");
    let base = admin.rsplit_once('/').expect("a database in the URL").0.to_owned();
    let name = format!("fresh_{}", uuid::Uuid::now_v7().simple());
    (format!("{base}/{name}"), name, admin)
}

async fn drop_database(admin: &str, name: &str) {
    let admin_pool = sqlx::PgPool::connect(admin).await.expect("admin");
    sqlx::query(sqlx::AssertSqlSafe(format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)")))
        .execute(&admin_pool)
        .await
        .expect("cleanup");
}

#[tokio::test]
async fn migrate_creates_the_database_and_is_idempotent() {
    let (url, name, admin) = uncreated_database();
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
    drop_database(&admin, &name).await;
}

#[tokio::test]
async fn the_binary_migrates_on_start_logs_json_with_request_spans_and_drains_on_sigterm() {
    let (url, name, admin) = uncreated_database();
    let port = std::net::TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr").port();
    let mut child = api_binary()
        .env("DATABASE_URL", &url)
        .env("MIGRATE_ON_START", "true")
        .env("HOST", "127.0.0.1")
        .env("PORT", port.to_string())
        .env("RUST_LOG", "info,tower_http=debug")
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawns");
    let client = reqwest::Client::builder().no_proxy().build().expect("client");
    let base = format!("http://127.0.0.1:{port}");
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while !client.get(format!("{base}/readyz")).send().await.is_ok_and(|r| r.status() == StatusCode::OK) {
        assert!(std::time::Instant::now() < deadline, "the binary never became ready");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // The database did not exist: MIGRATE_ON_START created and migrated it.
    // Writes need a key: `api keys create` prints it, and only it, on stdout.
    let created_key = api_binary()
        .args(["keys", "create", "--name", "binary test", "--scopes", "items:write"])
        .env("DATABASE_URL", &url)
        .stdout(Stdio::piped())
        .output()
        .expect("runs");
    assert!(created_key.status.success(), "{}", String::from_utf8_lossy(&created_key.stderr));
    let key = String::from_utf8(created_key.stdout).expect("utf-8").trim().to_owned();
    assert!(key.starts_with("ak_") && !key.contains(char::is_whitespace), "{key:?}");
    let prefix = key[..11].to_owned();
    let listed = api_binary()
        .args(["keys", "list"])
        .env("DATABASE_URL", &url)
        .stdout(Stdio::piped())
        .output()
        .expect("runs");
    let listing = String::from_utf8(listed.stdout).expect("utf-8");
    assert!(listing.contains(&prefix) && !listing.contains(&key), "{listing}");
    // The server picks the new key up within API_KEY_REFRESH (1 s).
    let create = || {
        client
            .post(format!("{base}/v1/items"))
            .bearer_auth(&key)
            .header("x-request-id", "log-me-123")
            .json(&serde_json::json!({"name": "Lamp", "price_cents": 1, "currency": "EUR"}))
            .send()
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while create().await.expect("sent").status() == StatusCode::UNAUTHORIZED {
        assert!(std::time::Instant::now() < deadline, "the new key was never accepted");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let created = create().await.expect("sent");
    assert_eq!(created.status(), StatusCode::CREATED);

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
    drop_database(&admin, &name).await;

    let mut stdout = String::new();
    std::io::Read::read_to_string(&mut child.stdout.take().expect("stdout"), &mut stdout).expect("logs");
    let events: Vec<Value> =
        stdout.lines().map(|line| serde_json::from_str(line).expect("every log line is JSON")).collect();
    assert!(events.iter().all(|e| e["level"].is_string() && e["timestamp"].is_string()));
    let messages: Vec<&str> = events.iter().filter_map(|e| e["message"].as_str()).collect();
    let position = |needle: &str| messages.iter().position(|m| m.contains(needle));
    let (migrated, serving, draining, stopped) = (
        position("migrations are up to date"),
        position("serving HTTP"),
        position("readiness is now 503"),
        position("stopped"),
    );
    assert!(migrated.is_some() && migrated < serving, "{messages:?}");
    assert!(serving < draining && draining < stopped, "{messages:?}");
    // Events inside a request carry its span: the request id and the route template.
    let in_request = events
        .iter()
        .find(|e| e["span"]["request_id"] == "log-me-123")
        .unwrap_or_else(|| panic!("no log line carries the request's span: {stdout}"));
    assert_eq!(in_request["span"]["http.route"], "/v1/items", "{in_request}");
}

#[test]
fn the_configuration_table_lists_every_setting() {
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
        assert!(doc.contains(&format!("| `{variable}` |")), "docs/configuration.md's table lacks {variable}");
    }
}
