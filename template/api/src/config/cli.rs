//! The command line of the `api` binary: what to do, and which settings each
//! command reads. A command takes only the settings it uses, so `--help`
//! shows only those, and a setting it ignores cannot make it fail.

use clap::{Args, Parser, Subcommand};
use service::database::DatabaseSettings;

use super::Settings;
use super::server::{LogSettings, PortSetting};

/// The command line of the `api` binary.
#[derive(Debug, Parser)]
#[command(name = "api", version, about = "The HTTP API.", args_conflicts_with_subcommands = true)]
pub struct Cli {
    /// What to do; with no subcommand the API serves HTTP.
    #[command(subcommand)]
    pub command: Option<Command>,
    /// The settings of serving, when no subcommand is given.
    #[command(flatten)]
    pub settings: Settings,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Serve HTTP (the default).
    Serve(Box<Settings>),
    /// Create the database if it is missing, apply pending migrations, and exit.
    Migrate(DatabaseArgs),
    /// Manage API keys.
    Keys(KeysArgs),
    /// Exit 0 if the api on this host's PORT answers `GET /healthz` with 200
    /// (the container image's HEALTHCHECK: it has no shell or curl).
    Healthcheck(PortSetting),
}

/// The settings of a command that only talks to Postgres.
#[derive(Debug, Clone, Args)]
pub struct DatabaseArgs {
    #[command(flatten)]
    pub database: DatabaseSettings,
    #[command(flatten)]
    pub log: LogSettings,
}

/// `api keys …`.
#[derive(Debug, Args)]
pub struct KeysArgs {
    #[command(subcommand)]
    pub command: KeysCommand,
    #[command(flatten)]
    pub database: DatabaseSettings,
    #[command(flatten)]
    pub log: LogSettings,
}

/// What `api keys` does.
#[derive(Debug, Subcommand)]
pub enum KeysCommand {
    /// Create a key and print it. It is shown this once; only its hash is stored.
    Create {
        /// What the key is for (shown in `keys list`).
        #[arg(long)]
        name: String,
        /// Scopes, comma separated.
        #[arg(long, default_value = crate::api_keys::DEFAULT_SCOPES)]
        scopes: String,
        /// The key's own rate for the `key` policy (QUOTA/WINDOW[;burst=N]);
        /// without it, RATE_LIMIT_KEY applies.
        #[arg(long)]
        rate: Option<String>,
    },
    /// List keys: prefix, name, scopes, rate, state. Never the keys.
    List,
    /// Revoke a key by its prefix (such as `ak_3f9a1c2e`); every replica
    /// refuses it within API_KEY_REFRESH.
    Revoke {
        /// The key's prefix.
        prefix: String,
    },
}

impl Cli {
    /// The command to run, with serving's settings moved into it when no
    /// subcommand was given.
    pub fn into_command(self) -> Command {
        self.command.unwrap_or_else(|| Command::Serve(Box::new(self.settings)))
    }
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory as _;

    use super::*;

    fn help(path: &[&str]) -> String {
        let mut command = Cli::command();
        let mut current = &mut command;
        for name in path {
            current = current.find_subcommand_mut(name).expect("a subcommand");
        }
        current.render_long_help().to_string()
    }

    #[test]
    fn each_command_shows_only_its_own_options() {
        let create = help(&["keys", "create"]);
        assert!(create.contains("--name") && create.contains("--rate"), "{create}");
        for foreign in ["--port", "--host", "--db-max-connections", "--redis-url", "--request-timeout"] {
            assert!(!create.contains(foreign), "`keys create --help` shows {foreign}:\n{create}");
        }
        let migrate = help(&["migrate"]);
        assert!(migrate.contains("--database-url") && migrate.contains("--db-statement-timeout"));
        assert!(!migrate.contains("--port") && !migrate.contains("--rate-limit-ip"), "{migrate}");
        let healthcheck = help(&["healthcheck"]);
        assert!(healthcheck.contains("--port") && !healthcheck.contains("--database-url"), "{healthcheck}");
        let serve = help(&["serve"]);
        for own in ["--port", "--database-url", "--rate-limit-ip", "--log-format"] {
            assert!(serve.contains(own), "`serve --help` lacks {own}");
        }
    }

    #[test]
    fn settings_belong_to_their_command() {
        assert!(Cli::try_parse_from(["api", "keys", "list", "--port", "1"]).is_err());
        assert!(Cli::try_parse_from(["api", "--port", "1", "migrate"]).is_err());
        let serve = Cli::try_parse_from(["api", "serve", "--port", "1"]).expect("serve takes --port");
        let Command::Serve(settings) = serve.into_command() else { panic!("serve") };
        assert_eq!(settings.server.port.port, "1");
        let bare = Cli::try_parse_from(["api", "--port", "2"]).expect("bare api serves");
        assert!(matches!(bare.into_command(), Command::Serve(s) if s.server.port.port == "2"));
    }
}
