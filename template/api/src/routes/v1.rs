//! Version 1 of the API.

pub mod items;
{% if worker %}pub mod jobs;
{% endif %}
use utoipa_axum::router::OpenApiRouter;

use crate::state::AppState;

/// Every resource of version 1.
pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .merge(items::router())
{% if worker %}        .merge(jobs::router())
{% endif %}}
