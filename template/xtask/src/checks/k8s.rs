//! Static checks of `infra/k8s` (part of `lint-infra` and so of `ci`). No
//! cluster is involved: each overlay is rendered and validated offline.
//!
//! 1. `infra/k8s` is copied to a scratch folder, where every overlay's
//!    `secrets.env` is made from its `secrets.env.example` (the real one,
//!    git-ignored, is never read).
//! 2. Each overlay is rendered with `kubectl kustomize` and validated
//!    against the Kubernetes OpenAPI schemas, strictly, with
//!    `kubernetes-validate`.
//! 3. KEDA's objects (which kubernetes-validate does not know) are checked
//!    against the strict schemas in `infra/k8s/schemas/`.
//! 4. The policies of [`policy`] and the Postgres connection budget of
//!    [`budget`] are checked on the rendered objects.
//!
//! Besides, no committed file under `infra/k8s` may hold a Secret with
//! data, and the examples' values must be obvious placeholders.

mod budget;
mod manifest;
mod policy;
#[cfg(test)]
mod tests;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, bail, ensure};
use serde_json::Value;

use crate::cmd;
use crate::tools::{self, Source, Tool};

/// Where the manifests live, from the root.
const DIR: &str = "infra/k8s";

/// The Kubernetes version the manifests are validated against.
const KUBERNETES_VERSION: &str = "1.32.0";

/// What every value of a `secrets.env.example` must contain, so nobody
/// takes it for a real secret (or ships it as one).
const PLACEHOLDER: &str = "change-me";

/// The example every overlay's secrets come from, and the file made of it.
const SECRETS_EXAMPLE: &str = "secrets.env.example";
const SECRETS: &str = "secrets.env";

const KUBECTL: Tool = Tool { binary: "kubectl", source: Source::Apt("kubectl") };
const KUBERNETES_VALIDATE: Tool =
    Tool { binary: "kubernetes-validate", source: Source::Pip("kubernetes-validate") };

/// KEDA's kinds, and the schema each is checked against.
const KEDA_SCHEMAS: &[(&str, &str)] =
    &[("ScaledObject", "scaledobject.json"), ("TriggerAuthentication", "triggerauthentication.json")];

/// Every static check of the Kubernetes manifests.
pub(super) fn lint_k8s(root: &Path) -> anyhow::Result<()> {
    let dir = root.join(DIR);
    if !dir.is_dir() {
        return Ok(());
    }
    let mut problems = Vec::new();
    for file in files(&dir)? {
        let relative = file.strip_prefix(&dir)?.display().to_string();
        if is_yaml(&file) {
            let text = std::fs::read_to_string(&file).with_context(|| format!("reading {relative}"))?;
            problems.extend(committed_secrets(&text).into_iter().map(|p| format!("{DIR}/{relative}: {p}")));
        }
    }
    tools::ensure(&[KUBECTL, KUBERNETES_VALIDATE, super::SCHEMA_CHECKER])?;
    let scratch = cmd::Scratch::new("k8s")?;
    let copy = scratch.path().join("k8s");
    copy_tree(&dir, &copy)?;
    let placeholders = make_secrets(&copy, &mut problems)?;
    let adapter_values = read_yaml(&copy.join("prometheus-adapter/rules.yaml"))?;
    let adapter = policy::adapter_rules(&adapter_values, super::observability::METRICS, &mut problems);

    for overlay in overlays(&copy)? {
        let label = overlay.strip_prefix(&copy)?.display().to_string();
        let rendered = render(&overlay)?;
        let file = scratch.path().join(format!("{}.yaml", label.replace('/', "-")));
        std::fs::write(&file, &rendered)?;
        cmd::run(
            Command::new("kubernetes-validate")
                .args(["-k", KUBERNETES_VERSION, "--strict", "--quiet"])
                .arg(&file),
        )
        .with_context(|| format!("{label} does not validate against Kubernetes {KUBERNETES_VERSION}"))?;
        let docs =
            manifest::parse_documents(&rendered).with_context(|| format!("reading {label} rendered"))?;
        check_keda(&docs, &copy.join("schemas"), &scratch.path().join(&label))
            .with_context(|| format!("{label}: KEDA objects"))?;
        problems.extend(
            policy::check(&docs, &placeholders, &adapter).into_iter().map(|p| format!("{label}: {p}")),
        );
        match budget::compute(&docs) {
            Ok(budget) => {
                eprint!("{label}: {}", budget.report());
                if !budget.fits() {
                    problems.push(format!(
                        "{label}: the Postgres connection budget is over max_connections ({} > {})",
                        budget.total(),
                        budget.limit.max_connections
                    ));
                }
            }
            Err(err) => problems.push(format!("{label}: connection budget: {err}")),
        }
    }
    if !problems.is_empty() {
        bail!("{DIR} has {} problems:\n  {}", problems.len(), problems.join("\n  "));
    }
    eprintln!("{DIR}: every overlay renders, validates and meets the policies");
    Ok(())
}

/// Every file below `dir`, sorted.
fn files(dir: &Path) -> anyhow::Result<Vec<PathBuf>> {
    let mut found = Vec::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(next) = pending.pop() {
        for entry in std::fs::read_dir(&next).with_context(|| format!("listing {}", next.display()))? {
            let entry = entry?;
            if entry.file_type()?.is_dir() {
                pending.push(entry.path());
            } else {
                found.push(entry.path());
            }
        }
    }
    found.sort();
    Ok(found)
}

fn is_yaml(path: &Path) -> bool {
    path.extension().is_some_and(|e| e == "yaml" || e == "yml")
}

/// Copies `from` to `to`, leaving out any real `secrets.env`.
fn copy_tree(from: &Path, to: &Path) -> anyhow::Result<()> {
    for file in files(from)? {
        if file.file_name().is_some_and(|n| n == SECRETS) {
            continue;
        }
        let target = to.join(file.strip_prefix(from)?);
        if let Some(parent) = target.parent() {
            std::fs::create_dir_all(parent)?;
        }
        std::fs::copy(&file, &target).with_context(|| format!("copying {}", file.display()))?;
    }
    Ok(())
}

/// Makes each `secrets.env` from the example beside it, and returns every
/// example's placeholder values by key.
fn make_secrets(copy: &Path, problems: &mut Vec<String>) -> anyhow::Result<policy::Placeholders> {
    let mut placeholders = policy::Placeholders::new();
    for example in files(copy)?.into_iter().filter(|f| f.file_name().is_some_and(|n| n == SECRETS_EXAMPLE)) {
        let relative = example.strip_prefix(copy)?.display().to_string();
        let text = std::fs::read_to_string(&example)?;
        for (key, value) in super::env_pairs(&text) {
            if !value.is_empty() && !value.contains(PLACEHOLDER) {
                problems.push(format!(
                    "{DIR}/{relative}: {key} must be an obvious placeholder (containing {PLACEHOLDER})"
                ));
            }
            placeholders.entry(key).or_default().insert(value);
        }
        std::fs::write(example.with_file_name(SECRETS), text)?;
    }
    Ok(placeholders)
}

/// Every overlay: each folder under `overlays/` with a kustomization.
fn overlays(copy: &Path) -> anyhow::Result<Vec<PathBuf>> {
    let mut found: Vec<PathBuf> = std::fs::read_dir(copy.join("overlays"))
        .context("listing infra/k8s/overlays")?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.join("kustomization.yaml").is_file())
        .collect();
    found.sort();
    ensure!(!found.is_empty(), "{DIR}/overlays has no overlay");
    Ok(found)
}

/// `kubectl kustomize DIR`.
fn render(overlay: &Path) -> anyhow::Result<String> {
    let mut command = Command::new("kubectl");
    command.arg("kustomize").arg(overlay);
    let line = cmd::describe(&command);
    eprintln!("$ {line}");
    let output = command.output().with_context(|| format!("starting `{line}`"))?;
    ensure!(output.status.success(), "`{line}` failed:\n{}", String::from_utf8_lossy(&output.stderr));
    String::from_utf8(output.stdout).context("kubectl kustomize wrote something other than UTF-8")
}

fn read_yaml(path: &Path) -> anyhow::Result<Value> {
    let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    serde_norway::from_str(&text).with_context(|| format!("parsing {}", path.display()))
}

/// Writes each KEDA object as JSON under `scratch` and checks it against
/// its schema; a KEDA kind without a schema fails.
fn check_keda(docs: &[Value], schemas: &Path, scratch: &Path) -> anyhow::Result<()> {
    let mut by_schema: BTreeMap<&str, Vec<PathBuf>> = BTreeMap::new();
    for doc in docs.iter().filter(|d| d["apiVersion"].as_str().is_some_and(|v| v.starts_with("keda.sh/"))) {
        let kind = manifest::kind(doc);
        let Some((_, schema)) = KEDA_SCHEMAS.iter().find(|(k, _)| *k == kind) else {
            bail!("{} has no schema in {DIR}/schemas; write one before using it", manifest::id(doc));
        };
        std::fs::create_dir_all(scratch)?;
        let file = scratch.join(format!("{kind}-{}.json", manifest::name(doc)));
        std::fs::write(&file, serde_json::to_string_pretty(doc)?)?;
        by_schema.entry(schema).or_default().push(file);
    }
    for (schema, files) in by_schema {
        cmd::run(
            Command::new("check-jsonschema").arg("--schemafile").arg(schemas.join(schema)).args(&files),
        )?;
    }
    Ok(())
}

/// Problems with a committed YAML file: any Secret in it with data.
fn committed_secrets(text: &str) -> Vec<String> {
    let Ok(docs) = manifest::parse_documents(text) else {
        // Not ours to judge here: kustomize reports files it cannot read.
        return Vec::new();
    };
    docs.iter()
        .filter(|d| manifest::kind(d) == "Secret")
        .filter(|d| {
            let holds = |field: &str| d[field].as_object().is_some_and(|m| !m.is_empty());
            holds("data") || holds("stringData")
        })
        .map(|d| {
            format!(
                "{} holds data; commit no Secret, generate it from the git-ignored {SECRETS}",
                manifest::id(d)
            )
        })
        .collect()
}
