//! `/v1/items`: the version-1 representation of items, with a flat
//! `price_cents` and `currency`.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use crate::items::http::{ItemsVersion, item_handlers};
use crate::items::{Field, Item, ItemDraft};
use crate::state::AppState;

/// Version 1 of items.
pub struct V1;

impl ItemsVersion for V1 {
    const PREFIX: &'static str = "/v1";
    type Item = ItemV1;
    type Input = ItemInputV1;
    type Page = ItemPageV1;

    fn page(items: Vec<ItemV1>, next_cursor: Option<String>) -> ItemPageV1 {
        ItemPageV1 { items, next_cursor }
    }

    fn pointer(field: Field) -> &'static str {
        match field {
            Field::Name => "/name",
            Field::Description => "/description",
            Field::PriceAmountMinor => "/price_cents",
            Field::Currency => "/currency",
        }
    }
}

item_handlers!("v1", V1, item = ItemV1, input = ItemInputV1, page = ItemPageV1);

/// The routes of this resource.
pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(create_item, list_items)).routes(routes!(
        get_item,
        update_item,
        delete_item
    ))
}

/// An item, version 1.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[schema(as = v1::Item)]
pub struct ItemV1 {
    /// Identifier (UUIDv7).
    pub id: Uuid,
    /// Display name.
    #[schema(example = "Desk lamp")]
    pub name: String,
    /// Longer text.
    pub description: Option<String>,
    /// Price in the currency's minor unit.
    #[schema(example = 1999)]
    pub price_cents: i64,
    /// ISO 4217 currency code.
    #[schema(example = "EUR")]
    pub currency: String,
    /// Version, bumped by every update; also the ETag.
    pub version: i64,
    /// Creation time.
    pub created_at: DateTime<Utc>,
    /// Last change.
    pub updated_at: DateTime<Utc>,
}

impl From<&Item> for ItemV1 {
    fn from(item: &Item) -> Self {
        Self {
            id: item.id,
            name: item.name.clone(),
            description: item.description.clone(),
            price_cents: item.price_amount_minor,
            currency: item.currency.clone(),
            version: item.version,
            created_at: item.created_at,
            updated_at: item.updated_at,
        }
    }
}

/// What a client sends to create or replace an item, version 1.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[schema(as = v1::ItemInput)]
#[serde(deny_unknown_fields)]
pub struct ItemInputV1 {
    /// Display name, 1 to 200 characters.
    #[schema(example = "Desk lamp")]
    pub name: String,
    /// Up to 2000 characters.
    #[serde(default)]
    pub description: Option<String>,
    /// Price in the currency's minor unit, not negative.
    #[schema(example = 1999)]
    pub price_cents: i64,
    /// ISO 4217 currency code.
    #[schema(example = "EUR")]
    pub currency: String,
}

impl From<ItemInputV1> for ItemDraft {
    fn from(input: ItemInputV1) -> Self {
        Self {
            name: input.name,
            description: input.description,
            price_amount_minor: input.price_cents,
            currency: input.currency,
        }
    }
}

/// A page of items, version 1.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[schema(as = v1::ItemPage)]
pub struct ItemPageV1 {
    /// The items, oldest first.
    pub items: Vec<ItemV1>,
    /// Pass as `cursor` to get the next page; absent on the last page.
    pub next_cursor: Option<String>,
}
