//! One Compose project of the test: the committed `docker-compose.yml`,
//! unchanged, under a project name of its own, with a `.env` made from
//! `.env.example` and free ports.
//!
//! Rules:
//! - Every path out of the test, a failure or a panic included, runs
//!   `docker compose down -v` (the [`Drop`]): no container, network or
//!   volume is left behind, and [`Project::leftovers`] proves it.
//! - The project name is not the one a user runs (`<project>-compose-test`,
//!   not `<project>`), so the test never touches a stack someone runs on
//!   the same engine, nor its volumes.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

use crate::cmd;

/// A Compose project, taken down with its volumes when dropped.
pub(super) struct Project {
    /// Compose's project name.
    pub name: String,
    root: PathBuf,
    env_file: PathBuf,
    /// NGINX's published port.
    pub http: SocketAddr,
}

impl Project {
    /// A project over the root's Compose file, with `.env.example`'s
    /// values, NGINX on `http_port` and RabbitMQ's UI on `ui_port`.
    pub(super) fn new(
        root: &Path,
        scratch: &Path,
        name: &str,
        http_port: u16,
        ui_port: u16,
    ) -> anyhow::Result<Self> {
        let example = std::fs::read_to_string(root.join(".env.example")).context("reading .env.example")?;
        let mut env: Vec<(String, String)> = crate::checks::env_pairs(&example);
        let mut set = |key: &str, value: String| match env.iter_mut().find(|(k, _)| k == key) {
            Some(pair) => pair.1 = value,
            None => env.push((key.to_owned(), value)),
        };
        set("HTTP_PORT", http_port.to_string());
        set("RABBITMQ_UI_PORT", ui_port.to_string());
        // Not the default subnet: a stack of the user's may hold it.
        set("NETWORK_SUBNET", "172.30.99.0/24".to_owned());
        let env_file = scratch.join(format!("{name}.env"));
        let lines: Vec<String> = env.iter().map(|(k, v)| format!("{k}={v}")).collect();
        std::fs::write(&env_file, lines.join("\n") + "\n")?;
        Ok(Self {
            name: name.to_owned(),
            root: root.to_path_buf(),
            env_file,
            http: SocketAddr::from(([127, 0, 0, 1], http_port)),
        })
    }

    /// `docker compose` for this project.
    pub(super) fn compose(&self) -> Command {
        let mut command = Command::new("docker");
        command
            .arg("compose")
            .arg("--project-name")
            .arg(&self.name)
            .arg("--project-directory")
            .arg(&self.root)
            .arg("--file")
            .arg(self.root.join("docker-compose.yml"))
            .arg("--env-file")
            .arg(&self.env_file)
            .current_dir(&self.root);
        command
    }

    /// Runs `docker compose ARGS`, failing with its command line.
    pub(super) fn run(&self, args: &[&str]) -> anyhow::Result<()> {
        cmd::run(self.compose().args(args))
    }

    /// Runs `docker compose ARGS` and returns its standard output.
    pub(super) fn output(&self, args: &[&str]) -> anyhow::Result<String> {
        let mut command = self.compose();
        command.args(args).stdin(Stdio::null());
        let out: Output = command.output().with_context(|| cmd::describe(&command))?;
        if !out.status.success() {
            bail!(
                "`{}` failed ({}): {}",
                cmd::describe(&command),
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// `up -d --wait` with the prebuilt images; how long it took.
    pub(super) fn up(&self, extra: &[&str]) -> anyhow::Result<Duration> {
        let started = Instant::now();
        let mut args =
            vec!["up", "--detach", "--wait", "--wait-timeout", "300", "--no-build", "--quiet-pull"];
        args.extend_from_slice(extra);
        if let Err(err) = self.run(&args) {
            // The containers go with `down -v`: their logs are shown first.
            let _ = self.compose().args(["logs", "--no-color", "--tail", "40"]).stdin(Stdio::null()).status();
            return Err(err
                .context(format!("starting the {} project (the services' last logs are above)", self.name)));
        }
        Ok(started.elapsed())
    }

    /// The ids of a service's containers, or of every service's with `""`
    /// (running ones, or all with `all`).
    pub(super) fn containers(&self, service: &str, all: bool) -> anyhow::Result<Vec<String>> {
        let mut args = vec!["ps", "--quiet"];
        if all {
            args.push("--all");
        }
        if !service.is_empty() {
            args.push(service);
        }
        Ok(self.output(&args)?.lines().map(str::to_owned).filter(|l| !l.is_empty()).collect())
    }

    /// Containers, networks and volumes of this project that still exist.
    pub(super) fn leftovers(&self) -> anyhow::Result<Vec<String>> {
        leftovers(&self.name)
    }

    /// `down --volumes`: everything the project made goes.
    pub(super) fn down(&self) -> anyhow::Result<()> {
        let out = self
            .compose()
            .args(["down", "--volumes", "--remove-orphans", "--timeout", "30"])
            .stdin(Stdio::null())
            .output()?;
        if !out.status.success() {
            bail!("docker compose down failed: {}", String::from_utf8_lossy(&out.stderr).trim());
        }
        Ok(())
    }
}

impl Drop for Project {
    fn drop(&mut self) {
        if let Err(err) = self.down() {
            eprintln!("xtask: taking the {} project down failed: {err:#}", self.name);
        }
    }
}

/// Containers, networks and volumes of the project `name` that exist.
pub(super) fn leftovers(name: &str) -> anyhow::Result<Vec<String>> {
    let label = format!("label=com.docker.compose.project={name}");
    let mut found = Vec::new();
    for (kind, args) in [
        ("container", ["ps", "--all", "--filter", &label, "--format", "{{.Names}}"].as_slice()),
        ("network", ["network", "ls", "--filter", &label, "--format", "{{.Name}}"].as_slice()),
        ("volume", ["volume", "ls", "--filter", &label, "--format", "{{.Name}}"].as_slice()),
    ] {
        let out = Command::new("docker").args(args).output()?;
        if !out.status.success() {
            bail!("docker {} failed: {}", args.join(" "), String::from_utf8_lossy(&out.stderr).trim());
        }
        found.extend(String::from_utf8_lossy(&out.stdout).lines().map(|l| format!("{kind} {l}")));
    }
    Ok(found)
}

/// `docker inspect --format` of a container.
pub(super) fn inspect(container: &str, format: &str) -> anyhow::Result<String> {
    let out = Command::new("docker").args(["inspect", "--format", format, container]).output()?;
    if !out.status.success() {
        bail!("docker inspect {container}: {}", String::from_utf8_lossy(&out.stderr).trim());
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
}
