//! Where settings come from: the process environment layered over an
//! optional `KEY=value` file, or a plain map in tests.
//!
//! Reading through a trait keeps the parsing code free of global state, so
//! tests can build settings without touching the process environment.

use std::collections::HashMap;
use std::path::Path;

/// A source of raw setting values, keyed by environment-variable name.
pub trait Source {
    fn get(&self, key: &str) -> Option<String>;
}

impl Source for HashMap<String, String> {
    fn get(&self, key: &str) -> Option<String> {
        HashMap::get(self, key).cloned()
    }
}

/// The process environment, falling back to an optional dotenv-style file.
#[derive(Default)]
pub struct Environment {
    file: HashMap<String, String>,
}

impl std::fmt::Debug for Environment {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The file's values may be secrets: show only which keys it sets.
        f.debug_struct("Environment")
            .field("file_keys", &self.file.keys().collect::<Vec<_>>())
            .finish()
    }
}

impl Environment {
    /// The process environment alone.
    pub fn process() -> Self {
        Self::default()
    }

    /// The process environment over the `KEY=value` lines of `path`.
    pub fn with_file(path: &Path) -> anyhow::Result<Self> {
        use anyhow::Context as _;
        let entries = dotenvy::from_path_iter(path)
            .with_context(|| format!("cannot read settings file {}", path.display()))?;
        let mut file = HashMap::new();
        for (number, entry) in entries.enumerate() {
            // The parser's own error quotes the offending line, which may
            // hold a secret: say where, not what.
            let (key, value) = entry.map_err(|_| {
                anyhow::anyhow!(
                    "settings file {}: entry {} is not KEY=value",
                    path.display(),
                    number + 1
                )
            })?;
            file.insert(key, value);
        }
        Ok(Self { file })
    }
}

impl Source for Environment {
    fn get(&self, key: &str) -> Option<String> {
        std::env::var(key)
            .ok()
            .or_else(|| self.file.get(key).cloned())
    }
}

/// Values that win over another source: how `dev` points the gateway at
/// the throwaway database and simulator it started.
pub struct Overrides<'a> {
    pub values: HashMap<String, String>,
    pub base: &'a dyn Source,
}

impl std::fmt::Debug for Overrides<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Values may be secrets: show only which keys are overridden.
        f.debug_struct("Overrides")
            .field("keys", &self.values.keys().collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

impl Source for Overrides<'_> {
    fn get(&self, key: &str) -> Option<String> {
        self.values.get(key).cloned().or_else(|| self.base.get(key))
    }
}
