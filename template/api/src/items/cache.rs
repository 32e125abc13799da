//! Cache-aside for item reads, in Redis.
//!
//! Correctness rules, each for a race that otherwise serves stale data:
//! - **Invalidate after commit, never before**: a reader between an early
//!   delete and the commit would refill the old row.
//! - **Invalidation leaves a tombstone carrying the committed version**, and
//!   a fill only lands if its version is at least the one stored (one atomic
//!   script). A slow reader that read the old row before the write therefore
//!   cannot put it back after the invalidation; a plain `DEL` would let it.
//! - **The TTL is the backstop**: whatever slips through (an invalidation
//!   lost with Redis down for longer than the retry window) lives at most
//!   `CACHE_TTL`.
//!
//! A cold or expired hot key reaches Postgres once per replica: concurrent
//! misses for one id wait for a single load (single flight), and the leader
//! looks in Redis once more before loading, so a miss that raced a fill does
//! not load again. A request that saw a tombstone never accepts a shared load
//! older than that tombstone: it started before the write, and joining it
//! would break read-after-write across replicas.
//!
//! Redis trouble never fails a read: a lookup that errs, times out or meets
//! an open circuit is a miss that skips the fill, and reads go to Postgres.
//! Invalidations that fail are retried in the background, and until one
//! succeeds this replica reads that id from Postgres only.

use std::collections::HashMap;
use std::sync::{Arc, LazyLock, Mutex, PoisonError, Weak};
use std::time::Duration;

use crate::db::Db;
use redis::Script;
use tokio::sync::OnceCell;
use uuid::Uuid;

use super::{Item, ItemError, store};
use crate::error::{ErrorCode, classify_db_error};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;

use crate::observability::metrics::Metrics;
use crate::redis_client::Redis;

/// Stores `{v: version, d: payload}` unless the stored version is newer; an
/// empty payload stores a tombstone (`v` only). Returns 1 when stored.
static PUT: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
        local stored = tonumber(redis.call('HGET', KEYS[1], 'v'))
        if stored and stored > tonumber(ARGV[1]) then return 0 end
        if ARGV[2] == '' then
          redis.call('HDEL', KEYS[1], 'd')
          redis.call('HSET', KEYS[1], 'v', ARGV[1])
        else
          redis.call('HSET', KEYS[1], 'v', ARGV[1], 'd', ARGV[2])
        end
        redis.call('PEXPIRE', KEYS[1], ARGV[3])
        return 1
        ",
    )
});

/// How often failed invalidations are retried.
const RETRY_EVERY: Duration = Duration::from_millis(200);

type Loaded = Result<Option<Item>, ErrorCode>;

/// Labels of the cache counters.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CacheLabels {
    /// Which cache (`items`).
    cache: &'static str,
    /// Lookups: `hit`, `miss` or `bypass` (Redis unavailable). Fills:
    /// `stored`, `stale` (a newer version was already there) or `failed`.
    result: &'static str,
}

/// The cache's metrics. Registered with the app whether or not the cache
/// runs, so dashboards read zeros rather than gaps.
#[derive(Clone)]
pub struct CacheMetrics {
    /// Lookups by result.
    requests: Family<CacheLabels, Counter>,
    /// Fills by result.
    fills: Family<CacheLabels, Counter>,
    /// Postgres loads made on behalf of the cache (after single flight).
    loads: Counter,
    /// Invalidations Redis did not take at once, retried in the background.
    invalidations_deferred: Counter,
}

impl CacheMetrics {
    /// Declares the cache's metrics in `metrics`.
    pub fn register(metrics: &Metrics) -> Self {
        let requests = Family::<CacheLabels, Counter>::default();
        metrics.register("cache_requests", "Cache lookups by result", requests.clone());
        let fills = Family::<CacheLabels, Counter>::default();
        metrics.register("cache_fills", "Cache fills by result", fills.clone());
        let loads = Counter::default();
        metrics.register("cache_loads", "Postgres loads made to fill the cache", loads.clone());
        let invalidations_deferred = Counter::default();
        metrics.register(
            "cache_invalidations_deferred",
            "Cache invalidations retried in the background because Redis did not take them",
            invalidations_deferred.clone(),
        );
        Self { requests, fills, loads, invalidations_deferred }
    }
}

/// The item cache of one replica.
pub struct ItemCache {
    redis: Arc<Redis>,
    ttl: Duration,
    /// Loads in flight, one per id.
    inflight: Mutex<HashMap<Uuid, Arc<OnceCell<Loaded>>>>,
    /// Invalidations Redis has not taken yet: id → version of the tombstone.
    pending: Mutex<HashMap<Uuid, i64>>,
    metrics: CacheMetrics,
    /// Test hook: a pause between reading Postgres and filling the cache,
    /// to widen the race the version guard closes.
    fill_delay: Option<Duration>,
}

/// What a lookup found.
enum Cached {
    Hit(Item),
    /// Nothing usable; `floor` is the version of a tombstone, if one was
    /// there: a write that committed before this lookup.
    Miss {
        floor: Option<i64>,
    },
    /// Redis did not answer: read Postgres and do not fill.
    Unavailable,
}

impl ItemCache {
    /// A cache over `redis`; entries live `ttl`. Starts the invalidation
    /// retrier, which ends when the cache is dropped.
    pub fn new(
        redis: Arc<Redis>,
        ttl: Duration,
        metrics: CacheMetrics,
        fill_delay: Option<Duration>,
    ) -> Arc<Self> {
        let cache = Arc::new(Self {
            redis,
            ttl,
            inflight: Mutex::default(),
            pending: Mutex::default(),
            metrics,
            fill_delay,
        });
        tokio::spawn(retry_invalidations(Arc::downgrade(&cache)));
        cache
    }

    fn key(&self, id: Uuid) -> String {
        self.redis.key(&format!("item:{id}"))
    }

    fn count(&self, result: &'static str) {
        self.metrics.requests.get_or_create(&CacheLabels { cache: "items", result }).inc();
    }

    /// An item, from the cache when it is there.
    pub async fn get(&self, db: &Db, id: Uuid) -> Result<Option<Item>, ItemError> {
        // An invalidation Redis has not taken yet: the entry may be stale.
        let lookup = if self.is_pending(id) { Cached::Unavailable } else { self.lookup(id).await };
        let floor = match lookup {
            Cached::Hit(item) => {
                self.count("hit");
                return Ok(Some(item));
            }
            Cached::Miss { floor } => {
                self.count("miss");
                floor
            }
            Cached::Unavailable => {
                self.count("bypass");
                return Ok(store::find(&mut *db.conn().await?, id).await?);
            }
        };
        let mut fresh = false;
        loop {
            let cell = self.flight(id, fresh);
            // The leader keeps its own error whole (logs and metrics want the
            // cause); followers get its classification.
            let mut own_error = None;
            let loaded = cell
                .get_or_init(|| async {
                    self.load_and_fill(db, id).await.map_err(|err| {
                        let code = classify_db_error(&err);
                        own_error = Some(err);
                        code
                    })
                })
                .await
                .clone();
            self.land(id, &cell);
            if let Some(err) = own_error {
                return Err(ItemError::Database(err));
            }
            // A load already in flight may have read Postgres before a write
            // this request saw the tombstone of; joining it would go back in
            // time. Load again, once, on a flight of our own.
            let older = matches!(&loaded, Ok(Some(item)) if floor.is_some_and(|floor| item.version < floor));
            if older && !fresh {
                fresh = true;
                continue;
            }
            return loaded.map_err(ItemError::SharedLoad);
        }
    }

    /// The load in flight for `id`, or a new one; `fresh` always starts a new
    /// one (later callers join that).
    fn flight(&self, id: Uuid, fresh: bool) -> Arc<OnceCell<Loaded>> {
        let mut inflight = self.inflight.lock().unwrap_or_else(PoisonError::into_inner);
        if fresh {
            let cell = Arc::new(OnceCell::new());
            inflight.insert(id, cell.clone());
            return cell;
        }
        inflight.entry(id).or_default().clone()
    }

    /// Forgets a finished flight, unless a newer one replaced it.
    fn land(&self, id: Uuid, cell: &Arc<OnceCell<Loaded>>) {
        let mut inflight = self.inflight.lock().unwrap_or_else(PoisonError::into_inner);
        if inflight.get(&id).is_some_and(|current| Arc::ptr_eq(current, cell)) {
            inflight.remove(&id);
        }
    }

    /// The single-flight leader's work: look again, then load and fill.
    async fn load_and_fill(&self, db: &Db, id: Uuid) -> sqlx::Result<Option<Item>> {
        if let Cached::Hit(item) = self.lookup(id).await {
            return Ok(Some(item));
        }
        self.metrics.loads.inc();
        let item = store::find(&mut *db.conn().await?, id).await?;
        if let Some(item) = &item {
            if let Some(delay) = self.fill_delay {
                tokio::time::sleep(delay.mul_f64(rand::random::<f64>())).await;
            }
            self.fill(item).await;
        }
        Ok(item)
    }

    async fn lookup(&self, id: Uuid) -> Cached {
        let key = self.key(id);
        let reply: Result<(Option<i64>, Option<String>), _> = self
            .redis
            .call(("HMGET", "HMGET"), |mut conn| async move {
                redis::cmd("HMGET").arg(&key).arg("v").arg("d").query_async(&mut conn).await
            })
            .await;
        match reply {
            Ok((_, Some(payload))) => match serde_json::from_str(&payload) {
                Ok(item) => Cached::Hit(item),
                Err(err) => {
                    // An entry from an incompatible build: treat as absent.
                    tracing::warn!(error = %telemetry::chain(&err), "unreadable cache entry");
                    Cached::Miss { floor: None }
                }
            },
            Ok((floor, None)) => Cached::Miss { floor },
            Err(_) => Cached::Unavailable,
        }
    }

    async fn fill(&self, item: &Item) {
        let payload = serde_json::to_string(item).expect("an item serialises");
        let result = match self.put(item.id, item.version, &payload).await {
            Ok(true) => "stored",
            Ok(false) => "stale",
            Err(()) => "failed",
        };
        self.metrics.fills.get_or_create(&CacheLabels { cache: "items", result }).inc();
    }

    async fn put(&self, id: Uuid, version: i64, payload: &str) -> Result<bool, ()> {
        let key = self.key(id);
        let ttl = u64::try_from(self.ttl.as_millis()).unwrap_or(u64::MAX);
        self.redis
            .call(("EVALSHA", "EVALSHA cache.put"), |mut conn| async move {
                PUT.key(key).arg(version).arg(payload).arg(ttl).invoke_async::<i64>(&mut conn).await
            })
            .await
            .map(|stored| stored == 1)
            .map_err(drop)
    }

    /// Invalidates an item after a committed write; `version` is the version
    /// the write produced (for a delete, one past the deleted version).
    pub async fn invalidate(&self, id: Uuid, version: i64) {
        if self.put(id, version, "").await.is_err() {
            self.metrics.invalidations_deferred.inc();
            let mut pending = self.pending.lock().unwrap_or_else(PoisonError::into_inner);
            let entry = pending.entry(id).or_insert(version);
            *entry = (*entry).max(version);
        }
    }

    fn is_pending(&self, id: Uuid) -> bool {
        self.pending.lock().unwrap_or_else(PoisonError::into_inner).contains_key(&id)
    }
}

/// Retries deferred invalidations until each lands or the TTL has made it
/// pointless, for as long as the cache exists.
async fn retry_invalidations(cache: Weak<ItemCache>) {
    let mut deadlines: HashMap<Uuid, tokio::time::Instant> = HashMap::new();
    loop {
        tokio::time::sleep(RETRY_EVERY).await;
        let Some(cache) = cache.upgrade() else { return };
        let pending: Vec<(Uuid, i64)> = cache
            .pending
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .map(|(k, v)| (*k, *v))
            .collect();
        deadlines.retain(|id, _| pending.iter().any(|(p, _)| p == id));
        for (id, version) in pending {
            let deadline = *deadlines.entry(id).or_insert_with(|| tokio::time::Instant::now() + cache.ttl);
            let landed = cache.put(id, version, "").await.is_ok();
            if landed || tokio::time::Instant::now() >= deadline {
                let mut pending = cache.pending.lock().unwrap_or_else(PoisonError::into_inner);
                // A newer write may have raised the version meanwhile.
                if pending.get(&id) == Some(&version) {
                    pending.remove(&id);
                }
            } else {
                // Redis is still away: the rest would fail the same way.
                break;
            }
        }
    }
}
