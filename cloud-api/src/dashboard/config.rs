//! `[dashboard]`: the sessions of the pages served at `/`.

use std::path::PathBuf;

use chrono::NaiveTime;
use serde::Deserialize;
use wiko_daemon::config::{ConfigError, invalid, secret};

use super::overview::Plant;

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
    /// The plant's offset from UTC, in minutes (e.g. 480 for UTC+8): where "today" and the
    /// shifts of the Overview begin.
    #[serde(default)]
    pub utc_offset_minutes: i32,
    /// When the plant's shifts start, local `HH:MM` (default 06:00, 14:00, 22:00).
    #[serde(default)]
    pub shift_starts: Option<Vec<String>>,
}

/// The validated `[dashboard]` section.
#[derive(Clone)]
pub struct Dashboard {
    /// `None`: a random secret is drawn at start.
    pub session_secret: Option<Vec<u8>>,
    pub session_ttl_secs: u64,
    pub secure_cookies: bool,
    pub plant: Plant,
}

impl std::fmt::Debug for Dashboard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Dashboard")
            .field("session_secret", &self.session_secret.as_ref().map(|_| "…"))
            .field("session_ttl_secs", &self.session_ttl_secs)
            .field("secure_cookies", &self.secure_cookies)
            .field("plant", &self.plant)
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
        if !(-12 * 60..=14 * 60).contains(&self.utc_offset_minutes) {
            return Err(invalid(
                "dashboard.utc_offset_minutes",
                "must be between -720 and 840",
            ));
        }
        let starts = self
            .shift_starts
            .unwrap_or_else(|| vec!["06:00".into(), "14:00".into(), "22:00".into()]);
        let mut shift_starts = starts
            .iter()
            .map(|s| NaiveTime::parse_from_str(s, "%H:%M"))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|_| {
                invalid(
                    "dashboard.shift_starts",
                    "each must be a time like \"06:00\"",
                )
            })?;
        if shift_starts.is_empty() {
            return Err(invalid(
                "dashboard.shift_starts",
                "needs at least one shift",
            ));
        }
        shift_starts.sort();
        Ok(Dashboard {
            session_secret: session_secret.map(String::into_bytes),
            session_ttl_secs,
            secure_cookies: self.secure_cookies,
            plant: Plant {
                utc_offset_minutes: self.utc_offset_minutes,
                shift_starts,
            },
        })
    }
}
