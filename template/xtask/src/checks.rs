//! The static checks of what the repository ships besides code: NGINX, the
//! images, Compose, Kubernetes, observability, the GitHub workflow, and
//! the module layering of the services. `cargo xtask ci` runs them all
//! before the tests; `lint-infra`, `lint-observability` and `lint-layers`
//! run parts. Each check's tests make its rules fail on purpose.

mod containers;
mod k8s;
mod layers;
pub(crate) mod nginx;
mod observability;

use std::path::Path;
use std::process::Command;

use crate::cmd;
use crate::tools::{self, Source, Tool};

pub(crate) use layers::lint_layers;
pub(crate) use observability::lint_observability;

/// The static checks of `infra/` (nginx, images, Compose, Kubernetes).
pub(crate) fn lint_infra(root: &Path) -> anyhow::Result<()> {
    nginx::lint_nginx(root)?;
    containers::lint_containers(root)?;
    k8s::lint_k8s(root)
}

/// The `KEY=value` lines of an env file (`.env.example`, kustomize's env
/// files): no quotes, no comments after values, an optional `export `.
pub(crate) fn env_pairs(text: &str) -> Vec<(String, String)> {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .filter_map(|l| l.strip_prefix("export ").unwrap_or(l).split_once('='))
        .map(|(k, v)| (k.trim().to_owned(), v.to_owned()))
        .collect()
}

/// check-jsonschema, for the workflow, Compose and KEDA schemas.
pub(crate) const SCHEMA_CHECKER: Tool =
    Tool { binary: "check-jsonschema", source: Source::Pip("check-jsonschema") };

/// Every GitHub workflow under `dir` passes actionlint and the workflow schema.
pub(crate) fn lint_workflows(dir: &Path) -> anyhow::Result<()> {
    let Ok(entries) = std::fs::read_dir(dir.join(".github/workflows")) else { return Ok(()) };
    let workflows: Vec<_> = entries
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "yml" || e == "yaml"))
        .collect();
    if workflows.is_empty() {
        return Ok(());
    }
    tools::ensure(&[SCHEMA_CHECKER])?;
    cmd::run(tools::actionlint()?.args(&workflows))?;
    cmd::run(
        Command::new("check-jsonschema")
            .args(["--builtin-schema", "vendor.github-workflows"])
            .args(&workflows),
    )
}
