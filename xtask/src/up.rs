//! `cargo xtask up`: the platform, running locally against the local services.

use std::process::{Command, Stdio};

use anyhow::{Context, bail};

use crate::cmd;

/// Options of `up`.
#[derive(clap::Args)]
pub struct Args {
    /// Port the API listens on.
    #[arg(long, env = "PORT", default_value_t = 8080)]
    port: u16,
    /// Postgres to use; the database is created if missing.
    #[arg(long, env = "DATABASE_URL", default_value = concat!("postgres://postgres@127.0.0.1:5432/", env!("PROJECT_NAME")))]
    database_url: String,
    // @template if redis
    /// Redis for the cache and shared rate limits (the API runs without it,
    /// with per-replica limits and no cache).
    #[arg(long, env = "REDIS_URL", default_value = "redis://127.0.0.1:6379")]
    redis_url: String,
    // @template endif
    // @template if worker
    /// RabbitMQ for jobs (the API accepts jobs without it; they wait in the
    /// outbox until it is reachable).
    #[arg(long, env = "AMQP_URL", default_value = "amqp://guest:guest@127.0.0.1:5672/%2f")]
    amqp_url: String,
    /// Port of the worker's health and metrics endpoints.
    #[arg(long, default_value_t = 8081)]
    worker_port: u16,
    // @template endif
}

/// Builds the api, migrates, serves until Ctrl-C.
pub fn run(args: &Args) -> anyhow::Result<()> {
    let pg = cmd::address(&args.database_url, 5432);
    if !cmd::reachable(&pg) {
        bail!(
            "Postgres is not reachable at {pg}. Start it (on Debian: \
             pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql) main start) or set DATABASE_URL"
        );
    }
    // @template if redis
    let redis = cmd::address(&args.redis_url, 6379);
    if !cmd::reachable(&redis) {
        eprintln!(
            "warning: Redis is not reachable at {redis}; the API runs without the cache and with \
             per-replica rate limits until it is (start it with `redis-server --daemonize yes`)"
        );
    }
    // @template endif
    // @template if worker
    let amqp = cmd::address(&args.amqp_url, 5672);
    if !cmd::reachable(&amqp) {
        eprintln!(
            "warning: RabbitMQ is not reachable at {amqp}; jobs are accepted and wait in the outbox \
             until it is (start it with `rabbitmq-server -detached`)"
        );
    }
    if cmd::reachable(&format!("127.0.0.1:{}", args.worker_port)) {
        bail!("port {} is already in use; stop what uses it or pass --worker-port", args.worker_port);
    }
    // @template endif
    if cmd::reachable(&format!("127.0.0.1:{}", args.port)) {
        bail!("port {} is already in use; stop what uses it or pass --port", args.port);
    }
    let mut build = cmd::cargo();
    build.args(["build", "--quiet", "-p", "api", "--bin", "api"]);
    // @template if worker
    build.args(["-p", "worker", "--bin", "worker"]);
    // @template endif
    cmd::run(&mut build)?;
    let binary = cmd::target_dir().join("debug/api");
    cmd::run(
        Command::new(&binary)
            .arg("migrate")
            .env("DATABASE_URL", &args.database_url)
            .env("LOG_FORMAT", "pretty"),
    )?;

    let mut api = Command::new(&binary);
    // @template if redis
    api.env("REDIS_URL", &args.redis_url);
    // @template endif
    // @template if worker
    api.env("AMQP_URL", &args.amqp_url);
    // @template endif
    let mut api = api
        .env("DATABASE_URL", &args.database_url)
        .env("PORT", args.port.to_string())
        .env("LOG_FORMAT", "pretty")
        .stdin(Stdio::null())
        .spawn()
        .context("starting the api")?;
    // @template if worker
    let mut worker = Command::new(cmd::target_dir().join("debug/worker"))
        .env("DATABASE_URL", &args.database_url)
        .env("AMQP_URL", &args.amqp_url)
        .env("PORT", args.worker_port.to_string())
        .env("LOG_FORMAT", "pretty")
        .stdin(Stdio::null())
        .spawn()
        .context("starting the worker")?;
    // @template endif
    let base = format!("http://127.0.0.1:{}", args.port);
    let mut places = vec![format!("API       {base}/v1/items  (and {base}/v2/items)")];
    // @template if docs
    places.push(format!("Docs      {base}/docs/"));
    // @template endif
    places.push(format!("OpenAPI   {base}/openapi.json"));
    places.push(format!("Metrics   {base}/metrics"));
    places.push(format!("Health    {base}/healthz, {base}/readyz"));
    // @template if worker
    places.push(format!("Jobs      POST {base}/v1/jobs, then GET the Location it answers"));
    places.push(format!("Worker    http://127.0.0.1:{}/metrics, /healthz, /readyz", args.worker_port));
    // @template endif
    eprintln!(
        "\nThe platform is up:\n  {}\n\nWrites need an API key: {} keys create --name me\nCtrl-C stops it.\n",
        places.join("\n  "),
        binary.display()
    );
    // Ctrl-C reaches every process started here (same process group); each
    // drains and exits 0.
    // @template if worker
    let worker_status = worker.wait().context("waiting for the worker")?;
    if !worker_status.success() && worker_status.code().is_some() {
        eprintln!("the worker exited with {worker_status}");
    }
    // @template endif
    let status = api.wait().context("waiting for the api")?;
    if !status.success() && status.code().is_some() {
        bail!("the api exited with {status}");
    }
    Ok(())
}
