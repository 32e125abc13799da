//! `synthetic`: a job whose cost and failure are chosen by its input, for
//! load tests and fault drills. It sleeps `work_ms` inside its effect's
//! transaction (so it holds a worker slot and a connection, like real work)
//! and can fail the way real jobs do: transiently for its first attempts,
//! permanently, or by panicking on every delivery (a poison message).

use serde::Deserialize;

use super::{Kind, Violation};

/// The kind.
pub struct Synthetic;

/// Longest `work_ms` accepted.
pub const MAX_WORK_MS: u64 = 60_000;

/// How a synthetic job fails.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Fail {
    /// It succeeds.
    #[default]
    Never,
    /// Its first `failures` attempts fail with a retryable error.
    Transient,
    /// It fails with an error that retrying cannot fix.
    Permanent,
    /// It panics, every time: a poison message.
    Panic,
}

/// Its input.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Input {
    /// Milliseconds of work, 0 to 60000.
    #[serde(default)]
    pub work_ms: u64,
    /// How it fails.
    #[serde(default)]
    pub fail: Fail,
    /// With `transient`: how many attempts fail before one succeeds.
    #[serde(default = "one")]
    pub failures: u32,
}

const fn one() -> u32 {
    1
}

impl Kind for Synthetic {
    const NAME: &'static str = "synthetic";
    const SUMMARY: &'static str = "configurable cost and failure, for load tests";
    const INPUT: &'static str =
        r#"{"work_ms": 0..60000, "fail": "never|transient|permanent|panic", "failures": n}"#;
    type Input = Input;

    fn check(input: &Input) -> Vec<Violation> {
        if input.work_ms > MAX_WORK_MS {
            return vec![Violation::new("/input/work_ms", "out_of_range", format!("at most {MAX_WORK_MS}"))];
        }
        Vec::new()
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn defaults_and_limits() {
        let input = Synthetic::parse(&json!({})).expect("empty is fine");
        assert_eq!((input.work_ms, input.fail, input.failures), (0, Fail::Never, 1));
        let refused = Synthetic::parse(&json!({"work_ms": MAX_WORK_MS + 1})).expect_err("too long");
        assert_eq!(refused[0].pointer, "/input/work_ms");
        assert!(Synthetic::parse(&json!({"fail": "sometimes"})).is_err());
    }
}
