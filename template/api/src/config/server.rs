//! Settings of the HTTP server itself: where it listens, how long a request
//! may take and how big it may be, how it drains, CORS, deprecations and
//! the log format.

use std::net::{IpAddr, SocketAddr};
use std::str::FromStr;
use std::time::Duration;

use clap::Args;
use service::Problems;
use service::settings::{boolean, duration, positive_duration};

use crate::http::{Cors, HttpConfig};
use crate::versioning::{Deprecation, Deprecations};

pub use telemetry::LogFormat;

/// The server's settings as text.
#[derive(Debug, Clone, Args)]
pub struct ServerSettings {
    /// Address to listen on.
    #[arg(long, env = "HOST", default_value = "0.0.0.0")]
    pub host: String,
    #[command(flatten)]
    pub port: PortSetting,
    /// Apply pending migrations when the server starts.
    #[arg(long, env = "MIGRATE_ON_START", default_value = "false")]
    pub migrate_on_start: String,
    /// A request that takes longer is answered 504. Must exceed
    /// DB_STATEMENT_TIMEOUT, so a statement never outlives its request.
    #[arg(long, env = "REQUEST_TIMEOUT", default_value = "10s")]
    pub request_timeout: String,
    /// Largest request body accepted, in bytes (413 above it). NGINX's
    /// client_max_body_size must match.
    #[arg(long, env = "BODY_LIMIT_BYTES", default_value = "65536")]
    pub body_limit_bytes: String,
    /// On SIGTERM, keep serving this long with readiness at 503 so load
    /// balancers stop routing here before the listener closes.
    #[arg(long, env = "SHUTDOWN_DELAY", default_value = "0s")]
    pub shutdown_delay: String,
    /// After the listener closes, in-flight requests get this long to finish.
    #[arg(long, env = "SHUTDOWN_GRACE", default_value = "20s")]
    pub shutdown_grace: String,
    /// Origins allowed by CORS, comma separated; empty disables CORS, `*` allows any.
    #[arg(long, env = "CORS_ALLOWED_ORIGINS", default_value = "")]
    pub cors_allowed_origins: String,
    /// Deprecated API versions, comma separated, each
    /// `VERSION|DEPRECATED_AT[|SUNSET_AT[|LINK]]` with RFC 3339 times, for
    /// example `v1|2026-09-01T00:00:00Z|2027-03-01T00:00:00Z|https://example.com/migrate`.
    #[arg(long, env = "API_DEPRECATIONS", default_value = "")]
    pub api_deprecations: String,
    #[command(flatten)]
    pub log: LogSettings,
}

/// The port, which `api healthcheck` reads too.
#[derive(Debug, Clone, Args)]
pub struct PortSetting {
    /// Port to listen on (0 picks a free one).
    #[arg(long, env = "PORT", default_value = "8080")]
    pub port: String,
}

/// The log format, which every command reads.
#[derive(Debug, Clone, Args)]
pub struct LogSettings {
    /// Log format: `json` (one object per line) or `pretty` (for a terminal).
    /// The level comes from RUST_LOG (default `info`).
    #[arg(long, env = "LOG_FORMAT", default_value = "json")]
    pub log_format: String,
}

/// The server's validated settings.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    pub listen: SocketAddr,
    pub migrate_on_start: bool,
    pub http: HttpConfig,
    pub shutdown_delay: Duration,
    pub shutdown_grace: Duration,
    pub deprecations: Deprecations,
    pub log_format: LogFormat,
}

impl ServerSettings {
    pub fn validate(&self, p: &mut Problems) -> Option<ServerConfig> {
        let host = p.parse("HOST", &self.host, IpAddr::from_str);
        let port = self.port.validate(p);
        let migrate_on_start = p.parse("MIGRATE_ON_START", &self.migrate_on_start, boolean);
        let request_timeout = p.parse("REQUEST_TIMEOUT", &self.request_timeout, positive_duration);
        let body_limit_bytes = p.parse("BODY_LIMIT_BYTES", &self.body_limit_bytes, usize::from_str);
        let shutdown_delay = p.parse("SHUTDOWN_DELAY", &self.shutdown_delay, duration);
        let shutdown_grace = p.parse("SHUTDOWN_GRACE", &self.shutdown_grace, duration);
        let cors = p.parse("CORS_ALLOWED_ORIGINS", &self.cors_allowed_origins, parse_cors);
        let deprecations = p.parse("API_DEPRECATIONS", &self.api_deprecations, parse_deprecations);
        let log_format = self.log.validate(p);
        if let Some(limit) = body_limit_bytes {
            p.check(limit >= 1024, || "BODY_LIMIT_BYTES must be at least 1024".to_owned());
        }
        Some(ServerConfig {
            listen: SocketAddr::new(host?, port?),
            migrate_on_start: migrate_on_start?,
            http: HttpConfig {
                request_timeout: request_timeout?,
                body_limit_bytes: body_limit_bytes?,
                cors: cors?,
            },
            shutdown_delay: shutdown_delay?,
            shutdown_grace: shutdown_grace?,
            deprecations: deprecations?,
            log_format: log_format?,
        })
    }
}

impl PortSetting {
    pub fn validate(&self, p: &mut Problems) -> Option<u16> {
        p.parse("PORT", &self.port, u16::from_str)
    }
}

impl LogSettings {
    pub fn validate(&self, p: &mut Problems) -> Option<LogFormat> {
        p.parse("LOG_FORMAT", &self.log_format, LogFormat::from_str)
    }
}

fn parse_cors(raw: &str) -> Result<Cors, String> {
    let origins: Vec<&str> = raw.split(',').map(str::trim).filter(|o| !o.is_empty()).collect();
    match origins.as_slice() {
        [] => Ok(Cors::Disabled),
        ["*"] => Ok(Cors::Any),
        _ => {
            for origin in &origins {
                let valid = (origin.starts_with("https://") || origin.starts_with("http://"))
                    && !origin.ends_with('/')
                    && axum::http::HeaderValue::from_str(origin).is_ok();
                if !valid {
                    return Err(format!("{origin:?} is not an origin such as https://app.example.com"));
                }
            }
            Ok(Cors::Origins(origins.into_iter().map(str::to_owned).collect()))
        }
    }
}

fn parse_deprecations(raw: &str) -> Result<Deprecations, String> {
    raw.split(',')
        .map(str::trim)
        .filter(|entry| !entry.is_empty())
        .map(Deprecation::parse)
        .collect::<Result<Vec<_>, _>>()
        .map(Deprecations::new)
}
