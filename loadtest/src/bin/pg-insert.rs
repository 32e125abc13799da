//! The write path's baseline: a raw sqlx insert-and-commit loop on the same
//! Postgres as the api, with as many connections as the api's pool. Each
//! worker inserts one row per statement (a statement commits on its own),
//! for `SECONDS`; prints the rows per second.
//!
//! `DATABASE_URL` (required), `CONNECTIONS` (10, the api's default pool),
//! `SECONDS` (10).

use std::time::{Duration, Instant};

use anyhow::Context as _;
use sqlx::postgres::PgPoolOptions;

fn setting(name: &str, default: u64) -> anyhow::Result<u64> {
    std::env::var(name).map_or(Ok(default), |v| v.parse().with_context(|| format!("{name}={v}")))
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let url = std::env::var("DATABASE_URL").context("DATABASE_URL")?;
    let connections = u32::try_from(setting("CONNECTIONS", 10)?)?;
    let seconds = setting("SECONDS", 10)?;
    let pool =
        PgPoolOptions::new().max_connections(connections).min_connections(connections).connect(&url).await?;
    // A row the size of a job's: an id, a kind, a small JSON input.
    sqlx::query(
        "CREATE TABLE IF NOT EXISTS bench_raw_insert (id uuid PRIMARY KEY, kind text NOT NULL, \
         input jsonb NOT NULL, created_at timestamptz NOT NULL DEFAULT now())",
    )
    .execute(&pool)
    .await?;
    sqlx::query("TRUNCATE bench_raw_insert").execute(&pool).await?;
    let input = serde_json::json!({"to": "someone@example.com", "template": "welcome"});
    let deadline = Instant::now() + Duration::from_secs(seconds);
    let workers: Vec<_> = (0..connections)
        .map(|_| {
            let (pool, input) = (pool.clone(), input.clone());
            tokio::spawn(async move {
                let mut rows = 0_u64;
                while Instant::now() < deadline {
                    sqlx::query("INSERT INTO bench_raw_insert (id, kind, input) VALUES ($1, $2, $3)")
                        .bind(uuid::Uuid::now_v7())
                        .bind("email.send")
                        .bind(&input)
                        .execute(&pool)
                        .await?;
                    rows += 1;
                }
                anyhow::Ok(rows)
            })
        })
        .collect();
    let started = Instant::now();
    let mut rows = 0;
    for worker in workers {
        rows += worker.await??;
    }
    #[allow(clippy::cast_precision_loss, reason = "a rate")]
    let rate = rows as f64 / started.elapsed().as_secs_f64();
    println!("{rate:.0}");
    sqlx::query("DROP TABLE bench_raw_insert").execute(&pool).await?;
    Ok(())
}
