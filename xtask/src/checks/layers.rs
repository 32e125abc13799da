//! The layering rule of the service crates: inside each crate's `src/`, the
//! top-level modules depend on one another without a cycle, so every
//! dependency points one way (`docs/architecture.md` draws the layers).
//!
//! A module depends on another when its code names it through `crate::`
//! (alone or in a `use crate::{…}` group), or through enough `super::` to
//! leave the module. Comments do not count: a doc link is not a dependency.
//! Text, not the compiler: a renamed import (`use crate::items as i`) still
//! counts, a macro that builds a path does not.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::path::Path;

use anyhow::{Context, bail};

/// The crates whose `src/` must be acyclic.
// @template if worker
pub(super) const CRATES: &[&str] = &["api", "worker"];
// @template endif
// @template if not worker
// pub(super) const CRATES: &[&str] = &["api"];
// @template endif

/// Top-level module → the top-level modules it names.
pub(super) type Graph = BTreeMap<String, BTreeSet<String>>;

/// Fails with the cycles of any crate in [`CRATES`]; with `print`, writes
/// each crate's graph first.
pub(crate) fn lint_layers(root: &Path, print: bool) -> anyhow::Result<()> {
    let mut report = String::new();
    for name in CRATES {
        let graph = graph(&root.join(name).join("src"))?;
        if print {
            println!("{name}/src:");
            for (from, to) in &graph {
                println!("  {from} -> {}", to.iter().cloned().collect::<Vec<_>>().join(", "));
            }
        }
        for cycle in cycles(&graph) {
            let _ = writeln!(report, "  {name}/src: {}", cycle.join(" -> "));
        }
    }
    if !report.is_empty() {
        bail!("module dependency cycles (a dependency must point one way):\n{report}");
    }
    Ok(())
}

/// The dependency graph of the top-level modules under `src`.
pub(super) fn graph(src: &Path) -> anyhow::Result<Graph> {
    let mut files = Vec::new();
    collect(src, src, &mut files)?;
    let modules: BTreeSet<String> = files.iter().filter_map(|(parts, _)| top(parts)).collect();
    let mut graph = Graph::new();
    for (parts, text) in &files {
        let Some(from) = top(parts) else { continue };
        let depth = parts.len() - 1;
        let entry = graph.entry(from.clone()).or_default();
        for named in named_modules(text, depth) {
            if named != from && modules.contains(&named) {
                entry.insert(named);
            }
        }
    }
    graph.retain(|_, to| !to.is_empty());
    Ok(graph)
}

/// Every `.rs` file under `dir`, as its path components below `src` and text.
fn collect(src: &Path, dir: &Path, out: &mut Vec<(Vec<String>, String)>) -> anyhow::Result<()> {
    for entry in std::fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))? {
        let path = entry?.path();
        if path.is_dir() {
            collect(src, &path, out)?;
        } else if path.extension().is_some_and(|ext| ext == "rs") {
            let parts = path
                .strip_prefix(src)?
                .components()
                .map(|part| part.as_os_str().to_string_lossy().into_owned())
                .collect();
            out.push((parts, std::fs::read_to_string(&path)?));
        }
    }
    Ok(())
}

/// The top-level module a file belongs to; `None` for the crate roots.
fn top(parts: &[String]) -> Option<String> {
    let first = parts.first()?;
    if parts.len() == 1 && (first == "lib.rs" || first == "main.rs") {
        return None;
    }
    Some(first.trim_end_matches(".rs").to_owned())
}

/// The crate-level names a file's code refers to. `depth` is how many folders
/// below `src` the file is: that many `super::` stay inside its module.
fn named_modules(text: &str, depth: usize) -> BTreeSet<String> {
    let mut named = BTreeSet::new();
    for line in text.lines().filter(|line| !line.trim_start().starts_with("//")) {
        let mut rest = line;
        while let Some(at) = rest.find("crate::") {
            let before = rest[..at].chars().next_back();
            rest = &rest[at + "crate::".len()..];
            if before.is_some_and(|c| c.is_alphanumeric() || c == '_') {
                continue; // `mycrate::`, not `crate::`
            }
            if let Some(group) = rest.strip_prefix('{') {
                let end = group.find('}').unwrap_or(group.len());
                named.extend(group[..end].split(',').filter_map(first_ident));
            } else if let Some(ident) = first_ident(rest) {
                named.insert(ident);
            }
        }
        let mut rest = line;
        while let Some(at) = rest.find("super::") {
            let mut ups = 0;
            rest = &rest[at..];
            while let Some(after) = rest.strip_prefix("super::") {
                ups += 1;
                rest = after;
            }
            if ups > depth
                && let Some(ident) = first_ident(rest)
            {
                named.insert(ident);
            }
        }
    }
    named
}

/// The identifier `text` starts with, after blanks.
fn first_ident(text: &str) -> Option<String> {
    let text = text.trim_start();
    let end = text.find(|c: char| !(c.is_alphanumeric() || c == '_')).unwrap_or(text.len());
    (end > 0).then(|| text[..end].to_owned())
}

/// Each cycle once, as the path that closes it (`a -> b -> a`).
pub(super) fn cycles(graph: &Graph) -> Vec<Vec<String>> {
    fn visit<'g>(
        node: &'g str,
        graph: &'g Graph,
        path: &mut Vec<&'g str>,
        done: &mut BTreeSet<&'g str>,
        found: &mut Vec<Vec<String>>,
    ) {
        if let Some(at) = path.iter().position(|seen| *seen == node) {
            let mut cycle: Vec<String> = path[at..].iter().map(|s| (*s).to_owned()).collect();
            cycle.push(node.to_owned());
            found.push(cycle);
            return;
        }
        if !done.insert(node) {
            return;
        }
        path.push(node);
        for next in graph.get(node).into_iter().flatten() {
            visit(next, graph, path, done, found);
        }
        path.pop();
    }
    let mut found = Vec::new();
    let mut done = BTreeSet::new();
    for node in graph.keys() {
        visit(node, graph, &mut Vec::new(), &mut done, &mut found);
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, files: &[(&str, &str)]) {
        for (path, text) in files {
            let path = dir.join(path);
            std::fs::create_dir_all(path.parent().expect("a parent")).expect("mkdir");
            std::fs::write(path, text).expect("write");
        }
    }

    #[test]
    fn names_through_paths_groups_and_super_but_not_comments() {
        let dir = crate::cmd::Scratch::new("layers").expect("scratch");
        write(
            dir.path(),
            &[
                ("lib.rs", "pub mod a; pub mod b; pub mod c; pub mod d; pub mod e;"),
                ("a.rs", "use crate::{b::X, c};\n// crate::d is only mentioned\n"),
                ("b.rs", "fn f() { crate::c::g(); }"),
                ("c.rs", ""),
                ("d/inner.rs", "use super::Local; use super::super::e::Y;"),
                ("e.rs", "/// See [`crate::a`].\nfn h() {}"),
            ],
        );
        let graph = graph(dir.path()).expect("graph");
        let edges: Vec<String> =
            graph.iter().flat_map(|(from, to)| to.iter().map(move |to| format!("{from}->{to}"))).collect();
        assert_eq!(edges, ["a->b", "a->c", "b->c", "d->e"]);
        assert!(cycles(&graph).is_empty());
    }

    #[test]
    fn a_dependency_back_up_the_layers_is_a_cycle() {
        let dir = crate::cmd::Scratch::new("layers").expect("scratch");
        write(
            dir.path(),
            &[
                ("lib.rs", ""),
                ("config.rs", "use crate::ratelimit::Policies;"),
                ("ratelimit.rs", "use crate::redis::Conn;"),
                ("redis.rs", "use crate::config::RedisConfig;"),
                ("items.rs", "use crate::redis::Conn;"),
            ],
        );
        let cycles = cycles(&graph(dir.path()).expect("graph"));
        assert_eq!(cycles, [["config", "ratelimit", "redis", "config"]]);
    }

    #[test]
    fn the_services_are_acyclic() {
        let root = crate::cmd::root();
        lint_layers(&root, false).expect("no cycles");
    }
}
