//! Typed access to a [`Source`] that collects every problem, so a bad
//! deployment is told about all of its mistakes at once, each by name.

use super::source::Source;
use secrecy::SecretString;
use std::fmt;
use std::str::FromStr;
use std::time::Duration;

/// Everything wrong with a configuration, one line per variable.
#[derive(Debug)]
pub struct SettingsError {
    problems: Vec<String>,
}

impl fmt::Display for SettingsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "invalid configuration:")?;
        for problem in &self.problems {
            writeln!(f, "  - {problem}")?;
        }
        Ok(())
    }
}

impl std::error::Error for SettingsError {}

/// Reads values from a source and remembers what was wrong with them.
pub struct Reader<'a> {
    source: &'a dyn Source,
    problems: Vec<String>,
}

impl<'a> Reader<'a> {
    pub fn new(source: &'a dyn Source) -> Self {
        Self {
            source,
            problems: Vec::new(),
        }
    }

    /// Records a problem that no single getter can see (e.g. two variables
    /// that exclude each other).
    pub fn problem(&mut self, message: impl Into<String>) {
        self.problems.push(message.into());
    }

    /// The raw value, with empty strings treated as unset.
    /// The value trimmed (a Secret written with `echo` ends in a newline),
    /// with empty strings treated as unset.
    pub fn raw(&self, key: &str) -> Option<String> {
        self.source
            .get(key)
            .map(|v| v.trim().to_owned())
            .filter(|v| !v.is_empty())
    }

    /// A value sent in an HTTP header as is: anything but visible ASCII
    /// would fail every call at the moment of sending. Never echoed, as it
    /// may be secret.
    pub fn header_safe(&mut self, key: &str, value: &str) {
        if !value.bytes().all(|b| b.is_ascii_graphic()) {
            self.problem(format!(
                "{key} contains spaces, control characters or non-ASCII characters, which cannot be sent in an HTTP header"
            ));
        }
    }

    /// A parsed optional value; a value that does not parse is a problem.
    pub fn optional<T>(&mut self, key: &str, expected: &str) -> Option<T>
    where
        T: FromStr,
    {
        let raw = self.raw(key)?;
        match raw.trim().parse() {
            Ok(value) => Some(value),
            Err(_) => {
                self.problem(format!("{key}={raw:?} is not {expected}"));
                None
            }
        }
    }

    /// A parsed value with a default.
    pub fn or<T: FromStr>(&mut self, key: &str, expected: &str, default: T) -> T {
        self.optional(key, expected).unwrap_or(default)
    }

    /// A secret: never echoed back in a problem message.
    pub fn secret(&self, key: &str) -> Option<SecretString> {
        self.raw(key).map(SecretString::from)
    }

    /// A required secret.
    pub fn required_secret(&mut self, key: &str, meaning: &str) -> Option<SecretString> {
        let value = self.secret(key);
        if value.is_none() {
            self.problem(format!("{key} is required ({meaning})"));
        }
        value
    }

    /// Milliseconds within `range`, as a duration.
    pub fn millis(&mut self, key: &str, default_ms: u64, range: (u64, u64)) -> Duration {
        let expected = format!(
            "a whole number of milliseconds from {} to {}",
            range.0, range.1
        );
        let ms = self.or(key, &expected, default_ms);
        if !(range.0..=range.1).contains(&ms) {
            self.problem(format!("{key}={ms} is out of range: expected {expected}"));
        }
        Duration::from_millis(ms)
    }

    /// Ends reading: the problems, if there were any.
    pub fn finish(self) -> Result<(), SettingsError> {
        if self.problems.is_empty() {
            Ok(())
        } else {
            Err(SettingsError {
                problems: self.problems,
            })
        }
    }
}
