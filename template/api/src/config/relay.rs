//! Settings of the outbox relay: the broker it publishes jobs to and the
//! pace of its passes.

use clap::Args;
use secrecy::SecretString;
use service::settings::positive_duration;
use service::{Problems, defaults};

use crate::offload::relay::RelayConfig;

/// Relay settings as text.
#[derive(Debug, Clone, Args)]
pub struct RelaySettings {
    /// RabbitMQ URL the outbox relay publishes jobs to. Its `heartbeat`
    /// query parameter (seconds) sets how fast a dead link is noticed
    /// (default 10). Empty runs no relay in this replica: jobs wait in the
    /// outbox for a replica that has one.
    #[arg(long, env = "AMQP_URL", default_value = defaults::AMQP_URL, hide_env_values = true)]
    pub amqp_url: String,
    /// Prefix of every queue and exchange name; the worker must use the same.
    #[arg(long, env = "AMQP_QUEUE_PREFIX", default_value = env!("PROJECT_NAME"))]
    pub amqp_queue_prefix: String,
    /// Longest wait between outbox passes. A replica's own jobs are relayed
    /// at once; this bounds the delay for other replicas' jobs and retries.
    #[arg(long, env = "OUTBOX_POLL", default_value = "500ms")]
    pub outbox_poll: String,
    /// Outbox rows published per pass (and per transaction).
    #[arg(long, env = "OUTBOX_BATCH", default_value = "100")]
    pub outbox_batch: String,
    /// How long RabbitMQ may take to confirm a batch before its unconfirmed
    /// rows are retried and the connection is rebuilt.
    #[arg(long, env = "OUTBOX_CONFIRM_TIMEOUT", default_value = "5s")]
    pub outbox_confirm_timeout: String,
}

impl RelaySettings {
    /// `Some(None)` when AMQP_URL is empty: this replica runs no relay.
    pub fn validate(&self, p: &mut Problems) -> Option<Option<RelayConfig>> {
        let url = p.parse_secret("AMQP_URL", &self.amqp_url, |raw| {
            if raw.is_empty() {
                return Ok(None);
            }
            jobs::broker::validate_url(raw).map(|()| Some(SecretString::from(raw.to_owned())))
        });
        let poll = p.parse("OUTBOX_POLL", &self.outbox_poll, positive_duration);
        let batch = p.parse("OUTBOX_BATCH", &self.outbox_batch, |raw| match raw.parse::<u32>() {
            Ok(b) if (1..=10_000).contains(&b) => Ok(b),
            Ok(_) => Err("must be between 1 and 10000".to_owned()),
            Err(err) => Err(err.to_string()),
        });
        let confirm_timeout =
            p.parse("OUTBOX_CONFIRM_TIMEOUT", &self.outbox_confirm_timeout, positive_duration);
        let prefix = self.amqp_queue_prefix.trim();
        p.check(!prefix.is_empty(), || "AMQP_QUEUE_PREFIX must not be empty".to_owned());
        let (poll, batch, confirm_timeout) = (poll?, batch?, confirm_timeout?);
        Some(url?.map(|url| RelayConfig {
            url,
            topology: jobs::Topology::new(prefix),
            poll,
            batch,
            confirm_timeout,
            crash_after_confirm: None,
        }))
    }
}
