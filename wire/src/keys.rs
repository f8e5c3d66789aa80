//! API keys (`/api/v1/keys`, admin): what a key may do and where, and its life. A key is shown
//! once, when it is created; afterwards only its prefix (`wk_<prefix>_…`) names it.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// What a key may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum Scope {
    /// Upload frames and call `/analyze` (for its facility, and device when bound).
    Device,
    /// Read results, images and metrics.
    Viewer,
    /// Everything, including keys and golden sets.
    Admin,
}

impl Scope {
    pub fn as_str(self) -> &'static str {
        match self {
            Scope::Device => "device",
            Scope::Viewer => "viewer",
            Scope::Admin => "admin",
        }
    }

    pub fn parse(name: &str) -> Option<Scope> {
        [Scope::Device, Scope::Viewer, Scope::Admin]
            .into_iter()
            .find(|s| s.as_str() == name)
    }
}

/// `POST /api/v1/keys`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct NewKey {
    /// Who holds it (logs and audit), e.g. `yangjiang-line1-pc`.
    #[cfg_attr(feature = "openapi", schema(pattern = "^[A-Za-z0-9._:-]{1,128}$"))]
    pub name: String,
    pub scope: Scope,
    /// A device key may ingest only for this facility; required for device keys.
    #[serde(default)]
    #[cfg_attr(feature = "openapi", schema(pattern = "^[A-Za-z0-9._:-]{1,128}$"))]
    pub facility: Option<String>,
    /// A device key bound to one device may ingest only as it.
    #[serde(default)]
    #[cfg_attr(feature = "openapi", schema(pattern = "^[A-Za-z0-9._:-]{1,128}$"))]
    pub device_id: Option<String>,
    /// When the key stops working; never when absent.
    #[serde(default)]
    pub expires_at: Option<DateTime<Utc>>,
}

/// A key as listed: everything but the secret.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct KeyInfo {
    /// The visible part of the key, `wk_<prefix>_…`: how it is named in logs and the audit.
    pub prefix: String,
    pub name: String,
    pub scope: Scope,
    pub facility: Option<String>,
    pub device_id: Option<String>,
    pub created_at: DateTime<Utc>,
    pub expires_at: Option<DateTime<Utc>>,
    /// Last request made with it (updated within seconds).
    pub last_used_at: Option<DateTime<Utc>>,
    pub revoked_at: Option<DateTime<Utc>>,
}

/// The answer to `POST /api/v1/keys`: the key itself, shown this once.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct CreatedKey {
    pub key: String,
    pub info: KeyInfo,
}
