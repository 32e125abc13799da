//! Every policy and the budget pass on a good set of manifests and fail on
//! one that breaks them. No kubectl, no network: the manifests are inline.

use serde_json::{Value, json};

use super::budget;
use super::manifest::{self, parse_documents};
use super::policy::{self, AdapterMetrics, Placeholders};

/// A small but complete overlay, as kustomize would render it.
const GOOD: &str = r#"
apiVersion: v1
kind: ConfigMap
metadata: {name: api-config-abc, namespace: shop}
data:
  DB_MAX_CONNECTIONS: "5"
  SHUTDOWN_DELAY: 5s
  SHUTDOWN_GRACE: 20s
  BODY_LIMIT_BYTES: "65536"
  REQUEST_TIMEOUT: 10s
---
apiVersion: v1
kind: Secret
metadata: {name: app-secrets-abc, namespace: shop}
type: Opaque
data:
  DATABASE_URL: cG9zdGdyZXM6Ly9zaG9wOmNoYW5nZS1tZUBwb3N0Z3Jlcy9zaG9w
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: api, namespace: shop}
spec:
  selector: {matchLabels: {app.kubernetes.io/name: api}}
  strategy: {type: RollingUpdate, rollingUpdate: {maxSurge: 25%, maxUnavailable: 0}}
  template:
    metadata: {labels: {app.kubernetes.io/name: api}}
    spec:
      automountServiceAccountToken: false
      terminationGracePeriodSeconds: 45
      securityContext:
        runAsNonRoot: true
        runAsUser: 65532
        seccompProfile: {type: RuntimeDefault}
      initContainers:
        - name: wait
          image: registry.example.com/shop-api:1.0
          securityContext: &restricted
            runAsNonRoot: true
            readOnlyRootFilesystem: true
            allowPrivilegeEscalation: false
            capabilities: {drop: [ALL]}
          resources: &resources
            requests: {cpu: 50m, memory: 64Mi}
            limits: {cpu: 500m, memory: 128Mi}
      containers:
        - name: api
          image: registry.example.com/shop-api:1.0
          envFrom: [{configMapRef: {name: api-config-abc}}]
          env:
            - name: DATABASE_URL
              valueFrom: {secretKeyRef: {name: app-secrets-abc, key: DATABASE_URL}}
          lifecycle: {preStop: {sleep: {seconds: 5}}}
          readinessProbe: {httpGet: {path: /readyz, port: 8080}}
          livenessProbe: {httpGet: {path: /healthz, port: 8080}}
          startupProbe: {httpGet: {path: /healthz, port: 8080}}
          securityContext: *restricted
          resources: *resources
      volumes:
        - name: tmp
          emptyDir: {}
---
apiVersion: autoscaling/v2
kind: HorizontalPodAutoscaler
metadata: {name: api, namespace: shop}
spec:
  scaleTargetRef: {apiVersion: apps/v1, kind: Deployment, name: api}
  minReplicas: 2
  maxReplicas: 6
  metrics:
    - type: Pods
      pods:
        metric: {name: http_requests_per_second}
        target: {type: AverageValue, averageValue: "50"}
  behavior:
    scaleUp: {stabilizationWindowSeconds: 0}
    scaleDown: {stabilizationWindowSeconds: 300}
---
apiVersion: policy/v1
kind: PodDisruptionBudget
metadata: {name: api, namespace: shop}
spec:
  maxUnavailable: 1
  selector: {matchLabels: {app.kubernetes.io/name: api}}
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: default-deny, namespace: shop}
spec:
  podSelector: {}
  policyTypes: [Ingress, Egress]
---
apiVersion: batch/v1
kind: Job
metadata: {name: migrate, namespace: shop}
spec:
  template:
    spec:
      restartPolicy: Never
      securityContext:
        runAsNonRoot: true
        seccompProfile: {type: RuntimeDefault}
      containers:
        - name: migrate
          image: shop-api:1.0
          args: [migrate]
          envFrom: [{configMapRef: {name: api-config-abc}}]
          securityContext:
            runAsNonRoot: true
            readOnlyRootFilesystem: true
            allowPrivilegeEscalation: false
            capabilities: {drop: [ALL]}
          resources:
            requests: {cpu: 50m, memory: 64Mi}
            limits: {cpu: 500m, memory: 128Mi}
---
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata:
  name: api
  namespace: shop
  annotations:
    nginx.ingress.kubernetes.io/proxy-body-size: 64k
    nginx.ingress.kubernetes.io/limit-rps: "100"
    nginx.ingress.kubernetes.io/proxy-read-timeout: "15"
    nginx.ingress.kubernetes.io/proxy-next-upstream: error timeout http_502
spec:
  ingressClassName: nginx
  rules:
    - http:
        paths:
          - {path: /v1, pathType: Prefix, backend: {service: {name: api, port: {name: http}}}}
          - {path: /openapi.json, pathType: Exact, backend: {service: {name: api, port: {name: http}}}}
---
apiVersion: apps/v1
kind: StatefulSet
metadata: {name: postgres, namespace: shop}
spec:
  selector: {matchLabels: {app.kubernetes.io/name: postgres}}
  serviceName: postgres
  template:
    metadata: {labels: {app.kubernetes.io/name: postgres}}
    spec:
      securityContext:
        runAsNonRoot: true
        runAsUser: 999
        seccompProfile: {type: RuntimeDefault}
      containers:
        - name: postgres
          image: postgres:17-bookworm
          args: [-c, max_connections=50, -c, superuser_reserved_connections=3]
          securityContext:
            allowPrivilegeEscalation: false
            capabilities: {drop: [ALL]}
"#;

fn good() -> Vec<Value> {
    parse_documents(GOOD).expect("the good manifests parse")
}

fn placeholders() -> Placeholders {
    let mut map = Placeholders::new();
    map.entry("DATABASE_URL".into()).or_default().insert("postgres://shop:change-me@postgres/shop".into());
    map
}

fn adapter() -> AdapterMetrics {
    let mut served = AdapterMetrics::default();
    served.custom.insert("http_requests_per_second".into());
    served
}

fn problems(docs: &[Value]) -> Vec<String> {
    policy::check(docs, &placeholders(), &adapter())
}

/// The document of `kind` named `name`.
fn find<'a>(docs: &'a mut [Value], kind: &str, name: &str) -> &'a mut Value {
    docs.iter_mut()
        .find(|d| manifest::kind(d) == kind && manifest::name(d) == name)
        .unwrap_or_else(|| panic!("no {kind}/{name}"))
}

/// Sets the value at a JSON pointer (its parent must exist).
fn set(doc: &mut Value, pointer: &str, value: Value) {
    let (parent, key) = pointer.rsplit_once('/').expect("a pointer with a parent");
    let key = key.replace("~1", "/").replace("~0", "~");
    let parent = doc.pointer_mut(parent).unwrap_or_else(|| panic!("no {parent}"));
    match parent {
        Value::Object(map) => {
            map.insert(key, value);
        }
        Value::Array(items) => {
            let index = key.parse::<usize>().expect("an index");
            if index == items.len() {
                items.push(value);
            } else {
                items[index] = value;
            }
        }
        _ => panic!("{pointer}: the parent is neither an object nor an array"),
    }
}

fn remove(doc: &mut Value, pointer: &str) {
    let (parent, key) = pointer.rsplit_once('/').expect("a pointer with a parent");
    let key = key.replace("~1", "/").replace("~0", "~");
    doc.pointer_mut(parent).and_then(Value::as_object_mut).expect("an object").remove(&key);
}

/// Applies `change` to the good manifests and returns the problems found.
fn with(change: impl FnOnce(&mut Vec<Value>)) -> Vec<String> {
    let mut docs = good();
    change(&mut docs);
    problems(&docs)
}

#[track_caller]
fn fails_with(found: &[String], expected: &str) {
    assert!(
        found.iter().any(|p| p.contains(expected)),
        "expected a problem containing {expected:?}, got {found:#?}"
    );
}

const API_CONTAINER: &str = "/spec/template/spec/containers/0";

#[test]
fn the_good_manifests_meet_every_policy_and_fit_the_budget() {
    let docs = good();
    assert_eq!(problems(&docs), Vec::<String>::new());
    let budget = budget::compute(&docs).expect("a budget");
    // (6 + 2 surge) x 5 + migrate 1 + 3 reserved = 44 <= 50
    assert_eq!(budget.total(), 44);
    assert!(budget.fits(), "{}", budget.report());
}

#[test]
fn pod_security_restricted_is_required_of_every_container() {
    let cases: Vec<(&str, &str, &str, Value, &str)> = vec![
        ("Deployment", "api", "/securityContext/runAsNonRoot", json!(false), "runAsNonRoot"),
        (
            "Deployment",
            "api",
            "/securityContext/allowPrivilegeEscalation",
            json!(true),
            "allowPrivilegeEscalation",
        ),
        ("Deployment", "api", "/securityContext/capabilities", json!({"drop": ["NET_RAW"]}), "drop: [ALL]"),
        (
            "Deployment",
            "api",
            "/securityContext/capabilities",
            json!({"drop": ["ALL"], "add": ["SYS_ADMIN"]}),
            "SYS_ADMIN",
        ),
        ("Deployment", "api", "/securityContext/privileged", json!(true), "privileged"),
        ("Deployment", "api", "/securityContext/runAsUser", json!(0), "root"),
        (
            "Deployment",
            "api",
            "/securityContext/seccompProfile",
            json!({"type": "Unconfined"}),
            "seccompProfile",
        ),
        (
            "Deployment",
            "api",
            "/securityContext/readOnlyRootFilesystem",
            json!(false),
            "readOnlyRootFilesystem",
        ),
    ];
    for (kind, name, field, value, expected) in cases {
        let found = with(|docs| {
            let doc = find(docs, kind, name);
            set(doc, &format!("{API_CONTAINER}{field}"), value.clone());
        });
        fails_with(&found, expected);
    }
}

#[test]
fn init_and_job_containers_are_held_to_the_same_rules() {
    let found = with(|docs| {
        set(
            find(docs, "Deployment", "api"),
            "/spec/template/spec/initContainers/0/securityContext/allowPrivilegeEscalation",
            json!(true),
        );
    });
    fails_with(&found, "container wait: needs allowPrivilegeEscalation");
    let found = with(|docs| {
        remove(find(docs, "Job", "migrate"), "/spec/template/spec/containers/0/securityContext/capabilities");
    });
    fails_with(&found, "Job/migrate container migrate: needs capabilities.drop");
    // Third-party images need restricted too, though not a read-only root.
    let found = with(|docs| {
        remove(find(docs, "StatefulSet", "postgres"), "/spec/template/spec/securityContext/seccompProfile");
    });
    fails_with(&found, "StatefulSet/postgres container postgres: needs seccompProfile");
}

#[test]
fn seccomp_and_run_as_non_root_may_come_from_the_pod_or_the_container() {
    let found = with(|docs| {
        let api = find(docs, "Deployment", "api");
        remove(api, "/spec/template/spec/securityContext/seccompProfile");
        for container in ["initContainers/0", "containers/0"] {
            set(
                api,
                &format!("/spec/template/spec/{container}/securityContext/seccompProfile"),
                json!({"type": "Localhost", "localhostProfile": "p.json"}),
            );
        }
    });
    assert_eq!(found, Vec::<String>::new());
    let found = with(|docs| {
        let api = find(docs, "Deployment", "api");
        remove(api, "/spec/template/spec/securityContext/seccompProfile");
    });
    fails_with(&found, "Deployment/api container api: needs seccompProfile");
}

#[test]
fn host_namespaces_and_host_paths_are_refused() {
    for field in ["hostNetwork", "hostPID", "hostIPC"] {
        let found = with(|docs| {
            set(find(docs, "Deployment", "api"), &format!("/spec/template/spec/{field}"), json!(true));
        });
        fails_with(&found, &format!("{field} is not allowed"));
    }
    let found = with(|docs| {
        set(
            find(docs, "Deployment", "api"),
            "/spec/template/spec/volumes/0",
            json!({"name": "host", "hostPath": {"path": "/"}}),
        );
    });
    fails_with(&found, "volume host is a hostPath");
}

#[test]
fn our_containers_need_requests_and_limits() {
    let found = with(|docs| remove(find(docs, "Deployment", "api"), &format!("{API_CONTAINER}/resources")));
    fails_with(&found, "needs resources.requests.cpu");
}

#[test]
fn an_hpa_with_at_least_two_replicas_must_scale_every_deployment() {
    let found = with(|docs| docs.retain(|d| manifest::kind(d) != "HorizontalPodAutoscaler"));
    fails_with(&found, "there is no HorizontalPodAutoscaler");
    fails_with(&found, "Deployment/api: has no HorizontalPodAutoscaler or ScaledObject");
    let found = with(|docs| set(find(docs, "HorizontalPodAutoscaler", "api"), "/spec/minReplicas", json!(1)));
    fails_with(&found, "minimum is 1");
    let found = with(|docs| remove(find(docs, "HorizontalPodAutoscaler", "api"), "/spec/behavior"));
    fails_with(&found, "behavior.scaleUp");
    let found = with(|docs| set(find(docs, "Deployment", "api"), "/spec/replicas", json!(3)));
    fails_with(&found, "sets spec.replicas");
    // A KEDA ScaledObject counts as the autoscaler, with KEDA's default minimum of 0.
    let found = with(|docs| {
        docs.push(
            json!({"apiVersion": "keda.sh/v1alpha1", "kind": "ScaledObject", "metadata": {"name": "api"},
            "spec": {"scaleTargetRef": {"name": "api"}, "triggers": []}}),
        );
    });
    fails_with(&found, "2 autoscalers target it");
}

#[test]
fn a_pod_disruption_budget_must_cover_every_deployment() {
    let found = with(|docs| docs.retain(|d| manifest::kind(d) != "PodDisruptionBudget"));
    fails_with(&found, "there is no PodDisruptionBudget");
    let found = with(|docs| {
        set(
            find(docs, "PodDisruptionBudget", "api"),
            "/spec/selector/matchLabels",
            json!({"app.kubernetes.io/name": "web"}),
        );
    });
    fails_with(&found, "Deployment/api: no PodDisruptionBudget selects its pods");
}

#[test]
fn a_default_deny_network_policy_must_exist() {
    let found = with(|docs| docs.retain(|d| manifest::kind(d) != "NetworkPolicy"));
    fails_with(&found, "default-deny");
    let found = with(|docs| {
        set(find(docs, "NetworkPolicy", "default-deny"), "/spec/policyTypes", json!(["Ingress"]));
    });
    fails_with(&found, "default-deny");
    let found = with(|docs| set(find(docs, "NetworkPolicy", "default-deny"), "/spec/egress", json!([{}])));
    fails_with(&found, "default-deny");
    let found = with(|docs| {
        set(
            find(docs, "NetworkPolicy", "default-deny"),
            "/spec/podSelector",
            json!({"matchLabels": {"a": "b"}}),
        );
    });
    fails_with(&found, "default-deny");
}

#[test]
fn secrets_may_only_hold_the_examples_placeholders() {
    // "postgres://shop:hunter2@db/shop"
    let found = with(|docs| {
        set(
            find(docs, "Secret", "app-secrets-abc"),
            "/data/DATABASE_URL",
            json!("cG9zdGdyZXM6Ly9zaG9wOmh1bnRlcjJAZGIvc2hvcA=="),
        );
    });
    fails_with(&found, "Secret/app-secrets-abc: DATABASE_URL holds a value");
    let found = with(|docs| {
        set(find(docs, "Secret", "app-secrets-abc"), "/stringData", json!({"API_TOKEN": "s3cr3t"}));
    });
    fails_with(&found, "API_TOKEN holds a value");
    let found =
        with(|docs| set(find(docs, "Secret", "app-secrets-abc"), "/stringData", json!({"EMPTY": ""})));
    assert_eq!(found, Vec::<String>::new());
}

#[test]
fn committed_secret_manifests_with_data_are_refused() {
    let committed = "apiVersion: v1\nkind: Secret\nmetadata: {name: s}\nstringData: {PASSWORD: x}\n";
    assert_eq!(super::committed_secrets(committed).len(), 1);
    let empty = "apiVersion: v1\nkind: Secret\nmetadata: {name: s}\n---\nkind: ConfigMap\ndata: {a: b}\n";
    assert!(super::committed_secrets(empty).is_empty());
}

#[test]
fn examples_must_hold_obvious_placeholders() {
    let dir = std::env::temp_dir().join(format!("xtask-k8s-test-{}", std::process::id()));
    let overlay = dir.join("overlays/x");
    std::fs::create_dir_all(&overlay).expect("a scratch folder");
    std::fs::write(
        overlay.join("secrets.env.example"),
        "# comment\nA=postgres://u:change-me@h/d\nB=hunter2\nC=\n",
    )
    .expect("written");
    let mut found = Vec::new();
    let placeholders = super::make_secrets(&dir, &mut found).expect("made");
    assert!(overlay.join("secrets.env").is_file());
    let _ = std::fs::remove_dir_all(&dir);
    assert_eq!(found.len(), 1, "{found:?}");
    fails_with(&found, "B must be an obvious placeholder");
    assert!(placeholders["A"].contains("postgres://u:change-me@h/d"));
}

#[test]
fn the_drain_must_fit_the_termination_grace_period() {
    let found = with(|docs| {
        set(find(docs, "Deployment", "api"), "/spec/template/spec/terminationGracePeriodSeconds", json!(30));
    });
    // 5s preStop + 5s delay + 20s grace + 5s to exit = 35s > 30s
    fails_with(&found, "terminationGracePeriodSeconds 30s is shorter than preStop 5000ms");
    // The settings are read through the ConfigMap the container uses.
    let found =
        with(|docs| set(find(docs, "ConfigMap", "api-config-abc"), "/data/SHUTDOWN_GRACE", json!("40s")));
    fails_with(&found, "SHUTDOWN_GRACE 40000ms");
    // ... and an env value wins over the ConfigMap.
    let found = with(|docs| {
        set(
            find(docs, "Deployment", "api"),
            &format!("{API_CONTAINER}/env/1"),
            json!({"name": "SHUTDOWN_DELAY", "value": "1m"}),
        );
    });
    fails_with(&found, "SHUTDOWN_DELAY 60000ms");
    let found = with(|docs| {
        set(
            find(docs, "Deployment", "api"),
            &format!("{API_CONTAINER}/lifecycle/preStop"),
            json!({"exec": {"command": ["sleep", "5"]}}),
        );
    });
    fails_with(&found, "native sleep action");
}

#[test]
fn probes_have_the_right_semantics() {
    let found = with(|docs| {
        set(
            find(docs, "Deployment", "api"),
            &format!("{API_CONTAINER}/livenessProbe/httpGet/path"),
            json!("/readyz"),
        );
    });
    fails_with(&found, "livenessProbe must be an HTTP GET of /healthz");
    let found =
        with(|docs| remove(find(docs, "Deployment", "api"), &format!("{API_CONTAINER}/readinessProbe")));
    fails_with(&found, "readinessProbe must be an HTTP GET of /readyz");
}

#[test]
fn the_ingress_routes_only_public_paths_with_the_edge_limits() {
    for private in ["/metrics", "/healthz", "/readyz", "/"] {
        let found = with(|docs| {
            set(find(docs, "Ingress", "api"), "/spec/rules/0/http/paths/0/path", json!(private));
        });
        fails_with(&found, &format!("routes {private};"));
    }
    let annotation = |key: &str| format!("/metadata/annotations/nginx.ingress.kubernetes.io~1{key}");
    let found = with(|docs| set(find(docs, "Ingress", "api"), &annotation("proxy-body-size"), json!("1m")));
    fails_with(&found, "proxy-body-size");
    let found =
        with(|docs| set(find(docs, "ConfigMap", "api-config-abc"), "/data/BODY_LIMIT_BYTES", json!("1024")));
    fails_with(&found, "must equal the api's BODY_LIMIT_BYTES");
    let found =
        with(|docs| set(find(docs, "Ingress", "api"), &annotation("proxy-read-timeout"), json!("10")));
    fails_with(&found, "proxy-read-timeout");
    let found = with(|docs| {
        set(find(docs, "Ingress", "api"), &annotation("proxy-next-upstream"), json!("error non_idempotent"));
    });
    fails_with(&found, "non-idempotent");
    let found = with(|docs| {
        remove(find(docs, "Ingress", "api"), "/metadata/annotations/nginx.ingress.kubernetes.io~1limit-rps");
    });
    fails_with(&found, "limit-rps");
}

#[test]
fn every_hpa_metric_needs_an_adapter_rule_and_every_rule_a_real_metric() {
    let found = with(|docs| {
        set(find(docs, "HorizontalPodAutoscaler", "api"), "/spec/metrics/0/pods/metric/name", json!("rps"));
    });
    fails_with(&found, "metric rps has no prometheus-adapter rule");
    let values: Value = serde_norway::from_str(
        "rules:\n  custom:\n    - seriesQuery: 'http_requests_total{pod!=\"\"}'\n      name: {as: rps}\n  external:\n    - seriesQuery: queue_depth\n",
    )
    .expect("yaml");
    let mut found = Vec::new();
    let served = policy::adapter_rules(&values, &["http_requests", "queue_depth"], &mut found);
    assert!(served.custom.contains("rps"));
    assert_eq!(found.len(), 2, "{found:?}");
    fails_with(&found, "http_requests_total is not a metric");
    fails_with(&found, "the rule for queue_depth needs name.as");
    let mut found = Vec::new();
    policy::adapter_rules(&values, &["http_requests_total", "queue_depth"], &mut found);
    fails_with(&found, "needs name.as");
    assert_eq!(found.len(), 1);
}

fn budget_with(change: impl FnOnce(&mut Vec<Value>)) -> budget::Budget {
    let mut docs = good();
    change(&mut docs);
    budget::compute(&docs).expect("a budget")
}

#[test]
fn the_budget_counts_autoscaler_maximum_surge_migrations_and_reserved_slots() {
    let fits = budget_with(|docs| {
        set(
            find(docs, "StatefulSet", "postgres"),
            "/spec/template/spec/containers/0/args/1",
            json!("max_connections=44"),
        );
    });
    assert!(fits.fits(), "{}", fits.report());
    assert_eq!(fits.total(), 44);
    let report = fits.report();
    assert!(report.contains("8 pods (6 HorizontalPodAutoscaler/api max + 2 surge) x   5"), "{report}");
    assert!(report.contains("(api migrate) = 1"), "{report}");
    assert!(report.contains("total 44 <= 44 (0 to spare)"), "{report}");
    let over = budget_with(|docs| {
        set(
            find(docs, "StatefulSet", "postgres"),
            "/spec/template/spec/containers/0/args/1",
            json!("max_connections=43"),
        );
    });
    assert!(!over.fits());
    assert!(over.report().contains("total 44 > 43: OVER BUDGET by 1"), "{}", over.report());

    // The pool size comes from the container's ConfigMap, or the default.
    let bigger = budget_with(|docs| {
        remove(find(docs, "ConfigMap", "api-config-abc"), "/data/DB_MAX_CONNECTIONS");
    });
    assert_eq!(bigger.total(), 8 * 10 + 1 + 3);
    // A Recreate rollout has no surge; a Job's parallelism multiplies.
    let recreate = budget_with(|docs| {
        set(find(docs, "Deployment", "api"), "/spec/strategy", json!({"type": "Recreate"}));
        set(find(docs, "Job", "migrate"), "/spec/parallelism", json!(2));
    });
    assert_eq!(recreate.total(), 6 * 5 + 2 + 3);
    // Reserved slots count.
    let reserved = budget_with(|docs| {
        set(
            find(docs, "StatefulSet", "postgres"),
            "/spec/template/spec/containers/0/args/3",
            json!("superuser_reserved_connections=10"),
        );
    });
    assert_eq!(reserved.total(), 30 + 10 + 1 + 10);
    assert!(reserved.report().contains("OVER BUDGET"));
}

#[test]
fn the_budget_reads_a_managed_servers_declared_limit_and_needs_exactly_one() {
    let managed = budget_with(|docs| {
        docs.retain(|d| manifest::kind(d) != "StatefulSet");
        docs.push(json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "postgres-server"},
            "data": {"max_connections": "100", "reserved_connections": "2"}}));
    });
    assert_eq!(managed.limit.max_connections, 100);
    assert_eq!(managed.total(), 40 + 1 + 3 + 2);
    assert!(managed.fits());

    let mut docs = good();
    docs.retain(|d| manifest::kind(d) != "StatefulSet");
    let err = budget::compute(&docs).expect_err("no server");
    assert!(err.contains("no Postgres max_connections"), "{err}");

    let mut docs = good();
    set(find(&mut docs, "StatefulSet", "postgres"), "/spec/template/spec/containers/0/args", json!([]));
    let err = budget::compute(&docs).expect_err("implicit");
    assert!(err.contains("does not set max_connections explicitly"), "{err}");
}
