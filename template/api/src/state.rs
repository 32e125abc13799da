//! The state every handler can reach. Cheap to clone: everything inside is
//! reference-counted. Handlers ask for the smallest piece they need through
//! `FromRef` (`State<PgPool>`, `State<Lifecycle>`), not for the whole.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use axum::extract::FromRef;
use sqlx::PgPool;

use crate::http::access::Access;
use crate::items::Items;
{% if worker %}use crate::jobs::Jobs;
{% endif %}use crate::telemetry::metrics::Metrics;

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

/// Tracks shutdown, so readiness can turn 503 before the listener closes.
#[derive(Clone, Debug, Default)]
pub struct Lifecycle {
    draining: Arc<AtomicBool>,
}

impl Lifecycle {
    /// Marks the instance as draining: readiness answers 503 from now on.
    pub fn start_draining(&self) {
        self.draining.store(true, Ordering::Release);
    }

    /// Whether draining has started.
    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::Acquire)
    }
}
