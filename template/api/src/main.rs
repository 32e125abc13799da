//! The `api` binary: parse the command line, set up logging, then serve or
//! run a subcommand.

use std::process::ExitCode;

use api::{App, Cli, Command, app};
use clap::Parser;

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    let config = match cli.settings.validate() {
        Ok(config) => config,
        Err(errors) => {
            eprintln!("{errors}");
            return ExitCode::from(2);
        }
    };
    api::telemetry::init(config.log_format);
    let result = match cli.command.unwrap_or(Command::Serve) {
        Command::Serve => serve(config).await,
        Command::Migrate => api::db::migrate(&config.database).await,
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            tracing::error!(error = format!("{err:#}"), "api failed");
            ExitCode::FAILURE
        }
    }
}

async fn serve(config: api::Config) -> anyhow::Result<()> {
    if config.migrate_on_start {
        api::db::migrate(&config.database).await?;
    }
    let app = App::build(config).await?;
    app.run_until_stopped(app::shutdown_signal()).await
}
