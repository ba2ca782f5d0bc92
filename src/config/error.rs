//! Config mistakes and warnings, each pinned to a file position and key path so an
//! admin can jump straight to the line (`FILE:LINE:COL: KEY: message`, the format
//! editors and `grep -n` users already read).

use std::fmt;

/// One mistake in the config file. Messages never contain a secret value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{file}:{line}:{column}: {key_path}: {message}")]
pub struct ConfigError {
    /// The file label given to `load_str` (the path for `load`).
    pub file: String,
    /// 1-based line of the most specific key that exists in the file.
    pub line: usize,
    /// 1-based column (in characters) on that line.
    pub column: usize,
    /// The key the mistake is about, e.g. `portal[1].webhook_url_env` (0-based indices).
    pub key_path: String,
    /// What is wrong and, where it helps, how to fix it.
    pub message: String,
}

/// Every mistake found in one pass, in file order, so the admin fixes them all at once.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigErrors(pub Vec<ConfigError>);

impl ConfigErrors {
    /// The individual errors.
    pub fn iter(&self) -> std::slice::Iter<'_, ConfigError> {
        self.0.iter()
    }

    /// How many mistakes were found.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// True when there are none (a `ConfigErrors` returned by `load` is never empty).
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigErrors {}

impl<'a> IntoIterator for &'a ConfigErrors {
    type Item = &'a ConfigError;
    type IntoIter = std::slice::Iter<'a, ConfigError>;
    fn into_iter(self) -> Self::IntoIter {
        self.0.iter()
    }
}

/// A risky but valid setting, reported by `leadscore check` and logged at start-up;
/// same position format as [`ConfigError`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigWarning {
    /// The file label (or `environment` for an override).
    pub file: String,
    /// 1-based line.
    pub line: usize,
    /// 1-based column.
    pub column: usize,
    /// The key the warning is about.
    pub key_path: String,
    /// Why it is risky and what to do instead.
    pub message: String,
}

impl fmt::Display for ConfigWarning {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}:{}:{}: {}: {}",
            self.file, self.line, self.column, self.key_path, self.message
        )
    }
}
