//! Who may call, and how much.
//!
//! - [`Keyring`]: the keys in force, by SHA-256: the bootstrap keys of the configuration and
//!   the keys stored in the `api_keys` table (created and revoked through the admin API or
//!   `wiko-cloud keys`), reloaded every second on every replica, so a revocation takes effect
//!   everywhere within a second and a key is rotated by creating the new one before revoking
//!   the old. A key is stored as its hash only; `wk_<prefix>_<secret>` names it by its prefix.
//! - [`limits::Limits`]: requests per second per key and per address, and failed attempts
//!   per address (past them, an address is refused for a while before its key is looked at).
//! - [`audit::Audit`]: every admin action and every refused key, with address, route and key
//!   prefix, appended to the store's audit log (both backends).
//!
//! The HTTP side (the `X-API-Key` header, the extractor, the answers) is `http`'s.

pub(crate) mod audit;
pub(crate) mod config;
pub(crate) mod limits;

use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock};

use chrono::{DateTime, Utc};
use rand::Rng;
use sha2::{Digest, Sha256};
use wiko_wire::{KeyInfo, NewKey, Scope};

use crate::store::{Store, StoreError, StoredKey};

/// What a request needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Need {
    Ingest,
    Read,
    /// Reviewing results (feedback): a person, signed in with a viewer or admin key.
    Review,
    /// Changing what the system judges by (golden samples) and who may call (keys).
    Admin,
    /// Downloading a SKU's model file: devices (edge analysis) and viewers.
    Model,
}

fn allows(scope: Scope, need: Need) -> bool {
    matches!(
        (scope, need),
        (Scope::Admin, _)
            | (Scope::Device, Need::Ingest | Need::Model)
            | (Scope::Viewer, Need::Read | Need::Model | Need::Review)
    )
}

/// A key of the configuration (bootstrap): only its hash is kept.
#[derive(Debug, Clone)]
pub struct KeyEntry {
    pub name: String,
    pub scope: Scope,
    pub sha256: [u8; 32],
    /// A device key bound to a facility (and device) ingests only for it.
    pub facility: Option<String>,
    pub device_id: Option<String>,
}

/// SHA-256 of a key: what is stored and compared.
pub fn hash(secret: &str) -> [u8; 32] {
    Sha256::digest(secret.as_bytes()).into()
}

/// The key that authenticated a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    /// The key's name (logs and audit).
    pub name: String,
    /// The stored key's prefix; `None` for a key of the configuration.
    pub prefix: Option<String>,
    pub scope: Scope,
    pub facility: Option<String>,
    pub device_id: Option<String>,
}

impl Principal {
    /// What names this key without its secret, for a dashboard session: `key:<prefix>` for a
    /// stored key, `config:<name>` for one of the configuration.
    pub fn reference(&self) -> String {
        match &self.prefix {
            Some(prefix) => format!("key:{prefix}"),
            None => format!("config:{}", self.name),
        }
    }

    /// Whether this key may do `need`.
    pub fn may(&self, need: Need) -> Result<(), Forbidden> {
        if allows(self.scope, need) {
            Ok(())
        } else {
            Err(Forbidden(format!(
                "a {} key may not do that",
                self.scope.as_str()
            )))
        }
    }

    /// Whether this key may send parts of `facility` (and `device_id`, for an agent's frames).
    pub fn may_send_for(&self, facility: &str, device_id: Option<&str>) -> Result<(), Forbidden> {
        if let Some(bound) = &self.facility
            && bound != facility
        {
            return Err(Forbidden(format!(
                "this key sends parts of facility {bound} only"
            )));
        }
        if let (Some(bound), Some(device)) = (&self.device_id, device_id)
            && bound != device
        {
            return Err(Forbidden(format!(
                "this key sends parts of device {bound} only"
            )));
        }
        Ok(())
    }
}

/// A key that may not do what it asked, and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct Forbidden(pub String);

/// Why a presented key was refused (logged and audited, never told the caller).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    Missing,
    Unknown,
    Revoked,
    Expired,
}

impl Refusal {
    pub fn as_str(self) -> &'static str {
        match self {
            Refusal::Missing => "missing",
            Refusal::Unknown => "unknown",
            Refusal::Revoked => "revoked",
            Refusal::Expired => "expired",
        }
    }
}

/// A key in force (or revoked, to say so).
#[derive(Debug, Clone)]
struct Holder {
    principal: Principal,
    expires_at: Option<DateTime<Utc>>,
    revoked: bool,
}

/// The prefix of a key written as `wk_<prefix>_<secret>`: the part that may be logged.
pub fn prefix_of(key: &str) -> Option<&str> {
    let rest = key.strip_prefix("wk_")?;
    let (prefix, _) = rest.split_once('_')?;
    (prefix.len() == PREFIX_LEN && prefix.bytes().all(|b| b.is_ascii_hexdigit())).then_some(prefix)
}

const PREFIX_LEN: usize = 8;
const SECRET_LEN: usize = 32;

/// A new key: `wk_<8 hex>_<32 letters and digits>` (about 190 bits of secret).
fn generate() -> (String, String) {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
    let mut rng = rand::rng();
    let prefix: String = (0..PREFIX_LEN)
        .map(|_| char::from(b"0123456789abcdef"[rng.random_range(0..16)]))
        .collect();
    let secret: String = (0..SECRET_LEN)
        .map(|_| char::from(ALPHABET[rng.random_range(0..ALPHABET.len())]))
        .collect();
    (format!("wk_{prefix}_{secret}"), prefix)
}

/// Why a key cannot be created.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("{0}")]
    Invalid(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Checks a request for a new key and stores it; the key itself is returned, once.
pub async fn create_key(store: &dyn Store, new: NewKey) -> Result<(String, StoredKey), KeyError> {
    let id = |field: &'static str, v: &str| {
        wiko_wire::frame::validate_id(field, v).map_err(|e| KeyError::Invalid(e.to_string()))
    };
    id("name", &new.name)?;
    if let Some(f) = &new.facility {
        id("facility", f)?;
    }
    if let Some(d) = &new.device_id {
        id("device_id", d)?;
    }
    match (new.scope, &new.facility, &new.device_id) {
        (Scope::Device, None, _) => {
            return Err(KeyError::Invalid(
                "a device key needs the facility it sends parts for".into(),
            ));
        }
        (Scope::Viewer | Scope::Admin, f, d) if f.is_some() || d.is_some() => {
            return Err(KeyError::Invalid(
                "only device keys are bound to a facility or device".into(),
            ));
        }
        _ => {}
    }
    if new.expires_at.is_some_and(|t| t <= Utc::now()) {
        return Err(KeyError::Invalid("expires_at is in the past".into()));
    }
    let (key, prefix) = generate();
    let stored = StoredKey {
        sha256: hash(&key),
        info: KeyInfo {
            prefix,
            name: new.name,
            scope: new.scope,
            facility: new.facility,
            device_id: new.device_id,
            created_at: Utc::now(),
            expires_at: new.expires_at,
            last_used_at: None,
            revoked_at: None,
        },
    };
    store.create_key(stored.clone()).await?;
    Ok((key, stored))
}

/// At most one reload of the stored keys per this long because a key was not known: a key
/// created on another replica works here at once, and wrong keys cannot make every request
/// read the database.
const RELOAD_ON_MISS_EVERY: std::time::Duration = std::time::Duration::from_millis(250);

/// The keys in force: those of the configuration and those stored, by hash.
pub struct Keyring {
    config: Vec<KeyEntry>,
    by_hash: RwLock<Arc<HashMap<[u8; 32], Holder>>>,
    /// Stored keys used since the last flush, by prefix.
    used: Mutex<HashMap<String, DateTime<Utc>>>,
    /// When an unknown key last made the keys be reloaded.
    missed: Mutex<Option<std::time::Instant>>,
}

impl Keyring {
    /// The configuration's keys; stored keys join at the first [`Keyring::reload`].
    pub fn new(config: Vec<KeyEntry>) -> Keyring {
        let keyring = Keyring {
            config,
            by_hash: RwLock::new(Arc::new(HashMap::new())),
            used: Mutex::new(HashMap::new()),
            missed: Mutex::new(None),
        };
        keyring.install(&[]);
        keyring
    }

    fn install(&self, stored: &[StoredKey]) {
        let mut map = HashMap::with_capacity(self.config.len() + stored.len());
        for k in &self.config {
            let principal = Principal {
                name: k.name.clone(),
                prefix: None,
                scope: k.scope,
                facility: k.facility.clone(),
                device_id: k.device_id.clone(),
            };
            let holder = Holder {
                principal,
                expires_at: None,
                revoked: false,
            };
            map.insert(k.sha256, holder);
        }
        for k in stored {
            let i = &k.info;
            let principal = Principal {
                name: i.name.clone(),
                prefix: Some(i.prefix.clone()),
                scope: i.scope,
                facility: i.facility.clone(),
                device_id: i.device_id.clone(),
            };
            let holder = Holder {
                principal,
                expires_at: i.expires_at,
                revoked: i.revoked_at.is_some(),
            };
            map.insert(k.sha256, holder);
        }
        *self.by_hash.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(map);
    }

    /// Reloads the stored keys, and records when keys were last used.
    pub async fn reload(&self, store: &dyn Store) -> Result<(), StoreError> {
        let used: Vec<(String, DateTime<Utc>)> = self
            .used
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .drain()
            .collect();
        store.touch_keys(used).await?;
        self.install(&store.keys().await?);
        Ok(())
    }

    /// The principal of a presented key; a key not known is looked for in the store once more
    /// (at most every [`RELOAD_ON_MISS_EVERY`]) before it is refused.
    pub async fn authenticate_or_reload(
        &self,
        presented: Option<&str>,
        store: &dyn Store,
    ) -> Result<Principal, Refusal> {
        match self.authenticate(presented) {
            Err(Refusal::Unknown) if self.may_reload_on_miss() => {
                if let Err(e) = self.reload(store).await {
                    tracing::warn!(error = %e, "reloading API keys for an unknown key failed");
                }
                self.authenticate(presented)
            }
            other => other,
        }
    }

    fn may_reload_on_miss(&self) -> bool {
        let mut missed = self.missed.lock().unwrap_or_else(|p| p.into_inner());
        let now = std::time::Instant::now();
        if missed.is_some_and(|t| now.duration_since(t) < RELOAD_ON_MISS_EVERY) {
            return false;
        }
        *missed = Some(now);
        true
    }

    /// The principal of the key named by `reference` ([`Principal::reference`]), among the
    /// keys loaded: what a dashboard session is checked against on each request, so that a
    /// revoked or expired key ends its sessions.
    pub fn by_reference(&self, reference: &str) -> Result<Principal, Refusal> {
        let map = self
            .by_hash
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        let holder = map
            .values()
            .find(|h| h.principal.reference() == reference)
            .ok_or(Refusal::Unknown)?;
        if holder.revoked {
            return Err(Refusal::Revoked);
        }
        if holder.expires_at.is_some_and(|t| t <= Utc::now()) {
            return Err(Refusal::Expired);
        }
        Ok(holder.principal.clone())
    }

    /// The principal of a presented key, among the keys loaded.
    pub fn authenticate(&self, presented: Option<&str>) -> Result<Principal, Refusal> {
        let presented = presented.ok_or(Refusal::Missing)?;
        let map = self
            .by_hash
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        let holder = map.get(&hash(presented)).ok_or(Refusal::Unknown)?;
        if holder.revoked {
            return Err(Refusal::Revoked);
        }
        let now = Utc::now();
        if holder.expires_at.is_some_and(|t| t <= now) {
            return Err(Refusal::Expired);
        }
        if let Some(prefix) = &holder.principal.prefix {
            self.used
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .insert(prefix.clone(), now);
        }
        Ok(holder.principal.clone())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn keyring() -> Keyring {
        let entry = |name: &str, scope, key: &str, facility: Option<&str>| KeyEntry {
            name: name.into(),
            scope,
            sha256: hash(key),
            facility: facility.map(str::to_string),
            device_id: None,
        };
        Keyring::new(vec![
            entry(
                "dev",
                Scope::Device,
                "device-key-0000001",
                Some("yangjiang"),
            ),
            entry("view", Scope::Viewer, "viewer-key-0000001", None),
            entry("view2", Scope::Viewer, "viewer-key-0000002", None),
        ])
    }

    #[test]
    fn scopes_gate_what_a_key_may_do() {
        let k = keyring();
        let may = |key, need| k.authenticate(Some(key)).unwrap().may(need).is_ok();
        assert!(may("device-key-0000001", Need::Ingest));
        assert!(!may("device-key-0000001", Need::Read));
        assert!(!may("viewer-key-0000001", Need::Ingest));
        assert!(may("viewer-key-0000002", Need::Read));
        assert!(may("device-key-0000001", Need::Model));
        assert!(may("viewer-key-0000002", Need::Model));
        assert_eq!(k.authenticate(Some("nope")), Err(Refusal::Unknown));
        assert_eq!(k.authenticate(None), Err(Refusal::Missing));
    }

    #[test]
    fn a_device_key_sends_for_its_own_facility_only() {
        let k = keyring();
        let dev = k.authenticate(Some("device-key-0000001")).unwrap();
        assert!(dev.may_send_for("yangjiang", Some("pc1")).is_ok());
        assert!(dev.may_send_for("elsewhere", Some("pc1")).is_err());
    }

    #[test]
    fn stored_keys_join_and_revoked_or_expired_ones_are_refused() {
        let k = keyring();
        let (key, prefix) = generate();
        assert_eq!(prefix_of(&key), Some(prefix.as_str()));
        let stored = |revoked: bool, expires_at: Option<DateTime<Utc>>| StoredKey {
            sha256: hash(&key),
            info: KeyInfo {
                prefix: prefix.clone(),
                name: "line1".into(),
                scope: Scope::Device,
                facility: Some("yangjiang".into()),
                device_id: Some("pc1".into()),
                created_at: Utc::now(),
                expires_at,
                last_used_at: None,
                revoked_at: revoked.then(Utc::now),
            },
        };
        k.install(&[stored(false, None)]);
        let p = k.authenticate(Some(&key)).unwrap();
        assert_eq!(p.prefix.as_deref(), Some(prefix.as_str()));
        assert!(
            p.may_send_for("yangjiang", Some("pc2")).is_err(),
            "bound to pc1"
        );
        assert!(
            k.authenticate(Some("viewer-key-0000001")).is_ok(),
            "config keys stay"
        );
        assert_eq!(k.by_reference(&p.reference()), Ok(p.clone()));
        let config_key = k.authenticate(Some("viewer-key-0000001")).unwrap();
        assert_eq!(config_key.reference(), "config:view");
        assert_eq!(k.by_reference("config:view"), Ok(config_key));
        assert_eq!(k.by_reference("config:nobody"), Err(Refusal::Unknown));
        k.install(&[stored(true, None)]);
        assert_eq!(k.authenticate(Some(&key)), Err(Refusal::Revoked));
        assert_eq!(k.by_reference(&p.reference()), Err(Refusal::Revoked));
        let past = Utc::now() - chrono::Duration::seconds(1);
        k.install(&[stored(false, Some(past))]);
        assert_eq!(k.authenticate(Some(&key)), Err(Refusal::Expired));
        assert_eq!(prefix_of("wk_XYZ_abc"), None);
        assert_eq!(prefix_of("plain-key"), None);
    }
}
