//! The worker's configuration: flags, environment variables, defaults.
//! Every setting is checked before anything starts, and every problem is
//! reported at once (see `service::settings`). The Postgres settings are the
//! api's (`service::database`), with a larger pool: each running job holds a
//! connection.

use std::net::{IpAddr, SocketAddr};
use std::str::FromStr;
use std::time::Duration;

use clap::Parser;
use secrecy::SecretString;
use service::database::{DatabaseConfig, DatabaseSettings};
use service::settings::{at_least, duration};
use service::{ConfigErrors, Problems, defaults};

/// The command line of the `worker` binary.
#[derive(Debug, Clone, Parser)]
#[command(
    name = "worker",
    version,
    about = "The job worker.",
    args_conflicts_with_subcommands = true,
    mut_arg("db_max_connections", |a| a.default_value("20")
        .help("Most Postgres connections; each running job holds one, so at least WORKER_CONCURRENCY")),
    mut_arg("db_acquire_timeout", |a| a.default_value("5s")),
    mut_arg("db_statement_timeout", |a| a.default_value("30s")
        .help("Postgres cancels any single statement of a job that runs longer (statement_timeout)")),
)]
pub struct Cli {
    /// Address the health and metrics endpoints listen on.
    #[arg(long, env = "HOST", default_value = "0.0.0.0")]
    pub host: String,
    #[command(flatten)]
    pub port: PortSetting,
    #[command(flatten, next_help_heading = "Postgres")]
    pub database: DatabaseSettings,
    /// RabbitMQ URL. Its `heartbeat` query parameter (seconds) sets how fast
    /// a dead link is noticed (default 10).
    #[arg(long, env = "AMQP_URL", default_value = defaults::AMQP_URL, hide_env_values = true)]
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

/// The port of the health and metrics endpoints, which `worker healthcheck`
/// reads too.
#[derive(Debug, Clone, clap::Args)]
pub struct PortSetting {
    /// Port of `/healthz`, `/readyz` and `/metrics`.
    #[arg(long, env = "PORT", default_value = "8081")]
    pub port: String,
}

impl PortSetting {
    pub fn validate(&self, p: &mut Problems) -> Option<u16> {
        p.parse("PORT", &self.port, u16::from_str)
    }
}

/// `worker <command>`.
#[derive(Debug, Clone, clap::Subcommand)]
pub enum Command {
    /// Exit 0 if the worker on this host's PORT answers `GET /healthz` with
    /// 200 (the container image's HEALTHCHECK: it has no shell or curl).
    Healthcheck(PortSetting),
}

/// Validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// Where the health endpoints listen.
    pub listen: SocketAddr,
    pub database: DatabaseConfig,
    /// It may carry a password, so it never prints.
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

    /// Checks every setting, reporting every problem at once.
    pub fn validate(&self) -> Result<Config, ConfigErrors> {
        let mut p = Problems::default();
        let host = p.parse("HOST", &self.host, IpAddr::from_str);
        let port = self.port.validate(&mut p);
        let database = self.database.validate(&mut p);
        let amqp_url = p.parse_secret("AMQP_URL", &self.amqp_url, |raw| {
            jobs::broker::validate_url(raw).map(|()| SecretString::from(raw.to_owned()))
        });
        let prefix = self.amqp_queue_prefix.trim();
        p.check(!prefix.is_empty(), || "AMQP_QUEUE_PREFIX must not be empty".to_owned());
        let concurrency = p.parse("WORKER_CONCURRENCY", &self.worker_concurrency, at_least(1u16));
        let retry_delays = p.parse("JOB_RETRY_DELAYS", &self.job_retry_delays, parse_delays);
        let max_attempts = p.parse("JOB_MAX_ATTEMPTS", &self.job_max_attempts, at_least(1i32));
        let shutdown_grace = p.parse("SHUTDOWN_GRACE", &self.shutdown_grace, duration);
        let log_format = p.parse("LOG_FORMAT", &self.log_format, LogFormat::from_str);
        if let (Some(database), Some(concurrency)) = (&database, concurrency) {
            let pool = database.max_connections;
            p.check(pool >= u32::from(concurrency), || {
                format!(
                    "DB_MAX_CONNECTIONS ({pool}) must be at least WORKER_CONCURRENCY ({concurrency}): each running job holds a connection"
                )
            });
        }
        let missing = "a setting without a problem has a value";
        p.finish(|| Config {
            listen: SocketAddr::new(host.expect(missing), port.expect(missing)),
            database: database.expect(missing),
            amqp_url: amqp_url.expect(missing),
            topology: jobs::Topology::new(prefix),
            concurrency: concurrency.expect(missing),
            retry_delays: retry_delays.expect(missing),
            max_attempts: max_attempts.expect(missing),
            shutdown_grace: shutdown_grace.expect(missing),
            log_format: log_format.expect(missing),
            name: format!(
                "{}-{}",
                std::env::var("HOSTNAME").unwrap_or_else(|_| "worker".to_owned()),
                std::process::id()
            ),
        })
    }
}

fn parse_delays(raw: &str) -> Result<Vec<Duration>, String> {
    let delays = raw
        .split(',')
        .map(|d| duration(d.trim()).map_err(|e| e.to_string()))
        .collect::<Result<Vec<_>, _>>()?;
    if delays.iter().any(Duration::is_zero) {
        return Err("every delay must be more than zero".to_owned());
    }
    Ok(delays)
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
        cli.port.port = "high".into();
        cli.worker_concurrency = "0".into();
        cli.job_retry_delays = "1s,soon".into();
        cli.amqp_url = "http://nope".into();
        let problems = cli.validate().expect_err("invalid").to_string();
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
        let problems = cli.validate().expect_err("pool too small").to_string();
        assert!(problems.contains("DB_MAX_CONNECTIONS"), "{problems}");
    }
}
