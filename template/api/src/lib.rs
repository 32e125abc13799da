//! The API service as a library: `main.rs` only parses the command
//! line and calls into here, and the tests build the same [`App`].

pub mod api_keys;
pub mod app;
pub mod config;
pub mod db;
pub mod error;
pub mod http;
pub mod items;
pub mod observability;
{% if worker %}pub mod offload;
{% endif %}pub mod ratelimit;
{% if redis %}pub mod redis_client;
{% endif %}pub mod resource;
pub mod routes;
pub mod state;
pub mod versioning;

pub use app::App;
pub use config::{Cli, Command, Config, KeysCommand, Settings};
