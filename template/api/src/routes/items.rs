//! The HTTP shape of items that every version shares: status codes,
//! `Location`, ETags, 304s, pagination and field errors. A version module
//! supplies only its representation and its names for the fields.

use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::{Deserialize, Serialize};
use utoipa::IntoParams;
use uuid::Uuid;

use crate::error::{ApiError, ErrorCode, FieldError};
use crate::http::conditional;
use crate::http::extract::Json;
use crate::items::{Field, Item, Page, Violation};

/// Page size when the client names none.
pub const DEFAULT_LIMIT: u32 = 20;
/// Largest page a client may ask for.
pub const MAX_LIMIT: u32 = 100;

/// Query parameters of a list request.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ListParams {
    /// Items per page, 1 to 100 (default 20).
    pub limit: Option<u32>,
    /// The `next_cursor` of the previous page.
    pub cursor: Option<String>,
}

impl ListParams {
    /// The id to continue after and the page size.
    pub fn parse(&self) -> Result<(Option<Uuid>, u32), ApiError> {
        let limit = self.limit.unwrap_or(DEFAULT_LIMIT);
        if !(1..=MAX_LIMIT).contains(&limit) {
            return Err(ApiError::client(
                ErrorCode::InvalidQuery,
                format!("limit must be between 1 and {MAX_LIMIT}"),
            ));
        }
        let after = self.cursor.as_deref().map(decode_cursor).transpose()?;
        Ok((after, limit))
    }
}

/// Cursors are opaque to clients, so the keyset can change without breaking them.
fn encode_cursor(id: Uuid) -> String {
    URL_SAFE_NO_PAD.encode(id.as_bytes())
}

fn decode_cursor(cursor: &str) -> Result<Uuid, ApiError> {
    URL_SAFE_NO_PAD
        .decode(cursor)
        .ok()
        .and_then(|bytes| Uuid::from_slice(&bytes).ok())
        .ok_or_else(|| ApiError::client(ErrorCode::InvalidQuery, "cursor is not one this API returned"))
}

/// 201 Created with `Location` and `ETag`.
pub fn created<R: Serialize>(prefix: &str, item: &Item, representation: R) -> Response {
    let location = format!("{prefix}/items/{}", item.id);
    let mut response = (StatusCode::CREATED, Json(representation)).into_response();
    let headers = response.headers_mut();
    headers.insert(header::LOCATION, HeaderValue::from_str(&location).expect("a path is a valid header"));
    headers.insert(header::ETAG, conditional::etag(item.version));
    response
}

/// 200 with the representation and its `ETag`.
pub fn current<R: Serialize>(item: &Item, representation: R) -> Response {
    ([(header::ETAG, conditional::etag(item.version))], Json(representation)).into_response()
}

/// A GET answer: 304 with the same validator when the client's copy is
/// current, otherwise the full representation.
pub fn read<R: Serialize>(
    request: &HeaderMap,
    item: &Item,
    representation: impl FnOnce(&Item) -> R,
) -> Response {
    if conditional::none_match(request, item.version) {
        return (StatusCode::NOT_MODIFIED, [(header::ETAG, conditional::etag(item.version))]).into_response();
    }
    current(item, representation(item))
}

/// A page body plus a `Link: <…>; rel="next"` header when there is more.
pub fn page<P: Serialize>(
    prefix: &str,
    limit: u32,
    page: &Page,
    body: impl FnOnce(Option<String>) -> P,
) -> Response {
    let cursor = page.next_after.map(encode_cursor);
    let link = cursor.as_ref().map(|c| format!("<{prefix}/items?limit={limit}&cursor={c}>; rel=\"next\""));
    let mut response = Json(body(cursor)).into_response();
    if let Some(link) = link {
        response.headers_mut().insert(header::LINK, HeaderValue::from_str(&link).expect("url-safe cursor"));
    }
    response
}

/// 422 with each violation at the version's JSON pointer for its field.
pub fn invalid(violations: Vec<Violation>, pointer: fn(Field) -> &'static str) -> ApiError {
    ApiError::Validation(
        violations
            .into_iter()
            .map(|v| FieldError { pointer: pointer(v.field).to_owned(), code: v.code, detail: v.detail })
            .collect(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_round_trip_and_garbage_is_refused() {
        let id = Uuid::now_v7();
        assert_eq!(decode_cursor(&encode_cursor(id)).ok(), Some(id));
        assert!(decode_cursor("not a cursor").is_err());
        assert!(decode_cursor("AAAA").is_err());
    }

    #[test]
    fn limits_outside_the_range_are_refused() {
        for limit in [0, MAX_LIMIT + 1] {
            assert!(ListParams { limit: Some(limit), cursor: None }.parse().is_err());
        }
        assert_eq!(ListParams { limit: None, cursor: None }.parse().ok(), Some((None, DEFAULT_LIMIT)));
    }
}
