//! The API service as a library: `main.rs` only parses the command
//! line and calls into here, and the tests build the same [`App`].

pub mod app;
pub mod config;
pub mod db;
pub mod error;
pub mod http;
pub mod items;
// @template if worker
pub mod jobs;
// @template endif
pub mod keys;
pub mod ratelimit;
// @template if redis
pub mod redis;
// @template endif
pub mod routes;
pub mod state;
pub mod telemetry;
pub mod versioning;

pub use app::App;
pub use config::{Cli, Command, Config, KeysCommand, Settings};
