//! `cargo xtask up`: the platform, running locally against the local
//! services: migrations, N api replicas on their own ports, the worker, and
//! NGINX (the `infra/nginx` configuration Compose runs) on one public port.

use std::fs::File;
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

use crate::checks::nginx::NGINX;
use crate::{cmd, tools};

/// Options of `up`.
#[derive(clap::Args)]
pub(crate) struct Args {
    /// The public port: NGINX, in front of every replica.
    #[arg(long, env = "PORT", default_value_t = 8080)]
    port: u16,
    /// How many api replicas to run behind NGINX.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u16).range(1..=16))]
    replicas: u16,
    /// Run the binaries already built in the target directory.
    #[arg(long)]
    no_build: bool,
    /// Port of the first replica; the others take the ports after it.
    #[arg(long, default_value_t = 8090)]
    replica_port: u16,
    /// Postgres to use; the database is created if missing.
    #[arg(long, env = "DATABASE_URL", default_value = concat!("postgres://postgres@127.0.0.1:5432/", env!("PROJECT_NAME")))]
    database_url: String,
{% if redis %}    /// Redis for the cache and shared rate limits (the API runs without it,
    /// with per-replica limits and no cache).
    #[arg(long, env = "REDIS_URL", default_value = "redis://127.0.0.1:6379")]
    redis_url: String,
{% endif %}{% if worker %}    /// RabbitMQ for jobs (the API accepts jobs without it; they wait in the
    /// outbox until it is reachable).
    #[arg(long, env = "AMQP_URL", default_value = "amqp://guest:guest@127.0.0.1:5672/%2f")]
    amqp_url: String,
    /// Port of the worker's health and metrics endpoints.
    #[arg(long, default_value_t = 8081)]
    worker_port: u16,
{% endif %}}

/// The processes started here; dropping it stops them all (SIGTERM, so each
/// drains, and NGINX's master takes its workers down with it).
///
/// Ctrl-C in the terminal reaches every child (one process group), but
/// SIGTERM or SIGHUP sent to `xtask up` alone (`kill`, a closed terminal, a
/// supervisor) would end only this process and leave the children running
/// on their ports. So all three signals are caught ([`stop_on_signals`]):
/// [`Processes::wait`] returns and the drop stops every child.
struct Processes(Vec<(String, Child)>);

impl Processes {
    fn spawn(&mut self, name: impl Into<String>, command: &mut Command) -> anyhow::Result<()> {
        let name = name.into();
        let child = command.stdin(Stdio::null()).spawn().with_context(|| format!("starting {name}"))?;
        self.0.push((name, child));
        Ok(())
    }

    /// Waits until one process exits or `stop` is set, then stops the others.
    fn wait(&mut self, stop: &AtomicBool) -> anyhow::Result<()> {
        loop {
            if stop.load(Ordering::SeqCst) {
                eprintln!("stopping: every process drains, then exits");
                return Ok(());
            }
            for (name, child) in &mut self.0 {
                if let Some(status) = child.try_wait()? {
                    if !status.success() && status.code().is_some() {
                        bail!("{name} exited with {status}");
                    }
                    return Ok(());
                }
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

impl Drop for Processes {
    fn drop(&mut self) {
        for (_, child) in &self.0 {
            let _ = Command::new("kill").arg("-TERM").arg(child.id().to_string()).status();
        }
        for (_, child) in &mut self.0 {
            let _ = child.wait();
        }
    }
}

/// Sets the returned flag on SIGINT, SIGTERM or SIGHUP.
fn stop_on_signals() -> anyhow::Result<Arc<AtomicBool>> {
    let stop = Arc::new(AtomicBool::new(false));
    let flag = Arc::clone(&stop);
    ctrlc::set_handler(move || flag.store(true, Ordering::SeqCst))
        .context("catching SIGINT, SIGTERM and SIGHUP")?;
    Ok(stop)
}

/// Checks, builds, migrates, starts everything, serves until Ctrl-C,
/// SIGTERM or SIGHUP.
pub(crate) fn run(args: &Args) -> anyhow::Result<()> {
    let stop = stop_on_signals()?;
    check_services(args)?;
    tools::ensure(&[NGINX])?;
    let nginx = edge_config::binary().context("nginx is not on PATH nor in /usr/sbin")?;
    let replicas: Vec<SocketAddr> = (0..args.replicas)
        .map(|i| args.replica_port.checked_add(i).map(|p| SocketAddr::from(([127, 0, 0, 1], p))))
        .collect::<Option<_>>()
        .context("--replica-port leaves no room for every replica")?;
    let mut ports: Vec<(u16, &str)> = vec![(args.port, "--port (NGINX)")];
    ports.extend(replicas.iter().map(|r| (r.port(), "--replica-port (an api replica)")));
{% if worker %}    ports.push((args.worker_port, "--worker-port (the worker)"));
{% endif %}    let busy: Vec<String> = ports
        .iter()
        .filter(|(port, _)| cmd::reachable(&format!("127.0.0.1:{port}")))
        .map(|(port, what)| format!("  {port}: {what}"))
        .collect();
    if !busy.is_empty() {
        bail!("ports already in use; stop what uses them or pick others:\n{}", busy.join("\n"));
    }

    let mut build = cmd::cargo();
    build.args(["build", "--quiet", "-p", "api", "--bin", "api"]);
{% if worker %}    build.args(["-p", "worker", "--bin", "worker"]);
{% endif %}    if !args.no_build {
        cmd::run(&mut build)?;
    }
    let binary = cmd::target_dir().join("debug/api");
    cmd::run(
        Command::new(&binary)
            .arg("migrate")
            .env("DATABASE_URL", &args.database_url)
            .env("LOG_FORMAT", "pretty"),
    )?;

    let mut processes = Processes(Vec::new());
    // Replicas share the cores: more runtime threads than cores only contend.
    let cores = std::thread::available_parallelism().map_or(1, std::num::NonZero::get);
    let threads = (cores / replicas.len()).max(1);
    for (i, replica) in replicas.iter().enumerate() {
        let mut api = Command::new(&binary);
{% if redis %}        api.env("REDIS_URL", &args.redis_url);
{% endif %}{% if worker %}        api.env("AMQP_URL", &args.amqp_url);
{% endif %}        api.env("DATABASE_URL", &args.database_url)
            .env("HOST", replica.ip().to_string())
            .env("PORT", replica.port().to_string())
            .env("RATE_LIMIT_REPLICAS", replicas.len().to_string())
            .env("TRUSTED_PROXIES", "127.0.0.1/32")
            .env("TOKIO_WORKER_THREADS", threads.to_string())
            .env("OTEL_RESOURCE_ATTRIBUTES", format!("service.instance.id=replica-{i}"))
            .env("LOG_FORMAT", "pretty");
        processes.spawn(format!("api replica {i} ({replica})"), &mut api)?;
    }
{% if worker %}    processes.spawn(
        "the worker",
        Command::new(cmd::target_dir().join("debug/worker"))
            .env("DATABASE_URL", &args.database_url)
            .env("AMQP_URL", &args.amqp_url)
            .env("PORT", args.worker_port.to_string())
            .env("LOG_FORMAT", "pretty"),
    )?;
{% endif %}    for replica in &replicas {
        wait_for_port(*replica, &mut processes)?;
    }
    let prefix = cmd::target_dir().join("up/nginx");
    let upstreams: Vec<_> = replicas.iter().copied().map(edge_config::Upstream::up).collect();
    let public = SocketAddr::from(([0, 0, 0, 0], args.port));
    edge_config::render(&cmd::root().join("infra/nginx"), &prefix, public, &upstreams)?;
    let access_log = File::create(prefix.join("access.log"))?;
    processes.spawn("nginx", edge_config::foreground(&nginx, &prefix).stdout(access_log))?;
    wait_for_port(SocketAddr::from(([127, 0, 0, 1], args.port)), &mut processes)?;
    print_places(args, &replicas, &binary, &prefix);
    processes.wait(&stop)
}

fn check_services(args: &Args) -> anyhow::Result<()> {
    let pg = cmd::address(&args.database_url, 5432);
    if !cmd::reachable(&pg) {
        bail!(
            "Postgres is not reachable at {pg}. Start it (on Debian: \
             pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql) main start) or set DATABASE_URL"
        );
    }
{% if redis %}    let redis = cmd::address(&args.redis_url, 6379);
    if !cmd::reachable(&redis) {
        eprintln!(
            "warning: Redis is not reachable at {redis}; the API runs without the cache and with \
             per-replica rate limits until it is (start it with `redis-server --daemonize yes`)"
        );
    }
{% endif %}{% if worker %}    let amqp = cmd::address(&args.amqp_url, 5672);
    if !cmd::reachable(&amqp) {
        eprintln!(
            "warning: RabbitMQ is not reachable at {amqp}; jobs are accepted and wait in the outbox \
             until it is (start it with `rabbitmq-server -detached`)"
        );
    }
{% endif %}    Ok(())
}

/// Waits until `addr` accepts connections, failing if a process died.
fn wait_for_port(addr: SocketAddr, processes: &mut Processes) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_mins(1);
    while !cmd::reachable(&addr.to_string()) {
        for (name, child) in &mut processes.0 {
            if let Some(status) = child.try_wait()? {
                bail!("{name} exited during start-up ({status}); its output is above");
            }
        }
        if Instant::now() > deadline {
            bail!("nothing listens on {addr} after 60 s");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    Ok(())
}

fn print_places(args: &Args, replicas: &[SocketAddr], binary: &Path, prefix: &Path) {
    let base = format!("http://127.0.0.1:{}", args.port);
    let mut places = vec![format!("API       {base}/v1/items  (and {base}/v2/items), through NGINX")];
{% if docs %}    places.push(format!("Docs      {base}/docs/"));
{% endif %}    places.push(format!("OpenAPI   {base}/openapi.json"));
{% if worker %}    places.push(format!("Jobs      POST {base}/v1/jobs, then GET the Location it answers"));
{% endif %}    let list: Vec<String> = replicas.iter().map(|r| format!("http://{r}")).collect();
    places.push(format!("Replicas  {} (each: /metrics, /healthz, /readyz)", list.join(", ")));
{% if worker %}    places.push(format!("Worker    http://127.0.0.1:{}/metrics, /healthz, /readyz", args.worker_port));
{% endif %}    places.push(format!("Edge log  {} (JSON, one line per request)", prefix.join("access.log").display()));
    eprintln!(
        "\nThe platform is up: NGINX on port {} in front of {} api replicas.\n  {}\n\n\
         Writes need an API key: {} keys create --name me\nCtrl-C stops everything.\n",
        args.port,
        replicas.len(),
        places.join("\n  "),
        binary.display()
    );
}
