//! The shared limiter: `gcra.lua` run in Redis, one round trip per request.

use std::sync::{Arc, LazyLock};
use std::time::Duration;

use redis::Script;

use super::{Check, Outcome};
use crate::redis_client::{Redis, Unavailable};

/// Loaded once per process; `invoke_async` sends `EVALSHA` and falls back to
/// loading the script when Redis does not know it (after a restart, say).
static GCRA: LazyLock<Script> = LazyLock::new(|| Script::new(include_str!("gcra.lua")));

/// Rate limits shared by every replica through Redis.
pub(super) struct SharedLimiter {
    redis: Arc<Redis>,
}

impl SharedLimiter {
    pub(super) fn new(redis: Arc<Redis>) -> Self {
        Self { redis }
    }

    /// Runs every check in one atomic script.
    pub(super) async fn check(&self, checks: &[Check]) -> Result<Vec<Outcome>, Unavailable> {
        let mut invocation = GCRA.prepare_invoke();
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

/// Turns the script's flat reply into one outcome per check.
fn parse(reply: &[i64], checks: usize) -> Option<Vec<Outcome>> {
    let micros = |v: i64| Duration::from_micros(u64::try_from(v).unwrap_or(0));
    let fields = reply.get(1..)?;
    if fields.len() != checks * 4 {
        return None;
    }
    Some(
        fields
            .chunks_exact(4)
            .map(|f| Outcome {
                allowed: f[0] == 1,
                remaining: u64::try_from(f[1]).unwrap_or(0),
                reset: micros(f[2]),
                retry_after: micros(f[3]),
            })
            .collect(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reply_of_the_wrong_length_is_refused() {
        assert!(parse(&[1, 1, 4, 100, 0], 1).is_some());
        assert!(parse(&[1, 1, 4, 100], 1).is_none());
        assert!(parse(&[], 1).is_none());
    }
}
