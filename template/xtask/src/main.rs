//! `cargo xtask`: the project's own tooling, in Rust so it runs wherever
//! cargo does.
//!
//! - `up`: bring the platform up locally against the local services.
//! - `ci`: every check CI runs, in the same order.
//! - `lint-observability`: only the static checks of `infra/observability`
//!   (a part of `ci`).
//! - `compose-test`: the images and `docker-compose.yml` for real, end to
//!   end through NGINX (a part of `ci`).
//! - `lint-infra`: only the static checks of nginx, the images, Compose and
//!   Kubernetes (a part of `ci`).
//! - `bench`: the api against bare axum, as ratios from one run.

mod bench;
mod checks;
mod ci;
mod cmd;
mod compose_test;
mod http;
mod tools;
mod up;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "cargo xtask", about = "The project's own tooling")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Bring the platform up locally: migrations, N api replicas, the worker, and NGINX in front.
    Up(up::Args),
    /// Run every check CI runs: formatting, clippy and all the tests.
    Ci(ci::Args),
    /// Build the images and run docker-compose.yml for real, checked end to end through NGINX.
    ComposeTest(compose_test::Args),
    /// Check infra/observability only (promtool, yamllint, the dashboards), as `ci` does.
    LintObservability,
    /// Check infra/ only: nginx, the Dockerfiles, Compose and the Kubernetes manifests, as `ci` does.
    LintInfra,
    /// Prove that the modules of api/src and worker/src depend on each other without a cycle.
    LintLayers {
        /// Print each crate's module graph as well.
        #[arg(long)]
        print: bool,
    },
    /// Measure the api against bare axum (wrk, release builds, one run).
    Bench(bench::Args),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Up(args) => up::run(&args),
        Command::Ci(args) => ci::run(&args),
        Command::LintObservability => checks::lint_observability(&cmd::root()),
        Command::ComposeTest(args) => compose_test::run(&args),
        Command::LintInfra => checks::lint_infra(&cmd::root()),
        Command::LintLayers { print } => checks::lint_layers(&cmd::root(), print),
        Command::Bench(args) => bench::run(&args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("xtask: error: {err:#}");
            ExitCode::FAILURE
        }
    }
}
