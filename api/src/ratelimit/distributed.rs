//! The shared limiter: `gcra.lua` run in Redis, one round trip per request,
//! or per lease of several requests (`lease.rs`) when leases are on.

use std::sync::{Arc, LazyLock};
use std::time::{Duration, Instant};

use redis::Script;

use super::lease::{self, Leases};
use super::{Check, Outcome};
use crate::redis_client::{Redis, Unavailable};

/// Loaded once per process; `invoke_async` sends `EVALSHA` and falls back to
/// loading the script when Redis does not know it (after a restart, say).
static GCRA: LazyLock<Script> = LazyLock::new(|| Script::new(include_str!("gcra.lua")));

/// Rate limits shared by every replica through Redis.
pub(super) struct SharedLimiter {
    redis: Arc<Redis>,
    /// The most requests one round trip leases (1: none, every request asks).
    lease: u32,
    leases: Leases,
}

impl SharedLimiter {
    pub(super) fn new(redis: Arc<Redis>, lease: u32) -> Self {
        Self { redis, lease, leases: Leases::default() }
    }

    /// Decides on a request: from this replica's lease on its checks if it
    /// holds one, otherwise in Redis.
    pub(super) async fn check(&self, checks: &[Check]) -> Result<Vec<Outcome>, Unavailable> {
        let size = lease::size(self.lease, checks);
        if size == 1 {
            return self.charge(checks, 1, 0).await.map(|(_, outcomes)| outcomes);
        }
        let key = Leases::key(checks);
        let now = Instant::now();
        let refund = match self.leases.spend(&key, now) {
            Ok(outcomes) => return Ok(outcomes),
            Err(refund) => refund,
        };
        let (granted, outcomes) = self.charge(checks, size, refund).await?;
        if granted == 0 {
            return Ok(outcomes);
        }
        // Charged no earlier than `now`: the lease's lifetime counts from it.
        Ok(self.leases.keep(key, checks, granted, outcomes, now))
    }

    /// Runs every check in one atomic script, charging up to `take` requests
    /// after giving back `refund`; returns what was granted and the outcomes.
    async fn charge(
        &self,
        checks: &[Check],
        take: u32,
        refund: u32,
    ) -> Result<(u32, Vec<Outcome>), Unavailable> {
        let mut invocation = GCRA.prepare_invoke();
        invocation.arg(take).arg(refund);
        for check in checks {
            // The hash tag (`{…}`) puts every policy of one caller in the same
            // cluster slot, so the multi-key script also works on Redis Cluster.
            invocation
                .key(self.redis.key(&format!("rl:{{{}}}:{}", check.partition, check.policy)))
                .arg(check.rate.interval_micros())
                .arg(check.rate.burst);
        }
        let reply: Vec<i64> = self
            .redis
            .call(("EVALSHA", "EVALSHA ratelimit.gcra"), |mut conn| async move {
                invocation.invoke_async(&mut conn).await
            })
            .await?;
        parse(&reply, checks.len()).ok_or(Unavailable::Malformed)
    }
}

/// Turns the script's flat reply into the requests granted and one outcome
/// per check.
fn parse(reply: &[i64], checks: usize) -> Option<(u32, Vec<Outcome>)> {
    let micros = |v: i64| Duration::from_micros(u64::try_from(v).unwrap_or(0));
    let granted = u32::try_from(*reply.first()?).ok()?;
    let fields = &reply[1..];
    if fields.len() != checks * 4 {
        return None;
    }
    let outcomes = fields
        .chunks_exact(4)
        .map(|f| Outcome {
            allowed: f[0] == 1,
            remaining: u64::try_from(f[1]).unwrap_or(0),
            reset: micros(f[2]),
            retry_after: micros(f[3]),
        })
        .collect();
    Some((granted, outcomes))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reply_of_the_wrong_length_is_refused() {
        assert!(parse(&[1, 1, 4, 100, 0], 1).is_some());
        assert!(parse(&[1, 1, 4, 100], 1).is_none());
        assert!(parse(&[-1, 1, 4, 100, 0], 1).is_none());
        assert!(parse(&[], 1).is_none());
    }
}
