//! The default address of each backing service: the local service on its
//! standard port, as `.ci/run` and `cargo xtask up` start them. Binaries,
//! tooling and tests take these, so moving a port is a one-line change.
//! Production values always come from the environment.

/// The project's own database on the local Postgres.
pub const DATABASE_URL: &str = concat!("postgres://postgres@127.0.0.1:5432/", env!("PROJECT_NAME"));

/// The local Postgres's maintenance database, where tests and tooling
/// create databases of their own.
pub const POSTGRES_ADMIN_URL: &str = "postgres://postgres@127.0.0.1:5432/postgres";

/// The local Redis.
pub const REDIS_URL: &str = "redis://127.0.0.1:6379";

/// The local RabbitMQ, default vhost.
pub const AMQP_URL: &str = "amqp://guest:guest@127.0.0.1:5672/%2f";
