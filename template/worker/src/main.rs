//! The `worker` binary: parse the configuration, start logging, run.

use std::process::ExitCode;

use clap::Parser;
use worker::{Cli, Worker};

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    let config = match cli.validate() {
        Ok(config) => config,
        Err(problems) => {
            eprintln!("worker: invalid configuration:\n{problems}");
            return ExitCode::from(2);
        }
    };
    if matches!(cli.command, Some(worker::Command::Healthcheck)) {
        return telemetry::health::check(config.listen.port());
    }
    let telemetry = match worker::telemetry::init(config.log_format) {
        Ok(telemetry) => telemetry,
        Err(err) => {
            eprintln!("worker: {err:#}");
            return ExitCode::from(2);
        }
    };
    let result =
        async { Worker::build(config).await?.run_until_stopped(worker::shutdown_signal()).await }.await;
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
