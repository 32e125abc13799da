//! Job kinds: each one's name and input, checked when the job is submitted
//! so that a job the worker could never run is refused with a 422 instead
//! of failing later.
//!
//! Adding a kind: a file here (its name, what it does, its input type and
//! rules), one line in [`KINDS`], and its effect in `worker/src/kinds/`
//! with one line in the worker's registry. The API's OpenAPI document lists
//! the kinds from [`KINDS`], so it cannot go stale.

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
    /// What the kind does, in a phrase (for the API's documentation).
    const SUMMARY: &'static str;
    /// Its input as a client writes it (for the API's documentation).
    const INPUT: &'static str;
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

/// A kind in the registry: its name, its documentation and its check.
#[derive(Debug, Clone, Copy)]
pub struct Registration {
    /// [`Kind::NAME`].
    pub name: &'static str,
    /// [`Kind::SUMMARY`].
    pub summary: &'static str,
    /// [`Kind::INPUT`].
    pub input: &'static str,
    /// [`Kind::parse`], the parsed input dropped.
    check: fn(&Value) -> Result<(), Vec<Violation>>,
}

/// The registration of `K`.
pub const fn register<K: Kind>() -> Registration {
    Registration { name: K::NAME, summary: K::SUMMARY, input: K::INPUT, check: check::<K> }
}

fn check<K: Kind>(input: &Value) -> Result<(), Vec<Violation>> {
    K::parse(input).map(drop)
}

/// Every kind: the one list to extend.
pub const KINDS: &[Registration] = &[register::<ItemsReport>(), register::<Synthetic>()];

/// Every kind's name.
pub fn names() -> impl Iterator<Item = &'static str> {
    KINDS.iter().map(|kind| kind.name)
}

/// The kind named `name`.
pub fn find(name: &str) -> Option<&'static Registration> {
    KINDS.iter().find(|kind| kind.name == name)
}

/// Checks a submission: the kind exists and its input is valid.
pub fn validate(kind: &str, input: &Value) -> Result<(), Vec<Violation>> {
    match find(kind) {
        Some(kind) => (kind.check)(input),
        None => Err(vec![Violation::new(
            "/kind",
            "unknown_kind",
            format!("unknown job kind; expected one of: {}", names().collect::<Vec<_>>().join(", ")),
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
        assert!(unknown[0].detail.ends_with("items_report, synthetic"), "{}", unknown[0].detail);
    }

    #[test]
    fn names_are_unique_and_snake_case() {
        let mut seen = std::collections::HashSet::new();
        for name in names() {
            assert!(seen.insert(name), "{name} is registered twice");
            assert!(name.bytes().all(|b| b.is_ascii_lowercase() || b == b'_'), "{name}");
        }
    }
}
