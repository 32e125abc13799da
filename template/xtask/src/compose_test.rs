//! `cargo xtask compose-test`: the images built from the committed
//! Dockerfile and the committed `docker-compose.yml` brought up for real,
//! then checked end to end through NGINX's published port. `cargo xtask
//! ci` runs it.
//!
//! In order:
//! 1. An engine ([`engine`]): the one that answers, or on Debian as root
//!    one installed and started here (and stopped at the end, by PID).
//!    Elsewhere the test says what to install and skips loudly.
//! 2. Upstream images ([`images`]): pulled, or where no registry answers,
//!    stand-ins under the same references.
//! 3. The harness's own faults: an engine that cannot start, a port in use
//!    and a failed build each end in one clear line, and leave nothing
//!    behind.
//! 4. The project's images, through the Dockerfile's cargo-chef stages.
//! 5. `docker compose up --wait`, then [`checks`]: routes, an API key
//!    created the documented way, items, a job, the spread over 3 replicas
//!    and over 4 after `--scale api=4` and a reload, a replica killed under
//!    load, Postgres restarted under job submissions, users and read-only
//!    roots, graceful exits on `stop`, and data kept across `down`/`up`.
//! 6. The layer-cache proof: after a one-line change in a handler the api
//!    is compiled again (the `build-api` stage) without cooking the
//!    dependencies again.
//!
//! Every path out runs `docker compose down -v` ([`project`]); the figures
//! are printed at the end.

mod checks;
mod engine;
mod images;
mod project;

use std::net::TcpListener;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, bail, ensure};

use crate::cmd::{self, Scratch};
use crate::http::free_port;
use images::OwnImage;
use project::Project;

/// Services built here, which must run hardened.
const OWN: &[&str] = &["api", "worker", "migrations", "nginx"];
/// The handler the cache proof changes by one line.
const HANDLER: &str = "api/src/routes/health.rs";

/// Options of `compose-test`.
#[derive(clap::Args, Default)]
pub(crate) struct Args {
    /// NGINX's published port (default: a free one).
    #[arg(long)]
    http_port: Option<u16>,
    /// Skip the rebuild after a one-line change (the layer-cache proof).
    #[arg(long)]
    no_cache_probe: bool,
    /// Run the images already built (when working on the checks); implies
    /// --no-cache-probe and skips the harness's fault checks.
    #[arg(long)]
    no_build: bool,
}

/// What the run measured, printed at the end.
#[derive(Default)]
struct Report {
    stand_ins: Vec<String>,
    builds: Vec<String>,
    lines: Vec<String>,
    phases: Vec<String>,
}

impl Report {
    fn note(&mut self, line: String) {
        eprintln!("compose-test: {line}");
        self.lines.push(line);
    }
}

/// Runs every step; see the module's header.
pub(crate) fn run(args: &Args) -> anyhow::Result<()> {
    let started = Instant::now();
    let root = cmd::root();
    let scratch = Scratch::new("compose-test")?;
    let engine = match engine::ensure(scratch.path())? {
        engine::Availability::Ready(engine) => engine,
        engine::Availability::Missing(what) => {
            eprintln!(
                "\n!!! compose-test SKIPPED: {what}\n!!! docker-compose.yml and the images were NOT tested.\n"
            );
            return Ok(());
        }
    };
    let name = format!("{}-compose-test", env!("PROJECT_NAME"));
    let http_port = match args.http_port {
        Some(port) => port,
        None => free_port()?,
    };
    preflight(http_port)?;
    let mut report = Report::default();
    if engine.started_here() {
        report.note("the engine was started for this run, and is stopped at its end".to_owned());
    }

    let mut phase = started;
    let mut lap = |what: &str, report: &mut Report| {
        report.phases.push(format!("{what}: {:.0} s", phase.elapsed().as_secs_f64()));
        phase = Instant::now();
    };
    lap("the engine", &mut report);
    let (upstream, own) = images::references(&root)?;
    report.stand_ins = images::provide(&root, &upstream, scratch.path())?.stand_ins;
    lap("upstream images (pulled, or stand-ins)", &mut report);
    if args.no_build {
        for image in &own {
            ensure!(
{% raw %}                images::inspect(&image.image, "{{.Id}}").is_some(),{% endraw %}
                "--no-build, but {} is not built",
                image.image
            );
        }
    } else {
        harness_faults(&root, scratch.path(), &name)?;
        lap("the harness's faults", &mut report);
        build_own(&root, &own, &mut report)?;
        lap("our images", &mut report);
    }
    end_to_end(&root, scratch.path(), &name, http_port, &mut report)?;
    lap("up and the end-to-end checks", &mut report);
    if !args.no_cache_probe && !args.no_build {
        cache_probe(&root, scratch.path(), &own, &mut report)?;
        lap("the layer-cache proof", &mut report);
    }

    eprintln!("\ncompose-test passed in {:.0} s:", started.elapsed().as_secs_f64());
    if report.stand_ins.is_empty() {
        eprintln!("  upstream images: pulled from their registries");
    } else {
        eprintln!(
            "  upstream images served by stand-ins (infra/docker/stand-ins/): {}",
            report.stand_ins.join(", ")
        );
    }
    for line in report.builds.iter().chain(&report.lines) {
        eprintln!("  {line}");
    }
    eprintln!("  time by phase: {}", report.phases.join("; "));
    drop(engine);
    Ok(())
}

/// A taken port is one clear line before anything starts.
fn preflight(http_port: u16) -> anyhow::Result<()> {
    if TcpListener::bind(("0.0.0.0", http_port)).is_err() {
        bail!("port {http_port} (NGINX's published port) is in use; free it or pass --http-port");
    }
    Ok(())
}

/// The harness's own failures end in one line and leave nothing behind.
fn harness_faults(root: &Path, scratch: &Path, name: &str) -> anyhow::Result<()> {
    let one_line = |what: &str, err: anyhow::Error, expect: &str| -> anyhow::Result<()> {
        let text = format!("{err:#}");
        ensure!(
            !text.contains('\n') && text.contains(expect),
            "{what}: expected one line saying {expect:?}, got {text:?}"
        );
        eprintln!("harness fault, as expected: {what}: {text}");
        Ok(())
    };
    // An engine that cannot start (a daemon that exits at once).
    let socket = format!("unix://{}", scratch.join("fault.sock").display());
    match engine::start(Path::new("false"), Some(&socket), scratch) {
        Ok(_) => bail!("an engine that exits at once was reported as started"),
        Err(err) => one_line("an engine that cannot start", err, "the container engine did not start")?,
    }
    // A port in use: the preflight says so, and so does Compose itself
    // when the port is taken after it; then nothing is left behind.
    let taken = TcpListener::bind("0.0.0.0:0")?;
    let port = taken.local_addr()?.port();
    one_line("a port in use", preflight(port).expect_err("the port is taken"), "is in use")?;
    let fault_name = format!("{name}-fault");
    let project = Project::new(root, scratch, &fault_name, port, free_port()?)?;
    let result = project.up(&["--no-deps", "nginx"]);
    one_line("Compose meeting a port in use", result.expect_err("the port is taken"), "failed")?;
    drop(project);
    let left = project::leftovers(&fault_name)?;
    ensure!(left.is_empty(), "a failed `up` left {left:?} behind");
    drop(taken);
    // A build that fails.
    let context = scratch.join("broken-build");
    std::fs::create_dir_all(&context)?;
    std::fs::write(context.join("Dockerfile"), "FROM scratch\nCOPY missing-file /\n")?;
    let tag = format!("{name}-broken:local");
    let result = images::build(&context, &context.join("Dockerfile"), None, &tag, &[], &mut |_| {});
    one_line("a build that fails", result.expect_err("the build is broken"), "failed")?;
{% raw %}    ensure!(images::inspect(&tag, "{{.Id}}").is_none(), "a failed build left the image {tag}");{% endraw %}
    Ok(())
}

/// Builds each of the project's images; the figures go to the report.
fn build_own(root: &Path, own: &[OwnImage], report: &mut Report) -> anyhow::Result<()> {
    let mut built: Vec<&str> = Vec::new();
    for image in own {
        if built.contains(&image.image.as_str()) {
            continue;
        }
        let mut cooked = false;
        let mut step = String::new();
        let took = images::build(
            root,
            &root.join(images::DOCKERFILE),
            Some(&image.target),
            &image.image,
            &[],
            &mut |line| watch_steps(line, &mut step, &mut cooked),
        )?;
        let state = if cooked { "dependencies cooked" } else { "dependency layers cached" };
        report.builds.push(format!(
            "{}: {} MB, built in {:.0} s ({state})",
            image.image,
            images::size(&image.image)?.div_ceil(1_000_000),
            took.as_secs_f64()
        ));
        built.push(&image.image);
    }
    Ok(())
}

/// Tracks the classic builder's steps: sets `cooked` when a `cargo chef
/// cook` step ran rather than coming from the cache.
fn watch_steps(line: &str, step: &mut String, cooked: &mut bool) {
    if line.starts_with("Step ") {
        line.clone_into(step);
    } else if step.contains("cargo chef cook") && line.contains("Running in") {
        *cooked = true;
    }
}

fn end_to_end(
    root: &Path,
    scratch: &Path,
    name: &str,
    http_port: u16,
    report: &mut Report,
) -> anyhow::Result<()> {
    let project = Project::new(root, scratch, name, http_port, free_port()?)?;
    let took = project.up(&[])?;
    report.note(format!("docker compose up --wait: {:.0} s", took.as_secs_f64()));
    for line in checks::users_and_root_fs(&project, OWN)? {
        report.note(format!("container {line}"));
    }
    checks::routes(&project)?;
    let client = checks::Client::new(&project)?;
    let item = checks::items(&client)?;
    report
        .note("routes, an API key from `compose run api keys create`, item create, 304, PUT: ok".to_owned());
{% if worker %}    let first = checks::submit(&client, "compose-test-first")?.context("the first job was not accepted")?;
    checks::finished(&client, &[first], Duration::from_mins(1))?;
    report.note("a job: accepted (202) and finished by the worker".to_owned());
{% endif %}
    let three = checks::spread(&client, &item, 30, "three")?;
    report.note(format!("30 GETs over the replicas: {three:?}"));
    ensure!(three.len() == 3, "30 GETs reached {} replicas, not 3: {three:?}", three.len());
    project.up(&["--scale", "api=4"])?;
    checks::reload_nginx(&project)?;
    let four = checks::spread(&client, &item, 40, "four")?;
    report.note(format!("after --scale api=4 and an NGINX reload, 40 GETs: {four:?}"));
    ensure!(four.len() == 4, "after scaling to 4, 40 GETs reached {} replicas: {four:?}", four.len());

    let victim = project.containers("api", false)?.into_iter().next().context("no api replica runs")?;
    let load = checks::under_load(&client, &item, || {
        cmd::run(Command::new("docker").args(["kill", &victim]).stdout(std::process::Stdio::null()))
    })?;
    report
        .note(format!("docker kill of a replica under GET load: {} GETs, {} failed", load.sent, load.failed));
    ensure!(load.failed == 0, "{} of {} GETs failed while a replica was killed", load.failed, load.sent);
    project.up(&["--scale", "api=4"])?;

    postgres_restart(&project, &client, &item, report)?;

    project.run(&["stop"])?;
{% if worker %}    let services = ["api", "worker"];
{% endif %}{% unless worker %}    let services = ["api"];
{% endunless %}    for service in services {
        let codes = checks::exit_codes(&project, service)?;
        report.note(format!("{service} exit codes after `docker compose stop`: {codes:?}"));
        ensure!(codes.iter().all(|c| *c == 0), "{service} did not exit 0 on stop: {codes:?}");
    }
    project.run(&["down"])?;
    project.up(&[])?;
    let kept = client.send("GET", &item, &[], None)?;
    ensure!(
        kept.status == 200 && kept.body.contains("Floor lamp"),
        "after down and up the item answered {}: {}",
        kept.status,
        kept.body
    );
    report.note("after `down` and `up` the item is still there (volumes)".to_owned());
    project.down()?;
    let left = project.leftovers()?;
    ensure!(left.is_empty(), "`docker compose down -v` left {left:?}");
    report.note("`docker compose down -v` left no container, network or volume".to_owned());
    Ok(())
}

/// `docker compose restart postgres` while jobs are submitted: readiness
/// comes back by itself, reads through NGINX work again, and every accepted
/// job finishes.
fn postgres_restart(
    project: &Project,
    client: &checks::Client,
    item: &str,
    report: &mut Report,
) -> anyhow::Result<()> {
{% if worker %}    let mut jobs = checks::Submissions::default();
    for _ in 0..5 {
        jobs.submit(client);
    }
{% endif %}    std::thread::scope(|scope| -> anyhow::Result<()> {
        let restart = scope.spawn(|| project.run(&["restart", "postgres"]));
        while !restart.is_finished() {
{% if worker %}            jobs.submit(client);
{% endif %}            std::thread::sleep(Duration::from_millis(150));
        }
        restart.join().map_err(|_| anyhow::anyhow!("the restart thread panicked"))?
    })?;
    let ready = checks::replicas_ready(project, Duration::from_mins(1))?;
    report.note(format!(
        "docker compose restart postgres: every api replica ready {:.1} s after the restart returned",
        ready.as_secs_f64()
    ));
    let read = client.send("GET", item, &[], None)?;
    ensure!(read.status == 200, "after the Postgres restart, GET {item} answered {}", read.status);
{% if worker %}    checks::finished(client, &jobs.accepted, Duration::from_secs(90))?;
    report.note(format!(
        "jobs across the Postgres restart: {} accepted, all finished (0 lost); {} not accepted (an error answer or none)",
        jobs.accepted.len(),
        jobs.refused
    ));
{% endif %}    Ok(())
}

/// A one-line change in a handler is rebuilt from the cached dependency
/// layers: no `cargo chef cook` step runs again, and the api crate compiles.
fn cache_probe(root: &Path, scratch: &Path, own: &[OwnImage], report: &mut Report) -> anyhow::Result<()> {
    let api = own.iter().find(|o| o.target == "api").context("no api image")?;
    let copy = scratch.join("cache-probe");
    copy_tree(root, &copy)?;
    let handler = copy.join(HANDLER);
    let mut text = std::fs::read_to_string(&handler).with_context(|| format!("reading {HANDLER}"))?;
    text.push_str("// compose-test: a one-line change\n");
    std::fs::write(&handler, text)?;
    let tag = format!("{}-cache-probe", api.image.replace(':', "-"));
    // The stage that compiles the api: the classic builder builds every
    // stage up to the target, and the worker's comes after this one.
    let dockerfile = std::fs::read_to_string(root.join(images::DOCKERFILE))?;
    let stage = format!("build-{}", api.target);
    let target =
        if dockerfile.contains(&format!(" AS {stage}")) { stage.as_str() } else { api.target.as_str() };
    let (mut step, mut cooked, mut compiled) = (String::new(), false, false);
    let took = images::build(&copy, &copy.join(images::DOCKERFILE), Some(target), &tag, &[], &mut |line| {
        watch_steps(line, &mut step, &mut cooked);
        compiled |= line.contains("Compiling api ");
    });
    images::remove(&[&tag]);
    let took = took?;
    ensure!(!cooked, "a one-line change in {HANDLER} cooked the dependencies again: the layer cache failed");
    ensure!(compiled, "the rebuild after a change in {HANDLER} did not compile the api crate");
    report.builds.push(format!(
        "rebuild after a one-line change in {HANDLER}: {:.0} s, dependency layers cached",
        took.as_secs_f64()
    ));
    Ok(())
}

/// Copies the workspace (no build output, no git history) for a changed build.
fn copy_tree(from: &Path, to: &Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(to)?;
    for entry in std::fs::read_dir(from)? {
        let entry = entry?;
        let name = entry.file_name();
        if matches!(name.to_str(), Some("target" | ".git" | "template")) {
            continue;
        }
        let kind = entry.file_type()?;
        if kind.is_dir() {
            copy_tree(&entry.path(), &to.join(&name))?;
        } else if kind.is_file() {
            std::fs::copy(entry.path(), to.join(&name))?;
        }
    }
    Ok(())
}
