//! The cloud's configuration: one TOML file plus `WIKO_` environment overrides, read into
//! [`RawConfig`] and validated into [`Config`]. Every key is documented in
//! `config/cloud.example.toml`; a test checks that file parses. Loading and the error type are
//! shared with the agent (`wiko_agent::config`).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::http::auth::{KeyEntry, Scope};
use crate::store::postgres::PgSettings;
use crate::store::s3::S3Settings;
pub use wiko_agent::config::ConfigError;
use wiko_agent::config::{invalid, load_layered, secret};

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
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
    pub auth: AuthConfig,
    #[serde(default)]
    pub analysis: AnalysisConfig,
    #[serde(default)]
    pub mqtt: MqttConfig,
    #[serde(default)]
    pub database: DatabaseConfig,
    #[serde(default)]
    pub images: ImagesConfig,
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

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthConfig {
    /// API keys accepted in `X-API-Key`. Several may be active at once (rotation).
    #[serde(default)]
    pub keys: Vec<RawKey>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
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

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AnalysisConfig {
    /// Analysis workers (jobs processed at once); 0 makes an ingest-only replica whose jobs
    /// another replica works off. Default: 2.
    #[serde(default = "default_workers")]
    pub workers: usize,
    /// Kind of golden-sample model fitted for a SKU: `auto`, `aligned` or `texture`.
    #[serde(default)]
    pub method: wiko_inspect::MethodChoice,
    /// Share of good parts a fitted model's threshold may reject. Default: 0.01.
    #[serde(default = "default_false_reject_rate")]
    pub false_reject_rate: f32,
    /// A job that keeps failing is retried this many times, then marked failed.
    #[serde(default = "default_max_attempts")]
    pub max_attempts: u32,
    /// How long a worker holds a job before it is presumed dead and another worker (of any
    /// replica) takes the job, in seconds. Longer than the slowest analysis.
    #[serde(default = "default_job_lease_secs")]
    pub job_lease_secs: u64,
}

fn default_workers() -> usize {
    2
}
fn default_false_reject_rate() -> f32 {
    0.01
}
fn default_max_attempts() -> u32 {
    5
}
fn default_job_lease_secs() -> u64 {
    60
}

impl Default for AnalysisConfig {
    fn default() -> Self {
        AnalysisConfig {
            workers: default_workers(),
            method: wiko_inspect::MethodChoice::default(),
            false_reject_rate: default_false_reject_rate(),
            max_attempts: default_max_attempts(),
            job_lease_secs: default_job_lease_secs(),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MqttConfig {
    /// External broker, `mqtt://host:1883`. When absent, an embedded broker is started.
    #[serde(default)]
    pub url: Option<String>,
    /// Listen address of the embedded broker.
    #[serde(default = "default_embedded_listen")]
    pub embedded_listen: SocketAddr,
    /// Client id of this cloud replica on the broker.
    #[serde(default = "default_client_id")]
    pub client_id: String,
    /// Publish nothing (alerts stay in the outbox); for tests of the API alone.
    #[serde(default)]
    pub disabled: bool,
}

fn default_embedded_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 1883))
}
fn default_client_id() -> String {
    "wiko-cloud".into()
}

impl Default for MqttConfig {
    fn default() -> Self {
        MqttConfig {
            url: None,
            embedded_listen: default_embedded_listen(),
            client_id: default_client_id(),
            disabled: false,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DatabaseConfig {
    /// `postgres://user@host:5432/db`: results in PostgreSQL. Absent: the embedded SQLite file
    /// in `data_dir`.
    #[serde(default)]
    pub url: Option<String>,
    /// A file holding the URL (it carries the password).
    #[serde(default)]
    pub url_file: Option<PathBuf>,
    /// Connections this replica opens at most.
    #[serde(default = "default_max_connections")]
    pub max_connections: u32,
    /// Longest wait for a free connection before a request answers 503, in milliseconds.
    #[serde(default = "default_acquire_timeout_ms")]
    pub acquire_timeout_ms: u64,
    /// Longest a statement may run, in milliseconds (PostgreSQL `statement_timeout`).
    #[serde(default = "default_statement_timeout_ms")]
    pub statement_timeout_ms: u64,
    /// Apply pending migrations on start (otherwise run `wiko-cloud migrate`).
    #[serde(default = "default_true")]
    pub migrate_on_start: bool,
    /// How long a replica holds the MQTT messages it is publishing before another replica may
    /// take them over, in seconds.
    #[serde(default = "default_outbox_lease_secs")]
    pub outbox_lease_secs: u64,
}

fn default_max_connections() -> u32 {
    16
}
fn default_acquire_timeout_ms() -> u64 {
    3000
}
fn default_statement_timeout_ms() -> u64 {
    10_000
}
fn default_true() -> bool {
    true
}
fn default_outbox_lease_secs() -> u64 {
    30
}

impl Default for DatabaseConfig {
    fn default() -> Self {
        DatabaseConfig {
            url: None,
            url_file: None,
            max_connections: default_max_connections(),
            acquire_timeout_ms: default_acquire_timeout_ms(),
            statement_timeout_ms: default_statement_timeout_ms(),
            migrate_on_start: true,
            outbox_lease_secs: default_outbox_lease_secs(),
        }
    }
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ImagesConfig {
    /// Images in S3. Absent: the local directory in `data_dir`.
    #[serde(default)]
    pub s3: Option<RawS3>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawS3 {
    pub bucket: String,
    /// Endpoint URL of an S3-compatible server; absent for AWS.
    #[serde(default)]
    pub endpoint: Option<String>,
    #[serde(default = "default_region")]
    pub region: String,
    /// Prefixed to every key, e.g. `site-a/`.
    #[serde(default)]
    pub prefix: String,
    /// Bucket in the URL path instead of the host name (most local servers need it).
    #[serde(default)]
    pub path_style: bool,
    /// Accept a plain `http://` endpoint.
    #[serde(default)]
    pub allow_http: bool,
    /// Credentials; absent: `AWS_ACCESS_KEY_ID`/`AWS_SECRET_ACCESS_KEY` or the instance role.
    #[serde(default)]
    pub access_key_id: Option<String>,
    #[serde(default)]
    pub access_key_id_file: Option<PathBuf>,
    #[serde(default)]
    pub secret_access_key: Option<String>,
    #[serde(default)]
    pub secret_access_key_file: Option<PathBuf>,
    /// One request's time limit, in milliseconds.
    #[serde(default = "default_s3_timeout_ms")]
    pub request_timeout_ms: u64,
}

fn default_region() -> String {
    "us-east-1".into()
}
fn default_s3_timeout_ms() -> u64 {
    30_000
}

/// Where results are stored.
#[derive(Debug, Clone)]
pub enum Database {
    /// SQLite in `data_dir`.
    Embedded,
    Postgres {
        settings: PgSettings,
        migrate_on_start: bool,
    },
}

/// Where alerts go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Broker {
    /// Start rumqttd in-process on this address and publish to it.
    Embedded(SocketAddr),
    External {
        host: String,
        port: u16,
    },
    Disabled,
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
    pub keys: Vec<KeyEntry>,
    pub analysis: AnalysisConfig,
    pub broker: Broker,
    pub mqtt_client_id: String,
    pub database: Database,
    /// `None`: images in `data_dir`.
    pub s3: Option<S3Settings>,
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
        Config::try_from(load_layered::<RawConfig>(path, env)?)
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
        let mut keys = Vec::with_capacity(raw.auth.keys.len());
        for (i, k) in raw.auth.keys.iter().enumerate() {
            let key = |f: &str| format!("auth.keys[{i}].{f}");
            let inline = secret(&key("key"), k.key.clone(), k.key_file.as_deref())?;
            let hash = match (inline, &k.key_sha256) {
                (Some(secret), None) => KeyEntry::hash(&secret),
                (None, Some(hex)) => {
                    let bytes =
                        hex::decode(hex).map_err(|_| invalid(key("key_sha256"), "not hex"))?;
                    bytes
                        .try_into()
                        .map_err(|_| invalid(key("key_sha256"), "must be 64 hex digits"))?
                }
                _ => {
                    return Err(invalid(
                        key("key"),
                        "set exactly one of key, key_file, key_sha256",
                    ));
                }
            };
            if k.key.as_deref().is_some_and(|s| s.len() < 16) {
                return Err(invalid(key("key"), "must be at least 16 characters"));
            }
            keys.push(KeyEntry {
                name: k.name.clone(),
                scope: k.scope,
                sha256: hash,
            });
        }
        let a = &raw.analysis;
        if a.workers > 64 {
            return Err(invalid("analysis.workers", "must be 0 to 64"));
        }
        if a.job_lease_secs == 0 {
            return Err(invalid("analysis.job_lease_secs", "must be above zero"));
        }
        if !(a.false_reject_rate > 0.0 && a.false_reject_rate < 0.5) {
            return Err(invalid(
                "analysis.false_reject_rate",
                "must be above 0 and below 0.5",
            ));
        }
        let broker = if raw.mqtt.disabled {
            Broker::Disabled
        } else {
            match &raw.mqtt.url {
                None => Broker::Embedded(raw.mqtt.embedded_listen),
                Some(url) => {
                    let rest = url
                        .strip_prefix("mqtt://")
                        .or_else(|| url.strip_prefix("tcp://"))
                        .ok_or_else(|| invalid("mqtt.url", "must start with mqtt://"))?;
                    let (host, port) = match rest.rsplit_once(':') {
                        Some((h, p)) => (
                            h,
                            p.trim_end_matches('/')
                                .parse()
                                .map_err(|_| invalid("mqtt.url", "bad port"))?,
                        ),
                        None => (rest.trim_end_matches('/'), 1883),
                    };
                    if host.is_empty() {
                        return Err(invalid("mqtt.url", "no host"));
                    }
                    Broker::External {
                        host: host.to_string(),
                        port,
                    }
                }
            }
        };
        let database = database(&raw.database)?;
        let s3 = raw.images.s3.map(s3_settings).transpose()?;
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
            keys,
            analysis: raw.analysis,
            broker,
            mqtt_client_id: raw.mqtt.client_id,
            database,
            s3,
        })
    }
}

fn database(d: &DatabaseConfig) -> Result<Database, ConfigError> {
    let Some(url) = secret("database.url", d.url.clone(), d.url_file.as_deref())? else {
        return Ok(Database::Embedded);
    };
    if !(url.starts_with("postgres://") || url.starts_with("postgresql://")) {
        return Err(invalid("database.url", "must start with postgres://"));
    }
    if !(1..=1000).contains(&d.max_connections) {
        return Err(invalid("database.max_connections", "must be 1 to 1000"));
    }
    if d.acquire_timeout_ms == 0 || d.statement_timeout_ms == 0 || d.outbox_lease_secs == 0 {
        return Err(invalid(
            "database",
            "acquire_timeout_ms, statement_timeout_ms and outbox_lease_secs must be above zero",
        ));
    }
    Ok(Database::Postgres {
        settings: PgSettings {
            url,
            max_connections: d.max_connections,
            acquire_timeout: Duration::from_millis(d.acquire_timeout_ms),
            statement_timeout: Duration::from_millis(d.statement_timeout_ms),
            outbox_lease: Duration::from_secs(d.outbox_lease_secs),
        },
        migrate_on_start: d.migrate_on_start,
    })
}

fn s3_settings(s: RawS3) -> Result<S3Settings, ConfigError> {
    if s.bucket.is_empty() {
        return Err(invalid("images.s3.bucket", "is empty"));
    }
    if let Some(endpoint) = &s.endpoint {
        if endpoint.starts_with("http://") && !s.allow_http {
            return Err(invalid(
                "images.s3.endpoint",
                "is plain http: set images.s3.allow_http = true for a local server",
            ));
        }
        if !(endpoint.starts_with("http://") || endpoint.starts_with("https://")) {
            return Err(invalid(
                "images.s3.endpoint",
                "must start with http:// or https://",
            ));
        }
    }
    if !(s.prefix.is_empty() || s.prefix.ends_with('/')) {
        return Err(invalid("images.s3.prefix", "must end with /"));
    }
    if s.request_timeout_ms == 0 {
        return Err(invalid(
            "images.s3.request_timeout_ms",
            "must be above zero",
        ));
    }
    let access_key_id = secret(
        "images.s3.access_key_id",
        s.access_key_id,
        s.access_key_id_file.as_deref(),
    )?;
    let secret_access_key = secret(
        "images.s3.secret_access_key",
        s.secret_access_key,
        s.secret_access_key_file.as_deref(),
    )?;
    if access_key_id.is_some() != secret_access_key.is_some() {
        return Err(invalid(
            "images.s3.access_key_id",
            "set both access_key_id and secret_access_key, or neither",
        ));
    }
    Ok(S3Settings {
        bucket: s.bucket,
        endpoint: s.endpoint,
        region: s.region,
        prefix: s.prefix,
        path_style: s.path_style,
        allow_http: s.allow_http,
        access_key_id,
        secret_access_key,
        request_timeout: Duration::from_millis(s.request_timeout_ms),
    })
}

#[cfg(test)]
mod tests;
