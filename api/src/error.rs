//! Errors and their one wire format, RFC 9457 `application/problem+json`.
//!
//! [`ErrorCode`] is the single table of stable codes: each has one status and
//! one meaning, and clients may branch on it. [`ApiError`] is what handlers
//! return; it turns into a [`Problem`] at the boundary, which is also where
//! server errors are logged, once, with their cause chain.

use std::time::Duration;

use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use utoipa::ToSchema;

/// The media type of every error body.
pub const PROBLEM_JSON: &str = "application/problem+json";

/// How long clients are told to wait after a 503.
pub const RETRY_AFTER: Duration = Duration::from_secs(2);

/// Stable, machine-readable error codes. Adding one is fine; renaming one
/// breaks clients.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorCode {
    /// 400: the body is not valid JSON.
    MalformedJson,
    /// 400: a query parameter is missing or malformed.
    InvalidQuery,
    /// 400: a path parameter is malformed.
    InvalidPath,
    /// 400: a header is malformed.
    InvalidHeader,
    /// 400: any other malformed request.
    BadRequest,
    /// 401: the request needs an API key and carries none.
    Unauthorized,
    /// 401: the API key is malformed, unknown or revoked.
    InvalidApiKey,
    /// 403: the API key lacks the scope the route needs.
    InsufficientScope,
    /// 404: the resource does not exist.
    NotFound,
    /// 404: no route has this path.
    RouteNotFound,
    /// 405: the route exists but not with this method (see `Allow`).
    MethodNotAllowed,
    /// 406: no acceptable representation (for example `identity;q=0`).
    NotAcceptable,
    /// 409: the request conflicts with the resource's state.
    Conflict,
    /// 412: `If-Match` does not match the current version.
    PreconditionFailed,
    /// 413: the body is over the limit.
    PayloadTooLarge,
    /// 415: the body is not `application/json`.
    UnsupportedMediaType,
    /// 422: the body is JSON of the wrong shape or with invalid values.
    ValidationFailed,
    /// 422: the `Idempotency-Key` was used before with a different request.
    IdempotencyKeyReused,
    /// 428: the request must be conditional (`If-Match`).
    PreconditionRequired,
    /// 429: a rate limit is exhausted (see `Retry-After` and `RateLimit`).
    RateLimited,
    /// 500: a bug or an unexpected failure; the details are in the logs.
    Internal,
    /// 503: the database cannot be reached, or its pool is exhausted.
    DatabaseUnavailable,
    /// 503: a statement ran past the database statement timeout.
    DatabaseTimeout,
    /// 503: the instance is starting, draining or lost its database.
    NotReady,
    /// 503: the shared rate limiter is unreachable and the policy fails closed.
    RateLimiterUnavailable,
    /// 504: the request ran past the request timeout.
    Timeout,
}

impl ErrorCode {
    /// The snake_case code sent in the `code` member.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::MalformedJson => "malformed_json",
            Self::InvalidQuery => "invalid_query",
            Self::InvalidPath => "invalid_path",
            Self::InvalidHeader => "invalid_header",
            Self::BadRequest => "bad_request",
            Self::Unauthorized => "unauthorized",
            Self::InvalidApiKey => "invalid_api_key",
            Self::InsufficientScope => "insufficient_scope",
            Self::NotFound => "not_found",
            Self::RouteNotFound => "route_not_found",
            Self::MethodNotAllowed => "method_not_allowed",
            Self::NotAcceptable => "not_acceptable",
            Self::Conflict => "conflict",
            Self::PreconditionFailed => "precondition_failed",
            Self::PayloadTooLarge => "payload_too_large",
            Self::UnsupportedMediaType => "unsupported_media_type",
            Self::ValidationFailed => "validation_failed",
            Self::IdempotencyKeyReused => "idempotency_key_reused",
            Self::PreconditionRequired => "precondition_required",
            Self::RateLimited => "rate_limited",
            Self::Internal => "internal_error",
            Self::DatabaseUnavailable => "database_unavailable",
            Self::DatabaseTimeout => "database_timeout",
            Self::NotReady => "not_ready",
            Self::RateLimiterUnavailable => "rate_limiter_unavailable",
            Self::Timeout => "timeout",
        }
    }

    /// The HTTP status that goes with the code.
    pub const fn status(self) -> StatusCode {
        match self {
            Self::MalformedJson
            | Self::InvalidQuery
            | Self::InvalidPath
            | Self::InvalidHeader
            | Self::BadRequest => StatusCode::BAD_REQUEST,
            Self::Unauthorized | Self::InvalidApiKey => StatusCode::UNAUTHORIZED,
            Self::InsufficientScope => StatusCode::FORBIDDEN,
            Self::NotFound | Self::RouteNotFound => StatusCode::NOT_FOUND,
            Self::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            Self::NotAcceptable => StatusCode::NOT_ACCEPTABLE,
            Self::Conflict => StatusCode::CONFLICT,
            Self::PreconditionFailed => StatusCode::PRECONDITION_FAILED,
            Self::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            Self::UnsupportedMediaType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Self::ValidationFailed | Self::IdempotencyKeyReused => StatusCode::UNPROCESSABLE_ENTITY,
            Self::PreconditionRequired => StatusCode::PRECONDITION_REQUIRED,
            Self::RateLimited => StatusCode::TOO_MANY_REQUESTS,
            Self::Internal => StatusCode::INTERNAL_SERVER_ERROR,
            Self::DatabaseUnavailable
            | Self::DatabaseTimeout
            | Self::NotReady
            | Self::RateLimiterUnavailable => StatusCode::SERVICE_UNAVAILABLE,
            Self::Timeout => StatusCode::GATEWAY_TIMEOUT,
        }
    }

    /// The code for a bare error status produced outside the handlers (by
    /// the router or a middleware layer).
    pub fn for_status(status: StatusCode) -> Self {
        match status {
            StatusCode::UNAUTHORIZED => Self::Unauthorized,
            StatusCode::FORBIDDEN => Self::InsufficientScope,
            StatusCode::NOT_FOUND => Self::RouteNotFound,
            StatusCode::TOO_MANY_REQUESTS => Self::RateLimited,
            StatusCode::METHOD_NOT_ALLOWED => Self::MethodNotAllowed,
            StatusCode::NOT_ACCEPTABLE => Self::NotAcceptable,
            StatusCode::PAYLOAD_TOO_LARGE => Self::PayloadTooLarge,
            StatusCode::UNSUPPORTED_MEDIA_TYPE => Self::UnsupportedMediaType,
            StatusCode::SERVICE_UNAVAILABLE => Self::NotReady,
            StatusCode::GATEWAY_TIMEOUT | StatusCode::REQUEST_TIMEOUT => Self::Timeout,
            s if s.is_client_error() => Self::BadRequest,
            _ => Self::Internal,
        }
    }

    /// A default human-readable explanation.
    const fn default_detail(self) -> &'static str {
        match self {
            Self::MalformedJson => "The request body is not valid JSON.",
            Self::InvalidQuery => "A query parameter is missing or malformed.",
            Self::InvalidPath => "A path parameter is malformed.",
            Self::InvalidHeader => "A request header is malformed.",
            Self::BadRequest => "The request is malformed.",
            Self::Unauthorized => "This request needs an API key: send Authorization: Bearer <key>.",
            Self::InvalidApiKey => "The API key is malformed, unknown or revoked.",
            Self::InsufficientScope => "The API key lacks the scope this request needs.",
            Self::NotFound => "The resource does not exist.",
            Self::RouteNotFound => "No route matches this path.",
            Self::MethodNotAllowed => "The route does not support this method; see the Allow header.",
            Self::NotAcceptable => "No representation matches the Accept headers.",
            Self::Conflict => "The request conflicts with the current state of the resource.",
            Self::PreconditionFailed => "The resource has changed since the version named in If-Match.",
            Self::PayloadTooLarge => "The request body is larger than the limit.",
            Self::UnsupportedMediaType => "The request body must be application/json.",
            Self::ValidationFailed => "The request body has invalid fields.",
            Self::IdempotencyKeyReused => {
                "This Idempotency-Key was used with a different request; use a new key for a new request."
            }
            Self::PreconditionRequired => "This request must carry If-Match with the resource's ETag.",
            Self::RateLimited => "Too many requests; retry after the time in Retry-After.",
            Self::Internal => "An internal error occurred.",
            Self::DatabaseUnavailable => "The database is unavailable; retry later.",
            Self::DatabaseTimeout => "The database took too long to answer; retry later.",
            Self::NotReady => "The service is not ready; retry later.",
            Self::RateLimiterUnavailable => "The rate limiter is unavailable; retry later.",
            Self::Timeout => "The request took too long to process.",
        }
    }
}

/// One invalid field in a request body.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct FieldError {
    /// JSON Pointer (RFC 6901) to the field, such as `/name`.
    pub pointer: String,
    /// Stable code of the rule broken, such as `too_long`.
    pub code: &'static str,
    /// Human-readable explanation.
    pub detail: String,
}

/// An RFC 9457 problem details body.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Problem {
    /// Always `about:blank`: `code` carries the machine-readable kind.
    #[serde(rename = "type")]
    #[schema(example = "about:blank")]
    pub kind: &'static str,
    /// The HTTP status phrase.
    #[schema(example = "Not Found")]
    pub title: &'static str,
    /// The HTTP status code.
    #[schema(example = 404)]
    pub status: u16,
    /// What went wrong, for humans.
    pub detail: String,
    /// Stable machine-readable code from the error table.
    #[schema(example = "not_found")]
    pub code: &'static str,
    /// Invalid fields, for `validation_failed`.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub errors: Vec<FieldError>,
}

impl Problem {
    /// A problem with the code's default detail.
    pub fn new(code: ErrorCode) -> Self {
        let status = code.status();
        Self {
            kind: "about:blank",
            title: status.canonical_reason().unwrap_or("Error"),
            status: status.as_u16(),
            detail: code.default_detail().to_owned(),
            code: code.as_str(),
            errors: Vec::new(),
        }
    }

    /// Replaces the detail.
    #[must_use]
    pub fn with_detail(mut self, detail: impl Into<String>) -> Self {
        self.detail = detail.into();
        self
    }
}

impl IntoResponse for Problem {
    fn into_response(self) -> Response {
        let status = StatusCode::from_u16(self.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let retry = status == StatusCode::SERVICE_UNAVAILABLE;
        let mut response = (status, Json(self)).into_response();
        let headers = response.headers_mut();
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(PROBLEM_JSON));
        if retry {
            headers.insert(header::RETRY_AFTER, HeaderValue::from(RETRY_AFTER.as_secs()));
        }
        response
    }
}

/// Everything a handler can fail with.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// 404: the named resource does not exist.
    #[error("{0} not found")]
    NotFound(&'static str),
    /// 422: the body has invalid fields.
    #[error("validation failed on {} fields", .0.len())]
    Validation(Vec<FieldError>),
    /// A client error with a specific code and detail (extractor rejections,
    /// preconditions).
    #[error("{detail}")]
    Client {
        /// The table entry.
        code: ErrorCode,
        /// What exactly was wrong.
        detail: String,
    },
    /// 503 or 500, depending on what the database said.
    #[error("database error")]
    Database(#[from] sqlx::Error),
    /// 500: anything unexpected.
    #[error(transparent)]
    Internal(#[from] anyhow::Error),
}

impl ApiError {
    /// A client error with the code's default detail.
    pub fn code(code: ErrorCode) -> Self {
        Self::Client { code, detail: code.default_detail().to_owned() }
    }

    /// A client error with a specific detail.
    pub fn client(code: ErrorCode, detail: impl Into<String>) -> Self {
        Self::Client { code, detail: detail.into() }
    }
}

/// What a database error means for the client.
pub fn classify_db_error(err: &sqlx::Error) -> ErrorCode {
    match err {
        sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::WorkerCrashed => ErrorCode::DatabaseUnavailable,
        // 57014 query_canceled: statement_timeout fired.
        sqlx::Error::Database(db) if db.code().as_deref() == Some("57014") => ErrorCode::DatabaseTimeout,
        // Class 08 (connection exception) and 57P0x (shutdown, crash recovery).
        sqlx::Error::Database(db)
            if db.code().is_some_and(|c| c.starts_with("08") || c.starts_with("57P0")) =>
        {
            ErrorCode::DatabaseUnavailable
        }
        _ => ErrorCode::Internal,
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let problem = match self {
            Self::NotFound(what) => {
                Problem::new(ErrorCode::NotFound).with_detail(format!("{what} not found."))
            }
            Self::Validation(errors) => Problem { errors, ..Problem::new(ErrorCode::ValidationFailed) },
            Self::Client { code, detail } => Problem::new(code).with_detail(detail),
            Self::Database(err) => {
                let code = classify_db_error(&err);
                if code == ErrorCode::Internal {
                    tracing::error!(error = &err as &dyn std::error::Error, "database error");
                } else {
                    tracing::warn!(error = %telemetry::chain(&err), code = code.as_str(), "database unavailable");
                }
                let mut response = Problem::new(code).into_response();
                if matches!(err, sqlx::Error::PoolTimedOut) {
                    // Lets the metrics layer count pool timeouts without a
                    // handle on the registry here.
                    response.extensions_mut().insert(PoolTimedOut);
                }
                return response;
            }
            Self::Internal(err) => {
                tracing::error!(error = format!("{err:#}"), "internal error");
                Problem::new(ErrorCode::Internal)
            }
        };
        problem.into_response()
    }
}

/// Marks a response caused by pool exhaustion.
#[derive(Debug, Clone, Copy)]
pub struct PoolTimedOut;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_code_maps_back_from_its_status_to_an_error_of_the_same_class() {
        for code in [
            ErrorCode::RouteNotFound,
            ErrorCode::MethodNotAllowed,
            ErrorCode::PayloadTooLarge,
            ErrorCode::Timeout,
            ErrorCode::RateLimited,
            ErrorCode::Unauthorized,
        ] {
            assert_eq!(ErrorCode::for_status(code.status()), code);
        }
        assert_eq!(ErrorCode::for_status(StatusCode::IM_A_TEAPOT), ErrorCode::BadRequest);
        assert_eq!(ErrorCode::for_status(StatusCode::BAD_GATEWAY), ErrorCode::Internal);
    }

    #[test]
    fn a_pool_timeout_is_a_503_with_retry_after() {
        let response = ApiError::Database(sqlx::Error::PoolTimedOut).into_response();
        assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(response.headers()[header::RETRY_AFTER], "2");
        assert_eq!(response.headers()[header::CONTENT_TYPE], PROBLEM_JSON);
    }

    #[test]
    fn an_internal_error_says_nothing_internal() {
        let response = ApiError::Internal(anyhow::anyhow!("secret table xyz")).into_response();
        assert_eq!(response.status(), StatusCode::INTERNAL_SERVER_ERROR);
    }
}
