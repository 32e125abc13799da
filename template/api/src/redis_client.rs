//! The one Redis connection of a replica, and the rules every call obeys.
//!
//! One multiplexed connection (`ConnectionManager`) carries every call:
//! measured here, it does several times the work of a pool of connections,
//! and it reconnects by itself. It connects lazily, so the API starts while
//! Redis is down.
//!
//! Redis is an accelerator, never a dependency the API waits on: every call
//! has a hard timeout of tens of milliseconds, and a circuit breaker stops
//! calling after repeated failures, so an outage costs callers nothing but
//! the fallback (Postgres for the cache, per-replica limits for the limiter).

mod breaker;

use std::fmt;
use std::future::Future;
use std::time::Duration;

use anyhow::Context;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use secrecy::ExposeSecret;
use telemetry::spans::Traced as _;

pub use breaker::Breaker;

use prometheus_client::metrics::gauge::Gauge;

use crate::observability::metrics::Metrics;

/// A replica's Redis: connection, timeout, breaker and key prefix.
pub struct Redis {
    conn: ConnectionManager,
    timeout: Duration,
    breaker: Breaker,
    prefix: String,
}

/// Why a Redis call gave no answer. Callers fall back; none of these is an
/// error for the client.
#[derive(Debug)]
pub enum Unavailable {
    /// The breaker is open: the call was not even tried.
    CircuitOpen,
    /// No answer within the timeout.
    TimedOut,
    /// Redis or the connection failed.
    Failed(redis::RedisError),
    /// Redis answered something this code does not understand.
    Malformed,
}

impl fmt::Display for Unavailable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::CircuitOpen => f.write_str("circuit open"),
            Self::TimedOut => f.write_str("timed out"),
            Self::Failed(err) => write!(f, "failed: {err}"),
            Self::Malformed => f.write_str("malformed reply"),
        }
    }
}

impl std::error::Error for Unavailable {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Self::Failed(err) => Some(err),
            _ => None,
        }
    }
}

/// The connection's metric. Registered with the app whether or not Redis
/// is configured, so dashboards read a closed circuit rather than a gap.
#[derive(Clone)]
pub struct RedisMetrics {
    /// The circuit breaker: 0 closed, 1 open, 2 half-open.
    circuit_state: Gauge,
}

impl RedisMetrics {
    /// Declares the connection's metric in `metrics`.
    pub fn register(metrics: &Metrics) -> Self {
        let circuit_state = Gauge::default();
        metrics.register(
            "redis_circuit_state",
            "Redis circuit breaker: 0 closed, 1 open (calls skipped), 2 half-open (probing)",
            circuit_state.clone(),
        );
        Self { circuit_state }
    }
}

/// How to reach Redis.
#[derive(Debug, Clone)]
pub struct RedisConfig {
    /// It may carry a password, so it never prints.
    pub url: secrecy::SecretString,
    /// Per-call time limit.
    pub timeout: Duration,
    /// Prefix of every key.
    pub key_prefix: String,
}

impl Redis {
    /// Prepares the connection without connecting: the first call connects,
    /// and calls fail fast (and fall back) until Redis answers.
    pub fn connect(config: &RedisConfig, metrics: RedisMetrics) -> anyhow::Result<Self> {
        let client = redis::Client::open(config.url.expose_secret()).context("parsing REDIS_URL")?;
        let manager = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(Duration::from_millis(500)))
            .set_response_timeout(Some(config.timeout))
            // Reconnection retries quickly and for ever; the breaker decides
            // how often callers notice.
            .set_min_delay(Duration::from_millis(50))
            .set_max_delay(Duration::from_secs(1))
            .set_number_of_retries(1);
        let conn =
            ConnectionManager::new_lazy_with_config(client, manager).context("creating the Redis client")?;
        Ok(Self {
            conn,
            timeout: config.timeout,
            breaker: Breaker::new(metrics.circuit_state),
            prefix: config.key_prefix.clone(),
        })
    }

    /// `prefix:rest`: every key this service writes starts with its prefix.
    pub fn key(&self, rest: &str) -> String {
        format!("{}:{rest}", self.prefix)
    }

    /// Runs one call (a command, a pipeline or a script) under the timeout
    /// and the breaker, in a client span: `operation` is the command and
    /// `summary` names the span (`EVALSHA cache.put`).
    pub async fn call<T, F, Fut>(
        &self,
        (operation, summary): (&'static str, &'static str),
        call: F,
    ) -> Result<T, Unavailable>
    where
        F: FnOnce(ConnectionManager) -> Fut,
        Fut: Future<Output = redis::RedisResult<T>>,
    {
        let span = telemetry::redis_span!(operation, summary);
        self.call_unspanned(call).traced(span).await
    }

    async fn call_unspanned<T, F, Fut>(&self, call: F) -> Result<T, Unavailable>
    where
        F: FnOnce(ConnectionManager) -> Fut,
        Fut: Future<Output = redis::RedisResult<T>>,
    {
        if !self.breaker.allow() {
            return Err(Unavailable::CircuitOpen);
        }
        match tokio::time::timeout(self.timeout, call(self.conn.clone())).await {
            Ok(Ok(value)) => {
                self.breaker.succeeded();
                Ok(value)
            }
            Ok(Err(err)) => {
                self.breaker.failed();
                Err(Unavailable::Failed(err))
            }
            Err(_) => {
                self.breaker.failed();
                Err(Unavailable::TimedOut)
            }
        }
    }
}
