//! Postgres settings and the pool every service builds from them.
//!
//! Rules, each closing a failure seen in services without it:
//! - **The pool connects lazily.** A replica starts, and reports not-ready,
//!   while Postgres is down, and recovers on its own when it returns; a pool
//!   that connects eagerly makes the orchestrator restart-loop the replica.
//! - **Every checkout is bounded** (`DB_ACQUIRE_TIMEOUT`): when the pool is
//!   exhausted, callers fail fast instead of queueing without end.
//! - **Every statement is bounded** (`DB_STATEMENT_TIMEOUT`, Postgres's
//!   `statement_timeout`, set once per connection at connect time rather than
//!   with a round trip per checkout). A caller that gave up must not leave a
//!   statement running, and holding locks, on the server.
//! - **No ping on checkout.** A dead connection is found by the query that
//!   uses it and replaced; a ping per checkout would cost a round trip each.

use std::str::FromStr;
use std::time::Duration;

use anyhow::Context;
use secrecy::{ExposeSecret, SecretString};
use sqlx::PgPool;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};

use crate::defaults;
use crate::settings::{Problems, at_least, duration, positive_duration};

/// The Postgres settings as text, documented for `--help`. A binary with
/// other needs changes a default with clap's `mut_arg` (the worker holds a
/// connection per running job, so its pool is larger).
#[derive(Debug, Clone, clap::Args)]
pub struct DatabaseSettings {
    /// Postgres connection URL.
    #[arg(long, env = "DATABASE_URL", default_value = defaults::DATABASE_URL, hide_env_values = true)]
    pub database_url: String,
    /// Most connections this replica's pool opens. Replicas × this must fit
    /// Postgres's max_connections.
    #[arg(long, env = "DB_MAX_CONNECTIONS", default_value = "10")]
    pub db_max_connections: String,
    /// Connections the pool keeps open even when idle.
    #[arg(long, env = "DB_MIN_CONNECTIONS", default_value = "1")]
    pub db_min_connections: String,
    /// How long a caller waits for a pooled connection before it fails.
    #[arg(long, env = "DB_ACQUIRE_TIMEOUT", default_value = "2s")]
    pub db_acquire_timeout: String,
    /// Idle connections above the minimum are closed after this long.
    #[arg(long, env = "DB_IDLE_TIMEOUT", default_value = "10m")]
    pub db_idle_timeout: String,
    /// Connections are recycled after this long, so failovers and
    /// server-side settings reach every connection.
    #[arg(long, env = "DB_MAX_LIFETIME", default_value = "30m")]
    pub db_max_lifetime: String,
    /// Postgres cancels any single statement that runs longer (statement_timeout).
    #[arg(long, env = "DB_STATEMENT_TIMEOUT", default_value = "5s")]
    pub db_statement_timeout: String,
}

/// Validated Postgres settings.
#[derive(Debug, Clone)]
pub struct DatabaseConfig {
    /// It may carry a password, so it never prints.
    pub url: SecretString,
    pub max_connections: u32,
    pub min_connections: u32,
    pub acquire_timeout: Duration,
    pub idle_timeout: Duration,
    pub max_lifetime: Duration,
    pub statement_timeout: Duration,
}

impl DatabaseSettings {
    /// The validated settings, or `None` with every problem in `p`.
    pub fn validate(&self, p: &mut Problems) -> Option<DatabaseConfig> {
        let url = p.parse_secret("DATABASE_URL", &self.database_url, |raw| {
            if !(raw.starts_with("postgres://") || raw.starts_with("postgresql://")) {
                return Err("expected a postgres:// URL".to_owned());
            }
            PgConnectOptions::from_str(raw)
                .map(|_| SecretString::from(raw.to_owned()))
                .map_err(|e| e.to_string())
        });
        let max_connections = p.parse("DB_MAX_CONNECTIONS", &self.db_max_connections, at_least(1u32));
        let min_connections = p.parse("DB_MIN_CONNECTIONS", &self.db_min_connections, u32::from_str);
        let acquire_timeout = p.parse("DB_ACQUIRE_TIMEOUT", &self.db_acquire_timeout, positive_duration);
        let idle_timeout = p.parse("DB_IDLE_TIMEOUT", &self.db_idle_timeout, duration);
        let max_lifetime = p.parse("DB_MAX_LIFETIME", &self.db_max_lifetime, duration);
        let statement_timeout =
            p.parse("DB_STATEMENT_TIMEOUT", &self.db_statement_timeout, positive_duration);
        if let (Some(max), Some(min)) = (max_connections, min_connections) {
            p.check(min <= max, || {
                format!("DB_MIN_CONNECTIONS ({min}) must not exceed DB_MAX_CONNECTIONS ({max})")
            });
        }
        Some(DatabaseConfig {
            url: url?,
            max_connections: max_connections?,
            min_connections: min_connections?,
            acquire_timeout: acquire_timeout?,
            idle_timeout: idle_timeout?,
            max_lifetime: max_lifetime?,
            statement_timeout: statement_timeout?,
        })
    }
}

/// Connection options from the config; `application` names the connections
/// in `pg_stat_activity`, so an operator sees which service holds them.
pub fn connect_options(config: &DatabaseConfig, application: &str) -> anyhow::Result<PgConnectOptions> {
    let options = PgConnectOptions::from_str(config.url.expose_secret()).context("parsing DATABASE_URL")?;
    Ok(options.application_name(application))
}

/// The pool, following the rules above.
pub fn pool(config: &DatabaseConfig, application: &str) -> anyhow::Result<PgPool> {
    let statement_timeout = format!("{}ms", config.statement_timeout.as_millis());
    let options =
        connect_options(config, application)?.options([("statement_timeout", statement_timeout.as_str())]);
    Ok(PgPoolOptions::new()
        .max_connections(config.max_connections)
        .min_connections(config.min_connections)
        .acquire_timeout(config.acquire_timeout)
        .idle_timeout(config.idle_timeout)
        .max_lifetime(config.max_lifetime)
        .test_before_acquire(false)
        .connect_lazy_with(options))
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        database: DatabaseSettings,
    }

    #[derive(Parser)]
    #[command(mut_arg("db_max_connections", |a| a.default_value("20")))]
    struct Bigger {
        #[command(flatten)]
        database: DatabaseSettings,
    }

    fn validate(settings: &DatabaseSettings) -> Result<DatabaseConfig, crate::ConfigErrors> {
        let mut p = Problems::default();
        let config = settings.validate(&mut p);
        p.finish(|| config.expect("no problem means a config"))
    }

    #[test]
    fn defaults_are_valid_and_a_binary_can_change_one() {
        let config = validate(&Cli::parse_from(["x"]).database).expect("valid");
        assert_eq!((config.max_connections, config.acquire_timeout), (10, Duration::from_secs(2)));
        assert_eq!(validate(&Bigger::parse_from(["x"]).database).expect("valid").max_connections, 20);
    }

    #[test]
    fn every_problem_is_reported_and_the_url_never_prints() {
        let mut settings = Cli::parse_from(["x"]).database;
        settings.database_url = "mysql://app:hunter2@db/app".into();
        settings.db_min_connections = "20".into();
        settings.db_statement_timeout = "0s".into();
        settings.db_acquire_timeout = "soon".into();
        let text = validate(&settings).expect_err("invalid").to_string();
        for name in ["DATABASE_URL", "DB_MIN_CONNECTIONS", "DB_STATEMENT_TIMEOUT", "DB_ACQUIRE_TIMEOUT"] {
            assert!(text.contains(name), "{name} missing from {text}");
        }
        assert!(!text.contains("hunter2"), "{text}");
        settings.database_url = "postgres://app:hunter2@db/app".into();
        settings.db_min_connections = "1".into();
        settings.db_statement_timeout = "1s".into();
        settings.db_acquire_timeout = "1s".into();
        assert!(!format!("{:?}", validate(&settings).expect("valid")).contains("hunter2"));
    }
}
