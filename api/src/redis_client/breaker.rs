//! A circuit breaker for Redis calls.
//!
//! Closed: calls go through. After [`FAILURES_TO_OPEN`] failures in a row it
//! opens: calls fail at once for [`OPEN_FOR`], costing callers nothing. Then
//! one call is let through as a probe (half-open): success closes the
//! circuit, failure opens it again. Lock-free: it sits on every request.

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use prometheus_client::metrics::gauge::Gauge;

/// Consecutive failures that open the circuit.
pub(super) const FAILURES_TO_OPEN: u32 = 5;
/// How long the circuit stays open before a probe.
pub(super) const OPEN_FOR: Duration = Duration::from_secs(1);

/// The breaker's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CircuitState {
    /// Calls go through.
    Closed,
    /// Calls fail fast.
    Open,
    /// One probe call is allowed.
    HalfOpen,
}

impl CircuitState {
    /// The gauge value: 0 closed, 1 open, 2 half-open.
    const fn gauge(self) -> i64 {
        match self {
            Self::Closed => 0,
            Self::Open => 1,
            Self::HalfOpen => 2,
        }
    }
}

/// See the module documentation.
#[derive(Debug)]
pub struct Breaker {
    epoch: Instant,
    failures: AtomicU32,
    /// Microseconds since `epoch` until which the circuit is open; 0 = closed.
    open_until: AtomicU64,
    probing: AtomicBool,
    gauge: Gauge,
}

impl Breaker {
    /// A closed breaker reporting its state to `gauge`.
    pub fn new(gauge: Gauge) -> Self {
        gauge.set(0);
        Self {
            epoch: Instant::now(),
            failures: AtomicU32::new(0),
            open_until: AtomicU64::new(0),
            probing: AtomicBool::new(false),
            gauge,
        }
    }

    fn now(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_micros()).unwrap_or(u64::MAX).max(1)
    }

    /// Whether a call may go ahead now.
    pub fn allow(&self) -> bool {
        let until = self.open_until.load(Ordering::Acquire);
        if until == 0 {
            return true;
        }
        let now = self.now();
        if now < until {
            return false;
        }
        // Cool-down over: exactly one caller becomes the probe, and the
        // circuit stays open for everyone else for another cool-down, so a
        // probe that never reports back (its request was cancelled) cannot
        // wedge the breaker.
        let probe = self
            .open_until
            .compare_exchange(until, now + open_for_micros(), Ordering::AcqRel, Ordering::Acquire)
            .is_ok();
        if probe {
            self.probing.store(true, Ordering::Release);
            self.gauge.set(CircuitState::HalfOpen.gauge());
        }
        probe
    }

    /// Records a success: the circuit closes.
    pub fn succeeded(&self) {
        self.failures.store(0, Ordering::Release);
        if self.open_until.swap(0, Ordering::AcqRel) != 0 {
            tracing::info!("Redis answers again: circuit closed");
            self.gauge.set(CircuitState::Closed.gauge());
        }
        self.probing.store(false, Ordering::Release);
    }

    /// Records a failure: the circuit opens after enough of them in a row,
    /// or at once when the probe fails.
    pub fn failed(&self) {
        let failures = self.failures.fetch_add(1, Ordering::AcqRel).saturating_add(1);
        let probe_failed = self.probing.swap(false, Ordering::AcqRel);
        if probe_failed || failures >= FAILURES_TO_OPEN {
            let until = self.now() + open_for_micros();
            if self.open_until.swap(until, Ordering::AcqRel) == 0 {
                tracing::warn!(failures, "Redis is failing: circuit open, falling back");
            }
            self.gauge.set(CircuitState::Open.gauge());
        }
    }

    /// The current state.
    pub fn state(&self) -> CircuitState {
        match self.open_until.load(Ordering::Acquire) {
            0 => CircuitState::Closed,
            _ if self.probing.load(Ordering::Acquire) => CircuitState::HalfOpen,
            _ => CircuitState::Open,
        }
    }
}

fn open_for_micros() -> u64 {
    u64::try_from(OPEN_FOR.as_micros()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_circuit_opens_after_repeated_failures_and_lets_one_probe_through_later() {
        let breaker = Breaker::new(Gauge::default());
        for _ in 0..FAILURES_TO_OPEN - 1 {
            breaker.failed();
            assert!(breaker.allow());
        }
        breaker.failed();
        assert_eq!(breaker.state(), CircuitState::Open);
        assert!(!breaker.allow());

        // Pretend the cool-down passed.
        breaker.open_until.store(1, Ordering::Release);
        assert!(breaker.allow(), "the probe");
        assert!(!breaker.allow(), "only one probe at a time");
        breaker.failed();
        assert_eq!(breaker.state(), CircuitState::Open, "a failed probe reopens");

        breaker.open_until.store(1, Ordering::Release);
        assert!(breaker.allow());
        breaker.succeeded();
        assert_eq!(breaker.state(), CircuitState::Closed);
        assert!(breaker.allow() && breaker.allow());
    }

    #[test]
    fn a_success_resets_the_failure_count() {
        let breaker = Breaker::new(Gauge::default());
        for _ in 0..FAILURES_TO_OPEN - 1 {
            breaker.failed();
        }
        breaker.succeeded();
        breaker.failed();
        assert_eq!(breaker.state(), CircuitState::Closed);
    }
}
