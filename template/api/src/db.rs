//! The Postgres pool and the embedded migrations.

use std::time::Duration;

use anyhow::Context;
use prometheus_client::metrics::histogram::Histogram;
use secrecy::ExposeSecret;
use sqlx::migrate::{MigrateDatabase, Migrator};
use sqlx::pool::PoolConnection;
use sqlx::postgres::PgPoolOptions;
use sqlx::{PgPool, Postgres};
use tokio::time::Instant;

use service::database::DatabaseConfig;

/// The pool as the request path uses it: every checkout is timed, so
/// `db_client_connection_wait_time_seconds` shows requests queueing for a
/// connection long before they time out.
#[derive(Clone, Debug)]
pub struct Db {
    pool: PgPool,
    wait: Histogram,
}

impl Db {
    /// `pool`, observed by `wait`.
    pub fn new(pool: PgPool, wait: Histogram) -> Self {
        Self { pool, wait }
    }

    /// A pooled connection, after however long the pool made us wait.
    pub async fn conn(&self) -> sqlx::Result<PoolConnection<Postgres>> {
        let started = Instant::now();
        let conn = self.pool.acquire().await;
        self.wait.observe(started.elapsed().as_secs_f64());
        conn
    }
}

/// The migrations in `api/migrations`, compiled into the binary.
pub static MIGRATOR: Migrator = sqlx::migrate!();

/// What `pg_stat_activity` calls this service's connections.
const APPLICATION: &str = concat!(env!("PROJECT_NAME"), "-api");

/// The request path's pool (see [`service::database`] for its rules).
pub fn pool(config: &DatabaseConfig) -> anyhow::Result<PgPool> {
    service::database::pool(config, APPLICATION)
}

/// Creates the database if it does not exist, then applies pending migrations.
pub async fn migrate(config: &DatabaseConfig) -> anyhow::Result<()> {
    let url = config.url.expose_secret();
    if !Postgres::database_exists(url).await.context("checking whether the database exists")? {
        Postgres::create_database(url).await.context("creating the database")?;
        tracing::info!("created the database");
    }
    // No statement timeout here: a migration may rightly take a while.
    let pool = PgPoolOptions::new()
        .max_connections(1)
        .acquire_timeout(Duration::from_secs(10))
        .connect_with(service::database::connect_options(config, APPLICATION)?)
        .await
        .context("connecting to Postgres to migrate")?;
    MIGRATOR.run(&pool).await.context("applying migrations")?;
    pool.close().await;
    tracing::info!(applied = MIGRATOR.iter().count(), "migrations are up to date");
    Ok(())
}

/// A cheap round trip that proves the pool can reach Postgres.
pub async fn ping(pool: &PgPool) -> sqlx::Result<()> {
    sqlx::query("SELECT 1").execute(pool).await.map(drop)
}
