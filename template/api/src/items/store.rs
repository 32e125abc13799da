//! SQL for items. Each function takes any executor (pool, connection or
//! transaction), so callers decide the transaction boundaries.

use sqlx::PgExecutor;
use uuid::Uuid;

use super::{Item, ValidItem};
use telemetry::spans::Traced as _;

/// Inserts a new item with version 1.
pub async fn insert(db: impl PgExecutor<'_>, id: Uuid, item: &ValidItem) -> sqlx::Result<Item> {
    sqlx::query_as(
        "INSERT INTO items (id, name, description, price_amount_minor, currency)
         VALUES ($1, $2, $3, $4, $5)
         RETURNING id, name, description, price_amount_minor, currency, version, created_at, updated_at",
    )
    .bind(id)
    .bind(&item.name)
    .bind(item.description.as_deref())
    .bind(item.price_amount_minor)
    .bind(&item.currency)
    .fetch_one(db)
    .traced(telemetry::db_span!("INSERT", "items"))
    .await
}

/// One item by id.
pub async fn find(db: impl PgExecutor<'_>, id: Uuid) -> sqlx::Result<Option<Item>> {
    sqlx::query_as(
        "SELECT id, name, description, price_amount_minor, currency, version, created_at, updated_at
         FROM items WHERE id = $1",
    )
    .bind(id)
    .fetch_optional(db)
    .traced(telemetry::db_span!("SELECT", "items"))
    .await
}

/// Up to `limit` items with ids after `after`, in id (creation) order.
pub async fn list_after(db: impl PgExecutor<'_>, after: Option<Uuid>, limit: i64) -> sqlx::Result<Vec<Item>> {
    sqlx::query_as(
        "SELECT id, name, description, price_amount_minor, currency, version, created_at, updated_at
         FROM items WHERE $1::uuid IS NULL OR id > $1
         ORDER BY id LIMIT $2",
    )
    .bind(after)
    .bind(limit)
    .fetch_all(db)
    .traced(telemetry::db_span!("SELECT", "items"))
    .await
}

/// Replaces an item if its version is one of `versions` (any version when
/// `None`), bumping the version. `None` back means no row matched.
pub async fn update(
    db: impl PgExecutor<'_>,
    id: Uuid,
    versions: Option<&[i64]>,
    item: &ValidItem,
) -> sqlx::Result<Option<Item>> {
    sqlx::query_as(
        "UPDATE items
         SET name = $3, description = $4, price_amount_minor = $5, currency = $6,
             version = version + 1, updated_at = now()
         WHERE id = $1 AND ($2::bigint[] IS NULL OR version = ANY($2))
         RETURNING id, name, description, price_amount_minor, currency, version, created_at, updated_at",
    )
    .bind(id)
    .bind(versions)
    .bind(&item.name)
    .bind(item.description.as_deref())
    .bind(item.price_amount_minor)
    .bind(&item.currency)
    .fetch_optional(db)
    .traced(telemetry::db_span!("UPDATE", "items"))
    .await
}

/// Deletes an item if its version is one of `versions` (any when `None`).
/// Returns the deleted version, or `None` when no row matched.
pub async fn delete(
    db: impl PgExecutor<'_>,
    id: Uuid,
    versions: Option<&[i64]>,
) -> sqlx::Result<Option<i64>> {
    sqlx::query_scalar(
        "DELETE FROM items WHERE id = $1 AND ($2::bigint[] IS NULL OR version = ANY($2)) RETURNING version",
    )
    .bind(id)
    .bind(versions)
    .fetch_optional(db)
    .traced(telemetry::db_span!("DELETE", "items"))
    .await
}

/// Whether an item exists (to tell 404 from 412 after a conditional write missed).
pub async fn exists(db: impl PgExecutor<'_>, id: Uuid) -> sqlx::Result<bool> {
    sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM items WHERE id = $1)")
        .bind(id)
        .fetch_one(db)
        .traced(telemetry::db_span!("SELECT", "items"))
        .await
}
