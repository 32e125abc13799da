//! Who is calling, what they may do, how often, and how the answer may be
//! cached: the guard in front of every versioned route.
//!
//! 1. **Identity.** `Authorization: Bearer <key>` names an API key, looked up
//!    in memory ([`KeyRing`]). No header means an anonymous caller, known by
//!    client address. A header that names no active key is 401, never
//!    anonymous: a revoked key must not quietly keep reading.
//! 2. **Scope.** A key needs `RESOURCE:read` for reads and `RESOURCE:write`
//!    for writes (403 without). Anonymous callers may read, not write (401).
//! 3. **Limits.** The caller's policy (`key` or `ip`), plus `writes` for
//!    writes, in one check ([`Limiter`]); 429 with `Retry-After` when over.
//! 4. **HTTP caching.** Anonymous reads of public data may be cached by
//!    anyone for `HTTP_CACHE_MAX_AGE`; authenticated answers are `no-store`
//!    (see [`super::security_headers`]). Both vary on `Authorization`.
//!
//! The client address comes from `X-Forwarded-For` only when the connection
//! comes from a trusted proxy, and then it is the nearest address that is not
//! itself a trusted proxy: anything further left was written by the client.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{ConnectInfo, MatchedPath, Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use ipnet::IpNet;

use crate::api_keys::{self, ApiKey, KeyLookup, KeyRing};
use crate::error::{ApiError, ErrorCode};
use crate::ratelimit::{Limiter, Policies, Verdict, headers};

/// Access settings: policies, proxies, key refresh, public caching.
#[derive(Debug, Clone)]
pub struct AccessConfig {
    pub policies: Policies,
    /// Replicas sharing the traffic (sizes the per-replica fallback).
    pub replicas: u32,
    /// Proxies whose `X-Forwarded-For` is believed.
    pub trusted_proxies: Vec<IpNet>,
    /// `max-age` for anonymous reads.
    pub public_max_age: Duration,
    /// How often the key ring reloads.
    pub key_refresh: Duration,
}

/// Everything the guard needs; one per app.
pub struct Access {
    /// Active API keys.
    pub keys: Arc<KeyRing>,
    /// The rate limiter.
    pub limiter: Limiter,
    /// The configured policies.
    pub policies: Policies,
    /// Peers whose `X-Forwarded-For` is believed.
    pub trusted_proxies: Vec<IpNet>,
    /// `max-age` for anonymous reads.
    pub public_max_age: Duration,
}

/// The caller of a request, as the guard established it (also in the
/// request's extensions for handlers that want it).
#[derive(Debug, Clone)]
pub enum Caller {
    /// A request with a valid API key.
    Key(Arc<ApiKey>),
    /// A request without a key, from this address (unknown when the server
    /// was not given connection info, as in router tests).
    Anonymous(Option<IpAddr>),
}

impl Caller {
    /// The rate-limit partition: one per key, one per address (one per /64
    /// for IPv6, which clients get whole).
    fn partition(&self) -> String {
        match self {
            Self::Key(key) => format!("key:{}", key.id),
            Self::Anonymous(Some(IpAddr::V4(ip))) => format!("ip:{ip}"),
            Self::Anonymous(Some(IpAddr::V6(ip))) => {
                let net = IpNet::new(IpAddr::V6(*ip), 64).map(|n| n.trunc()).expect("64 is a valid prefix");
                format!("ip:{net}")
            }
            Self::Anonymous(None) => "ip:unknown".to_owned(),
        }
    }
}

const BEARER_REALM: &str = "Bearer realm=\"api\"";

/// The middleware; see the module documentation.
pub async fn guard(State(access): State<Arc<Access>>, mut request: Request, next: Next) -> Response {
    let write = !matches!(*request.method(), Method::GET | Method::HEAD | Method::OPTIONS);
    let caller = match access.identify(&request) {
        Ok(caller) => caller,
        Err(Refusal::InvalidKey) => {
            return challenge(ErrorCode::InvalidApiKey, "Bearer realm=\"api\", error=\"invalid_token\"");
        }
        Err(Refusal::KeysNotLoaded) => {
            return ApiError::client(ErrorCode::NotReady, "API keys are not loaded yet; retry later.")
                .into_response();
        }
    };
    let scope = format!("{}:{}", resource(&request), if write { "write" } else { "read" });
    match &caller {
        Caller::Key(key) if !key.allows(&scope) => return insufficient_scope(&scope),
        Caller::Anonymous(_) if write => return challenge(ErrorCode::Unauthorized, BEARER_REALM),
        _ => {}
    }
    let (is_key, key_rate) = match &caller {
        Caller::Key(key) => {
            tracing::Span::current().record("api_key", key.prefix.as_str());
            (true, key.rate)
        }
        Caller::Anonymous(_) => (false, None),
    };
    let checks = access.policies.checks(&caller.partition(), is_key, key_rate, write);
    let anonymous_read = !is_key && !write;
    request.extensions_mut().insert(caller);
    let mut response = match access.limiter.check(&checks).await {
        Verdict::Allowed(outcomes) => {
            let mut response = next.run(request).await;
            headers::insert(response.headers_mut(), &checks, &outcomes);
            response
        }
        Verdict::Limited(outcomes) => {
            let mut response = ApiError::code(ErrorCode::RateLimited).into_response();
            headers::insert(response.headers_mut(), &checks, &outcomes);
            headers::insert_retry_after(response.headers_mut(), &outcomes);
            response
        }
        Verdict::Unavailable => ApiError::code(ErrorCode::RateLimiterUnavailable).into_response(),
    };
    cache_policy(response.status(), response.headers_mut(), anonymous_read, access.public_max_age);
    response
}

/// Why a request has no caller.
enum Refusal {
    /// The credentials name no active key (401).
    InvalidKey,
    /// Keys cannot be checked yet (503).
    KeysNotLoaded,
}

impl Access {
    fn identify(&self, request: &Request) -> Result<Caller, Refusal> {
        let Some(value) = request.headers().get(header::AUTHORIZATION) else {
            return Ok(Caller::Anonymous(self.client_ip(request)));
        };
        let Some(plain) = value.to_str().ok().and_then(bearer) else { return Err(Refusal::InvalidKey) };
        match self.keys.lookup(plain) {
            KeyLookup::Found(key) => Ok(Caller::Key(key)),
            KeyLookup::Unknown => {
                tracing::info!(
                    api_key = api_keys::prefix_of(plain).unwrap_or("malformed"),
                    "unknown or revoked API key"
                );
                Err(Refusal::InvalidKey)
            }
            KeyLookup::NotLoaded => Err(Refusal::KeysNotLoaded),
        }
    }

    fn trusted(&self, ip: IpAddr) -> bool {
        self.trusted_proxies.iter().any(|net| net.contains(&ip))
    }

    /// See the module documentation.
    fn client_ip(&self, request: &Request) -> Option<IpAddr> {
        let peer = request.extensions().get::<ConnectInfo<SocketAddr>>()?.0.ip().to_canonical();
        if !self.trusted(peer) {
            return Some(peer);
        }
        Some(forwarded_client(peer, request.headers(), |ip| self.trusted(ip)))
    }
}

/// Walks `X-Forwarded-For` from the nearest hop outwards and returns the
/// first address that is not a trusted proxy. A malformed entry stops the
/// walk: what lies beyond it cannot be trusted either.
fn forwarded_client(peer: IpAddr, headers: &HeaderMap, trusted: impl Fn(IpAddr) -> bool) -> IpAddr {
    let mut client = peer;
    for value in headers.get_all("x-forwarded-for").iter().rev() {
        let Ok(value) = value.to_str() else { return client };
        for hop in value.rsplit(',') {
            let Ok(ip) = hop.trim().parse::<IpAddr>().map(|ip| ip.to_canonical()) else { return client };
            client = ip;
            if !trusted(ip) {
                return ip;
            }
        }
    }
    client
}

/// The token of a `Bearer` credential (the scheme is case-insensitive).
fn bearer(value: &str) -> Option<&str> {
    let (scheme, token) = value.split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}

/// The resource a versioned route belongs to: `/v1/items/{id}` → `items`.
fn resource(request: &Request) -> String {
    let path = request.extensions().get::<MatchedPath>().map_or(request.uri().path(), MatchedPath::as_str);
    let mut segments = path.split('/').filter(|s| !s.is_empty());
    let first = segments.next().unwrap_or_default();
    let is_version =
        first.len() > 1 && first.starts_with('v') && first[1..].bytes().all(|b| b.is_ascii_digit());
    if is_version { segments.next().unwrap_or_default() } else { first }.to_owned()
}

/// 401 for a request that needs an API key and came without one.
pub fn key_required() -> Response {
    challenge(ErrorCode::Unauthorized, BEARER_REALM)
}

fn challenge(code: ErrorCode, www_authenticate: &'static str) -> Response {
    let mut response = ApiError::code(code).into_response();
    response.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static(www_authenticate));
    response
}

fn insufficient_scope(scope: &str) -> Response {
    let mut response =
        ApiError::client(ErrorCode::InsufficientScope, format!("This request needs the {scope} scope."))
            .into_response();
    let value = format!("Bearer realm=\"api\", error=\"insufficient_scope\", scope=\"{scope}\"");
    if let Ok(value) = HeaderValue::from_str(&value) {
        response.headers_mut().insert(header::WWW_AUTHENTICATE, value);
    }
    response
}

/// Who may store the answer. Only successful anonymous reads are public;
/// whatever a handler decided itself stands.
fn cache_policy(status: StatusCode, headers: &mut HeaderMap, anonymous_read: bool, max_age: Duration) {
    headers.append(header::VARY, HeaderValue::from_static("authorization"));
    let cacheable = matches!(status, StatusCode::OK | StatusCode::NOT_MODIFIED);
    if anonymous_read && cacheable && !max_age.is_zero() && !headers.contains_key(header::CACHE_CONTROL) {
        let value = format!("public, max-age={}", max_age.as_secs());
        headers
            .insert(header::CACHE_CONTROL, HeaderValue::from_str(&value).expect("digits are a valid header"));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn xff(values: &[&str]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        for value in values {
            headers.append("x-forwarded-for", HeaderValue::from_str(value).expect("valid"));
        }
        headers
    }

    #[test]
    fn the_client_is_the_nearest_untrusted_hop() {
        let trusted: Vec<IpNet> = vec!["10.0.0.0/8".parse().expect("net")];
        let is_trusted = |ip: IpAddr| trusted.iter().any(|n| n.contains(&ip));
        let peer: IpAddr = "10.0.0.2".parse().expect("ip");
        // The client forged the first entry; the proxies appended the rest.
        let headers = xff(&["6.6.6.6, 203.0.113.7", "10.0.0.9"]);
        assert_eq!(
            forwarded_client(peer, &headers, is_trusted),
            "203.0.113.7".parse::<IpAddr>().expect("ip")
        );
        // Garbage stops the walk at the last address that parsed.
        let headers = xff(&["203.0.113.7, junk, 10.0.0.9"]);
        assert_eq!(forwarded_client(peer, &headers, is_trusted), "10.0.0.9".parse::<IpAddr>().expect("ip"));
        assert_eq!(forwarded_client(peer, &HeaderMap::new(), is_trusted), peer);
    }

    #[test]
    fn ipv6_callers_share_a_limit_per_64() {
        let a = Caller::Anonymous(Some("2001:db8:1:2::1".parse().expect("ip")));
        let b = Caller::Anonymous(Some("2001:db8:1:2:ffff::9".parse().expect("ip")));
        assert_eq!(a.partition(), b.partition());
        assert_eq!(a.partition(), "ip:2001:db8:1:2::/64");
    }

    #[test]
    fn bearer_tokens_are_parsed_strictly() {
        assert_eq!(bearer("Bearer abc"), Some("abc"));
        assert_eq!(bearer("bearer  abc "), Some("abc"));
        assert_eq!(bearer("Basic abc"), None);
        assert_eq!(bearer("Bearer "), None);
        assert_eq!(bearer("Bearer"), None);
    }
}
