//! The cloud's configuration: one TOML file plus `WIKO_CLOUD__` environment overrides, read
//! into [`RawConfig`] and validated into [`Config`]. The top-level keys are here; each section
//! lives beside the component it configures (`auth`, `analysis`, `alert`, `store`) and
//! validates itself. Every key is documented in `config/cloud.example.toml`; a test derives the
//! keys from these types and checks that the file documents each. Loading is
//! `wiko_daemon::config`'s, shared with the agent.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use wiko_daemon::config::{invalid, load_layered};

use crate::alert::config::MqttConfig;
use crate::analysis::config::AnalysisConfig;
use crate::analysis::remote::config::{RemoteConfig, RemoteSettings};
use crate::auth::KeyEntry;
use crate::auth::config::{AuthConfig, LimitsConfig};
use crate::dashboard::config::{Dashboard, DashboardConfig};
use crate::fleet::FleetConfig;
use crate::http::config::HttpConfig;
use crate::store::config::{DatabaseConfig, ImagesConfig};
use crate::store::s3::S3Settings;

pub use crate::alert::config::{Broker, Replay};
pub use crate::store::config::Database;
pub use wiko_daemon::config::ConfigError;

/// Environment variables under this prefix override keys: `WIKO_CLOUD__MQTT__URL`.
pub const ENV_PREFIX: &str = "WIKO_CLOUD";

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(test, derive(schemars::JsonSchema))]
pub struct RawConfig {
    /// Address the API listens on. The prototype used port 5001.
    #[serde(default = "default_listen")]
    pub listen: SocketAddr,
    /// URL clients reach this API at; prefixed to image paths in MQTT alerts.
    #[serde(default)]
    pub public_url: Option<String>,
    /// Directory of the embedded store (database and images).
    #[serde(default = "default_data_dir")]
    pub data_dir: PathBuf,
    /// Largest accepted request body (a frame upload), in bytes.
    #[serde(default = "default_max_body_bytes")]
    pub max_body_bytes: usize,
    /// Requests served at once; more wait for a slot (bounds memory: each may hold a body of
    /// up to `max_body_bytes`).
    #[serde(default = "default_max_concurrent_requests")]
    pub max_concurrent_requests: usize,
    /// Largest accepted image, in pixels (width × height); larger ones are refused unread.
    #[serde(default = "default_max_image_pixels")]
    pub max_image_pixels: u64,
    #[serde(default)]
    pub http: HttpConfig,
    #[serde(default)]
    pub auth: AuthConfig,
    #[serde(default)]
    pub analysis: AnalysisConfig,
    #[serde(default)]
    pub mqtt: MqttConfig,
    #[serde(default)]
    pub database: DatabaseConfig,
    #[serde(default)]
    pub images: ImagesConfig,
    #[serde(default)]
    pub fleet: FleetConfig,
    #[serde(default)]
    pub dashboard: DashboardConfig,
    /// A remote vision model behind the golden gate; absent: none.
    #[serde(default)]
    pub remote: Option<RemoteConfig>,
}

fn default_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 5001))
}
fn default_data_dir() -> PathBuf {
    PathBuf::from("/var/lib/wiko-cloud")
}
fn default_max_body_bytes() -> usize {
    16 * 1024 * 1024
}
fn default_max_concurrent_requests() -> usize {
    256
}
fn default_max_image_pixels() -> u64 {
    40_000_000
}

/// A validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    pub listen: SocketAddr,
    pub public_url: String,
    pub data_dir: PathBuf,
    pub max_body_bytes: usize,
    pub max_concurrent_requests: usize,
    pub max_image_pixels: u64,
    pub http: HttpConfig,
    pub keys: Vec<KeyEntry>,
    pub limits: LimitsConfig,
    pub analysis: AnalysisConfig,
    pub broker: Broker,
    pub mqtt_client_id: String,
    /// How long published events are kept and replayed after a start.
    pub replay: Replay,
    pub database: Database,
    /// `None`: images in `data_dir`.
    pub s3: Option<S3Settings>,
    pub fleet: FleetConfig,
    /// The dashboard's sessions.
    pub dashboard: Dashboard,
    /// `None`: no remote analysis.
    pub remote: Option<RemoteSettings>,
}

impl Config {
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        Config::load_with_env(path, None)
    }

    /// As [`Config::load`], reading overrides from `env` instead of the process environment.
    pub fn load_with_env(
        path: &Path,
        env: Option<HashMap<String, String>>,
    ) -> Result<Config, ConfigError> {
        Config::try_from(load_layered::<RawConfig>(path, ENV_PREFIX, env)?)
    }

    /// A configuration written as TOML text (the demo's, the tests'), without the
    /// environment.
    pub fn from_toml(text: &str) -> Result<Config, ConfigError> {
        let raw: RawConfig = toml::from_str(text).map_err(|e| invalid("(file)", e.to_string()))?;
        Config::try_from(raw)
    }
}

impl TryFrom<RawConfig> for Config {
    type Error = ConfigError;

    fn try_from(raw: RawConfig) -> Result<Config, ConfigError> {
        if raw.max_body_bytes < 1024 {
            return Err(invalid("max_body_bytes", "must be at least 1024"));
        }
        if raw.max_concurrent_requests == 0 {
            return Err(invalid("max_concurrent_requests", "must be above zero"));
        }
        if raw.max_image_pixels == 0 {
            return Err(invalid("max_image_pixels", "must be above zero"));
        }
        raw.http.validate()?;
        let keys = raw.auth.validate()?;
        raw.analysis.validate()?;
        let broker = raw.mqtt.validate(&raw.data_dir)?;
        let database = raw.database.validate()?;
        let s3 = raw.images.s3.map(|s3| s3.validate()).transpose()?;
        raw.fleet.validate()?;
        let dashboard = raw.dashboard.validate()?;
        let remote = raw.remote.map(RemoteConfig::validate).transpose()?;
        let public_url = raw
            .public_url
            .unwrap_or_else(|| format!("http://{}", raw.listen))
            .trim_end_matches('/')
            .to_string();
        Ok(Config {
            listen: raw.listen,
            public_url,
            data_dir: raw.data_dir,
            max_body_bytes: raw.max_body_bytes,
            max_concurrent_requests: raw.max_concurrent_requests,
            max_image_pixels: raw.max_image_pixels,
            http: raw.http,
            keys,
            limits: raw.auth.limits,
            analysis: raw.analysis,
            broker,
            replay: raw.mqtt.replay(),
            mqtt_client_id: raw.mqtt.client_id,
            database,
            s3,
            fleet: raw.fleet,
            dashboard,
            remote,
        })
    }
}

#[cfg(test)]
mod tests;
