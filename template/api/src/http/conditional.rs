//! Conditional requests (RFC 9110 §13): version-based ETags, `If-Match` for
//! optimistic concurrency and `If-None-Match` for revalidation.
//!
//! An ETag is the resource's version number, quoted: `"3"`. It is strong,
//! because the version changes whenever anything in the resource does.
//! Any versioned resource answers through [`created`], [`current`] and
//! [`read`], so every one carries its validator the same way.

use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

use crate::error::{ApiError, ErrorCode};
use crate::http::extract::Json;
use crate::resource::Precondition;

/// The ETag for a version.
pub fn etag(version: i64) -> HeaderValue {
    HeaderValue::from_str(&format!("\"{version}\"")).expect("digits and quotes are a valid header")
}

/// The entity tags listed in the `name` headers; `None` for `*`.
fn tags(headers: &HeaderMap, name: &header::HeaderName) -> Result<Option<Vec<String>>, ApiError> {
    let mut tags = Vec::new();
    for value in headers.get_all(name) {
        let value = value
            .to_str()
            .map_err(|_| ApiError::client(ErrorCode::InvalidHeader, format!("{name} is not ASCII")))?;
        for tag in value.split(',').map(str::trim).filter(|t| !t.is_empty()) {
            if tag == "*" {
                return Ok(None);
            }
            tags.push(tag.to_owned());
        }
    }
    Ok(Some(tags))
}

/// Reads `If-Match` for a write. Without it the write is refused with 428,
/// so a client can never overwrite a change it has not seen.
pub fn require_if_match(headers: &HeaderMap) -> Result<Precondition, ApiError> {
    if !headers.contains_key(header::IF_MATCH) {
        return Err(ApiError::code(ErrorCode::PreconditionRequired));
    }
    if_match(headers)
}

/// Reads an optional `If-Match`: absent or `*` means any version.
pub fn if_match(headers: &HeaderMap) -> Result<Precondition, ApiError> {
    let Some(tags) = tags(headers, &header::IF_MATCH)? else { return Ok(Precondition::Any) };
    if tags.is_empty() {
        return Ok(Precondition::Any);
    }
    // Strong comparison: weak tags (W/"3") and tags that are not one of our
    // versions can never match, which still yields 412 as the RFC requires.
    let versions = tags.iter().filter_map(|t| parse_strong(t)).collect();
    Ok(Precondition::Versions(versions))
}

/// Whether `If-None-Match` matches `version`, so a GET may answer 304.
/// Weak comparison, as RFC 9110 §13.1.2 specifies for this header.
pub fn none_match(headers: &HeaderMap, version: i64) -> bool {
    match tags(headers, &header::IF_NONE_MATCH) {
        Ok(None) => true,
        Ok(Some(tags)) => tags.iter().any(|t| parse_strong(t.trim_start_matches("W/")) == Some(version)),
        // A malformed header is ignored: the client simply gets the full body.
        Err(_) => false,
    }
}

fn parse_strong(tag: &str) -> Option<i64> {
    tag.strip_prefix('"')?.strip_suffix('"')?.parse().ok()
}

/// 201 Created with `Location` and `ETag`.
pub fn created<R: Serialize>(location: &str, version: i64, representation: R) -> Response {
    let mut response = (StatusCode::CREATED, Json(representation)).into_response();
    let headers = response.headers_mut();
    headers.insert(header::LOCATION, HeaderValue::from_str(location).expect("a path is a valid header"));
    headers.insert(header::ETAG, etag(version));
    response
}

/// 200 with the representation and its `ETag`.
pub fn current<R: Serialize>(version: i64, representation: R) -> Response {
    ([(header::ETAG, etag(version))], Json(representation)).into_response()
}

/// A GET answer: 304 with the same validator when the client's copy is
/// current, otherwise the full representation.
pub fn read<R: Serialize>(request: &HeaderMap, version: i64, representation: impl FnOnce() -> R) -> Response {
    if none_match(request, version) {
        return (StatusCode::NOT_MODIFIED, [(header::ETAG, etag(version))]).into_response();
    }
    current(version, representation())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with(name: header::HeaderName, value: &'static str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(name, HeaderValue::from_static(value));
        headers
    }

    #[test]
    fn a_write_without_if_match_is_refused() {
        assert!(matches!(
            require_if_match(&HeaderMap::new()),
            Err(ApiError::Client { code: ErrorCode::PreconditionRequired, .. })
        ));
    }

    #[test]
    fn if_match_lists_and_star_are_understood() {
        assert_eq!(require_if_match(&with(header::IF_MATCH, "*")).ok(), Some(Precondition::Any));
        assert_eq!(
            require_if_match(&with(header::IF_MATCH, "\"3\", \"4\"")).ok(),
            Some(Precondition::Versions(vec![3, 4]))
        );
        // A weak tag never matches a strong comparison.
        assert_eq!(
            require_if_match(&with(header::IF_MATCH, "W/\"3\"")).ok(),
            Some(Precondition::Versions(vec![]))
        );
    }

    #[test]
    fn if_none_match_uses_weak_comparison() {
        assert!(none_match(&with(header::IF_NONE_MATCH, "W/\"7\""), 7));
        assert!(none_match(&with(header::IF_NONE_MATCH, "\"6\", \"7\""), 7));
        assert!(none_match(&with(header::IF_NONE_MATCH, "*"), 7));
        assert!(!none_match(&with(header::IF_NONE_MATCH, "\"6\""), 7));
        assert!(!none_match(&HeaderMap::new(), 7));
    }
}
