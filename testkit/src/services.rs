//! Where the real services for tests come from.
//!
//! 1. The environment: `DATABASE_URL` (and `REDIS_URL`, `AMQP_URL` for the
//!    parts that use them) point at running services. CI and `cargo xtask
//!    ci` set them.
//! 2. Otherwise, when a Docker engine answers, the service is started once
//!    per test process with testcontainers.
//! 3. Otherwise the test fails with a message saying what to set.

use std::process::{Command, Stdio};
use std::sync::OnceLock;

use anyhow::{Context, bail};

/// The admin URL of a Postgres server tests may create databases on.
///
/// The URL's own database is where `CREATE DATABASE` runs; each test then
/// gets a fresh database of its own (see [`crate::TestDatabase`]).
pub fn postgres_url() -> anyhow::Result<String> {
    static URL: OnceLock<Result<String, String>> = OnceLock::new();
    URL.get_or_init(|| {
        if let Ok(url) = std::env::var("DATABASE_URL") {
            return Ok(url);
        }
        if docker_available() {
            return containers::postgres().map_err(|err| format!("{err:#}"));
        }
        Err("no Postgres for the tests: set DATABASE_URL to a server where the test user may \
             CREATE DATABASE (for example postgres://postgres@127.0.0.1:5432/postgres), \
             or start a Docker engine so the tests can run Postgres in a container"
            .to_owned())
    })
    .clone()
    .map_err(anyhow::Error::msg)
    .context("finding Postgres")
}

// @template if redis
/// The URL of a Redis the tests may share; each test keeps to its own key
/// prefix. From `REDIS_URL`, else a container, else an error saying what to set.
pub fn redis_url() -> anyhow::Result<String> {
    static URL: OnceLock<Result<String, String>> = OnceLock::new();
    URL.get_or_init(|| {
        if let Ok(url) = std::env::var("REDIS_URL") {
            return Ok(url);
        }
        if docker_available() {
            return containers::redis().map_err(|err| format!("{err:#}"));
        }
        Err("no Redis for the tests: set REDIS_URL (for example redis://127.0.0.1:6379), \
             or start a Docker engine so the tests can run Redis in a container"
            .to_owned())
    })
    .clone()
    .map_err(anyhow::Error::msg)
    .context("finding Redis")
}
// @template endif

// @template if worker
/// The URL of a RabbitMQ the tests may share; each test keeps to its own
/// queue prefix. From `AMQP_URL`, else a container, else an error.
pub fn amqp_url() -> anyhow::Result<String> {
    static URL: OnceLock<Result<String, String>> = OnceLock::new();
    URL.get_or_init(|| {
        if let Ok(url) = std::env::var("AMQP_URL") {
            return Ok(url);
        }
        if docker_available() {
            return containers::rabbitmq().map_err(|err| format!("{err:#}"));
        }
        Err("no RabbitMQ for the tests: set AMQP_URL (for example amqp://guest:guest@127.0.0.1:5672/%2f), \
             or start a Docker engine so the tests can run RabbitMQ in a container"
            .to_owned())
    })
    .clone()
    .map_err(anyhow::Error::msg)
    .context("finding RabbitMQ")
}
// @template endif

fn docker_available() -> bool {
    Command::new("docker")
        .arg("info")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|status| status.success())
}

/// Containers for machines with Docker and no configured services.
mod containers {
    use std::sync::mpsc;

    use super::{Context, bail};
    use testcontainers::runners::AsyncRunner;
    use testcontainers_modules::postgres::Postgres;

    /// Postgres in a container for the whole test process.
    pub(super) fn postgres() -> anyhow::Result<String> {
        keep_running("Postgres", async {
            let container = Postgres::default().with_host_auth().start().await?;
            let port = container.get_host_port_ipv4(5432).await?;
            anyhow::Ok((container, format!("postgres://postgres@127.0.0.1:{port}/postgres")))
        })
    }

    // @template if redis
    /// Redis in a container for the whole test process.
    pub(super) fn redis() -> anyhow::Result<String> {
        keep_running("Redis", async {
            let container = testcontainers_modules::redis::Redis::default().start().await?;
            let port = container.get_host_port_ipv4(6379).await?;
            anyhow::Ok((container, format!("redis://127.0.0.1:{port}")))
        })
    }
    // @template endif

    // @template if worker
    /// RabbitMQ in a container for the whole test process.
    pub(super) fn rabbitmq() -> anyhow::Result<String> {
        use testcontainers::GenericImage;
        use testcontainers::core::{IntoContainerPort, WaitFor};
        keep_running("RabbitMQ", async {
            let container = GenericImage::new("rabbitmq", "3.13-alpine")
                .with_exposed_port(5672.tcp())
                .with_wait_for(WaitFor::message_on_stdout("Server startup complete"))
                .start()
                .await?;
            let port = container.get_host_port_ipv4(5672).await?;
            anyhow::Ok((container, format!("amqp://guest:guest@127.0.0.1:{port}/%2f")))
        })
    }
    // @template endif

    /// Starts a container that lives as long as the test process, on a
    /// thread with its own runtime, because each `#[tokio::test]` runtime
    /// ends with its test while the container must outlive them all.
    fn keep_running<C, F>(what: &'static str, start: F) -> anyhow::Result<String>
    where
        C: Send + 'static,
        F: std::future::Future<Output = anyhow::Result<(C, String)>> + Send + 'static,
    {
        let (tx, rx) = mpsc::channel();
        std::thread::Builder::new()
            .name("testcontainers".into())
            .spawn(move || {
                let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
                    Ok(runtime) => runtime,
                    Err(err) => return drop(tx.send(Err(anyhow::Error::from(err)))),
                };
                runtime.block_on(async move {
                    match start.await {
                        Ok((container, url)) => {
                            let _ = tx.send(Ok(url));
                            // Keep the container until the process exits.
                            std::future::pending::<()>().await;
                            drop(container);
                        }
                        Err(err) => drop(tx.send(Err(err))),
                    }
                });
            })
            .context("spawning the container thread")?;
        match rx.recv() {
            Ok(result) => result.with_context(|| format!("starting {what} with testcontainers")),
            Err(_) => bail!("the container thread ended without starting {what}"),
        }
    }
}
