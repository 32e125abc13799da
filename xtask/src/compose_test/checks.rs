//! The end-to-end checks through NGINX's published port, on a project that
//! `docker compose up --wait` has started. Each returns what it measured;
//! any broken promise is an error naming it.
//!
//! Every request carries an API key: the anonymous per-IP limit would
//! count all of them as one client (they all arrive from the network's
//! gateway), and requests with credentials skip NGINX's micro-cache, so
//! each one reaches a replica and shows in the spread.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail, ensure};
use serde_json::Value;

use super::project::{self, Project};
use crate::http::{self, Response};

/// A client of the stack, holding the API key it created.
pub(super) struct Client<'a> {
    project: &'a Project,
    key: String,
}

impl<'a> Client<'a> {
    /// Creates a key the documented way: `docker compose run --rm api keys create`.
    pub(super) fn new(project: &'a Project) -> anyhow::Result<Self> {
        let out = project.output(&[
            "run",
            "--rm",
            "--no-deps",
            "-T",
            "api",
            "keys",
            "create",
            "--name",
            "compose-test",
        ])?;
        let key = out
            .lines()
            .map(str::trim)
            .rfind(|l| !l.is_empty())
            .context("`api keys create` printed no key")?;
        Ok(Self { project, key: key.to_owned() })
    }

    /// One request with the key.
    pub(super) fn send(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: Option<&str>,
    ) -> anyhow::Result<Response> {
        let authorization = format!("Bearer {}", self.key);
        let mut all = vec![("authorization", authorization.as_str())];
        all.extend_from_slice(headers);
        http::exchange(self.project.http, method, path, &all, body)
    }
}

/// The public routes answer, and the internal ones are not routed.
pub(super) fn routes(project: &Project) -> anyhow::Result<()> {
    let expect = |path: &str, status: u16| -> anyhow::Result<()> {
        let got = http::exchange(project.http, "GET", path, &[], None)?.status;
        ensure!(got == status, "GET {path} through NGINX answered {got}, not {status}");
        Ok(())
    };
    expect("/healthz", 200)?;
    expect("/v1/items", 200)?;
    // @template if docs
    expect("/docs/", 200)?;
    // @template endif
    expect("/metrics", 404)?;
    Ok(())
}

/// Waits until a new key is accepted (every replica loads keys within
/// API_KEY_REFRESH), then creates an item and reads and updates it
/// conditionally. Returns the item's path.
pub(super) fn items(client: &Client) -> anyhow::Result<String> {
    let deadline = Instant::now() + Duration::from_secs(10);
    let body = r#"{"name":"Desk lamp","price_cents":1999,"currency":"EUR"}"#;
    let created = loop {
        let response = client.send("POST", "/v1/items", &[], Some(body))?;
        if response.status != 401 || Instant::now() > deadline {
            break response;
        }
        std::thread::sleep(Duration::from_millis(250));
    };
    ensure!(created.status == 201, "POST /v1/items answered {}: {}", created.status, created.body);
    let path = created.header("location").context("201 without Location")?.to_owned();
    let etag = created.header("etag").context("201 without ETag")?.to_owned();
    // Anonymous, as a browser or a CDN would ask: with a key, reads are
    // `no-store` and not conditional.
    let unchanged = http::exchange(client.project.http, "GET", &path, &[("if-none-match", &etag)], None)?;
    ensure!(
        unchanged.status == 304,
        "an anonymous GET with If-None-Match: {etag} answered {}",
        unchanged.status
    );
    let updated = client.send(
        "PUT",
        &path,
        &[("if-match", &etag)],
        Some(r#"{"name":"Floor lamp","price_cents":4999,"currency":"EUR"}"#),
    )?;
    ensure!(updated.status == 200, "PUT with If-Match answered {}: {}", updated.status, updated.body);
    ensure!(
        updated.header("etag") == Some("\"2\""),
        "the PUT's ETag is {:?}, not \"2\"",
        updated.header("etag")
    );
    Ok(path)
}

// @template if worker
/// Submits a job; its path, or `None` when it was not accepted.
pub(super) fn submit(client: &Client, idempotency_key: &str) -> anyhow::Result<Option<String>> {
    let response = client.send(
        "POST",
        "/v1/jobs",
        &[("idempotency-key", idempotency_key)],
        Some(r#"{"kind":"items_report","input":{"currency":"EUR"}}"#),
    )?;
    if response.status != 202 {
        return Ok(None);
    }
    Ok(Some(response.header("location").context("202 without Location")?.to_owned()))
}

/// Jobs submitted one after another, each with its own idempotency key.
#[derive(Default)]
pub(super) struct Submissions {
    /// The jobs answered 202, by path.
    pub accepted: Vec<String>,
    /// Submissions answered otherwise (while Postgres was down, say).
    pub refused: usize,
}

impl Submissions {
    /// Submits one more job.
    pub(super) fn submit(&mut self, client: &Client) {
        let key = format!("compose-test-{}", self.accepted.len() + self.refused);
        // An answer that never came is not an acceptance either.
        match submit(client, &key) {
            Ok(Some(job)) => self.accepted.push(job),
            Ok(None) | Err(_) => self.refused += 1,
        }
    }
}

/// Waits until every job has succeeded; fails on one that failed, or on
/// the ones still unfinished after `within`.
pub(super) fn finished(client: &Client, jobs: &[String], within: Duration) -> anyhow::Result<()> {
    let deadline = Instant::now() + within;
    let mut pending: Vec<&String> = jobs.iter().collect();
    while !pending.is_empty() {
        let mut still = Vec::new();
        for job in pending {
            let response = client.send("GET", job, &[], None);
            let status = response
                .ok()
                .filter(|r| r.status == 200)
                .and_then(|r| serde_json::from_str::<Value>(&r.body).ok())
                .and_then(|v| v.get("status").and_then(Value::as_str).map(str::to_owned));
            match status.as_deref() {
                Some("succeeded") => {}
                Some(done @ ("failed" | "dead_lettered")) => bail!("job {job} ended {done}"),
                _ => still.push(job),
            }
        }
        pending = still;
        if !pending.is_empty() {
            if Instant::now() > deadline {
                bail!(
                    "{} of {} jobs did not finish within {} s: {pending:?}",
                    pending.len(),
                    jobs.len(),
                    within.as_secs()
                );
            }
            std::thread::sleep(Duration::from_millis(500));
        }
    }
    Ok(())
}
// @template endif

/// Sends `count` GETs of `path` tagged with `tag`, then counts them per
/// replica in NGINX's JSON access log.
pub(super) fn spread(
    client: &Client,
    path: &str,
    count: usize,
    tag: &str,
) -> anyhow::Result<BTreeMap<String, usize>> {
    let agent = format!("compose-test-{tag}");
    for _ in 0..count {
        let response = client.send("GET", path, &[("user-agent", &agent)], None)?;
        ensure!(response.status == 200, "GET {path} answered {}", response.status);
        // Sequential requests: least_conn then takes the replicas in turn.
        std::thread::sleep(Duration::from_millis(20));
    }
    let logs = client.project.output(&["logs", "--no-log-prefix", "nginx"])?;
    let mut per_replica = BTreeMap::new();
    for line in logs.lines().filter(|l| l.contains(&agent)) {
        let Ok(entry) = serde_json::from_str::<Value>(line) else { continue };
        let upstream = entry.get("upstream_addr").and_then(Value::as_str).unwrap_or_default();
        // After a retry NGINX lists every replica it tried: the last one answered.
        let answered = upstream.rsplit(", ").next().unwrap_or_default().to_owned();
        *per_replica.entry(answered).or_insert(0) += 1;
    }
    ensure!(
        per_replica.values().sum::<usize>() == count,
        "NGINX logged {} of the {count} {tag} requests: {per_replica:?}",
        per_replica.values().sum::<usize>()
    );
    Ok(per_replica)
}

/// Reloads NGINX the documented way, so it resolves `api` again.
pub(super) fn reload_nginx(project: &Project) -> anyhow::Result<()> {
    let compose: Value = serde_json::from_str(&project.output(&["config", "--format", "json"])?)?;
    let command: Vec<String> = compose
        .pointer("/services/nginx/command")
        .and_then(Value::as_array)
        .context("the nginx service has no command")?
        .iter()
        .filter_map(|w| w.as_str().map(str::to_owned))
        .collect();
    let value_of =
        |flag: &str| command.iter().position(|w| w == flag).and_then(|i| command.get(i + 1)).cloned();
    let mut args = vec!["exec".to_owned(), "-T".to_owned(), "nginx".to_owned(), "nginx".to_owned()];
    for flag in ["-p", "-c"] {
        if let Some(value) = value_of(flag) {
            args.extend([flag.to_owned(), value]);
        }
    }
    args.extend(["-s".to_owned(), "reload".to_owned()]);
    project.run(&args.iter().map(String::as_str).collect::<Vec<_>>())?;
    // The old workers finish; new ones take the new upstream set.
    std::thread::sleep(Duration::from_secs(2));
    Ok(())
}

/// What a load saw.
#[derive(Debug, Default)]
pub(super) struct Load {
    /// Requests sent.
    pub sent: u64,
    /// Requests that did not answer 200.
    pub failed: u64,
}

/// Runs GETs of `path` from 4 clients while `during` runs; returns what
/// they saw. The load starts a second before `during` and ends a few
/// seconds after it, so both edges are covered.
pub(super) fn under_load(
    client: &Client,
    path: &str,
    during: impl FnOnce() -> anyhow::Result<()>,
) -> anyhow::Result<Load> {
    let stop = AtomicBool::new(false);
    let sent = AtomicU64::new(0);
    let failed = AtomicU64::new(0);
    let result = std::thread::scope(|scope| {
        for _ in 0..4 {
            scope.spawn(|| {
                while !stop.load(Ordering::Relaxed) {
                    sent.fetch_add(1, Ordering::Relaxed);
                    if !client.send("GET", path, &[], None).is_ok_and(|r| r.status == 200) {
                        failed.fetch_add(1, Ordering::Relaxed);
                    }
                    // About 40 requests a second in all: under the key's limit.
                    std::thread::sleep(Duration::from_millis(100));
                }
            });
        }
        std::thread::sleep(Duration::from_secs(1));
        let result = during();
        std::thread::sleep(Duration::from_secs(4));
        stop.store(true, Ordering::Relaxed);
        result
    });
    result?;
    Ok(Load { sent: sent.into_inner(), failed: failed.into_inner() })
}

/// Waits until every running api replica answers 200 on /readyz (asked
/// directly, on the Compose network: NGINX does not route it).
pub(super) fn replicas_ready(project: &Project, within: Duration) -> anyhow::Result<Duration> {
    let started = Instant::now();
    let deadline = started + within;
    loop {
        let mut waiting = Vec::new();
        for container in project.containers("api", false)? {
            let ip =
                project::inspect(&container, "{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}")?;
            let addr = format!("{ip}:8080")
                .parse()
                .with_context(|| format!("the address of {container}: {ip:?}"))?;
            if !http::exchange(addr, "GET", "/readyz", &[], None).is_ok_and(|r| r.status == 200) {
                waiting.push(container);
            }
        }
        if waiting.is_empty() {
            return Ok(started.elapsed());
        }
        if Instant::now() > deadline {
            bail!("api replicas {waiting:?} were not ready {} s after Postgres restarted", within.as_secs());
        }
        std::thread::sleep(Duration::from_millis(250));
    }
}

/// Every container runs as a non-root user (its first process, read from
/// the host's /proc), and our own have a read-only root file system.
pub(super) fn users_and_root_fs(project: &Project, own: &[&str]) -> anyhow::Result<Vec<String>> {
    let mut lines = Vec::new();
    for container in project.containers("", false)? {
        let facts = project::inspect(
            &container,
            "{{.Name}} {{.State.Pid}} {{.Config.User}} {{.HostConfig.ReadonlyRootfs}} \
             {{index .Config.Labels \"com.docker.compose.service\"}}",
        )?;
        let words: Vec<&str> = facts.split(' ').collect();
        let [name, pid, user, read_only, service] = words.as_slice() else {
            bail!("docker inspect {container}: unexpected {facts:?}");
        };
        let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
            .with_context(|| format!("reading the first process of {name} from /proc"))?;
        let uid =
            status.lines().find_map(|l| l.strip_prefix("Uid:")).and_then(|u| u.split_whitespace().next());
        ensure!(uid.is_some_and(|u| u != "0"), "{name}: its first process runs as root (uid {uid:?})");
        if own.contains(service) {
            ensure!(*read_only == "true", "{name}: the root file system is writable");
            ensure!(!user.is_empty() && *user != "0" && !user.starts_with("0:"), "{name}: no non-root User");
        }
        lines.push(format!(
            "{} uid {} read-only {read_only}",
            name.trim_start_matches('/'),
            uid.unwrap_or("?")
        ));
    }
    Ok(lines)
}

/// The exit codes of a service's containers after `docker compose stop`.
pub(super) fn exit_codes(project: &Project, service: &str) -> anyhow::Result<Vec<i64>> {
    project
        .containers(service, true)?
        .iter()
        .map(|c| Ok(project::inspect(c, "{{.State.ExitCode}}")?.parse()?))
        .collect()
}
