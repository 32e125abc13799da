//! Rate limits: named GCRA policies checked on every API request.
//!
//! A request is checked against every policy that applies to it at once (its
//! identity's policy, plus the write policy for writes). It is admitted only
//! if all of them admit it, and only then is it charged to them, so a request
//! refused by one policy costs nothing against another.
//!
//! With Redis, the check is one atomic script that takes the time from Redis
//! itself, so any number of replicas share one exact limit even with skewed
//! clocks (`distributed.rs`, `gcra.lua`). Without Redis, or while Redis is
//! unreachable, each replica limits on its own with the same algorithm and
//! its share of the rate (`gcra.rs`), unless a policy is configured to fail
//! closed. With `RATE_LIMIT_LEASE` above 1, a replica takes several requests
//! of a busy caller's limit from Redis at once (`lease.rs`, which states what
//! that trades). The response header format lives in `headers.rs` alone.

// @template if redis
mod distributed;
// @template endif
mod gcra;
pub mod headers;
// @template if redis
pub mod lease;
// @template endif

use std::fmt;
use std::str::FromStr;
// @template if redis
use std::sync::Arc;
// @template endif
use std::sync::atomic::{AtomicU8, Ordering};
use std::time::Duration;

pub use gcra::LocalLimiter;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;

use crate::observability::metrics::Metrics;

/// `quota` requests per `window`, sustained, with bursts of up to `burst`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rate {
    /// Requests allowed per window at the sustained rate.
    pub quota: u32,
    /// The window the quota is counted over (whole seconds).
    pub window: Duration,
    /// Requests that may arrive at once after a quiet period.
    pub burst: u32,
}

impl Rate {
    /// Parses `QUOTA/WINDOW[;burst=N]`, such as `100/1m` or `10/1s;burst=20`.
    /// Without `burst`, the burst is the quota.
    pub fn parse(raw: &str) -> Result<Self, String> {
        let (rate, burst) = match raw.split_once(';') {
            Some((rate, extra)) => {
                let value = extra
                    .trim()
                    .strip_prefix("burst=")
                    .ok_or_else(|| format!("expected `;burst=N` after the rate, found {extra:?}"))?;
                (rate, Some(value.parse::<u32>().map_err(|_| format!("burst {value:?} is not a number"))?))
            }
            None => (raw, None),
        };
        let (quota, window) =
            rate.split_once('/').ok_or_else(|| "expected QUOTA/WINDOW such as 100/1m".to_owned())?;
        let quota: u32 = quota.trim().parse().map_err(|_| format!("quota {quota:?} is not a number"))?;
        let window = humantime::parse_duration(window.trim()).map_err(|err| format!("window: {err}"))?;
        if quota == 0 || burst == Some(0) {
            return Err("quota and burst must be at least 1".to_owned());
        }
        if window.is_zero() || window.subsec_nanos() != 0 {
            return Err("the window must be a whole number of seconds, such as 1s or 1m".to_owned());
        }
        if window / quota < Duration::from_micros(1) {
            return Err("the rate is above one request per microsecond".to_owned());
        }
        Ok(Self { quota, window, burst: burst.unwrap_or(quota) })
    }

    /// The time one request costs at the sustained rate (GCRA's emission
    /// interval), in microseconds.
    pub fn interval_micros(&self) -> u64 {
        u64::try_from(self.window.as_micros() / u128::from(self.quota)).unwrap_or(u64::MAX)
    }

    /// This rate split evenly among `replicas` that cannot share state: each
    /// gets its part of the quota and of the burst (at least 1 of each).
    #[must_use]
    pub fn share(&self, replicas: u32) -> Self {
        let replicas = replicas.max(1);
        Self {
            quota: (self.quota / replicas).max(1),
            window: self.window,
            burst: (self.burst / replicas).max(1),
        }
    }
}

impl FromStr for Rate {
    type Err = String;

    fn from_str(raw: &str) -> Result<Self, String> {
        Self::parse(raw)
    }
}

impl fmt::Display for Rate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.quota, humantime::format_duration(self.window))?;
        if self.burst != self.quota {
            write!(f, ";burst={}", self.burst)?;
        }
        Ok(())
    }
}

/// A named policy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Policy {
    /// The name clients see in `RateLimit-Policy` and operators in metrics.
    pub name: &'static str,
    /// The default rate (API keys may carry their own for the `key` policy).
    pub rate: Rate,
    /// Refuse requests (503) rather than fall back to per-replica limits
    /// while the shared limiter is unreachable.
    pub fail_closed: bool,
}

/// Every policy; `None` turns one off.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Policies {
    /// Per API key, for every request made with a key.
    pub key: Option<Policy>,
    /// Per client address, for anonymous requests.
    pub ip: Option<Policy>,
    /// Per caller, for writes only, on top of the caller's own policy.
    pub writes: Option<Policy>,
}

impl Policies {
    /// The policy names, for validating configuration.
    pub const NAMES: [&'static str; 3] = ["key", "ip", "writes"];

    /// The checks a request must pass. `partition` identifies the caller
    /// (`key:<id>` or `ip:<address>`); `key_rate` is an API key's own rate.
    pub fn checks(&self, partition: &str, is_key: bool, key_rate: Option<Rate>, write: bool) -> Vec<Check> {
        let identity = if is_key { self.key.as_ref() } else { self.ip.as_ref() };
        let mut checks = Vec::with_capacity(2);
        if let Some(policy) = identity {
            let rate = if is_key { key_rate.unwrap_or(policy.rate) } else { policy.rate };
            checks.push(Check::new(policy, partition, rate));
        }
        if write && let Some(policy) = &self.writes {
            checks.push(Check::new(policy, partition, policy.rate));
        }
        checks
    }
}

/// One policy applied to one caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Check {
    /// The policy's name.
    pub policy: &'static str,
    /// Who is limited: `key:<id>` or `ip:<address>`.
    pub partition: String,
    /// The rate that applies.
    pub rate: Rate,
    /// Whether the policy fails closed.
    pub fail_closed: bool,
}

impl Check {
    fn new(policy: &Policy, partition: &str, rate: Rate) -> Self {
        Self { policy: policy.name, partition: partition.to_owned(), rate, fail_closed: policy.fail_closed }
    }
}

/// What one policy said about a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Outcome {
    /// Whether this policy admits the request.
    pub allowed: bool,
    /// Requests the caller may still make at once.
    pub remaining: u64,
    /// Until the caller's full burst is available again.
    pub reset: Duration,
    /// Until a refused request would be admitted (zero when admitted).
    pub retry_after: Duration,
}

/// The verdict on a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Admitted; one outcome per check, in order.
    Allowed(Vec<Outcome>),
    /// Refused (429); one outcome per check, in order.
    Limited(Vec<Outcome>),
    /// The shared limiter is unreachable and a policy fails closed (503).
    Unavailable,
}

impl Verdict {
    fn from_outcomes(outcomes: Vec<Outcome>) -> Self {
        if outcomes.iter().all(|o| o.allowed) { Self::Allowed(outcomes) } else { Self::Limited(outcomes) }
    }
}

/// The limiter of one replica: shared through Redis when it has Redis,
/// per-replica otherwise.
pub struct Limiter {
    local: LocalLimiter,
    /// Replicas sharing the load, so the per-replica fallback admits about
    /// the configured rate in total.
    replicas: u32,
    // @template if redis
    shared: Option<distributed::SharedLimiter>,
    // @template endif
    metrics: LimitMetrics,
    /// The backend the gauge shows, so it is only written on a change.
    last_backend: AtomicU8,
}

/// Labels of the decision counter.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct LimitLabels {
    /// The policy (`key`, `ip`, `writes`).
    policy: &'static str,
    /// `allowed`, `limited` or `unavailable` (failed closed).
    decision: &'static str,
    /// Which limiter decided: `redis` (shared) or `local` (this replica).
    backend: &'static str,
}

/// Labels of the backend gauge.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct BackendLabels {
    /// `redis` or `local`.
    backend: &'static str,
}

/// The limiter's metrics, registered by the limiter.
struct LimitMetrics {
    /// Decisions per policy, outcome and backend.
    decisions: Family<LimitLabels, Counter>,
    /// 1 for the limiter that decided last (`redis` or `local`), 0 for the other.
    backend: Family<BackendLabels, Gauge>,
}

impl LimitMetrics {
    fn register(metrics: &Metrics) -> Self {
        let decisions = Family::<LimitLabels, Counter>::default();
        metrics.register(
            "rate_limit_decisions",
            "Rate-limit decisions by policy, decision and backend",
            decisions.clone(),
        );
        let backend = Family::<BackendLabels, Gauge>::default();
        metrics.register(
            "rate_limit_backend",
            "1 for the rate limiter in use (redis: shared by all replicas; local: this replica's own)",
            backend.clone(),
        );
        Self { decisions, backend }
    }
}

/// Which limiter decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// The shared limiter in Redis.
    Redis,
    /// This replica's own limiter, with its share of the rate.
    Local,
}

impl Backend {
    /// The metric label.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Redis => "redis",
            Self::Local => "local",
        }
    }
}

impl Limiter {
    /// A limiter that never leaves the process; its metrics go into `metrics`.
    pub fn local(replicas: u32, metrics: &Metrics) -> Self {
        Self {
            local: LocalLimiter::default(),
            replicas,
            // @template if redis
            shared: None,
            // @template endif
            metrics: LimitMetrics::register(metrics),
            last_backend: AtomicU8::new(u8::MAX),
        }
    }

    // @template if redis
    /// A limiter shared through `redis`, falling back to the local one;
    /// `lease` is the most requests one round trip takes (1: exact).
    pub fn shared(
        redis: Arc<crate::redis_client::Redis>,
        replicas: u32,
        lease: u32,
        metrics: &Metrics,
    ) -> Self {
        Self { shared: Some(distributed::SharedLimiter::new(redis, lease)), ..Self::local(replicas, metrics) }
    }
    // @template endif

    /// Decides on a request and charges it to every check when admitted.
    // @template if not redis
    // #[allow(clippy::unused_async, reason = "the same interface as the limiter shared through Redis")]
    // @template endif
    pub async fn check(&self, checks: &[Check]) -> Verdict {
        if checks.is_empty() {
            return Verdict::Allowed(Vec::new());
        }
        // @template if redis
        if let Some(shared) = &self.shared {
            match shared.check(checks).await {
                Ok(outcomes) => return self.record(checks, Backend::Redis, Verdict::from_outcomes(outcomes)),
                Err(err) => {
                    tracing::debug!(error = %telemetry::chain(&err), "shared rate limiter unavailable");
                    if checks.iter().any(|c| c.fail_closed) {
                        return self.record(checks, Backend::Redis, Verdict::Unavailable);
                    }
                }
            }
        }
        // @template endif
        let outcomes = self.local.check(checks, self.replicas);
        self.record(checks, Backend::Local, Verdict::from_outcomes(outcomes))
    }

    fn record(&self, checks: &[Check], backend: Backend, verdict: Verdict) -> Verdict {
        let decision = match &verdict {
            Verdict::Allowed(_) => "allowed",
            Verdict::Limited(_) => "limited",
            Verdict::Unavailable => "unavailable",
        };
        for check in checks {
            let labels = LimitLabels { policy: check.policy, decision, backend: backend.as_str() };
            self.metrics.decisions.get_or_create(&labels).inc();
        }
        if self.last_backend.swap(backend as u8, Ordering::Relaxed) != backend as u8 {
            for other in [Backend::Redis, Backend::Local] {
                let labels = BackendLabels { backend: other.as_str() };
                self.metrics.backend.get_or_create(&labels).set(i64::from(other == backend));
            }
        }
        verdict
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_parse_with_and_without_burst() {
        let rate = Rate::parse("100/1m").expect("valid");
        assert_eq!((rate.quota, rate.window, rate.burst), (100, Duration::from_mins(1), 100));
        assert_eq!(rate.interval_micros(), 600_000);
        let rate = Rate::parse("10/1s;burst=20").expect("valid");
        assert_eq!(rate.burst, 20);
        assert_eq!(rate.to_string(), "10/1s;burst=20");
        for bad in ["", "10", "0/1s", "10/0s", "10/1500ms", "10/1s;burst=0", "10/1s;b=2", "x/1s"] {
            assert!(Rate::parse(bad).is_err(), "{bad:?} parsed");
        }
    }

    #[test]
    fn a_shared_rate_never_drops_to_zero() {
        let rate = Rate::parse("10/1s;burst=4").expect("valid");
        assert_eq!(rate.share(3), Rate { quota: 3, window: Duration::from_secs(1), burst: 1 });
        assert_eq!(rate.share(100).quota, 1);
        assert_eq!(rate.share(0), rate);
    }

    #[test]
    fn writes_add_a_check_and_keys_use_their_own_rate() {
        let policy =
            |name, raw| Some(Policy { name, rate: Rate::parse(raw).expect("valid"), fail_closed: false });
        let policies = Policies {
            key: policy("key", "100/1s"),
            ip: policy("ip", "10/1s"),
            writes: policy("writes", "5/1s"),
        };
        let own = Rate::parse("7/1s").ok();
        let checks = policies.checks("key:1", true, own, true);
        assert_eq!(checks.iter().map(|c| c.policy).collect::<Vec<_>>(), ["key", "writes"]);
        assert_eq!(checks[0].rate.quota, 7);
        let checks = policies.checks("ip:127.0.0.1", false, None, false);
        assert_eq!(checks.iter().map(|c| (c.policy, c.rate.quota)).collect::<Vec<_>>(), [("ip", 10)]);
    }
}
