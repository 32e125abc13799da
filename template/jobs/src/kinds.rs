//! Job kinds: each one's name and input, checked when the job is submitted
//! so that a job the worker could never run is refused with a 422 instead
//! of failing later.
//!
//! Adding a kind: a file here (its name, input type and rules), one line in
//! [`NAMES`] and [`validate`], and its effect in `worker/src/kinds/`.

pub mod items_report;
pub mod synthetic;

use serde::de::DeserializeOwned;
use serde_json::Value;

pub use items_report::ItemsReport;
pub use synthetic::Synthetic;

/// A job kind as both sides see it.
pub trait Kind {
    /// The unique name clients submit and messages carry.
    const NAME: &'static str;
    /// The input, as JSON; unknown fields are refused.
    type Input: DeserializeOwned;

    /// Rules beyond the input's shape.
    fn check(input: &Self::Input) -> Vec<Violation> {
        let _ = input;
        Vec::new()
    }

    /// Parses and checks an input.
    fn parse(input: &Value) -> Result<Self::Input, Vec<Violation>> {
        let parsed: Self::Input = serde_json::from_value(input.clone())
            .map_err(|err| vec![Violation::new("/input", "invalid_input", err.to_string())])?;
        let violations = Self::check(&parsed);
        if violations.is_empty() { Ok(parsed) } else { Err(violations) }
    }
}

/// Every kind's name.
pub const NAMES: &[&str] = &[ItemsReport::NAME, Synthetic::NAME];

/// Checks a submission: the kind exists and its input is valid.
pub fn validate(kind: &str, input: &Value) -> Result<(), Vec<Violation>> {
    match kind {
        ItemsReport::NAME => ItemsReport::parse(input).map(drop),
        Synthetic::NAME => Synthetic::parse(input).map(drop),
        _ => Err(vec![Violation::new(
            "/kind",
            "unknown_kind",
            format!("unknown job kind; expected one of: {}", NAMES.join(", ")),
        )]),
    }
}

/// One rule a submission breaks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violation {
    /// JSON Pointer into the request body, such as `/input/work_ms`.
    pub pointer: String,
    /// Stable code of the rule.
    pub code: &'static str,
    /// Human-readable explanation.
    pub detail: String,
}

impl Violation {
    /// A violation at `pointer`.
    pub fn new(pointer: impl Into<String>, code: &'static str, detail: impl Into<String>) -> Self {
        Self { pointer: pointer.into(), code, detail: detail.into() }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn unknown_kinds_and_bad_inputs_are_named() {
        let unknown = validate("nope", &json!({})).expect_err("unknown kind");
        assert_eq!(unknown[0].pointer, "/kind");
        let shape = validate(ItemsReport::NAME, &json!({"currency": 3})).expect_err("bad shape");
        assert_eq!(shape[0].pointer, "/input");
        let extra = validate(ItemsReport::NAME, &json!({"colour": "red"})).expect_err("unknown field");
        assert_eq!(extra[0].code, "invalid_input");
        assert!(validate(ItemsReport::NAME, &json!({})).is_ok());
        assert!(validate(Synthetic::NAME, &json!({"work_ms": 5})).is_ok());
    }
}
