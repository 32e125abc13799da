//! The policies every rendered overlay must meet. Each check adds a line
//! per violation to `problems`; none needs a cluster.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::Value;

use super::manifest::{
    Role, containers, count, duration_ms, each, id, name, nginx_size, of_kind, pod_labels, pod_spec, setting,
};

/// Volume types Pod Security "restricted" allows.
const RESTRICTED_VOLUMES: &[&str] = &[
    "configMap",
    "csi",
    "downwardAPI",
    "emptyDir",
    "ephemeral",
    "persistentVolumeClaim",
    "projected",
    "secret",
];

/// The only capability "restricted" lets a container add.
const ADDABLE_CAPABILITY: &str = "NET_BIND_SERVICE";

/// What the services take after their drain, before they exit: the
/// telemetry flush (`telemetry::FLUSH_BOUND`), in milliseconds.
pub(super) const EXIT_MARGIN_MS: u64 = 5_000;

/// The only paths the Ingress may route: the API, its docs and its schema.
/// Never /metrics, /healthz or /readyz.
pub(super) const PUBLIC_PATHS: &[&str] = &["/v1", "/v2", "/docs", "/openapi.json"];

const NGINX: &str = "nginx.ingress.kubernetes.io/";

/// Placeholder values from the `secrets.env.example` files, by key.
pub(super) type Placeholders = BTreeMap<String, BTreeSet<String>>;

/// The metric names prometheus-adapter serves, by API.
#[derive(Debug, Default)]
pub(super) struct AdapterMetrics {
    /// custom.metrics.k8s.io (Pods and Object metrics).
    pub custom: BTreeSet<String>,
    /// external.metrics.k8s.io (External metrics).
    pub external: BTreeSet<String>,
}

/// Every policy, over one rendered overlay.
pub(super) fn check(docs: &[Value], placeholders: &Placeholders, adapter: &AdapterMetrics) -> Vec<String> {
    let mut problems = Vec::new();
    pod_security(docs, &mut problems);
    autoscaling(docs, &mut problems);
    disruption_budgets(docs, &mut problems);
    default_deny(docs, &mut problems);
    secrets(docs, placeholders, &mut problems);
    probes(docs, &mut problems);
    drain(docs, &mut problems);
    ingress(docs, &mut problems);
    adapter_metrics(docs, adapter, &mut problems);
    problems
}

/// Pod Security "restricted" for every pod template (Jobs and init
/// containers included), and more for our own images: a read-only root
/// filesystem and resource requests and limits.
pub(super) fn pod_security(docs: &[Value], problems: &mut Vec<String>) {
    for doc in docs {
        let Some(spec) = pod_spec(doc) else { continue };
        let at = id(doc);
        for field in ["hostNetwork", "hostPID", "hostIPC"] {
            if spec[field] == true {
                problems.push(format!("{at}: {field} is not allowed"));
            }
        }
        for volume in each(&spec["volumes"]) {
            let types =
                volume.as_object().into_iter().flatten().map(|(k, _)| k.as_str()).filter(|k| *k != "name");
            for volume_type in types.filter(|t| !RESTRICTED_VOLUMES.contains(t)) {
                problems.push(format!(
                    "{at}: volume {} is a {volume_type}, which Pod Security \"restricted\" refuses",
                    volume["name"].as_str().unwrap_or("?")
                ));
            }
        }
        let pod = &spec["securityContext"];
        if pod["runAsUser"] == 0 {
            problems.push(format!("{at}: the pod runs as root (runAsUser: 0)"));
        }
        for container in containers(spec) {
            container_security(&at, pod, container, problems);
        }
    }
}

fn container_security(at: &str, pod: &Value, container: &Value, problems: &mut Vec<String>) {
    let own = &container["securityContext"];
    let who = format!("{at} container {}", container["name"].as_str().unwrap_or("?"));
    let effective = |field: &str| if own[field].is_null() { &pod[field] } else { &own[field] };
    if effective("runAsNonRoot") != true {
        problems.push(format!("{who}: needs runAsNonRoot: true (pod or container)"));
    }
    if effective("runAsUser") == 0 {
        problems.push(format!("{who}: runs as root (runAsUser: 0)"));
    }
    if own["allowPrivilegeEscalation"] != false {
        problems.push(format!("{who}: needs allowPrivilegeEscalation: false"));
    }
    if own["privileged"] == true {
        problems.push(format!("{who}: is privileged"));
    }
    if !each(&own["capabilities"]["drop"]).any(|c| c == "ALL") {
        problems.push(format!("{who}: needs capabilities.drop: [ALL]"));
    }
    for added in each(&own["capabilities"]["add"]).filter(|c| *c != ADDABLE_CAPABILITY) {
        problems.push(format!("{who}: adds capability {added}; only {ADDABLE_CAPABILITY} is allowed"));
    }
    let seccomp = effective("seccompProfile")["type"].as_str();
    if !matches!(seccomp, Some("RuntimeDefault" | "Localhost")) {
        problems.push(format!(
            "{who}: needs seccompProfile type RuntimeDefault or Localhost (pod or container), has {}",
            seccomp.unwrap_or("none")
        ));
    }
    if Role::of(container).is_some() {
        if own["readOnlyRootFilesystem"] != true {
            problems.push(format!("{who}: our images run with readOnlyRootFilesystem: true"));
        }
        let resources = &container["resources"];
        for (section, resource) in
            [("requests", "cpu"), ("requests", "memory"), ("limits", "cpu"), ("limits", "memory")]
        {
            if resources[section][resource].is_null() {
                problems.push(format!("{who}: needs resources.{section}.{resource}"));
            }
        }
    }
}

/// The autoscaler targeting a Deployment: `(kind, name, min, max)` of each.
pub(super) fn autoscalers_of<'a>(docs: &'a [Value], deployment: &str) -> Vec<(&'a str, &'a str, u64, u64)> {
    let mut found = Vec::new();
    for hpa in of_kind(docs, "HorizontalPodAutoscaler") {
        let target = &hpa["spec"]["scaleTargetRef"];
        if target["kind"] == "Deployment" && target["name"] == deployment {
            let min = count(&hpa["spec"]["minReplicas"]).unwrap_or(1);
            let max = count(&hpa["spec"]["maxReplicas"]).unwrap_or(0);
            found.push(("HorizontalPodAutoscaler", name(hpa), min, max));
        }
    }
    for scaled in of_kind(docs, "ScaledObject") {
        let target = &scaled["spec"]["scaleTargetRef"];
        let target_kind = target["kind"].as_str().unwrap_or("Deployment");
        if target_kind == "Deployment" && target["name"] == deployment {
            // KEDA's defaults: 0 and 100.
            let min = count(&scaled["spec"]["minReplicaCount"]).unwrap_or(0);
            let max = count(&scaled["spec"]["maxReplicaCount"]).unwrap_or(100);
            found.push(("ScaledObject", name(scaled), min, max));
        }
    }
    found
}

/// An HPA exists; every autoscaler keeps at least two replicas and says how
/// fast to scale; every Deployment has exactly one autoscaler and no fixed
/// replica count.
pub(super) fn autoscaling(docs: &[Value], problems: &mut Vec<String>) {
    if of_kind(docs, "HorizontalPodAutoscaler").next().is_none() {
        problems.push("there is no HorizontalPodAutoscaler".to_owned());
    }
    for hpa in of_kind(docs, "HorizontalPodAutoscaler") {
        let behavior = &hpa["spec"]["behavior"];
        if behavior["scaleUp"].is_null() || behavior["scaleDown"].is_null() {
            problems.push(format!("{}: needs behavior.scaleUp and behavior.scaleDown", id(hpa)));
        }
    }
    for deployment in of_kind(docs, "Deployment") {
        let at = id(deployment);
        let autoscalers = autoscalers_of(docs, name(deployment));
        match autoscalers.as_slice() {
            [] => problems.push(format!("{at}: has no HorizontalPodAutoscaler or ScaledObject")),
            [(_, _, min, max)] => {
                if *min < 2 {
                    problems
                        .push(format!("{at}: its autoscaler's minimum is {min}; keep at least 2 replicas"));
                }
                if max < min {
                    problems.push(format!("{at}: its autoscaler's maximum {max} is below its minimum {min}"));
                }
            }
            many => problems.push(format!("{at}: {} autoscalers target it and would fight", many.len())),
        }
        if !deployment["spec"]["replicas"].is_null() {
            problems.push(format!("{at}: sets spec.replicas, which resets its autoscaler on every apply"));
        }
    }
}

/// A PodDisruptionBudget exists, and one covers every Deployment's pods.
pub(super) fn disruption_budgets(docs: &[Value], problems: &mut Vec<String>) {
    let budgets: Vec<&Value> = of_kind(docs, "PodDisruptionBudget").collect();
    if budgets.is_empty() {
        problems.push("there is no PodDisruptionBudget".to_owned());
    }
    for deployment in of_kind(docs, "Deployment") {
        let labels = pod_labels(deployment);
        let covered = budgets.iter().any(|budget| {
            let selector = &budget["spec"]["selector"];
            let wanted = selector["matchLabels"].as_object();
            selector["matchExpressions"].is_null()
                && wanted.is_some_and(|w| !w.is_empty() && w.iter().all(|(k, v)| &labels[k] == v))
        });
        if !covered {
            problems.push(format!("{}: no PodDisruptionBudget selects its pods", id(deployment)));
        }
    }
}

/// A NetworkPolicy that selects every pod and allows nothing either way.
pub(super) fn default_deny(docs: &[Value], problems: &mut Vec<String>) {
    let found = of_kind(docs, "NetworkPolicy").any(|policy| {
        let spec = &policy["spec"];
        let selector = &spec["podSelector"];
        let empty = |v: &Value| {
            v.is_null()
                || v.as_object().is_some_and(serde_json::Map::is_empty)
                || v.as_array().is_some_and(Vec::is_empty)
        };
        let everything = selector.is_null() || selector.as_object().is_some_and(|s| s.values().all(empty));
        let types: Vec<&str> = each(&spec["policyTypes"]).filter_map(Value::as_str).collect();
        let no_rules =
            |field: &str| spec[field].is_null() || spec[field].as_array().is_some_and(Vec::is_empty);
        everything
            && types.contains(&"Ingress")
            && types.contains(&"Egress")
            && no_rules("ingress")
            && no_rules("egress")
    });
    if !found {
        problems.push(
            "there is no default-deny NetworkPolicy (podSelector {}, policyTypes Ingress and Egress, no rules)"
                .to_owned(),
        );
    }
}

/// Every value of every Secret is empty or the placeholder the examples
/// give for its key: a real secret never gets into the manifests.
pub(super) fn secrets(docs: &[Value], placeholders: &Placeholders, problems: &mut Vec<String>) {
    for secret in of_kind(docs, "Secret") {
        let encoded = secret["data"].as_object().into_iter().flatten().map(|(key, value)| {
            let text = value.as_str().and_then(super::manifest::base64_decode).map(String::from_utf8);
            (key, text.and_then(Result::ok))
        });
        let plain = secret["stringData"]
            .as_object()
            .into_iter()
            .flatten()
            .map(|(key, value)| (key, value.as_str().map(str::to_owned)));
        for (key, value) in encoded.chain(plain) {
            let allowed = match &value {
                Some(v) => v.is_empty() || placeholders.get(key).is_some_and(|p| p.contains(v)),
                None => false,
            };
            if !allowed {
                problems.push(format!(
                    "{}: {key} holds a value that is not the placeholder of secrets.env.example; secrets \
                     must only come from the git-ignored secrets.env",
                    id(secret)
                ));
            }
        }
    }
}

/// Our containers' probes: readiness on /readyz, liveness (and startup) on
/// /healthz, which has no dependencies, so an outage never restarts pods.
pub(super) fn probes(docs: &[Value], problems: &mut Vec<String>) {
    for deployment in of_kind(docs, "Deployment") {
        let Some(spec) = pod_spec(deployment) else { continue };
        for container in each(&spec["containers"]).filter(|c| Role::of(c).is_some()) {
            let who = format!("{} container {}", id(deployment), container["name"].as_str().unwrap_or("?"));
            for (probe, path, required) in [
                ("readinessProbe", "/readyz", true),
                ("livenessProbe", "/healthz", true),
                ("startupProbe", "/healthz", false),
            ] {
                let actual = container[probe]["httpGet"]["path"].as_str();
                if actual.is_none() && !required && container[probe].is_null() {
                    continue;
                }
                if actual != Some(path) {
                    problems.push(format!("{who}: {probe} must be an HTTP GET of {path}, is {actual:?}"));
                }
            }
        }
    }
}

/// preStop sleep + SHUTDOWN_DELAY + SHUTDOWN_GRACE + the exit margin fit in
/// terminationGracePeriodSeconds, for every container of ours.
pub(super) fn drain(docs: &[Value], problems: &mut Vec<String>) {
    for deployment in of_kind(docs, "Deployment") {
        let Some(spec) = pod_spec(deployment) else { continue };
        let period_ms = count(&spec["terminationGracePeriodSeconds"]).unwrap_or(30) * 1_000;
        for container in each(&spec["containers"]).filter(|c| Role::of(c).is_some()) {
            let who = format!("{} container {}", id(deployment), container["name"].as_str().unwrap_or("?"));
            let pre_stop = &container["lifecycle"]["preStop"];
            let sleep_ms = if pre_stop.is_null() {
                0
            } else if let Some(seconds) = count(&pre_stop["sleep"]["seconds"]) {
                seconds * 1_000
            } else {
                problems
                    .push(format!("{who}: preStop must be the native sleep action (the image has no shell)"));
                continue;
            };
            let mut read = |key: &str| -> Option<u64> {
                let Some(found) = setting(docs, container, key) else { return Some(0) };
                let parsed = duration_ms(&found.value);
                if parsed.is_none() {
                    problems
                        .push(format!("{who}: {key}={:?} ({}) is not a duration", found.value, found.from));
                }
                parsed
            };
            let (Some(delay_ms), Some(grace_ms)) = (read("SHUTDOWN_DELAY"), read("SHUTDOWN_GRACE")) else {
                continue;
            };
            let needed = sleep_ms + delay_ms + grace_ms + EXIT_MARGIN_MS;
            if needed > period_ms {
                problems.push(format!(
                    "{who}: terminationGracePeriodSeconds {}s is shorter than preStop {}ms + SHUTDOWN_DELAY {}ms \
                     + SHUTDOWN_GRACE {}ms + {}ms to exit = {}ms",
                    period_ms / 1_000,
                    sleep_ms,
                    delay_ms,
                    grace_ms,
                    EXIT_MARGIN_MS,
                    needed
                ));
            }
        }
    }
}

/// The api's setting `key`, from the first Deployment running the api image.
fn api_setting(docs: &[Value], key: &str) -> Option<String> {
    of_kind(docs, "Deployment")
        .filter_map(pod_spec)
        .flat_map(|spec| each(&spec["containers"]))
        .find(|c| Role::of(c) == Some(Role::Api))
        .and_then(|c| setting(docs, c, key))
        .map(|s| s.value)
}

/// Ingresses are ingress-nginx ones that route only the public paths, with
/// the edge's limits: the api's body limit, a per-address rate limit, a
/// read timeout above the api's own, and no retries of non-idempotent
/// requests.
pub(super) fn ingress(docs: &[Value], problems: &mut Vec<String>) {
    let body_limit = api_setting(docs, "BODY_LIMIT_BYTES").and_then(|v| v.parse::<u64>().ok());
    let request_timeout_ms = api_setting(docs, "REQUEST_TIMEOUT").and_then(|v| duration_ms(&v));
    for ingress in of_kind(docs, "Ingress") {
        let at = id(ingress);
        if ingress["spec"]["ingressClassName"] != "nginx" {
            problems.push(format!("{at}: needs ingressClassName: nginx"));
        }
        if !ingress["spec"]["defaultBackend"].is_null() {
            problems.push(format!("{at}: a defaultBackend would route every path"));
        }
        for rule in each(&ingress["spec"]["rules"]) {
            for path in each(&rule["http"]["paths"]) {
                let route = path["path"].as_str().unwrap_or("/");
                if !PUBLIC_PATHS.contains(&route) {
                    problems
                        .push(format!("{at}: routes {route}; only {} are public", PUBLIC_PATHS.join(", ")));
                }
            }
        }
        let annotation = |key: &str| ingress["metadata"]["annotations"][format!("{NGINX}{key}")].as_str();
        match (annotation("proxy-body-size").and_then(nginx_size), body_limit) {
            (Some(edge), Some(api)) if edge == api => {}
            (edge, api) => problems.push(format!(
                "{at}: proxy-body-size ({edge:?} bytes) must equal the api's BODY_LIMIT_BYTES ({api:?})"
            )),
        }
        if annotation("limit-rps").and_then(|v| v.parse::<u64>().ok()).is_none() {
            problems.push(format!("{at}: needs a per-address {NGINX}limit-rps"));
        }
        let read_ms =
            annotation("proxy-read-timeout").and_then(|v| v.parse::<u64>().ok()).unwrap_or(60) * 1_000;
        if request_timeout_ms.is_some_and(|api| read_ms <= api) {
            problems.push(format!("{at}: proxy-read-timeout must exceed the api's REQUEST_TIMEOUT"));
        }
        if annotation("proxy-next-upstream").is_some_and(|v| v.contains("non_idempotent")) {
            problems.push(format!("{at}: proxy-next-upstream must not retry non-idempotent requests"));
        }
    }
}

/// Every custom or external metric an HPA asks for is one the adapter
/// rules serve.
pub(super) fn adapter_metrics(docs: &[Value], adapter: &AdapterMetrics, problems: &mut Vec<String>) {
    for hpa in of_kind(docs, "HorizontalPodAutoscaler") {
        for metric in each(&hpa["spec"]["metrics"]) {
            let (served, field) = match metric["type"].as_str() {
                Some("Pods") => (&adapter.custom, "pods"),
                Some("Object") => (&adapter.custom, "object"),
                Some("External") => (&adapter.external, "external"),
                _ => continue,
            };
            let wanted = metric[field]["metric"]["name"].as_str().unwrap_or_default();
            if !served.contains(wanted) {
                problems.push(format!(
                    "{}: metric {wanted} has no prometheus-adapter rule (prometheus-adapter/rules.yaml)",
                    id(hpa)
                ));
            }
        }
    }
}

/// The metric names the adapter rules (Helm values: `rules.custom` and
/// `rules.external`) serve; every series they read must be one of `known`
/// (histograms by their base name).
pub(super) fn adapter_rules(values: &Value, known: &[&str], problems: &mut Vec<String>) -> AdapterMetrics {
    let mut served = AdapterMetrics::default();
    for (list, names) in [("custom", &mut served.custom), ("external", &mut served.external)] {
        for rule in each(&values["rules"][list]) {
            let query = rule["seriesQuery"].as_str().unwrap_or_default();
            let series = query.trim_matches(['\'', '"', ' ']).split(['{', ' ']).next().unwrap_or_default();
            let base =
                ["_bucket", "_sum", "_count"].iter().find_map(|s| series.strip_suffix(s)).unwrap_or(series);
            if !known.contains(&series) && !known.contains(&base) {
                problems.push(format!(
                    "prometheus-adapter/rules.yaml: {series} is not a metric the services expose"
                ));
            }
            match rule["name"]["as"].as_str() {
                Some(name) => {
                    names.insert(name.to_owned());
                }
                None => problems
                    .push(format!("prometheus-adapter/rules.yaml: the rule for {series} needs name.as")),
            }
        }
    }
    served
}
