//! The Postgres connection budget of one rendered overlay: every pool at
//! its largest, with every workload at its largest replica count, plus the
//! connections Postgres keeps for itself, must fit in `max_connections`.
//!
//! - A Deployment counts its autoscaler's maximum (HPA `maxReplicas` or
//!   ScaledObject `maxReplicaCount`; its `replicas`, else 1, without one)
//!   plus the rollout's `maxSurge` at that size (rounded up, as the
//!   Deployment controller does), each pod with its `DB_MAX_CONNECTIONS`
//!   (as the container gets it: env, ConfigMap, or the service's default).
//! - A Job counts `parallelism` pods; `api migrate` holds one connection
//!   (its pool is fixed at 1, whatever DB_MAX_CONNECTIONS says).
//! - Postgres keeps `superuser_reserved_connections` (default 3) and
//!   `reserved_connections` (default 0) from everyone else.
//!
//! `max_connections` comes from the overlay: a Postgres container's
//! `-c max_connections=N` argument, or, for a managed server, the ConfigMap
//! `postgres-server` that declares its settings.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde_json::Value;

use super::manifest::{Role, count, each, id, kind, name, of_kind, pod_spec, setting, surge};
use super::policy::autoscalers_of;

/// The ConfigMap that declares a managed server's settings.
pub(super) const SERVER_CONFIG_MAP: &str = "postgres-server";

/// One workload's share.
#[derive(Debug)]
pub(super) struct Share {
    /// `Kind/name container`.
    pub what: String,
    /// Most pods at once.
    pub pods: u64,
    /// How `pods` was found.
    pub pods_from: String,
    /// Most connections per pod.
    pub per_pod: u64,
    /// How `per_pod` was found.
    pub per_pod_from: String,
}

/// The server's limit.
#[derive(Debug)]
pub(super) struct Limit {
    pub max_connections: u64,
    /// `superuser_reserved_connections`.
    pub superuser_reserved: u64,
    /// `reserved_connections`.
    pub reserved: u64,
    /// Where it was read.
    pub from: String,
}

/// The whole budget.
#[derive(Debug)]
pub(super) struct Budget {
    /// Every pool.
    pub shares: Vec<Share>,
    /// What Postgres allows.
    pub limit: Limit,
}

impl Budget {
    /// Connections in use at worst, reserved slots included.
    pub(super) fn total(&self) -> u64 {
        self.shares.iter().map(|s| s.pods * s.per_pod).sum::<u64>()
            + self.limit.superuser_reserved
            + self.limit.reserved
    }

    /// Whether it fits.
    pub(super) fn fits(&self) -> bool {
        self.total() <= self.limit.max_connections
    }

    /// The arithmetic, one line per term.
    pub(super) fn report(&self) -> String {
        let mut out = format!(
            "Postgres connection budget (max_connections {}, from {}):\n",
            self.limit.max_connections, self.limit.from
        );
        for share in &self.shares {
            let _ = writeln!(
                out,
                "  {:<34} {:>3} pods ({}) x {:>3} ({}) = {}",
                share.what,
                share.pods,
                share.pods_from,
                share.per_pod,
                share.per_pod_from,
                share.pods * share.per_pod
            );
        }
        let _ = writeln!(
            out,
            "  {:<34} superuser_reserved_connections {} + reserved_connections {} = {}",
            "reserved by Postgres",
            self.limit.superuser_reserved,
            self.limit.reserved,
            self.limit.superuser_reserved + self.limit.reserved
        );
        let total = self.total();
        let max = self.limit.max_connections;
        if self.fits() {
            let _ = writeln!(out, "  total {total} <= {max} ({} to spare)", max - total);
        } else {
            let _ = writeln!(out, "  total {total} > {max}: OVER BUDGET by {}", total - max);
        }
        out
    }
}

/// Computes the budget of one rendered overlay.
pub(super) fn compute(docs: &[Value]) -> Result<Budget, String> {
    let mut shares = Vec::new();
    for doc in docs.iter().filter(|d| matches!(kind(d), "Deployment" | "StatefulSet" | "Job")) {
        let Some(spec) = pod_spec(doc) else { continue };
        for container in each(&spec["containers"]).filter(|c| Role::of(c).is_some()) {
            let what = format!("{} {}", id(doc), container["name"].as_str().unwrap_or("?"));
            let (per_pod, per_pod_from) = per_pod(docs, container).map_err(|e| format!("{what}: {e}"))?;
            let (pods, pods_from) = pods(docs, doc);
            shares.push(Share { what, pods, pods_from, per_pod, per_pod_from });
        }
    }
    Ok(Budget { shares, limit: limit(docs)? })
}

fn per_pod(docs: &[Value], container: &Value) -> Result<(u64, String), String> {
    let migrates = each(&container["args"]).any(|a| a == "migrate");
    if Role::of(container) == Some(Role::Api) && migrates {
        return Ok((1, "api migrate".to_owned()));
    }
    let found = setting(docs, container, "DB_MAX_CONNECTIONS").ok_or("DB_MAX_CONNECTIONS is not known")?;
    let value = found
        .value
        .parse::<u64>()
        .map_err(|_| format!("DB_MAX_CONNECTIONS={:?} is not a number", found.value))?;
    Ok((value, format!("DB_MAX_CONNECTIONS, {}", found.from)))
}

fn pods(docs: &[Value], doc: &Value) -> (u64, String) {
    match kind(doc) {
        "Deployment" => {
            let autoscalers = autoscalers_of(docs, name(doc));
            let (replicas, from) = match autoscalers.first() {
                Some((kind, name, _, max)) => (*max, format!("{kind}/{name} max")),
                None => (count(&doc["spec"]["replicas"]).unwrap_or(1), "replicas".to_owned()),
            };
            let strategy = &doc["spec"]["strategy"];
            let extra = if strategy["type"] == "Recreate" {
                0
            } else {
                let max_surge = &strategy["rollingUpdate"]["maxSurge"];
                let max_surge = if max_surge.is_null() { &Value::String("25%".into()) } else { max_surge };
                surge(max_surge, replicas).unwrap_or(replicas)
            };
            (replicas + extra, format!("{replicas} {from} + {extra} surge"))
        }
        "Job" => (count(&doc["spec"]["parallelism"]).unwrap_or(1), "parallelism".to_owned()),
        _ => (count(&doc["spec"]["replicas"]).unwrap_or(1), "replicas".to_owned()),
    }
}

/// Postgres's settings from a container's arguments (`-c key=value`,
/// `-ckey=value`, `--key=value`).
fn server_arguments(container: &Value) -> BTreeMap<String, String> {
    let args: Vec<&str> =
        each(&container["command"]).chain(each(&container["args"])).filter_map(Value::as_str).collect();
    let mut settings = BTreeMap::new();
    let mut index = 0;
    while index < args.len() {
        let pair = match args[index] {
            "-c" => {
                index += 1;
                args.get(index).copied()
            }
            other => other.strip_prefix("--").or_else(|| other.strip_prefix("-c")),
        };
        if let Some((key, value)) = pair.and_then(|p| p.split_once('=')) {
            settings.insert(key.replace('-', "_"), value.to_owned());
        }
        index += 1;
    }
    settings
}

fn limit(docs: &[Value]) -> Result<Limit, String> {
    let mut found: Vec<(BTreeMap<String, String>, String)> = Vec::new();
    for doc in docs.iter().filter(|d| matches!(kind(d), "Deployment" | "StatefulSet")) {
        let Some(spec) = pod_spec(doc) else { continue };
        for container in each(&spec["containers"]) {
            let image = container["image"].as_str().unwrap_or_default();
            let repository = image.rsplit('/').next().unwrap_or(image);
            if repository.starts_with("postgres:") || repository == "postgres" {
                found.push((server_arguments(container), format!("the arguments of {}", id(doc))));
            }
        }
    }
    for map in of_kind(docs, "ConfigMap").filter(|m| name(m) == SERVER_CONFIG_MAP) {
        let data = map["data"].as_object().into_iter().flatten();
        let settings = data.filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_owned()))).collect();
        found.push((settings, format!("ConfigMap {SERVER_CONFIG_MAP}")));
    }
    let (settings, from) = match found.len() {
        1 => found.remove(0),
        0 => {
            return Err(format!(
                "no Postgres max_connections is declared: run Postgres with `-c max_connections=N`, or \
                 declare the managed server's in a ConfigMap {SERVER_CONFIG_MAP}"
            ));
        }
        _ => return Err("more than one Postgres server is declared; the budget needs exactly one".to_owned()),
    };
    let number = |key: &str, default: Option<u64>| -> Result<u64, String> {
        match settings.get(key) {
            Some(v) => v.trim().parse().map_err(|_| format!("{key}={v:?} in {from} is not a number")),
            None => default.ok_or_else(|| format!("{from} does not set {key} explicitly")),
        }
    };
    Ok(Limit {
        max_connections: number("max_connections", None)?,
        superuser_reserved: number("superuser_reserved_connections", Some(3))?,
        reserved: number("reserved_connections", Some(0))?,
        from,
    })
}
