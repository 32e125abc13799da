//! `items_report`: price statistics over the `items` table, per currency
//! (or for one currency). Real work against the same database the API
//! serves, the way a report or an export would be offloaded.

use serde::Deserialize;

use super::{Kind, Violation};

/// The kind.
pub struct ItemsReport;

/// Its input.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Input {
    /// Only items in this currency (ISO 4217, such as `EUR`); all when absent.
    pub currency: Option<String>,
}

impl Kind for ItemsReport {
    const NAME: &'static str = "items_report";
    const SUMMARY: &'static str =
        "price statistics over the items, per currency or for the one `currency` given";
    const INPUT: &'static str = r#"{"currency": "EUR"}"#;
    type Input = Input;

    fn check(input: &Input) -> Vec<Violation> {
        match &input.currency {
            Some(c) if c.len() != 3 || !c.bytes().all(|b| b.is_ascii_uppercase()) => {
                vec![Violation::new("/input/currency", "invalid_currency", "expected three capital letters")]
            }
            _ => Vec::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn the_currency_must_be_three_capitals() {
        assert!(ItemsReport::parse(&json!({"currency": "EUR"})).is_ok());
        let refused = ItemsReport::parse(&json!({"currency": "eur"})).expect_err("lowercase");
        assert_eq!(refused[0].pointer, "/input/currency");
    }
}
