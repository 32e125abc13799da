//! SQL for API keys.

use sqlx::PgExecutor;
use uuid::Uuid;

use super::NewKey;
use telemetry::spans::Traced as _;

/// An active key as stored.
#[derive(Debug)]
pub struct KeyRow {
    /// Row id.
    pub id: Uuid,
    /// Public prefix.
    pub prefix: String,
    /// SHA-256 of the key.
    pub secret_hash: [u8; 32],
    /// What it is for.
    pub name: String,
    /// What it may do.
    pub scopes: Vec<String>,
    /// Its own rate, if any.
    pub rate: Option<String>,
}

/// A key in the listing (never its hash).
#[derive(Debug, sqlx::FromRow)]
pub struct KeySummary {
    /// Public prefix.
    pub prefix: String,
    /// What it is for.
    pub name: String,
    /// What it may do.
    pub scopes: Vec<String>,
    /// Its own rate, if any.
    pub rate: Option<String>,
    /// When it was created.
    pub created_at: chrono::DateTime<chrono::Utc>,
    /// When it was revoked, if it was.
    pub revoked_at: Option<chrono::DateTime<chrono::Utc>>,
}

/// Stores a new key.
pub async fn insert(
    db: impl PgExecutor<'_>,
    id: Uuid,
    key: &NewKey,
    name: &str,
    scopes: &[String],
    rate: Option<&str>,
) -> sqlx::Result<()> {
    sqlx::query(
        "INSERT INTO api_keys (id, prefix, secret_hash, name, scopes, rate) VALUES ($1, $2, $3, $4, $5, $6)",
    )
    .bind(id)
    .bind(&key.prefix)
    .bind(key.hash.as_slice())
    .bind(name)
    .bind(scopes)
    .bind(rate)
    .execute(db)
    .traced(telemetry::db_span!("INSERT", "api_keys"))
    .await
    .map(drop)
}

/// The version every change to `api_keys` bumps.
pub async fn version(db: impl PgExecutor<'_>) -> sqlx::Result<i64> {
    sqlx::query_scalar("SELECT version FROM api_keys_version")
        .fetch_one(db)
        .traced(telemetry::db_span!("SELECT", "api_keys_version"))
        .await
}

/// Every active key, and the version they reflect, read in one statement
/// (one snapshot), so the version can never be newer than the keys.
pub async fn active(db: impl PgExecutor<'_>) -> sqlx::Result<(i64, Vec<KeyRow>)> {
    type Row = (
        i64,
        Option<Uuid>,
        Option<String>,
        Option<Vec<u8>>,
        Option<String>,
        Option<Vec<String>>,
        Option<String>,
    );
    let rows: Vec<Row> = sqlx::query_as(
        "SELECT v.version, k.id, k.prefix, k.secret_hash, k.name, k.scopes, k.rate
             FROM api_keys_version v LEFT JOIN api_keys k ON k.revoked_at IS NULL",
    )
    .fetch_all(db)
    .traced(telemetry::db_span!("SELECT", "api_keys"))
    .await?;
    let version = rows.first().map_or(0, |row| row.0);
    let keys = rows
        .into_iter()
        .filter_map(|(_, id, prefix, hash, name, scopes, rate)| {
            Some(KeyRow {
                id: id?,
                prefix: prefix?,
                secret_hash: hash?.try_into().ok()?,
                name: name?,
                scopes: scopes?,
                rate,
            })
        })
        .collect();
    Ok((version, keys))
}

/// Every key, newest first.
pub async fn list(db: impl PgExecutor<'_>) -> sqlx::Result<Vec<KeySummary>> {
    sqlx::query_as("SELECT prefix, name, scopes, rate, created_at, revoked_at FROM api_keys ORDER BY id DESC")
        .fetch_all(db)
        .traced(telemetry::db_span!("SELECT", "api_keys"))
        .await
}

/// Revokes the key with `prefix`. Returns whether an active key was revoked.
pub async fn revoke(db: impl PgExecutor<'_>, prefix: &str) -> sqlx::Result<bool> {
    let result =
        sqlx::query("UPDATE api_keys SET revoked_at = now() WHERE prefix = $1 AND revoked_at IS NULL")
            .bind(prefix)
            .execute(db)
            .traced(telemetry::db_span!("UPDATE", "api_keys"))
            .await?;
    Ok(result.rows_affected() > 0)
}
