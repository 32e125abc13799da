//! A database per test: created empty, migrated, dropped when the test ends.

use std::str::FromStr;

use anyhow::Context;
use sqlx::migrate::Migrator;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{ConnectOptions, Connection, PgConnection};

use crate::services;

/// A uniquely named database that is dropped when this value is.
#[derive(Debug)]
pub struct TestDatabase {
    admin: PgConnectOptions,
    name: String,
}

impl TestDatabase {
    /// Creates a fresh database on the test Postgres and applies `migrator`.
    pub async fn create(migrator: &Migrator) -> anyhow::Result<Self> {
        let admin = PgConnectOptions::from_str(&services::postgres_url()?)?;
        let name = format!("test_{}", uuid::Uuid::now_v7().simple());
        let mut conn = admin.connect().await.context("connecting to the test Postgres")?;
        sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE \"{name}\"")))
            .execute(&mut conn)
            .await
            .context("creating the test database")?;
        conn.close().await?;
        let db = Self { admin, name };
        let pool = PgPoolOptions::new().max_connections(1).connect_with(db.options()).await?;
        migrator.run(&pool).await.context("migrating the test database")?;
        pool.close().await;
        Ok(db)
    }

    /// Connection options for this database.
    pub fn options(&self) -> PgConnectOptions {
        self.admin.clone().database(&self.name)
    }

    /// The URL of this database, optionally through another host and port
    /// (a [`crate::FaultProxy`]).
    pub fn url(&self) -> String {
        self.url_via(self.admin.get_host(), self.admin.get_port())
    }

    /// The URL of this database reached at `host:port`.
    pub fn url_via(&self, host: &str, port: u16) -> String {
        let user = self.admin.get_username();
        format!("postgres://{user}@{host}:{port}/{}", self.name)
    }
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        // Drop runs inside the test's runtime, which cannot block on async
        // work; a short-lived thread with its own runtime can.
        let admin = self.admin.clone();
        let name = self.name.clone();
        let dropped = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
            runtime.block_on(async move {
                let mut conn: PgConnection = admin.connect().await?;
                sqlx::query(sqlx::AssertSqlSafe(format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)")))
                    .execute(&mut conn)
                    .await?;
                anyhow::Ok(())
            })
        })
        .join();
        if let Ok(Err(err)) = dropped {
            tracing::warn!(error = %err, database = %self.name, "could not drop the test database");
        }
    }
}
