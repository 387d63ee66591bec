//! The file layer: one JSON object read whole (at most
//! [`MAX_CONFIG_FILE_BYTES`]), its keys checked against the schema, repeats
//! refused, `null` meaning absent.

use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};

use serde::de::{Deserialize, Deserializer, MapAccess, Visitor};
use serde_json::Value;

use super::{ConfigError, KEYS, Layer};

/// Largest configuration file read, in bytes.
pub const MAX_CONFIG_FILE_BYTES: u64 = 1024 * 1024;

/// The parsed file: its path and its known, non-null keys.
pub(super) struct FileLayer {
    pub path: PathBuf,
    pub values: HashMap<String, Value>,
}

impl FileLayer {
    /// Reads and checks the file at `path` (named by `named_by`); pushes
    /// every problem to `errors`. `None` when it cannot be used at all.
    pub fn read(path: PathBuf, named_by: Layer, errors: &mut Vec<ConfigError>) -> Option<Self> {
        let text = match read_limited(&path) {
            Ok(text) => text,
            Err(reason) => {
                errors.push(ConfigError::FileUnreadable {
                    path,
                    named_by,
                    reason,
                });
                return None;
            }
        };
        let entries = match serde_json::from_str::<Entries>(&text) {
            Ok(Entries(entries)) => entries,
            Err(error) => {
                errors.push(ConfigError::FileSyntax {
                    path,
                    reason: error.to_string(),
                });
                return None;
            }
        };
        let mut values = HashMap::new();
        let mut seen: Vec<String> = Vec::new();
        for (key, value) in entries {
            if seen.contains(&key) {
                let reported = errors
                    .iter()
                    .any(|e| matches!(e, ConfigError::DuplicateKey { key: k, .. } if *k == key));
                if !reported {
                    errors.push(ConfigError::DuplicateKey {
                        path: path.clone(),
                        key: key.clone(),
                    });
                }
                continue;
            }
            seen.push(key.clone());
            if !KEYS.contains(&key.as_str()) {
                errors.push(ConfigError::UnknownKey {
                    path: path.clone(),
                    suggestion: suggest_key(&key),
                    key,
                });
                continue;
            }
            if !value.is_null() {
                values.insert(key, value);
            }
        }
        Some(FileLayer { path, values })
    }
}

/// The file's entries in order, with repeats kept so they can be refused.
struct Entries(Vec<(String, Value)>);

impl<'de> Deserialize<'de> for Entries {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct EntriesVisitor;
        impl<'de> Visitor<'de> for EntriesVisitor {
            type Value = Entries;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Entries, A::Error> {
                let mut entries = Vec::new();
                while let Some(entry) = map.next_entry::<String, Value>()? {
                    entries.push(entry);
                }
                Ok(Entries(entries))
            }
        }
        deserializer.deserialize_map(EntriesVisitor)
    }
}

/// Reads a file of at most [`MAX_CONFIG_FILE_BYTES`] as UTF-8.
fn read_limited(path: &Path) -> Result<String, String> {
    use std::io::Read;
    let file = std::fs::File::open(path).map_err(|e| e.to_string())?;
    let mut bytes = Vec::new();
    file.take(MAX_CONFIG_FILE_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| e.to_string())?;
    if bytes.len() as u64 > MAX_CONFIG_FILE_BYTES {
        return Err(format!(
            "larger than {MAX_CONFIG_FILE_BYTES} bytes; is this the right file?"
        ));
    }
    String::from_utf8(bytes).map_err(|_| "not UTF-8 text".to_string())
}

/// The known key an unknown one most likely meant: `pool_host` → `pool`,
/// `POOL` → `pool`, or a key within two edits.
pub(super) fn suggest_key(unknown: &str) -> Option<&'static str> {
    let lower = unknown.to_ascii_lowercase().replace('-', "_");
    if let Some(found) = KEYS.iter().find(|k| **k == lower) {
        return Some(found);
    }
    for suffix in ["_host", "_port", "_url", "_address", "_addr"] {
        if let Some(stem) = lower.strip_suffix(suffix) {
            let stem = if stem == "metrics" {
                "metrics_listen"
            } else {
                stem
            };
            if let Some(found) = KEYS.iter().find(|k| **k == stem) {
                return Some(found);
            }
        }
    }
    KEYS.iter()
        .map(|k| (edit_distance(&lower, k), *k))
        .filter(|(d, _)| *d <= 2)
        .min_by_key(|(d, _)| *d)
        .map(|(_, k)| k)
}

/// Levenshtein distance over bytes.
fn edit_distance(a: &str, b: &str) -> usize {
    let b = b.as_bytes();
    let mut previous: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.bytes().enumerate() {
        let mut current = vec![i + 1; b.len() + 1];
        for (j, cb) in b.iter().enumerate() {
            let substitution = previous[j] + usize::from(ca != *cb);
            current[j + 1] = substitution.min(previous[j + 1] + 1).min(current[j] + 1);
        }
        previous = current;
    }
    previous[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn suggestions() {
        assert_eq!(suggest_key("pool_host"), Some("pool"));
        assert_eq!(suggest_key("POOL_PORT"), Some("pool"));
        assert_eq!(suggest_key("metrics_port"), Some("metrics_listen"));
        assert_eq!(suggest_key("LOG_LEVEL"), Some("log_level"));
        assert_eq!(suggest_key("max_conections"), Some("max_connections"));
        assert_eq!(suggest_key("thread"), Some("threads"));
        assert_eq!(suggest_key("colour"), None);
    }
}
