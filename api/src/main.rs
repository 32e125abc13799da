//! The `api` binary: parse the command line, set up logging, then serve or
//! run a subcommand.

use std::process::ExitCode;

use api::{App, Cli, Command, KeysCommand, app};
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
    if matches!(cli.command, Some(Command::Healthcheck)) {
        return telemetry::health::check(config.listen.port());
    }
    // Bad key options are refused before anything connects, like bad settings.
    if let Some(Command::Keys(KeysCommand::Create { name, scopes, rate })) = &cli.command
        && let Err(err) = api::keys::validate_new(name, scopes, rate.as_deref())
    {
        eprintln!("invalid key: {err}");
        return ExitCode::from(2);
    }
    let telemetry =
        match api::telemetry::init(config.log_format, matches!(cli.command, Some(Command::Keys(_)))) {
            Ok(telemetry) => telemetry,
            Err(err) => {
                eprintln!("api: {err:#}");
                return ExitCode::from(2);
            }
        };
    let result = match cli.command.unwrap_or(Command::Serve) {
        Command::Serve => serve(config).await,
        Command::Migrate => api::db::migrate(&config.database).await,
        Command::Keys(command) => keys(&config, command).await,
        Command::Healthcheck => unreachable!("answered before logging starts"),
    };
    let code = match result {
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
    if config.migrate_on_start {
        api::db::migrate(&config.database).await?;
    }
    let app = App::build(config).await?;
    app.run_until_stopped(app::shutdown_signal()).await
}

/// `api keys …`: the key goes to stdout (and only there), the rest to stderr,
/// so `KEY=$(api keys create --name ci)` captures just the key.
async fn keys(config: &api::Config, command: KeysCommand) -> anyhow::Result<()> {
    use api::keys::{self, store};

    let db = api::db::pool(&config.database)?;
    match command {
        KeysCommand::Create { name, scopes, rate } => {
            let (key, plain) = keys::create(&db, &name, &scopes, rate.as_deref()).await?;
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
            eprintln!("Revoked {prefix}; replicas refuse it within {:?}.", config.access.key_refresh);
        }
    }
    db.close().await;
    Ok(())
}
