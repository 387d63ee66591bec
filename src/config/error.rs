//! What a configuration problem is, and where a value came from.

use std::fmt;
use std::path::PathBuf;

use super::KEYS;

/// The layer a value came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Layer {
    /// The built-in default.
    Default,
    /// The JSON configuration file at this path.
    File(PathBuf),
    /// This environment variable.
    Env(&'static str),
    /// The command-line flag of this key (`max_connections` is shown as
    /// `--max-connections`).
    Flag(&'static str),
}

impl fmt::Display for Layer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Layer::Default => f.write_str("default"),
            Layer::File(path) => write!(f, "file {}", path.display()),
            Layer::Env(name) => write!(f, "environment variable {name}"),
            Layer::Flag(key) => write!(f, "flag --{}", key.replace('_', "-")),
        }
    }
}

/// One configuration problem. [`super::Config::load`] returns all of them.
#[derive(Debug, Clone, PartialEq)]
pub enum ConfigError {
    /// The configuration file could not be read.
    FileUnreadable {
        /// The path as given.
        path: PathBuf,
        /// Where the path came from (`--config` or `CONFIG_FILE`).
        named_by: Layer,
        /// The operating system's reason.
        reason: String,
    },
    /// The configuration file is not one JSON object.
    FileSyntax {
        /// The file.
        path: PathBuf,
        /// The parser's reason, with line and column.
        reason: String,
    },
    /// The file has a key the schema does not know.
    UnknownKey {
        /// The file.
        path: PathBuf,
        /// The unknown key.
        key: String,
        /// A known key it probably meant.
        suggestion: Option<&'static str>,
    },
    /// The file has the same key twice.
    DuplicateKey {
        /// The file.
        path: PathBuf,
        /// The repeated key.
        key: String,
    },
    /// A value is not allowed.
    InvalidValue {
        /// The configuration key.
        key: &'static str,
        /// Where the value came from.
        layer: Layer,
        /// The value as given (JSON text, or a quoted string); for a secret,
        /// a placeholder.
        value: String,
        /// What is wrong, when more specific than `allowed`.
        problem: Option<String>,
        /// What the key accepts.
        allowed: String,
    },
    /// A required key is set nowhere.
    Missing {
        /// The configuration key.
        key: &'static str,
        /// What is missing and the ways to set it.
        how: String,
    },
}

impl ConfigError {
    /// The configuration key the problem is about, when there is one.
    pub fn key(&self) -> Option<&str> {
        match self {
            ConfigError::UnknownKey { key, .. } | ConfigError::DuplicateKey { key, .. } => {
                Some(key)
            }
            ConfigError::InvalidValue { key, .. } | ConfigError::Missing { key, .. } => Some(key),
            ConfigError::FileUnreadable { .. } | ConfigError::FileSyntax { .. } => None,
        }
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConfigError::FileUnreadable {
                path,
                named_by,
                reason,
            } => write!(
                f,
                "cannot read configuration file {} (named by {named_by}): {reason}",
                path.display()
            ),
            ConfigError::FileSyntax { path, reason } => {
                write!(
                    f,
                    "configuration file {} is not valid: {reason}",
                    path.display()
                )
            }
            ConfigError::UnknownKey {
                path,
                key,
                suggestion,
            } => {
                write!(f, "unknown key {key:?} in file {}", path.display())?;
                if let Some(suggestion) = suggestion {
                    write!(f, " (did you mean {suggestion:?}?)")?;
                }
                write!(f, "; allowed keys: {}", KEYS.join(", "))
            }
            ConfigError::DuplicateKey { path, key } => write!(
                f,
                "key {key:?} appears more than once in file {}; give it once",
                path.display()
            ),
            ConfigError::InvalidValue {
                key,
                layer,
                value,
                problem,
                allowed,
            } => {
                write!(f, "invalid {key} from {layer}: {value}")?;
                if let Some(problem) = problem {
                    write!(f, " ({problem})")?;
                }
                write!(f, "; allowed: {allowed}")
            }
            ConfigError::Missing { key, how } => write!(f, "missing {key}: {how}"),
        }
    }
}

impl std::error::Error for ConfigError {}
