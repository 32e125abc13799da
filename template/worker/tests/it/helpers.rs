//! The stack under test and the ledger that checks it.
//!
//! [`Stack`] runs an api instance (with its outbox relay) and any number
//! of workers, in process or as real `worker` processes, over one test
//! database and one queue prefix. [`Ledger`] records every 202 a client
//! received and, at the end, checks the database: nothing accepted is
//! lost, nothing is done twice, and nothing unexpected appears.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::AtomicU32;
use std::time::Duration;

use jobs::Topology;
use lapin::options::QueueDeclareOptions;
use lapin::types::FieldTable;
use reqwest::StatusCode;
use reqwest::header::{AUTHORIZATION, HeaderValue};
use serde_json::{Value, json};
use sqlx::PgPool;
use testkit::TestDatabase;
use testkit::app::TestApp;
pub(crate) use testkit::probe::{free_port, total, wait_until};
use tokio::process::{Child, Command};
use tokio::sync::{Mutex, oneshot};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use uuid::Uuid;

/// Short retry delays, so retries finish within a test.
pub(crate) const RETRY_DELAYS: &str = "50ms,100ms";

/// Where the services of a stack are.
#[derive(Debug, Clone)]
pub(crate) struct Endpoints {
    /// Postgres, as the api and workers see it (possibly through a proxy).
    pub database_url: String,
    /// RabbitMQ, as the api and workers see it (possibly through a proxy).
    pub amqp_url: String,
}

/// An api instance and its database, plus the workers started for it.
pub(crate) struct Stack {
    /// The api's address.
    pub api: SocketAddr,
    /// A direct pool to the database (never through a proxy).
    pub db: PgPool,
    /// Queue names of this stack.
    pub topology: Topology,
    /// Where the api and workers connect.
    pub endpoints: Endpoints,
    prefix: String,
    client: reqwest::Client,
    direct_amqp: String,
    // Last: the database outlives every connection to it.
    app: TestApp,
}

impl Stack {
    /// A stack on the shared services.
    pub(crate) async fn start() -> Self {
        Self::start_with(
            |database| Endpoints {
                database_url: database.url(),
                amqp_url: testkit::services::amqp_url().expect("a RabbitMQ for the tests"),
            },
            |_| {},
        )
        .await
    }

    /// A stack whose endpoints `endpoints` chooses (given its database),
    /// with a hook on the api's config.
    pub(crate) async fn start_with(
        endpoints: impl FnOnce(&TestDatabase) -> Endpoints,
        configure: impl FnOnce(&mut api::Config),
    ) -> Self {
        let database = Arc::new(TestDatabase::create(&api::db::MIGRATOR).await.expect("a test database"));
        let endpoints = endpoints(&database);
        let prefix = format!("test-{}", Uuid::now_v7().simple());
        let mut settings = testkit::app::settings_over(&database);
        settings.database.database_url.clone_from(&endpoints.database_url);
        settings.relay.amqp_url.clone_from(&endpoints.amqp_url);
        settings.relay.amqp_queue_prefix.clone_from(&prefix);
        settings.relay.outbox_poll = "100ms".into();
        settings.relay.outbox_confirm_timeout = "2s".into();
        settings.database.db_acquire_timeout = "1s".into();
        settings.access.rate_limit_key = "off".into();
        settings.access.rate_limit_writes = "off".into();
{% if redis %}        settings.redis.redis_url = String::new();
{% endif %}        let app = testkit::app::start_over(database, settings, configure).await;
        let mut headers = reqwest::header::HeaderMap::new();
        headers
            .insert(AUTHORIZATION, HeaderValue::from_str(&format!("Bearer {}", app.key)).expect("a header"));
        let client = reqwest::Client::builder()
            .no_proxy()
            .default_headers(headers)
            .timeout(Duration::from_secs(10))
            .build()
            .expect("a client");
        let direct_amqp = testkit::services::amqp_url().expect("a RabbitMQ for the tests");
        Self {
            api: app.addr,
            db: app.direct.clone(),
            topology: Topology::new(prefix.clone()),
            endpoints,
            prefix,
            client,
            direct_amqp,
            app,
        }
    }

    /// Uses `url` for direct broker inspection (when the stack runs on a
    /// broker of the test's own).
    pub(crate) fn inspect_broker_at(&mut self, url: String) {
        self.direct_amqp = url;
    }

    /// Worker settings for this stack.
    pub(crate) fn worker_cli(&self) -> worker::Cli {
        let mut cli = worker::Cli::defaults();
        cli.host = "127.0.0.1".into();
        cli.port.port = "0".into();
        cli.database.database_url.clone_from(&self.endpoints.database_url);
        cli.amqp_url.clone_from(&self.endpoints.amqp_url);
        cli.amqp_queue_prefix.clone_from(&self.prefix);
        cli.worker_concurrency = "8".into();
        cli.database.db_max_connections = "12".into();
        cli.job_retry_delays = RETRY_DELAYS.into();
        cli.shutdown_grace = "10s".into();
        cli
    }

    /// Starts a worker in this process and waits until it is ready.
    pub(crate) async fn worker(&self, tweak: impl FnOnce(&mut worker::Cli)) -> InProcessWorker {
        let worker = self.spawn_worker(tweak).await;
        worker.wait_ready().await;
        worker
    }

    /// Starts a worker in this process without waiting for it.
    pub(crate) async fn spawn_worker(&self, tweak: impl FnOnce(&mut worker::Cli)) -> InProcessWorker {
        let mut cli = self.worker_cli();
        tweak(&mut cli);
        let config = cli.validate().expect("valid worker settings");
        let built = worker::Worker::build(config).await.expect("building the worker");
        let addr = built.local_addr();
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(built.run_until_stopped(async {
            let _ = stopped.await;
        }));
        InProcessWorker { addr, stop: Some(stop), task: Some(task) }
    }

    /// Starts the `worker` binary as a child process.
    pub(crate) async fn worker_process(&self, tweak: impl FnOnce(&mut worker::Cli)) -> WorkerProcess {
        let mut cli = self.worker_cli();
        cli.port.port = free_port().to_string();
        tweak(&mut cli);
        let child = Command::new(env!("CARGO_BIN_EXE_worker"))
            .env_clear()
            .env("HOST", &cli.host)
            .env("PORT", &cli.port.port)
            .env("DATABASE_URL", &cli.database.database_url)
            .env("AMQP_URL", &cli.amqp_url)
            .env("AMQP_QUEUE_PREFIX", &cli.amqp_queue_prefix)
            .env("WORKER_CONCURRENCY", &cli.worker_concurrency)
            .env("DB_MAX_CONNECTIONS", &cli.database.db_max_connections)
            .env("JOB_RETRY_DELAYS", &cli.job_retry_delays)
            .env("SHUTDOWN_GRACE", &cli.shutdown_grace)
            .env("RUST_LOG", "info")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .expect("starting the worker binary");
        let addr: SocketAddr = format!("127.0.0.1:{}", cli.port.port).parse().expect("an address");
        let mut process = WorkerProcess { addr, child, logs: Arc::new(Mutex::new(String::new())) };
        process.collect_logs();
        wait_ready(addr).await;
        process
    }

    /// The api's HTTP client (it sends the stack's API key).
    pub(crate) fn client(&self) -> &reqwest::Client {
        &self.client
    }

    /// `POST /v1/jobs`.
    pub(crate) async fn submit(&self, body: &Value) -> reqwest::Result<reqwest::Response> {
        self.submit_with(body, &[]).await
    }

    /// `POST /v1/jobs` with extra headers (a `traceparent`, say).
    pub(crate) async fn submit_with(
        &self,
        body: &Value,
        headers: &[(&str, &str)],
    ) -> reqwest::Result<reqwest::Response> {
        let mut request = self.client.post(format!("http://{}/v1/jobs", self.api)).json(body);
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        request.send().await
    }

    /// `GET` an api path.
    pub(crate) async fn get(&self, path: &str) -> reqwest::Response {
        self.client.get(format!("http://{}{path}", self.api)).send().await.expect("the api answers")
    }

    /// The api's `/metrics`.
    pub(crate) async fn api_metrics(&self) -> String {
        self.get("/metrics").await.text().await.expect("metrics")
    }

    /// Messages waiting in a queue of this stack.
    pub(crate) async fn queue_depth(&self, queue: &str) -> u32 {
        let connection =
            jobs::broker::connect(&self.direct_amqp, "test inspection").await.expect("connecting");
        let channel = connection.create_channel().await.expect("a channel");
        let passive = QueueDeclareOptions { passive: true, ..QueueDeclareOptions::default() };
        let queue = channel
            .queue_declare(queue.into(), passive, FieldTable::default())
            .await
            .expect("the queue exists");
        let _ = connection.close(200, "done".into()).await;
        queue.message_count()
    }

    /// Stops the api, then deletes this stack's queues.
    pub(crate) async fn finish(mut self) {
        let _ = self.app.stop().await;
        if let Ok(connection) = jobs::broker::connect(&self.direct_amqp, "test cleanup").await
            && let Ok(channel) = connection.create_channel().await
        {
            let delays: Vec<Duration> =
                RETRY_DELAYS.split(',').map(|d| humantime::parse_duration(d).expect("a delay")).collect();
            let _ = self.topology.delete(&channel, &delays).await;
            let _ = connection.close(200, "done".into()).await;
        }
    }
}

/// A worker running in the test process.
pub(crate) struct InProcessWorker {
    /// Its health port.
    pub addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<anyhow::Result<()>>>,
}

impl InProcessWorker {
    /// Waits until `/readyz` answers 200.
    pub(crate) async fn wait_ready(&self) {
        wait_ready(self.addr).await;
    }

    /// The status `/readyz` answers now.
    pub(crate) async fn readiness(&self) -> StatusCode {
        let client = reqwest::Client::builder().no_proxy().build().expect("a client");
        client.get(format!("http://{}/readyz", self.addr)).send().await.expect("readyz").status()
    }

    /// Its `/metrics`.
    pub(crate) async fn metrics(&self) -> String {
        metrics_of(self.addr).await
    }

    /// Stops it and waits.
    pub(crate) async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            let stopped = tokio::time::timeout(Duration::from_secs(30), task).await;
            stopped.expect("the worker stops in time").expect("the worker task").expect("the worker ran");
        }
    }
}

/// The `worker` binary, running.
pub(crate) struct WorkerProcess {
    /// Its health port.
    pub addr: SocketAddr,
    /// The process.
    pub child: Child,
    /// Everything it printed on stdout so far.
    pub logs: Arc<Mutex<String>>,
}

impl WorkerProcess {
    fn collect_logs(&mut self) {
        use tokio::io::AsyncBufReadExt as _;
        let stdout = self.child.stdout.take().expect("piped stdout");
        let logs = self.logs.clone();
        tokio::spawn(async move {
            let mut lines = tokio::io::BufReader::new(stdout).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                let mut logs = logs.lock().await;
                logs.push_str(&line);
                logs.push('\n');
            }
        });
    }

    /// Its `/metrics`.
    pub(crate) async fn metrics(&self) -> String {
        metrics_of(self.addr).await
    }

    /// Sends a signal (`"KILL"`, `"TERM"`).
    pub(crate) fn signal(&self, signal: &str) {
        let pid = self.child.id().expect("a running process");
        let status =
            std::process::Command::new("kill").arg(format!("-{signal}")).arg(pid.to_string()).status();
        assert!(status.is_ok_and(|s| s.success()), "kill -{signal} {pid}");
    }
}

/// The shared RabbitMQ's URL and its socket address.
pub(crate) async fn shared_broker() -> (String, SocketAddr) {
    let url = testkit::services::amqp_url().expect("a RabbitMQ for the tests");
    let addr = address_of(&url).await;
    (url, addr)
}

/// The broker's address in an AMQP URL.
pub(crate) async fn address_of(url: &str) -> SocketAddr {
    let uri: lapin::uri::AMQPUri = url.parse().expect("an AMQP URL");
    tokio::net::lookup_host((uri.authority.host.as_str(), uri.authority.port))
        .await
        .expect("resolving RabbitMQ")
        .next()
        .expect("an address")
}

/// The AMQP URL `url` with its host and port replaced by `addr` (a proxy),
/// and a query string (such as `heartbeat=1`) added.
pub(crate) fn via(url: &str, addr: SocketAddr, query: &str) -> String {
    let uri: lapin::uri::AMQPUri = url.parse().expect("an AMQP URL");
    let vhost = if uri.vhost == "/" { "%2f".to_owned() } else { uri.vhost.clone() };
    let auth = &uri.authority.userinfo;
    let query = if query.is_empty() { String::new() } else { format!("?{query}") };
    format!("amqp://{}:{}@{addr}/{vhost}{query}", auth.username, auth.password)
}

/// The shared Postgres server's socket address.
pub(crate) async fn shared_postgres() -> SocketAddr {
    use std::str::FromStr as _;
    let url = testkit::services::postgres_url().expect("a Postgres for the tests");
    let options = sqlx::postgres::PgConnectOptions::from_str(&url).expect("a Postgres URL");
    tokio::net::lookup_host((options.get_host(), options.get_port()))
        .await
        .expect("resolving Postgres")
        .next()
        .expect("an address")
}

async fn wait_ready(addr: SocketAddr) {
    let client = reqwest::Client::builder().no_proxy().build().expect("a client");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok(response) = client.get(format!("http://{addr}/readyz")).send().await
            && response.status() == StatusCode::OK
        {
            return;
        }
        assert!(Instant::now() < deadline, "the worker at {addr} never became ready");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn metrics_of(addr: SocketAddr) -> String {
    let client = reqwest::Client::builder().no_proxy().build().expect("a client");
    client.get(format!("http://{addr}/metrics")).send().await.expect("metrics").text().await.expect("text")
}

/// [`total`] as a whole number: every counter and gauge the tests read
/// this way counts things.
pub(crate) fn count(metrics: &str, series: &str) -> i64 {
    #[allow(clippy::cast_possible_truncation, reason = "counts of things are small whole numbers")]
    let count = total(metrics, series).round() as i64;
    count
}

/// A worker's delivery figures for the reports: deliveries the broker
/// flagged as redelivered, and deliveries of already finished jobs.
pub(crate) fn deliveries(metrics: &str) -> String {
    format!(
        "redelivered {}, duplicates acknowledged with no effect {}",
        count(metrics, "jobs_redelivered_total"),
        count(metrics, "jobs_processed_total{kind=\"synthetic\",outcome=\"duplicate\"}")
    )
}

/// The final status a ledger expects of a job.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Expect {
    /// Done, with exactly one effect.
    Succeeded,
    /// Failed permanently, with no effect.
    Failed,
    /// Dead-lettered by the broker, with no effect.
    DeadLettered,
}

impl Expect {
    const fn status(self) -> &'static str {
        match self {
            Self::Succeeded => "succeeded",
            Self::Failed => "failed",
            Self::DeadLettered => "dead_lettered",
        }
    }
}

/// The client's record of every job the api accepted (a 202), checked
/// against the database at the end.
#[derive(Debug, Default)]
pub(crate) struct Ledger {
    accepted: Mutex<HashMap<Uuid, Expect>>,
    refused: Mutex<u32>,
}

/// What the check found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Report {
    /// 202s received.
    pub accepted: usize,
    /// Accepted jobs not in their expected final state.
    pub lost: usize,
    /// Jobs with more than one effect (or an effect they should not have).
    pub duplicated: usize,
    /// Jobs or effects the ledger knows nothing of.
    pub unexpected: usize,
    /// Deliveries beyond the first, summed over all jobs (allowed).
    pub redeliveries: i64,
    /// Submissions that got no 202 (allowed while a fault is on; not in the ledger).
    pub refused: u32,
}

impl Ledger {
    /// Submits a job; records it when the answer is 202.
    pub(crate) async fn submit(&self, stack: &Stack, body: &Value, expect: Expect) -> Option<Uuid> {
        match stack.submit(body).await {
            Ok(response) if response.status() == StatusCode::ACCEPTED => {
                let job: Value = response.json().await.expect("a job");
                let id: Uuid = job["id"].as_str().and_then(|id| id.parse().ok()).expect("a job id");
                self.accepted.lock().await.insert(id, expect);
                Some(id)
            }
            _ => {
                *self.refused.lock().await += 1;
                None
            }
        }
    }

    /// Submits `count` synthetic jobs of `work_ms` each, `pause` apart.
    pub(crate) async fn stream(&self, stack: &Stack, count: usize, work_ms: u64, pause: Duration) {
        for _ in 0..count {
            self.submit(
                stack,
{% raw %}                &json!({"kind": "synthetic", "input": {"work_ms": work_ms}}),{% endraw %}
                Expect::Succeeded,
            )
            .await;
            tokio::time::sleep(pause).await;
        }
    }

    /// Jobs accepted so far.
    pub(crate) async fn accepted(&self) -> usize {
        self.accepted.lock().await.len()
    }

    /// Waits (up to `limit`) until every accepted job reached its expected
    /// state, then checks the database and returns the figures. Panics with
    /// the report when anything was lost, duplicated or unexpected.
    pub(crate) async fn settle(&self, stack: &Stack, what: &str, limit: Duration) -> Report {
        let deadline = Instant::now() + limit;
        let report = loop {
            let report = self.check(&stack.db).await;
            if report.lost == 0 || Instant::now() > deadline {
                break report;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        eprintln!("ledger [{what}]: {report:?}");
        assert_eq!(
            (report.lost, report.duplicated, report.unexpected),
            (0, 0, 0),
            "ledger [{what}]: lost, duplicated, unexpected — {report:?}"
        );
        assert!(report.accepted > 0, "ledger [{what}]: nothing was accepted");
        report
    }

    async fn check(&self, db: &PgPool) -> Report {
        let accepted = self.accepted.lock().await.clone();
        let jobs: Vec<(Uuid, String, i32)> = sqlx::query_as("SELECT id, status, attempts FROM jobs")
            .fetch_all(db)
            .await
            .expect("reading jobs");
        let effects: Vec<(Uuid, i64)> =
            sqlx::query_as("SELECT job_id, count(*) FROM job_effects GROUP BY job_id")
                .fetch_all(db)
                .await
                .expect("reading effects");
        let effects: HashMap<Uuid, i64> = effects.into_iter().collect();
        let known: HashSet<Uuid> = jobs.iter().map(|j| j.0).collect();
        let mut report = Report {
            accepted: accepted.len(),
            lost: 0,
            duplicated: 0,
            unexpected: 0,
            redeliveries: 0,
            refused: *self.refused.lock().await,
        };
        for (id, status, attempts) in &jobs {
            report.redeliveries += i64::from((*attempts - 1).max(0));
            let Some(expect) = accepted.get(id) else {
                report.unexpected += 1;
                continue;
            };
            if status != expect.status() {
                report.lost += 1;
            }
            let wanted = i64::from(*expect == Expect::Succeeded);
            let have = effects.get(id).copied().unwrap_or(0);
            if have > wanted || (status == "succeeded" && have != 1) {
                report.duplicated += 1;
            }
        }
        report.lost += accepted.keys().filter(|id| !known.contains(id)).count();
        report.unexpected += effects.keys().filter(|id| !accepted.contains_key(id)).count();
        report
    }
}

/// A relay failpoint: crash this many times between confirm and commit.
pub(crate) fn relay_crashes(times: u32) -> Arc<AtomicU32> {
    Arc::new(AtomicU32::new(times))
}
