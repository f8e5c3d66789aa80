//! `[auth]`: the API keys.

use std::path::PathBuf;

use serde::Deserialize;
use wiko_daemon::config::{ConfigError, invalid, secret};

use super::KeyEntry;
use wiko_wire::Scope;

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(test, derive(schemars::JsonSchema))]
pub struct AuthConfig {
    /// Bootstrap API keys accepted in `X-API-Key`, beside the keys of the `api_keys` table.
    #[serde(default)]
    pub keys: Vec<RawKey>,
    #[serde(default)]
    pub limits: LimitsConfig,
}

/// How many requests a key or an address may make.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(test, derive(schemars::JsonSchema))]
pub struct LimitsConfig {
    /// Requests per second one key may make (bursts of twice as many).
    #[serde(default = "default_per_key")]
    pub requests_per_second_per_key: u32,
    /// Requests per second from one address (bursts of twice as many).
    #[serde(default = "default_per_address")]
    pub requests_per_second_per_address: u32,
    /// Failed key checks one address may make per minute; past them it is refused (429)
    /// until its failures would be allowed again.
    #[serde(default = "default_failed_auth")]
    pub failed_auth_per_minute_per_address: u32,
}

fn default_per_key() -> u32 {
    500
}
fn default_per_address() -> u32 {
    1000
}
fn default_failed_auth() -> u32 {
    30
}

impl Default for LimitsConfig {
    fn default() -> Self {
        LimitsConfig {
            requests_per_second_per_key: default_per_key(),
            requests_per_second_per_address: default_per_address(),
            failed_auth_per_minute_per_address: default_failed_auth(),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(test, derive(schemars::JsonSchema))]
pub struct RawKey {
    /// Who the key belongs to (logs and audit).
    pub name: String,
    /// `device` (ingest and analyze), `viewer` (read), `admin` (everything).
    #[cfg_attr(test, schemars(with = "String"))]
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
    /// A device key bound to this facility sends parts of it only.
    #[serde(default)]
    pub facility: Option<String>,
    /// A device key bound to this device sends its frames only.
    #[serde(default)]
    pub device_id: Option<String>,
}

/// Shortest key accepted inline.
const MIN_KEY_LEN: usize = 16;

impl AuthConfig {
    pub(crate) fn validate(&self) -> Result<Vec<KeyEntry>, ConfigError> {
        let l = &self.limits;
        if l.requests_per_second_per_key == 0
            || l.requests_per_second_per_address == 0
            || l.failed_auth_per_minute_per_address == 0
        {
            return Err(invalid("auth.limits", "every limit must be above zero"));
        }
        self.keys
            .iter()
            .enumerate()
            .map(|(i, k)| {
                let key = |f: &str| format!("auth.keys[{i}].{f}");
                let inline = secret(&key("key"), k.key.clone(), k.key_file.as_deref())?;
                let sha256 = match (inline, &k.key_sha256) {
                    (Some(secret), None) => super::hash(&secret),
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
                if k.scope != Scope::Device && (k.facility.is_some() || k.device_id.is_some()) {
                    return Err(invalid(
                        key("facility"),
                        "only device keys are bound to a facility or device",
                    ));
                }
                Ok(KeyEntry {
                    name: k.name.clone(),
                    scope: k.scope,
                    sha256,
                    facility: k.facility.clone(),
                    device_id: k.device_id.clone(),
                })
            })
            .collect()
    }
}
