//! `cargo xtask bench`: the api's throughput and latency as ratios against
//! bare axum (`loadtest`'s `baseline`), all measured in the same run with
//! wrk, alternating between targets so that machine noise hits all alike.
//! The api runs several times over: with the Redis cache, with the cache
//! off, and without rate limits, so the cache's gain and the limiter's cost
//! come out of one run. Also reports the release binary's size and the api's
//! resident memory.
//!
//! Numbers from a noisy shared machine are only comparable within a run:
//! read the ratios, not the absolute requests per second.

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{Context, bail, ensure};

use crate::http::free_port;
use crate::tools::{self, Source, Tool};
use crate::{cmd, http};

mod edge;

/// Options of `bench`.
#[derive(clap::Args)]
pub(crate) struct Args {
    /// Rounds over every target; the medians are reported.
    #[arg(long, default_value_t = 3)]
    rounds: usize,
    /// Seconds per wrk run.
    #[arg(long, default_value_t = 10)]
    seconds: u32,
    /// Concurrent connections.
    #[arg(long, default_value_t = 64)]
    connections: u32,
    /// Postgres for the api under test; the database is created if missing.
    #[arg(
        long,
        env = "BENCH_DATABASE_URL",
        default_value = concat!("postgres://postgres@127.0.0.1:5432/", env!("PROJECT_NAME"), "-bench")
    )]
    database_url: String,
{% if redis %}    /// Redis for the api under test (keys go under their own prefix).
    #[arg(long, env = "BENCH_REDIS_URL", default_value = "redis://127.0.0.1:6379")]
    redis_url: String,
{% endif %}    /// Measure telemetry's cost instead: the api with no span layer
    /// (`OTEL_SDK_DISABLED`), with spans recorded but not exported (the
    /// default), and exporting every span over OTLP/gRPC to a local sink.
    #[arg(long)]
    telemetry: bool,
    /// Measure the edge instead: requests per second through NGINX
    /// (`infra/nginx`) with 1, 2 and 3 api replicas, against bare axum with
    /// the same replica counts behind the same NGINX.
    #[arg(long)]
    edge: bool,
{% if worker %}    /// Benchmark the job path instead: POST /v1/jobs 202s against raw lapin
    /// publish-with-confirm, the worker's jobs per second, and
    /// submit-to-done latency (`worker/tests/it/bench.rs`, in release).
    #[arg(long)]
    jobs: bool,
{% endif %}}

{% if worker %}/// The job path's benchmark: an ignored test of the worker's, in release,
/// against the test services (`DATABASE_URL`, `AMQP_URL`, or their defaults).
fn jobs() -> anyhow::Result<()> {
    let database_url = std::env::var("DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".to_owned());
    let amqp_url =
        std::env::var("AMQP_URL").unwrap_or_else(|_| "amqp://guest:guest@127.0.0.1:5672/%2f".to_owned());
    cmd::run(
        cmd::cargo()
            .args(["test", "--release", "-p", "worker", "--test", "it", "--", "--ignored", "--nocapture"])
            .arg("bench::")
            .env("DATABASE_URL", database_url)
            .env("AMQP_URL", amqp_url),
    )
}
{% endif %}
/// One wrk run's figures.
struct Run {
    requests_per_second: f64,
    p99_ms: f64,
    mean_ms: f64,
}

/// Kills a child process when dropped, so a failed bench leaves nothing running.
struct Guard(Child);

impl Drop for Guard {
    fn drop(&mut self) {
        let _ = Command::new("kill").args(["-TERM", &self.0.id().to_string()]).status();
        let _ = self.0.wait();
    }
}

/// An api instance under test, with the settings that make it differ.
struct Instance {
    name: &'static str,
    port: u16,
    process: Guard,
}

/// Limits so high that wrk's single client address is never limited: the
/// limiter does all its work, and never answers 429.
const NEVER_LIMITED: &str = "1000000/1s";

fn start_api(
    binary: &Path,
    args: &Args,
    name: &'static str,
    env: &[(&str, &str)],
) -> anyhow::Result<Instance> {
    let port = free_port()?;
    let mut command = Command::new(binary);
    command
        .env("DATABASE_URL", &args.database_url)
        .env("HOST", "127.0.0.1")
        .env("PORT", port.to_string())
        .env("RUST_LOG", "warn")
        .env("RATE_LIMIT_IP", NEVER_LIMITED)
        .stdout(Stdio::null());
{% if redis %}    command
        .env("REDIS_URL", &args.redis_url)
        .env("REDIS_KEY_PREFIX", concat!(env!("PROJECT_NAME"), "-bench"));
{% endif %}    command.envs(env.iter().copied());
    let process = Guard(command.spawn().with_context(|| format!("starting the api ({name})"))?);
    wait_ready(port, "/readyz")?;
    Ok(Instance { name, port, process })
}

/// Starts `loadtest`'s OTLP sink; it prints its endpoint first.
fn start_sink(target: &Path) -> anyhow::Result<(Guard, String)> {
    let mut child = Command::new(target.join("release/otlp-sink"))
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .context("starting the OTLP sink")?;
    let stdout = child.stdout.take().context("the sink's stdout")?;
    let mut line = String::new();
    std::io::BufRead::read_line(&mut std::io::BufReader::new(stdout), &mut line)?;
    Ok((Guard(child), line.trim().to_owned()))
}

/// Telemetry's cost: the same GET with no span layer, and exporting every
/// span. At saturation, 1/throughput is one request's machine time.
fn report_telemetry(off: (f64, f64, f64), exported: (f64, f64, f64)) {
    println!(
        "  telemetry overhead, exported against OTEL_SDK_DISABLED: {:.1} µs of machine time per request \
         ({:.0} vs {:.0} req/s, ratio {:.3}), p99 {:.2} vs {:.2} ms",
        (1.0 / exported.0 - 1.0 / off.0) * 1e6,
        exported.0,
        off.0,
        exported.0 / off.0,
        exported.1,
        off.1
    );
}

/// The api instances to compare: telemetry's three settings, or the cache
/// and limiter variants.
fn instances(api_binary: &Path, args: &Args, sink: Option<&str>) -> anyhow::Result<Vec<Instance>> {
    Ok(if let Some(endpoint) = sink {
        vec![
            start_api(api_binary, args, "api, OTEL_SDK_DISABLED", &[("OTEL_SDK_DISABLED", "true")])?,
            start_api(api_binary, args, "api, spans not exported", &[])?,
            start_api(
                api_binary,
                args,
                "api, spans exported (OTLP/gRPC)",
                &[("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint), ("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc")],
            )?,
        ]
    } else {
        vec![
{% if redis %}            start_api(api_binary, args, "api, Redis cache", &[])?,
            start_api(api_binary, args, "api, cache off", &[("CACHE_TTL", "0s")])?,
            start_api(api_binary, args, "api, Redis cache, no limits", &[("RATE_LIMIT_IP", "off")])?,
{% endif %}{% unless redis %}            start_api(api_binary, args, "api", &[])?,
            start_api(api_binary, args, "api, no limits", &[("RATE_LIMIT_IP", "off")])?,
{% endunless %}        ]
    })
}

/// Runs the benchmark.
pub(crate) fn run(args: &Args) -> anyhow::Result<()> {
{% if worker %}    if args.jobs {
        return jobs();
    }
{% endif %}    tools::ensure(&[Tool { binary: "wrk", source: Source::Apt("wrk") }])?;
    cmd::run(cmd::cargo().args(["build", "--release", "--quiet", "-p", "api", "-p", "loadtest"]))?;
    if args.edge {
        return edge::run(args);
    }
    let target = cmd::target_dir();
    // The OTLP sink the exporting instance sends to.
    let sink = if args.telemetry { Some(start_sink(&target)?) } else { None };
    let api_binary = target.join("release/api");
    let key = api_key(&api_binary, args)?;

    let instances = instances(&api_binary, args, sink.as_ref().map(|(_, endpoint)| endpoint.as_str()))?;
    let baseline_port = free_port()?;
    let _baseline = Guard(
        Command::new(target.join("release/baseline"))
            .env("PORT", baseline_port.to_string())
            .stdout(Stdio::null())
            .spawn()
            .context("starting the baseline")?,
    );
    wait_ready(baseline_port, "/json")?;

    let id = create_item(instances[0].port, &key)?;
    let idle_rss = rss_kib(instances[0].process.0.id())?;

    let mut targets: Vec<(&str, String)> =
        instances.iter().map(|i| (i.name, format!("http://127.0.0.1:{}/v1/items/{id}", i.port))).collect();
    targets.push(("bare axum", format!("http://127.0.0.1:{baseline_port}/json")));
    let mut runs: Vec<Vec<Run>> = targets.iter().map(|_| Vec::new()).collect();
    for round in 1..=args.rounds {
        let mut line = format!("round {round}:");
        for ((name, url), runs) in targets.iter().zip(&mut runs) {
            let run = wrk(url, args)?;
            let _ = write!(line, "  {name} {:.0} req/s (p99 {:.2} ms)", run.requests_per_second, run.p99_ms);
            runs.push(run);
        }
        eprintln!("{line}");
    }
    let loaded_rss = rss_kib(instances[0].process.0.id())?;
    let size = std::fs::metadata(&api_binary)?.len();
    println!(
{% raw %}        "GET /v1/items/{{id}} (anonymous, limited by the ip policy, never refused) against GET /json on bare axum; \{% endraw %}
         wrk -t2 -c{} -d{}s, {} rounds alternating, medians",
        args.connections, args.seconds, args.rounds
    );
    let baseline =
        median(runs.last().map(|r| r.iter().map(|r| r.requests_per_second).collect()).unwrap_or_default());
    let medians: Vec<(f64, f64, f64)> = runs
        .iter()
        .map(|r| {
            (
                median(r.iter().map(|r| r.requests_per_second).collect()),
                median(r.iter().map(|r| r.p99_ms).collect()),
                median(r.iter().map(|r| r.mean_ms).collect()),
            )
        })
        .collect();
    for ((name, _), (rps, p99, mean)) in targets.iter().zip(&medians) {
        println!(
            "  {name:<30} {rps:>9.0} req/s   mean {mean:>6.2} ms   p99 {p99:>7.2} ms   ratio to bare axum {:.3}",
            rps / baseline
        );
    }
    if sink.is_some() {
        report_telemetry(medians[0], medians[2]);
        return Ok(());
    }
    // The limiter's cost: the same cached GET with and without it. At
    // saturation, 1/throughput is the machine time one request takes.
    let (limited, unlimited) = (medians[0].0, medians[instances.len() - 1].0);
    println!(
        "  limiter overhead: {:.1} µs of machine time per request ({:.0} vs {:.0} req/s), \
         mean latency {:+.2} ms at {} connections",
        (1.0 / limited - 1.0 / unlimited) * 1e6,
        limited,
        unlimited,
        medians[0].2 - medians[instances.len() - 1].2,
        args.connections
    );
    println!("  api RSS: idle {idle_rss} KiB, after load {loaded_rss} KiB");
    println!("  api release binary: {} KiB", size / 1024);
    Ok(())
}

/// Migrates the bench database and creates an API key there.
fn api_key(api_binary: &Path, args: &Args) -> anyhow::Result<String> {
    cmd::run(Command::new(api_binary).arg("migrate").env("DATABASE_URL", &args.database_url))?;
    let key = Command::new(api_binary)
        .args(["keys", "create", "--name", "bench"])
        .env("DATABASE_URL", &args.database_url)
        .stderr(Stdio::null())
        .output()
        .context("creating an API key")?;
    ensure!(key.status.success(), "api keys create failed");
    Ok(String::from_utf8(key.stdout)?.trim().to_owned())
}

/// Creates the item every GET asks for; returns its id.
fn create_item(port: u16, key: &str) -> anyhow::Result<String> {
    let created = http::exchange(
        SocketAddr::from(([127, 0, 0, 1], port)),
        "POST",
        "/v1/items",
        &[("authorization", &format!("Bearer {key}"))],
        Some(r#"{"name":"Desk lamp","price_cents":1999,"currency":"EUR"}"#),
    )?;
    let (status, created) = (created.status, created.body);
    ensure!(status == 201, "creating the benchmark item answered {status}: {created}");
    let id = created.split("\"id\":\"").nth(1).and_then(|s| s.split('"').next()).context("the item id")?;
    Ok(id.to_owned())
}

fn wrk(url: &str, args: &Args) -> anyhow::Result<Run> {
    wrk_with(url, args, &[])
}

fn wrk_with(url: &str, args: &Args, headers: &[String]) -> anyhow::Result<Run> {
    let output = Command::new("wrk")
        .args(["-t2", &format!("-c{}", args.connections), &format!("-d{}s", args.seconds), "--latency"])
        .args(headers.iter().flat_map(|h| ["-H", h.as_str()]))
        .arg(url)
        .output()
        .context("running wrk")?;
    let text = String::from_utf8_lossy(&output.stdout);
    ensure!(output.status.success(), "wrk failed: {text}");
    ensure!(!text.contains("Non-2xx") && !text.contains("Socket errors"), "errors under load:\n{text}");
    let mean_ms = text
        .lines()
        .find_map(|l| l.trim().strip_prefix("Latency"))
        .and_then(|rest| rest.split_whitespace().next())
        .context("wrk printed no mean latency")?;
    let requests_per_second = text
        .lines()
        .find_map(|l| l.strip_prefix("Requests/sec:"))
        .and_then(|v| v.trim().parse().ok())
        .context("wrk printed no Requests/sec")?;
    let p99 = text
        .lines()
        .find_map(|l| l.trim().strip_prefix("99%"))
        .map(str::trim)
        .context("wrk printed no 99th percentile")?;
    Ok(Run { requests_per_second, p99_ms: milliseconds(p99)?, mean_ms: milliseconds(mean_ms)? })
}

/// wrk's latency units: `us`, `ms`, `s`.
fn milliseconds(value: &str) -> anyhow::Result<f64> {
    let (number, scale) = if let Some(n) = value.strip_suffix("us") {
        (n, 0.001)
    } else if let Some(n) = value.strip_suffix("ms") {
        (n, 1.0)
    } else if let Some(n) = value.strip_suffix('s') {
        (n, 1000.0)
    } else {
        bail!("unknown latency unit in {value:?}")
    };
    Ok(number.parse::<f64>()? * scale)
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    let n = values.len();
    match n {
        0 => f64::NAN,
        _ if n % 2 == 1 => values[n / 2],
        _ => f64::midpoint(values[n / 2 - 1], values[n / 2]),
    }
}

fn wait_ready(port: u16, path: &str) -> anyhow::Result<()> {
    http::wait_ok(SocketAddr::from(([127, 0, 0, 1], port)), path, Duration::from_secs(30))
}

/// Resident set size of a process, from /proc.
fn rss_kib(pid: u32) -> anyhow::Result<u64> {
    let status =
        std::fs::read_to_string(format!("/proc/{pid}/status")).context("reading /proc (Linux only)")?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .context("VmRSS in /proc/PID/status")
}
