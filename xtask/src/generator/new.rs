//! `cargo xtask new`: a project from `template/`, through the cargo-generate
//! library: the engine `cargo generate --git <repo> template` runs.

use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use cargo_generate::{GenerateArgs, TemplatePath, Vcs};

use crate::cmd;
use crate::generator::template::{OPTIONS, validate_name};

/// Options of `new`.
#[derive(clap::Args)]
pub(crate) struct Args {
    /// Where the project goes; must not exist, or be empty.
    dir: PathBuf,
    /// The project's name: lowercase letters, digits and hyphens.
    #[arg(long)]
    name: String,
    /// An option, `NAME=true|false` (repeatable). Every option defaults to true.
    #[arg(short = 'd', long = "define", value_name = "NAME=VALUE")]
    defines: Vec<String>,
}

/// `cargo xtask new <dir> --name <name> [-d key=value …]`.
pub(crate) fn run(args: &Args) -> anyhow::Result<()> {
    let defines = check_inputs(&args.name, &args.defines)?;
    generate(&cmd::root().join("template"), &args.dir, &args.name, &defines)?;
    eprintln!(
        "created {} in {}\nnext: cd {} && cargo xtask up",
        args.name,
        args.dir.display(),
        args.dir.display()
    );
    Ok(())
}

/// Refuses a bad name or an unknown option before anything is written, and
/// returns the defines in cargo-generate's form.
pub(crate) fn check_inputs(name: &str, defines: &[String]) -> anyhow::Result<Vec<String>> {
    let mut problems = Vec::new();
    if let Err(problem) = validate_name(name) {
        problems.push(problem);
    }
    for define in defines {
        let Some((key, value)) = define.split_once('=') else {
            problems.push(format!("{define:?} is not NAME=VALUE"));
            continue;
        };
        if !OPTIONS.iter().any(|o| o.name == key) {
            let known: Vec<&str> = OPTIONS.iter().map(|o| o.name).collect();
            problems.push(format!("unknown option {key:?}; the options are {}", known.join(", ")));
        } else if !matches!(value, "true" | "false") {
            problems.push(format!("option {key} takes true or false, not {value:?}"));
        }
    }
    if problems.is_empty() { Ok(defines.to_vec()) } else { bail!("{}", problems.join("\n")) }
}

/// Generates `name` from `template` into `dir`, with every option not in
/// `defines` at its default. A failed generation leaves no folder behind.
pub(crate) fn generate(template: &Path, dir: &Path, name: &str, defines: &[String]) -> anyhow::Result<()> {
    if dir.exists() && std::fs::read_dir(dir)?.next().is_some() {
        bail!("{} exists and is not empty", dir.display());
    }
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let args = GenerateArgs {
        template_path: TemplatePath { path: Some(template.display().to_string()), ..TemplatePath::default() },
        name: Some(name.to_owned()),
        destination: Some(dir.to_path_buf()),
        init: true,
        silent: true,
        quiet: true,
        vcs: Some(Vcs::None),
        no_workspace: true,
        define: defines.to_vec(),
        ..GenerateArgs::default()
    };
    if let Err(err) = cargo_generate::generate(args) {
        let _ = std::fs::remove_dir_all(dir);
        return Err(err.context(format!("generating {name} from {}", template.display())));
    }
    Ok(())
}
