//! Settings of Redis: the connection, the item cache it holds, and which
//! rate-limit policies refuse rather than fall back while it is away.

use std::time::Duration;

use clap::Args;
use secrecy::SecretString;
use service::settings::{at_least, duration};
use service::{Problems, defaults};

use crate::ratelimit::Policies;
use crate::redis_client::RedisConfig;

/// Redis settings as text.
#[derive(Debug, Clone, Args)]
pub struct RedisSettings {
    /// Redis URL for the item cache and the rate limits shared by all
    /// replicas. Empty runs without Redis: no cache, per-replica limits.
    #[arg(long, env = "REDIS_URL", default_value = defaults::REDIS_URL, hide_env_values = true)]
    pub redis_url: String,
    /// Hard limit on every Redis call; a slower answer counts as a failure,
    /// and repeated failures open the circuit breaker.
    #[arg(long, env = "REDIS_TIMEOUT", default_value = "50ms")]
    pub redis_timeout: String,
    /// Prefix of every Redis key this service writes.
    #[arg(long, env = "REDIS_KEY_PREFIX", default_value = env!("PROJECT_NAME"))]
    pub redis_key_prefix: String,
    /// How long an item stays in the Redis cache; `0s` turns the cache off.
    #[arg(long, env = "CACHE_TTL", default_value = "5m")]
    pub cache_ttl: String,
    /// Policies that answer 503 instead of falling back to per-replica
    /// limits while Redis is unreachable, comma separated (key, ip, writes).
    #[arg(long, env = "RATE_LIMIT_FAIL_CLOSED", default_value = "")]
    pub rate_limit_fail_closed: String,
    /// The most requests of one caller a replica takes from the shared limit
    /// in one Redis round trip (at most a quarter of the burst). 1 asks Redis
    /// on every request (exact); above 1, a busy caller costs one round trip
    /// per lease, and a window may admit up to 100ms more of the rate.
    #[arg(long, env = "RATE_LIMIT_LEASE", default_value = "1")]
    pub rate_limit_lease: String,
}

/// The validated Redis settings.
#[derive(Debug, Clone)]
pub struct RedisParts {
    /// `None` when REDIS_URL is empty.
    pub redis: Option<RedisConfig>,
    /// Zero turns the item cache off.
    pub cache_ttl: Duration,
    pub fail_closed: Vec<String>,
    /// The most requests one shared-limiter round trip leases.
    pub rate_limit_lease: u32,
}

impl RedisSettings {
    pub fn validate(&self, p: &mut Problems) -> Option<RedisParts> {
        let fail_closed = p.parse("RATE_LIMIT_FAIL_CLOSED", &self.rate_limit_fail_closed, parse_policy_names);
        let timeout = p.parse("REDIS_TIMEOUT", &self.redis_timeout, duration);
        let cache_ttl = p.parse("CACHE_TTL", &self.cache_ttl, duration);
        let rate_limit_lease = p.parse("RATE_LIMIT_LEASE", &self.rate_limit_lease, at_least(1u32));
        let url = p.parse_secret("REDIS_URL", &self.redis_url, |raw| {
            if raw.is_empty() {
                return Ok(None);
            }
            redis::Client::open(raw).map(|_| Some(SecretString::from(raw.to_owned())))
        });
        let key_prefix = self.redis_key_prefix.trim();
        p.check(!key_prefix.is_empty(), || "REDIS_KEY_PREFIX must not be empty".to_owned());
        if let Some(timeout) = timeout {
            p.check(!timeout.is_zero() && timeout <= Duration::from_secs(1), || {
                "REDIS_TIMEOUT must be more than zero and at most 1s: Redis must never hold requests up"
                    .to_owned()
            });
        }
        let timeout = timeout?;
        Some(RedisParts {
            redis: url?.map(|url| RedisConfig { url, timeout, key_prefix: key_prefix.to_owned() }),
            cache_ttl: cache_ttl?,
            fail_closed: fail_closed?,
            rate_limit_lease: rate_limit_lease?,
        })
    }
}

fn parse_policy_names(raw: &str) -> Result<Vec<String>, String> {
    let names: Vec<String> =
        raw.split(',').map(str::trim).filter(|n| !n.is_empty()).map(str::to_owned).collect();
    match names.iter().find(|n| !Policies::NAMES.contains(&n.as_str())) {
        Some(unknown) => {
            Err(format!("unknown policy {unknown:?}; policies are {}", Policies::NAMES.join(", ")))
        }
        None => Ok(names),
    }
}
