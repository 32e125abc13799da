//! The job contract shared by the `api` (which accepts jobs) and the
//! `worker` (which does them), so the two cannot drift apart:
//!
//! - [`message`]: what travels through RabbitMQ (the job id and kind; the
//!   job itself lives in Postgres) and its headers;
//! - [`topology`]: queue and exchange names and arguments;
//! - [`kinds`]: each job kind's name and input, validated on submission;
//! - [`broker`]: connecting to RabbitMQ the same way from both sides.

pub mod broker;
pub mod kinds;
pub mod message;
pub mod topology;

pub use kinds::Violation;
pub use message::JobMessage;
pub use topology::Topology;
