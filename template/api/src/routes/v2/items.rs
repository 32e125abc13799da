//! `/v2/items`: the version-2 representation of items. The one change from
//! v1: the price is an object, `{"amount_minor": 1999, "currency": "EUR"}`,
//! instead of the flat `price_cents` and `currency`. Everything else (the
//! domain, the HTTP contract) is shared with v1.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use crate::items::http::{ItemsVersion, item_handlers};
use crate::items::{Field, Item, ItemDraft};
use crate::state::AppState;

/// Version 2 of items.
pub struct V2;

impl ItemsVersion for V2 {
    const PREFIX: &'static str = "/v2";
    type Item = ItemV2;
    type Input = ItemInputV2;
    type Page = ItemPageV2;

    fn page(items: Vec<ItemV2>, next_cursor: Option<String>) -> ItemPageV2 {
        ItemPageV2 { items, next_cursor }
    }

    fn pointer(field: Field) -> &'static str {
        match field {
            Field::Name => "/name",
            Field::Description => "/description",
            Field::PriceAmountMinor => "/price/amount_minor",
            Field::Currency => "/price/currency",
        }
    }
}

item_handlers!("v2", V2, item = ItemV2, input = ItemInputV2, page = ItemPageV2);

/// The routes of this resource.
pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(create_item, list_items)).routes(routes!(
        get_item,
        update_item,
        delete_item
    ))
}

/// A price, version 2.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[schema(as = v2::Price)]
#[serde(deny_unknown_fields)]
pub struct PriceV2 {
    /// Amount in the currency's minor unit, not negative.
    #[schema(example = 1999)]
    pub amount_minor: i64,
    /// ISO 4217 currency code.
    #[schema(example = "EUR")]
    pub currency: String,
}

/// An item, version 2.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[schema(as = v2::Item)]
pub struct ItemV2 {
    /// Identifier (UUIDv7).
    pub id: Uuid,
    /// Display name.
    #[schema(example = "Desk lamp")]
    pub name: String,
    /// Longer text.
    pub description: Option<String>,
    /// The price.
    pub price: PriceV2,
    /// Version, bumped by every update; also the ETag.
    pub version: i64,
    /// Creation time.
    pub created_at: DateTime<Utc>,
    /// Last change.
    pub updated_at: DateTime<Utc>,
}

impl From<&Item> for ItemV2 {
    fn from(item: &Item) -> Self {
        Self {
            id: item.id,
            name: item.name.clone(),
            description: item.description.clone(),
            price: PriceV2 { amount_minor: item.price_amount_minor, currency: item.currency.clone() },
            version: item.version,
            created_at: item.created_at,
            updated_at: item.updated_at,
        }
    }
}

/// What a client sends to create or replace an item, version 2.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[schema(as = v2::ItemInput)]
#[serde(deny_unknown_fields)]
pub struct ItemInputV2 {
    /// Display name, 1 to 200 characters.
    #[schema(example = "Desk lamp")]
    pub name: String,
    /// Up to 2000 characters.
    #[serde(default)]
    pub description: Option<String>,
    /// The price.
    pub price: PriceV2,
}

impl From<ItemInputV2> for ItemDraft {
    fn from(input: ItemInputV2) -> Self {
        Self {
            name: input.name,
            description: input.description,
            price_amount_minor: input.price.amount_minor,
            currency: input.price.currency,
        }
    }
}

/// A page of items, version 2.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[schema(as = v2::ItemPage)]
pub struct ItemPageV2 {
    /// The items, oldest first.
    pub items: Vec<ItemV2>,
    /// Pass as `cursor` to get the next page; absent on the last page.
    pub next_cursor: Option<String>,
}
