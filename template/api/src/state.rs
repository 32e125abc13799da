//! The state every handler can reach. Cheap to clone: everything inside is
//! reference-counted. Handlers ask for the smallest piece they need through
//! `FromRef` (`State<PgPool>`, `State<Lifecycle>`), not for the whole.

use std::sync::Arc;

use axum::extract::FromRef;
use service::Lifecycle;
use sqlx::PgPool;

use crate::http::access::Access;
use crate::items::Items;
{% if worker %}use crate::offload::Jobs;
{% endif %}use crate::observability::metrics::Metrics;

/// Shared state of one app instance.
#[derive(Clone, FromRef)]
pub struct AppState {
    /// The one Postgres pool of this replica.
    pub db: PgPool,
    /// Items storage (Postgres, and the cache in front of it).
    pub items: Items,
{% if worker %}    /// Job submission and status.
    pub jobs: Jobs,
{% endif %}    /// API keys, rate limits and cache policy.
    pub access: Arc<Access>,
    /// The metrics registry.
    pub metrics: Arc<Metrics>,
    /// Whether the instance is draining.
    pub lifecycle: Lifecycle,
}
