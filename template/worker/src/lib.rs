//! The job worker as a library: `main.rs` only parses the command line and
//! calls into here, and the tests run the same [`Worker`].
//!
//! It consumes the work queue with a bounded prefetch and manual acks, does
//! each job's effect in a Postgres transaction guarded by the job row (so a
//! redelivered message has no second effect), acks only after the commit,
//! retries transient failures through delay queues, dead-letters permanent
//! ones, and drains on SIGTERM. See [`consumer`].

pub mod config;
pub mod consumer;
mod gauges;
pub mod http;
pub mod kinds;
pub mod metrics;
pub mod observability;
pub mod store;

mod app;

pub use app::Worker;
pub use config::{Cli, Command, Config};
