//! The images the Compose test runs: upstream base and service images (or
//! their stand-ins), then this project's own, built from the committed
//! Dockerfile.
//!
//! Rules:
//! - An upstream reference (a `FROM` of `infra/docker/Dockerfile`, the
//!   `image:` of a service Compose starts by default) is pulled when a
//!   registry answers. Only when the pull fails is a stand-in built from
//!   `infra/docker/stand-ins/`, tagged with the same reference and labelled
//!   `<project>.stand-in`, so the Dockerfile and the Compose file are used
//!   unchanged. A stand-in found locally is replaced by the real image as
//!   soon as a pull succeeds: no stand-in is used where a registry is
//!   reachable.
//! - Stand-ins start from `<project>-stand-in/debian:bookworm`, a Debian 12
//!   root filesystem made by debootstrap from the machine's Debian mirror;
//!   their packages come from that mirror (`--network host`: the engine
//!   here has no NAT, see engine.rs).
//! - Builds use the classic builder (`DOCKER_BUILDKIT=0`): BuildKit would
//!   fetch the `# syntax=` frontend from a registry, and its progress output
//!   differs; the classic builder's `Using cache` lines are what proves the
//!   dependency layers were not cooked again.

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail, ensure};
use serde_norway::Value;

use crate::cmd;
use crate::tools::{self, Source, Tool};

/// The base of every stand-in.
pub(super) const BASE: &str = concat!(env!("PROJECT_NAME"), "-stand-in/debian:bookworm");
/// The label that marks a stand-in, valued with the reference it stands in for.
const LABEL: &str = concat!(env!("PROJECT_NAME"), ".stand-in");
/// Stand-in Dockerfiles, from the root.
const STAND_INS: &str = "infra/docker/stand-ins";
/// The committed Dockerfile of the project's own images, from the root.
pub(super) const DOCKERFILE: &str = "infra/docker/Dockerfile";

/// Which stand-in serves an upstream repository.
const STAND_IN_FOR: &[(&str, &str)] = &[
    ("rust", "rust.Dockerfile"),
    ("gcr.io/distroless/cc-debian12", "distroless-cc.Dockerfile"),
    ("postgres", "postgres.Dockerfile"),
    ("redis", "redis.Dockerfile"),
    ("rabbitmq", "rabbitmq.Dockerfile"),
    ("nginxinc/nginx-unprivileged", "nginx.Dockerfile"),
];

/// One of the project's own images, as Compose names and builds it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub(super) struct OwnImage {
    /// The `image:` Compose runs (`<project>-api:local`).
    pub image: String,
    /// The Dockerfile's stage.
    pub target: String,
}

/// The upstream references the build and the default services need, and
/// the project's own images, read from the committed files.
pub(super) fn references(root: &Path) -> anyhow::Result<(BTreeSet<String>, Vec<OwnImage>)> {
    let dockerfile = std::fs::read_to_string(root.join(DOCKERFILE))?;
    let mut upstream = from_lines(&dockerfile);
    let compose = std::fs::read_to_string(root.join("docker-compose.yml"))?;
    let mut doc: Value = serde_norway::from_str(&compose)?;
    doc.apply_merge()?;
    let services =
        doc.get("services").and_then(Value::as_mapping).context("docker-compose.yml: no services")?;
    let mut own = BTreeSet::new();
    for service in services.values() {
        if service.get("profiles").is_some() {
            continue;
        }
        let image = service.get("image").and_then(Value::as_str);
        match (service.get("build"), image) {
            (Some(build), Some(image)) => {
                let dockerfile = build.get("dockerfile").and_then(Value::as_str).unwrap_or("Dockerfile");
                ensure!(dockerfile == DOCKERFILE, "{image} is built from {dockerfile}, not {DOCKERFILE}");
                let target =
                    build.get("target").and_then(Value::as_str).context("a build without a target")?;
                own.insert(OwnImage { image: image.to_owned(), target: target.to_owned() });
            }
            (None, Some(image)) => {
                upstream.insert(image.to_owned());
            }
            _ => {}
        }
    }
    Ok((upstream, own.into_iter().collect()))
}

/// The images of `FROM` lines that are not earlier stages.
fn from_lines(dockerfile: &str) -> BTreeSet<String> {
    let mut stages = BTreeSet::new();
    let mut images = BTreeSet::new();
    for line in dockerfile.lines().map(str::trim) {
        let mut words = line.split_whitespace();
        if !words.next().is_some_and(|w| w.eq_ignore_ascii_case("FROM")) {
            continue;
        }
        let words: Vec<&str> = words.filter(|w| !w.starts_with("--")).collect();
        if let Some(image) = words.first()
            && !stages.contains(*image)
            && *image != "scratch"
        {
            images.insert((*image).to_owned());
        }
        if let [_, as_word, stage] = words.as_slice()
            && as_word.eq_ignore_ascii_case("AS")
        {
            stages.insert((*stage).to_owned());
        }
    }
    images
}

/// How each upstream reference was provided.
pub(super) struct Provided {
    /// References served by stand-ins (empty where the registry answered).
    pub stand_ins: Vec<String>,
}

/// Makes every upstream reference available: the real image where it can
/// be pulled, a stand-in where it cannot.
pub(super) fn provide(
    root: &Path,
    references: &BTreeSet<String>,
    scratch: &Path,
) -> anyhow::Result<Provided> {
    let mut stand_ins = Vec::new();
    for reference in references {
        let local = inspect(reference, &format!("{{{{index .Config.Labels \"{LABEL}\"}}}}"));
        let is_stand_in = local.as_deref().is_some_and(|l| !l.is_empty() && l != "<no value>");
        if local.is_some() && !is_stand_in {
            continue;
        }
        if pull(reference) {
            eprintln!("{reference}: pulled from its registry");
            continue;
        }
        if !is_stand_in {
            build_stand_in(root, reference, scratch)?;
        }
        eprintln!("{reference}: no registry answers; using the stand-in ({})", stand_in_file(reference)?);
        stand_ins.push(reference.clone());
    }
    Ok(Provided { stand_ins })
}

/// `docker image inspect` with a Go template, or `None` when there is no such image.
pub(super) fn inspect(image: &str, format: &str) -> Option<String> {
    let out = Command::new("docker")
        .args(["image", "inspect", "--format", format, image])
        .stderr(Stdio::null())
        .output()
        .ok()?;
    out.status.success().then(|| String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

fn pull(reference: &str) -> bool {
    Command::new("docker")
        .args(["pull", "--quiet", reference])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

fn stand_in_file(reference: &str) -> anyhow::Result<&'static str> {
    let repository = reference.rsplit_once(':').map_or(reference, |(r, _)| r);
    STAND_IN_FOR
        .iter()
        .find(|(r, _)| *r == repository)
        .map(|(_, file)| *file)
        .with_context(|| format!("{reference} cannot be pulled and has no stand-in in {STAND_INS}"))
}

fn build_stand_in(root: &Path, reference: &str, scratch: &Path) -> anyhow::Result<()> {
    let file = stand_in_file(reference)?;
    base(scratch)?;
    let mut context = root.join(STAND_INS);
    if file == "rust.Dockerfile" {
        context = rust_context(root, reference, scratch)?;
    }
    let started = Instant::now();
    build(
        &context,
        &root.join(STAND_INS).join(file),
        None,
        reference,
        &[format!("{LABEL}={reference}")],
        &mut |_| {},
    )?;
    eprintln!("{reference}: stand-in built in {:.0} s", started.elapsed().as_secs_f64());
    Ok(())
}

/// The rust stand-in's context: this machine's toolchain (what rustc runs
/// here) and its extra CA certificates.
fn rust_context(root: &Path, reference: &str, scratch: &Path) -> anyhow::Result<PathBuf> {
    let version = String::from_utf8(Command::new("rustc").arg("--version").output()?.stdout)?;
    let version = version.split_whitespace().nth(1).context("rustc --version")?.to_owned();
    let tag = reference.rsplit_once(':').map_or("", |(_, t)| t);
    let wanted = tag.split('-').next().unwrap_or_default();
    ensure!(
        version == wanted || version.starts_with(&format!("{wanted}.")),
        "{reference} cannot be pulled, and its stand-in can only offer this machine's rustc {version}"
    );
    let sysroot = String::from_utf8(Command::new("rustc").args(["--print", "sysroot"]).output()?.stdout)?;
    let sysroot = PathBuf::from(sysroot.trim());
    let context = scratch.join("rust-context");
    let toolchain = context.join("toolchain");
    let ca = context.join("ca");
    std::fs::create_dir_all(&toolchain)?;
    std::fs::create_dir_all(&ca)?;
    for part in ["bin", "lib", "libexec"] {
        if sysroot.join(part).exists() {
            // Hard links where the file system allows, copies where not.
            let linked = Command::new("cp").arg("-al").arg(sysroot.join(part)).arg(&toolchain).status()?;
            if !linked.success() {
                cmd::run(Command::new("cp").arg("-a").arg(sysroot.join(part)).arg(&toolchain))?;
            }
        }
    }
    if let Ok(entries) = std::fs::read_dir("/usr/local/share/ca-certificates") {
        for entry in entries.filter_map(Result::ok) {
            if entry.path().extension().is_some_and(|e| e == "crt") {
                std::fs::copy(entry.path(), ca.join(entry.file_name()))?;
            }
        }
    }
    std::fs::copy(root.join(STAND_INS).join("rust.Dockerfile"), context.join("rust.Dockerfile"))?;
    Ok(context)
}

/// The stand-ins' base image, from debootstrap, made once per engine.
fn base(scratch: &Path) -> anyhow::Result<()> {
    if inspect(BASE, "{{.Id}}").is_some() {
        return Ok(());
    }
    tools::ensure(&[Tool { binary: "debootstrap", source: Source::Apt("debootstrap") }])?;
    let rootfs = scratch.join("rootfs");
    let started = Instant::now();
    cmd::run(
        Command::new("debootstrap")
            .args(["--variant=minbase", "bookworm"])
            .arg(&rootfs)
            .arg(debian_mirror())
            .stdout(Stdio::null()),
    )
    .context("making the stand-ins' Debian root filesystem")?;
    // Packages installed in a build must not try to start their services.
    std::fs::write(rootfs.join("usr/sbin/policy-rc.d"), "#!/bin/sh\nexit 101\n")?;
    cmd::run(Command::new("chmod").arg("755").arg(rootfs.join("usr/sbin/policy-rc.d")))?;
    let _ = std::fs::remove_dir_all(rootfs.join("var/cache/apt/archives"));
    let tar = Command::new("tar").arg("-C").arg(&rootfs).args(["-c", "."]).stdout(Stdio::piped()).spawn()?;
    cmd::run(
        Command::new("docker")
            .args(["import", "--change", "CMD [\"bash\"]", "-", BASE])
            .stdin(tar.stdout.context("tar's output")?)
            .stdout(Stdio::null()),
    )?;
    std::fs::remove_dir_all(&rootfs)?;
    eprintln!("{BASE}: made by debootstrap in {:.0} s", started.elapsed().as_secs_f64());
    Ok(())
}

/// The Debian mirror apt uses here (deb.debian.org when none is configured).
fn debian_mirror() -> String {
    let mut sources = Vec::new();
    for file in ["/etc/apt/sources.list", "/etc/apt/sources.list.d/debian.sources"] {
        sources.push(std::fs::read_to_string(file).unwrap_or_default());
    }
    sources
        .iter()
        .flat_map(|s| s.split_whitespace())
        .find(|w| w.starts_with("http") && w.trim_end_matches('/').ends_with("/debian"))
        .unwrap_or("http://deb.debian.org/debian")
        .to_owned()
}

/// Builds `tag` from `dockerfile` (at `target`) in `context` with the
/// classic builder, streaming its output and handing each line to `line`.
/// A failed build is one line: which image, which file, the exit status.
pub(super) fn build(
    context: &Path,
    dockerfile: &Path,
    target: Option<&str>,
    tag: &str,
    labels: &[String],
    line: &mut dyn FnMut(&str),
) -> anyhow::Result<Duration> {
    let mut command = Command::new("docker");
    command
        .args(["build", "--network", "host", "--force-rm", "--file"])
        .arg(dockerfile)
        .args(["--tag", tag])
        .env("DOCKER_BUILDKIT", "0");
    if let Some(target) = target {
        command.args(["--target", target]);
    }
    for label in labels {
        command.args(["--label", label]);
    }
    command.arg(context);
    eprintln!("$ {}", cmd::describe(&command));
    let started = Instant::now();
    let mut child = command.stdout(Stdio::piped()).spawn().context("running docker build")?;
    for text in BufReader::new(child.stdout.take().context("docker build's output")?).lines() {
        let text = text?;
        eprintln!("  {text}");
        line(&plain(&text));
    }
    let status = child.wait()?;
    if !status.success() {
        bail!("building {tag} from {} failed ({status}); the build's output is above", dockerfile.display());
    }
    Ok(started.elapsed())
}

/// `text` without ANSI escape sequences: the builder colours the build's
/// stderr, even inside a word (`Compiling\x1b[0m\x1b[91m api`).
fn plain(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c == '\x1b' {
            // CSI: ESC [ parameters, then one final byte in @..~.
            if chars.next() == Some('[') {
                for c in chars.by_ref() {
                    if ('@'..='~').contains(&c) {
                        break;
                    }
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// Size of a local image, in bytes.
pub(super) fn size(image: &str) -> anyhow::Result<u64> {
    inspect(image, "{{.Size}}").and_then(|s| s.parse().ok()).with_context(|| format!("the size of {image}"))
}

/// Removes images (ignoring ones already gone).
pub(super) fn remove(images: &[&str]) {
    let _ =
        Command::new("docker").args(["image", "rm", "--force"]).args(images).stdout(Stdio::null()).status();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn from_lines_skip_stages_and_scratch() {
        let file = "FROM rust:1.95 AS chef\nFROM chef AS planner\nfrom --platform=linux/amd64 scratch\n\
                    FROM gcr.io/distroless/cc-debian12:nonroot AS api\n";
        let found: Vec<String> = from_lines(file).into_iter().collect();
        assert_eq!(found, ["gcr.io/distroless/cc-debian12:nonroot", "rust:1.95"]);
    }

    #[test]
    fn build_output_is_matched_without_its_colours() {
        let line = "\x1b[0m\x1b[91m   Compiling\x1b[0m\x1b[91m api v0.1.0 (/app/api)";
        assert_eq!(plain(line), "   Compiling api v0.1.0 (/app/api)");
        assert_eq!(plain("Step 10/30 : RUN cargo chef cook"), "Step 10/30 : RUN cargo chef cook");
    }

    #[test]
    fn every_upstream_reference_of_the_project_has_a_stand_in() {
        let (upstream, own) = references(&cmd::root()).expect("the committed files parse");
        for reference in &upstream {
            stand_in_file(reference).expect("a stand-in");
        }
        assert!(own.iter().any(|o| o.target == "api"), "{own:?}");
    }
}
