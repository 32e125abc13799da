//! The rules of `docker-compose.yml` that its schema cannot state:
//!
//! - Every service has a health check, except one-shot services (those
//!   another service waits for with `service_completed_successfully`).
//! - Every `depends_on` entry names an existing service and a condition,
//!   and no service that always starts waits for one behind a profile (the
//!   observability services): telemetry must never gate serving.
//! - `api` runs at least 3 replicas, with `RATE_LIMIT_REPLICAS` equal to
//!   that count, and trusts `X-Forwarded-For` from the network's subnet
//!   only; `worker`, where there is one, runs at least 2.
//! - No literal secrets: an environment variable whose name says it holds a
//!   secret (PASSWORD, SECRET, TOKEN, KEY…), and the password of any URL,
//!   must be `${VAR}` interpolations without a default.
//! - Our own containers (`api`, `worker`, `migrations`, `nginx`, and
//!   whatever is built here) are hardened: read-only root, tmpfs `/tmp`, no
//!   capabilities, `no-new-privileges`, a numeric non-root user.
//! - `nginx` mounts `infra/nginx` read-only.
//! - Every variable used without a default is in `.env.example`, and
//!   `.env.example` holds no variable the Compose file does not use.

use std::collections::{BTreeMap, BTreeSet};

use anyhow::Context;
use serde_norway::Value;

use super::dockerfile::numeric_non_root;

/// Services that must be hardened whenever they exist.
const OWN: &[&str] = &["api", "worker", "migrations", "nginx"];
/// Name segments of environment variables that hold secrets.
const SECRET_WORDS: &[&str] =
    &["PASSWORD", "PASSWD", "PASS", "SECRET", "TOKEN", "KEY", "CREDENTIALS", "AUTH"];
/// Variables whose names look secret but whose values are not.
const NOT_SECRET: &[&str] = &["RATE_LIMIT_KEY", "REDIS_KEY_PREFIX", "API_KEY_REFRESH"];
const CONDITIONS: &[&str] = &["service_started", "service_healthy", "service_completed_successfully"];

/// Every problem of the Compose file `text`, checked against `.env.example`.
pub(super) fn check(text: &str, env_example: &str) -> anyhow::Result<Vec<String>> {
    let mut doc: Value = serde_norway::from_str(text).context("parsing the YAML")?;
    doc.apply_merge().context("applying `<<` merge keys")?;
    let services = doc.get("services").and_then(Value::as_mapping).context("no `services`")?;
    let services: BTreeMap<String, &Value> =
        services.iter().filter_map(|(k, v)| Some((k.as_str()?.to_owned(), v))).collect();
    let mut problems = Vec::new();
    dependencies(&services, &mut problems);
    health_checks(&services, &mut problems);
    replicas(&services, &mut problems);
    trusted_proxies(&doc, &services, &mut problems);
    secrets(&services, &mut problems);
    hardening(&services, &mut problems);
    nginx_mount(&services, &mut problems);
    env_example_matches(&doc, env_example, &mut problems);
    Ok(problems)
}

fn str_of(value: &Value) -> Option<String> {
    match value {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

/// Services that others wait for with `service_completed_successfully`.
fn one_shots(services: &BTreeMap<String, &Value>) -> BTreeSet<String> {
    let mut found = BTreeSet::new();
    for service in services.values() {
        let Some(deps) = service.get("depends_on").and_then(Value::as_mapping) else { continue };
        for (name, dep) in deps {
            if dep.get("condition").and_then(Value::as_str) == Some("service_completed_successfully") {
                found.extend(name.as_str().map(str::to_owned));
            }
        }
    }
    found
}

fn dependencies(services: &BTreeMap<String, &Value>, problems: &mut Vec<String>) {
    for (name, service) in services {
        match service.get("depends_on") {
            None => {}
            Some(Value::Mapping(deps)) => {
                for (dep, spec) in deps {
                    let dep = dep.as_str().unwrap_or_default();
                    match services.get(dep) {
                        None => problems.push(format!("{name}: depends on `{dep}`, which is not a service")),
                        Some(other) if optional(other) && !optional(service) => problems.push(format!(
                            "{name}: depends on `{dep}`, which only starts with a profile; \
                             a service that always starts must not wait for an optional one"
                        )),
                        Some(_) => {}
                    }
                    let condition = spec.get("condition").and_then(Value::as_str);
                    if !condition.is_some_and(|c| CONDITIONS.contains(&c)) {
                        problems.push(format!(
                            "{name}: depends_on `{dep}` needs a condition ({})",
                            CONDITIONS.join(", ")
                        ));
                    }
                }
            }
            Some(_) => problems.push(format!(
                "{name}: depends_on in the short (list) form has no condition; use `NAME: {{condition: …}}`"
            )),
        }
    }
}

/// Whether a service starts only with a profile.
fn optional(service: &Value) -> bool {
    service.get("profiles").and_then(Value::as_sequence).is_some_and(|p| !p.is_empty())
}

fn health_checks(services: &BTreeMap<String, &Value>, problems: &mut Vec<String>) {
    let one_shots = one_shots(services);
    for (name, service) in services {
        if one_shots.contains(name) {
            continue;
        }
        let Some(check) = service.get("healthcheck") else {
            problems.push(format!("{name}: no healthcheck (only one-shot services may go without)"));
            continue;
        };
        let disabled = check.get("disable").and_then(Value::as_bool) == Some(true);
        let test: Vec<String> = match check.get("test") {
            Some(Value::Sequence(words)) => words.iter().filter_map(str_of).collect(),
            Some(value) => str_of(value).into_iter().collect(),
            None => Vec::new(),
        };
        if disabled || test.is_empty() || test.first().is_some_and(|t| t == "NONE") {
            problems.push(format!("{name}: the healthcheck is disabled or has no test"));
        }
    }
}

fn replica_count(service: &Value) -> Option<u64> {
    let replicas = service.get("deploy")?.get("replicas")?;
    replicas.as_u64().or_else(|| replicas.as_str()?.parse().ok())
}

/// The value of `key` in a service's environment (map or `KEY=VALUE` list).
fn env_value(service: &Value, key: &str) -> Option<String> {
    environment(service).into_iter().find(|(k, _)| k == key).map(|(_, v)| v)
}

/// A service's environment as pairs; a bare `KEY` (taken from the shell) has
/// an empty value.
fn environment(service: &Value) -> Vec<(String, String)> {
    match service.get("environment") {
        Some(Value::Mapping(map)) => map
            .iter()
            .filter_map(|(k, v)| Some((k.as_str()?.to_owned(), str_of(v).unwrap_or_default())))
            .collect(),
        Some(Value::Sequence(items)) => items
            .iter()
            .filter_map(Value::as_str)
            .map(|item| {
                let (k, v) = item.split_once('=').unwrap_or((item, ""));
                (k.to_owned(), v.to_owned())
            })
            .collect(),
        _ => Vec::new(),
    }
}

fn replicas(services: &BTreeMap<String, &Value>, problems: &mut Vec<String>) {
    let Some(api) = services.get("api") else {
        problems.push("no `api` service".to_owned());
        return;
    };
    let count = replica_count(api);
    if count.is_none_or(|n| n < 3) {
        problems.push(format!("api: deploy.replicas must be at least 3 (is {count:?})"));
    }
    let limit = env_value(api, "RATE_LIMIT_REPLICAS");
    if limit.as_deref().and_then(|l| l.parse::<u64>().ok()) != count {
        problems.push(format!("api: RATE_LIMIT_REPLICAS ({limit:?}) must equal deploy.replicas ({count:?})"));
    }
    if let Some(worker) = services.get("worker") {
        let count = replica_count(worker);
        if count.is_none_or(|n| n < 2) {
            problems.push(format!("worker: deploy.replicas must be at least 2 (is {count:?})"));
        }
    }
}

/// Every subnet declared under `networks.*.ipam.config`.
fn subnets(doc: &Value) -> BTreeSet<String> {
    let Some(networks) = doc.get("networks").and_then(Value::as_mapping) else { return BTreeSet::new() };
    networks
        .values()
        .filter_map(|n| n.get("ipam")?.get("config")?.as_sequence())
        .flatten()
        .filter_map(|c| c.get("subnet").and_then(str_of))
        .collect()
}

fn trusted_proxies(doc: &Value, services: &BTreeMap<String, &Value>, problems: &mut Vec<String>) {
    let Some(api) = services.get("api") else { return };
    let subnets = subnets(doc);
    let trusted = env_value(api, "TRUSTED_PROXIES").unwrap_or_default();
    let entries: Vec<&str> = trusted.split(',').map(str::trim).filter(|s| !s.is_empty()).collect();
    if entries.is_empty() || entries.iter().any(|e| !subnets.contains(*e)) {
        problems.push(format!(
            "api: TRUSTED_PROXIES ({trusted:?}) must list the Compose network's subnet (declared: {subnets:?})"
        ));
    }
}

/// Whether an environment variable's name says it holds a secret.
fn secret_name(key: &str) -> bool {
    let key = key.to_ascii_uppercase();
    !NOT_SECRET.contains(&key.as_str())
        && !key.ends_with("_FILE")
        && key.split('_').any(|word| SECRET_WORDS.contains(&word))
}

fn secrets(services: &BTreeMap<String, &Value>, problems: &mut Vec<String>) {
    for (name, service) in services {
        for (key, value) in environment(service) {
            if secret_name(&key) && !value.is_empty() && !interpolated_only(&value) {
                problems.push(format!(
                    "{name}: {key} holds a literal secret; use ${{VAR}} (no default) and put VAR in .env"
                ));
            }
            if let Some(password) = url_password(&value)
                && !interpolated_only(&password)
            {
                problems.push(format!(
                    "{name}: {key} is a URL with a literal password; use ${{VAR}} (no default) for it"
                ));
            }
        }
    }
}

/// The password of a `scheme://user:password@host…` URL.
fn url_password(value: &str) -> Option<String> {
    // Interpolations may hold `/`, `:` or `@` (in a `:?message`): mask them
    // first, so they cannot end the authority early.
    let (masked, interpolations) = mask(value);
    let (_, rest) = masked.split_once("://")?;
    let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
    let (userinfo, _) = authority.rsplit_once('@')?;
    let (_, password) = userinfo.split_once(':')?;
    // `password` is a slice of `masked`: the masks before it number the
    // interpolations before it.
    let start = password.as_ptr() as usize - masked.as_ptr() as usize;
    let mut index = masked[..start].matches(MASK).count();
    let mut unmasked = String::new();
    for c in password.chars() {
        if c == MASK {
            unmasked.push_str(&interpolations[index].raw);
            index += 1;
        } else {
            unmasked.push(c);
        }
    }
    Some(unmasked)
}

/// Whether `value` is nothing but interpolations, none with a default.
fn interpolated_only(value: &str) -> bool {
    let (masked, interpolations) = mask(value);
    !interpolations.is_empty()
        && masked.chars().all(|c| c == MASK)
        && interpolations.iter().all(|i| matches!(i.kind, Kind::Required))
}

const MASK: char = '\u{1}';

/// How an interpolation treats an unset variable.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Kind {
    /// `$VAR`, `${VAR}`, `${VAR:?message}`: the value, or nothing, or an error.
    Required,
    /// `${VAR:-default}`, `${VAR-default}`, `${VAR:+alt}`, `${VAR+alt}`.
    Defaulted,
}

#[derive(Debug, Clone)]
struct Interpolation {
    name: String,
    kind: Kind,
    raw: String,
}

/// `value` with each interpolation replaced by [`MASK`], and the
/// interpolations in order. `$$` is a literal `$`.
fn mask(value: &str) -> (String, Vec<Interpolation>) {
    let mut masked = String::new();
    let mut found = Vec::new();
    let mut rest = value;
    while let Some(at) = rest.find('$') {
        masked.push_str(&rest[..at]);
        let after = &rest[at + 1..];
        if let Some(tail) = after.strip_prefix('$') {
            masked.push('$');
            rest = tail;
        } else if let Some(inner) = after.strip_prefix('{') {
            let end = closing_brace(inner).unwrap_or(inner.len());
            let body = &inner[..end];
            let name_len =
                body.find(|c: char| !(c.is_ascii_alphanumeric() || c == '_')).unwrap_or(body.len());
            let modifier = &body[name_len..];
            let kind = if modifier.is_empty() || modifier.starts_with(":?") || modifier.starts_with('?') {
                Kind::Required
            } else {
                Kind::Defaulted
            };
            found.push(Interpolation {
                name: body[..name_len].to_owned(),
                kind,
                raw: format!("${{{body}}}"),
            });
            masked.push(MASK);
            rest = inner.get(end + 1..).unwrap_or_default();
        } else {
            let len = after.find(|c: char| !(c.is_ascii_alphanumeric() || c == '_')).unwrap_or(after.len());
            if len == 0 {
                masked.push('$');
            } else {
                found.push(Interpolation {
                    name: after[..len].to_owned(),
                    kind: Kind::Required,
                    raw: format!("${}", &after[..len]),
                });
                masked.push(MASK);
            }
            rest = &after[len..];
        }
    }
    masked.push_str(rest);
    (masked, found)
}

/// The index of the `}` closing an interpolation whose body starts `text`
/// (defaults may hold interpolations of their own).
fn closing_brace(text: &str) -> Option<usize> {
    let mut depth = 0usize;
    for (i, c) in text.char_indices() {
        match c {
            '{' => depth += 1,
            '}' if depth == 0 => return Some(i),
            '}' => depth -= 1,
            _ => {}
        }
    }
    None
}

fn hardening(services: &BTreeMap<String, &Value>, problems: &mut Vec<String>) {
    for (name, service) in services {
        if !OWN.contains(&name.as_str()) && service.get("build").is_none() {
            continue;
        }
        let list = |key: &str| -> Vec<String> {
            match service.get(key) {
                Some(Value::Sequence(items)) => items.iter().filter_map(str_of).collect(),
                Some(value) => str_of(value).into_iter().collect(),
                None => Vec::new(),
            }
        };
        let mut missing = Vec::new();
        if service.get("read_only").and_then(Value::as_bool) != Some(true) {
            missing.push("read_only: true");
        }
        if !list("tmpfs").iter().any(|t| t == "/tmp" || t.starts_with("/tmp:")) {
            missing.push("tmpfs /tmp");
        }
        if !list("cap_drop").iter().any(|c| c == "ALL") {
            missing.push("cap_drop: [ALL]");
        }
        if !list("security_opt").iter().any(|o| o == "no-new-privileges:true" || o == "no-new-privileges") {
            missing.push("security_opt: no-new-privileges:true");
        }
        if !service.get("user").and_then(str_of).is_some_and(|u| numeric_non_root(&u)) {
            missing.push("a numeric non-root user (UID:GID)");
        }
        if !missing.is_empty() {
            problems.push(format!("{name}: not hardened; needs {}", missing.join(", ")));
        }
    }
}

/// The `(source, read_only)` of each bind mount of a service.
fn binds(service: &Value) -> Vec<(String, bool)> {
    let Some(volumes) = service.get("volumes").and_then(Value::as_sequence) else { return Vec::new() };
    volumes
        .iter()
        .filter_map(|volume| match volume {
            Value::String(short) => {
                let parts: Vec<&str> = short.split(':').collect();
                let read_only = parts.get(2).is_some_and(|mode| mode.split(',').any(|m| m == "ro"));
                Some((parts[0].to_owned(), read_only))
            }
            Value::Mapping(long) => {
                let source = long.get("source").and_then(Value::as_str)?.to_owned();
                let read_only = long.get("read_only").and_then(Value::as_bool) == Some(true);
                Some((source, read_only))
            }
            _ => None,
        })
        .collect()
}

fn nginx_mount(services: &BTreeMap<String, &Value>, problems: &mut Vec<String>) {
    let Some(nginx) = services.get("nginx") else {
        problems.push("no `nginx` service".to_owned());
        return;
    };
    let normal = |s: &str| s.trim_start_matches("./").trim_end_matches('/').to_owned();
    let mount = binds(nginx).into_iter().find(|(source, _)| normal(source) == "infra/nginx");
    match mount {
        None => problems.push("nginx: must mount ./infra/nginx (its config)".to_owned()),
        Some((_, false)) => problems.push("nginx: must mount ./infra/nginx read-only (`:ro`)".to_owned()),
        Some((_, true)) => {}
    }
}

/// Every string in the document, keys included.
fn strings<'a>(value: &'a Value, out: &mut Vec<&'a str>) {
    match value {
        Value::String(s) => out.push(s),
        Value::Sequence(items) => items.iter().for_each(|v| strings(v, out)),
        Value::Mapping(map) => map.iter().for_each(|(k, v)| {
            strings(k, out);
            strings(v, out);
        }),
        Value::Tagged(tagged) => strings(&tagged.value, out),
        _ => {}
    }
}

/// The variables `.env.example` sets.
fn example_variables(env_example: &str) -> BTreeSet<String> {
    crate::checks::env_pairs(env_example).into_iter().map(|(key, _)| key).collect()
}

fn env_example_matches(doc: &Value, env_example: &str, problems: &mut Vec<String>) {
    let mut all = Vec::new();
    strings(doc, &mut all);
    let mut used = BTreeSet::new();
    let mut required = BTreeSet::new();
    for interpolation in all.into_iter().flat_map(|s| mask(s).1) {
        if interpolation.kind == Kind::Required {
            required.insert(interpolation.name.clone());
        }
        used.insert(interpolation.name);
    }
    let example = example_variables(env_example);
    for name in required.difference(&example) {
        problems.push(format!("${{{name}}} has no default and is missing from .env.example"));
    }
    for name in example.difference(&used) {
        problems.push(format!(".env.example sets {name}, which the Compose file does not use"));
    }
}

#[cfg(test)]
mod tests;
