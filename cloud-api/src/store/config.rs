//! `[database]` and `[images]`: where records and images are stored.

use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;
use wiko_daemon::config::{ConfigError, invalid, secret};

use super::PgSettings;
use super::s3::S3Settings;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(test, derive(schemars::JsonSchema))]
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
    /// How long a replica holds the MQTT events it is publishing before another replica may
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
#[cfg_attr(test, derive(schemars::JsonSchema))]
pub struct ImagesConfig {
    /// Images in S3. Absent: the local directory in `data_dir`.
    #[serde(default)]
    pub s3: Option<RawS3>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(test, derive(schemars::JsonSchema))]
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

/// Where records are stored.
#[derive(Debug, Clone)]
pub enum Database {
    /// SQLite in `data_dir`.
    Embedded,
    Postgres {
        settings: PgSettings,
        migrate_on_start: bool,
    },
}

impl DatabaseConfig {
    pub(crate) fn validate(&self) -> Result<Database, ConfigError> {
        let Some(url) = secret("database.url", self.url.clone(), self.url_file.as_deref())? else {
            return Ok(Database::Embedded);
        };
        if !(url.starts_with("postgres://") || url.starts_with("postgresql://")) {
            return Err(invalid("database.url", "must start with postgres://"));
        }
        if !(1..=1000).contains(&self.max_connections) {
            return Err(invalid("database.max_connections", "must be 1 to 1000"));
        }
        if self.acquire_timeout_ms == 0
            || self.statement_timeout_ms == 0
            || self.outbox_lease_secs == 0
        {
            return Err(invalid(
                "database",
                "acquire_timeout_ms, statement_timeout_ms and outbox_lease_secs must be above zero",
            ));
        }
        Ok(Database::Postgres {
            settings: PgSettings {
                url,
                max_connections: self.max_connections,
                acquire_timeout: Duration::from_millis(self.acquire_timeout_ms),
                statement_timeout: Duration::from_millis(self.statement_timeout_ms),
                outbox_lease: Duration::from_secs(self.outbox_lease_secs),
            },
            migrate_on_start: self.migrate_on_start,
        })
    }
}

impl RawS3 {
    pub(crate) fn validate(self) -> Result<S3Settings, ConfigError> {
        if self.bucket.is_empty() {
            return Err(invalid("images.s3.bucket", "is empty"));
        }
        if let Some(endpoint) = &self.endpoint {
            if endpoint.starts_with("http://") && !self.allow_http {
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
        if !(self.prefix.is_empty() || self.prefix.ends_with('/')) {
            return Err(invalid("images.s3.prefix", "must end with /"));
        }
        if self.request_timeout_ms == 0 {
            return Err(invalid(
                "images.s3.request_timeout_ms",
                "must be above zero",
            ));
        }
        let access_key_id = secret(
            "images.s3.access_key_id",
            self.access_key_id,
            self.access_key_id_file.as_deref(),
        )?;
        let secret_access_key = secret(
            "images.s3.secret_access_key",
            self.secret_access_key,
            self.secret_access_key_file.as_deref(),
        )?;
        if access_key_id.is_some() != secret_access_key.is_some() {
            return Err(invalid(
                "images.s3.access_key_id",
                "set both access_key_id and secret_access_key, or neither",
            ));
        }
        Ok(S3Settings {
            bucket: self.bucket,
            endpoint: self.endpoint,
            region: self.region,
            prefix: self.prefix,
            path_style: self.path_style,
            allow_http: self.allow_http,
            access_key_id,
            secret_access_key,
            request_timeout: Duration::from_millis(self.request_timeout_ms),
        })
    }
}
