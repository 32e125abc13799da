//! Small things every test needs once: a free port, a bounded wait for a
//! condition, and reading a sample out of a Prometheus scrape.

use std::future::Future;
use std::time::Duration;

use tokio::time::Instant;

/// How often [`wait_until`] checks.
const POLL: Duration = Duration::from_millis(20);

/// A free TCP port on the loopback interface (free now: bind it soon).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).expect("a free port").port()
}

/// Waits until `check` holds, checking every 20 ms; panics naming `what`
/// after `limit`.
pub async fn wait_until<F, Fut>(what: &str, limit: Duration, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = Instant::now() + limit;
    while !check().await {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        tokio::time::sleep(POLL).await;
    }
}

/// One sample from Prometheus text: the first line starting with `series`
/// (a name, or a name with its labels).
pub fn sample(metrics: &str, series: &str) -> Option<f64> {
    metrics.lines().find_map(|line| line.strip_prefix(series).and_then(|rest| rest.trim().parse().ok()))
}

/// The sum of every sample whose series starts with `series`: all label
/// combinations when given only the name.
pub fn total(metrics: &str, series: &str) -> f64 {
    metrics
        .lines()
        .filter(|line| !line.starts_with('#') && line.starts_with(series))
        .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    const SCRAPE: &str = "# TYPE jobs_total counter\n\
        jobs_total{outcome=\"ok\"} 3\n\
        jobs_total{outcome=\"failed\"} 2\n\
        jobs_in_flight 1\n";

    #[test]
    fn samples_and_totals() {
        assert_eq!(sample(SCRAPE, "jobs_total{outcome=\"failed\"}"), Some(2.0));
        assert_eq!(sample(SCRAPE, "jobs_in_flight"), Some(1.0));
        assert_eq!(sample(SCRAPE, "absent"), None);
        assert!((total(SCRAPE, "jobs_total") - 5.0).abs() < f64::EPSILON);
    }

    #[tokio::test]
    async fn waiting_ends_when_the_condition_holds() {
        let mut calls = 0;
        wait_until("the third call", Duration::from_secs(5), || {
            calls += 1;
            let done = calls >= 3;
            async move { done }
        })
        .await;
        assert_eq!(calls, 3);
    }

    #[test]
    fn a_free_port_can_be_bound() {
        let port = free_port();
        assert!(std::net::TcpListener::bind(("127.0.0.1", port)).is_ok());
    }
}
