//! API keys: `X-API-Key` checked against SHA-256 hashes in constant time. Several keys may be
//! active at once, so a key is rotated by adding the new one before removing the old.

use axum::http::HeaderMap;
use serde::Deserialize;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use wiko_wire::API_KEY_HEADER;

use super::error::ApiError;

/// What a key may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
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
    pub name: String,
    pub scope: Scope,
}

/// Checks the request's key against every configured key (all compared, in constant time).
pub fn authorize(
    keys: &[KeyEntry],
    headers: &HeaderMap,
    need: Need,
) -> Result<Principal, ApiError> {
    let presented = headers
        .get(API_KEY_HEADER)
        .and_then(|v| v.to_str().ok())
        .ok_or(ApiError::Unauthorized)?;
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
        return Err(ApiError::Unauthorized);
    };
    if !key.scope.allows(need) {
        return Err(ApiError::Forbidden);
    }
    Ok(Principal {
        name: key.name.clone(),
        scope: key.scope,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys() -> Vec<KeyEntry> {
        vec![
            KeyEntry {
                name: "dev".into(),
                scope: Scope::Device,
                sha256: KeyEntry::hash("device-key-0000001"),
            },
            KeyEntry {
                name: "view".into(),
                scope: Scope::Viewer,
                sha256: KeyEntry::hash("viewer-key-0000001"),
            },
            KeyEntry {
                name: "view2".into(),
                scope: Scope::Viewer,
                sha256: KeyEntry::hash("viewer-key-0000002"),
            },
        ]
    }

    fn with_key(k: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(API_KEY_HEADER, k.parse().unwrap());
        h
    }

    #[test]
    fn scopes_gate_what_a_key_may_do() {
        let k = keys();
        assert_eq!(
            authorize(&k, &with_key("device-key-0000001"), Need::Ingest)
                .unwrap()
                .name,
            "dev"
        );
        assert!(matches!(
            authorize(&k, &with_key("device-key-0000001"), Need::Read),
            Err(ApiError::Forbidden)
        ));
        assert!(matches!(
            authorize(&k, &with_key("viewer-key-0000001"), Need::Ingest),
            Err(ApiError::Forbidden)
        ));
        assert!(matches!(
            authorize(&k, &with_key("nope"), Need::Read),
            Err(ApiError::Unauthorized)
        ));
        assert!(matches!(
            authorize(&k, &HeaderMap::new(), Need::Read),
            Err(ApiError::Unauthorized)
        ));
    }

    #[test]
    fn two_keys_of_one_scope_work_at_once() {
        let k = keys();
        assert_eq!(
            authorize(&k, &with_key("viewer-key-0000002"), Need::Read)
                .unwrap()
                .name,
            "view2"
        );
        assert_eq!(
            authorize(&k, &with_key("viewer-key-0000001"), Need::Read)
                .unwrap()
                .name,
            "view"
        );
    }
}
