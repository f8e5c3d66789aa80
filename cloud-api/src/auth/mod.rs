//! API keys: a presented key is checked against SHA-256 hashes in constant time. Several keys
//! may be active at once, so a key is rotated by adding the new one before removing the old.
//! The HTTP side (the `X-API-Key` header, the 401/403 answers) is `http`'s.

pub(crate) mod config;

use serde::Deserialize;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// What a key may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
#[cfg_attr(test, derive(schemars::JsonSchema))]
pub enum Scope {
    /// Upload frames and call `/analyze`.
    Device,
    /// Read results and images.
    Viewer,
    /// Everything.
    Admin,
}

/// What a request needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Need {
    Ingest,
    Read,
    /// Changing what the system judges by (golden samples): admin keys only.
    Admin,
}

impl Scope {
    fn allows(self, need: Need) -> bool {
        matches!(
            (self, need),
            (Scope::Admin, _) | (Scope::Device, Need::Ingest) | (Scope::Viewer, Need::Read)
        )
    }
}

/// A configured key: only its hash is kept.
#[derive(Debug, Clone)]
pub struct KeyEntry {
    pub name: String,
    pub scope: Scope,
    pub sha256: [u8; 32],
}

impl KeyEntry {
    pub fn hash(secret: &str) -> [u8; 32] {
        Sha256::digest(secret.as_bytes()).into()
    }
}

/// The key that authenticated a request.
#[derive(Debug, Clone)]
pub struct Principal {
    /// The key's name (logs and audit).
    pub name: String,
}

/// Why a request is not let in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    #[error("missing or invalid API key")]
    Unauthorized,
    #[error("this API key may not do that")]
    Forbidden,
}

/// Checks a presented key against every configured key (all compared, in constant time).
pub fn authorize(
    keys: &[KeyEntry],
    presented: Option<&str>,
    need: Need,
) -> Result<Principal, AuthError> {
    let presented = presented.ok_or(AuthError::Unauthorized)?;
    let hash = KeyEntry::hash(presented);
    let mut found: Option<&KeyEntry> = None;
    for k in keys {
        if bool::from(k.sha256.ct_eq(&hash)) {
            found = Some(k);
        }
    }
    let Some(key) = found else {
        metrics::counter!(crate::telemetry::AUTH_FAILURES_TOTAL).increment(1);
        tracing::warn!("request with an unknown API key");
        return Err(AuthError::Unauthorized);
    };
    if !key.scope.allows(need) {
        return Err(AuthError::Forbidden);
    }
    Ok(Principal {
        name: key.name.clone(),
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn keys() -> Vec<KeyEntry> {
        [
            ("dev", Scope::Device, "device-key-0000001"),
            ("view", Scope::Viewer, "viewer-key-0000001"),
            ("view2", Scope::Viewer, "viewer-key-0000002"),
        ]
        .into_iter()
        .map(|(name, scope, key)| KeyEntry {
            name: name.into(),
            scope,
            sha256: KeyEntry::hash(key),
        })
        .collect()
    }

    #[test]
    fn scopes_gate_what_a_key_may_do() {
        let k = keys();
        let name = |key, need| authorize(&k, Some(key), need).map(|p| p.name);
        assert_eq!(name("device-key-0000001", Need::Ingest).unwrap(), "dev");
        assert_eq!(
            name("device-key-0000001", Need::Read),
            Err(AuthError::Forbidden)
        );
        assert_eq!(
            name("viewer-key-0000001", Need::Ingest),
            Err(AuthError::Forbidden)
        );
        assert_eq!(name("nope", Need::Read), Err(AuthError::Unauthorized));
        assert!(matches!(
            authorize(&k, None, Need::Read),
            Err(AuthError::Unauthorized)
        ));
    }

    #[test]
    fn two_keys_of_one_scope_work_at_once() {
        let k = keys();
        let name = |key| authorize(&k, Some(key), Need::Read).map(|p| p.name);
        assert_eq!(name("viewer-key-0000002").unwrap(), "view2");
        assert_eq!(name("viewer-key-0000001").unwrap(), "view");
    }
}
