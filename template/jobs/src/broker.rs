//! Connecting to RabbitMQ, the same way from the api and the worker.
//!
//! Each side runs its own supervisor loop around [`connect`]: when the
//! connection dies (broker restart, network partition caught by the
//! heartbeat), the loop builds a new connection and channel and declares
//! the topology again. lapin's own automatic recovery is not used: a
//! fresh connection is simple to reason about, and the tests prove it
//! across real broker restarts and blackholed links.

use std::time::Duration;

use lapin::{Connection, ConnectionProperties};

/// How long connecting (TCP, TLS and the AMQP handshake) may take. A
/// blackholed link would otherwise hang the handshake forever.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Heartbeat asked for when the URL does not name one, in seconds. A dead
/// link is detected after two missed heartbeats.
pub const DEFAULT_HEARTBEAT: u16 = 10;

/// First and longest wait between reconnection attempts.
pub const RECONNECT_BACKOFF: (Duration, Duration) = (Duration::from_millis(100), Duration::from_secs(5));

/// Why a connection could not be made.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    /// The URL does not parse.
    #[error("AMQP_URL is not a valid AMQP URL: {0}")]
    InvalidUrl(String),
    /// The broker refused or failed the connection.
    #[error("connecting to RabbitMQ: {0}")]
    Amqp(#[from] lapin::Error),
    /// The handshake took longer than [`CONNECT_TIMEOUT`].
    #[error("connecting to RabbitMQ timed out after {0:?}")]
    TimedOut(Duration),
}

/// Checks an AMQP URL without connecting, for configuration validation.
pub fn validate_url(url: &str) -> Result<(), String> {
    url.parse::<lapin::uri::AMQPUri>().map(drop)
}

/// Connects to `url`, naming the connection `name` in the broker's
/// management views. The URL's `heartbeat` query parameter wins; without
/// one, [`DEFAULT_HEARTBEAT`] applies.
pub async fn connect(url: &str, name: &str) -> Result<Connection, ConnectError> {
    let mut uri: lapin::uri::AMQPUri = url.parse().map_err(ConnectError::InvalidUrl)?;
    if uri.query.heartbeat.is_none() {
        uri.query.heartbeat = Some(DEFAULT_HEARTBEAT);
    }
    let properties = ConnectionProperties::default().with_connection_name(name.into());
    match tokio::time::timeout(CONNECT_TIMEOUT, Connection::connect_uri(uri, properties)).await {
        Ok(connection) => Ok(connection?),
        Err(_) => Err(ConnectError::TimedOut(CONNECT_TIMEOUT)),
    }
}

/// Exponential backoff between reconnection attempts: doubles up to the cap.
#[derive(Debug, Clone)]
pub struct Backoff {
    next: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Self { next: RECONNECT_BACKOFF.0 }
    }
}

impl Backoff {
    /// The wait before the next attempt; each call doubles the following one.
    pub fn next_delay(&mut self) -> Duration {
        let delay = self.next;
        self.next = (self.next * 2).min(RECONNECT_BACKOFF.1);
        delay
    }

    /// Back to the shortest wait, after a connection that worked.
    pub fn reset(&mut self) {
        self.next = RECONNECT_BACKOFF.0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_the_cap_and_resets() {
        let mut backoff = Backoff::default();
        assert_eq!(backoff.next_delay(), Duration::from_millis(100));
        assert_eq!(backoff.next_delay(), Duration::from_millis(200));
        for _ in 0..10 {
            backoff.next_delay();
        }
        assert_eq!(backoff.next_delay(), RECONNECT_BACKOFF.1);
        backoff.reset();
        assert_eq!(backoff.next_delay(), RECONNECT_BACKOFF.0);
    }

    #[test]
    fn urls_are_validated_without_connecting() {
        assert!(validate_url("amqp://guest:guest@127.0.0.1:5672/%2f?heartbeat=5").is_ok());
        assert!(validate_url("http://example.com").is_err());
    }
}
