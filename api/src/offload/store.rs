//! SQL for jobs and the outbox. Each function takes any executor, so the
//! caller decides the transaction.

use sqlx::PgExecutor;
use uuid::Uuid;

use super::{Job, Submission};
use telemetry::spans::Traced as _;

/// The columns of [`Job`], as a literal so queries stay static strings.
macro_rules! columns {
    () => {
        "id, kind, status, attempts, result, error, created_at, updated_at, started_at, finished_at"
    };
}

/// Inserts a job and its outbox row in one statement (one round trip, and
/// atomic on its own: a statement is its own transaction); `None` when the
/// owner already used the idempotency key, and then nothing is written. A
/// concurrent insert with the same key waits for the other to commit.
pub async fn insert(
    db: impl PgExecutor<'_>,
    id: Uuid,
    submission: &Submission,
    request_hash: &[u8; 32],
) -> sqlx::Result<Option<Job>> {
    sqlx::query_as(concat!(
        "WITH job AS (
           INSERT INTO jobs (id, kind, input, owner, idempotency_key, request_hash, traceparent, tracestate)
           VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
           ON CONFLICT (owner, idempotency_key) DO NOTHING
           RETURNING ",
        columns!(),
        "), outbox AS (INSERT INTO job_outbox (job_id) SELECT id FROM job)
         SELECT ",
        columns!(),
        " FROM job"
    ))
    .bind(id)
    .bind(&submission.kind)
    .bind(&submission.input)
    .bind(submission.owner)
    .bind(submission.idempotency_key.as_deref())
    .bind(request_hash.as_slice())
    .bind(&submission.traceparent)
    .bind(submission.tracestate.as_deref())
    .fetch_optional(db)
    .traced(telemetry::db_span!("INSERT", "jobs"))
    .await
}

/// The owner's job under an idempotency key, with its request hash.
pub async fn find_by_key(
    db: impl PgExecutor<'_>,
    owner: Uuid,
    key: &str,
) -> sqlx::Result<Option<(Job, Vec<u8>)>> {
    #[derive(sqlx::FromRow)]
    struct Row {
        #[sqlx(flatten)]
        job: Job,
        request_hash: Vec<u8>,
    }
    let row: Option<Row> = sqlx::query_as(concat!(
        "SELECT ",
        columns!(),
        ", request_hash FROM jobs WHERE owner = $1 AND idempotency_key = $2"
    ))
    .bind(owner)
    .bind(key)
    .fetch_optional(db)
    .traced(telemetry::db_span!("SELECT", "jobs"))
    .await?;
    Ok(row.map(|r| (r.job, r.request_hash)))
}

/// One of the owner's jobs.
pub async fn find(db: impl PgExecutor<'_>, owner: Uuid, id: Uuid) -> sqlx::Result<Option<Job>> {
    sqlx::query_as(concat!("SELECT ", columns!(), " FROM jobs WHERE id = $1 AND owner = $2"))
        .bind(id)
        .bind(owner)
        .fetch_optional(db)
        .traced(telemetry::db_span!("SELECT", "jobs"))
        .await
}
