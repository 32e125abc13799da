//! `cargo xtask ci`: formatting, lints and every test, against the real
//! services. `.ci/run` starts the services, then runs this.

use anyhow::bail;

use crate::checks::{lint_infra, lint_layers, lint_observability, lint_workflows};
use crate::cmd;
use crate::tools;

/// Options of `ci`.
#[derive(clap::Args)]
pub(crate) struct Args {
    /// Skip formatting and clippy (tests only).
    #[arg(long)]
    tests_only: bool,
    /// Skip `compose-test` (the generator's matrix does: the root runs it).
    #[arg(long)]
    no_compose: bool,
    /// Formatting, clippy and the static checks only: no tests.
    #[arg(long, conflicts_with = "tests_only")]
    lint_only: bool,
}

const POSTGRES: &str = "postgres://postgres@127.0.0.1:5432/postgres";
// @template if redis
const REDIS: &str = "redis://127.0.0.1:6379";
// @template endif
// @template if worker
const AMQP: &str = "amqp://guest:guest@127.0.0.1:5672/%2f";
// @template endif

/// The bench's own database on the server of `database_url`.
fn bench_database(database_url: &str) -> String {
    let server = database_url.rsplit_once('/').map_or(database_url, |(server, _)| server);
    format!("{server}/{}-bench", env!("PROJECT_NAME"))
}

/// Runs every check; stops at the first failure.
pub(crate) fn run(args: &Args) -> anyhow::Result<()> {
    // Tests create a database each on this server.
    let database_url = std::env::var("DATABASE_URL").unwrap_or_else(|_| POSTGRES.to_owned());
    let pg = cmd::address(&database_url, 5432);
    if !cmd::reachable(&pg) {
        bail!("Postgres is not reachable at {pg}; start it (see .ci/run) or set DATABASE_URL");
    }
    // @template if redis
    // Tests share this Redis, each under its own key prefix.
    let redis_url = std::env::var("REDIS_URL").unwrap_or_else(|_| REDIS.to_owned());
    let redis = cmd::address(&redis_url, 6379);
    if !cmd::reachable(&redis) {
        bail!("Redis is not reachable at {redis}; start it (see .ci/run) or set REDIS_URL");
    }
    // @template endif
    // @template if worker
    // Tests share this RabbitMQ, each under its own queue prefix.
    let amqp_url = std::env::var("AMQP_URL").unwrap_or_else(|_| AMQP.to_owned());
    let amqp = cmd::address(&amqp_url, 5672);
    if !cmd::reachable(&amqp) {
        bail!("RabbitMQ is not reachable at {amqp}; start it (see .ci/run) or set AMQP_URL");
    }
    // @template endif
    if !args.tests_only {
        lint_workflows(&cmd::root())?;
        lint_layers(&cmd::root(), false)?;
        lint_observability(&cmd::root())?;
        lint_infra(&cmd::root())?;
        cmd::run(cmd::cargo().args(["fmt", "--all", "--check"]))?;
        cmd::run(cmd::cargo().args([
            "clippy",
            "--workspace",
            "--all-targets",
            "--locked",
            "--",
            "-D",
            "warnings",
        ]))?;
    }
    if args.lint_only {
        return Ok(());
    }
    // The metrics tests run `promtool check metrics` on every scrape; the
    // end-to-end tests run the edge in front of the replicas.
    tools::ensure(&[tools::PROMTOOL, crate::checks::nginx::NGINX])?;
    // The same selection as clippy, so nothing is rebuilt for other features.
    let mut tests = cmd::cargo();
    if tools::found("cargo-nextest") {
        tests.args(["nextest", "run", "--workspace", "--all-targets", "--locked", "--no-fail-fast"]);
    } else {
        tests.args(["test", "--workspace", "--all-targets", "--locked", "--no-fail-fast"]);
    }
    // insta must compare against the committed snapshots, never rewrite them.
    tests.env("DATABASE_URL", &database_url).env("INSTA_UPDATE", "no");
    // @template if redis
    tests.env("REDIS_URL", &redis_url);
    // @template endif
    // @template if worker
    tests.env("AMQP_URL", &amqp_url);
    // @template endif
    cmd::run(&mut tests)?;
    if args.no_compose {
        eprintln!(
            "\n!!! compose-test skipped (--no-compose): the images and docker-compose.yml were not run\n"
        );
    } else {
        crate::compose_test::run(&crate::compose_test::Args::default())?;
    }
    // The benchmark works (on the debug binaries the tests built: a smoke
    // run, whose figures mean nothing; `cargo xtask bench` holds the budget).
    let mut bench = cmd::cargo();
    bench.args(["xtask", "bench", "--smoke"]).env("BENCH_DATABASE_URL", bench_database(&database_url));
    // @template if redis
    bench.env("BENCH_REDIS_URL", &redis_url);
    // @template endif
    cmd::run(&mut bench)?;
    // @template if repo
    // The generator: template/ must match the root, and every generated
    // project must pass its own CI.
    cmd::run(cmd::cargo().args(["xtask", "template", "--check"]))?;
    cmd::run(
        cmd::cargo()
            .args(["xtask", "test-generator"])
            .env("DATABASE_URL", &database_url)
            .env("REDIS_URL", &redis_url)
            .env("AMQP_URL", &amqp_url),
    )?;
    // @template endif
    Ok(())
}
