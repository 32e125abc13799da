//! The `api` binary: parse the command line, set up logging, then serve or
//! run a subcommand. Each command validates only the settings it reads.

use std::process::ExitCode;

use api::config::{Command, DatabaseArgs, KeysArgs, KeysCommand, LogSettings};
use api::{App, Cli};
use clap::Parser;
use service::{ConfigErrors, Problems};

#[tokio::main]
async fn main() -> ExitCode {
    match Cli::parse().into_command() {
        Command::Healthcheck(port) => {
            let mut p = Problems::default();
            let port = port.validate(&mut p);
            match p.finish(|| port.unwrap_or_default()) {
                Ok(port) => service::healthcheck::check(port),
                Err(errors) => invalid(&errors),
            }
        }
        Command::Serve(settings) => match settings.validate() {
            Ok(config) => run(config.server.log_format, false, serve(config)).await,
            Err(errors) => invalid(&errors),
        },
        Command::Migrate(DatabaseArgs { database, log }) => {
            let mut p = Problems::default();
            let (database, format) = (database.validate(&mut p), log_format(&log, &mut p));
            match p.finish(|| (database, format)) {
                Ok((Some(database), Some(format))) => {
                    run(format, false, async move { api::db::migrate(&database).await }).await
                }
                Ok(_) => unreachable!("a missing value always records a problem"),
                Err(errors) => invalid(&errors),
            }
        }
        Command::Keys(KeysArgs { command, database, log }) => {
            let mut p = Problems::default();
            let (database, format) = (database.validate(&mut p), log_format(&log, &mut p));
            // Bad key options are refused before anything connects, like bad settings.
            if let KeysCommand::Create { name, scopes, rate } = &command
                && let Err(err) = api::api_keys::validate_new(name, scopes, rate.as_deref())
            {
                p.check(false, || format!("invalid key: {err}"));
            }
            match p.finish(|| (database, format)) {
                // Logs go to stderr: stdout carries only the key.
                Ok((Some(database), Some(format))) => run(format, true, keys(database, command)).await,
                Ok(_) => unreachable!("a missing value always records a problem"),
                Err(errors) => invalid(&errors),
            }
        }
    }
}

fn log_format(log: &LogSettings, p: &mut Problems) -> Option<telemetry::LogFormat> {
    log.validate(p)
}

/// Settings that cannot work exit 2, before anything starts.
fn invalid(errors: &ConfigErrors) -> ExitCode {
    eprintln!("{errors}");
    ExitCode::from(2)
}

/// Runs `command` with logging and traces set up, and flushes them last.
async fn run(
    format: telemetry::LogFormat,
    to_stderr: bool,
    command: impl Future<Output = anyhow::Result<()>>,
) -> ExitCode {
    let telemetry = match api::observability::init(format, to_stderr) {
        Ok(telemetry) => telemetry,
        Err(err) => {
            eprintln!("api: {err:#}");
            return ExitCode::from(2);
        }
    };
    let code = match command.await {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            tracing::error!(error = format!("{err:#}"), "api failed");
            ExitCode::FAILURE
        }
    };
    // Last: the spans of the drain itself go out too, within a bound.
    telemetry.shutdown(telemetry::FLUSH_BOUND).await;
    code
}

async fn serve(config: api::Config) -> anyhow::Result<()> {
    if config.server.migrate_on_start {
        api::db::migrate(&config.database).await?;
    }
    let app = App::build(config).await?;
    app.run_until_stopped(service::shutdown::signal()).await
}

/// `api keys …`: the key goes to stdout (and only there), the rest to stderr,
/// so `KEY=$(api keys create --name ci)` captures just the key.
async fn keys(database: service::database::DatabaseConfig, command: KeysCommand) -> anyhow::Result<()> {
    use api::api_keys::{self, store};

    let db = api::db::pool(&database)?;
    match command {
        KeysCommand::Create { name, scopes, rate } => {
            let (key, plain) = api_keys::create(&db, &name, &scopes, rate.as_deref()).await?;
            let rate = key.rate.map_or_else(|| "the RATE_LIMIT_KEY default".to_owned(), |r| r.to_string());
            eprintln!(
                "Created API key {} ({:?}) with scopes {} and rate {rate}. It is shown once; store it now:",
                key.prefix,
                key.name,
                key.scopes.join(",")
            );
            println!("{plain}");
        }
        KeysCommand::List => {
            for key in store::list(&db).await? {
                let state = key.revoked_at.map_or_else(|| "active".to_owned(), |at| format!("revoked {at}"));
                println!(
                    "{}\t{}\t{}\t{}\t{state}",
                    key.prefix,
                    key.name,
                    key.scopes.join(","),
                    key.rate.as_deref().unwrap_or("default")
                );
            }
        }
        KeysCommand::Revoke { prefix } => {
            anyhow::ensure!(store::revoke(&db, &prefix).await?, "no active key has the prefix {prefix:?}");
            eprintln!("Revoked {prefix}; every replica refuses it within API_KEY_REFRESH.");
        }
    }
    db.close().await;
    Ok(())
}
