//! Validating settings: every binary reads its settings as text (so `--help`
//! documents each with its variable and default), then turns the text into
//! typed configuration and reports *every* invalid value at once, instead of
//! stopping at the first as clap would. An operator fixing a deployment sees
//! the whole list in one restart, not one problem per restart.

use std::fmt;
use std::time::Duration;

/// Every problem found in the settings, reported together.
#[derive(Debug)]
pub struct ConfigErrors(pub Vec<String>);

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "invalid configuration ({} problems):", self.0.len())?;
        for problem in &self.0 {
            writeln!(f, "  - {problem}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigErrors {}

/// Collects the problems of one validation pass.
#[derive(Debug, Default)]
pub struct Problems(Vec<String>);

impl Problems {
    /// Parses `raw` (trimmed); a failure is recorded as `NAME="raw": why`
    /// and yields `None`. Callers that get `None` need not record anything.
    pub fn parse<T, E: fmt::Display>(
        &mut self,
        name: &str,
        raw: &str,
        parse: impl FnOnce(&str) -> Result<T, E>,
    ) -> Option<T> {
        self.parse_as(|| format!("{name}={raw:?}"), raw, parse)
    }

    /// Like [`Problems::parse`], for values that must not be printed (URLs
    /// that may carry a password): the problem names the setting only.
    pub fn parse_secret<T, E: fmt::Display>(
        &mut self,
        name: &str,
        raw: &str,
        parse: impl FnOnce(&str) -> Result<T, E>,
    ) -> Option<T> {
        self.parse_as(|| name.to_owned(), raw, parse)
    }

    fn parse_as<T, E: fmt::Display>(
        &mut self,
        label: impl FnOnce() -> String,
        raw: &str,
        parse: impl FnOnce(&str) -> Result<T, E>,
    ) -> Option<T> {
        parse(raw.trim()).map_err(|err| self.0.push(format!("{}: {err}", label()))).ok()
    }

    /// Records `message` unless `ok`.
    pub fn check(&mut self, ok: bool, message: impl FnOnce() -> String) {
        if !ok {
            self.0.push(message());
        }
    }

    /// `Ok(value)` when nothing was recorded, else every problem.
    pub fn finish<T>(self, value: impl FnOnce() -> T) -> Result<T, ConfigErrors> {
        if self.0.is_empty() { Ok(value()) } else { Err(ConfigErrors(self.0)) }
    }
}

/// A duration such as `500ms`, `10s` or `5m`.
pub fn duration(raw: &str) -> Result<Duration, humantime::DurationError> {
    humantime::parse_duration(raw)
}

/// A duration that must be more than zero.
pub fn positive_duration(raw: &str) -> Result<Duration, String> {
    match duration(raw) {
        Ok(d) if d.is_zero() => Err("must be more than zero".to_owned()),
        Ok(d) => Ok(d),
        Err(err) => Err(err.to_string()),
    }
}

/// `true`/`false` and their usual spellings.
pub fn boolean(raw: &str) -> Result<bool, String> {
    match raw.to_ascii_lowercase().as_str() {
        "true" | "1" | "yes" | "on" => Ok(true),
        "false" | "0" | "no" | "off" => Ok(false),
        _ => Err("expected true or false".to_owned()),
    }
}

/// A whole number of at least `min`.
pub fn at_least<T>(min: T) -> impl Fn(&str) -> Result<T, String>
where
    T: std::str::FromStr<Err: fmt::Display> + PartialOrd + fmt::Display + Copy,
{
    move |raw| match raw.parse::<T>() {
        Ok(n) if n < min => Err(format!("must be at least {min}")),
        Ok(n) => Ok(n),
        Err(err) => Err(err.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_problem_is_kept_and_secrets_are_not_echoed() {
        let mut p = Problems::default();
        assert_eq!(p.parse("PORT", "eighty", str::parse::<u16>), None);
        assert_eq!(p.parse_secret("URL", "x://user:hunter2@h", |_| Err::<(), _>("bad scheme")), None);
        assert_eq!(p.parse("N", " 3 ", at_least(1u32)), Some(3));
        assert_eq!(p.parse("M", "0", at_least(1u32)), None);
        p.check(false, || "A must be below B".to_owned());
        let errors = p.finish(|| ()).expect_err("four problems");
        let text = errors.to_string();
        assert_eq!(errors.0.len(), 4, "{text}");
        assert!(text.starts_with("invalid configuration (4 problems):"), "{text}");
        assert!(!text.contains("hunter2"), "{text}");
        assert!(text.contains("M=\"0\": must be at least 1"), "{text}");
    }

    #[test]
    fn values_parse() {
        assert_eq!(duration("1m"), Ok(Duration::from_mins(1)));
        assert!(positive_duration("0s").is_err());
        assert_eq!(boolean("ON"), Ok(true));
        assert!(boolean("maybe").is_err());
        assert_eq!(Problems::default().finish(|| 7).ok(), Some(7));
    }
}
