//! The api's integration tests: one binary, real Postgres, each test with
//! its own database and its own app instance on a free port.

mod access;
// @template if redis
mod cache;
// @template endif
mod edge;
mod errors;
mod exporter;
mod helpers;
mod items;
// @template if worker
mod jobs;
// @template endif
mod middleware;
mod operations;
mod process;
// @template if redis
mod redis_failure;
// @template endif
mod resilience;
// @template if redis
mod shared_limits;
// @template endif
mod telemetry;
