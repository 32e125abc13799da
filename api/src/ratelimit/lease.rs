//! Leases: a replica takes several requests' worth of a caller's limit from
//! Redis in one round trip and admits that caller's next requests from it,
//! without Redis, until it is spent or expires. Off unless
//! `RATE_LIMIT_LEASE` is above 1.
//!
//! Rules, and the race or the error each one closes:
//! - **Charged before spent.** `gcra.lua` charges the whole lease to the
//!   shared TAT up front, so no replica can admit a request that Redis has
//!   not counted: the replicas together never exceed the limit by spending
//!   the same room twice.
//! - **A lease expires after [`LIFETIME`].** A request is admitted at most
//!   that long after it was charged, so in any window of length `T` the
//!   replicas admit at most what the GCRA allows over `T + LIFETIME`. That is
//!   the whole over-admission, whatever the replica count:
//!   `LIFETIME ÷ interval` requests (5 at 50/s). `shared_limits.rs` measures
//!   it against that bound.
//! - **What was not spent is given back**, on the caller's next round trip
//!   from this replica (`REFUND` in the script, never beyond now), so a slow
//!   caller is not charged for a lease it did not use. Until then (or until
//!   the rate has regenerated it) other replicas see that room as taken.
//! - **A lease takes only the room there is**: Redis grants fewer than asked
//!   when the caller is near its limit, down to one request, so held leases
//!   never push a caller under its rate into refusals.
//! - **A lease is a quarter of the burst at most**, so one replica cannot
//!   hold a caller's whole burst while another refuses it; a burst under 8
//!   gets no lease at all, and small limits stay exact.
//! - **Headers stay exact for one replica**: a request admitted from a lease
//!   reports Redis's remaining room plus the lease's unspent requests, and
//!   the reset as if those were never charged, which is what the exact
//!   limiter would say.

use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use super::{Check, Outcome};

/// How long leased requests may be spent after Redis charged them.
pub const LIFETIME: Duration = Duration::from_millis(100);

/// Leases kept before expired ones are swept out.
const SWEEP_ABOVE: usize = 10_000;

/// The requests to lease for `checks`, given the configured most: at most a
/// quarter of the smallest burst, and at least 1 (no lease).
pub fn size(most: u32, checks: &[Check]) -> u32 {
    let smallest_burst = checks.iter().map(|c| c.rate.burst).min().unwrap_or(1);
    most.min(smallest_burst / 4).max(1)
}

/// One caller's lease on one replica.
#[derive(Debug)]
struct Lease {
    /// Requests charged and not yet spent.
    left: u32,
    /// Unspent requests of an expired lease this one replaced, to give back.
    owed: u32,
    /// When Redis charged the oldest of them.
    charged_at: Instant,
    /// Redis's answer when the lease was taken, per check.
    outcomes: Vec<Outcome>,
    /// Each check's emission interval.
    intervals: Vec<Duration>,
}

impl Lease {
    /// The outcomes a request admitted now reports, with `self.left` already
    /// counting it as spent.
    fn report(&self, now: Instant) -> Vec<Outcome> {
        let elapsed = now.saturating_duration_since(self.charged_at);
        self.outcomes
            .iter()
            .zip(&self.intervals)
            .map(|(outcome, interval)| Outcome {
                allowed: true,
                remaining: outcome.remaining + u64::from(self.left),
                reset: outcome.reset.saturating_sub(*interval * self.left).saturating_sub(elapsed),
                retry_after: Duration::ZERO,
            })
            .collect()
    }
}

/// The leases of one replica, by the checks they cover.
#[derive(Debug, Default)]
pub struct Leases {
    /// One short critical section per request; nothing awaits holding it.
    by_checks: Mutex<HashMap<String, Lease>>,
}

impl Leases {
    /// The map key: every check a request is subject to, in order.
    pub fn key(checks: &[Check]) -> String {
        let mut key = String::new();
        for check in checks {
            key.push_str(check.policy);
            key.push(':');
            key.push_str(&check.partition);
            key.push('|');
        }
        key
    }

    /// Admits a request from a live lease, or says what to give back: the
    /// unspent requests of an expired lease, which is then dropped.
    pub fn spend(&self, key: &str, now: Instant) -> Result<Vec<Outcome>, u32> {
        let mut leases = self.by_checks.lock().unwrap_or_else(PoisonError::into_inner);
        let Some(lease) = leases.get_mut(key) else { return Err(0) };
        if now.saturating_duration_since(lease.charged_at) >= LIFETIME {
            let unspent = lease.left + lease.owed;
            leases.remove(key);
            return Err(unspent);
        }
        if lease.left == 0 {
            return Err(std::mem::take(&mut lease.owed));
        }
        lease.left -= 1;
        Ok(lease.report(now))
    }

    /// Keeps what Redis granted beyond the request that asked (`granted - 1`)
    /// and returns that request's outcomes. A lease taken by a concurrent
    /// request is topped up and keeps its older charge time; an expired one
    /// is restarted, and its unspent requests are given back later.
    pub fn keep(
        &self,
        key: String,
        checks: &[Check],
        granted: u32,
        outcomes: Vec<Outcome>,
        now: Instant,
    ) -> Vec<Outcome> {
        let mut leases = self.by_checks.lock().unwrap_or_else(PoisonError::into_inner);
        if leases.len() > SWEEP_ABOVE {
            leases.retain(|_, lease| now.saturating_duration_since(lease.charged_at) < LIFETIME);
        }
        let lease = leases.entry(key).or_insert_with(|| Lease {
            left: 0,
            owed: 0,
            charged_at: now,
            outcomes: Vec::new(),
            intervals: checks.iter().map(|c| Duration::from_micros(c.rate.interval_micros())).collect(),
        });
        if now.saturating_duration_since(lease.charged_at) >= LIFETIME {
            lease.owed += std::mem::take(&mut lease.left);
            lease.charged_at = now;
        }
        lease.left += granted.saturating_sub(1);
        lease.outcomes = outcomes;
        lease.report(now)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ratelimit::Rate;

    fn check(raw: &str) -> Check {
        Check {
            policy: "key",
            partition: "key:1".into(),
            rate: Rate::parse(raw).expect("valid"),
            fail_closed: false,
        }
    }

    #[test]
    fn a_lease_is_at_most_a_quarter_of_the_smallest_burst() {
        assert_eq!(size(16, &[check("1000/1s")]), 16);
        assert_eq!(size(16, &[check("50/1s;burst=100"), check("10/1s;burst=20")]), 5);
        assert_eq!(size(16, &[check("10/1s;burst=7")]), 1);
        assert_eq!(size(1, &[check("1000/1s")]), 1);
    }

    #[test]
    fn a_lease_is_spent_then_refunded_when_it_expires() {
        let leases = Leases::default();
        let checks = [check("100/1s")];
        let key = Leases::key(&checks);
        let start = Instant::now();
        assert_eq!(leases.spend(&key, start), Err(0), "no lease yet");
        // Redis granted 4 and has 90 left: the asker sees 93, as if charged alone.
        let redis = Outcome {
            allowed: true,
            remaining: 90,
            reset: Duration::from_millis(100),
            retry_after: Duration::ZERO,
        };
        let first = leases.keep(key.clone(), &checks, 4, vec![redis], start);
        assert_eq!((first[0].remaining, first[0].reset), (93, Duration::from_millis(70)));
        let second = leases.spend(&key, start).expect("from the lease");
        assert_eq!((second[0].remaining, second[0].reset), (92, Duration::from_millis(80)));
        assert!(leases.spend(&key, start).is_ok());
        assert!(leases.spend(&key, start).is_ok());
        assert_eq!(leases.spend(&key, start), Err(0), "spent: back to Redis");
        leases.keep(key.clone(), &checks, 3, vec![redis], start);
        assert_eq!(leases.spend(&key, start + LIFETIME), Err(2), "expired: the unspent are given back");
        assert_eq!(leases.spend(&key, start + LIFETIME), Err(0), "and only once");
    }
}
