//! `cargo xtask test-generator`: the generator's tests. Projects are generated
//! outside the repository for an option matrix (all on, all off, each off in
//! turn), checked for leftovers and for their name, snapshotted, and then
//! made to pass their own `cargo xtask ci` against the real services.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, bail, ensure};

use crate::generator::new;
use crate::generator::template::{self, Coverage, OPTIONS};
use crate::{checks, cmd};

/// The name every test project gets; it differs from the reference name in
/// every form, so a leftover cannot hide.
const PROJECT: &str = "acme-shop";

/// Options of `test-generator`.
#[derive(clap::Args)]
pub(crate) struct Args {
    /// Run only this variant (`all-on`, `all-off`, `no-<option>`).
    #[arg(long)]
    only: Option<String>,
    /// Rewrite the snapshots of rendered files instead of comparing.
    #[arg(long)]
    bless: bool,
    /// Generate and check, but skip each project's own build and tests.
    #[arg(long)]
    no_build: bool,
}

/// One set of options.
struct Variant {
    label: String,
    defines: Vec<String>,
    /// How much of its own CI it runs.
    coverage: Coverage,
}

fn variants() -> Vec<Variant> {
    let all = |value: bool| OPTIONS.iter().map(|o| format!("{}={value}", o.name)).collect::<Vec<_>>();
    let mut list = vec![
        Variant { label: "all-on".into(), defines: all(true), coverage: Coverage::Lint },
        Variant { label: "all-off".into(), defines: all(false), coverage: Coverage::Full },
    ];
    if OPTIONS.len() > 1 {
        for off in OPTIONS {
            let defines = OPTIONS.iter().map(|o| format!("{}={}", o.name, o.name != off.name)).collect();
            list.push(Variant { label: format!("no-{}", off.name), defines, coverage: off.when_off });
        }
    }
    list
}

/// Runs the matrix.
pub(crate) fn run(args: &Args) -> anyhow::Result<()> {
    let template = cmd::root().join("template");
    bad_input_is_refused(&template)?;
    let scratch = tempfile::Builder::new().prefix("generated-").tempdir_in(std::env::temp_dir())?;
    let mut timings = Vec::new();
    for variant in variants().into_iter().filter(|v| args.only.as_ref().is_none_or(|o| *o == v.label)) {
        eprintln!("\n== generated project: {} ({})", variant.label, variant.defines.join(" "));
        let dir = scratch.path().join(&variant.label).join(PROJECT);
        new::generate(&template, &dir, PROJECT, &variant.defines)?;
        leftovers_and_name(&dir).with_context(|| format!("variant {}", variant.label))?;
        checks::lint_workflows(&dir)?;
        snapshots(&variant, &dir, args.bless)?;
        if !args.no_build {
            let started = Instant::now();
            // The Compose test builds release images in Docker: the root
            // runs it, on the same Dockerfile and Compose file the template
            // renders; each project's own workflow runs it for itself.
            let check: &[&str] = match variant.coverage {
                Coverage::Full => &["ci", "--no-compose"],
                Coverage::Lint => &["ci", "--lint-only"],
                Coverage::Infra => &["lint-infra"],
            };
            cmd::run(
                cmd::cargo()
                    .arg("xtask")
                    .args(check)
                    .current_dir(&dir)
                    // One target directory for every generated project: the
                    // dependencies build once for the whole matrix.
                    .env("CARGO_TARGET_DIR", cmd::root().join("target/generated")),
            )
            .with_context(|| format!("the {} project's own CI", variant.label))?;
            timings.push((format!("{} ({})", variant.label, check.join(" ")), started.elapsed()));
        }
    }
    report(&timings);
    Ok(())
}

/// A bad name and an unknown option are refused before anything is
/// written, by `xtask new` and by the template's own hook (what CLI users hit).
fn bad_input_is_refused(template: &Path) -> anyhow::Result<()> {
    for (name, defines) in [
        ("Bad Name", vec![]),
        ("acme-shop", vec!["nonsense=true".to_owned()]),
        ("acme-shop", vec!["docs=maybe".to_owned()]),
    ] {
        ensure!(new::check_inputs(name, &defines).is_err(), "{name} {defines:?} was accepted");
    }
    let scratch = tempfile::tempdir()?;
    eprintln!("expecting the template's name hook to refuse two names (its ⛔ lines below are the point):");
    // cargo-generate itself normalises names to kebab-case first (so
    // `Acme--Shop` becomes `acme-shop`); these stay invalid after that.
    for name in ["2shop".to_owned(), "a".repeat(41)] {
        let dir = scratch.path().join(&name);
        let result = new::generate(template, &dir, &name, &[]);
        ensure!(result.is_err(), "the template's hook accepted the name {name:?}");
        ensure!(!dir.exists(), "a refused generation left {} behind", dir.display());
    }
    eprintln!("bad names and options are refused");
    Ok(())
}

/// No marker, placeholder or reference name is left, and the name is where it belongs.
fn leftovers_and_name(dir: &Path) -> anyhow::Result<()> {
    let mut problems = Vec::new();
    for file in template::walk(dir)? {
        let Ok(text) = std::fs::read_to_string(&file) else { continue };
        let relative = file.strip_prefix(dir)?.display().to_string();
        let lower = text.to_ascii_lowercase();
        if lower.contains(template::NAME) {
            problems.push(format!("{relative} still says {}", template::NAME));
        }
        for leftover in ["@template", "{%", "{{project-name", "{{crate_name", "{{ project-name"] {
            if text.contains(leftover) {
                problems.push(format!("{relative} contains {leftover:?}"));
            }
        }
    }
    let expect = |path: &str, needle: &str, problems: &mut Vec<String>| {
        let text = std::fs::read_to_string(dir.join(path)).unwrap_or_default();
        if !text.contains(needle) {
            problems.push(format!("{path} lacks {needle:?}"));
        }
    };
    expect("Cargo.toml", &format!("name = \"{PROJECT}\""), &mut problems);
    expect(".cargo/config.toml", &format!("PROJECT_NAME = {{ value = \"{PROJECT}\""), &mut problems);
    expect("README.md", &format!("# {PROJECT}"), &mut problems);
    if !problems.is_empty() {
        bail!("generated project {}:\n  {}", dir.display(), problems.join("\n  "));
    }
    Ok(())
}

/// The non-Rust files the template renders, compared with (or written to)
/// `xtask/snapshots/<variant>/`, so a reviewer sees what a template change does.
fn snapshots(variant: &Variant, dir: &Path, bless: bool) -> anyhow::Result<()> {
    let mut files = BTreeMap::new();
    for file in template::walk(dir)? {
        let relative = file.strip_prefix(dir)?.to_string_lossy().replace('\\', "/");
        if snapshotted(&relative) {
            files.insert(relative, std::fs::read(&file)?);
        }
    }
    let snapshot_dir: PathBuf = cmd::root().join("xtask/snapshots").join(&variant.label);
    if bless {
        if snapshot_dir.exists() {
            std::fs::remove_dir_all(&snapshot_dir)?;
        }
        template::write_tree(&files, &snapshot_dir)?;
        eprintln!("wrote {} snapshots to {}", files.len(), snapshot_dir.display());
        return Ok(());
    }
    let differences = template::diff_tree(&files, &snapshot_dir)?;
    if differences > 0 {
        bail!(
            "{differences} rendered files of the {} project differ from xtask/snapshots/ (diff above); \
             if the change is intended, run `cargo xtask test-generator --bless --no-build` and commit the snapshots",
            variant.label
        );
    }
    Ok(())
}

/// Rendered files a reviewer should see: configuration and manifests, not
/// Rust sources (compiled and tested instead) or the lock file.
fn snapshotted(path: &str) -> bool {
    let name = Path::new(path).file_name().and_then(|n| n.to_str()).unwrap_or_default();
    let extension = Path::new(path).extension().and_then(|e| e.to_str()).unwrap_or_default();
    matches!(extension, "toml" | "yml" | "yaml" | "conf" | "json" | "md" | "env" | "example")
        && name != "Cargo.lock"
        && !path.contains("/snapshots/")
        || name == "Dockerfile"
}

fn report(timings: &[(String, Duration)]) {
    if timings.is_empty() {
        return;
    }
    eprintln!("\ngenerated projects (their own checks):");
    for (label, took) in timings {
        eprintln!("  {label:<34} {:>6.1} s", took.as_secs_f64());
    }
}
