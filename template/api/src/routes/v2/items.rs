//! `/v2/items`: the version-2 representation of items. The one change from
//! v1: the price is an object, `{"amount_minor": 1999, "currency": "EUR"}`,
//! instead of the flat `price_cents` and `currency`. Everything else (the
//! domain, the HTTP contract) is shared with v1.

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use crate::error::{ApiError, Problem};
use crate::http::conditional;
use crate::http::extract::{Json, Path, Query};
use crate::items::{self, Field, Item, ItemDraft, Items};
use crate::routes::items::{self as shape, ListParams};
use crate::state::AppState;

const PREFIX: &str = "/v2";

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

impl ItemInputV2 {
    fn validate(self) -> Result<items::ValidItem, ApiError> {
        ItemDraft {
            name: self.name,
            description: self.description,
            price_amount_minor: self.price.amount_minor,
            currency: self.price.currency,
        }
        .validate()
        .map_err(|v| shape::invalid(v, pointer))
    }
}

/// Where each field lives in this version's JSON.
fn pointer(field: Field) -> &'static str {
    match field {
        Field::Name => "/name",
        Field::Description => "/description",
        Field::PriceAmountMinor => "/price/amount_minor",
        Field::Currency => "/price/currency",
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

/// Create an item.
#[utoipa::path(
    post, path = "/items", tag = "items", operation_id = "v2_create_item",
    request_body = ItemInputV2,
    responses(
        (status = CREATED, body = ItemV2, headers(("Location" = String), ("ETag" = String))),
        (status = BAD_REQUEST, body = Problem, content_type = "application/problem+json"),
        (status = UNSUPPORTED_MEDIA_TYPE, body = Problem, content_type = "application/problem+json"),
        (status = UNPROCESSABLE_ENTITY, body = Problem, content_type = "application/problem+json"),
        (status = SERVICE_UNAVAILABLE, body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn create_item(
    State(items): State<Items>,
    Json(input): Json<ItemInputV2>,
) -> Result<Response, ApiError> {
    let item = items.create(input.validate()?).await?;
    Ok(shape::created(PREFIX, &item, ItemV2::from(&item)))
}

/// List items, oldest first, a page at a time.
#[utoipa::path(
    get, path = "/items", tag = "items", operation_id = "v2_list_items",
    params(ListParams),
    responses(
        (status = OK, body = ItemPageV2, headers(("Link" = String, description = "rel=\"next\" when there is another page"))),
        (status = BAD_REQUEST, body = Problem, content_type = "application/problem+json"),
        (status = SERVICE_UNAVAILABLE, body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn list_items(
    State(items): State<Items>,
    Query(params): Query<ListParams>,
) -> Result<Response, ApiError> {
    let (after, limit) = params.parse()?;
    let page = items.list(after, limit).await?;
    Ok(shape::page(PREFIX, limit, &page, |next_cursor| ItemPageV2 {
        items: page.items.iter().map(ItemV2::from).collect(),
        next_cursor,
    }))
}

/// Get an item. Send `If-None-Match` with its ETag to get 304 when unchanged.
#[utoipa::path(
    get, path = "/items/{id}", tag = "items", operation_id = "v2_get_item",
    params(("id" = Uuid, Path, description = "Item id")),
    responses(
        (status = OK, body = ItemV2, headers(("ETag" = String))),
        (status = NOT_MODIFIED, description = "The client's copy is current", headers(("ETag" = String))),
        (status = NOT_FOUND, body = Problem, content_type = "application/problem+json"),
        (status = SERVICE_UNAVAILABLE, body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn get_item(
    State(items): State<Items>,
    Path(id): Path<Uuid>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let item = items.get(id).await?;
    Ok(shape::read(&headers, &item, |i| ItemV2::from(i)))
}

/// Replace an item. `If-Match` with the current ETag is required.
#[utoipa::path(
    put, path = "/items/{id}", tag = "items", operation_id = "v2_update_item",
    params(
        ("id" = Uuid, Path, description = "Item id"),
        ("If-Match" = String, Header, description = "The ETag the change is based on, or *"),
    ),
    request_body = ItemInputV2,
    responses(
        (status = OK, body = ItemV2, headers(("ETag" = String))),
        (status = NOT_FOUND, body = Problem, content_type = "application/problem+json"),
        (status = PRECONDITION_FAILED, body = Problem, content_type = "application/problem+json"),
        (status = UNPROCESSABLE_ENTITY, body = Problem, content_type = "application/problem+json"),
        (status = PRECONDITION_REQUIRED, body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn update_item(
    State(items): State<Items>,
    Path(id): Path<Uuid>,
    headers: HeaderMap,
    Json(input): Json<ItemInputV2>,
) -> Result<Response, ApiError> {
    let precondition = conditional::require_if_match(&headers)?;
    let item = items.update(id, &precondition, input.validate()?).await?;
    Ok(shape::current(&item, ItemV2::from(&item)))
}

/// Delete an item. `If-Match` is honoured when sent.
#[utoipa::path(
    delete, path = "/items/{id}", tag = "items", operation_id = "v2_delete_item",
    params(("id" = Uuid, Path, description = "Item id")),
    responses(
        (status = NO_CONTENT, description = "Deleted"),
        (status = NOT_FOUND, body = Problem, content_type = "application/problem+json"),
        (status = PRECONDITION_FAILED, body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn delete_item(
    State(items): State<Items>,
    Path(id): Path<Uuid>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    items.delete(id, &conditional::if_match(&headers)?).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}
