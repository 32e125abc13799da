//! Building and running the worker: the health port, the consumer, the drain.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use anyhow::Context;
use service::Lifecycle;
use sqlx::PgPool;
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::config::Config;
use crate::consumer::Runner;
use crate::http::{self, Health};
use crate::metrics::Metrics;

/// A built, bound, not yet running worker.
pub struct Worker {
    listener: TcpListener,
    config: Config,
    db: PgPool,
    metrics: Arc<Metrics>,
}

impl Worker {
    /// Binds the health port and builds the pool (which connects lazily:
    /// the worker starts, not ready, while Postgres is away).
    pub async fn build(config: Config) -> anyhow::Result<Self> {
        let db = service::database::pool(&config.database, concat!(env!("PROJECT_NAME"), "-worker"))?;
        let listener =
            TcpListener::bind(config.listen).await.with_context(|| format!("binding {}", config.listen))?;
        let metrics = Arc::new(Metrics::new(db.clone()));
        Ok(Self { listener, config, db, metrics })
    }

    /// The health port's address (with the real port when 0 was asked for).
    pub fn local_addr(&self) -> SocketAddr {
        self.listener.local_addr().expect("a bound listener has an address")
    }

    /// Consumes until `shutdown` completes, then drains: readiness turns 503,
    /// consuming stops, started jobs get the grace to finish, and the call
    /// returns (and `main` exits 0).
    pub async fn run_until_stopped(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<()> {
        let Self { listener, config, db, metrics } = self;
        let consuming = Arc::new(AtomicBool::new(false));
        let lifecycle = Lifecycle::default();
        let health = Health {
            db: db.clone(),
            metrics: metrics.clone(),
            consuming: consuming.clone(),
            lifecycle: lifecycle.clone(),
        };
        let (stop_http, http_stopped) = watch::channel(false);
        let server = axum::serve(listener, http::router(health)).with_graceful_shutdown(async move {
            let mut stopped = http_stopped;
            let _ = stopped.wait_for(|s| *s).await;
        });
        let server = tokio::spawn(async move { server.await });
        tracing::info!(queue = config.topology.queue(), concurrency = config.concurrency, "worker starting");

        let gauges = tokio::spawn(crate::gauges::watch(config.clone(), db.clone(), metrics.clone()));
        let (stop, stopped) = watch::channel(false);
        let runner = Arc::new(Runner::new(config, db.clone(), metrics, consuming, lifecycle.clone()));
        let consumer = tokio::spawn(runner.supervise(stopped));
        shutdown.await;
        lifecycle.start_draining();
        tracing::info!("shutdown requested: readiness is now 503");
        let _ = stop.send(true);
        consumer.await.context("the consumer task failed")?;
        gauges.abort();
        let _ = stop_http.send(true);
        let _ = tokio::time::timeout(Duration::from_secs(2), server).await;
        let _ = tokio::time::timeout(Duration::from_secs(2), db.close()).await;
        tracing::info!("stopped");
        Ok(())
    }
}
