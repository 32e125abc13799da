//! What every service binary of the workspace needs, written once, so the
//! api and the worker cannot drift apart on it:
//!
//! - [`defaults`]: the one default URL of each backing service;
//! - [`settings`]: collecting every invalid setting before reporting;
//! - [`healthcheck`]: the `healthcheck` subcommand of a distroless image;
//! - [`lifecycle`]: the drain state that turns readiness 503;
//! - `shutdown`: the signal that starts the drain (feature `runtime`);
//! - `database`: the Postgres settings and the pool built from them, with
//!   the acquire bound and `statement_timeout` on every connection (feature
//!   `runtime`);
//! - the allocator of every binary that links it (feature `runtime`).
//!
//! It depends on no crate of the workspace: services depend on it, never
//! the other way.

pub mod defaults;
pub mod healthcheck;
pub mod lifecycle;
pub mod settings;

#[cfg(feature = "runtime")]
pub mod database;
#[cfg(feature = "runtime")]
pub mod shutdown;

/// mimalloc, not glibc's malloc: under load, glibc's arenas serialise the
/// runtime's threads on their locks (a profile of a cached read showed 15%
/// of the api's time in malloc and free, and futex waits on the arena lock).
/// Linked by every service binary and its tests through this crate.
#[cfg(feature = "runtime")]
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

pub use lifecycle::Lifecycle;
pub use settings::{ConfigErrors, Problems};
