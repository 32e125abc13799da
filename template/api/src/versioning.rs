//! API versions and their deprecation.
//!
//! Versions are path prefixes (`/v1`, `/v2`). A version can be marked
//! deprecated from configuration; every response under its prefix then
//! carries `Deprecation` (RFC 9745), `Sunset` (RFC 8594) and a `Link` to the
//! migration guide, so clients and their monitoring see it coming long before
//! the version is switched off.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::HeaderValue;
use axum::middleware::Next;
use axum::response::Response;
use chrono::{DateTime, Utc};

/// One deprecated version and the headers announcing it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Deprecation {
    /// The version's path segment, such as `v1`.
    pub version: String,
    /// When the version was (or will be) deprecated.
    pub deprecated_at: DateTime<Utc>,
    /// When it stops working, if decided.
    pub sunset_at: Option<DateTime<Utc>>,
    /// Where clients read how to migrate.
    pub link: Option<String>,
}

impl Deprecation {
    /// Parses `VERSION|DEPRECATED_AT[|SUNSET_AT[|LINK]]`.
    pub fn parse(entry: &str) -> Result<Self, String> {
        let mut parts = entry.split('|').map(str::trim);
        let version = parts.next().unwrap_or_default();
        if !(version.starts_with('v')
            && version.len() > 1
            && version[1..].bytes().all(|b| b.is_ascii_digit()))
        {
            return Err(format!("{version:?} is not a version such as v1"));
        }
        let time = |raw: &str| {
            DateTime::parse_from_rfc3339(raw)
                .map(|t| t.with_timezone(&Utc))
                .map_err(|err| format!("{raw:?} is not an RFC 3339 time: {err}"))
        };
        let deprecated_at = time(parts.next().ok_or("a deprecation time is required")?)?;
        let sunset_at = parts.next().filter(|s| !s.is_empty()).map(time).transpose()?;
        let link = parts.next().filter(|s| !s.is_empty()).map(str::to_owned);
        if let Some(link) = &link {
            if !link.starts_with("https://") && !link.starts_with("http://") {
                return Err(format!("{link:?} is not an http(s) URL"));
            }
            HeaderValue::from_str(link).map_err(|_| format!("{link:?} is not a valid header value"))?;
        }
        if parts.next().is_some() {
            return Err(format!("{entry:?} has more than four |-separated parts"));
        }
        Ok(Self { version: version.to_owned(), deprecated_at, sunset_at, link })
    }

    /// The headers every response of this version carries.
    fn headers(&self) -> Vec<(&'static str, HeaderValue)> {
        let mut headers = Vec::with_capacity(3);
        // RFC 9745: a Structured Field Date, `@` and Unix seconds.
        let deprecation = format!("@{}", self.deprecated_at.timestamp());
        headers.push(("deprecation", HeaderValue::from_str(&deprecation).expect("ascii")));
        if let Some(sunset) = self.sunset_at {
            let date = httpdate::fmt_http_date(sunset.into());
            headers.push(("sunset", HeaderValue::from_str(&date).expect("ascii")));
        }
        if let Some(link) = &self.link {
            let value = format!("<{link}>; rel=\"deprecation\"; type=\"text/html\"");
            headers.push(("link", HeaderValue::from_str(&value).expect("validated at parse")));
        }
        headers
    }
}

/// The set of deprecated versions, shared by the version routers.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Deprecations(Vec<Deprecation>);

impl Deprecations {
    /// Wraps a list of deprecations.
    pub fn new(list: Vec<Deprecation>) -> Self {
        Self(list)
    }

    /// The headers for `version`, pre-rendered once so the hot path only copies them.
    pub fn headers_for(&self, version: &str) -> Option<DeprecationHeaders> {
        self.0.iter().find(|d| d.version == version).map(|d| DeprecationHeaders(Arc::from(d.headers())))
    }
}

/// Rendered deprecation headers of one version.
#[derive(Debug, Clone)]
pub struct DeprecationHeaders(Arc<[(&'static str, HeaderValue)]>);

/// Middleware that adds a version's deprecation headers to every response.
pub async fn announce_deprecation(
    State(headers): State<DeprecationHeaders>,
    request: Request,
    next: Next,
) -> Response {
    let mut response = next.run(request).await;
    let target = response.headers_mut();
    for (name, value) in headers.0.iter() {
        // A Link header may already exist (pagination); deprecation adds to it.
        target.append(*name, value.clone());
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_entry_renders_all_three_headers() {
        let d = Deprecation::parse("v1|2026-09-01T00:00:00Z|2027-03-01T00:00:00Z|https://example.com/m")
            .expect("valid");
        let headers = d.headers();
        assert_eq!(headers[0], ("deprecation", HeaderValue::from_static("@1788220800")));
        assert_eq!(headers[1], ("sunset", HeaderValue::from_static("Mon, 01 Mar 2027 00:00:00 GMT")));
        assert_eq!(
            headers[2],
            (
                "link",
                HeaderValue::from_static("<https://example.com/m>; rel=\"deprecation\"; type=\"text/html\"")
            )
        );
    }

    #[test]
    fn sunset_and_link_are_optional() {
        let d = Deprecation::parse("v2|2026-09-01T00:00:00Z").expect("valid");
        assert_eq!(d.headers().len(), 1);
    }

    #[test]
    fn bad_entries_say_what_is_wrong() {
        assert!(Deprecation::parse("one|2026-09-01T00:00:00Z").expect_err("invalid").contains("version"));
        assert!(Deprecation::parse("v1|yesterday").expect_err("invalid").contains("RFC 3339"));
        assert!(Deprecation::parse("v1").expect_err("invalid").contains("required"));
        assert!(
            Deprecation::parse("v1|2026-09-01T00:00:00Z||ftp://x").expect_err("invalid").contains("http")
        );
    }
}
