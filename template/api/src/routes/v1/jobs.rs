//! `/v1/jobs`: submit work for the worker and follow it.
//!
//! `POST` answers 202 Accepted once the job is durably recorded (see
//! [`crate::offload`]), with `Location` to poll; `GET` carries `Retry-After`
//! until the job is finished, so clients poll politely. Jobs belong to the
//! API key that submitted them: other keys get 404.

use axum::Extension;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::ToSchema;
use utoipa::openapi::schema::{Object, ObjectBuilder, Type};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use crate::error::{ApiError, ErrorCode, FieldError, Problem};
use crate::http::access::{self, Caller};
use crate::http::extract::{Json, Path};
use crate::offload::{self, Job, Jobs, Status, Submission, Submitted};
use crate::state::AppState;

const PREFIX: &str = "/v1";
/// Seconds a client should wait before polling an unfinished job again.
const POLL_AFTER_SECONDS: u32 = 1;
/// Longest `Idempotency-Key` accepted.
const IDEMPOTENCY_KEY_MAX: usize = 255;
const IDEMPOTENCY_KEY: HeaderName = HeaderName::from_static("idempotency-key");
const IDEMPOTENT_REPLAYED: HeaderName = HeaderName::from_static("idempotent-replayed");

/// The routes of this resource.
pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(submit_job)).routes(routes!(get_job))
}

/// What a client sends to submit a job.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[schema(as = v1::JobRequest)]
#[serde(deny_unknown_fields)]
pub struct JobRequest {
    /// The job kind (the list comes from `jobs::kinds::KINDS`).
    #[schema(schema_with = kind_schema)]
    pub kind: String,
    /// The kind's input (described per kind from `jobs::kinds::KINDS`).
    #[serde(default = "empty_object")]
    #[schema(schema_with = input_schema)]
    pub input: Value,
}

/// `kind`: an enum of the registered kinds, each described.
#[expect(deprecated, reason = "`example`, as the derive writes it for every other field of the document")]
fn kind_schema() -> Object {
    let described: Vec<String> =
        jobs::kinds::KINDS.iter().map(|kind| format!("- `{}`: {}.", kind.name, kind.summary)).collect();
    ObjectBuilder::new()
        .schema_type(Type::String)
        .enum_values(Some(jobs::kinds::names()))
        .description(Some(format!("The job kind:\n{}", described.join("\n"))))
        .example(Some(Value::from(jobs::kinds::KINDS[0].name)))
        .build()
}

/// `input`: an object whose shape depends on the kind.
fn input_schema() -> Object {
    let described: Vec<String> =
        jobs::kinds::KINDS.iter().map(|kind| format!("- `{}`: `{}`", kind.name, kind.input)).collect();
    ObjectBuilder::new()
        .schema_type(Type::Object)
        .description(Some(format!("The kind's input:\n{}", described.join("\n"))))
        .build()
}

fn empty_object() -> Value {
    Value::Object(serde_json::Map::new())
}

/// A job, version 1.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[schema(as = v1::Job)]
pub struct JobV1 {
    /// Identifier (UUIDv7).
    pub id: Uuid,
    /// The job kind.
    pub kind: String,
    /// Where the job is.
    pub status: Status,
    /// Deliveries that reached a worker (retries included).
    pub attempts: i32,
    /// The outcome, once succeeded.
    #[schema(value_type = Option<Object>)]
    pub result: Option<Value>,
    /// What went wrong, once failed or dead-lettered, or before a retry.
    #[schema(value_type = Option<Object>)]
    pub error: Option<Value>,
    /// When it was accepted.
    pub created_at: DateTime<Utc>,
    /// When it last changed.
    pub updated_at: DateTime<Utc>,
    /// When a worker first took it.
    pub started_at: Option<DateTime<Utc>>,
    /// When it finished.
    pub finished_at: Option<DateTime<Utc>>,
    /// Where to poll it.
    #[schema(example = "/v1/jobs/0192f0c1-7b6e-7cc3-9a57-6a1d4c0e9b21")]
    pub href: String,
}

impl From<&Job> for JobV1 {
    fn from(job: &Job) -> Self {
        Self {
            id: job.id,
            kind: job.kind.clone(),
            status: job.status,
            attempts: job.attempts,
            result: job.result.clone(),
            error: job.error.clone(),
            created_at: job.created_at,
            updated_at: job.updated_at,
            started_at: job.started_at,
            finished_at: job.finished_at,
            href: location(job.id),
        }
    }
}

fn location(id: Uuid) -> String {
    format!("{PREFIX}/jobs/{id}")
}

/// Submit a job. Answers 202 once it is durably recorded; poll `Location`.
/// Send `Idempotency-Key` to make retries safe: the same key and request
/// return the original job (with `Idempotent-Replayed: true`).
#[utoipa::path(
    post, path = "/jobs", tag = "jobs", operation_id = "v1_submit_job",
    params(("Idempotency-Key" = Option<String>, Header, description = "Up to 255 visible characters; scoped to the API key")),
    request_body = JobRequest,
    responses(
        (status = ACCEPTED, body = JobV1, headers(("Location" = String), ("Retry-After" = u32))),
        (status = BAD_REQUEST, body = Problem, content_type = "application/problem+json"),
        (status = UNPROCESSABLE_ENTITY, body = Problem, content_type = "application/problem+json",
            description = "An invalid kind or input (`validation_failed`), or a reused Idempotency-Key (`idempotency_key_reused`)"),
        (status = SERVICE_UNAVAILABLE, body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn submit_job(
    State(jobs): State<Jobs>,
    caller: Option<Extension<Caller>>,
    headers: HeaderMap,
    Json(request): Json<JobRequest>,
) -> Result<Response, ApiError> {
    let Some(Extension(Caller::Key(key))) = caller else { return Ok(access::key_required()) };
    let idempotency_key = idempotency_key(&headers)?;
    jobs::kinds::validate(&request.kind, &request.input).map_err(|violations| {
        ApiError::Validation(
            violations
                .into_iter()
                .map(|v| FieldError { pointer: v.pointer, code: v.code, detail: v.detail })
                .collect(),
        )
    })?;
    let (traceparent, tracestate) = offload::trace_context(&tracing::Span::current(), &headers);
    let submission = Submission {
        kind: request.kind,
        input: request.input,
        owner: key.id,
        idempotency_key,
        traceparent,
        tracestate,
    };
    let (job, replayed) = match jobs.submit(&submission).await? {
        Submitted::Created(job) => (job, false),
        Submitted::Replayed(job) => (job, true),
        Submitted::KeyReused => return Err(ApiError::code(ErrorCode::IdempotencyKeyReused)),
    };
    let mut response = answer(StatusCode::ACCEPTED, &job);
    let headers = response.headers_mut();
    headers.insert(
        header::LOCATION,
        HeaderValue::from_str(&location(job.id)).expect("a path is a valid header"),
    );
    if replayed {
        headers.insert(IDEMPOTENT_REPLAYED, HeaderValue::from_static("true"));
    }
    Ok(response)
}

/// Get a job: its status, attempts, timestamps, and its result or error.
/// Carries `Retry-After` while the job is unfinished.
#[utoipa::path(
    get, path = "/jobs/{id}", tag = "jobs", operation_id = "v1_get_job",
    params(("id" = Uuid, Path, description = "Job id")),
    responses(
        (status = OK, body = JobV1, headers(("Retry-After" = u32, description = "While the job is unfinished"))),
        (status = NOT_FOUND, body = Problem, content_type = "application/problem+json"),
        (status = SERVICE_UNAVAILABLE, body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn get_job(
    State(jobs): State<Jobs>,
    caller: Option<Extension<Caller>>,
    Path(id): Path<Uuid>,
) -> Result<Response, ApiError> {
    let Some(Extension(Caller::Key(key))) = caller else { return Ok(access::key_required()) };
    let job = jobs.find(key.id, id).await?.ok_or(ApiError::NotFound("job"))?;
    Ok(answer(StatusCode::OK, &job))
}

/// The job with `Retry-After` while it is unfinished.
fn answer(status: StatusCode, job: &Job) -> Response {
    let mut response = (status, Json(JobV1::from(job))).into_response();
    if !job.status.is_finished() {
        response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(POLL_AFTER_SECONDS));
    }
    response
}

/// The `Idempotency-Key` header: absent, or 1 to 255 visible ASCII characters.
fn idempotency_key(headers: &HeaderMap) -> Result<Option<String>, ApiError> {
    let mut values = headers.get_all(IDEMPOTENCY_KEY).iter();
    let Some(value) = values.next() else { return Ok(None) };
    let valid = values.next().is_none()
        && !value.is_empty()
        && value.len() <= IDEMPOTENCY_KEY_MAX
        && value.as_bytes().iter().all(u8::is_ascii_graphic);
    if !valid {
        return Err(ApiError::client(
            ErrorCode::InvalidHeader,
            format!(
                "Idempotency-Key must be one value of 1 to {IDEMPOTENCY_KEY_MAX} visible ASCII characters"
            ),
        ));
    }
    Ok(Some(value.to_str().expect("visible ASCII").to_owned()))
}
