//! The api's integration tests: one binary, real Postgres, each test with
//! its own database and its own app instance on a free port.

mod access;
{% if redis %}mod cache;
{% endif %}mod edge;
mod errors;
mod exporter;
mod helpers;
mod items;
{% if worker %}mod jobs;
{% endif %}mod middleware;
mod operations;
mod process;
{% if redis %}mod redis_failure;
{% endif %}mod resilience;
{% if redis %}mod shared_limits;
{% endif %}mod telemetry;
