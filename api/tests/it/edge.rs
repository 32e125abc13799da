//! End to end through the real edge: NGINX with `infra/nginx/nginx.conf`
//! (rendered as `cargo xtask up` renders it) in front of real `api`
//! processes sharing one database and one Redis.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use clap::Parser as _;
use reqwest::StatusCode;
use serde_json::{Value, json};
use sqlx::PgPool;
use testkit::TestDatabase;
use testkit::edge::{Edge, Upstream};
use tokio::task::JoinSet;

use crate::process::{ApiProcess, client};

/// N replicas of the api behind one edge.
struct Cluster {
    replicas: Vec<ApiProcess>,
    edge: Edge,
    key: String,
    db: PgPool,
    _database: TestDatabase,
}

impl Cluster {
    async fn start(replicas: usize) -> Self {
        Self::start_with(replicas, &[]).await
    }

    async fn start_with(count: usize, extra: &[(&str, String)]) -> Self {
        let database = TestDatabase::create(&api::db::MIGRATOR).await.expect("a test database");
        let db = PgPool::connect_with(database.options()).await.expect("a pool");
        let (_, key) = api::api_keys::create(&db, "edge", api::api_keys::DEFAULT_SCOPES, None)
            .await
            .expect("an API key");
        let mut env = vec![
            ("DATABASE_URL", database.url()),
            // The edge's limits are under test here, not the app's.
            ("RATE_LIMIT_IP", "off".to_owned()),
            ("RATE_LIMIT_KEY", "off".to_owned()),
            ("RATE_LIMIT_WRITES", "off".to_owned()),
            // The app believes the edge's X-Forwarded-For.
            ("TRUSTED_PROXIES", "127.0.0.1/32".to_owned()),
            // Replicas share 2 cores: more threads each would only contend.
            ("TOKIO_WORKER_THREADS", "1".to_owned()),
        ];
        // @template if redis
        env.push(("REDIS_URL", testkit::services::redis_url().expect("Redis")));
        env.push(("REDIS_KEY_PREFIX", database.options().get_database().expect("a name").to_owned()));
        // @template endif
        env.extend(extra.iter().cloned());
        let mut replicas = Vec::new();
        for i in 0..count {
            replicas.push(ApiProcess::start(format!("replica {i}"), &env).await);
        }
        let addrs: Vec<SocketAddr> = replicas.iter().map(|r| r.addr).collect();
        let edge = Edge::start(&addrs).await.expect("the edge");
        Self { replicas, edge, key, db, _database: database }
    }

    fn upstreams(&self) -> Vec<Upstream> {
        self.replicas.iter().map(|r| Upstream::up(r.addr)).collect()
    }

    fn authed(&self, request: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
        request.bearer_auth(&self.key)
    }

    /// Creates an item through the edge and returns its id.
    async fn item(&self, name: &str) -> String {
        let response = self
            .authed(client().post(self.edge.url("/v1/items")))
            .json(&json!({"name": name, "price_cents": 1999, "currency": "EUR"}))
            .send()
            .await
            .expect("an answer");
        assert_eq!(response.status(), StatusCode::CREATED);
        let body: Value = response.json().await.expect("an item");
        body["id"].as_str().expect("an id").to_owned()
    }

    /// The access log entries for requests to `uri`.
    async fn log_of(&self, uri: &str) -> Vec<Value> {
        self.edge.access_log().await.into_iter().filter(|e| e["uri"] == uri).collect()
    }
}

/// Clients submitting jobs during a load run, besides the item writers.
// @template if worker
const JOB_WRITERS: usize = 1;
// @template endif
// @template if not worker
// const JOB_WRITERS: usize = 0;
// @template endif

/// What a load run saw.
#[derive(Default)]
struct Tally {
    reads_ok: usize,
    read_failures: Vec<String>,
    /// Names of the items whose POST was answered 201.
    created: Vec<String>,
    /// Names of the items whose POST failed, with what happened.
    write_failures: Vec<(String, String)>,
    /// Jobs answered 202.
    jobs_accepted: usize,
    /// Job submissions that failed, with what happened.
    job_failures: Vec<String>,
}

/// Readers GET an item with credentials (so every read reaches a replica)
/// and writers POST items with unique names, until `stop` is set.
///
/// Each request opens its own connection to the edge: reloading NGINX
/// closes idle client keep-alive connections, and a request sent on one at
/// that instant fails on the client's side whatever the replicas do (see
/// docs/deployment.md). What is under test is the path behind the edge.
fn load(
    cluster: &Cluster,
    item: &str,
    readers: usize,
    writers: usize,
    stop: &Arc<AtomicBool>,
) -> JoinSet<Tally> {
    let mut tasks = JoinSet::new();
    for reader in 0..readers {
        let (stop, url, key) =
            (stop.clone(), cluster.edge.url(&format!("/v1/items/{item}")), cluster.key.clone());
        tasks.spawn(async move {
            let (client, mut tally) = (fresh_connections(), Tally::default());
            while !stop.load(Ordering::Relaxed) {
                match client.get(&url).bearer_auth(&key).send().await {
                    Ok(r) if r.status() == StatusCode::OK => tally.reads_ok += 1,
                    Ok(r) => tally.read_failures.push(format!("reader {reader}: {}", r.status())),
                    Err(err) => tally.read_failures.push(format!("reader {reader}: {err}")),
                }
            }
            tally
        });
    }
    for writer in 0..writers {
        let (stop, url, key) = (stop.clone(), cluster.edge.url("/v1/items"), cluster.key.clone());
        tasks.spawn(async move {
            let (client, mut tally) = (fresh_connections(), Tally::default());
            let mut n = 0;
            while !stop.load(Ordering::Relaxed) {
                n += 1;
                let name = format!("load-{writer}-{n}");
                let body = json!({"name": name, "price_cents": 100, "currency": "EUR"});
                match client.post(&url).bearer_auth(&key).json(&body).send().await {
                    Ok(r) if r.status() == StatusCode::CREATED => tally.created.push(name),
                    Ok(r) => tally.write_failures.push((name, r.status().to_string())),
                    Err(err) => tally.write_failures.push((name, err.to_string())),
                }
            }
            tally
        });
    }
    // @template if worker
    // And one client submitting jobs (202 Accepted, no Idempotency-Key).
    let (stop, url, key) = (stop.clone(), cluster.edge.url("/v1/jobs"), cluster.key.clone());
    tasks.spawn(async move {
        let (client, mut tally) = (fresh_connections(), Tally::default());
        let body = json!({"kind": "items_report", "input": {"currency": "EUR"}});
        while !stop.load(Ordering::Relaxed) {
            match client.post(&url).bearer_auth(&key).json(&body).send().await {
                Ok(r) if r.status() == StatusCode::ACCEPTED => tally.jobs_accepted += 1,
                Ok(r) => tally.job_failures.push(r.status().to_string()),
                Err(err) => tally.job_failures.push(err.to_string()),
            }
        }
        tally
    });
    // @template endif
    tasks
}

fn fresh_connections() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .pool_max_idle_per_host(0)
        .timeout(Duration::from_secs(30))
        .build()
        .expect("a client")
}

async fn finish(stop: &AtomicBool, mut tasks: JoinSet<Tally>) -> Tally {
    stop.store(true, Ordering::Relaxed);
    let mut total = Tally::default();
    while let Some(tally) = tasks.join_next().await {
        let tally = tally.expect("a load task");
        total.reads_ok += tally.reads_ok;
        total.read_failures.extend(tally.read_failures);
        total.created.extend(tally.created);
        total.write_failures.extend(tally.write_failures);
        total.jobs_accepted += tally.jobs_accepted;
        total.job_failures.extend(tally.job_failures);
    }
    total
}

/// Every item name written: exactly once for each 201, at most once for
/// each failed POST (it may have committed before the failure).
async fn assert_no_duplicates(cluster: &Cluster, tally: &Tally) {
    let rows: Vec<(String, i64)> =
        sqlx::query_as("SELECT name, count(*) FROM items WHERE name LIKE 'load-%' GROUP BY name")
            .fetch_all(&cluster.db)
            .await
            .expect("the items");
    let counts: HashMap<String, i64> = rows.into_iter().collect();
    for name in &tally.created {
        assert_eq!(counts.get(name), Some(&1), "{name} was answered 201 and must exist exactly once");
    }
    for (name, _) in &tally.write_failures {
        assert!(counts.get(name).copied().unwrap_or(0) <= 1, "{name} exists twice: a POST was retried");
    }
    // @template if worker
    // Jobs: one row per 202, plus at most one per failed submission (it may
    // have committed before the failure); a retried POST would add more.
    let (jobs,): (i64,) =
        sqlx::query_as("SELECT count(*) FROM jobs").fetch_one(&cluster.db).await.expect("jobs");
    let jobs = usize::try_from(jobs).expect("a count");
    assert!(
        jobs >= tally.jobs_accepted && jobs <= tally.jobs_accepted + tally.job_failures.len(),
        "{jobs} jobs for {} accepted and {} failed submissions",
        tally.jobs_accepted,
        tally.job_failures.len()
    );
    // @template endif
    // NGINX sent each POST to one replica at most: it moves a POST on only
    // when the connection failed, before anything was sent (connect time `-`).
    for entry in cluster.edge.access_log().await.iter().filter(|e| e["method"] == "POST") {
        let connected = entry["upstream_connect_time"].as_str().unwrap_or_default();
        let sent = connected.split(", ").filter(|t| *t != "-").count();
        assert!(sent <= 1, "a POST reached more than one replica: {entry}");
    }
}

fn requests_per_upstream(log: &[Value]) -> HashMap<String, usize> {
    let mut counts = HashMap::new();
    for entry in log {
        *counts.entry(entry["upstream_addr"].as_str().unwrap_or_default().to_owned()).or_insert(0) += 1;
    }
    counts
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn load_through_the_edge_reaches_every_replica_with_one_request_id() {
    let cluster = Cluster::start(3).await;
    let item = cluster.item("spread").await;
    let uri = format!("/v1/items/{item}");
    let mut requests = JoinSet::new();
    for _ in 0..6 {
        let request = cluster.authed(client().get(cluster.edge.url(&uri)));
        requests.spawn(async move {
            for _ in 0..50 {
                let response = request.try_clone().expect("a GET").send().await.expect("an answer");
                assert_eq!(response.status(), StatusCode::OK);
            }
        });
    }
    while let Some(done) = requests.join_next().await {
        done.expect("a client");
    }
    let counts = requests_per_upstream(&cluster.log_of(&uri).await);
    eprintln!("requests per replica: {counts:?}");
    for replica in &cluster.replicas {
        let served = counts.get(&replica.addr.to_string()).copied().unwrap_or(0);
        assert!(served >= 30, "{} served {served} of 300 requests: {counts:?}", replica.name);
    }

    // The request id: a client's well-formed one is passed on and echoed,
    // a malformed one replaced, a missing one generated; the log has it.
    let ask = |id: Option<&str>| {
        let request = cluster.authed(client().get(cluster.edge.url(&uri)));
        let request = if let Some(id) = id { request.header("x-request-id", id) } else { request };
        async move {
            let response = request.send().await.expect("an answer");
            response.headers()["x-request-id"].to_str().expect("ascii").to_owned()
        }
    };
    assert_eq!(ask(Some("checkout-42.a")).await, "checkout-42.a");
    let replaced = ask(Some("bad id\twith spaces")).await;
    assert_eq!(replaced.len(), 32, "NGINX's own id: {replaced}");
    let generated = ask(None).await;
    assert_eq!(generated.len(), 32, "NGINX's own id: {generated}");
    let ids: Vec<Value> = cluster.log_of(&uri).await.iter().map(|e| e["request_id"].clone()).collect();
    for id in ["checkout-42.a", &replaced, &generated] {
        assert!(ids.contains(&json!(id)), "{id} is not in the access log");
    }
    // Each JSON log line names the replica and times it.
    let entry = cluster.log_of(&uri).await.pop().expect("an entry");
    for field in
        ["upstream_addr", "upstream_connect_time", "upstream_response_time", "request_time", "status"]
    {
        assert!(entry.get(field).is_some(), "{field} missing from {entry}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_killed_under_load_fails_no_get_and_duplicates_no_post() {
    let mut cluster = Cluster::start(3).await;
    let item = cluster.item("hot").await;
    let (readers, writers) = (4, 2);
    let stop = Arc::new(AtomicBool::new(false));
    let tasks = load(&cluster, &item, readers, writers, &stop);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    cluster.replicas[0].kill().await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let tally = finish(&stop, tasks).await;
    eprintln!(
        "reads ok {}, read failures {:?}; created {}, write failures {:?}; jobs accepted {}, failed {:?}",
        tally.reads_ok,
        tally.read_failures,
        tally.created.len(),
        tally.write_failures,
        tally.jobs_accepted,
        tally.job_failures
    );
    assert!(tally.reads_ok > 100 && tally.created.len() > 20, "too little load to mean anything");
    // GETs that met the dead replica were retried on another.
    assert!(tally.read_failures.is_empty(), "{:?}", tally.read_failures);
    // POSTs are never retried: those in flight at the kill may fail, at
    // most one per writer, and none is applied twice.
    let posting = writers + JOB_WRITERS;
    let failed: Vec<&String> =
        tally.write_failures.iter().map(|(_, status)| status).chain(&tally.job_failures).collect();
    assert!(failed.len() <= posting, "{failed:?}");
    for status in failed {
        assert!(status.starts_with("503"), "a failed POST gets the edge's 503: {status}");
    }
    assert_no_duplicates(&cluster, &tally).await;
    // The dead replica was tried, found down and left alone.
    let dead = cluster.replicas[0].addr.to_string();
    let retried = cluster
        .edge
        .access_log()
        .await
        .iter()
        .filter(|e| {
            e["method"] == "GET"
                && e["upstream_addr"].as_str().is_some_and(|u| u.starts_with(&dead) && u.contains(','))
        })
        .count();
    eprintln!("GETs retried away from the killed replica: {retried}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rolling_restart_behind_the_edge_fails_no_request() {
    let mut cluster = Cluster::start(3).await;
    let item = cluster.item("rolling").await;
    let stop = Arc::new(AtomicBool::new(false));
    let tasks = load(&cluster, &item, 3, 2, &stop);
    tokio::time::sleep(Duration::from_millis(500)).await;
    for i in 0..cluster.replicas.len() {
        // Out of the upstream, then drained, restarted, and put back.
        let mut upstreams = cluster.upstreams();
        upstreams[i].down = true;
        cluster.edge.set_upstreams(&upstreams).await.expect("reload without the replica");
        cluster.replicas[i].terminate().await;
        cluster.replicas[i].restart().await;
        cluster.edge.set_upstreams(&cluster.upstreams()).await.expect("reload with the replica");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let tally = finish(&stop, tasks).await;
    eprintln!(
        "rolling restart: reads ok {}, created {}, jobs accepted {}",
        tally.reads_ok,
        tally.created.len(),
        tally.jobs_accepted
    );
    assert!(tally.read_failures.is_empty(), "{:?}", tally.read_failures);
    assert!(tally.write_failures.is_empty(), "{:?}", tally.write_failures);
    assert!(tally.job_failures.is_empty(), "{:?}", tally.job_failures);
    assert!(tally.reads_ok > 100 && tally.created.len() > 20, "too little load to mean anything");
    assert_no_duplicates(&cluster, &tally).await;
    // Every replica is back in service.
    let counts = requests_per_upstream(&cluster.edge.access_log().await);
    for replica in &cluster.replicas {
        assert!(counts.contains_key(&replica.addr.to_string()), "{} never served: {counts:?}", replica.name);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_edge_backstop_answers_429_with_problem_json_before_the_app() {
    let cluster = Cluster::start(1).await;
    // Loopback's own address is exempt (health checks, local load tests);
    // another loopback address is an ordinary client.
    let from = |ip: Ipv4Addr| {
        reqwest::Client::builder()
            .no_proxy()
            .local_address(IpAddr::V4(ip))
            .pool_max_idle_per_host(64)
            .build()
            .expect("a client")
    };
    let burst = |client: reqwest::Client| {
        let url = cluster.edge.url("/v1/items?limit=1");
        async move {
            let mut requests = JoinSet::new();
            for _ in 0..20 {
                let (client, url) = (client.clone(), url.clone());
                requests.spawn(async move {
                    let mut limited = Vec::new();
                    for _ in 0..30 {
                        let response = client.get(&url).send().await.expect("an answer");
                        if response.status() == StatusCode::TOO_MANY_REQUESTS {
                            limited.push(response);
                        } else {
                            assert_eq!(response.status(), StatusCode::OK);
                        }
                    }
                    limited
                });
            }
            let mut limited = Vec::new();
            while let Some(done) = requests.join_next().await {
                limited.extend(done.expect("a client"));
            }
            limited
        }
    };
    let exempt = burst(from(Ipv4Addr::LOCALHOST)).await;
    assert!(exempt.is_empty(), "loopback got {} answers 429", exempt.len());
    let mut limited = burst(from(Ipv4Addr::new(127, 0, 0, 2))).await;
    eprintln!("600 requests at once from 127.0.0.2: {} answered 429", limited.len());
    assert!(
        limited.len() >= 100,
        "the backstop (100 r/s, burst 200) let {} of 600 through",
        600 - limited.len()
    );
    let response = limited.pop().expect("a 429");
    assert_eq!(response.headers()["retry-after"], "1");
    assert!(response.headers().contains_key("x-request-id"));
    let problem =
        crate::helpers::assert_problem(response, StatusCode::TOO_MANY_REQUESTS, "rate_limited").await;
    assert_eq!(problem["status"], 429);
    // NGINX answered them: no replica saw a 429.
    let log = cluster.edge.access_log().await;
    let at_edge = log.iter().filter(|e| e["status"] == 429).collect::<Vec<_>>();
    assert!(at_edge.iter().all(|e| e["upstream_addr"] == ""), "a 429 came from a replica");
}

/// How many GETs of one item the replica answered, from its own metrics.
async fn item_gets(replica: &ApiProcess) -> u64 {
    let metrics = replica.metrics().await;
    metrics
        .lines()
        .filter(|l| {
            l.starts_with("http_server_request_duration_seconds_count{")
                && l.contains("http_request_method=\"GET\"")
                && l.contains("http_route=\"/v1/items/{id}\"")
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_micro_cache_serves_hot_anonymous_gets_and_never_authenticated_ones() {
    let cluster = Cluster::start_with(1, &[("HTTP_CACHE_MAX_AGE", "2s".to_owned())]).await;
    let replica = &cluster.replicas[0];
    let hot = cluster.item("hot").await;
    let url = cluster.edge.url(&format!("/v1/items/{hot}"));
    let cache_status =
        |r: &reqwest::Response| r.headers()["x-cache-status"].to_str().expect("ascii").to_owned();

    let before = item_gets(replica).await;
    let mut statuses = Vec::new();
    for _ in 0..20 {
        let response = client().get(&url).send().await.expect("an answer");
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(response.headers()["cache-control"], "public, max-age=2");
        statuses.push(cache_status(&response));
    }
    assert_eq!(statuses[0], "MISS");
    assert!(statuses[1..].iter().all(|s| s == "HIT"), "{statuses:?}");
    assert_eq!(item_gets(replica).await - before, 1, "19 of 20 anonymous GETs never reached the app");

    // With credentials: the cache is neither read nor filled.
    let before = item_gets(replica).await;
    for _ in 0..5 {
        let response = cluster.authed(client().get(&url)).send().await.expect("an answer");
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(cache_status(&response), "BYPASS");
        assert_eq!(response.headers()["cache-control"], "no-store");
    }
    assert_eq!(item_gets(replica).await - before, 5, "every authenticated GET reached the app");
    let cold = cluster.item("cold").await;
    let cold_url = cluster.edge.url(&format!("/v1/items/{cold}"));
    let authed = cluster.authed(client().get(&cold_url)).send().await.expect("an answer");
    assert_eq!(cache_status(&authed), "BYPASS");
    let anonymous = client().get(&cold_url).send().await.expect("an answer");
    assert_eq!(cache_status(&anonymous), "MISS", "the authenticated answer was not stored");

    // The app's max-age bounds the entry's life (NGINX counts whole
    // seconds, so an entry lives up to max-age + 1 s).
    tokio::time::sleep(Duration::from_millis(3200)).await;
    let response = client().get(&url).send().await.expect("an answer");
    assert_ne!(cache_status(&response), "HIT", "an entry outlived its max-age");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_edge_routes_the_api_only_and_compresses() {
    let cluster = Cluster::start(1).await;
    for path in ["/metrics", "/readyz", "/", "/admin"] {
        let response = client().get(cluster.edge.url(path)).send().await.expect("an answer");
        assert!(response.headers().contains_key("x-request-id"));
        crate::helpers::assert_problem(response, StatusCode::NOT_FOUND, "route_not_found").await;
        assert!(
            cluster.log_of(path).await.iter().all(|e| e["upstream_addr"] == ""),
            "{path} reached a replica"
        );
    }
    let health = client().get(cluster.edge.url("/healthz")).send().await.expect("an answer");
    assert_eq!(health.status(), StatusCode::OK, "the edge's own liveness");
    for path in ["/v1/items", "/v2/items", "/openapi.json"] {
        let response = client().get(cluster.edge.url(path)).send().await.expect("an answer");
        assert_eq!(response.status(), StatusCode::OK, "{path}");
    }
    // The app's own 404s pass through untouched.
    let missing = client().get(cluster.edge.url("/v1/nothing-here")).send().await.expect("an answer");
    crate::helpers::assert_problem(missing, StatusCode::NOT_FOUND, "route_not_found").await;
    assert!(cluster.log_of("/v1/nothing-here").await.iter().all(|e| e["upstream_addr"] != ""));

    // The edge compresses what the app sends plain.
    let spec = client()
        .get(cluster.edge.url("/openapi.json"))
        .header("accept-encoding", "gzip")
        .send()
        .await
        .expect("an answer");
    assert_eq!(spec.headers()["content-encoding"], "gzip");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bodies_over_the_limit_get_413_from_the_edge_and_from_the_app() {
    let config = api::Cli::parse_from(["api"]).settings.validate().expect("the default settings");
    let limit = config.server.http.body_limit_bytes;
    let edge_limit = testkit::edge::body_limit().expect("the edge's body limit");
    assert_eq!(
        usize::try_from(edge_limit).ok(),
        Some(limit),
        "NGINX's client_max_body_size must equal BODY_LIMIT_BYTES"
    );
    let cluster = Cluster::start(1).await;
    // Valid JSON of exactly `size` bytes: trailing whitespace is allowed.
    let body = |size: usize| {
        let mut bytes = br#"{"name":"big","price_cents":1,"currency":"EUR"}"#.to_vec();
        bytes.resize(size, b' ');
        bytes
    };
    let post = |url: String, bytes: Vec<u8>| {
        cluster.authed(client().post(url)).header("content-type", "application/json").body(bytes).send()
    };
    // Over the limit at the edge: NGINX answers, the app never sees it.
    let response = post(cluster.edge.url("/v1/items"), body(limit + 1)).await.expect("an answer");
    crate::helpers::assert_problem(response, StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large").await;
    let log = cluster.log_of("/v1/items").await;
    assert_eq!(log.last().expect("an entry")["upstream_addr"], "", "NGINX answered the 413 itself");
    // The same body straight to a replica (internal traffic): the app answers.
    let direct = post(cluster.replicas[0].url("/v1/items"), body(limit + 1)).await.expect("an answer");
    crate::helpers::assert_problem(direct, StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large").await;
    // At the limit, the edge passes it on and the app judges the content.
    let at_limit = post(cluster.edge.url("/v1/items"), body(limit)).await.expect("an answer");
    assert_eq!(at_limit.status(), StatusCode::CREATED);
    assert_ne!(cluster.log_of("/v1/items").await.last().expect("an entry")["upstream_addr"], "");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_image_healthcheck_probes_the_replica_on_its_port() {
    let mut cluster = Cluster::start(1).await;
    let replica = &mut cluster.replicas[0];
    let healthcheck = |port: u16| {
        std::process::Command::new(env!("CARGO_BIN_EXE_api"))
            .arg("healthcheck")
            .env("PORT", port.to_string())
            .output()
            .expect("api healthcheck")
    };
    let healthy = healthcheck(replica.addr.port());
    assert!(healthy.status.success(), "{}", String::from_utf8_lossy(&healthy.stderr));
    assert!(healthy.stdout.is_empty());
    replica.kill().await;
    let down = healthcheck(replica.addr.port());
    assert_eq!(down.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&down.stderr).starts_with("unhealthy: cannot connect"));
}
