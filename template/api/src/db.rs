//! The Postgres pool and the embedded migrations.

use std::str::FromStr;
use std::time::Duration;

use anyhow::Context;
use prometheus_client::metrics::histogram::Histogram;
use secrecy::ExposeSecret;
use sqlx::migrate::{MigrateDatabase, Migrator};
use sqlx::pool::PoolConnection;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{PgPool, Postgres};
use tokio::time::Instant;

use crate::config::DatabaseConfig;

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

/// Connection options from the config.
fn connect_options(config: &DatabaseConfig) -> anyhow::Result<PgConnectOptions> {
    let options = PgConnectOptions::from_str(config.url.expose_secret()).context("parsing DATABASE_URL")?;
    Ok(options.application_name(concat!(env!("PROJECT_NAME"), "-api")))
}

/// Builds the pool. It connects lazily, so the server starts (and reports
/// not-ready) while Postgres is down, and recovers on its own when it returns.
pub fn pool(config: &DatabaseConfig) -> anyhow::Result<PgPool> {
    let statement_timeout = format!("{}ms", config.statement_timeout.as_millis());
    let pool = PgPoolOptions::new()
        .max_connections(config.max_connections)
        .min_connections(config.min_connections)
        .acquire_timeout(config.acquire_timeout)
        .idle_timeout(config.idle_timeout)
        .max_lifetime(config.max_lifetime)
        // A dead connection is found by the query that uses it and the pool
        // replaces it; a ping on every checkout would cost a round trip each.
        .test_before_acquire(false)
        // The statement timeout is set once per connection, at connect time,
        // rather than with a round trip per checkout.
        .connect_lazy_with(
            connect_options(config)?.options([("statement_timeout", statement_timeout.as_str())]),
        );
    Ok(pool)
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
        .connect_with(connect_options(config)?)
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
