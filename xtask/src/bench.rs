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
#[derive(clap::Args, Clone)]
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
    // @template if redis
    /// Redis for the api under test (keys go under their own prefix).
    #[arg(long, env = "BENCH_REDIS_URL", default_value = "redis://127.0.0.1:6379")]
    redis_url: String,
    // @template endif
    /// A smoke run for CI: one short round, figures printed, nothing held
    /// and nothing written.
    #[arg(long)]
    smoke: bool,
    /// Measure the edge instead: requests per second through NGINX
    /// (`infra/nginx`) with 1, 2 and 3 api replicas, against bare axum with
    /// the same replica counts behind the same NGINX.
    #[arg(long)]
    edge: bool,
    // @template if worker
    /// Benchmark the job path instead: POST /v1/jobs 202s against raw lapin
    /// publish-with-confirm, the worker's jobs per second, and
    /// submit-to-done latency (`worker/tests/it/bench.rs`, in release).
    #[arg(long)]
    jobs: bool,
    // @template endif
}

// @template if worker
/// The job path's benchmark: an ignored test of the worker's, in release,
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
// @template endif

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

/// An api instance under test, with the settings that make it differ.
struct Instance {
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
    // @template if redis
    command
        .env("REDIS_URL", &args.redis_url)
        .env("REDIS_KEY_PREFIX", concat!(env!("PROJECT_NAME"), "-bench"));
    // @template endif
    command.envs(env.iter().copied());
    let process = Guard(command.spawn().with_context(|| format!("starting the api ({name})"))?);
    wait_ready(port, "/readyz")?;
    Ok(Instance { port, process })
}

/// Starts `loadtest`'s OTLP sink; it prints its endpoint first.
fn start_sink(binaries: &Path) -> anyhow::Result<(Guard, String)> {
    let mut child = Command::new(binaries.join("otlp-sink"))
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .context("starting the OTLP sink")?;
    let stdout = child.stdout.take().context("the sink's stdout")?;
    let mut line = String::new();
    std::io::BufRead::read_line(&mut std::io::BufReader::new(stdout), &mut line)?;
    Ok((Guard(child), line.trim().to_owned()))
}

/// The api instances of the budget run, by role.
struct Instances {
    /// The default settings, with limits that never refuse and no relay.
    api: Instance,
    /// The same with `OTEL_SDK_DISABLED`: no span layer at all.
    no_spans: Instance,
    /// The same, exporting every span over OTLP/gRPC to a local sink.
    exported: Instance,
    // @template if redis
    /// The default settings with leased rate limits (`RATE_LIMIT_LEASE`).
    leased: Instance,
    // @template endif
}

// @template if redis
/// The lease the leased instance takes (`RATE_LIMIT_LEASE`).
const LEASE: &str = "16";
// @template endif

/// Settings every budget instance shares: limits that do all their work and
/// never refuse, and no relay, so the write path is the request's alone.
// @template if worker
const SHARED: [(&str, &str); 3] =
    [("RATE_LIMIT_WRITES", NEVER_LIMITED), ("RATE_LIMIT_KEY", NEVER_LIMITED), ("AMQP_URL", "")];
// @template endif
// @template if not worker
// const SHARED: [(&str, &str); 2] = [("RATE_LIMIT_WRITES", NEVER_LIMITED), ("RATE_LIMIT_KEY", NEVER_LIMITED)];
// @template endif

/// Line 2's bound: with Redis, a cached read; without, every read is a
/// Postgres query, and the line is reported only.
// @template if redis
const READ_BOUND: Bound = Bound::AtLeast(0.54);
// @template endif
// @template if not redis
// const READ_BOUND: Bound = Bound::Info;
// @template endif

fn instances(api_binary: &Path, args: &Args, sink: &str) -> anyhow::Result<Instances> {
    let with = |extra: &[(&'static str, &'static str)]| -> Vec<(&str, &str)> {
        SHARED.iter().chain(extra).copied().collect()
    };
    Ok(Instances {
        api: start_api(api_binary, args, "api", &with(&[]))?,
        no_spans: start_api(
            api_binary,
            args,
            "api, OTEL_SDK_DISABLED",
            &with(&[("OTEL_SDK_DISABLED", "true")]),
        )?,
        exported: start_api(
            api_binary,
            args,
            "api, spans exported",
            &[
                SHARED.as_slice(),
                &[("OTEL_EXPORTER_OTLP_ENDPOINT", sink), ("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc")],
            ]
            .concat(),
        )?,
        // @template if redis
        leased: start_api(api_binary, args, "api, leased limits", &with(&[("RATE_LIMIT_LEASE", LEASE)]))?,
        // @template endif
    })
}

/// How a target is driven.
enum Load {
    /// wrk against a URL, with extra arguments (headers, a script).
    Wrk { url: String, extra: Vec<String> },
    // @template if worker
    /// `loadtest`'s raw insert loop, which prints its rate.
    RawInsert,
    // @template endif
}

/// One thing measured each round.
struct Target {
    name: &'static str,
    load: Load,
    runs: Vec<Run>,
}

impl Target {
    fn wrk(name: &'static str, url: String, extra: Vec<String>) -> Self {
        Self { name, load: Load::Wrk { url, extra }, runs: Vec::new() }
    }

    fn median(&self) -> f64 {
        median(self.runs.iter().map(|r| r.requests_per_second).collect())
    }

    fn p99(&self) -> f64 {
        median(self.runs.iter().map(|r| r.p99_ms).collect())
    }
}

/// One line of the budget: a measured figure and its bound.
struct Line {
    what: String,
    value: f64,
    bound: Bound,
    /// What the figure is made of.
    detail: String,
}

/// A line's bound; `Info` lines are reported, not held.
enum Bound {
    AtLeast(f64),
    AtMost(f64),
    Info,
}

impl Line {
    fn met(&self) -> bool {
        match self.bound {
            Bound::AtLeast(min) => self.value >= min,
            Bound::AtMost(max) => self.value <= max,
            Bound::Info => true,
        }
    }

    fn row(&self) -> String {
        let (bound, verdict) = match self.bound {
            Bound::AtLeast(min) => (format!("≥ {min}"), if self.met() { "met" } else { "**missed**" }),
            Bound::AtMost(max) => (format!("≤ {max}"), if self.met() { "met" } else { "**missed**" }),
            Bound::Info => (String::new(), "reported"),
        };
        format!("| {} | {:.2} | {bound} | {verdict} | {} |", self.what, self.value, self.detail)
    }
}

/// Runs the benchmark.
pub(crate) fn run(args: &Args) -> anyhow::Result<()> {
    let smoke = Args { rounds: 1, seconds: 2, ..args.clone() };
    let args = if args.smoke { &smoke } else { args };
    // @template if worker
    if args.jobs {
        return jobs();
    }
    // @template endif
    tools::ensure(&[Tool { binary: "wrk", source: Source::Apt("wrk") }])?;
    // A smoke run takes the debug binaries the tests built (`cargo xtask
    // ci` runs it after them): building here would resolve features
    // without the tests' dev-dependencies and rebuild half the graph. It
    // checks that the benchmark works; its figures mean nothing.
    if !args.smoke {
        let mut build = cmd::cargo();
        build.args(["build", "--release", "--quiet", "-p", "api", "-p", "loadtest"]);
        // @template if worker
        build.args(["-p", "worker"]);
        // @template endif
        cmd::run(&mut build)?;
    }
    if args.edge {
        return edge::run(args);
    }
    let binaries = cmd::target_dir().join(if args.smoke { "debug" } else { "release" });
    for binary in ["api", "baseline", "otlp-sink", "pg-insert"] {
        ensure!(
            binaries.join(binary).exists(),
            "{} is not built (a smoke run uses the binaries `cargo test --workspace --all-targets` builds)",
            binaries.join(binary).display()
        );
    }
    let (_sink, endpoint) = start_sink(&binaries)?;
    let api_binary = binaries.join("api");
    let key = api_key(&api_binary, args)?;
    let instances = instances(&api_binary, args, &endpoint)?;
    let baseline_port = free_port()?;
    let mut baseline = Command::new(binaries.join("baseline"));
    baseline.env("PORT", baseline_port.to_string()).stdout(Stdio::null());
    // @template if redis
    baseline.env("REDIS_URL", &args.redis_url);
    // @template endif
    let _baseline = Guard(baseline.spawn().context("starting the baseline")?);
    wait_ready(baseline_port, "/json")?;

    let id = create_item(instances.api.port, &key)?;
    let idle_rss = rss_kib(instances.api.process.0.id())?;
    let authorization = vec!["-H".to_owned(), format!("Authorization: Bearer {key}")];
    let item_url = |instance: &Instance| format!("http://127.0.0.1:{}/v1/items/{id}", instance.port);
    let bare = |path: &str| format!("http://127.0.0.1:{baseline_port}{path}");
    #[allow(unused_mut, reason = "without options nothing is added")]
    let mut targets = vec![
        Target::wrk(BARE_JSON, bare("/json"), Vec::new()),
        Target::wrk(
            "api GET /healthz",
            format!("http://127.0.0.1:{}/healthz", instances.api.port),
            Vec::new(),
        ),
        Target::wrk("api GET item, key + limiter", item_url(&instances.api), authorization.clone()),
        Target::wrk("api GET item, OTEL_SDK_DISABLED", item_url(&instances.no_spans), authorization.clone()),
        Target::wrk("api GET item, spans exported", item_url(&instances.exported), authorization.clone()),
    ];
    // @template if redis
    targets.insert(1, Target::wrk("bare axum, one Redis GET", bare("/redis"), Vec::new()));
    targets.insert(4, Target::wrk(LEASED_ITEM, item_url(&instances.leased), authorization.clone()));
    // @template endif
    // @template if worker
    let submit = submit_script(&key)?;
    targets.push(Target::wrk(
        "api POST /v1/jobs",
        format!("http://127.0.0.1:{}/v1/jobs", instances.api.port),
        vec!["-s".to_owned(), submit.display().to_string()],
    ));
    targets.push(Target { name: "raw sqlx insert + commit", load: Load::RawInsert, runs: Vec::new() });
    // @template endif
    for round in 1..=args.rounds {
        let mut line = format!("round {round}:");
        for target in &mut targets {
            let run = match &target.load {
                Load::Wrk { url, extra } => wrk_args(url, args, extra)?,
                // @template if worker
                Load::RawInsert => raw_insert(&binaries.join("pg-insert"), args)?,
                // @template endif
            };
            let _ = write!(line, "  {} {:.0}/s", target.name, run.requests_per_second);
            target.runs.push(run);
        }
        eprintln!("{line}");
    }
    let mut lines = budget(&targets);
    let bare_p99 = targets.iter().find(|t| t.name == BARE_JSON).map_or(f64::NAN, Target::p99);
    lines.extend(footprint(&binaries, &instances, idle_rss)?);
    report(args, &targets, &lines, bare_p99)
}

/// The baseline target every throughput line is a ratio against.
const BARE_JSON: &str = "bare axum GET /json";
// @template if redis
/// The cached read through the leased limiter.
const LEASED_ITEM: &str = "api GET item, key + leased limiter";
// @template endif

/// The budget's ratio lines, from the rounds of every target.
fn budget(targets: &[Target]) -> Vec<Line> {
    let target = |name: &str| targets.iter().find(|t| t.name == name);
    let figure = |name: &str| target(name).map_or(f64::NAN, Target::median);
    // The median of each round's ratio: the two figures of a round were
    // measured seconds apart, so a slow minute of the machine's moves both.
    let ratio = |what: &str, a: &str, b: &str, bound: Bound| Line {
        what: what.to_owned(),
        value: match (target(a), target(b)) {
            (Some(a), Some(b)) => median(
                a.runs
                    .iter()
                    .zip(&b.runs)
                    .map(|(a, b)| a.requests_per_second / b.requests_per_second)
                    .collect(),
            ),
            _ => f64::NAN,
        },
        bound,
        detail: format!("{a}: {:.0}/s ÷ {b}: {:.0}/s (medians)", figure(a), figure(b)),
    };

    let item = "api GET item, key + limiter";
    let mut lines =
        vec![ratio("1. middleware stack ÷ bare axum", "api GET /healthz", BARE_JSON, Bound::AtLeast(0.80))];
    // @template if redis
    // The budget holds the leased limiter: the mode that makes the key
    // check, the limiter and the cache cost one round trip. The exact
    // limiter (the default) is reported beside it.
    lines.extend([
        ratio("2. GET /v1/items/{id}, key + leased limiter ÷ bare axum", LEASED_ITEM, BARE_JSON, READ_BOUND),
        ratio(
            "2. the same ÷ a bare handler making one Redis round trip",
            LEASED_ITEM,
            "bare axum, one Redis GET",
            Bound::Info,
        ),
        ratio("2. the same, exact limiter (the default) ÷ bare axum", item, BARE_JSON, Bound::Info),
    ]);
    // @template endif
    // @template if not redis
    // lines.push(ratio("2. GET /v1/items/{id} with a key and the limiter ÷ bare axum", item, BARE_JSON, READ_BOUND));
    // @template endif
    let no_spans = "api GET item, OTEL_SDK_DISABLED";
    lines.push(ratio(
        "3. spans not exported (ids only) ÷ OTEL_SDK_DISABLED",
        item,
        no_spans,
        Bound::AtLeast(0.95),
    ));
    lines.push(ratio(
        "3. every span exported (OTLP/gRPC) ÷ OTEL_SDK_DISABLED",
        "api GET item, spans exported",
        no_spans,
        Bound::Info,
    ));
    // @template if worker
    lines.push(ratio(
        "4. POST /v1/jobs ÷ raw insert + commit",
        "api POST /v1/jobs",
        "raw sqlx insert + commit",
        Bound::AtLeast(0.80),
    ));
    // @template endif
    lines
}

/// The service binaries whose size is held.
// @template if worker
const BINARIES: [&str; 2] = ["api", "worker"];
// @template endif
// @template if not worker
// const BINARIES: [&str; 1] = ["api"];
// @template endif

/// Binary sizes and resident memory, against the budget's bounds.
fn footprint(binaries: &Path, instances: &Instances, idle_rss: u64) -> anyhow::Result<Vec<Line>> {
    let mib = |bytes: u64| {
        #[allow(clippy::cast_precision_loss, reason = "megabytes")]
        let value = bytes as f64 / (1024.0 * 1024.0);
        value
    };
    let loaded_rss = rss_kib(instances.api.process.0.id())?;
    let mut lines = Vec::new();
    for binary in BINARIES {
        let path = binaries.join(binary);
        if let Ok(meta) = std::fs::metadata(&path) {
            lines.push(Line {
                what: format!("7. {binary} release binary, MiB"),
                value: mib(meta.len()),
                bound: Bound::AtMost(15.0),
                detail: format!("{}", path.display()),
            });
        }
    }
    lines.push(Line {
        what: "7. api idle RSS, MiB".to_owned(),
        value: mib(idle_rss * 1024),
        bound: Bound::AtMost(20.0),
        detail: format!("after the load: {:.1} MiB", mib(loaded_rss * 1024)),
    });
    Ok(lines)
}
// @template if worker
/// A wrk script that submits a job per request, with the key.
fn submit_script(key: &str) -> anyhow::Result<std::path::PathBuf> {
    let path = std::env::temp_dir().join(format!("{}-bench-submit.lua", env!("PROJECT_NAME")));
    std::fs::write(
        &path,
        format!(
            "wrk.method = \"POST\"\nwrk.body = '{{\"kind\":\"synthetic\"}}'\n\
             wrk.headers[\"Content-Type\"] = \"application/json\"\n\
             wrk.headers[\"Authorization\"] = \"Bearer {key}\"\n"
        ),
    )?;
    Ok(path)
}

/// The raw insert loop, with the api's pool size (`DB_MAX_CONNECTIONS`'s
/// default) as its connection count.
fn raw_insert(binary: &Path, args: &Args) -> anyhow::Result<Run> {
    let output = Command::new(binary)
        .env("DATABASE_URL", &args.database_url)
        .env("CONNECTIONS", API_POOL.to_string())
        .env("SECONDS", args.seconds.to_string())
        .stderr(Stdio::inherit())
        .output()
        .context("running the raw insert loop")?;
    ensure!(output.status.success(), "the raw insert loop failed");
    let rate = String::from_utf8(output.stdout)?.trim().parse().context("the raw insert rate")?;
    Ok(Run { requests_per_second: rate, p99_ms: f64::NAN })
}

/// The api's default pool size (`DB_MAX_CONNECTIONS`).
const API_POOL: u32 = 10;
// @template endif

/// Prints the table; outside a smoke run, writes it into
/// `docs/performance.md` and fails when a line is missed.
fn report(args: &Args, targets: &[Target], lines: &[Line], bare_p99: f64) -> anyhow::Result<()> {
    let mut table = String::from("| line | figure | budget | verdict | measured |\n|---|---|---|---|---|\n");
    for line in lines {
        table.push_str(&line.row());
        table.push('\n');
    }
    let mut raw = String::from("| target | median /s | p99 ms |\n|---|---|---|\n");
    for target in targets {
        let _ = writeln!(raw, "| {} | {:.0} | {:.2} |", target.name, target.median(), target.p99());
    }
    let command = format!(
        "cargo xtask bench --rounds {} --seconds {} --connections {}",
        args.rounds, args.seconds, args.connections
    );
    println!("{command}\n\n{table}\n{raw}\nbare axum p99 at saturation: {bare_p99:.2} ms");
    let missed: Vec<&str> = lines.iter().filter(|l| !l.met()).map(|l| l.what.as_str()).collect();
    if args.smoke {
        return Ok(());
    }
    let machine = machine();
    let document = format!(
        "{PERFORMANCE_HEAD}\n## The last run\n\n`{command}` (wrk -t2 -c{}, {} rounds of {} s, \
         alternating targets, medians), on {machine}.\n\n{table}\n### Every target\n\n{raw}",
        args.connections, args.rounds, args.seconds
    );
    std::fs::write(cmd::root().join("docs/performance.md"), document)?;
    println!("written: docs/performance.md");
    ensure!(missed.is_empty(), "missed: {}", missed.join("; "));
    Ok(())
}

/// The part of `docs/performance.md` that is not the run.
const PERFORMANCE_HEAD: &str = include_str!("bench/performance-head.md");

/// The cores, the CPU and the kernel, for the record.
fn machine() -> String {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find_map(|l| l.strip_prefix("model name"))
        .and_then(|l| l.split(':').nth(1))
        .map_or("an unknown CPU", str::trim)
        .to_owned();
    let cores = std::thread::available_parallelism().map_or(0, std::num::NonZero::get);
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    format!("{cores} cores of {model}, Linux {}", kernel.trim())
}

/// Migrates the bench database and creates an API key there.
fn api_key(api_binary: &Path, args: &Args) -> anyhow::Result<String> {
    cmd::run(Command::new(api_binary).arg("migrate").env("DATABASE_URL", &args.database_url))?;
    let key = Command::new(api_binary)
        .args(["keys", "create", "--name", "bench", "--rate", NEVER_LIMITED])
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

/// wrk against `url`, with these headers.
fn wrk_with(url: &str, args: &Args, headers: &[String]) -> anyhow::Result<Run> {
    let extra: Vec<String> = headers.iter().flat_map(|h| ["-H".to_owned(), h.clone()]).collect();
    wrk_args(url, args, &extra)
}

/// wrk against `url`, with extra arguments (headers, a script).
fn wrk_args(url: &str, args: &Args, extra: &[String]) -> anyhow::Result<Run> {
    let output = Command::new("wrk")
        .args(["-t2", &format!("-c{}", args.connections), &format!("-d{}s", args.seconds), "--latency"])
        .args(extra)
        .arg(url)
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
