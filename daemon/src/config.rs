//! Configuration loading, shared by both daemons: one TOML file, then environment overrides
//! under the daemon's own prefix (`WIKO_AGENT__SYNC__ENDPOINT=…`, `WIKO_CLOUD__MQTT__URL=…`:
//! `__` after the prefix and between levels). Only variables under that prefix are read, so
//! other `WIKO_…` variables (`WIKO_DATASETS`) are never taken for keys.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

/// Why a configuration is not usable; each variant names the key.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("reading configuration: {0}")]
    Load(#[from] config::ConfigError),
    #[error("`{key}`: {message}")]
    Invalid { key: String, message: String },
    #[error("`{key}`: reading {path}: {source}")]
    SecretFile {
        key: String,
        path: PathBuf,
        source: std::io::Error,
    },
}

/// A validation error naming `key`.
pub fn invalid(key: impl Into<String>, message: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        key: key.into(),
        message: message.into(),
    }
}

/// A secret given inline (`key`) or in a file (`key_file`, read and trimmed); at most one.
pub fn secret(
    key: &str,
    inline: Option<String>,
    file: Option<&Path>,
) -> Result<Option<String>, ConfigError> {
    match (inline, file) {
        (Some(_), Some(_)) => Err(invalid(key, format!("set {key} or {key}_file, not both"))),
        (Some(value), None) => Ok(Some(value)),
        (None, Some(path)) => std::fs::read_to_string(path)
            .map(|text| Some(text.trim().to_string()))
            .map_err(|source| ConfigError::SecretFile {
                key: format!("{key}_file"),
                path: path.to_path_buf(),
                source,
            }),
        (None, None) => Ok(None),
    }
}

/// Reads the TOML file at `path`, then the environment variables named
/// `{prefix}__{SECTION}__{KEY}` (upper case; `prefix` like `WIKO_AGENT`), into `T`. `env`
/// replaces the process environment when given (tests).
pub fn load_layered<T: serde::de::DeserializeOwned>(
    path: &Path,
    prefix: &str,
    env: Option<HashMap<String, String>>,
) -> Result<T, ConfigError> {
    Ok(config::Config::builder()
        .add_source(config::File::from(path).format(config::FileFormat::Toml))
        .add_source(
            config::Environment::with_prefix(prefix)
                .prefix_separator("__")
                .separator("__")
                .try_parsing(true)
                .source(env),
        )
        .build()?
        .try_deserialize()?)
}

/// Checks that an example configuration documents every key (for the daemons' unit tests).
#[cfg(any(test, feature = "testing"))]
pub mod documented;

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[derive(Debug, serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Raw {
        name: String,
        #[serde(default)]
        section: Section,
    }

    #[derive(Debug, Default, serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Section {
        #[serde(default)]
        workers: u32,
    }

    fn load(env: &[(&str, &str)]) -> Result<Raw, ConfigError> {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("x.toml");
        std::fs::write(&file, "name = \"a\"\n").unwrap();
        let env = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        load_layered(&file, "WIKO_TEST", Some(env))
    }

    #[test]
    fn overrides_under_the_prefix_reach_nested_keys() {
        let raw = load(&[
            ("WIKO_TEST__SECTION__WORKERS", "7"),
            ("WIKO_TEST__NAME", "b"),
        ])
        .unwrap();
        assert_eq!(raw.section.workers, 7);
        assert_eq!(raw.name, "b");
    }

    #[test]
    fn other_wiko_variables_are_not_keys() {
        let raw = load(&[
            ("WIKO_DATASETS", "/data"),
            ("WIKO_OTHER__NAME", "c"),
            ("WIKO_TESTING", "1"),
        ])
        .unwrap();
        assert_eq!(raw.name, "a");
    }

    #[test]
    fn an_unknown_key_under_the_prefix_is_named() {
        let e = load(&[("WIKO_TEST__BOGUS", "1")]).unwrap_err();
        assert!(e.to_string().contains("bogus"), "{e}");
    }

    #[test]
    fn a_secret_comes_inline_or_from_a_file_not_both() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("secret");
        std::fs::write(&file, "s3cret\n").unwrap();
        assert_eq!(
            secret("k", None, Some(&file)).unwrap().as_deref(),
            Some("s3cret")
        );
        assert_eq!(
            secret("k", Some("x".into()), None).unwrap().as_deref(),
            Some("x")
        );
        assert!(secret("k", Some("x".into()), Some(&file)).is_err());
        let e = secret("k", None, Some(&dir.path().join("missing"))).unwrap_err();
        assert!(e.to_string().contains("k_file"), "{e}");
    }
}
