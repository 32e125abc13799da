//! Keyset pagination on the wire, for any collection: `limit` and an opaque
//! `cursor` in, a page body and `Link: <…>; rel="next"` out. Cursors are
//! opaque to clients, so the keyset can change without breaking them.

use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::{Deserialize, Serialize};
use utoipa::IntoParams;
use uuid::Uuid;

use crate::error::{ApiError, ErrorCode};
use crate::http::extract::Json;

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
    /// The key to continue after and the page size.
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

fn encode_cursor(key: Uuid) -> String {
    URL_SAFE_NO_PAD.encode(key.as_bytes())
}

fn decode_cursor(cursor: &str) -> Result<Uuid, ApiError> {
    URL_SAFE_NO_PAD
        .decode(cursor)
        .ok()
        .and_then(|bytes| Uuid::from_slice(&bytes).ok())
        .ok_or_else(|| ApiError::client(ErrorCode::InvalidQuery, "cursor is not one this API returned"))
}

/// A page body plus a `Link: <…>; rel="next"` header when there is more.
/// `collection` is the path of the list (`/v1/items`); `body` gets the next
/// cursor.
pub fn page<P: Serialize>(
    collection: &str,
    limit: u32,
    next_after: Option<Uuid>,
    body: impl FnOnce(Option<String>) -> P,
) -> Response {
    let cursor = next_after.map(encode_cursor);
    let link = cursor.as_ref().map(|c| format!("<{collection}?limit={limit}&cursor={c}>; rel=\"next\""));
    let mut response = Json(body(cursor)).into_response();
    if let Some(link) = link {
        response.headers_mut().insert(header::LINK, HeaderValue::from_str(&link).expect("url-safe cursor"));
    }
    response
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
