//! `cargo xtask template`: renders the repository root into `template/`, a
//! plain cargo-generate template.
//!
//! The root stays an ordinary workspace with every option on. Two things in
//! it are turned into Liquid here, and nothing else:
//!
//! - **The name.** `gantry` becomes `{{project-name}}` in the non-Rust files
//!   that carry it. Rust files never carry it (they read `PROJECT_NAME`,
//!   set in `.cargo/config.toml`); rendering fails if one does.
//! - **Marker lines.** `// @template if NAME` … `// @template endif` (with
//!   `#` or `<!-- -->` as the file's comments need) become `{% if NAME %}` …
//!   `{% endif %}`, glued to the next line so no blank line is left behind.
//!   `@template if not NAME` blocks hold the code for the option being off;
//!   the root has every option on, so their lines stay commented there and
//!   are uncommented here. `@template if repo` blocks exist only in this
//!   repository (the renderer's own wiring) and are dropped.
//!
//! Only files that end up with Liquid are listed in `[template] include`;
//! every other file is copied verbatim by cargo-generate.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, bail, ensure};

use crate::cmd;

/// The name of the reference instance, replaced by the user's.
pub(crate) const NAME: &str = "gantry";

/// An optional part of the platform.
pub(crate) struct Opt {
    /// The placeholder name, used in markers and `-d NAME=true|false`.
    pub name: &'static str,
    /// The question cargo-generate asks.
    pub prompt: &'static str,
    /// Files and folders dropped when the option is off.
    pub ignore_when_off: &'static [&'static str],
    /// What the generator's tests run for the project with only this option off.
    pub when_off: Coverage,
}

/// How much of its own CI a generated project runs in the generator's tests.
/// Every variant is generated, checked for leftovers and snapshotted. The
/// full suite runs where behaviour differs from every other run: the root
/// is all on, and the all-off project runs it with every option's off-side
/// behaviour (and the new name). An option whose off-side behaviour depends
/// on another option being on would need `Full`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Coverage {
    /// Its own full `cargo xtask ci` (but the Compose test, which the root
    /// runs on the same Dockerfile and Compose file).
    Full,
    /// Formatting, clippy and the static checks: the code builds and lints
    /// without the option, and the behaviour it removes is tested in the
    /// all-off project (which, renamed, also proves the name is used
    /// everywhere it must be; all-on's behaviour is the root's).
    Lint,
    /// Only the static checks of `infra/`: the option changes manifests only.
    Infra,
}

/// Every option. Each defaults to on: the defaults give the full platform.
pub(crate) const OPTIONS: &[Opt] = &[
    Opt {
        name: "docs",
        prompt: "Serve interactive API docs (Swagger UI, compiled into the binary) at /docs?",
        ignore_when_off: &[],
        when_off: Coverage::Lint,
    },
    Opt {
        name: "redis",
        prompt: "Use Redis for the response cache and rate limits shared by all replicas?",
        ignore_when_off: &[
            "api/src/items/cache.rs",
            "api/src/config/redis.rs",
            "api/src/redis_client.rs",
            "api/src/redis_client",
            "api/src/ratelimit/distributed.rs",
            "api/src/ratelimit/gcra.lua",
            "api/tests/it/cache.rs",
            "api/tests/it/redis_failure.rs",
            "api/tests/it/shared_limits.rs",
            "infra/observability/grafana/dashboards/cache.json",
            "testkit/src/redis_server.rs",
            "infra/k8s/overlays/dev/redis.yaml",
            "infra/docker/stand-ins/redis.Dockerfile",
            "infra/docker/stand-ins/redis-entrypoint.sh",
        ],
        when_off: Coverage::Lint,
    },
    Opt {
        name: "worker",
        prompt: "Offload slow work to a RabbitMQ worker (202 Accepted jobs with a transactional outbox)?",
        ignore_when_off: &[
            "jobs",
            "worker",
            "api/src/config/relay.rs",
            "api/migrations/20261128000003_jobs.sql",
            "api/migrations/20261128000004_job_trace.sql",
            "api/src/offload.rs",
            "api/src/offload",
            "api/src/routes/v1/jobs.rs",
            "api/tests/it/jobs.rs",
            "docs/jobs.md",
            "infra/observability/grafana/dashboards/jobs.json",
            "testkit/src/rabbit_server.rs",
            "infra/k8s/base/worker",
            "infra/k8s/overlays/dev/rabbitmq.yaml",
            "infra/docker/stand-ins/rabbitmq.Dockerfile",
            "infra/docker/stand-ins/rabbitmq-entrypoint.sh",
        ],
        when_off: Coverage::Lint,
    },
    Opt {
        name: "keda",
        prompt: "Autoscale the worker on queue length with KEDA (otherwise a plain HorizontalPodAutoscaler)?",
        ignore_when_off: &[],
        when_off: Coverage::Infra,
    },
];

/// Root paths that only this repository needs (prefixes ending in `/` are folders).
const REPO_ONLY: &[&str] = &[
    "README.md",
    "template/",
    "xtask/src/generator.rs",
    "xtask/src/generator/",
    "xtask/project/",
    "xtask/snapshots/",
];

/// Files written for generated projects only, and where they land.
const MOVED: &[(&str, &str)] = &[
    ("xtask/project/README.md", "README.md"),
    ("xtask/project/.github/workflows/ci.yml", ".github/workflows/ci.yml"),
];

/// The hook that refuses bad names for users of the cargo-generate CLI, with
/// the same rule as [`validate_name`].
const NAME_HOOK: &str = r#"// Refuses project names that cannot serve as a Kubernetes namespace, a
// Postgres database name and a queue prefix alike.
let name = variable::get("project-name");
let valid = name.len() >= 2 && name.len() <= 40;
let previous = "-";
for c in name {
    let lower = c >= 'a' && c <= 'z';
    let digit = c >= '0' && c <= '9';
    if !(lower || digit || c == '-') { valid = false; }
    if c == '-' && previous == "-" { valid = false; }
    previous = c.to_string();
}
let first = name.sub_string(0, 1);
if !(first >= "a" && first <= "z") || previous == "-" { valid = false; }
if !valid {
    abort("invalid project name '" + name + "': use 2 to 40 characters, lowercase letters, digits and single hyphens, starting with a letter and not ending with a hyphen");
}
"#;

/// Why a name is refused, if it is.
pub(crate) fn validate_name(name: &str) -> Result<(), String> {
    let ok = (2..=40).contains(&name.len())
        && name.starts_with(|c: char| c.is_ascii_lowercase())
        && !name.ends_with('-')
        && !name.contains("--")
        && name.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
    if ok {
        Ok(())
    } else {
        Err(format!(
            "invalid project name {name:?}: use 2 to 40 characters, lowercase letters, digits and single \
             hyphens, starting with a letter and not ending with a hyphen (it names the Kubernetes \
             namespace, the database and the queues)"
        ))
    }
}

/// The rendered template: every file by its path inside `template/`.
pub(crate) struct Rendered {
    files: BTreeMap<String, Vec<u8>>,
}

/// Options of `template`.
#[derive(clap::Args)]
pub(crate) struct Args {
    /// Fail, with a diff, if `template/` differs from a fresh render.
    #[arg(long)]
    check: bool,
}

/// `cargo xtask template [--check]`.
pub(crate) fn run(args: &Args) -> anyhow::Result<()> {
    let rendered = render()?;
    let dir = cmd::root().join("template");
    if args.check {
        return check(&rendered, &dir);
    }
    if dir.exists() {
        std::fs::remove_dir_all(&dir).context("clearing template/")?;
    }
    write_tree(&rendered.files, &dir)?;
    eprintln!("rendered {} files into template/", rendered.files.len());
    Ok(())
}

/// Renders the root into memory, including a `Cargo.lock` pruned to what a
/// generated project uses.
pub(crate) fn render() -> anyhow::Result<Rendered> {
    let root = cmd::root();
    let mut files = BTreeMap::new();
    let mut include = BTreeSet::new();
    for source in source_files(&root)? {
        let target = MOVED.iter().find(|(from, _)| *from == source).map_or(source.as_str(), |(_, to)| to);
        let bytes = std::fs::read(root.join(&source)).with_context(|| format!("reading {source}"))?;
        let Ok(text) = String::from_utf8(bytes.clone()) else {
            files.insert(target.to_owned(), bytes);
            continue;
        };
        let file = render_text(&source, &text)?;
        if file.templated {
            include.insert(target.to_owned());
        }
        files.insert(target.to_owned(), file.text.into_bytes());
    }
    files.insert("hooks/validate-name.rhai".to_owned(), hook().into_bytes());
    // The lock differs by option, so it is rendered too (see `variant_lock`).
    include.insert("Cargo.lock".to_owned());
    files.insert("cargo-generate.toml".to_owned(), manifest(&include).into_bytes());
    let lock = variant_lock(&files)?;
    files.insert("Cargo.lock".to_owned(), lock.into_bytes());
    Ok(Rendered { files })
}

/// The files of the root: tracked, plus new ones git does not ignore.
fn source_files(root: &Path) -> anyhow::Result<Vec<String>> {
    let output = Command::new("git")
        .args(["ls-files", "--cached", "--others", "--exclude-standard", "-z"])
        .current_dir(root)
        .output()
        .context("listing the repository's files with git")?;
    ensure!(output.status.success(), "git ls-files failed: {}", String::from_utf8_lossy(&output.stderr));
    let mut files: Vec<String> = output
        .stdout
        .split(|b| *b == 0)
        .filter(|p| !p.is_empty())
        .map(|p| String::from_utf8_lossy(p).into_owned())
        .filter(|p| root.join(p).is_file())
        .filter(|p| {
            MOVED.iter().any(|(from, _)| from == p)
                || !REPO_ONLY.iter().any(|r| if r.ends_with('/') { p.starts_with(r) } else { p == r })
        })
        .collect();
    files.sort();
    files.dedup();
    Ok(files)
}

/// One rendered file.
#[derive(Debug, PartialEq, Eq)]
struct RenderedFile {
    text: String,
    /// Whether it holds Liquid (and so belongs in `[template] include`).
    templated: bool,
}

#[derive(Debug, PartialEq, Eq)]
enum Marker {
    If { name: String, negated: bool },
    EndIf,
}

/// Parses a marker line (`// @template if docs`, `# @template endif`, …).
fn marker(line: &str) -> anyhow::Result<Option<Marker>> {
    let trimmed = line.trim();
    let Some(body) = ["//", "#", "<!--"].iter().find_map(|p| trimmed.strip_prefix(p)) else {
        return Ok(None);
    };
    let body = body.trim().trim_end_matches("-->").trim();
    let Some(directive) = body.strip_prefix("@template") else { return Ok(None) };
    let words: Vec<&str> = directive.split_whitespace().collect();
    match words.as_slice() {
        ["if", name] => Ok(Some(Marker::If { name: (*name).to_owned(), negated: false })),
        ["if", "not", name] => Ok(Some(Marker::If { name: (*name).to_owned(), negated: true })),
        ["endif"] => Ok(Some(Marker::EndIf)),
        _ => bail!(
            "unknown template marker {trimmed:?} (expected `@template if [not] NAME` or `@template endif`)"
        ),
    }
}

/// Removes one level of line comment (`// `, `# ` or Markdown's
/// `<!-- … -->`), keeping indentation.
fn uncomment(line: &str) -> Option<String> {
    let indent = line.len() - line.trim_start().len();
    let rest = &line[indent..];
    if let Some(body) = rest.strip_prefix("<!-- ") {
        let newline = if body.ends_with('\n') { "\n" } else { "" };
        let body = body.trim_end().strip_suffix(" -->")?;
        return Some(format!("{}{body}{newline}", &line[..indent]));
    }
    let body = ["// ", "//", "# ", "#"].iter().find_map(|p| rest.strip_prefix(p))?;
    Some(format!("{}{body}", &line[..indent]))
}

fn has_liquid_syntax(line: &str) -> bool {
    ["{{", "}}", "{%", "%}"].iter().any(|s| line.contains(s))
}

/// Renders one text file; `path` is for messages and the Rust rule.
fn render_text(path: &str, text: &str) -> anyhow::Result<RenderedFile> {
    struct Line {
        tags: String,
        text: String,
    }
    let rust = Path::new(path).extension().is_some_and(|e| e == "rs");
    let mut lines: Vec<Line> = Vec::new();
    let mut stack: Vec<Marker> = Vec::new();
    let mut tags = String::new();
    let mut templated = false;
    for (index, line) in text.split_inclusive('\n').enumerate() {
        let at = || format!("{path}:{}", index + 1);
        let in_repo_block = stack.iter().any(|m| matches!(m, Marker::If { name, .. } if name == "repo"));
        match marker(line).with_context(at)? {
            Some(Marker::If { name, negated }) => {
                if name != "repo" && !in_repo_block {
                    ensure!(OPTIONS.iter().any(|o| o.name == name), "{}: unknown option {name:?}", at());
                    let _ = write!(tags, "{{% {} {name} %}}", if negated { "unless" } else { "if" });
                    templated = true;
                }
                stack.push(Marker::If { name, negated });
            }
            Some(Marker::EndIf) => match stack.pop() {
                Some(Marker::If { name, negated }) if name != "repo" && !in_repo_block => {
                    tags.push_str(if negated { "{% endunless %}" } else { "{% endif %}" });
                }
                Some(_) => {}
                None => bail!("{}: `@template endif` without `@template if`", at()),
            },
            None if in_repo_block => {}
            None => {
                let negated = matches!(stack.last(), Some(Marker::If { negated: true, .. }));
                let mut content = if negated {
                    uncomment(line).with_context(|| {
                        format!(
                            "{}: lines in an `@template if not` block must be commented in the root",
                            at()
                        )
                    })?
                } else {
                    line.to_owned()
                };
                let mentions_name = content.to_ascii_lowercase().contains(NAME);
                if rust {
                    ensure!(
                        !mentions_name,
                        "{}: Rust files must not contain the project name; use env!(\"PROJECT_NAME\")",
                        at()
                    );
                } else if mentions_name {
                    ensure!(
                        !has_liquid_syntax(&content),
                        "{}: a line with the name may not hold {{{{ or {{%",
                        at()
                    );
                    content = replace_name(&content);
                    templated = true;
                }
                lines.push(Line { tags: std::mem::take(&mut tags), text: content });
            }
        }
    }
    ensure!(stack.is_empty(), "{path}: an `@template if` is never closed");
    let mut out = String::with_capacity(text.len());
    for line in lines {
        out.push_str(&line.tags);
        // Text that looks like Liquid (GitHub `${{ }}`, Rust `format!("{{")`)
        // must come out as written.
        if templated && has_liquid_syntax(&line.text) && !line.text.contains("{{project-name}}") {
            let (body, newline) =
                line.text.strip_suffix('\n').map_or((line.text.as_str(), ""), |b| (b, "\n"));
            let _ = write!(out, "{{% raw %}}{body}{{% endraw %}}{newline}");
        } else {
            out.push_str(&line.text);
        }
    }
    out.push_str(&tags);
    Ok(RenderedFile { text: out, templated })
}

/// `gantry`, in any case, becomes `{{project-name}}`.
fn replace_name(line: &str) -> String {
    let lower = line.to_ascii_lowercase();
    let mut out = String::with_capacity(line.len());
    let mut last = 0;
    for (at, _) in lower.match_indices(NAME) {
        out.push_str(&line[last..at]);
        out.push_str("{{project-name}}");
        last = at + NAME.len();
    }
    out.push_str(&line[last..]);
    out
}

/// `template/cargo-generate.toml`.
fn manifest(include: &BTreeSet<String>) -> String {
    let mut out = String::from(
        "# Written by `cargo xtask template` from the repository root. Do not edit:\n\
         # change the root and render again.\n\n\
         [template]\ncargo_generate_version = \">=0.26.0\"\n\
         # Only these files hold Liquid; the rest are copied as they are.\ninclude = [\n",
    );
    for path in include {
        let _ = writeln!(out, "    {path:?},");
    }
    out.push_str("]\nignore = [\"hooks\"]\n\n[hooks]\npre = [\"hooks/validate-name.rhai\"]\n");
    for option in OPTIONS {
        let _ = write!(
            out,
            "\n[placeholders.{}]\ntype = \"bool\"\nprompt = {:?}\ndefault = true\n",
            option.name, option.prompt
        );
        if !option.ignore_when_off.is_empty() {
            let _ =
                write!(out, "\n[conditional.'!{}']\nignore = {:?}\n", option.name, option.ignore_when_off);
        }
    }
    out
}

/// The hook: checks the name, then sets `lock_variant` (one `1` or `0` per
/// option, in `OPTIONS` order) for the rendered `Cargo.lock`.
fn hook() -> String {
    let mut out = NAME_HOOK.to_owned();
    out.push_str(
        "\n// Which combination of options this is, for the rendered Cargo.lock.\nlet lock_variant = \"\";\n",
    );
    for option in OPTIONS {
        let _ = writeln!(
            out,
            "let on = variable::get({name:?});\nlock_variant += if on == true || on == \"true\" {{ \"1\" }} else {{ \"0\" }};",
            name = option.name
        );
    }
    out.push_str("variable::set(\"lock_variant\", lock_variant);\n");
    out
}

/// Every combination of options, as `lock_variant` spells it and as `-d`
/// defines.
fn combinations() -> Vec<(String, Vec<String>)> {
    (0..1u32 << OPTIONS.len())
        .map(|bits| {
            let on = |i: usize| bits & (1 << i) == 0;
            let variant = (0..OPTIONS.len()).map(|i| if on(i) { '1' } else { '0' }).collect();
            let defines = OPTIONS.iter().enumerate().map(|(i, o)| format!("{}={}", o.name, on(i))).collect();
            (variant, defines)
        })
        .collect()
}

/// `Cargo.lock` for every combination of options in one file: the root's
/// lock, pruned by cargo for each combination (a probe project per
/// combination), merged with Liquid conditions around the entries that only
/// some combinations have. Each generated project then gets exactly the lock
/// cargo would write for it, so it builds `--locked`.
fn variant_lock(files: &BTreeMap<String, Vec<u8>>) -> anyhow::Result<String> {
    // Resolution is offline (it must not pick newer versions), and it needs
    // every locked package, including other platforms' ones that no build
    // here downloads.
    cmd::run(cmd::cargo().args(["fetch", "--locked", "--quiet"]).current_dir(cmd::root()))?;
    let scratch = tempfile::tempdir()?;
    let template = scratch.path().join("template");
    let mut with_lock = files.clone();
    with_lock.insert("Cargo.lock".to_owned(), std::fs::read(cmd::root().join("Cargo.lock"))?);
    write_tree(&with_lock, &template)?;
    let mut locks = Vec::new();
    for (variant, defines) in combinations() {
        let project = scratch.path().join(format!("probe-{variant}"));
        crate::generator::new::generate(&template, &project, "lock-probe", &defines)?;
        let output = cmd::cargo()
            .args(["metadata", "--format-version", "1", "--offline"])
            .current_dir(&project)
            .output()
            .context("running cargo metadata on a probe project")?;
        // Resolving rewrites the lock without the entries nothing uses.
        ensure!(
            output.status.success(),
            "cargo metadata failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        locks.push((variant, std::fs::read_to_string(project.join("Cargo.lock"))?));
    }
    merge_locks(&locks)
}

/// Merges lock files into one Liquid template; see [`variant_lock`].
fn merge_locks(locks: &[(String, String)]) -> anyhow::Result<String> {
    let mut header = None;
    // Entries in an order consistent with every lock, with the variants
    // that have each.
    let mut merged: Vec<(&str, Vec<&str>)> = Vec::new();
    for (variant, lock) in locks {
        let mut blocks = lock.trim_end().split("\n\n");
        let head = blocks.next().unwrap_or_default();
        ensure!(*header.get_or_insert(head) == head, "the probe locks disagree on their header");
        let mut at = 0;
        for block in blocks {
            if let Some(found) = merged.iter().position(|(b, _)| *b == block) {
                merged[found].1.push(variant);
                at = found + 1;
            } else {
                merged.insert(at, (block, vec![variant.as_str()]));
                at += 1;
            }
        }
    }
    let mut out = header.unwrap_or_default().to_owned();
    for (block, variants) in merged {
        if variants.len() == locks.len() {
            let _ = write!(out, "\n\n{block}");
        } else {
            let condition =
                variants.iter().map(|v| format!("lock_variant == \"{v}\"")).collect::<Vec<_>>().join(" or ");
            let _ = write!(out, "{{% if {condition} %}}\n\n{block}{{% endif %}}");
        }
    }
    out.push('\n');
    Ok(out)
}

/// Writes every file under `dir`.
pub(crate) fn write_tree(files: &BTreeMap<String, Vec<u8>>, dir: &Path) -> anyhow::Result<()> {
    for (path, bytes) in files {
        let target = dir.join(path);
        if let Some(parent) = target.parent() {
            std::fs::create_dir_all(parent)?;
        }
        std::fs::write(&target, bytes).with_context(|| format!("writing {}", target.display()))?;
        #[cfg(unix)]
        copy_mode(&cmd::root().join(source_of(path)), &target)?;
    }
    Ok(())
}

fn source_of(path: &str) -> PathBuf {
    MOVED
        .iter()
        .find(|(_, to)| *to == path)
        .map_or_else(|| PathBuf::from(path), |(from, _)| PathBuf::from(from))
}

/// Keeps the executable bit (`.ci/run`).
#[cfg(unix)]
fn copy_mode(source: &Path, target: &Path) -> anyhow::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    if let Ok(meta) = std::fs::metadata(source) {
        let mode = meta.permissions().mode();
        std::fs::set_permissions(target, std::fs::Permissions::from_mode(mode))?;
    }
    Ok(())
}

/// Compares `expected` with the files under `dir`, printing a diff for
/// each difference. Returns how many files differ.
pub(crate) fn diff_tree(expected: &BTreeMap<String, Vec<u8>>, dir: &Path) -> anyhow::Result<usize> {
    let mut on_disk = BTreeSet::new();
    if dir.exists() {
        for entry in walk(dir)? {
            on_disk.insert(entry.strip_prefix(dir)?.to_string_lossy().replace('\\', "/"));
        }
    }
    let mut differences = 0;
    for (path, bytes) in expected {
        let actual = std::fs::read(dir.join(path)).ok();
        if actual.as_deref() == Some(bytes.as_slice()) {
            continue;
        }
        differences += 1;
        let old = actual.map(|a| String::from_utf8_lossy(&a).into_owned()).unwrap_or_default();
        let new = String::from_utf8_lossy(bytes);
        let diff = similar::TextDiff::from_lines(old.as_str(), new.as_ref());
        eprintln!(
            "{}",
            diff.unified_diff().context_radius(2).header(&format!("a/{path}"), &format!("b/{path}"))
        );
    }
    for extra in on_disk.iter().filter(|p| !expected.contains_key(*p)) {
        differences += 1;
        eprintln!("--- a/{extra}\n+++ /dev/null (no longer rendered)");
    }
    Ok(differences)
}

fn check(rendered: &Rendered, dir: &Path) -> anyhow::Result<()> {
    let differences = diff_tree(&rendered.files, dir)?;
    if differences > 0 {
        bail!(
            "template/ is stale ({differences} files differ from a fresh render, diff above): \
             run `cargo xtask template` and commit template/"
        );
    }
    eprintln!("template/ is up to date ({} files)", rendered.files.len());
    Ok(())
}

/// Every file below `dir`.
pub(crate) fn walk(dir: &Path) -> anyhow::Result<Vec<PathBuf>> {
    let mut files = Vec::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(next) = pending.pop() {
        for entry in std::fs::read_dir(&next)? {
            let entry = entry?;
            let path = entry.path();
            if entry.file_type()?.is_dir() {
                pending.push(path);
            } else {
                files.push(path);
            }
        }
    }
    files.sort();
    Ok(files)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn render(path: &str, text: &str) -> RenderedFile {
        render_text(path, text).expect("renders")
    }

    #[test]
    fn markers_become_liquid_glued_to_the_next_line() {
        let out = render("a.toml", "a = 1\n# @template if docs\nb = 2\n# @template endif\nc = 3\n");
        assert_eq!(out.text, "a = 1\n{% if docs %}b = 2\n{% endif %}c = 3\n");
        assert!(out.templated);
    }

    #[test]
    fn locks_merge_with_a_condition_on_what_only_some_variants_have() {
        let full = "# head\nversion = 4\n\n[[package]]\nname = \"a\"\n\n[[package]]\nname = \"api\"\ndependencies = [\"r\"]\n\n[[package]]\nname = \"r\"\n";
        let lite = "# head\nversion = 4\n\n[[package]]\nname = \"a\"\n\n[[package]]\nname = \"api\"\n";
        let merged = merge_locks(&[("1".into(), full.into()), ("0".into(), lite.into())]).expect("merged");
        let render = |variant: &str| {
            // A tiny Liquid for exactly the shape merge_locks writes.
            let mut out = String::new();
            let mut rest = merged.as_str();
            while let Some(start) = rest.find("{% if ") {
                out.push_str(&rest[..start]);
                let end = rest[start..].find(" %}").expect("tag end") + start;
                let keep = rest[start..end].contains(&format!("\"{variant}\""));
                let body_end = rest[end..].find("{% endif %}").expect("endif") + end;
                if keep {
                    out.push_str(&rest[end + 3..body_end]);
                }
                rest = &rest[body_end + "{% endif %}".len()..];
            }
            out.push_str(rest);
            out
        };
        assert_eq!(render("1"), full);
        assert_eq!(render("0"), lite);
    }

    #[test]
    fn markdown_comments_are_uncommented_too() {
        assert_eq!(uncomment("<!-- some *text* -->\n").as_deref(), Some("some *text*\n"));
        assert_eq!(uncomment("  # key = 1\n").as_deref(), Some("  key = 1\n"));
        assert_eq!(uncomment("plain\n"), None);
    }

    #[test]
    fn negated_blocks_are_uncommented() {
        let out = render(
            "a.rs",
            "fn a() {}\n// @template if not docs\n// fn b() {\n//     x();\n// }\n// @template endif\n",
        );
        assert_eq!(out.text, "fn a() {}\n{% unless docs %}fn b() {\n    x();\n}\n{% endunless %}");
    }

    #[test]
    fn repo_blocks_vanish_without_a_trace() {
        let out = render("a.rs", "mod a;\n// @template if repo\nmod template;\n// @template endif\nmod b;\n");
        assert_eq!(out, RenderedFile { text: "mod a;\nmod b;\n".into(), templated: false });
    }

    #[test]
    fn the_name_becomes_a_placeholder_in_any_case() {
        let out = render("c.yml", "name: gantry\ntitle: Gantry API\n");
        assert_eq!(out.text, "name: {{project-name}}\ntitle: {{project-name}} API\n");
    }

    #[test]
    fn liquid_lookalikes_survive_in_templated_files() {
        let out = render("ci.yml", "name: gantry\nrun: echo ${{ matrix.os }}\n");
        assert_eq!(out.text, "name: {{project-name}}\n{% raw %}run: echo ${{ matrix.os }}{% endraw %}\n");
        let untouched = render("ci.yml", "run: echo ${{ matrix.os }}\n");
        assert_eq!(untouched.text, "run: echo ${{ matrix.os }}\n");
        assert!(!untouched.templated);
    }

    #[test]
    fn rust_files_may_not_carry_the_name_and_unknown_options_are_refused() {
        assert!(render_text("a.rs", "const N: &str = \"gantry\";\n").is_err());
        assert!(render_text("a.toml", "# @template if nonsense\nx = 1\n# @template endif\n").is_err());
        assert!(render_text("a.toml", "# @template if docs\nx = 1\n").is_err());
        assert!(render_text("a.toml", "# @template endif\n").is_err());
        assert!(render_text("a.rs", "// @template if not docs\nlet x = 1;\n// @template endif\n").is_err());
    }

    #[test]
    fn names_are_checked_before_anything_is_written() {
        for good in ["acme-shop", "ab", "shop2"] {
            assert!(validate_name(good).is_ok(), "{good}");
        }
        for bad in ["Acme", "a", "-shop", "shop-", "acme--shop", "acme_shop", "2shop", &"x".repeat(41)] {
            assert!(validate_name(bad).is_err(), "{bad}");
        }
    }
}
