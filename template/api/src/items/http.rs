//! Items over HTTP, for every API version at once. A version module
//! (`routes/v1/items.rs`) declares only what differs: its representation
//! types and its names for the fields, in an [`ItemsVersion`]; then
//! [`item_handlers!`](crate::items::http::item_handlers) writes its five
//! handlers, with their OpenAPI description, from the one definition here.
//! Status codes, `Location`, ETags and 304s come from `http/conditional.rs`,
//! pages and cursors from `http/pagination.rs`, and the domain's
//! [`ItemError`] becomes a problem here and nowhere else.

use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use serde::de::DeserializeOwned;
use uuid::Uuid;

use super::{Field, Item, ItemDraft, ItemError, Items, ValidItem, Violation};
use crate::error::{ApiError, ErrorCode, FieldError};
use crate::http::conditional;
use crate::http::pagination::{self, ListParams};

/// One API version's representation of items.
pub trait ItemsVersion {
    /// The version's path prefix, such as `/v1`.
    const PREFIX: &'static str;
    /// An item as this version shows it.
    type Item: Serialize + for<'a> From<&'a Item>;
    /// What a client sends to create or replace an item.
    type Input: DeserializeOwned + Into<ItemDraft>;
    /// A page of items.
    type Page: Serialize;

    /// A page body from its items and the cursor of the next page.
    fn page(items: Vec<Self::Item>, next_cursor: Option<String>) -> Self::Page;

    /// Where `field` lives in this version's JSON (a JSON Pointer).
    fn pointer(field: Field) -> &'static str;
}

impl From<ItemError> for ApiError {
    fn from(err: ItemError) -> Self {
        match err {
            ItemError::NotFound => Self::NotFound("item"),
            ItemError::PreconditionFailed => Self::code(ErrorCode::PreconditionFailed),
            ItemError::Database(err) => Self::Database(err),
            ItemError::SharedLoad(code) => Self::code(code),
        }
    }
}

/// 422 with each violation at the version's JSON Pointer for its field.
fn invalid<V: ItemsVersion>(violations: Vec<Violation>) -> ApiError {
    ApiError::Validation(
        violations
            .into_iter()
            .map(|v| FieldError { pointer: V::pointer(v.field).to_owned(), code: v.code, detail: v.detail })
            .collect(),
    )
}

fn validate<V: ItemsVersion>(input: V::Input) -> Result<ValidItem, ApiError> {
    input.into().validate().map_err(invalid::<V>)
}

fn location<V: ItemsVersion>(id: Uuid) -> String {
    format!("{}/items/{id}", V::PREFIX)
}

/// `POST /items`: 201 with `Location` and `ETag`.
pub async fn create<V: ItemsVersion>(items: &Items, input: V::Input) -> Result<Response, ApiError> {
    let item = items.create(validate::<V>(input)?).await?;
    Ok(conditional::created(&location::<V>(item.id), item.version, V::Item::from(&item)))
}

/// `GET /items`: a page, with `Link` to the next.
pub async fn list<V: ItemsVersion>(items: &Items, params: &ListParams) -> Result<Response, ApiError> {
    let (after, limit) = params.parse()?;
    let page = items.list(after, limit).await?;
    let collection = format!("{}/items", V::PREFIX);
    Ok(pagination::page(&collection, limit, page.next_after, |next_cursor| {
        V::page(page.items.iter().map(V::Item::from).collect(), next_cursor)
    }))
}

/// `GET /items/{id}`: the item, or 304 when the client's copy is current.
pub async fn get<V: ItemsVersion>(
    items: &Items,
    id: Uuid,
    headers: &HeaderMap,
) -> Result<Response, ApiError> {
    let item = items.get(id).await?;
    Ok(conditional::read(headers, item.version, || V::Item::from(&item)))
}

/// `PUT /items/{id}`: `If-Match` required, then the replacement.
pub async fn update<V: ItemsVersion>(
    items: &Items,
    id: Uuid,
    headers: &HeaderMap,
    input: V::Input,
) -> Result<Response, ApiError> {
    let precondition = conditional::require_if_match(headers)?;
    let item = items.update(id, &precondition, validate::<V>(input)?).await?;
    Ok(conditional::current(item.version, V::Item::from(&item)))
}

/// `DELETE /items/{id}`: `If-Match` honoured when sent.
pub async fn delete(items: &Items, id: Uuid, headers: &HeaderMap) -> Result<Response, ApiError> {
    items.delete(id, &conditional::if_match(headers)?).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// Writes a version's item handlers (`create_item`, `list_items`,
/// `get_item`, `update_item`, `delete_item`) with their OpenAPI paths:
/// `item_handlers!("v1", V1, item = ItemV1, input = ItemInputV1, page = ItemPageV1);`
/// The version module routes them with `utoipa_axum::routes!`.
macro_rules! item_handlers {
    ($version:literal, $v:ident, item = $item:ident, input = $input:ident, page = $page:ident) => {
        /// Create an item.
        #[utoipa::path(
            post, path = "/items", tag = "items", operation_id = concat!($version, "_create_item"),
            request_body = $input,
            responses(
                (status = CREATED, body = $item, headers(("Location" = String), ("ETag" = String))),
                (status = BAD_REQUEST, body = crate::error::Problem, content_type = "application/problem+json"),
                (status = UNSUPPORTED_MEDIA_TYPE, body = crate::error::Problem, content_type = "application/problem+json"),
                (status = UNPROCESSABLE_ENTITY, body = crate::error::Problem, content_type = "application/problem+json"),
                (status = SERVICE_UNAVAILABLE, body = crate::error::Problem, content_type = "application/problem+json"),
            )
        )]
        pub async fn create_item(
            axum::extract::State(items): axum::extract::State<crate::items::Items>,
            crate::http::extract::Json(input): crate::http::extract::Json<$input>,
        ) -> Result<axum::response::Response, crate::error::ApiError> {
            crate::items::http::create::<$v>(&items, input).await
        }

        /// List items, oldest first, a page at a time.
        #[utoipa::path(
            get, path = "/items", tag = "items", operation_id = concat!($version, "_list_items"),
            params(crate::http::pagination::ListParams),
            responses(
                (status = OK, body = $page, headers(("Link" = String, description = "rel=\"next\" when there is another page"))),
                (status = BAD_REQUEST, body = crate::error::Problem, content_type = "application/problem+json"),
                (status = SERVICE_UNAVAILABLE, body = crate::error::Problem, content_type = "application/problem+json"),
            )
        )]
        pub async fn list_items(
            axum::extract::State(items): axum::extract::State<crate::items::Items>,
            crate::http::extract::Query(params): crate::http::extract::Query<crate::http::pagination::ListParams>,
        ) -> Result<axum::response::Response, crate::error::ApiError> {
            crate::items::http::list::<$v>(&items, &params).await
        }

        /// Get an item. Send `If-None-Match` with its ETag to get 304 when unchanged.
        #[utoipa::path(
            get, path = "/items/{id}", tag = "items", operation_id = concat!($version, "_get_item"),
            params(("id" = uuid::Uuid, Path, description = "Item id")),
            responses(
                (status = OK, body = $item, headers(("ETag" = String))),
                (status = NOT_MODIFIED, description = "The client's copy is current", headers(("ETag" = String))),
                (status = NOT_FOUND, body = crate::error::Problem, content_type = "application/problem+json"),
                (status = SERVICE_UNAVAILABLE, body = crate::error::Problem, content_type = "application/problem+json"),
            )
        )]
        pub async fn get_item(
            axum::extract::State(items): axum::extract::State<crate::items::Items>,
            crate::http::extract::Path(id): crate::http::extract::Path<uuid::Uuid>,
            headers: axum::http::HeaderMap,
        ) -> Result<axum::response::Response, crate::error::ApiError> {
            crate::items::http::get::<$v>(&items, id, &headers).await
        }

        /// Replace an item. `If-Match` with the current ETag is required.
        #[utoipa::path(
            put, path = "/items/{id}", tag = "items", operation_id = concat!($version, "_update_item"),
            params(
                ("id" = uuid::Uuid, Path, description = "Item id"),
                ("If-Match" = String, Header, description = "The ETag the change is based on, or *"),
            ),
            request_body = $input,
            responses(
                (status = OK, body = $item, headers(("ETag" = String))),
                (status = NOT_FOUND, body = crate::error::Problem, content_type = "application/problem+json"),
                (status = PRECONDITION_FAILED, body = crate::error::Problem, content_type = "application/problem+json"),
                (status = UNPROCESSABLE_ENTITY, body = crate::error::Problem, content_type = "application/problem+json"),
                (status = PRECONDITION_REQUIRED, body = crate::error::Problem, content_type = "application/problem+json"),
            )
        )]
        pub async fn update_item(
            axum::extract::State(items): axum::extract::State<crate::items::Items>,
            crate::http::extract::Path(id): crate::http::extract::Path<uuid::Uuid>,
            headers: axum::http::HeaderMap,
            crate::http::extract::Json(input): crate::http::extract::Json<$input>,
        ) -> Result<axum::response::Response, crate::error::ApiError> {
            crate::items::http::update::<$v>(&items, id, &headers, input).await
        }

        /// Delete an item. `If-Match` is honoured when sent.
        #[utoipa::path(
            delete, path = "/items/{id}", tag = "items", operation_id = concat!($version, "_delete_item"),
            params(("id" = uuid::Uuid, Path, description = "Item id")),
            responses(
                (status = NO_CONTENT, description = "Deleted"),
                (status = NOT_FOUND, body = crate::error::Problem, content_type = "application/problem+json"),
                (status = PRECONDITION_FAILED, body = crate::error::Problem, content_type = "application/problem+json"),
            )
        )]
        pub async fn delete_item(
            axum::extract::State(items): axum::extract::State<crate::items::Items>,
            crate::http::extract::Path(id): crate::http::extract::Path<uuid::Uuid>,
            headers: axum::http::HeaderMap,
        ) -> Result<axum::response::Response, crate::error::ApiError> {
            crate::items::http::delete(&items, id, &headers).await
        }
    };
}

pub(crate) use item_handlers;
