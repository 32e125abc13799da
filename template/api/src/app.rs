//! Building and running the service: bind, serve, drain.
//!
//! [`App::build`] binds its own listener (port 0 works) and
//! [`App::run_until_stopped`] takes the shutdown signal as a future, so
//! tests start real instances and stop them when they choose.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use axum::Router;
use sqlx::PgPool;

use crate::db::Db;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
{% if worker %}use tokio::sync::Notify;
{% endif %}
{% if redis %}use crate::items::cache::{CacheMetrics, ItemCache};
{% endif %}use crate::config::Config;
use crate::http::access::Access;
use crate::items::Items;
{% if worker %}use crate::offload::Jobs;
use crate::offload::relay::{Relay, RelayMetrics};
{% endif %}use crate::api_keys::KeyRing;
use crate::ratelimit::Limiter;
{% if redis %}use crate::redis_client::{Redis, RedisMetrics};
{% endif %}use crate::observability::metrics::Metrics;
use crate::routes;
use crate::state::AppState;

/// How long closing the pool may take once the server has stopped.
const POOL_CLOSE_TIMEOUT: Duration = Duration::from_secs(2);

/// A built, bound, not yet serving instance of the API.
pub struct App {
    listener: TcpListener,
    router: Router,
    state: AppState,
    config: Config,
{% if worker %}    relay_wake: Arc<Notify>,
    relay_metrics: RelayMetrics,
{% endif %}}

impl App {
    /// Builds the state and router and binds the listener. Postgres is not
    /// contacted here: the pool connects lazily, so the instance starts (and
    /// reports not-ready) even while the database is down.
    pub async fn build(config: Config) -> anyhow::Result<Self> {
        let db = crate::db::pool(&config.database)?;
        let metrics = Arc::new(Metrics::new(db.clone()));
        let keys = KeyRing::start(db.clone(), config.access.key_refresh).await;
        #[allow(unused_mut, reason = "changed only when the project has Redis")]
        let mut items = Items::new(Db::new(db.clone(), metrics.db_client_connection_wait_time.clone()));
{% if redis %}        // Each subsystem declares its own metrics; these two are registered
        // even when Redis or the cache is off, so their series always exist.
        let redis_metrics = RedisMetrics::register(&metrics);
        let cache_metrics = CacheMetrics::register(&metrics);
        let limiter = match &config.redis {
            Some(redis_config) => {
                let redis = Arc::new(Redis::connect(redis_config, redis_metrics)?);
                if !config.cache_ttl.is_zero() {
                    let cache = ItemCache::new(
                        redis.clone(),
                        config.cache_ttl,
                        cache_metrics,
                        config.cache_fill_delay,
                    );
                    items = items.with_cache(cache);
                }
                Limiter::shared(redis, config.access.replicas, config.rate_limit_lease, &metrics)
            }
            None => Limiter::local(config.access.replicas, &metrics),
        };
{% endif %}{% unless redis %}        let limiter = Limiter::local(config.access.replicas, &metrics);
{% endunless %}        let access = Arc::new(Access {
            keys,
            limiter,
            policies: config.access.policies.clone(),
            trusted_proxies: config.access.trusted_proxies.clone(),
            public_max_age: config.access.public_max_age,
        });
{% if worker %}        let relay_wake = Arc::new(Notify::new());
        let relay_metrics = RelayMetrics::register(&metrics);
        let jobs = Jobs::new(
            Db::new(db.clone(), metrics.db_client_connection_wait_time.clone()),
            relay_wake.clone(),
        );
{% endif %}        let state = AppState {
            db,
            items,
{% if worker %}            jobs,
{% endif %}            access,
            metrics,
            lifecycle: service::Lifecycle::default(),
        };
        let router = routes::router(state.clone(), &config.server.http, &config.server.deprecations);
        let listener = TcpListener::bind(config.server.listen)
            .await
            .with_context(|| format!("binding {}", config.server.listen))?;
        Ok(Self {
            listener,
            router,
            state,
            config,
{% if worker %}            relay_wake,
            relay_metrics,
{% endif %}        })
    }

    /// The bound address (with the real port when 0 was asked for).
    pub fn local_addr(&self) -> SocketAddr {
        self.listener.local_addr().expect("a bound listener has an address")
    }

    /// The Postgres pool, for tests that need to hold connections.
    pub fn db(&self) -> &PgPool {
        &self.state.db
    }

    /// Serves until `shutdown` completes, then drains:
    /// 1. readiness turns 503 at once, so load balancers stop sending traffic;
    /// 2. after `SHUTDOWN_DELAY` the listener closes and idle connections go;
    /// 3. in-flight requests get `SHUTDOWN_GRACE` to finish;
    /// 4. the pool closes and the call returns, and `main` exits 0.
    pub async fn run_until_stopped(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<()> {
{% if worker %}        let Self { listener, router, state, config, relay_wake, relay_metrics } = self;
        // The relay starts with serving and stops after the drain; stopping
        // it mid-pass is safe (see `offload::relay`).
        let relay = config
            .relay
            .clone()
            .map(|relay| Relay::spawn(state.db.clone(), relay, relay_wake, relay_metrics));
{% endif %}{% unless worker %}        let Self { listener, router, state, config } = self;
{% endunless %}        tracing::info!(address = %listener.local_addr()?, "serving HTTP");
        let lifecycle = state.lifecycle.clone();
        let (closed_tx, closed_rx) = oneshot::channel();
        let drain = async move {
            shutdown.await;
            lifecycle.start_draining();
            tracing::info!(delay = ?config.server.shutdown_delay, "shutdown requested: readiness is now 503");
            tokio::time::sleep(config.server.shutdown_delay).await;
            tracing::info!(grace = ?config.server.shutdown_grace, "closing the listener; draining in-flight requests");
            let _ = closed_tx.send(());
        };
        // Connection info gives the access guard the peer address.
        let serving = axum::serve(listener, router.into_make_service_with_connect_info::<SocketAddr>())
            .with_graceful_shutdown(drain);
        let grace_expired = async {
            // A dropped sender means the server ended without a shutdown.
            if closed_rx.await.is_ok() {
                tokio::time::sleep(config.server.shutdown_grace).await;
            } else {
                std::future::pending::<()>().await;
            }
        };
        tokio::select! {
            result = serving => result.context("serving HTTP")?,
            () = grace_expired => tracing::warn!("shutdown grace expired; abandoning in-flight requests"),
        }
{% if worker %}        if let Some(relay) = relay {
            relay.abort();
        }
{% endif %}        if tokio::time::timeout(POOL_CLOSE_TIMEOUT, state.db.close()).await.is_err() {
            tracing::warn!("the database pool did not close in time");
        }
        tracing::info!("stopped");
        Ok(())
    }
}
