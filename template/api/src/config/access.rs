//! Settings of who may call and how often: rate-limit policies, the proxies
//! whose `X-Forwarded-For` is believed, API key refresh, and the public
//! `Cache-Control` of anonymous reads.

use std::net::IpAddr;

use clap::Args;
use ipnet::IpNet;
use service::Problems;
use service::settings::{at_least, duration, positive_duration};

use crate::http::access::AccessConfig;
use crate::ratelimit::{Policies, Policy, Rate};

/// Access settings as text.
#[derive(Debug, Clone, Args)]
pub struct AccessSettings {
    /// `Cache-Control: public, max-age` for anonymous reads, which any cache
    /// (NGINX, a CDN, the browser) may then store; `0s` sends none.
    #[arg(long, env = "HTTP_CACHE_MAX_AGE", default_value = "5s")]
    pub http_cache_max_age: String,
    /// Default rate per API key (QUOTA/WINDOW[;burst=N], or `off`). A key
    /// created with --rate has its own.
    #[arg(long, env = "RATE_LIMIT_KEY", default_value = "50/1s;burst=100")]
    pub rate_limit_key: String,
    /// Rate per client address for anonymous reads (or `off`).
    #[arg(long, env = "RATE_LIMIT_IP", default_value = "10/1s;burst=20")]
    pub rate_limit_ip: String,
    /// Rate per caller for writes, on top of the caller's own (or `off`).
    #[arg(long, env = "RATE_LIMIT_WRITES", default_value = "10/1s;burst=10")]
    pub rate_limit_writes: String,
    /// Replicas sharing the traffic. A replica limiting on its own (without
    /// Redis, or while Redis is down) admits its share: rate ÷ replicas.
    #[arg(long, env = "RATE_LIMIT_REPLICAS", default_value = "1")]
    pub rate_limit_replicas: String,
    /// Proxies whose X-Forwarded-For is believed, as CIDRs, comma separated
    /// (for example the NGINX subnet). Empty trusts none.
    #[arg(long, env = "TRUSTED_PROXIES", default_value = "")]
    pub trusted_proxies: String,
    /// How often each replica checks for new and revoked API keys.
    #[arg(long, env = "API_KEY_REFRESH", default_value = "1s")]
    pub api_key_refresh: String,
}

impl AccessSettings {
    /// `fail_closed` names the policies that refuse rather than fall back
    /// while the shared limiter is unreachable (RATE_LIMIT_FAIL_CLOSED).
    pub fn validate(&self, fail_closed: &[String], p: &mut Problems) -> Option<AccessConfig> {
        let public_max_age = p.parse("HTTP_CACHE_MAX_AGE", &self.http_cache_max_age, duration);
        let replicas = p.parse("RATE_LIMIT_REPLICAS", &self.rate_limit_replicas, at_least(1u32));
        let trusted_proxies = p.parse("TRUSTED_PROXIES", &self.trusted_proxies, parse_networks);
        let key_refresh = p.parse("API_KEY_REFRESH", &self.api_key_refresh, positive_duration);
        let mut policy = |name: &'static str, raw: &str| {
            let env = format!("RATE_LIMIT_{}", name.to_ascii_uppercase());
            p.parse(&env, raw, |raw| parse_policy(name, raw, fail_closed.iter().any(|n| n == name)))
        };
        let key = policy("key", &self.rate_limit_key);
        let ip = policy("ip", &self.rate_limit_ip);
        let writes = policy("writes", &self.rate_limit_writes);
        Some(AccessConfig {
            policies: Policies { key: key?, ip: ip?, writes: writes? },
            replicas: replicas?,
            trusted_proxies: trusted_proxies?,
            public_max_age: public_max_age?,
            key_refresh: key_refresh?,
        })
    }
}

/// A policy's rate, or `off`.
fn parse_policy(name: &'static str, raw: &str, fail_closed: bool) -> Result<Option<Policy>, String> {
    if raw.eq_ignore_ascii_case("off") {
        return Ok(None);
    }
    Rate::parse(raw).map(|rate| Some(Policy { name, rate, fail_closed }))
}

fn parse_networks(raw: &str) -> Result<Vec<IpNet>, String> {
    raw.split(',')
        .map(str::trim)
        .filter(|n| !n.is_empty())
        .map(|n| {
            // A bare address is a network of one.
            n.parse::<IpNet>()
                .or_else(|_| n.parse::<IpAddr>().map(IpNet::from))
                .map_err(|_| format!("{n:?} is not a CIDR such as 10.0.0.0/8"))
        })
        .collect()
}
