//! `cargo xtask lint-observability` (also part of `ci`): static checks of the
//! observability stack in `infra/observability/`. Nothing here needs a
//! running Prometheus, Grafana or collector.
//!
//! - promtool checks the Prometheus config, the alert rules, and runs the
//!   rules' unit tests.
//! - yamllint checks the style of every YAML file.
//! - The Grafana dashboards are checked for structure, and every query is
//!   parsed by promtool (Grafana's variables replaced by values Prometheus
//!   accepts).
//! - Every metric the alerts, their tests and the dashboards read must be
//!   one the services expose ([`METRICS`]), so a typo fails here instead of
//!   drawing an empty panel or an alert that can never fire.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, bail, ensure};
use serde_json::{Value, json};

use crate::cmd;
use crate::tools::{self, PROMTOOL, YAMLLINT};

/// Where the stack lives, from the root.
const DIR: &str = "infra/observability";

/// Every metric the services expose, as Prometheus names them. Histograms are
/// listed by their base name and read as `_bucket`, `_sum` and `_count`
/// (see [`HISTOGRAMS`]). Add a metric here when a service starts exposing it.
pub(super) const METRICS: &[&str] = &[
    "up",
    "build_info",
    "http_server_request_duration_seconds",
    "http_server_active_requests",
    "db_client_connections_usage",
    "db_client_connection_max",
    "db_client_connection_timeouts_total",
    "db_client_connection_wait_time_seconds",
    "rate_limit_decisions_total",
    "rate_limit_backend",
    "otel_sdk_spans_exported_total",
    "otel_sdk_spans_dropped_total",
{% if redis %}    "redis_circuit_state",
    "cache_requests_total",
    "cache_fills_total",
    "cache_loads_total",
    "cache_invalidations_deferred_total",
{% endif %}{% if worker %}    "outbox_pending",
    "outbox_lag_seconds",
    "outbox_published_total",
    "outbox_publish_failures_total",
    "outbox_relay_restarts_total",
    "amqp_connected",
    "amqp_reconnects_total",
    "jobs_processed_total",
    "jobs_redelivered_total",
    "jobs_in_flight",
    "job_duration_seconds",
    "jobs_dead_lettered_total",
    "jobs_oldest_queued_age_seconds",
    "messaging_queue_depth",
    "messaging_queue_consumers",
{% endif %}];

/// The histograms among [`METRICS`]: Prometheus has no series by their bare
/// name, only `_bucket`, `_sum` and `_count`.
const HISTOGRAMS: &[&str] = &[
    "http_server_request_duration_seconds",
    "db_client_connection_wait_time_seconds",
{% if worker %}    "job_duration_seconds",
{% endif %}];

/// The series a histogram is read through.
const HISTOGRAM_SUFFIXES: &[&str] = &["_bucket", "_sum", "_count"];

/// What the services' metric names start with. Only identifiers with one of
/// these prefixes (or `up`) are taken as metric names: the rest of an
/// expression (functions, keywords, recording rules) is not ours to check.
const PREFIXES: &[&str] = &[
    "http_",
    "db_",
    "cache_",
    "rate_limit_",
    "redis_",
    "outbox_",
    "amqp_",
    "jobs_",
    "job_",
    "messaging_",
    "otel_",
    "build_",
];

/// PromQL keywords followed by a parenthesised list of label names, not by
/// an expression.
const LABEL_LIST_KEYWORDS: &[&str] = &["by", "without", "on", "ignoring", "group_left", "group_right"];

/// Runs every check on `root`'s `infra/observability`, if it has one.
pub(crate) fn lint_observability(root: &Path) -> anyhow::Result<()> {
    let dir = root.join(DIR);
    if !dir.is_dir() {
        return Ok(());
    }
    tools::ensure(&[PROMTOOL, YAMLLINT])?;
    let prometheus = dir.join("prometheus");
    // `check config` also checks the rule files the config names.
    cmd::run(Command::new("promtool").arg("check").arg("config").arg(prometheus.join("prometheus.yml")))?;
    cmd::run(Command::new("promtool").args(["check", "rules"]).arg(prometheus.join("alerts.yml")))?;
    cmd::run(Command::new("promtool").args(["test", "rules"]).arg(prometheus.join("alerts.test.yml")))?;
    cmd::run(Command::new("yamllint").arg("--strict").arg("-c").arg(dir.join(".yamllint")).arg(&dir))?;

    let mut problems = Vec::new();
    check_alerts(&prometheus, &mut problems)?;
    let queries = check_dashboards(&dir.join("grafana/dashboards"), &mut problems)?;
    if let Err(err) = check_queries_parse(&queries) {
        problems.push(format!("{err:#}"));
    }
    if !problems.is_empty() {
        bail!("{DIR} has {} problems:\n  {}", problems.len(), problems.join("\n  "));
    }
    Ok(())
}

/// Every alert is complete and has a test in which it fires, every test is
/// about an alert that exists, and every metric read is a known one.
fn check_alerts(prometheus: &Path, problems: &mut Vec<String>) -> anyhow::Result<()> {
    let rules = read_yaml(&prometheus.join("alerts.yml"))?;
    let mut alerts = BTreeSet::new();
    for rule in each(&rules["groups"]).flat_map(|group| each(&group["rules"])) {
        let expr = rule["expr"].as_str().unwrap_or_default();
        if let Some(alert) = rule["alert"].as_str() {
            alerts.insert(alert.to_owned());
            let incomplete = rule["for"].as_str().is_none()
                || rule["labels"]["severity"].as_str().is_none()
                || rule["annotations"]["summary"].as_str().is_none()
                || rule["annotations"]["description"].as_str().is_none();
            if incomplete {
                problems.push(format!(
                    "alerts.yml: alert {alert} needs `for`, a `severity` label, and `summary` and \
                     `description` annotations"
                ));
            }
        }
        let name = rule["alert"].as_str().or(rule["record"].as_str()).unwrap_or("?");
        check_metrics(&format!("alerts.yml: {name}"), expr, problems);
    }

    let tests = read_yaml(&prometheus.join("alerts.test.yml"))?;
    let mut proven = BTreeSet::new();
    for (index, test) in each(&tests["tests"]).enumerate() {
        let at = format!("alerts.test.yml: test {}", index + 1);
        for input in each(&test["input_series"]) {
            check_metrics(&at, input["series"].as_str().unwrap_or_default(), problems);
        }
        for case in each(&test["alert_rule_test"]) {
            let alert = case["alertname"].as_str().unwrap_or_default();
            if !alerts.contains(alert) {
                // promtool passes a test that expects no alert from a rule
                // that does not exist.
                problems.push(format!("{at}: there is no alert named {alert:?} in alerts.yml"));
            }
            if case["exp_alerts"].as_array().is_some_and(|a| !a.is_empty()) {
                proven.insert(alert.to_owned());
            }
        }
    }
    for alert in alerts.difference(&proven) {
        problems.push(format!("alerts.test.yml: no test shows alert {alert} firing"));
    }
    Ok(())
}

/// One dashboard query, for [`check_queries_parse`].
struct Query {
    /// Where it comes from, for messages.
    origin: String,
    /// The expression, Grafana's variables replaced.
    expr: String,
}

/// Checks the structure of every dashboard and the metrics its queries
/// read; returns the queries.
fn check_dashboards(dir: &Path, problems: &mut Vec<String>) -> anyhow::Result<Vec<Query>> {
    let mut queries = Vec::new();
    let mut uids: BTreeMap<String, String> = BTreeMap::new();
    for path in json_files(dir) {
        let file = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        let text = std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
        let board: Value = match serde_json::from_str(&text) {
            Ok(board) => board,
            Err(err) => {
                problems.push(format!("{file}: not valid JSON: {err}"));
                continue;
            }
        };
        if board["title"].as_str().is_none_or(str::is_empty) {
            problems.push(format!("{file}: no title"));
        }
        match board["uid"].as_str().filter(|u| !u.is_empty()) {
            None => problems.push(format!("{file}: no uid")),
            Some(uid) => {
                if let Some(other) = uids.insert(uid.to_owned(), file.clone()) {
                    problems.push(format!("{file}: uid {uid:?} is also the uid of {other}"));
                }
            }
        }
        if board["schemaVersion"].as_u64().is_none_or(|v| v < 39) {
            problems.push(format!("{file}: schemaVersion must be 39 or later"));
        }
        for variable in each(&board["templating"]["list"]) {
            let query =
                variable["query"]["query"].as_str().or(variable["query"].as_str()).unwrap_or_default();
            let name = variable["name"].as_str().unwrap_or("?");
            check_metrics(&format!("{file}: variable {name}"), query, problems);
        }
        let mut ids = BTreeSet::new();
        for panel in panels(&board["panels"]) {
            let title = panel["title"].as_str().unwrap_or_default();
            let at = format!("{file}: panel {} {title:?}", panel["id"]);
            match panel["id"].as_u64() {
                None => problems.push(format!("{at}: no numeric id")),
                Some(id) if !ids.insert(id) => problems.push(format!("{at}: the id is used twice")),
                Some(_) => {}
            }
            if !["h", "w", "x", "y"].iter().all(|k| panel["gridPos"][k].is_u64()) {
                problems.push(format!("{at}: gridPos needs h, w, x and y"));
            }
            if panel["type"] == "row" {
                continue;
            }
            if panel["datasource"].is_null() {
                problems.push(format!("{at}: no datasource"));
            }
            let mut exprs = 0;
            for target in each(&panel["targets"]) {
                let Some(expr) = target["expr"].as_str().filter(|e| !e.trim().is_empty()) else { continue };
                exprs += 1;
                let origin = format!("{at}, query {}", target["refId"].as_str().unwrap_or("?"));
                check_metrics(&origin, expr, problems);
                queries.push(Query { origin, expr: substitute_variables(expr) });
            }
            if exprs == 0 {
                problems.push(format!("{at}: no target with an expr"));
            }
        }
    }
    Ok(queries)
}

/// Parses every dashboard query with promtool, as one recording rule per
/// query in a rule file of its own. Each rule sits in a group named after
/// the query's origin, which promtool's error message quotes; each records
/// a name of its own, or promtool's lint would take two panels showing the
/// same query for duplicate rules.
fn check_queries_parse(queries: &[Query]) -> anyhow::Result<()> {
    if queries.is_empty() {
        return Ok(());
    }
    let groups: Vec<Value> = queries
        .iter()
        .enumerate()
        .map(|(i, q)| json!({ "name": q.origin, "rules": [{ "record": format!("query_{i}"), "expr": q.expr }] }))
        .collect();
    let scratch = cmd::target_dir().join("observability");
    std::fs::create_dir_all(&scratch)?;
    // JSON is YAML: no YAML writer needed.
    let file = scratch.join("dashboard-queries.yml");
    std::fs::write(&file, serde_json::to_string_pretty(&json!({ "groups": groups }))?)?;
    cmd::run(Command::new("promtool").args(["check", "rules"]).arg(&file)).context(
        "a dashboard query is not valid PromQL (the group promtool names is the dashboard, panel and query)",
    )
}

/// Reports every identifier of `expr` that looks like one of the services'
/// metrics but is not one.
fn check_metrics(origin: &str, expr: &str, problems: &mut Vec<String>) {
    for name in metric_names(expr).into_iter().collect::<BTreeSet<_>>() {
        if !is_known_metric(&name) {
            problems.push(format!("{origin}: unknown metric {name} (known ones are listed in METRICS)"));
        }
    }
}

/// Whether Prometheus has series named `name`.
fn is_known_metric(name: &str) -> bool {
    if let Some(base) = HISTOGRAM_SUFFIXES
        .iter()
        .find_map(|suffix| name.strip_suffix(suffix))
        .filter(|b| HISTOGRAMS.contains(b))
    {
        return METRICS.contains(&base);
    }
    METRICS.contains(&name) && !HISTOGRAMS.contains(&name)
}

/// The metric names `expr` reads: identifiers outside label matchers,
/// strings, range selectors and label lists (`by (…)`, `on (…)`, …), not
/// called as functions, and looking like the services' metrics
/// ([`PREFIXES`], or `up`).
fn metric_names(expr: &str) -> Vec<String> {
    let chars: Vec<char> = expr.chars().collect();
    let mut names = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        match c {
            '"' | '\'' | '`' => i = skip_string(&chars, i),
            '{' => i = skip_until(&chars, i, '}'),
            '[' => i = skip_until(&chars, i, ']'),
            '#' => i = chars[i..].iter().position(|&c| c == '\n').map_or(chars.len(), |p| i + p),
            // Numbers and durations (`0.99`, `1e3`, `5m`), so their letters
            // are not read as identifiers.
            c if c.is_ascii_digit() || (c == '.' && chars.get(i + 1).is_some_and(char::is_ascii_digit)) => {
                while i < chars.len() && (chars[i].is_ascii_alphanumeric() || matches!(chars[i], '.' | '_')) {
                    i += 1;
                }
            }
            c if c.is_ascii_alphabetic() || c == '_' || c == ':' => {
                let start = i;
                while i < chars.len() && (chars[i].is_ascii_alphanumeric() || matches!(chars[i], '_' | ':')) {
                    i += 1;
                }
                let ident: String = chars[start..i].iter().collect();
                let next = chars[i..].iter().position(|c| !c.is_whitespace()).map(|p| i + p);
                let called = next.is_some_and(|n| chars[n] == '(');
                if called && LABEL_LIST_KEYWORDS.contains(&ident.as_str()) {
                    i = next.map_or(i, |n| skip_until(&chars, n, ')'));
                } else if !called && (ident == "up" || PREFIXES.iter().any(|p| ident.starts_with(p))) {
                    names.push(ident);
                }
            }
            _ => i += 1,
        }
    }
    names
}

/// The index just past the string that starts at `start`.
fn skip_string(chars: &[char], start: usize) -> usize {
    let quote = chars[start];
    let mut i = start + 1;
    while i < chars.len() {
        match chars[i] {
            // Raw (backtick) strings have no escapes.
            '\\' if quote != '`' => i += 2,
            c if c == quote => return i + 1,
            _ => i += 1,
        }
    }
    chars.len()
}

/// The index just past the `close` that ends what starts at `start`,
/// stepping over strings (a label value may hold `}`).
fn skip_until(chars: &[char], start: usize, close: char) -> usize {
    let mut i = start + 1;
    while i < chars.len() {
        match chars[i] {
            '"' | '\'' | '`' => i = skip_string(chars, i),
            c if c == close => return i + 1,
            _ => i += 1,
        }
    }
    chars.len()
}

/// `expr` with Grafana's variables (`$name`, `${name}`, `${name:format}`,
/// `[[name]]`) replaced by what Prometheus accepts in their place: a
/// 5-minute window for the interval variables, and `.*` for any other
/// (dashboard variables stand in regex label matchers, `=~"$instance"`).
fn substitute_variables(expr: &str) -> String {
    fn value(name: &str) -> &'static str {
        match name {
            "__rate_interval" | "__interval" | "__range" => "5m",
            "__interval_ms" | "__range_ms" => "300000",
            "__range_s" => "300",
            _ => ".*",
        }
    }
    let is_name = |c: char| c.is_ascii_alphanumeric() || c == '_';
    let mut out = String::with_capacity(expr.len());
    let mut rest = expr;
    while let Some(at) = rest.find(['$', '[']) {
        out.push_str(&rest[..at]);
        let tail = &rest[at..];
        let braced = tail.strip_prefix("${").and_then(|t| t.split_once('}'));
        let bracketed = tail.strip_prefix("[[").and_then(|t| t.split_once("]]"));
        if let Some((inner, after)) = braced.or(bracketed).filter(|(inner, _)| {
            let name = inner.split(':').next().unwrap_or_default();
            !name.is_empty() && name.chars().all(is_name)
        }) {
            out.push_str(value(inner.split(':').next().unwrap_or_default()));
            rest = after;
        } else if let Some(name) =
            tail.strip_prefix('$').map(|t| &t[..t.find(|c| !is_name(c)).unwrap_or(t.len())])
            && !name.is_empty()
        {
            out.push_str(value(name));
            rest = &tail[1 + name.len()..];
        } else {
            out.push_str(&tail[..1]);
            rest = &tail[1..];
        }
    }
    out.push_str(rest);
    out
}

/// The elements of a JSON array (none for anything else).
fn each(value: &Value) -> impl Iterator<Item = &Value> {
    value.as_array().into_iter().flatten()
}

/// Every panel, including those inside collapsed rows.
fn panels(list: &Value) -> Vec<&Value> {
    let mut out = Vec::new();
    for panel in each(list) {
        out.push(panel);
        out.extend(panels(&panel["panels"]));
    }
    out
}

/// The `.json` files directly in `dir`, sorted (none if it does not exist).
fn json_files(dir: &Path) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir) else { return Vec::new() };
    let mut files: Vec<PathBuf> = entries
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .collect();
    files.sort();
    files
}

/// Reads a YAML file as JSON, through Python's PyYAML, which yamllint
/// depends on and so is always there by now: that spares xtask a YAML
/// parser of its own.
fn read_yaml(path: &Path) -> anyhow::Result<Value> {
    const TO_JSON: &str = "import json, sys, yaml; json.dump(yaml.safe_load(open(sys.argv[1])), sys.stdout)";
    let output = Command::new("python3")
        .args(["-c", TO_JSON])
        .arg(path)
        .output()
        .with_context(|| format!("running python3 to read {}", path.display()))?;
    ensure!(
        output.status.success(),
        "reading {} with PyYAML failed: {}",
        path.display(),
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).with_context(|| format!("reading {} as JSON", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metric_names_skip_functions_labels_strings_and_durations() {
        let expr = r#"histogram_quantile(0.99, sum by (http_route, le) (rate(http_server_request_duration_seconds_bucket{http_route!~"/healthz|db_x", instance=~"$instance"}[5m])))"#;
        assert_eq!(metric_names(expr), ["http_server_request_duration_seconds_bucket"]);
        let expr =
            "db_client_connections_usage{state=\"used\"} / ignoring (state) db_client_connection_max > 0.9";
        assert_eq!(metric_names(expr), ["db_client_connections_usage", "db_client_connection_max"]);
        let expr =
            "sum(rate(http_x_total[5m])) without (db_label) or absent(up{job=\"w\"} == 1) # cache_note";
        assert_eq!(metric_names(expr), ["http_x_total", "up"]);
        assert_eq!(metric_names("label_values(up{job=~\"api|worker\"}, instance)"), ["up"]);
        assert!(metric_names("job:http_server_request_errors:ratio_rate5m > 1e3").is_empty());
    }

    #[test]
    fn only_the_exposed_series_of_known_metrics_pass() {
        assert!(is_known_metric("up"));
        assert!(is_known_metric("db_client_connection_timeouts_total"));
        assert!(is_known_metric("http_server_request_duration_seconds_bucket"));
        assert!(is_known_metric("http_server_request_duration_seconds_count"));
        // A histogram has no series by its bare name; counters only with `_total`.
        assert!(!is_known_metric("http_server_request_duration_seconds"));
        assert!(!is_known_metric("db_client_connection_timeouts"));
        assert!(!is_known_metric("http_server_active_requests_count"));
        assert!(!is_known_metric("http_server_request_duraton_seconds_count"));
    }

    #[test]
    fn typos_are_reported_with_where_they_come_from() {
        let mut problems = Vec::new();
        check_metrics("api.json: panel 3", "sum(rate(http_server_requests_total[5m]))", &mut problems);
        check_metrics("api.json: panel 4", "sum(http_server_active_requests)", &mut problems);
        assert_eq!(
            problems,
            [
                "api.json: panel 3: unknown metric http_server_requests_total (known ones are listed in METRICS)"
            ]
        );
    }

    #[test]
    fn grafana_variables_become_values_prometheus_accepts() {
        assert_eq!(
            substitute_variables(r#"rate(x{instance=~"$instance"}[$__rate_interval])"#),
            r#"rate(x{instance=~".*"}[5m])"#
        );
        assert_eq!(
            substitute_variables(r#"increase(x{a=~"${service:regex}", b=~"[[b]]"}[${__range}])"#),
            r#"increase(x{a=~".*", b=~".*"}[5m])"#
        );
        assert_eq!(substitute_variables("x[$__interval] offset $__range"), "x[5m] offset 5m");
        // Regex syntax and `$1`-style text are left alone.
        assert_eq!(substitute_variables(r#"x{a=~"[0-9]+$"} [5m]"#), r#"x{a=~"[0-9]+$"} [5m]"#);
    }

    #[test]
    fn panels_in_collapsed_rows_are_found() {
        let board = json!([{ "id": 1, "type": "row", "panels": [{ "id": 2 }] }, { "id": 3 }]);
        let ids: Vec<u64> = panels(&board).iter().filter_map(|p| p["id"].as_u64()).collect();
        assert_eq!(ids, [1, 2, 3]);
    }
}
