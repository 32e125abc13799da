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

use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::str::FromStr;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use ipnet::IpNet;
use secrecy::SecretString;
use sqlx::postgres::PgConnectOptions;

{% if worker %}use crate::jobs::relay::RelayConfig;
{% endif %}use crate::ratelimit::{Policies, Policy, Rate};
use crate::versioning::{Deprecation, Deprecations};

/// The command line of the `api` binary.
#[derive(Debug, Parser)]
#[command(name = "api", version, about = "The HTTP API.")]
pub struct Cli {
    /// What to do; with no subcommand the API serves HTTP.
    #[command(subcommand)]
    pub command: Option<Command>,
    /// Every setting, shared by all subcommands.
    #[command(flatten)]
    pub settings: Settings,
}

/// The subcommands besides serving.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Serve HTTP (the default).
    Serve,
    /// Create the database if it is missing, apply pending migrations, and exit.
    Migrate,
    /// Manage API keys.
    #[command(subcommand)]
    Keys(KeysCommand),
    /// Exit 0 if the api on this host's PORT answers `GET /healthz` with 200
    /// (the container image's HEALTHCHECK: it has no shell or curl).
    Healthcheck,
}

/// `api keys …`.
#[derive(Debug, Subcommand)]
pub enum KeysCommand {
    /// Create a key and print it. It is shown this once; only its hash is stored.
    Create {
        /// What the key is for (shown in `keys list`).
        #[arg(long)]
        name: String,
        /// Scopes, comma separated.
        #[arg(long, default_value = crate::keys::DEFAULT_SCOPES)]
        scopes: String,
        /// The key's own rate for the `key` policy (QUOTA/WINDOW[;burst=N]);
        /// without it, RATE_LIMIT_KEY applies.
        #[arg(long)]
        rate: Option<String>,
    },
    /// List keys: prefix, name, scopes, rate, state. Never the keys.
    List,
    /// Revoke a key by its prefix (such as `ak_3f9a1c2e`); every replica
    /// refuses it within API_KEY_REFRESH.
    Revoke {
        /// The key's prefix.
        prefix: String,
    },
}

/// Every setting as text, documented for `--help`.
#[derive(Debug, Clone, Args)]
pub struct Settings {
    /// Address to listen on.
    #[arg(long, env = "HOST", default_value = "0.0.0.0", global = true)]
    pub host: String,
    /// Port to listen on (0 picks a free one).
    #[arg(long, env = "PORT", default_value = "8080", global = true)]
    pub port: String,
    /// Postgres connection URL.
    #[arg(
        long,
        env = "DATABASE_URL",
        default_value = concat!("postgres://postgres@127.0.0.1:5432/", env!("PROJECT_NAME")),
        hide_env_values = true,
        global = true
    )]
    pub database_url: String,
    /// Most connections this replica's pool opens. Replicas × this must fit
    /// Postgres's max_connections.
    #[arg(long, env = "DB_MAX_CONNECTIONS", default_value = "10", global = true)]
    pub db_max_connections: String,
    /// Connections the pool keeps open even when idle.
    #[arg(long, env = "DB_MIN_CONNECTIONS", default_value = "1", global = true)]
    pub db_min_connections: String,
    /// How long a request waits for a pooled connection before it gets 503.
    #[arg(long, env = "DB_ACQUIRE_TIMEOUT", default_value = "2s", global = true)]
    pub db_acquire_timeout: String,
    /// Idle connections above the minimum are closed after this long.
    #[arg(long, env = "DB_IDLE_TIMEOUT", default_value = "10m", global = true)]
    pub db_idle_timeout: String,
    /// Connections are recycled after this long, so failovers and
    /// server-side settings reach every connection.
    #[arg(long, env = "DB_MAX_LIFETIME", default_value = "30m", global = true)]
    pub db_max_lifetime: String,
    /// Postgres cancels any single statement that runs longer (statement_timeout).
    #[arg(long, env = "DB_STATEMENT_TIMEOUT", default_value = "5s", global = true)]
    pub db_statement_timeout: String,
    /// Apply pending migrations when the server starts.
    #[arg(long, env = "MIGRATE_ON_START", default_value = "false", global = true)]
    pub migrate_on_start: String,
    /// A request that takes longer is answered 504. Must exceed
    /// DB_STATEMENT_TIMEOUT, so a statement never outlives its request.
    #[arg(long, env = "REQUEST_TIMEOUT", default_value = "10s", global = true)]
    pub request_timeout: String,
    /// Largest request body accepted, in bytes (413 above it). NGINX's
    /// client_max_body_size must match.
    #[arg(long, env = "BODY_LIMIT_BYTES", default_value = "65536", global = true)]
    pub body_limit_bytes: String,
    /// On SIGTERM, keep serving this long with readiness at 503 so load
    /// balancers stop routing here before the listener closes.
    #[arg(long, env = "SHUTDOWN_DELAY", default_value = "0s", global = true)]
    pub shutdown_delay: String,
    /// After the listener closes, in-flight requests get this long to finish.
    #[arg(long, env = "SHUTDOWN_GRACE", default_value = "20s", global = true)]
    pub shutdown_grace: String,
    /// Origins allowed by CORS, comma separated; empty disables CORS, `*` allows any.
    #[arg(long, env = "CORS_ALLOWED_ORIGINS", default_value = "", global = true)]
    pub cors_allowed_origins: String,
    /// Deprecated API versions, comma separated, each
    /// `VERSION|DEPRECATED_AT[|SUNSET_AT[|LINK]]` with RFC 3339 times, for
    /// example `v1|2026-09-01T00:00:00Z|2027-03-01T00:00:00Z|https://example.com/migrate`.
    #[arg(long, env = "API_DEPRECATIONS", default_value = "", global = true)]
    pub api_deprecations: String,
{% if redis %}    /// Redis URL for the item cache and the rate limits shared by all
    /// replicas. Empty runs without Redis: no cache, per-replica limits.
    #[arg(
        long,
        env = "REDIS_URL",
        default_value = "redis://127.0.0.1:6379",
        hide_env_values = true,
        global = true
    )]
    pub redis_url: String,
    /// Hard limit on every Redis call; a slower answer counts as a failure,
    /// and repeated failures open the circuit breaker.
    #[arg(long, env = "REDIS_TIMEOUT", default_value = "50ms", global = true)]
    pub redis_timeout: String,
    /// Prefix of every Redis key this service writes.
    #[arg(long, env = "REDIS_KEY_PREFIX", default_value = env!("PROJECT_NAME"), global = true)]
    pub redis_key_prefix: String,
    /// How long an item stays in the Redis cache; `0s` turns the cache off.
    #[arg(long, env = "CACHE_TTL", default_value = "5m", global = true)]
    pub cache_ttl: String,
    /// Policies that answer 503 instead of falling back to per-replica
    /// limits while Redis is unreachable, comma separated (key, ip, writes).
    #[arg(long, env = "RATE_LIMIT_FAIL_CLOSED", default_value = "", global = true)]
    pub rate_limit_fail_closed: String,
{% endif %}{% if worker %}    /// RabbitMQ URL the outbox relay publishes jobs to. Its `heartbeat`
    /// query parameter (seconds) sets how fast a dead link is noticed
    /// (default 10). Empty runs no relay in this replica: jobs wait in the
    /// outbox for a replica that has one.
    #[arg(
        long,
        env = "AMQP_URL",
        default_value = "amqp://guest:guest@127.0.0.1:5672/%2f",
        hide_env_values = true,
        global = true
    )]
    pub amqp_url: String,
    /// Prefix of every queue and exchange name; the worker must use the same.
    #[arg(long, env = "AMQP_QUEUE_PREFIX", default_value = env!("PROJECT_NAME"), global = true)]
    pub amqp_queue_prefix: String,
    /// Longest wait between outbox passes. A replica's own jobs are relayed
    /// at once; this bounds the delay for other replicas' jobs and retries.
    #[arg(long, env = "OUTBOX_POLL", default_value = "500ms", global = true)]
    pub outbox_poll: String,
    /// Outbox rows published per pass (and per transaction).
    #[arg(long, env = "OUTBOX_BATCH", default_value = "100", global = true)]
    pub outbox_batch: String,
    /// How long RabbitMQ may take to confirm a batch before its unconfirmed
    /// rows are retried and the connection is rebuilt.
    #[arg(long, env = "OUTBOX_CONFIRM_TIMEOUT", default_value = "5s", global = true)]
    pub outbox_confirm_timeout: String,
{% endif %}    /// `Cache-Control: public, max-age` for anonymous reads, which any cache
    /// (NGINX, a CDN, the browser) may then store; `0s` sends none.
    #[arg(long, env = "HTTP_CACHE_MAX_AGE", default_value = "5s", global = true)]
    pub http_cache_max_age: String,
    /// Default rate per API key (QUOTA/WINDOW[;burst=N], or `off`). A key
    /// created with --rate has its own.
    #[arg(long, env = "RATE_LIMIT_KEY", default_value = "50/1s;burst=100", global = true)]
    pub rate_limit_key: String,
    /// Rate per client address for anonymous reads (or `off`).
    #[arg(long, env = "RATE_LIMIT_IP", default_value = "10/1s;burst=20", global = true)]
    pub rate_limit_ip: String,
    /// Rate per caller for writes, on top of the caller's own (or `off`).
    #[arg(long, env = "RATE_LIMIT_WRITES", default_value = "10/1s;burst=10", global = true)]
    pub rate_limit_writes: String,
    /// Replicas sharing the traffic. A replica limiting on its own (without
    /// Redis, or while Redis is down) admits its share: rate ÷ replicas.
    #[arg(long, env = "RATE_LIMIT_REPLICAS", default_value = "1", global = true)]
    pub rate_limit_replicas: String,
    /// Proxies whose X-Forwarded-For is believed, as CIDRs, comma separated
    /// (for example the NGINX subnet). Empty trusts none.
    #[arg(long, env = "TRUSTED_PROXIES", default_value = "", global = true)]
    pub trusted_proxies: String,
    /// How often each replica checks for new and revoked API keys.
    #[arg(long, env = "API_KEY_REFRESH", default_value = "1s", global = true)]
    pub api_key_refresh: String,
    /// Log format: `json` (one object per line) or `pretty` (for a terminal).
    /// The level comes from RUST_LOG (default `info`).
    #[arg(long, env = "LOG_FORMAT", default_value = "json", global = true)]
    pub log_format: String,
}

/// Validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// Socket address to bind.
    pub listen: SocketAddr,
    /// Postgres settings.
    pub database: DatabaseConfig,
    /// Run migrations at start.
    pub migrate_on_start: bool,
    /// Per-request time limit.
    pub request_timeout: Duration,
    /// Request body limit in bytes.
    pub body_limit_bytes: usize,
    /// Time between SIGTERM and closing the listener.
    pub shutdown_delay: Duration,
    /// Time in-flight requests get once the listener is closed.
    pub shutdown_grace: Duration,
    /// CORS policy.
    pub cors: Cors,
    /// Versions marked deprecated.
    pub deprecations: Deprecations,
    /// Log output format.
    pub log_format: LogFormat,
    /// API keys, rate limits and HTTP caching.
    pub access: AccessConfig,
{% if redis %}    /// Redis, when configured.
    pub redis: Option<RedisConfig>,
    /// Item cache TTL; zero turns the cache off.
    pub cache_ttl: Duration,
    /// Test hook, not a setting: a random pause up to this long between a
    /// cache miss's Postgres read and its cache fill.
    pub cache_fill_delay: Option<Duration>,
{% endif %}{% if worker %}    /// The outbox relay; `None` when AMQP_URL is empty.
    pub relay: Option<RelayConfig>,
{% endif %}}

/// API keys, rate limits and HTTP caching.
#[derive(Debug, Clone)]
pub struct AccessConfig {
    /// The rate-limit policies.
    pub policies: Policies,
    /// Replicas sharing the traffic (sizes the per-replica fallback).
    pub replicas: u32,
    /// Proxies whose `X-Forwarded-For` is believed.
    pub trusted_proxies: Vec<IpNet>,
    /// `max-age` for anonymous reads.
    pub public_max_age: Duration,
    /// API key refresh interval.
    pub key_refresh: Duration,
}

{% if redis %}/// Redis settings.
#[derive(Debug, Clone)]
pub struct RedisConfig {
    /// The URL; it may carry a password, so it never prints.
    pub url: SecretString,
    /// Per-call time limit.
    pub timeout: Duration,
    /// Prefix of every key.
    pub key_prefix: String,
}
{% endif %}
/// Postgres pool settings.
#[derive(Debug, Clone)]
pub struct DatabaseConfig {
    /// The connection URL; it may carry a password, so it never prints.
    pub url: SecretString,
    /// Pool upper bound.
    pub max_connections: u32,
    /// Pool lower bound.
    pub min_connections: u32,
    /// Wait for a connection before failing with 503.
    pub acquire_timeout: Duration,
    /// Idle connection reaping.
    pub idle_timeout: Duration,
    /// Connection recycling.
    pub max_lifetime: Duration,
    /// Postgres `statement_timeout` for every pooled connection.
    pub statement_timeout: Duration,
}

/// Which origins may call the API from a browser.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Cors {
    /// No CORS headers at all: browsers on other origins are refused.
    Disabled,
    /// Any origin (no credentials).
    Any,
    /// These exact origins.
    Origins(Vec<String>),
}

pub use telemetry::LogFormat;

/// Every problem found in the settings, reported together.
#[derive(Debug)]
pub struct ConfigErrors(pub Vec<String>);

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "invalid configuration ({} problems):", self.0.len())?;
        for problem in &self.0 {
            writeln!(f, "  - {problem}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigErrors {}

/// Collects parse failures so that all of them are reported at once.
#[derive(Default)]
struct Problems(Vec<String>);

impl Problems {
    fn parse<T, E: fmt::Display>(
        &mut self,
        name: &str,
        raw: &str,
        parse: impl FnOnce(&str) -> Result<T, E>,
    ) -> Option<T> {
        match parse(raw.trim()) {
            Ok(value) => Some(value),
            Err(err) => {
                self.0.push(format!("{name}={raw:?}: {err}"));
                None
            }
        }
    }

    fn check(&mut self, ok: bool, message: impl FnOnce() -> String) {
        if !ok {
            self.0.push(message());
        }
    }
}

fn duration(raw: &str) -> Result<Duration, humantime::DurationError> {
    humantime::parse_duration(raw)
}

fn boolean(raw: &str) -> Result<bool, String> {
    match raw.to_ascii_lowercase().as_str() {
        "true" | "1" | "yes" | "on" => Ok(true),
        "false" | "0" | "no" | "off" => Ok(false),
        _ => Err("expected true or false".to_owned()),
    }
}

impl Settings {
    /// Settings with every default, as if no flag or variable were set.
    /// Tests start from this and change what they need.
    pub fn defaults() -> Self {
        Cli::parse_from(["api"]).settings
    }

    /// Turns the text settings into a [`Config`], reporting every problem.
    #[allow(clippy::too_many_lines, reason = "one flat list of every setting reads better than fragments")]
    pub fn validate(&self) -> Result<Config, ConfigErrors> {
        let mut p = Problems::default();
        let host = p.parse("HOST", &self.host, IpAddr::from_str);
        let port = p.parse("PORT", &self.port, u16::from_str);
        let url = p.parse("DATABASE_URL", &self.database_url, |raw| {
            PgConnectOptions::from_str(raw)
                .map(|_| SecretString::from(raw.to_owned()))
                .map_err(|err| err.to_string())
        });
        let max_connections = p.parse("DB_MAX_CONNECTIONS", &self.db_max_connections, u32::from_str);
        let min_connections = p.parse("DB_MIN_CONNECTIONS", &self.db_min_connections, u32::from_str);
        let acquire_timeout = p.parse("DB_ACQUIRE_TIMEOUT", &self.db_acquire_timeout, duration);
        let idle_timeout = p.parse("DB_IDLE_TIMEOUT", &self.db_idle_timeout, duration);
        let max_lifetime = p.parse("DB_MAX_LIFETIME", &self.db_max_lifetime, duration);
        let statement_timeout = p.parse("DB_STATEMENT_TIMEOUT", &self.db_statement_timeout, duration);
        let migrate_on_start = p.parse("MIGRATE_ON_START", &self.migrate_on_start, boolean);
        let request_timeout = p.parse("REQUEST_TIMEOUT", &self.request_timeout, duration);
        let body_limit_bytes = p.parse("BODY_LIMIT_BYTES", &self.body_limit_bytes, usize::from_str);
        let shutdown_delay = p.parse("SHUTDOWN_DELAY", &self.shutdown_delay, duration);
        let shutdown_grace = p.parse("SHUTDOWN_GRACE", &self.shutdown_grace, duration);
        let cors = p.parse("CORS_ALLOWED_ORIGINS", &self.cors_allowed_origins, parse_cors);
        let deprecations = p.parse("API_DEPRECATIONS", &self.api_deprecations, Deprecations::parse);
        let log_format = p.parse("LOG_FORMAT", &self.log_format, LogFormat::from_str);
        let http_cache_max_age = p.parse("HTTP_CACHE_MAX_AGE", &self.http_cache_max_age, duration);
        let replicas = p.parse("RATE_LIMIT_REPLICAS", &self.rate_limit_replicas, u32::from_str);
        let trusted_proxies = p.parse("TRUSTED_PROXIES", &self.trusted_proxies, parse_networks);
        let key_refresh = p.parse("API_KEY_REFRESH", &self.api_key_refresh, duration);
{% if redis %}        let fail_closed = p.parse("RATE_LIMIT_FAIL_CLOSED", &self.rate_limit_fail_closed, parse_policy_names);
        let redis_timeout = p.parse("REDIS_TIMEOUT", &self.redis_timeout, duration);
        let cache_ttl = p.parse("CACHE_TTL", &self.cache_ttl, duration);
        let redis_url = p.parse("REDIS_URL", &self.redis_url, |raw| {
            if raw.is_empty() {
                return Ok(None);
            }
            redis::Client::open(raw)
                .map(|_| Some(SecretString::from(raw.to_owned())))
                .map_err(|e| e.to_string())
        });
        p.check(!self.redis_key_prefix.trim().is_empty(), || "REDIS_KEY_PREFIX must not be empty".to_owned());
        if let Some(timeout) = redis_timeout {
            p.check(!timeout.is_zero() && timeout <= Duration::from_secs(1), || {
                "REDIS_TIMEOUT must be more than zero and at most 1s: Redis must never hold requests up"
                    .to_owned()
            });
        }
        let fail_closed = fail_closed.unwrap_or_default();
{% endif %}{% if worker %}        let amqp_url = p.parse("AMQP_URL", &self.amqp_url, |raw| {
            if raw.is_empty() {
                return Ok(None);
            }
            jobs::broker::validate_url(raw).map(|()| Some(SecretString::from(raw.to_owned())))
        });
        let outbox_poll = p.parse("OUTBOX_POLL", &self.outbox_poll, duration);
        let outbox_batch = p.parse("OUTBOX_BATCH", &self.outbox_batch, u32::from_str);
        let outbox_confirm_timeout =
            p.parse("OUTBOX_CONFIRM_TIMEOUT", &self.outbox_confirm_timeout, duration);
        p.check(!self.amqp_queue_prefix.trim().is_empty(), || {
            "AMQP_QUEUE_PREFIX must not be empty".to_owned()
        });
        p.check(outbox_batch.is_none_or(|b| (1..=10_000).contains(&b)), || {
            "OUTBOX_BATCH must be between 1 and 10000".to_owned()
        });
        for (name, value) in
            [("OUTBOX_POLL", outbox_poll), ("OUTBOX_CONFIRM_TIMEOUT", outbox_confirm_timeout)]
        {
            p.check(value.is_none_or(|d| !d.is_zero()), || format!("{name} must be more than zero"));
        }
{% endif %}{% unless redis %}        let fail_closed: Vec<String> = Vec::new();
{% endunless %}        let mut policy = |name: &'static str, raw: &str| {
            let env = format!("RATE_LIMIT_{}", name.to_ascii_uppercase());
            p.parse(&env, raw, |raw| parse_policy(name, raw, fail_closed.iter().any(|n| n == name)))
        };
        let policies = match (
            policy("key", &self.rate_limit_key),
            policy("ip", &self.rate_limit_ip),
            policy("writes", &self.rate_limit_writes),
        ) {
            (Some(key), Some(ip), Some(writes)) => Some(Policies { key, ip, writes }),
            _ => None,
        };
        if let Some(replicas) = replicas {
            p.check(replicas >= 1, || "RATE_LIMIT_REPLICAS must be at least 1".to_owned());
        }
        if let Some(refresh) = key_refresh {
            p.check(!refresh.is_zero(), || "API_KEY_REFRESH must be more than zero".to_owned());
        }

        if let (Some(max), Some(min)) = (max_connections, min_connections) {
            p.check(max >= 1, || "DB_MAX_CONNECTIONS must be at least 1".to_owned());
            p.check(min <= max, || {
                format!("DB_MIN_CONNECTIONS ({min}) must not exceed DB_MAX_CONNECTIONS ({max})")
            });
        }
        for (name, value) in [
            ("DB_ACQUIRE_TIMEOUT", acquire_timeout),
            ("DB_STATEMENT_TIMEOUT", statement_timeout),
            ("REQUEST_TIMEOUT", request_timeout),
        ] {
            p.check(value.is_none_or(|d| !d.is_zero()), || format!("{name} must be more than zero"));
        }
        if let (Some(statement), Some(request)) = (statement_timeout, request_timeout) {
            // A request that times out drops its future, but Postgres keeps
            // running the statement and may still commit it after the client
            // got a 504. Statements must therefore give up first.
            p.check(statement < request, || {
                format!(
                    "DB_STATEMENT_TIMEOUT ({}) must be shorter than REQUEST_TIMEOUT ({})",
                    humantime::format_duration(statement),
                    humantime::format_duration(request)
                )
            });
        }
        if let Some(limit) = body_limit_bytes {
            p.check(limit >= 1024, || "BODY_LIMIT_BYTES must be at least 1024".to_owned());
        }

        if !p.0.is_empty() {
            return Err(ConfigErrors(p.0));
        }
        // Every `None` above pushed a problem, so all are `Some` here.
        let (Some(host), Some(port), Some(url), Some(max_connections), Some(min_connections)) =
            (host, port, url, max_connections, min_connections)
        else {
            unreachable!("a missing value always records a problem")
        };
        let some = |d: Option<Duration>| d.unwrap_or_default();
        Ok(Config {
            listen: SocketAddr::new(host, port),
            database: DatabaseConfig {
                url,
                max_connections,
                min_connections,
                acquire_timeout: some(acquire_timeout),
                idle_timeout: some(idle_timeout),
                max_lifetime: some(max_lifetime),
                statement_timeout: some(statement_timeout),
            },
            migrate_on_start: migrate_on_start.unwrap_or_default(),
            request_timeout: some(request_timeout),
            body_limit_bytes: body_limit_bytes.unwrap_or_default(),
            shutdown_delay: some(shutdown_delay),
            shutdown_grace: some(shutdown_grace),
            cors: cors.unwrap_or(Cors::Disabled),
            deprecations: deprecations.unwrap_or_default(),
            log_format: log_format.unwrap_or(LogFormat::Json),
            access: AccessConfig {
                policies: policies.unwrap_or_default(),
                replicas: replicas.unwrap_or(1),
                trusted_proxies: trusted_proxies.unwrap_or_default(),
                public_max_age: some(http_cache_max_age),
                key_refresh: some(key_refresh),
            },
{% if redis %}            redis: redis_url.flatten().map(|url| RedisConfig {
                url,
                timeout: some(redis_timeout),
                key_prefix: self.redis_key_prefix.trim().to_owned(),
            }),
            cache_ttl: some(cache_ttl),
            cache_fill_delay: None,
{% endif %}{% if worker %}            relay: amqp_url.flatten().map(|url| RelayConfig {
                url,
                topology: jobs::Topology::new(self.amqp_queue_prefix.trim()),
                poll: some(outbox_poll),
                batch: outbox_batch.unwrap_or(1),
                confirm_timeout: some(outbox_confirm_timeout),
                crash_after_confirm: None,
            }),
{% endif %}        })
    }
}

fn parse_cors(raw: &str) -> Result<Cors, String> {
    let origins: Vec<&str> = raw.split(',').map(str::trim).filter(|o| !o.is_empty()).collect();
    match origins.as_slice() {
        [] => Ok(Cors::Disabled),
        ["*"] => Ok(Cors::Any),
        _ => {
            for origin in &origins {
                let valid = (origin.starts_with("https://") || origin.starts_with("http://"))
                    && !origin.ends_with('/')
                    && axum::http::HeaderValue::from_str(origin).is_ok();
                if !valid {
                    return Err(format!("{origin:?} is not an origin such as https://app.example.com"));
                }
            }
            Ok(Cors::Origins(origins.into_iter().map(str::to_owned).collect()))
        }
    }
}

/// A policy's rate, or `off`.
fn parse_policy(name: &'static str, raw: &str, fail_closed: bool) -> Result<Option<Policy>, String> {
    if raw.eq_ignore_ascii_case("off") {
        return Ok(None);
    }
    Rate::parse(raw).map(|rate| Some(Policy { name, rate, fail_closed }))
}

{% if redis %}fn parse_policy_names(raw: &str) -> Result<Vec<String>, String> {
    let names: Vec<String> =
        raw.split(',').map(str::trim).filter(|n| !n.is_empty()).map(str::to_owned).collect();
    match names.iter().find(|n| !Policies::NAMES.contains(&n.as_str())) {
        Some(unknown) => {
            Err(format!("unknown policy {unknown:?}; policies are {}", Policies::NAMES.join(", ")))
        }
        None => Ok(names),
    }
}
{% endif %}
fn parse_networks(raw: &str) -> Result<Vec<IpNet>, String> {
    raw.split(',')
        .map(str::trim)
        .filter(|n| !n.is_empty())
        .map(|n| {
            // A bare address is a network of one.
            n.parse::<IpNet>()
                .or_else(|_| n.parse::<IpAddr>().map(IpNet::from))
                .map_err(|_| format!("{n:?} is not a CIDR such as 10.0.0.0/8"))
        })
        .collect()
}

impl Deprecations {
    fn parse(raw: &str) -> Result<Self, String> {
        raw.split(',')
            .map(str::trim)
            .filter(|entry| !entry.is_empty())
            .map(Deprecation::parse)
            .collect::<Result<Vec<_>, _>>()
            .map(Self::new)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid() {
        let config = Settings::defaults().validate().expect("defaults validate");
        assert_eq!(config.listen.port(), 8080);
        assert_eq!(config.database.acquire_timeout, Duration::from_secs(2));
        assert_eq!(config.cors, Cors::Disabled);
    }

    #[test]
    fn every_problem_is_reported_at_once() {
        let mut settings = Settings::defaults();
        settings.port = "eighty".into();
        settings.db_acquire_timeout = "soon".into();
        settings.db_min_connections = "20".into();
        settings.cors_allowed_origins = "example.com".into();
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
        settings.rate_limit_ip = "off".into();
        settings.rate_limit_writes = "5/1s".into();
        settings.trusted_proxies = "10.0.0.0/8, 127.0.0.1".into();
        let config = settings.validate().expect("valid");
        assert_eq!(config.access.policies.ip, None);
        assert_eq!(config.access.policies.writes.map(|p| p.rate.quota), Some(5));
        assert_eq!(config.access.trusted_proxies.len(), 2);

        settings.rate_limit_key = "lots".into();
        settings.trusted_proxies = "10.0.0.0/33".into();
        settings.rate_limit_replicas = "0".into();
        let text = settings.validate().expect_err("invalid").to_string();
        for name in ["RATE_LIMIT_KEY", "TRUSTED_PROXIES", "RATE_LIMIT_REPLICAS"] {
            assert!(text.contains(name), "{name} missing from {text}");
        }
    }

{% if redis %}    #[test]
    fn redis_settings_are_checked() {
        let mut settings = Settings::defaults();
        settings.rate_limit_fail_closed = "writes".into();
        let config = settings.validate().expect("valid");
        assert!(config.access.policies.writes.is_some_and(|p| p.fail_closed));
        assert!(config.access.policies.key.is_some_and(|p| !p.fail_closed));
        settings.redis_url = String::new();
        assert!(settings.validate().expect("valid").redis.is_none(), "empty REDIS_URL runs without Redis");

        settings.rate_limit_fail_closed = "everything".into();
        settings.redis_timeout = "5s".into();
        settings.redis_url = "http://nope".into();
        let text = settings.validate().expect_err("invalid").to_string();
        for name in ["RATE_LIMIT_FAIL_CLOSED", "REDIS_TIMEOUT", "REDIS_URL"] {
            assert!(text.contains(name), "{name} missing from {text}");
        }
    }
{% endif %}
    #[test]
    fn a_zero_timeout_is_refused() {
        let mut settings = Settings::defaults();
        settings.request_timeout = "0s".into();
        assert!(settings.validate().is_err());
    }

    #[test]
    fn a_statement_may_not_outlive_its_request() {
        let mut settings = Settings::defaults();
        settings.request_timeout = "5s".into();
        settings.db_statement_timeout = "5s".into();
        let errors = settings.validate().expect_err("invalid");
        assert!(errors.to_string().contains("must be shorter than REQUEST_TIMEOUT"), "{errors}");
    }

    #[test]
    fn the_database_url_never_prints() {
        let mut settings = Settings::defaults();
        settings.database_url = "postgres://app:hunter2@db/app".into();
        let config = settings.validate().expect("valid");
        assert!(!format!("{config:?}").contains("hunter2"));
    }
}
