//! The `worker` binary: parse the configuration, start logging, run.

use std::process::ExitCode;

use clap::Parser;
use service::Problems;
use worker::{Cli, Command, Worker};

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Some(Command::Healthcheck(port)) = &cli.command {
        let mut p = Problems::default();
        let port = port.validate(&mut p);
        return match p.finish(|| port.unwrap_or_default()) {
            Ok(port) => service::healthcheck::check(port),
            Err(errors) => {
                eprintln!("{errors}");
                ExitCode::from(2)
            }
        };
    }
    let config = match cli.validate() {
        Ok(config) => config,
        Err(errors) => {
            eprintln!("{errors}");
            return ExitCode::from(2);
        }
    };
    let telemetry = match worker::observability::init(config.log_format) {
        Ok(telemetry) => telemetry,
        Err(err) => {
            eprintln!("worker: {err:#}");
            return ExitCode::from(2);
        }
    };
    let result =
        async { Worker::build(config).await?.run_until_stopped(service::shutdown::signal()).await }.await;
    let code = match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            tracing::error!(error = format!("{err:#}"), "worker failed");
            ExitCode::FAILURE
        }
    };
    // Last: the spans of the drain itself go out too, within a bound.
    telemetry.shutdown(telemetry::FLUSH_BOUND).await;
    code
}
