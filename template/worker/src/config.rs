//! The worker's configuration: flags, environment variables, defaults.
//! Every setting is checked before anything starts, and every problem is
//! reported at once.

use std::fmt::Write as _;
use std::net::{IpAddr, SocketAddr};
use std::str::FromStr;
use std::time::Duration;

use clap::Parser;
use secrecy::SecretString;
use sqlx::postgres::PgConnectOptions;

/// The command line of the `worker` binary.
#[derive(Debug, Clone, Parser)]
#[command(name = "worker", version, about = "The job worker.")]
pub struct Cli {
    /// Address the health and metrics endpoints listen on.
    #[arg(long, env = "HOST", default_value = "0.0.0.0")]
    pub host: String,
    /// Port of `/healthz`, `/readyz` and `/metrics`.
    #[arg(long, env = "PORT", default_value = "8081")]
    pub port: String,
    /// Postgres URL (the api's database).
    #[arg(
        long,
        env = "DATABASE_URL",
        default_value = concat!("postgres://postgres@127.0.0.1:5432/", env!("PROJECT_NAME")),
        hide_env_values = true
    )]
    pub database_url: String,
    /// Most Postgres connections; each running job holds one.
    #[arg(long, env = "DB_MAX_CONNECTIONS", default_value = "20")]
    pub db_max_connections: String,
    /// RabbitMQ URL. Its `heartbeat` query parameter (seconds) sets how fast
    /// a dead link is noticed (default 10).
    #[arg(
        long,
        env = "AMQP_URL",
        default_value = "amqp://guest:guest@127.0.0.1:5672/%2f",
        hide_env_values = true
    )]
    pub amqp_url: String,
    /// Prefix of every queue and exchange name; the api must use the same.
    #[arg(long, env = "AMQP_QUEUE_PREFIX", default_value = env!("PROJECT_NAME"))]
    pub amqp_queue_prefix: String,
    /// Jobs run at once; also the prefetch (unacked deliveries held).
    #[arg(long, env = "WORKER_CONCURRENCY", default_value = "16")]
    pub worker_concurrency: String,
    /// Waits before retrying a transient failure, by attempt, comma
    /// separated; the last repeats. Each is its own delay queue.
    #[arg(long, env = "JOB_RETRY_DELAYS", default_value = "1s,10s,1m")]
    pub job_retry_delays: String,
    /// Attempts before a transiently failing job is given up as failed.
    #[arg(long, env = "JOB_MAX_ATTEMPTS", default_value = "5")]
    pub job_max_attempts: String,
    /// On SIGTERM: how long started jobs may take to finish. Whatever is
    /// still running then is abandoned and redelivered elsewhere.
    #[arg(long, env = "SHUTDOWN_GRACE", default_value = "25s")]
    pub shutdown_grace: String,
    /// Log format: `json` (one object per line) or `pretty`.
    #[arg(long, env = "LOG_FORMAT", default_value = "json")]
    pub log_format: String,
    /// What to do instead of running the worker.
    #[command(subcommand)]
    pub command: Option<Command>,
}

/// `worker <command>`.
#[derive(Debug, Clone, clap::Subcommand)]
pub enum Command {
    /// Exit 0 if the worker on this host's PORT answers `GET /healthz` with
    /// 200 (the container image's HEALTHCHECK: it has no shell or curl).
    Healthcheck,
}

/// Validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// Where the health endpoints listen.
    pub listen: SocketAddr,
    /// Postgres URL.
    pub database_url: SecretString,
    /// Pool size.
    pub db_max_connections: u32,
    /// RabbitMQ URL.
    pub amqp_url: SecretString,
    /// Queue names.
    pub topology: jobs::Topology,
    /// Jobs at once, and the prefetch.
    pub concurrency: u16,
    /// Retry delays by attempt.
    pub retry_delays: Vec<Duration>,
    /// Attempts before giving up on transient failures.
    pub max_attempts: i32,
    /// Drain time on SIGTERM.
    pub shutdown_grace: Duration,
    /// Log format.
    pub log_format: LogFormat,
    /// Name recorded with each effect (host and process id).
    pub name: String,
}

pub use telemetry::LogFormat;

impl Cli {
    /// Settings with every default, as if no flag or variable were set.
    pub fn defaults() -> Self {
        Self::parse_from(["worker"])
    }

    /// Checks every setting; the error lists every problem, one per line.
    pub fn validate(&self) -> Result<Config, String> {
        let mut problems = Vec::new();
        let mut check = |name: &str, raw: &str, ok: Result<(), String>| {
            if let Err(err) = ok {
                problems.push(format!("{name}={raw:?}: {err}"));
            }
        };
        let host = IpAddr::from_str(&self.host);
        check("HOST", &self.host, host.as_ref().map(drop).map_err(ToString::to_string));
        let port = u16::from_str(&self.port);
        check("PORT", &self.port, port.as_ref().map(drop).map_err(ToString::to_string));
        let db = PgConnectOptions::from_str(&self.database_url);
        check("DATABASE_URL", "…", db.as_ref().map(drop).map_err(ToString::to_string));
        let pool = u32::from_str(&self.db_max_connections)
            .map_err(|e| e.to_string())
            .and_then(|n| if n >= 2 { Ok(n) } else { Err("must be at least 2".to_owned()) });
        check("DB_MAX_CONNECTIONS", &self.db_max_connections, pool.as_ref().map(drop).map_err(Clone::clone));
        check("AMQP_URL", "…", jobs::broker::validate_url(&self.amqp_url));
        let prefix = self.amqp_queue_prefix.trim();
        check(
            "AMQP_QUEUE_PREFIX",
            prefix,
            if prefix.is_empty() { Err("must not be empty".to_owned()) } else { Ok(()) },
        );
        let concurrency = u16::from_str(&self.worker_concurrency)
            .map_err(|e| e.to_string())
            .and_then(|n| if n >= 1 { Ok(n) } else { Err("must be at least 1".to_owned()) });
        check(
            "WORKER_CONCURRENCY",
            &self.worker_concurrency,
            concurrency.as_ref().map(drop).map_err(Clone::clone),
        );
        let delays: Result<Vec<Duration>, String> = self
            .job_retry_delays
            .split(',')
            .map(|d| humantime::parse_duration(d.trim()).map_err(|e| e.to_string()))
            .collect::<Result<Vec<_>, _>>()
            .and_then(|d| {
                if d.iter().all(|d| !d.is_zero()) {
                    Ok(d)
                } else {
                    Err("every delay must be more than zero".to_owned())
                }
            });
        check("JOB_RETRY_DELAYS", &self.job_retry_delays, delays.as_ref().map(drop).map_err(Clone::clone));
        let max_attempts = i32::from_str(&self.job_max_attempts)
            .map_err(|e| e.to_string())
            .and_then(|n| if n >= 1 { Ok(n) } else { Err("must be at least 1".to_owned()) });
        check(
            "JOB_MAX_ATTEMPTS",
            &self.job_max_attempts,
            max_attempts.as_ref().map(drop).map_err(Clone::clone),
        );
        let grace = humantime::parse_duration(&self.shutdown_grace);
        check("SHUTDOWN_GRACE", &self.shutdown_grace, grace.as_ref().map(drop).map_err(ToString::to_string));
        let log_format = self.log_format.parse::<LogFormat>();
        check("LOG_FORMAT", &self.log_format, log_format.as_ref().map(drop).map_err(Clone::clone));
        if let (Ok(pool), Ok(concurrency)) = (&pool, &concurrency)
            && *pool < u32::from(*concurrency)
        {
            problems.push(format!(
                "DB_MAX_CONNECTIONS ({pool}) must be at least WORKER_CONCURRENCY ({concurrency}): each running job holds a connection"
            ));
        }
        match (host, port, pool, concurrency, delays, max_attempts, grace, log_format) {
            (
                Ok(host),
                Ok(port),
                Ok(pool),
                Ok(concurrency),
                Ok(delays),
                Ok(max_attempts),
                Ok(grace),
                Ok(log_format),
            ) if problems.is_empty() => Ok(Config {
                listen: SocketAddr::new(host, port),
                database_url: SecretString::from(self.database_url.clone()),
                db_max_connections: pool,
                amqp_url: SecretString::from(self.amqp_url.clone()),
                topology: jobs::Topology::new(prefix),
                concurrency,
                retry_delays: delays,
                max_attempts,
                shutdown_grace: grace,
                log_format,
                name: format!(
                    "{}-{}",
                    std::env::var("HOSTNAME").unwrap_or_else(|_| "worker".to_owned()),
                    std::process::id()
                ),
            }),
            _ => Err(problems.iter().fold(String::new(), |mut out, p| {
                let _ = writeln!(out, "  {p}");
                out
            })),
        }
    }
}

impl Config {
    /// The delay before retry number `attempt` (1-based); the last repeats.
    pub fn retry_delay(&self, attempt: i32) -> Duration {
        let index = usize::try_from(attempt.max(1) - 1).unwrap_or(0).min(self.retry_delays.len() - 1);
        self.retry_delays[index]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid() {
        let config = Cli::defaults().validate().expect("defaults are valid");
        assert_eq!(config.retry_delay(1), Duration::from_secs(1));
        assert_eq!(config.retry_delay(3), Duration::from_mins(1));
        assert_eq!(config.retry_delay(9), Duration::from_mins(1));
    }

    #[test]
    fn every_problem_is_reported_at_once() {
        let mut cli = Cli::defaults();
        cli.port = "high".into();
        cli.worker_concurrency = "0".into();
        cli.job_retry_delays = "1s,soon".into();
        cli.amqp_url = "http://nope".into();
        let problems = cli.validate().expect_err("invalid");
        for name in ["PORT", "WORKER_CONCURRENCY", "JOB_RETRY_DELAYS", "AMQP_URL"] {
            assert!(problems.contains(name), "{name} missing from {problems}");
        }
    }

    #[test]
    fn the_configuration_table_lists_every_setting() {
        use clap::CommandFactory as _;
        let doc = include_str!("../../docs/configuration.md");
        let section = doc.split("## The worker").nth(1).expect("docs/configuration.md has a worker section");
        for arg in Cli::command().get_arguments() {
            let Some(env) = arg.get_env() else { continue };
            let row = format!("| `{}` |", env.to_string_lossy());
            assert!(section.contains(&row), "the worker table lacks {row}");
        }
    }

    #[test]
    fn the_pool_must_hold_every_running_job() {
        let mut cli = Cli::defaults();
        cli.worker_concurrency = "32".into();
        let problems = cli.validate().expect_err("pool too small");
        assert!(problems.contains("DB_MAX_CONNECTIONS"), "{problems}");
    }
}
