//! SQL for the worker. The job row is the guard that makes effects
//! single: its lock serialises concurrent deliveries of the same job, and
//! its status tells a redelivery that the work is already done.

use serde_json::{Value, json};
use sqlx::{PgConnection, PgExecutor};
use telemetry::spans::Traced as _;
use uuid::Uuid;

/// A job taken by [`start`].
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Started {
    pub kind: String,
    pub input: Value,
    /// This delivery's attempt number (1-based).
    pub attempts: i32,
}

/// What [`start`] found.
#[derive(Debug)]
pub enum Start {
    /// The job is now `running`.
    Started(Started),
    /// The job is already finished: this delivery is a duplicate.
    Finished,
    /// No such job (a message from elsewhere, or a database that was reset).
    Missing,
}

/// Marks the job `running` and counts the attempt, unless it is finished.
pub async fn take(db: &sqlx::PgPool, id: Uuid) -> sqlx::Result<Start> {
    let started: Option<Started> = sqlx::query_as(
        "UPDATE jobs
         SET status = 'running', attempts = attempts + 1, started_at = coalesce(started_at, now()), updated_at = now()
         WHERE id = $1 AND status IN ('queued', 'running')
         RETURNING kind, input, attempts",
    )
    .bind(id)
    .fetch_optional(db)
    .traced(telemetry::db_span!("UPDATE", "jobs"))
    .await?;
    if let Some(started) = started {
        return Ok(Start::Started(started));
    }
    let exists: Option<(Uuid,)> = sqlx::query_as("SELECT id FROM jobs WHERE id = $1")
        .bind(id)
        .fetch_optional(db)
        .traced(telemetry::db_span!("SELECT", "jobs"))
        .await?;
    Ok(if exists.is_some() { Start::Finished } else { Start::Missing })
}

/// Locks the job row for the effect's transaction; `false` when the job
/// finished meanwhile (a concurrent delivery did it).
pub async fn lock_unfinished(tx: &mut PgConnection, id: Uuid) -> sqlx::Result<bool> {
    let status: Option<(String,)> = sqlx::query_as("SELECT status FROM jobs WHERE id = $1 FOR UPDATE")
        .bind(id)
        .fetch_optional(&mut *tx)
        .traced(telemetry::db_span!("SELECT", "jobs"))
        .await?;
    Ok(matches!(status.as_ref().map(|s| s.0.as_str()), Some("queued" | "running")))
}

/// Records the effect and the result, in the effect's transaction.
pub async fn succeed(
    tx: &mut PgConnection,
    id: Uuid,
    attempt: i32,
    worker: &str,
    result: &Value,
) -> sqlx::Result<()> {
    sqlx::query("INSERT INTO job_effects (job_id, attempt, worker) VALUES ($1, $2, $3)")
        .bind(id)
        .bind(attempt)
        .bind(worker)
        .execute(&mut *tx)
        .traced(telemetry::db_span!("INSERT", "job_effects"))
        .await?;
    sqlx::query(
        "UPDATE jobs SET status = 'succeeded', result = $2, error = NULL, finished_at = now(), updated_at = now()
         WHERE id = $1",
    )
    .bind(id)
    .bind(result)
    .execute(&mut *tx)
    .traced(telemetry::db_span!("UPDATE", "jobs"))
    .await
    .map(drop)
}

/// Back to `queued` until the retry arrives, with the error that caused it.
pub async fn retry_later(
    db: impl PgExecutor<'_>,
    id: Uuid,
    error: &str,
    retry_in_ms: u128,
) -> sqlx::Result<()> {
    let error = json!({"message": error, "retry_in_ms": retry_in_ms});
    sqlx::query("UPDATE jobs SET status = 'queued', error = $2, updated_at = now() WHERE id = $1 AND status = 'running'")
        .bind(id)
        .bind(error)
        .execute(db)
        .traced(telemetry::db_span!("UPDATE", "jobs"))
        .await
        .map(drop)
}

/// Finishes the job as `failed` (or `dead_lettered`), unless it finished already.
pub async fn finish_unsuccessfully(
    db: impl PgExecutor<'_>,
    id: Uuid,
    status: &'static str,
    error: &Value,
) -> sqlx::Result<bool> {
    let done = sqlx::query(
        "UPDATE jobs SET status = $2, error = $3, finished_at = now(), updated_at = now()
         WHERE id = $1 AND status IN ('queued', 'running')",
    )
    .bind(id)
    .bind(status)
    .bind(error)
    .execute(db)
    .traced(telemetry::db_span!("UPDATE", "jobs"))
    .await?;
    Ok(done.rows_affected() == 1)
}

/// Whether a database error is worth waiting out (the database is away or
/// overloaded) rather than a bug.
pub fn is_transient(err: &sqlx::Error) -> bool {
    match err {
        sqlx::Error::PoolTimedOut | sqlx::Error::Io(_) | sqlx::Error::Tls(_) | sqlx::Error::WorkerCrashed => {
            true
        }
        // Class 08 (connection exception), 57P0x (shutdown, crash recovery),
        // 40001/40P01 (serialization failure, deadlock).
        sqlx::Error::Database(db) => db
            .code()
            .is_some_and(|c| c.starts_with("08") || c.starts_with("57P0") || c == "40001" || c == "40P01"),
        _ => false,
    }
}
