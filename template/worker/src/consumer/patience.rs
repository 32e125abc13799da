//! Waiting out Postgres. Every database call a delivery makes (taking the
//! job, its effect, recording a retry or a failure, the dead-letter mark)
//! retries its transient failures (Postgres restarting, the pool exhausted)
//! the same way: exponential backoff from 100 ms to 5 s, for up to
//! [`DATABASE_PATIENCE`]. The delivery is held meanwhile rather than bounced
//! back to the queue, where it would spin through every worker.

use std::time::Duration;

use tokio::time::Instant;

use super::Runner;
use crate::store;

/// How long Postgres may stay away while a delivery is held before the
/// delivery is returned to the queue.
const DATABASE_PATIENCE: Duration = Duration::from_mins(1);
/// The first pause, doubled after each failure.
const FIRST_DELAY: Duration = Duration::from_millis(100);
/// The longest pause.
const MAX_DELAY: Duration = Duration::from_secs(5);

/// Runs `call` again while `transient` finds a transient database failure in
/// its result, until [`DATABASE_PATIENCE`] runs out or `give_up` says so;
/// returns the last result.
pub(super) async fn patiently<T, F, Fut>(
    mut call: F,
    transient: impl Fn(&T) -> Option<&sqlx::Error>,
    give_up: impl Fn() -> bool,
) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = T>,
{
    let deadline = Instant::now() + DATABASE_PATIENCE;
    let mut delay = FIRST_DELAY;
    loop {
        let result = call().await;
        let Some(err) = transient(&result) else { return result };
        if Instant::now() + delay > deadline || give_up() {
            return result;
        }
        tracing::warn!(error = %telemetry::chain(err), retry_in = ?delay, "the database failed; retrying");
        tokio::time::sleep(delay).await;
        delay = (delay * 2).min(MAX_DELAY);
    }
}

impl Runner {
    /// A database call, [`patiently`].
    pub(super) async fn patiently<T, F, Fut>(&self, call: F) -> sqlx::Result<T>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = sqlx::Result<T>>,
    {
        patiently(call, |result| result.as_ref().err().filter(|err| store::is_transient(err)), || false).await
    }
}
