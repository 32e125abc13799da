//! The items domain: what an item is, its rules, and the operations on it.
//!
//! Every API version shares this module; versions differ only in how they
//! represent an item on the wire (`routes/v1/items.rs`, `routes/v2/items.rs`).

{% if redis %}pub mod cache;
{% endif %}pub mod http;
pub mod store;

{% if redis %}use std::sync::Arc;

{% endif %}use crate::db::Db;
use chrono::{DateTime, Utc};
use uuid::Uuid;

{% if redis %}use cache::ItemCache;
{% endif %}use crate::error::ErrorCode;
use crate::resource::{Page, Precondition};

/// An item as stored.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow, serde::Serialize, serde::Deserialize)]
pub struct Item {
    /// UUIDv7: sortable by creation time.
    pub id: Uuid,
    /// Display name, 1 to 200 characters.
    pub name: String,
    /// Optional longer text, up to 2000 characters.
    pub description: Option<String>,
    /// Price in the currency's minor unit (cents).
    pub price_amount_minor: i64,
    /// ISO 4217 code such as `EUR`.
    pub currency: String,
    /// Bumped by every update; the ETag.
    pub version: i64,
    /// When the item was created.
    pub created_at: DateTime<Utc>,
    /// When the item last changed.
    pub updated_at: DateTime<Utc>,
}

/// An item as a client sent it, not yet checked.
#[derive(Debug, Clone)]
pub struct ItemDraft {
    /// See [`Item::name`].
    pub name: String,
    /// See [`Item::description`].
    pub description: Option<String>,
    /// See [`Item::price_amount_minor`].
    pub price_amount_minor: i64,
    /// See [`Item::currency`].
    pub currency: String,
}

/// An item that passed validation.
#[derive(Debug, Clone)]
pub struct ValidItem {
    pub(crate) name: String,
    pub(crate) description: Option<String>,
    pub(crate) price_amount_minor: i64,
    pub(crate) currency: String,
}

/// The fields of an item, so each version can name them its own way.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Field {
    /// [`Item::name`].
    Name,
    /// [`Item::description`].
    Description,
    /// [`Item::price_amount_minor`].
    PriceAmountMinor,
    /// [`Item::currency`].
    Currency,
}

/// One broken rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violation {
    /// Which field.
    pub field: Field,
    /// Stable code of the rule.
    pub code: &'static str,
    /// Human-readable explanation.
    pub detail: String,
}

/// Longest name, in characters.
pub const NAME_MAX: usize = 200;
/// Longest description, in characters.
pub const DESCRIPTION_MAX: usize = 2000;

impl ItemDraft {
    /// Checks every rule and reports every violation, not just the first.
    pub fn validate(self) -> Result<ValidItem, Vec<Violation>> {
        let mut violations = Vec::new();
        let mut fail = |field, code, detail: String| violations.push(Violation { field, code, detail });

        let name = self.name.trim().to_owned();
        if name.is_empty() {
            fail(Field::Name, "required", "name must not be blank".into());
        } else if name.chars().count() > NAME_MAX {
            fail(Field::Name, "too_long", format!("name must be at most {NAME_MAX} characters"));
        }
        let description = self.description.map(|d| d.trim().to_owned()).filter(|d| !d.is_empty());
        if description.as_ref().is_some_and(|d| d.chars().count() > DESCRIPTION_MAX) {
            fail(
                Field::Description,
                "too_long",
                format!("description must be at most {DESCRIPTION_MAX} characters"),
            );
        }
        if self.price_amount_minor < 0 {
            fail(Field::PriceAmountMinor, "negative", "price must not be negative".into());
        }
        if !(self.currency.len() == 3 && self.currency.bytes().all(|b| b.is_ascii_uppercase())) {
            fail(Field::Currency, "invalid_currency", "currency must be an ISO 4217 code such as EUR".into());
        }

        if violations.is_empty() {
            Ok(ValidItem {
                name,
                description,
                price_amount_minor: self.price_amount_minor,
                currency: self.currency,
            })
        } else {
            Err(violations)
        }
    }
}

/// Why an operation on items failed: the domain's answer, which the HTTP
/// layer (`items/http.rs`) maps to a status and a problem.
#[derive(Debug, thiserror::Error)]
pub enum ItemError {
    /// No item has that id.
    #[error("no such item")]
    NotFound,
    /// The item's version is not one the precondition names.
    #[error("the item changed since the version the write is based on")]
    PreconditionFailed,
    /// Postgres failed.
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
    /// A load of the same item this request joined failed; how, classified
    /// (the cache's single flight keeps the cause with the request that
    /// loaded).
    #[error("a shared load failed: {0:?}")]
    SharedLoad(ErrorCode),
}

/// The items of this replica: Postgres, with the Redis cache in front of
/// single-item reads when there is one. Cheap to clone.
#[derive(Clone)]
pub struct Items {
    db: Db,
{% if redis %}    cache: Option<Arc<ItemCache>>,
{% endif %}}

impl Items {
    /// Items stored in `db`.
    pub fn new(db: Db) -> Self {
        Self {
            db,
{% if redis %}            cache: None,
{% endif %}        }
    }

{% if redis %}    /// Puts `cache` in front of single-item reads.
    #[must_use]
    pub fn with_cache(self, cache: Arc<ItemCache>) -> Self {
        Self { cache: Some(cache), ..self }
    }
{% endif %}
    /// Creates an item.
    #[tracing::instrument(level = "debug", skip_all)]
    pub async fn create(&self, item: ValidItem) -> Result<Item, ItemError> {
        Ok(store::insert(&mut *self.db.conn().await?, Uuid::now_v7(), &item).await?)
    }

    /// Reads an item.
    #[tracing::instrument(level = "debug", skip(self))]
    pub async fn get(&self, id: Uuid) -> Result<Item, ItemError> {
{% if redis %}        if let Some(cache) = &self.cache {
            return cache.get(&self.db, id).await?.ok_or(ItemError::NotFound);
        }
{% endif %}        store::find(&mut *self.db.conn().await?, id).await?.ok_or(ItemError::NotFound)
    }

    /// Reads a page of up to `limit` items after `after`.
    #[tracing::instrument(level = "debug", skip(self))]
    pub async fn list(&self, after: Option<Uuid>, limit: u32) -> Result<Page<Item>, ItemError> {
        let rows = store::list_after(&mut *self.db.conn().await?, after, i64::from(limit) + 1).await?;
        Ok(Page::from_overfetch(rows, limit, |item| item.id))
    }

    /// Replaces an item if the precondition holds.
    #[tracing::instrument(level = "debug", skip(self, item))]
    pub async fn update(
        &self,
        id: Uuid,
        precondition: &Precondition,
        item: ValidItem,
    ) -> Result<Item, ItemError> {
        let Some(updated) =
            store::update(&mut *self.db.conn().await?, id, precondition.versions(), &item).await?
        else {
            return Err(self.missed(id).await);
        };
        // The UPDATE has committed: only now may the cached copy go.
{% if redis %}        if let Some(cache) = &self.cache {
            cache.invalidate(id, updated.version).await;
        }
{% endif %}        Ok(updated)
    }

    /// Deletes an item if the precondition holds.
    #[tracing::instrument(level = "debug", skip(self))]
    pub async fn delete(&self, id: Uuid, precondition: &Precondition) -> Result<(), ItemError> {
        let Some(deleted_version) =
            store::delete(&mut *self.db.conn().await?, id, precondition.versions()).await?
        else {
            return Err(self.missed(id).await);
        };
{% if redis %}        // The tombstone outranks the deleted version, so a reader that loaded
        // the row before the delete cannot cache it again.
        if let Some(cache) = &self.cache {
            cache.invalidate(id, deleted_version + 1).await;
        }
{% endif %}{% unless redis %}        let _ = deleted_version;
{% endunless %}        Ok(())
    }

    /// A conditional write matched no row: either the item is gone or its
    /// version moved on.
    async fn missed(&self, id: Uuid) -> ItemError {
        let exists = match self.db.conn().await {
            Ok(mut conn) => store::exists(&mut *conn, id).await,
            Err(err) => Err(err),
        };
        match exists {
            Ok(true) => ItemError::PreconditionFailed,
            Ok(false) => ItemError::NotFound,
            Err(err) => ItemError::Database(err),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn draft() -> ItemDraft {
        ItemDraft { name: "Lamp".into(), description: None, price_amount_minor: 1999, currency: "EUR".into() }
    }

    #[test]
    fn a_valid_draft_is_trimmed() {
        let valid = ItemDraft { name: "  Lamp ".into(), description: Some("  ".into()), ..draft() }
            .validate()
            .expect("valid");
        assert_eq!(valid.name, "Lamp");
        assert_eq!(valid.description, None);
    }

    #[test]
    fn every_violation_is_reported() {
        let violations = ItemDraft {
            name: " ".into(),
            description: Some("x".repeat(DESCRIPTION_MAX + 1)),
            price_amount_minor: -1,
            currency: "eur".into(),
        }
        .validate()
        .expect_err("invalid");
        let fields: Vec<Field> = violations.iter().map(|v| v.field).collect();
        assert_eq!(fields, [Field::Name, Field::Description, Field::PriceAmountMinor, Field::Currency]);
    }

    #[test]
    fn names_are_measured_in_characters_not_bytes() {
        let name = "é".repeat(NAME_MAX);
        assert!(ItemDraft { name, ..draft() }.validate().is_ok());
    }
}
