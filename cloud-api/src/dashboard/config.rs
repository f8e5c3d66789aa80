//! `[dashboard]`: the sessions of the pages served at `/`.

use std::path::PathBuf;

use serde::Deserialize;
use wiko_daemon::config::{ConfigError, invalid, secret};

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(test, derive(schemars::JsonSchema))]
pub struct DashboardConfig {
    /// The secret that signs session cookies and form tokens (at least 32 characters). Every
    /// replica behind one address needs the same. Unset: a random one per start (sessions end
    /// at a restart and hold on one replica only). Prefer `session_secret_file`.
    #[serde(default)]
    pub session_secret: Option<String>,
    /// A file holding the session secret (trimmed).
    #[serde(default)]
    pub session_secret_file: Option<PathBuf>,
    /// How long a sign-in lasts, in seconds (default 12 hours: a shift and its handover).
    #[serde(default)]
    pub session_ttl_secs: Option<u64>,
    /// Mark the session cookie `Secure` (sent over HTTPS only): set it when a TLS proxy serves
    /// the dashboard.
    #[serde(default)]
    pub secure_cookies: bool,
}

/// The validated `[dashboard]` section.
#[derive(Clone)]
pub struct Dashboard {
    /// `None`: a random secret is drawn at start.
    pub session_secret: Option<Vec<u8>>,
    pub session_ttl_secs: u64,
    pub secure_cookies: bool,
}

impl std::fmt::Debug for Dashboard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Dashboard")
            .field("session_secret", &self.session_secret.as_ref().map(|_| "…"))
            .field("session_ttl_secs", &self.session_ttl_secs)
            .field("secure_cookies", &self.secure_cookies)
            .finish()
    }
}

const DEFAULT_TTL_SECS: u64 = 12 * 3600;
const MIN_SECRET_LEN: usize = 32;

impl DashboardConfig {
    pub(crate) fn validate(self) -> Result<Dashboard, ConfigError> {
        let key = "dashboard.session_secret";
        let session_secret = secret(
            key,
            self.session_secret,
            self.session_secret_file.as_deref(),
        )?;
        if session_secret
            .as_ref()
            .is_some_and(|s| s.len() < MIN_SECRET_LEN)
        {
            return Err(invalid(
                key,
                format!("must be at least {MIN_SECRET_LEN} characters"),
            ));
        }
        let session_ttl_secs = self.session_ttl_secs.unwrap_or(DEFAULT_TTL_SECS);
        if !(60..=30 * 86_400).contains(&session_ttl_secs) {
            return Err(invalid(
                "dashboard.session_ttl_secs",
                "must be between 60 and 2592000 (30 days)",
            ));
        }
        Ok(Dashboard {
            session_secret: session_secret.map(String::into_bytes),
            session_ttl_secs,
            secure_cookies: self.secure_cookies,
        })
    }
}
