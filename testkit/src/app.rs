//! The api under test: [`spawn_app`] and its variants start a real [`App`]
//! on a free port over a database of its own (and, with Redis, a key prefix
//! of its own), and [`TestApp`] is the typed client the tests drive it with.
//! The api's tests and the worker's stack start the api the same way, here.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use crate::{FaultProxy, Mode, TestDatabase};
use api::{App, Config, Settings};
use reqwest::header::{AUTHORIZATION, CONTENT_TYPE, HeaderMap, HeaderValue};
use reqwest::{Method, Response, StatusCode};
use serde_json::{Value, json};
use sqlx::PgPool;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// A running app instance with its own database.
pub struct TestApp {
    /// Where the app listens.
    pub addr: SocketAddr,
    /// A direct pool to the app's database, for arranging and inspecting state.
    pub direct: PgPool,
    /// The app's own pool (to exhaust it on purpose).
    pub app_pool: PgPool,
    /// The proxy between the app and Postgres, when spawned behind one.
    pub proxy: Option<FaultProxy>,
    /// An API key with every scope; `send` and the typed clients use it.
    pub key: String,
    /// The settings the app was built from, for starting replicas.
    pub settings: Settings,
    client: reqwest::Client,
    anonymous: reqwest::Client,
    shutdown: Option<oneshot::Sender<()>>,
    server: Option<JoinHandle<anyhow::Result<()>>>,
    // Dropped last: the database outlives every connection to it.
    database: Arc<TestDatabase>,
}

/// Spawns the app with default settings.
pub async fn spawn_app() -> TestApp {
    spawn_with(|_| {}).await
}

/// Spawns the app after `tweak` adjusts its settings.
pub async fn spawn_with(tweak: impl FnOnce(&mut Settings)) -> TestApp {
    spawn(None, tweak, |_| {}).await
}

/// Spawns the app with a [`FaultProxy`] between it and Postgres.
pub async fn spawn_behind_proxy(tweak: impl FnOnce(&mut Settings)) -> TestApp {
    spawn(Some(Mode::Pass), tweak, |_| {}).await
}

/// Spawns the app behind a [`FaultProxy`] that is already in `mode` when
/// the app starts (to start it while Postgres is unreachable, say).
pub async fn spawn_behind_proxy_in(mode: Mode, tweak: impl FnOnce(&mut Settings)) -> TestApp {
    spawn(Some(mode), tweak, |_| {}).await
}

// @template if redis
/// Spawns the app after `tweak` adjusts its settings and `configure` the
/// validated config (for test hooks that are not settings).
pub async fn spawn_configured(
    tweak: impl FnOnce(&mut Settings),
    configure: impl FnOnce(&mut Config),
) -> TestApp {
    spawn(None, tweak, configure).await
}
// @template endif

/// Limits high enough that tests about something else never meet them.
const UNLIMITED: &str = "1000000/1s";

async fn spawn(
    proxied: Option<Mode>,
    tweak: impl FnOnce(&mut Settings),
    configure: impl FnOnce(&mut Config),
) -> TestApp {
    let database = Arc::new(TestDatabase::create(&api::db::MIGRATOR).await.expect("a test database"));
    let options = database.options();
    let proxy = match proxied {
        Some(mode) => {
            let upstream = tokio::net::lookup_host((options.get_host(), options.get_port()))
                .await
                .expect("resolving Postgres")
                .next()
                .expect("an address for Postgres");
            let proxy = FaultProxy::start(upstream).await.expect("starting the proxy");
            proxy.set_mode(mode);
            Some(proxy)
        }
        None => None,
    };
    let mut settings = settings_over(&database);
    settings.database.database_url = match &proxy {
        Some(proxy) => database.url_via("127.0.0.1", proxy.addr().port()),
        None => database.url(),
    };
    let direct = PgPool::connect_with(database.options()).await.expect("a direct pool");
    let (_, key) =
        api::api_keys::create(&direct, "tests", api::api_keys::DEFAULT_SCOPES, None).await.expect("a key");
    tweak(&mut settings);
    start(settings, configure, database, proxy, direct, key).await
}

/// The settings every test app starts from: loopback on a free port, the
/// database's own URL, limits that never bite, a short drain grace.
pub fn settings_over(database: &TestDatabase) -> Settings {
    let mut settings = Settings::defaults();
    settings.server.host = "127.0.0.1".into();
    settings.server.port.port = "0".into();
    settings.database.database_url = database.url();
    settings.database.db_min_connections = "0".into();
    settings.server.shutdown_grace = "5s".into();
    settings.access.rate_limit_key = UNLIMITED.into();
    settings.access.rate_limit_ip = UNLIMITED.into();
    settings.access.rate_limit_writes = UNLIMITED.into();
    // @template if redis
    settings.redis.redis_url = crate::services::redis_url().expect("a Redis for the tests");
    // Each test database is unique, and so is this app's corner of Redis.
    database
        .options()
        .get_database()
        .expect("a database name")
        .clone_into(&mut settings.redis.redis_key_prefix);
    // @template endif
    // @template if worker
    // No relay: these tests are about HTTP; the worker's tests run the
    // whole path through RabbitMQ.
    settings.relay.amqp_url = String::new();
    // @template endif
    settings
}

/// Starts an app from `settings` over `database` (which it keeps alive),
/// with an API key of every scope, after `configure` adjusts the validated
/// config. The worker's tests start the api this way, relay on.
pub async fn start_over(
    database: Arc<TestDatabase>,
    settings: Settings,
    configure: impl FnOnce(&mut Config),
) -> TestApp {
    let direct = PgPool::connect_with(database.options()).await.expect("a direct pool");
    let (_, key) =
        api::api_keys::create(&direct, "tests", api::api_keys::DEFAULT_SCOPES, None).await.expect("a key");
    start(settings, configure, database, None, direct, key).await
}

async fn start(
    settings: Settings,
    configure: impl FnOnce(&mut Config),
    database: Arc<TestDatabase>,
    proxy: Option<FaultProxy>,
    direct: PgPool,
    key: String,
) -> TestApp {
    let mut config = settings.validate().expect("valid test settings");
    configure(&mut config);
    let app = App::build(config).await.expect("building the app");
    let addr = app.local_addr();
    let app_pool = app.db().clone();
    let (tx, rx) = oneshot::channel::<()>();
    let server = tokio::spawn(app.run_until_stopped(async {
        let _ = rx.await;
    }));
    let mut headers = reqwest::header::HeaderMap::new();
    headers.insert(AUTHORIZATION, HeaderValue::from_str(&format!("Bearer {key}")).expect("a header"));
    TestApp {
        addr,
        direct,
        app_pool,
        proxy,
        key,
        settings,
        client: reqwest::Client::builder().no_proxy().default_headers(headers).build().expect("a client"),
        anonymous: reqwest::Client::builder().no_proxy().build().expect("a client"),
        shutdown: Some(tx),
        server: Some(server),
        database,
    }
}

impl TestApp {
    /// Starts another instance over the same database (and Redis prefix),
    /// as a second replica behind a load balancer would be.
    pub async fn replica(&self, tweak: impl FnOnce(&mut Settings)) -> TestApp {
        let mut settings = self.settings.clone();
        tweak(&mut settings);
        let direct = PgPool::connect_with(self.database.options()).await.expect("a direct pool");
        start(settings, |_| {}, self.database.clone(), None, direct, self.key.clone()).await
    }

    // @template if redis
    /// Starts another instance like [`Self::replica`], with a config hook.
    pub async fn replica_configured(&self, configure: impl FnOnce(&mut Config)) -> TestApp {
        let direct = PgPool::connect_with(self.database.options()).await.expect("a direct pool");
        start(self.settings.clone(), configure, self.database.clone(), None, direct, self.key.clone()).await
    }
    // @template endif

    /// The absolute URL of `path`.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// Sends any request with the app's API key (a request's own
    /// `Authorization` wins); the typed methods below build on this.
    pub async fn send(
        &self,
        method: Method,
        path: &str,
        headers: &[(&str, &str)],
        body: Option<&Value>,
    ) -> Response {
        self.send_with(&self.client, method, path, headers, body).await
    }

    /// Sends any request without credentials.
    pub async fn send_anonymous(
        &self,
        method: Method,
        path: &str,
        headers: &[(&str, &str)],
        body: Option<&Value>,
    ) -> Response {
        self.send_with(&self.anonymous, method, path, headers, body).await
    }

    async fn send_with(
        &self,
        client: &reqwest::Client,
        method: Method,
        path: &str,
        headers: &[(&str, &str)],
        body: Option<&Value>,
    ) -> Response {
        let mut request = client.request(method, self.url(path));
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        if let Some(body) = body {
            request = request.json(body);
        }
        request.send().await.expect("the request reaches the app")
    }

    /// The underlying HTTP client (it sends the app's key), for requests
    /// the typed methods cannot make.
    pub fn client_raw(&self) -> &reqwest::Client {
        &self.client
    }

    /// The items resource of one version (`"v1"` or `"v2"`).
    pub fn items(&self, version: &'static str) -> Items<'_> {
        Items { app: self, version }
    }

    /// `GET /healthz`.
    pub async fn healthz(&self) -> Response {
        self.send(Method::GET, "/healthz", &[], None).await
    }

    /// `GET /readyz`.
    pub async fn readyz(&self) -> Response {
        self.send(Method::GET, "/readyz", &[], None).await
    }

    /// `GET /metrics`, as text.
    pub async fn metrics(&self) -> String {
        let response = self.send(Method::GET, "/metrics", &[], None).await;
        assert_eq!(response.status(), StatusCode::OK);
        response.text().await.expect("metrics text")
    }

    // @template if redis
    /// Item cache hits so far, from `/metrics`.
    pub async fn cache_hits(&self) -> f64 {
        crate::probe::sample(&self.metrics().await, "cache_requests_total{cache=\"items\",result=\"hit\"}")
            .unwrap_or(0.0)
    }
    // @template endif

    /// `GET /openapi.json`.
    pub async fn openapi(&self) -> Value {
        let response = self.send(Method::GET, "/openapi.json", &[], None).await;
        assert_eq!(response.status(), StatusCode::OK);
        response.json().await.expect("an OpenAPI document")
    }

    /// Triggers shutdown and waits for the server task to end.
    pub async fn stop(&mut self) -> anyhow::Result<()> {
        self.begin_shutdown();
        let server = self.server.take().expect("stopped once");
        tokio::time::timeout(Duration::from_secs(15), server).await.expect("the app stops in time")?
    }

    /// Triggers shutdown without waiting.
    pub fn begin_shutdown(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }

    /// Waits (up to 15 s) until `check` holds.
    pub async fn wait_until<F, Fut>(&self, what: &str, check: F)
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = bool>,
    {
        crate::probe::wait_until(what, Duration::from_secs(15), check).await;
    }
}

/// The typed client for `/{version}/items`.
pub struct Items<'a> {
    app: &'a TestApp,
    version: &'static str,
}

impl Items<'_> {
    fn path(&self, suffix: &str) -> String {
        format!("/{}/items{suffix}", self.version)
    }

    /// `POST /items`.
    pub async fn create(&self, body: &Value) -> Response {
        self.app.send(Method::POST, &self.path(""), &[], Some(body)).await
    }

    /// `GET /items?…`.
    pub async fn list(&self, query: &str) -> Response {
        self.app.send(Method::GET, &self.path(&format!("?{query}")), &[], None).await
    }

    /// `GET /items/{id}` with optional extra headers.
    pub async fn get(&self, id: &str, headers: &[(&str, &str)]) -> Response {
        self.app.send(Method::GET, &self.path(&format!("/{id}")), headers, None).await
    }

    /// `PUT /items/{id}` with optional `If-Match`.
    pub async fn update(&self, id: &str, if_match: Option<&str>, body: &Value) -> Response {
        let headers: Vec<(&str, &str)> = if_match.map(|tag| ("if-match", tag)).into_iter().collect();
        self.app.send(Method::PUT, &self.path(&format!("/{id}")), &headers, Some(body)).await
    }

    /// `DELETE /items/{id}` with optional `If-Match`.
    pub async fn delete(&self, id: &str, if_match: Option<&str>) -> Response {
        let headers: Vec<(&str, &str)> = if_match.map(|tag| ("if-match", tag)).into_iter().collect();
        self.app.send(Method::DELETE, &self.path(&format!("/{id}")), &headers, None).await
    }

    /// Creates a valid item and returns its body.
    pub async fn create_ok(&self, name: &str) -> Value {
        let body = match self.version {
            "v1" => json!({"name": name, "price_cents": 1999, "currency": "EUR"}),
            _ => json!({"name": name, "price": {"amount_minor": 1999, "currency": "EUR"}}),
        };
        let response = self.create(&body).await;
        assert_eq!(response.status(), StatusCode::CREATED);
        response.json().await.expect("an item")
    }
}

/// Asserts a problem+json response with `status` and `code`, and returns its body.
pub async fn assert_problem(response: Response, status: StatusCode, code: &str) -> Value {
    assert_eq!(response.status(), status, "status of {}", response.url());
    assert_eq!(
        response.headers().get(CONTENT_TYPE).and_then(|v| v.to_str().ok()),
        Some("application/problem+json"),
        "content type of a {status} from {}",
        response.url()
    );
    let body: Value = response.json().await.expect("a JSON problem");
    assert_eq!(body["code"], code, "{body}");
    assert_eq!(body["status"], status.as_u16(), "{body}");
    assert_eq!(body["type"], "about:blank");
    assert!(body["title"].is_string() && body["detail"].is_string(), "{body}");
    body
}

/// A header as text.
pub fn header<'h>(headers: &'h HeaderMap, name: &str) -> Option<&'h str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}
