//! `cargo xtask bench`: the api's throughput and latency as ratios against
//! bare axum (`loadtest`'s `baseline`), both measured in the same run with
//! wrk, alternating A B A B so that machine noise hits both alike. Also
//! reports the release binary's size and the api's resident memory.
//!
//! Numbers from a noisy shared machine are only comparable within a run:
//! read the ratios, not the absolute requests per second.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail, ensure};

use crate::cmd;
use crate::tools::{self, Source, Tool};

/// Options of `bench`.
#[derive(clap::Args)]
pub struct Args {
    /// Rounds of A B; the medians are reported.
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
}

/// One wrk run's figures.
struct Run {
    requests_per_second: f64,
    p99_ms: f64,
}

/// Kills a child process when dropped, so a failed bench leaves nothing running.
struct Guard(Child);

impl Drop for Guard {
    fn drop(&mut self) {
        let _ = Command::new("kill").args(["-TERM", &self.0.id().to_string()]).status();
        let _ = self.0.wait();
    }
}

/// Runs the benchmark.
pub fn run(args: &Args) -> anyhow::Result<()> {
    tools::ensure(&[Tool { binary: "wrk", source: Source::Apt("wrk") }])?;
    cmd::run(cmd::cargo().args(["build", "--release", "--quiet", "-p", "api", "-p", "loadtest"]))?;
    let target = cmd::target_dir();
    let api_binary = target.join("release/api");
    cmd::run(Command::new(&api_binary).arg("migrate").env("DATABASE_URL", &args.database_url))?;

    let api_port = free_port()?;
    let baseline_port = free_port()?;
    let api = Guard(
        Command::new(&api_binary)
            .env("DATABASE_URL", &args.database_url)
            .env("HOST", "127.0.0.1")
            .env("PORT", api_port.to_string())
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .spawn()
            .context("starting the api")?,
    );
    let _baseline = Guard(
        Command::new(target.join("release/baseline"))
            .env("PORT", baseline_port.to_string())
            .stdout(Stdio::null())
            .spawn()
            .context("starting the baseline")?,
    );
    wait_ready(api_port, "/readyz")?;
    wait_ready(baseline_port, "/json")?;

    let (status, created) = http(
        api_port,
        "POST",
        "/v1/items",
        Some(r#"{"name":"Desk lamp","price_cents":1999,"currency":"EUR"}"#),
    )?;
    ensure!(status == 201, "creating the benchmark item answered {status}: {created}");
    let id = created.split("\"id\":\"").nth(1).and_then(|s| s.split('"').next()).context("the item id")?;
    let a = format!("http://127.0.0.1:{api_port}/v1/items/{id}");
    let b = format!("http://127.0.0.1:{baseline_port}/json");
    let idle_rss = rss_kib(api.0.id())?;

    let mut runs_a = Vec::new();
    let mut runs_b = Vec::new();
    for round in 1..=args.rounds {
        runs_a.push(wrk(&a, args)?);
        runs_b.push(wrk(&b, args)?);
        eprintln!(
            "round {round}: api {:.0} req/s (p99 {:.2} ms)   baseline {:.0} req/s (p99 {:.2} ms)",
            runs_a[round - 1].requests_per_second,
            runs_a[round - 1].p99_ms,
            runs_b[round - 1].requests_per_second,
            runs_b[round - 1].p99_ms
        );
    }
    let loaded_rss = rss_kib(api.0.id())?;
    let (rps_a, p99_a) = medians(&runs_a);
    let (rps_b, p99_b) = medians(&runs_b);
    let size = std::fs::metadata(&api_binary)?.len();
    println!(
        "GET /v1/items/{{id}} (api, Postgres-backed) vs GET /json (bare axum), wrk -t2 -c{} -d{}s, {} rounds",
        args.connections, args.seconds, args.rounds
    );
    println!("  api       median {rps_a:>9.0} req/s   p99 {p99_a:>7.2} ms");
    println!("  baseline  median {rps_b:>9.0} req/s   p99 {p99_b:>7.2} ms");
    println!("  ratio api/baseline = {:.3}", rps_a / rps_b);
    println!("  api RSS: idle {idle_rss} KiB, after load {loaded_rss} KiB");
    println!("  api release binary: {} KiB", size / 1024);
    Ok(())
}

fn wrk(url: &str, args: &Args) -> anyhow::Result<Run> {
    let output = Command::new("wrk")
        .args(["-t2", &format!("-c{}", args.connections), &format!("-d{}s", args.seconds), "--latency", url])
        .output()
        .context("running wrk")?;
    let text = String::from_utf8_lossy(&output.stdout);
    ensure!(output.status.success(), "wrk failed: {text}");
    ensure!(!text.contains("Non-2xx") && !text.contains("Socket errors"), "errors under load:\n{text}");
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
    Ok(Run { requests_per_second, p99_ms: milliseconds(p99)? })
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

fn medians(runs: &[Run]) -> (f64, f64) {
    let median = |mut values: Vec<f64>| {
        values.sort_by(f64::total_cmp);
        let n = values.len();
        if n % 2 == 1 { values[n / 2] } else { f64::midpoint(values[n / 2 - 1], values[n / 2]) }
    };
    (
        median(runs.iter().map(|r| r.requests_per_second).collect()),
        median(runs.iter().map(|r| r.p99_ms).collect()),
    )
}

fn free_port() -> anyhow::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

fn wait_ready(port: u16, path: &str) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        if matches!(http(port, "GET", path, None), Ok((200, _))) {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    bail!("nothing answered 200 on 127.0.0.1:{port}{path} within 30 s")
}

/// A minimal HTTP/1.1 exchange (xtask has no HTTP client, and needs none).
fn http(port: u16, method: &str, path: &str, body: Option<&str>) -> anyhow::Result<(u16, String)> {
    let mut stream = TcpStream::connect(("127.0.0.1", port))?;
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    let body = body.unwrap_or_default();
    write!(
        stream,
        "{method} {path} HTTP/1.1\r\nhost: bench\r\nconnection: close\r\ncontent-type: application/json\r\n\
         content-length: {}\r\n\r\n{body}",
        body.len()
    )?;
    let mut response = String::new();
    stream.read_to_string(&mut response)?;
    let status = response.split(' ').nth(1).and_then(|s| s.parse().ok()).context("an HTTP status line")?;
    let payload = response.split_once("\r\n\r\n").map(|(_, b)| b.to_owned()).unwrap_or_default();
    Ok((status, payload))
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
