//! Reading rendered manifests: documents, pod specs, containers, the
//! environment a container gets, and the small value formats Kubernetes and
//! the services use (durations, sizes, percentages, base64).

use anyhow::Context;
use serde_json::Value;

/// Kinds whose objects hold a pod template, and where it is.
const POD_SPECS: &[(&str, &str)] = &[
    ("Deployment", "/spec/template/spec"),
    ("StatefulSet", "/spec/template/spec"),
    ("DaemonSet", "/spec/template/spec"),
    ("ReplicaSet", "/spec/template/spec"),
    ("ReplicationController", "/spec/template/spec"),
    ("Job", "/spec/template/spec"),
    ("CronJob", "/spec/jobTemplate/spec/template/spec"),
    ("Pod", "/spec"),
];

/// Splits a YAML stream into its documents (at `---` lines, as kustomize
/// writes them) and reads each as JSON values; empty documents are skipped.
pub(super) fn parse_documents(text: &str) -> anyhow::Result<Vec<Value>> {
    let mut docs = Vec::new();
    let mut current = String::new();
    let mut flush = |current: &mut String, index: usize| -> anyhow::Result<()> {
        let meaningful = current.lines().any(|l| !l.trim().is_empty() && !l.trim_start().starts_with('#'));
        if meaningful {
            let doc: Value = serde_norway::from_str(current)
                .with_context(|| format!("reading YAML document {}", index + 1))?;
            if !doc.is_null() {
                docs.push(doc);
            }
        }
        current.clear();
        Ok(())
    };
    let mut index = 0;
    for line in text.lines() {
        let trimmed = line.trim_end();
        if trimmed == "---" || trimmed.starts_with("--- ") || trimmed.starts_with("---#") {
            flush(&mut current, index)?;
            index += 1;
        } else {
            current.push_str(line);
            current.push('\n');
        }
    }
    flush(&mut current, index)?;
    Ok(docs)
}

/// `kind` of an object.
pub(super) fn kind(doc: &Value) -> &str {
    doc["kind"].as_str().unwrap_or_default()
}

/// `metadata.name` of an object.
pub(super) fn name(doc: &Value) -> &str {
    doc["metadata"]["name"].as_str().unwrap_or_default()
}

/// `Kind/name`, for messages.
pub(super) fn id(doc: &Value) -> String {
    format!("{}/{}", kind(doc), name(doc))
}

/// The objects of one kind.
pub(super) fn of_kind<'a>(docs: &'a [Value], wanted: &'a str) -> impl Iterator<Item = &'a Value> + 'a {
    docs.iter().filter(move |d| kind(d) == wanted)
}

/// The pod spec of a workload, if the object is one.
pub(super) fn pod_spec(doc: &Value) -> Option<&Value> {
    let (_, pointer) = POD_SPECS.iter().find(|(k, _)| *k == kind(doc))?;
    doc.pointer(pointer)
}

/// The labels of a workload's pods.
pub(super) fn pod_labels(doc: &Value) -> &Value {
    match kind(doc) {
        "Pod" => &doc["metadata"]["labels"],
        "CronJob" => &doc["spec"]["jobTemplate"]["spec"]["template"]["metadata"]["labels"],
        _ => &doc["spec"]["template"]["metadata"]["labels"],
    }
}

/// Every container of a pod spec: init, regular and ephemeral.
pub(super) fn containers(spec: &Value) -> impl Iterator<Item = &Value> {
    ["initContainers", "containers", "ephemeralContainers"]
        .into_iter()
        .flat_map(move |field| each(&spec[field]))
}

/// The items of an array (none if it is not one).
pub(super) fn each(value: &Value) -> impl Iterator<Item = &Value> {
    value.as_array().into_iter().flatten()
}

/// Which of our services an image is, from its name (`…/NAME-api:tag`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Role {
    /// The api image (also runs `migrate`).
    Api,
    /// The worker image.
    Worker,
}

impl Role {
    /// The role of a container, by its image.
    pub(super) fn of(container: &Value) -> Option<Self> {
        let image = container["image"].as_str()?;
        let without_digest = image.split('@').next().unwrap_or(image);
        let last = without_digest.rsplit('/').next().unwrap_or(without_digest);
        let repository = last.split(':').next().unwrap_or(last);
        if repository.ends_with("-api") {
            Some(Self::Api)
        } else if repository.ends_with("-worker") {
            Some(Self::Worker)
        } else {
            None
        }
    }

    /// The service's own default for a setting it reads from the
    /// environment (see `api/src/config.rs` and `worker/src/config.rs`).
    pub(super) fn default_of(self, key: &str) -> Option<&'static str> {
        match (self, key) {
            (Self::Api, "DB_MAX_CONNECTIONS") => Some("10"),
            (Self::Worker, "DB_MAX_CONNECTIONS") => Some("20"),
            (Self::Api, "SHUTDOWN_DELAY") => Some("0s"),
            (Self::Api, "SHUTDOWN_GRACE") => Some("20s"),
            (Self::Worker, "SHUTDOWN_GRACE") => Some("25s"),
            (Self::Api, "BODY_LIMIT_BYTES") => Some("65536"),
            (Self::Api, "REQUEST_TIMEOUT") => Some("10s"),
            _ => None,
        }
    }
}

/// Where a container's setting comes from, for messages.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Setting {
    pub value: String,
    /// `env`, `ConfigMap NAME` or `default`.
    pub from: String,
}

/// The value a container gets for `key`: its `env` (a literal value), else
/// the last `envFrom` ConfigMap that has it, else the service's default.
/// `None` if it comes from elsewhere (a Secret, the downward API) or
/// nowhere.
pub(super) fn setting(docs: &[Value], container: &Value, key: &str) -> Option<Setting> {
    if let Some(var) = each(&container["env"]).find(|v| v["name"] == key) {
        return var["value"].as_str().map(|v| Setting { value: v.to_owned(), from: "env".into() });
    }
    let mut found = None;
    for source in each(&container["envFrom"]) {
        let Some(map_name) = source["configMapRef"]["name"].as_str() else { continue };
        let prefix = source["prefix"].as_str().unwrap_or_default();
        let Some(unprefixed) = key.strip_prefix(prefix) else { continue };
        let map = of_kind(docs, "ConfigMap").find(|m| name(m) == map_name);
        if let Some(value) = map.and_then(|m| m["data"][unprefixed].as_str()) {
            found = Some(Setting { value: value.to_owned(), from: format!("ConfigMap {map_name}") });
        }
    }
    found.or_else(|| {
        Role::of(container)
            .and_then(|role| role.default_of(key))
            .map(|v| Setting { value: v.to_owned(), from: "default".into() })
    })
}

/// A duration as the services write them (`500ms`, `5s`, `1m30s`, `2h`), in
/// milliseconds.
pub(super) fn duration_ms(text: &str) -> Option<u64> {
    let text = text.trim();
    if text.is_empty() {
        return None;
    }
    let mut total = 0u64;
    let mut rest = text;
    while !rest.is_empty() {
        let digits = rest.find(|c: char| !c.is_ascii_digit()).unwrap_or(rest.len());
        let number: u64 = rest[..digits].parse().ok()?;
        rest = &rest[digits..];
        let unit_len = rest.find(|c: char| c.is_ascii_digit()).unwrap_or(rest.len());
        let factor = match &rest[..unit_len] {
            "ms" => 1,
            "s" => 1_000,
            "m" | "min" => 60_000,
            "h" => 3_600_000,
            _ => return None,
        };
        total = total.checked_add(number.checked_mul(factor)?)?;
        rest = &rest[unit_len..];
    }
    Some(total)
}

/// An NGINX size, read as the edge's own configuration is.
pub(super) use edge_config::size_bytes as nginx_size;

/// A count that may be a number or a string holding one.
pub(super) fn count(value: &Value) -> Option<u64> {
    value.as_u64().or_else(|| value.as_str().and_then(|s| s.trim().parse().ok()))
}

/// A rollout's `maxSurge` (a count or a percentage, rounded up as the
/// Deployment controller does) for `replicas` pods.
pub(super) fn surge(value: &Value, replicas: u64) -> Option<u64> {
    if let Some(percent) = value.as_str().and_then(|s| s.strip_suffix('%')) {
        let percent: u64 = percent.parse().ok()?;
        return Some((replicas * percent).div_ceil(100));
    }
    count(value)
}

/// Standard base64 (what a Secret's `data` holds), decoded.
pub(super) fn base64_decode(text: &str) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(text.len() / 4 * 3);
    let mut buffer = 0u32;
    let mut bits = 0;
    for byte in text.bytes().filter(|b| !b.is_ascii_whitespace()) {
        let value = match byte {
            b'A'..=b'Z' => byte - b'A',
            b'a'..=b'z' => byte - b'a' + 26,
            b'0'..=b'9' => byte - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            b'=' => continue,
            _ => return None,
        };
        buffer = (buffer << 6) | u32::from(value);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push(u8::try_from((buffer >> bits) & 0xff).ok()?);
            buffer &= (1 << bits) - 1;
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn documents_are_split_at_separators_and_comments_alone_are_skipped() {
        let docs = parse_documents("# only a comment\n---\na: 1\n---\nb: [x]\n---\n").expect("parses");
        assert_eq!(docs.len(), 2);
        assert_eq!(docs[1]["b"][0], "x");
    }

    #[test]
    fn durations_sizes_and_surges_read_as_the_services_and_kubernetes_read_them() {
        assert_eq!(duration_ms("5s"), Some(5_000));
        assert_eq!(duration_ms("1m30s"), Some(90_000));
        assert_eq!(duration_ms("250ms"), Some(250));
        assert_eq!(duration_ms("5 parsecs"), None);
        assert_eq!(nginx_size("64k"), Some(65_536));
        assert_eq!(nginx_size("65536"), Some(65_536));
        assert_eq!(nginx_size("1m"), Some(1_048_576));
        assert_eq!(surge(&Value::from("25%"), 20), Some(5));
        assert_eq!(surge(&Value::from("25%"), 3), Some(1));
        assert_eq!(surge(&Value::from(2), 20), Some(2));
    }

    #[test]
    fn base64_decodes() {
        assert_eq!(base64_decode("Y2hhbmdlLW1l").as_deref(), Some(b"change-me".as_slice()));
        assert_eq!(base64_decode("YQ==").as_deref(), Some(b"a".as_slice()));
        assert_eq!(base64_decode("!!"), None);
    }

    #[test]
    fn roles_come_from_the_image_name() {
        let c = |image: &str| serde_json::json!({ "image": image });
        assert_eq!(Role::of(&c("registry.example.com/x/shop-api:1.2")), Some(Role::Api));
        assert_eq!(Role::of(&c("shop-worker@sha256:abc")), Some(Role::Worker));
        assert_eq!(Role::of(&c("postgres:17")), None);
    }
}
