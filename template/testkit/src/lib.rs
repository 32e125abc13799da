//! The workspace's test harness: real services, a database per test, and a
//! TCP proxy that injects faults.
//!
//! Tests never mock Postgres, Redis or RabbitMQ. [`services`] finds real ones
//! (from the environment, or started with testcontainers where Docker runs),
//! [`TestDatabase`] gives each test its own migrated database, and
//! [`FaultProxy`] stands between the code under test and a service so a test
//! can make that service vanish or slow down without touching the shared
//! instance, and `RedisServer` and `RabbitServer` are a Redis and a
//! RabbitMQ node a test may kill outright. [`edge::Edge`] is the NGINX edge
//! of `infra/nginx` in front of real replicas.

#[cfg(feature = "api")]
pub mod app;
mod database;
pub mod edge;
pub mod otlp;
pub mod probe;
pub mod promtool;
mod proxy;
{% if worker %}mod rabbit_server;
{% endif %}{% if redis %}mod redis_server;
{% endif %}pub mod services;

pub use database::TestDatabase;
pub use proxy::{FaultProxy, Mode};
{% if worker %}pub use rabbit_server::RabbitServer;
{% endif %}{% if redis %}pub use redis_server::RedisServer;
{% endif %}