//! What hadolint does not check in our Dockerfiles: every runtime stage
//! (one built `FROM` a distroless image) runs as a numeric non-root user,
//! has a `HEALTHCHECK` and an exec-form `ENTRYPOINT`; and no stage anywhere
//! switches to a user by name or to root.

/// One stage: its `FROM` line and the instructions after it.
struct Stage {
    base: String,
    name: String,
    instructions: Vec<(String, String)>,
}

/// The Dockerfile's stages, with continuation lines joined and comments dropped.
fn stages(text: &str) -> Vec<Stage> {
    let mut stages: Vec<Stage> = Vec::new();
    let mut logical = String::new();
    for line in text.lines() {
        let trimmed = line.trim();
        if trimmed.starts_with('#') || (trimmed.is_empty() && logical.is_empty()) {
            continue;
        }
        if let Some(head) = trimmed.strip_suffix('\\') {
            logical.push_str(head);
            logical.push(' ');
            continue;
        }
        logical.push_str(trimmed);
        let instruction = std::mem::take(&mut logical);
        let (keyword, rest) = instruction.split_once(char::is_whitespace).unwrap_or((&instruction, ""));
        let keyword = keyword.to_ascii_uppercase();
        let rest = rest.trim().to_owned();
        if keyword == "FROM" {
            let words: Vec<&str> = rest.split_whitespace().filter(|w| !w.starts_with("--")).collect();
            let base = words.first().copied().unwrap_or_default().to_owned();
            let name = match words.as_slice() {
                [_, as_, name] if as_.eq_ignore_ascii_case("as") => (*name).to_owned(),
                _ => base.clone(),
            };
            stages.push(Stage { base, name, instructions: Vec::new() });
        } else if let Some(stage) = stages.last_mut() {
            stage.instructions.push((keyword, rest));
        }
    }
    stages
}

/// Whether `user` is `UID` or `UID:GID` in digits, with UID not 0.
pub(super) fn numeric_non_root(user: &str) -> bool {
    let (uid, gid) = user.split_once(':').unwrap_or((user, "0"));
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    digits(uid) && digits(gid) && uid.parse::<u32>().is_ok_and(|u| u != 0)
}

/// The problems of one Dockerfile.
pub(super) fn check(text: &str) -> Vec<String> {
    let mut problems = Vec::new();
    for stage in stages(text) {
        let last =
            |keyword: &str| stage.instructions.iter().rev().find(|(k, _)| k == keyword).map(|(_, v)| v);
        for (_, user) in stage.instructions.iter().filter(|(k, _)| k == "USER") {
            if !numeric_non_root(user) {
                problems.push(format!("stage {}: USER {user} is not a numeric non-root UID:GID", stage.name));
            }
        }
        if !stage.base.starts_with("gcr.io/distroless/") {
            continue;
        }
        if last("USER").is_none() {
            problems.push(format!(
                "stage {}: a runtime stage needs USER UID:GID (numeric, not root)",
                stage.name
            ));
        }
        if last("HEALTHCHECK").is_none_or(|h| h.trim().eq_ignore_ascii_case("NONE")) {
            problems.push(format!("stage {}: a runtime stage needs a HEALTHCHECK", stage.name));
        }
        if !last("ENTRYPOINT").is_some_and(|e| e.starts_with('[')) {
            problems.push(format!(
                "stage {}: a runtime stage needs ENTRYPOINT in exec form (there is no shell)",
                stage.name
            ));
        }
    }
    problems
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = "\
FROM rust:1.95-slim-bookworm AS builder
RUN cargo build --release \\
    -p app
# a comment
FROM gcr.io/distroless/cc-debian12:nonroot AS app
COPY --from=builder /app/target/release/app /app/app
USER 65532:65532
HEALTHCHECK --interval=10s \\
    CMD [\"/app/app\", \"healthcheck\"]
ENTRYPOINT [\"/app/app\"]
";

    #[test]
    fn a_good_dockerfile_passes() {
        assert_eq!(check(GOOD), Vec::<String>::new());
    }

    #[test]
    fn the_runtime_needs_a_numeric_non_root_user() {
        let problems = check(&GOOD.replace("USER 65532:65532\n", ""));
        assert!(problems.iter().any(|p| p.contains("needs USER")), "{problems:?}");
        let problems = check(&GOOD.replace("USER 65532:65532", "USER nonroot"));
        assert!(problems.iter().any(|p| p.contains("USER nonroot")), "{problems:?}");
        let problems = check(&GOOD.replace("USER 65532:65532", "USER 0:0"));
        assert!(problems.iter().any(|p| p.contains("USER 0:0")), "{problems:?}");
    }

    #[test]
    fn the_runtime_needs_a_healthcheck_and_an_exec_entrypoint() {
        let no_check =
            GOOD.replace("HEALTHCHECK --interval=10s \\\n    CMD [\"/app/app\", \"healthcheck\"]\n", "");
        let problems = check(&no_check);
        assert!(problems.iter().any(|p| p.contains("HEALTHCHECK")), "{problems:?}");
        let problems = check(&GOOD.replace("ENTRYPOINT [\"/app/app\"]", "ENTRYPOINT /app/app"));
        assert!(problems.iter().any(|p| p.contains("exec form")), "{problems:?}");
    }

    #[test]
    fn users_are_numeric() {
        assert!(numeric_non_root("65532:65532"));
        assert!(numeric_non_root("101"));
        assert!(!numeric_non_root("0"));
        assert!(!numeric_non_root("root"));
        assert!(!numeric_non_root("65532:nogroup"));
        assert!(!numeric_non_root(""));
    }
}
