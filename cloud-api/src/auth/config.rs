//! `[auth]`: the API keys.

use std::path::PathBuf;

use serde::Deserialize;
use wiko_daemon::config::{ConfigError, invalid, secret};

use super::{KeyEntry, Scope};

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(test, derive(schemars::JsonSchema))]
pub struct AuthConfig {
    /// API keys accepted in `X-API-Key`. Several may be active at once (rotation).
    #[serde(default)]
    pub keys: Vec<RawKey>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(test, derive(schemars::JsonSchema))]
pub struct RawKey {
    /// Who the key belongs to (logs and audit).
    pub name: String,
    /// `device` (ingest and analyze), `viewer` (read), `admin` (everything).
    pub scope: Scope,
    /// The key itself. Prefer `key_file` or `key_sha256`.
    #[serde(default)]
    pub key: Option<String>,
    /// A file holding the key.
    #[serde(default)]
    pub key_file: Option<PathBuf>,
    /// Lower-case hex SHA-256 of the key: the key itself never needs to be on this host.
    #[serde(default)]
    pub key_sha256: Option<String>,
}

/// Shortest key accepted inline.
const MIN_KEY_LEN: usize = 16;

impl AuthConfig {
    pub(crate) fn validate(&self) -> Result<Vec<KeyEntry>, ConfigError> {
        self.keys
            .iter()
            .enumerate()
            .map(|(i, k)| {
                let key = |f: &str| format!("auth.keys[{i}].{f}");
                let inline = secret(&key("key"), k.key.clone(), k.key_file.as_deref())?;
                let sha256 = match (inline, &k.key_sha256) {
                    (Some(secret), None) => KeyEntry::hash(&secret),
                    (None, Some(hex)) => hex::decode(hex)
                        .map_err(|_| invalid(key("key_sha256"), "not hex"))?
                        .try_into()
                        .map_err(|_| invalid(key("key_sha256"), "must be 64 hex digits"))?,
                    _ => {
                        return Err(invalid(
                            key("key"),
                            "set exactly one of key, key_file, key_sha256",
                        ));
                    }
                };
                if k.key.as_deref().is_some_and(|s| s.len() < MIN_KEY_LEN) {
                    return Err(invalid(
                        key("key"),
                        format!("must be at least {MIN_KEY_LEN} characters"),
                    ));
                }
                Ok(KeyEntry {
                    name: k.name.clone(),
                    scope: k.scope,
                    sha256,
                })
            })
            .collect()
    }
}
