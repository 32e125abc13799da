//! The rate-limit response fields, as draft-ietf-httpapi-ratelimit-headers-11
//! defines them. Everything about their format is in this file, so a later
//! draft (or the RFC) is a change here only.
//!
//! - `RateLimit-Policy: "key";q=100;w=60, "writes";q=10;w=1`: each policy
//!   that applied, with its quota `q` per window `w` (seconds).
//! - `RateLimit: "key";r=42;t=3`: per policy, the requests `r` remaining now
//!   and the seconds `t` until the full quota is back.
//!
//! Both are Structured Field lists (RFC 9651) of strings with integer
//! parameters. A 429 also carries `Retry-After` in whole seconds, rounded up
//! so a client that waits exactly that long is admitted.

use std::time::Duration;

use axum::http::{HeaderMap, HeaderName, HeaderValue, header};

use super::{Check, Outcome};

/// `RateLimit-Policy`.
pub const RATELIMIT_POLICY: HeaderName = HeaderName::from_static("ratelimit-policy");
/// `RateLimit`.
pub const RATELIMIT: HeaderName = HeaderName::from_static("ratelimit");

/// Adds both fields for the checks a request went through.
pub fn insert(headers: &mut HeaderMap, checks: &[Check], outcomes: &[Outcome]) {
    if checks.is_empty() {
        return;
    }
    let policy = list(
        checks.iter().map(|c| format!("\"{}\";q={};w={}", c.policy, c.rate.quota, c.rate.window.as_secs())),
    );
    let state = list(
        checks
            .iter()
            .zip(outcomes)
            .map(|(c, o)| format!("\"{}\";r={};t={}", c.policy, o.remaining, whole_seconds(o.reset))),
    );
    for (name, value) in [(RATELIMIT_POLICY, policy), (RATELIMIT, state)] {
        // Policy names are fixed ASCII words and the rest are digits.
        headers.insert(name, HeaderValue::from_str(&value).expect("structured fields are ASCII"));
    }
}

/// `Retry-After` for a refused request: when every refusing policy admits again.
pub fn insert_retry_after(headers: &mut HeaderMap, outcomes: &[Outcome]) {
    let wait = outcomes.iter().map(|o| o.retry_after).max().unwrap_or_default();
    headers.insert(header::RETRY_AFTER, HeaderValue::from(whole_seconds(wait).max(1)));
}

fn list(items: impl Iterator<Item = String>) -> String {
    items.collect::<Vec<_>>().join(", ")
}

/// Seconds, rounded up: a client must never be told to come back too early.
fn whole_seconds(duration: Duration) -> u64 {
    duration.as_secs() + u64::from(duration.subsec_nanos() > 0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ratelimit::Rate;

    #[test]
    fn fields_list_every_policy_with_its_state() {
        let check = |policy, raw: &str| Check {
            policy,
            partition: "key:1".into(),
            rate: Rate::parse(raw).expect("valid"),
            fail_closed: false,
        };
        let outcome = |remaining, reset_ms, retry_ms| Outcome {
            allowed: retry_ms == 0,
            remaining,
            reset: Duration::from_millis(reset_ms),
            retry_after: Duration::from_millis(retry_ms),
        };
        let mut headers = HeaderMap::new();
        let outcomes = [outcome(41, 1500, 0), outcome(0, 2000, 300)];
        insert(&mut headers, &[check("key", "100/1m"), check("writes", "10/1s")], &outcomes);
        insert_retry_after(&mut headers, &outcomes);
        assert_eq!(headers[RATELIMIT_POLICY], r#""key";q=100;w=60, "writes";q=10;w=1"#);
        assert_eq!(headers[RATELIMIT], r#""key";r=41;t=2, "writes";r=0;t=2"#);
        assert_eq!(headers[header::RETRY_AFTER], "1");
    }
}
