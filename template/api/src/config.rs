//! Typed configuration for the api binary.
//!
//! Precedence, highest first: command-line flag, environment variable, the
//! default written here. Defaults work against the local services on their
//! standard ports; production values come from the environment.
//!
//! Parsing happens in two steps on purpose. Clap collects every setting as
//! text (so `--help` documents each one with its variable and default), then
//! [`Settings::validate`] turns the text into a [`Config`] and reports *every*
//! invalid value at once, instead of stopping at the first as clap would.
//!
//! One file per area, each turning its text into the types of the subsystem
//! that uses them (`http::Cors`, `http::access::AccessConfig`,
//! `redis_client::RedisConfig`, `offload::relay::RelayConfig`, and the Postgres
//! settings shared with the worker in `service::database`). Dependencies
//! point one way: this module imports the subsystems, and no subsystem
//! imports it back. The rules between areas (a statement must not outlive
//! its request) are checked here, in [`Settings::validate`].

mod access;
mod cli;
{% if redis %}mod redis;
{% endif %}{% if worker %}mod relay;
{% endif %}mod server;

{% if redis %}use std::time::Duration;

{% endif %}
use clap::{Args, Parser};
use service::database::{DatabaseConfig, DatabaseSettings};
use service::{ConfigErrors, Problems};

pub use access::AccessSettings;
pub use cli::{Cli, Command, DatabaseArgs, KeysArgs, KeysCommand};
{% if redis %}pub use redis::RedisSettings;
{% endif %}{% if worker %}pub use relay::RelaySettings;
{% endif %}pub use server::{LogFormat, LogSettings, PortSetting, ServerConfig, ServerSettings};

use crate::http::access::AccessConfig;
{% if worker %}use crate::offload::relay::RelayConfig;
{% endif %}{% if redis %}use crate::redis_client::RedisConfig;
{% endif %}
/// Every setting of serving, as text, documented for `--help`.
#[derive(Debug, Clone, Args)]
pub struct Settings {
    #[command(flatten, next_help_heading = "Server")]
    pub server: ServerSettings,
    #[command(flatten, next_help_heading = "Postgres")]
    pub database: DatabaseSettings,
    #[command(flatten, next_help_heading = "Access and rate limits")]
    pub access: AccessSettings,
{% if redis %}    #[command(flatten, next_help_heading = "Redis")]
    pub redis: RedisSettings,
{% endif %}{% if worker %}    #[command(flatten, next_help_heading = "Job relay")]
    pub relay: RelaySettings,
{% endif %}}

/// The validated configuration of serving.
#[derive(Debug, Clone)]
pub struct Config {
    pub server: ServerConfig,
    pub database: DatabaseConfig,
    pub access: AccessConfig,
{% if redis %}    /// `None` when REDIS_URL is empty.
    pub redis: Option<RedisConfig>,
    /// Item cache TTL; zero turns the cache off.
    pub cache_ttl: Duration,
    /// The most requests one shared-limiter round trip leases (1: none).
    pub rate_limit_lease: u32,
    /// Test hook, not a setting: a random pause up to this long between a
    /// cache miss's Postgres read and its cache fill.
    pub cache_fill_delay: Option<Duration>,
{% endif %}{% if worker %}    /// `None` when AMQP_URL is empty.
    pub relay: Option<RelayConfig>,
{% endif %}}

impl Settings {
    /// Settings with every default, as if no flag or variable were set.
    /// Tests start from this and change what they need.
    pub fn defaults() -> Self {
        Cli::parse_from(["api"]).settings
    }

    /// Turns the text settings into a [`Config`], reporting every problem.
    pub fn validate(&self) -> Result<Config, ConfigErrors> {
        let mut p = Problems::default();
        let server = self.server.validate(&mut p);
        let database = self.database.validate(&mut p);
{% if redis %}        let redis = self.redis.validate(&mut p);
        let fail_closed = redis.as_ref().map(|r| r.fail_closed.clone()).unwrap_or_default();
{% endif %}{% unless redis %}        let fail_closed: Vec<String> = Vec::new();
{% endunless %}        let access = self.access.validate(&fail_closed, &mut p);
{% if worker %}        let relay = self.relay.validate(&mut p);
{% endif %}        if let (Some(server), Some(database)) = (&server, &database) {
            // A request that times out drops its future, but Postgres keeps
            // running the statement and may still commit it after the client
            // got a 504. Statements must therefore give up first.
            let (statement, request) = (database.statement_timeout, server.http.request_timeout);
            p.check(statement < request, || {
                format!(
                    "DB_STATEMENT_TIMEOUT ({}) must be shorter than REQUEST_TIMEOUT ({})",
                    humantime::format_duration(statement),
                    humantime::format_duration(request)
                )
            });
        }
        p.finish(|| {
            let missing = "every area without a problem yields its config";
            let server = server.expect(missing);
{% if redis %}            let redis = redis.expect(missing);
{% endif %}            Config {
                server,
                database: database.expect(missing),
                access: access.expect(missing),
{% if redis %}                redis: redis.redis,
                cache_ttl: redis.cache_ttl,
                rate_limit_lease: redis.rate_limit_lease,
                cache_fill_delay: None,
{% endif %}{% if worker %}                relay: relay.expect(missing),
{% endif %}            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid() {
        let config = Settings::defaults().validate().expect("defaults validate");
        assert_eq!(config.server.listen.port(), 8080);
        assert_eq!(config.database.acquire_timeout, std::time::Duration::from_secs(2));
        assert_eq!(config.server.http.cors, crate::http::Cors::Disabled);
    }

    #[test]
    fn every_problem_is_reported_at_once() {
        let mut settings = Settings::defaults();
        settings.server.port.port = "eighty".into();
        settings.database.db_acquire_timeout = "soon".into();
        settings.database.db_min_connections = "20".into();
        settings.server.cors_allowed_origins = "example.com".into();
        let errors = settings.validate().expect_err("invalid settings");
        let text = errors.to_string();
        assert_eq!(errors.0.len(), 4, "{text}");
        for name in ["PORT", "DB_ACQUIRE_TIMEOUT", "DB_MIN_CONNECTIONS", "CORS_ALLOWED_ORIGINS"] {
            assert!(text.contains(name), "{name} missing from: {text}");
        }
    }

    #[test]
    fn rate_limit_settings_are_checked() {
        let mut settings = Settings::defaults();
        settings.access.rate_limit_ip = "off".into();
        settings.access.rate_limit_writes = "5/1s".into();
        settings.access.trusted_proxies = "10.0.0.0/8, 127.0.0.1".into();
        let config = settings.validate().expect("valid");
        assert_eq!(config.access.policies.ip, None);
        assert_eq!(config.access.policies.writes.map(|p| p.rate.quota), Some(5));
        assert_eq!(config.access.trusted_proxies.len(), 2);

        settings.access.rate_limit_key = "lots".into();
        settings.access.trusted_proxies = "10.0.0.0/33".into();
        settings.access.rate_limit_replicas = "0".into();
        let text = settings.validate().expect_err("invalid").to_string();
        for name in ["RATE_LIMIT_KEY", "TRUSTED_PROXIES", "RATE_LIMIT_REPLICAS"] {
            assert!(text.contains(name), "{name} missing from {text}");
        }
    }

{% if redis %}    #[test]
    fn redis_settings_are_checked() {
        let mut settings = Settings::defaults();
        settings.redis.rate_limit_fail_closed = "writes".into();
        let config = settings.validate().expect("valid");
        assert!(config.access.policies.writes.is_some_and(|p| p.fail_closed));
        assert!(config.access.policies.key.is_some_and(|p| !p.fail_closed));
        settings.redis.redis_url = String::new();
        assert!(settings.validate().expect("valid").redis.is_none(), "empty REDIS_URL runs without Redis");

        settings.redis.rate_limit_fail_closed = "everything".into();
        settings.redis.redis_timeout = "5s".into();
        settings.redis.redis_url = "http://nope".into();
        let text = settings.validate().expect_err("invalid").to_string();
        for name in ["RATE_LIMIT_FAIL_CLOSED", "REDIS_TIMEOUT", "REDIS_URL"] {
            assert!(text.contains(name), "{name} missing from {text}");
        }
    }
{% endif %}
    #[test]
    fn a_zero_timeout_is_refused() {
        let mut settings = Settings::defaults();
        settings.server.request_timeout = "0s".into();
        assert!(settings.validate().is_err());
    }

    #[test]
    fn a_statement_may_not_outlive_its_request() {
        let mut settings = Settings::defaults();
        settings.server.request_timeout = "5s".into();
        settings.database.db_statement_timeout = "5s".into();
        let errors = settings.validate().expect_err("invalid");
        assert!(errors.to_string().contains("must be shorter than REQUEST_TIMEOUT"), "{errors}");
    }

    #[test]
    fn the_database_url_never_prints() {
        let mut settings = Settings::defaults();
        settings.database.database_url = "postgres://app:hunter2@db/app".into();
        let config = settings.validate().expect("valid");
        assert!(!format!("{config:?}").contains("hunter2"));
    }
}
