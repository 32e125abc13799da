//! The shared limiter's accuracy: many clients on two instances hammer one
//! key, and the admissions must stay within the GCRA bound and close to it.
//! A deliberately racy limiter, built here only as a negative control, must
//! fail the same check: otherwise the check proves nothing.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use redis::aio::ConnectionManager;
use reqwest::StatusCode;

use crate::helpers::spawn_with;

const RATE: &str = "50/1s;burst=10";
const QUOTA: u64 = 50;
const BURST: u64 = 10;
const CLIENTS: usize = 16;
const HAMMER_FOR: Duration = Duration::from_secs(2);

/// Runs `attempt` in a loop on `CLIENTS` concurrent tasks for `HAMMER_FOR`;
/// returns the admissions and the time from the first attempt to the end
/// of the last.
async fn hammer<F, Fut>(attempt: F) -> (u64, Duration)
where
    F: Fn(usize) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = bool> + Send,
{
    let attempt = Arc::new(attempt);
    let admitted = Arc::new(AtomicU64::new(0));
    let started = tokio::time::Instant::now();
    let tasks: Vec<_> = (0..CLIENTS)
        .map(|client| {
            let (attempt, admitted) = (attempt.clone(), admitted.clone());
            tokio::spawn(async move {
                while started.elapsed() < HAMMER_FOR {
                    if attempt(client).await {
                        admitted.fetch_add(1, Ordering::Relaxed);
                    }
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.expect("a client task");
    }
    (admitted.load(Ordering::Relaxed), started.elapsed())
}

/// The GCRA bound: the burst, plus one per interval elapsed, plus one for
/// the boundary. Admitting more means the limit did not hold.
fn check_bound(admitted: u64, elapsed: Duration) -> Result<u64, String> {
    let interval = Duration::from_secs(1) / u32::try_from(QUOTA).expect("small");
    let bound = BURST + u64::try_from(elapsed.as_micros() / interval.as_micros()).expect("small") + 1;
    if admitted > bound {
        Err(format!("{admitted} admitted in {elapsed:?}, over the bound of {bound}"))
    } else {
        Ok(bound)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_instances_sharing_redis_admit_within_the_gcra_bound_and_close_to_it() {
    let first = spawn_with(|s| s.access.rate_limit_key = RATE.into()).await;
    let second = first.replica(|_| {}).await;
    let urls = [first.url("/v1/items?limit=1"), second.url("/v1/items?limit=1")];
    let client = first.client_raw().clone();
    let (admitted, elapsed) = hammer(move |n| {
        let request = client.get(&urls[n % 2]);
        async move {
            let status = request.send().await.expect("the request reaches the app").status();
            assert!(matches!(status, StatusCode::OK | StatusCode::TOO_MANY_REQUESTS), "{status}");
            status == StatusCode::OK
        }
    })
    .await;
    let bound = check_bound(admitted, elapsed).expect("the shared limit holds");
    // Close to it, too: a limiter that admits far less is broken the other way.
    assert!(admitted * 100 >= bound * 85, "only {admitted} admitted of a bound of {bound} in {elapsed:?}");
    println!("limiter accuracy: {admitted} admitted, GCRA bound {bound}, over {elapsed:?}");
}

/// The negative control: GCRA with a read, a decision in the client, and a
/// write. Concurrent clients read the same TAT and all admit themselves.
async fn racy_attempt(mut conn: ConnectionManager, key: String) -> bool {
    let interval = 1_000_000 / QUOTA;
    let (tat, (seconds, micros)): (Option<u64>, (u64, u64)) =
        redis::pipe().get(&key).cmd("TIME").query_async(&mut conn).await.expect("read");
    let now = seconds * 1_000_000 + micros;
    let next = tat.unwrap_or(now).max(now) + interval;
    if next - now > interval * BURST {
        return false;
    }
    let _: () = redis::cmd("SET")
        .arg(&key)
        .arg(next)
        .arg("PX")
        .arg(10_000)
        .query_async(&mut conn)
        .await
        .expect("write");
    true
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_non_atomic_limiter_fails_the_same_check() {
    let url = testkit::services::redis_url().expect("a Redis for the tests");
    let client = redis::Client::open(url).expect("a Redis URL");
    let conn = ConnectionManager::new(client).await.expect("a connection");
    let key = format!("racy-control:{}", uuid::Uuid::now_v7());
    let (admitted, elapsed) = hammer(move |_| racy_attempt(conn.clone(), key.clone())).await;
    let verdict = check_bound(admitted, elapsed);
    println!("negative control: {verdict:?}");
    assert!(
        verdict.is_err(),
        "the racy limiter stayed within the bound ({admitted} in {elapsed:?}): the check is blind"
    );
}
