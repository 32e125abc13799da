//! The generic cell rate algorithm, and the per-replica limiter built on it.
//!
//! GCRA keeps one number per caller: the theoretical arrival time (TAT) of
//! the next request at the sustained rate. A request is admitted when taking
//! it would not push the TAT further ahead of now than the burst allows.
//! `gcra.lua` is the same arithmetic run inside Redis; the tests here pin the
//! arithmetic both follow.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use super::{Check, Outcome, Rate};

/// One GCRA step. `tat` is the stored TAT (if any), `now` the current time,
/// both in microseconds on the same clock. Returns the outcome and, when
/// admitted, the TAT to store.
pub(crate) fn step(tat: Option<u64>, now: u64, rate: &Rate) -> (Outcome, Option<u64>) {
    let interval = rate.interval_micros();
    let capacity = interval.saturating_mul(u64::from(rate.burst));
    let tat = tat.unwrap_or(now).max(now);
    let next = tat.saturating_add(interval);
    let ahead = next - now;
    if ahead > capacity {
        let outcome = Outcome {
            allowed: false,
            remaining: 0,
            reset: Duration::from_micros(tat - now),
            retry_after: Duration::from_micros(ahead - capacity),
        };
        (outcome, None)
    } else {
        let outcome = Outcome {
            allowed: true,
            remaining: (capacity - ahead) / interval,
            reset: Duration::from_micros(ahead),
            retry_after: Duration::ZERO,
        };
        (outcome, Some(next))
    }
}

/// Entries kept before idle callers are swept out.
const SWEEP_ABOVE: usize = 10_000;

/// An in-process limiter: exact for one replica, and the fallback when the
/// shared one is unreachable.
#[derive(Debug)]
pub struct LocalLimiter {
    epoch: Instant,
    /// TAT per `policy:partition`. One short critical section per request;
    /// nothing awaits while holding it.
    tats: Mutex<HashMap<String, u64>>,
}

impl Default for LocalLimiter {
    fn default() -> Self {
        Self { epoch: Instant::now(), tats: Mutex::new(HashMap::new()) }
    }
}

impl LocalLimiter {
    /// Checks a request against every check, each at its rate shared among
    /// `replicas`, and charges all of them only if all admit it.
    pub fn check(&self, checks: &[Check], replicas: u32) -> Vec<Outcome> {
        let now = u64::try_from(self.epoch.elapsed().as_micros()).unwrap_or(u64::MAX);
        let mut tats = self.tats.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if tats.len() > SWEEP_ABOVE {
            // A caller whose TAT has passed is indistinguishable from a new one.
            tats.retain(|_, tat| *tat > now);
        }
        let steps: Vec<(String, Outcome, Option<u64>)> = checks
            .iter()
            .map(|check| {
                let key = format!("{}:{}", check.policy, check.partition);
                let (outcome, next) = step(tats.get(&key).copied(), now, &check.rate.share(replicas));
                (key, outcome, next)
            })
            .collect();
        let admitted = steps.iter().all(|(_, outcome, _)| outcome.allowed);
        steps
            .into_iter()
            .map(|(key, outcome, next)| {
                if admitted && let Some(next) = next {
                    tats.insert(key, next);
                }
                outcome
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rate(raw: &str) -> Rate {
        Rate::parse(raw).expect("valid rate")
    }

    #[test]
    fn a_burst_is_admitted_at_once_and_then_the_sustained_rate() {
        let rate = rate("10/1s;burst=3");
        let mut tat = None;
        let mut admitted = 0;
        for _ in 0..10 {
            let (outcome, next) = step(tat, 0, &rate);
            if outcome.allowed {
                admitted += 1;
                tat = next;
            }
        }
        assert_eq!(admitted, 3, "the burst, all at time 0");
        let (refused, _) = step(tat, 0, &rate);
        assert_eq!(refused.retry_after, Duration::from_millis(100));
        // After one interval exactly one more fits.
        let (outcome, next) = step(tat, 100_000, &rate);
        assert!(outcome.allowed);
        assert!(!step(next, 100_000, &rate).0.allowed);
    }

    #[test]
    fn remaining_counts_down_and_reset_is_when_the_burst_is_back() {
        let rate = rate("10/1s;burst=3");
        let (first, tat) = step(None, 0, &rate);
        assert_eq!((first.remaining, first.reset), (2, Duration::from_millis(100)));
        let (second, _) = step(tat, 0, &rate);
        assert_eq!((second.remaining, second.reset), (1, Duration::from_millis(200)));
    }

    #[test]
    fn admissions_over_time_stay_within_the_gcra_bound() {
        let rate = rate("50/1s;burst=5");
        let mut tat = None;
        let mut admitted = 0u64;
        // A request every millisecond for two seconds.
        for now in (0..2_000_000).step_by(1000) {
            let (outcome, next) = step(tat, now, &rate);
            if outcome.allowed {
                admitted += 1;
                tat = next;
            }
        }
        let bound = 5 + 2_000_000 / rate.interval_micros() + 1;
        assert!(admitted <= bound && admitted + 2 >= bound, "{admitted} admitted, bound {bound}");
    }

    #[test]
    fn a_request_refused_by_one_check_is_charged_to_none() {
        let limiter = LocalLimiter::default();
        let check = |policy, raw| Check {
            policy,
            partition: "key:1".into(),
            rate: Rate::parse(raw).expect("valid"),
            fail_closed: false,
        };
        let checks = [check("key", "100/1m"), check("writes", "1/1m")];
        assert!(limiter.check(&checks, 1).iter().all(|o| o.allowed));
        let second = limiter.check(&checks, 1);
        assert!(second[0].allowed && !second[1].allowed);
        // The refused request did not use up the key's quota.
        assert_eq!(limiter.check(&checks[..1], 1)[0].remaining, 98);
    }
}
