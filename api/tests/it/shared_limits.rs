//! The shared limiter's accuracy: many clients on two instances hammer one
//! key, and the admissions must stay within the GCRA bound and close to it.
//! A deliberately racy limiter, built here only as a negative control, must
//! fail the same check: otherwise the check proves nothing. Leased limits
//! (`RATE_LIMIT_LEASE`) are held to the bound they document.

use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use api::ratelimit::lease::LIFETIME;
use tokio::time::Instant;

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

/// The emission interval of `QUOTA` per second.
const INTERVAL: Duration = Duration::from_millis(1000 / QUOTA);

/// Whole intervals in `span`.
fn intervals_in(span: Duration) -> u64 {
    u64::try_from(span.as_micros() / INTERVAL.as_micros()).expect("small")
}

/// The GCRA bound over `elapsed` for `burst`: the burst, plus one per
/// interval, plus one for the boundary.
fn gcra_bound(burst: u64, elapsed: Duration) -> u64 {
    burst + intervals_in(elapsed) + 1
}

/// Admitting more than the GCRA bound means the limit did not hold.
fn check_bound(admitted: u64, elapsed: Duration) -> Result<u64, String> {
    let bound = gcra_bound(BURST, elapsed);
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

/// Leases of up to 8 requests (a burst of 10 leases 2 at most; this rate's
/// burst of 40 leases 8).
const LEASED_RATE: &str = "50/1s;burst=40";
const LEASED_BURST: u64 = 40;

/// Settings of an instance that leases up to 8 requests of `LEASED_RATE`.
fn leased(s: &mut api::config::Settings) {
    s.access.rate_limit_key = LEASED_RATE.into();
    s.redis.rate_limit_lease = "8".into();
}

/// The most admitted requests whose whole exchange fell inside a window of
/// `window`: each of them was admitted inside it, so the count is never
/// more than the server admitted there, whatever the client's timing.
fn busiest_window(exchanges: &mut [(Instant, Instant)], window: Duration) -> u64 {
    exchanges.sort_unstable();
    let mut busiest = 0;
    for (i, (start, _)) in exchanges.iter().enumerate() {
        let end = *start + window;
        let inside = exchanges[i..].iter().take_while(|(sent, _)| *sent < end).filter(|(_, got)| *got <= end);
        busiest = busiest.max(inside.count() as u64);
    }
    busiest
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leased_limits_stay_within_the_gcra_bound_over_the_window_plus_a_lease_lifetime() {
    let first = spawn_with(leased).await;
    let second = first.replica(|_| {}).await;
    let urls = [first.url("/v1/items?limit=1"), second.url("/v1/items?limit=1")];
    let client = first.client_raw().clone();
    let exchanges = Arc::new(Mutex::new(Vec::new()));
    let record = exchanges.clone();
    let (admitted, elapsed) = hammer(move |n| {
        let (request, record) = (client.get(&urls[n % 2]), record.clone());
        async move {
            let sent = Instant::now();
            let status = request.send().await.expect("the request reaches the app").status();
            assert!(matches!(status, StatusCode::OK | StatusCode::TOO_MANY_REQUESTS), "{status}");
            let admitted = status == StatusCode::OK;
            if admitted {
                record.lock().expect("not poisoned").push((sent, Instant::now()));
            }
            admitted
        }
    })
    .await;
    // Over the whole run, from a fresh start, nothing more than the exact
    // limiter: every leased request was charged first.
    let whole = gcra_bound(LEASED_BURST, elapsed);
    assert!(admitted <= whole, "{admitted} admitted in {elapsed:?}, over the bound of {whole}");
    // In any window, at most the GCRA bound over the window and a lifetime.
    let window = Duration::from_millis(300);
    let mut exchanges = exchanges.lock().expect("not poisoned").clone();
    let busiest = busiest_window(&mut exchanges, window);
    let exact = gcra_bound(LEASED_BURST, window);
    let leased = exact + intervals_in(LIFETIME);
    assert!(busiest <= leased, "{busiest} admitted within {window:?}, over the leased bound of {leased}");
    // And close to the exact limit: held leases refuse callers elsewhere for
    // at most a lifetime, and their unspent requests are given back.
    assert!(admitted * 100 >= whole * 80, "only {admitted} admitted of a bound of {whole} in {elapsed:?}");
    println!(
        "leased limiter: {admitted} admitted (bound {whole}) in {elapsed:?}; busiest {window:?}: {busiest} \
         (exact bound {exact}, leased bound {leased})"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_caller_under_its_rate_is_never_refused_by_leases_held_on_two_replicas() {
    // 40/s against 50/s, alternating between two replicas, each of which
    // leases up to 8 and spends about 2 before its lease expires. The lease
    // is cut to the room Redis has left, so held leases never refuse it.
    let first = spawn_with(leased).await;
    let second = first.replica(|_| {}).await;
    let urls = [first.url("/v1/items?limit=1"), second.url("/v1/items?limit=1")];
    let mut ticks = tokio::time::interval(Duration::from_millis(25));
    for n in 0..100 {
        ticks.tick().await;
        let response =
            first.client_raw().get(&urls[n % 2]).send().await.expect("the request reaches the app");
        assert_eq!(response.status(), StatusCode::OK, "request {n} at 40/s was refused: {response:?}");
    }
}

/// The requests `RateLimit` says remain (one policy).
fn remaining(response: &reqwest::Response) -> u64 {
    let value = response.headers().get("ratelimit").expect("RateLimit").to_str().expect("ASCII");
    let r =
        value.split(';').find_map(|p| p.strip_prefix("r=")).unwrap_or_else(|| panic!("no r in {value:?}"));
    r.parse().unwrap_or_else(|_| panic!("r in {value:?}"))
}

#[tokio::test]
async fn a_lease_reports_what_the_exact_limiter_would_and_gives_back_what_it_did_not_spend() {
    // One request per 15 s, so nothing regenerates during the test; a burst
    // of 40 leases 8.
    let app = spawn_with(|s| {
        s.access.rate_limit_key = "4/1m;burst=40".into();
        s.redis.rate_limit_lease = "8".into();
    })
    .await;
    let url = app.url("/v1/items?limit=1");
    let get = || async { app.client_raw().get(&url).send().await.expect("the request reaches the app") };
    // Redis charged 8 and has 32 left; the caller sees 39, as if charged 1.
    assert_eq!(remaining(&get().await), 39);
    assert_eq!(remaining(&get().await), 38, "from the lease");
    tokio::time::sleep(LIFETIME + Duration::from_millis(20)).await;
    // The lease expired with 6 unspent: this round trip gives them back
    // before it takes the next lease, so nothing unspent was lost.
    assert_eq!(remaining(&get().await), 37);
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
