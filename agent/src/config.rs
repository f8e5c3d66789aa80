//! The agent's configuration: one TOML file plus `WIKO_AGENT__` environment overrides
//! (`WIKO_AGENT__SYNC__ENDPOINT=…`), read into [`RawConfig`] and validated into [`Config`].
//!
//! Every key is documented in `config/agent.example.toml`; a test checks that file parses.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
pub use wiko_daemon::config::ConfigError;
use wiko_daemon::config::{invalid, load_layered, secret};

/// The file as written.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(test, derive(schemars::JsonSchema))]
pub struct RawConfig {
    /// Unique name of this line PC; part of every frame record.
    pub device_id: String,
    /// Plant the line PC stands in, e.g. `yangjiang`.
    pub facility: String,
    /// Directory for the buffer database; created if missing.
    #[serde(default = "default_data_dir")]
    pub data_dir: PathBuf,
    #[serde(default)]
    pub buffer: BufferConfig,
    pub sync: RawSyncConfig,
    #[serde(default)]
    pub http: HttpConfig,
    /// One entry per camera/station.
    #[serde(default)]
    pub camera: Vec<CameraConfig>,
}

fn default_data_dir() -> PathBuf {
    PathBuf::from("/var/lib/wiko-agent")
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(test, derive(schemars::JsonSchema))]
pub struct BufferConfig {
    /// Upper bound of the frames kept in the buffer (JPEG bytes plus 512 bytes per row).
    #[serde(default = "default_max_disk_bytes")]
    pub max_disk_bytes: u64,
    /// Free space kept on the buffer's file system: under it the buffer does not grow (frames
    /// are evicted or refused by `when_full`) and the agent reports `degraded`.
    #[serde(default = "default_min_free_bytes")]
    pub min_free_bytes: u64,
    /// What happens to a new frame when the buffer is full.
    #[serde(default)]
    pub when_full: WhenFull,
    /// `full`: every frame is fsynced before it counts as captured (survives power loss);
    /// `normal`: survives a crash of the agent, may lose the last frames on power loss.
    #[serde(default)]
    pub synchronous: Synchronous,
}

fn default_max_disk_bytes() -> u64 {
    2_000_000_000
}

fn default_min_free_bytes() -> u64 {
    256 * 1024 * 1024
}

impl Default for BufferConfig {
    fn default() -> Self {
        BufferConfig {
            max_disk_bytes: default_max_disk_bytes(),
            min_free_bytes: default_min_free_bytes(),
            when_full: WhenFull::default(),
            synchronous: Synchronous::default(),
        }
    }
}

/// Policy when a new frame does not fit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
#[cfg_attr(test, derive(schemars::JsonSchema))]
pub enum WhenFull {
    /// Evict the oldest unsynced frames, OK (or unjudged) frames before NG frames.
    #[default]
    DropOldest,
    /// Keep what is buffered; the new frame is refused and counted.
    RejectNew,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
#[cfg_attr(test, derive(schemars::JsonSchema))]
pub enum Synchronous {
    #[default]
    Full,
    Normal,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(test, derive(schemars::JsonSchema))]
pub struct RawSyncConfig {
    /// Base URL of the cloud API, e.g. `https://wiko.example.com`.
    pub endpoint: String,
    /// API key with the `device` scope. Prefer `api_key_file`.
    #[serde(default)]
    pub api_key: Option<String>,
    /// File holding the API key (e.g. under `$CREDENTIALS_DIRECTORY`).
    #[serde(default)]
    pub api_key_file: Option<PathBuf>,
    /// Uploads in flight at once.
    #[serde(default = "default_concurrency")]
    pub concurrency: usize,
    /// Deadline of one upload.
    #[serde(default = "default_request_timeout_secs")]
    pub request_timeout_secs: u64,
    /// First retry delay after a failure; doubles per failure, with jitter.
    #[serde(default = "default_backoff_initial_ms")]
    pub backoff_initial_ms: u64,
    /// Longest retry delay.
    #[serde(default = "default_backoff_max_secs")]
    pub backoff_max_secs: u64,
    /// How often the buffer is checked when nothing wakes the uploader.
    #[serde(default = "default_poll_interval_ms")]
    pub poll_interval_ms: u64,
    /// Seconds between heartbeats to the cloud (the fleet view); 0 sends none.
    #[serde(default = "default_heartbeat_secs")]
    pub heartbeat_secs: u64,
}

fn default_concurrency() -> usize {
    4
}
fn default_request_timeout_secs() -> u64 {
    30
}
fn default_backoff_initial_ms() -> u64 {
    250
}
fn default_backoff_max_secs() -> u64 {
    30
}
fn default_poll_interval_ms() -> u64 {
    1000
}
fn default_heartbeat_secs() -> u64 {
    60
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(test, derive(schemars::JsonSchema))]
pub struct HttpConfig {
    /// Local address of `/healthz` and `/metrics`; keep it on loopback or the plant network.
    #[serde(default = "default_listen")]
    pub listen: SocketAddr,
}

fn default_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 9464))
}

impl Default for HttpConfig {
    fn default() -> Self {
        HttpConfig {
            listen: default_listen(),
        }
    }
}

/// One camera at one station.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(test, derive(schemars::JsonSchema))]
pub struct CameraConfig {
    /// Name used in logs and metrics; unique per agent.
    pub name: String,
    pub line: String,
    pub station: String,
    /// SKU of the parts this camera sees (until a trigger carries one).
    pub sku: String,
    pub source: SourceConfig,
    /// What makes a part. Not used by `folder`, where every new file is a part.
    #[serde(default)]
    pub trigger: Option<TriggerConfig>,
}

/// Where frames come from, by `type`.
#[derive(Debug, Clone, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
#[cfg_attr(test, derive(schemars::JsonSchema))]
pub enum SourceConfig {
    /// Renders knife photos with known defects (demo and test camera).
    Synthetic {
        /// Seed of the picture stream; the same seed gives the same parts.
        #[serde(default)]
        seed: u64,
        /// Share of parts painted with a defect, 0..1.
        #[serde(default = "default_defect_rate")]
        defect_rate: f64,
    },
    /// A hot folder an industrial camera writes image files into.
    Folder {
        path: PathBuf,
        /// Where taken files are moved; default `<path>/done`.
        #[serde(default)]
        done_dir: Option<PathBuf>,
        /// Where unreadable files are moved; default `<path>/rejected`.
        #[serde(default)]
        reject_dir: Option<PathBuf>,
        /// A file counts as complete once its size and mtime stayed unchanged this long.
        #[serde(default = "default_settle_ms")]
        settle_ms: u64,
        #[serde(default = "default_folder_poll_ms")]
        poll_interval_ms: u64,
        /// A JPEG without its end-of-image marker is still being written; after this long
        /// unchanged it is rejected as truncated.
        #[serde(default = "default_incomplete_grace_secs")]
        incomplete_grace_secs: u64,
    },
}

fn default_defect_rate() -> f64 {
    0.15
}
fn default_settle_ms() -> u64 {
    300
}
fn default_folder_poll_ms() -> u64 {
    200
}
fn default_incomplete_grace_secs() -> u64 {
    30
}

/// What makes a part, by `type`.
#[derive(Debug, Clone, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
#[cfg_attr(test, derive(schemars::JsonSchema))]
pub enum TriggerConfig {
    /// A part every `interval_ms`.
    Interval {
        interval_ms: u64,
        /// Stop after this many parts (demos and tests); unlimited when absent.
        #[serde(default)]
        max_parts: Option<u64>,
    },
}

/// A validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    pub device_id: String,
    pub facility: String,
    pub data_dir: PathBuf,
    pub buffer: BufferConfig,
    pub sync: SyncConfig,
    pub http: HttpConfig,
    pub cameras: Vec<CameraConfig>,
}

/// Validated sync settings, the key resolved.
#[derive(Debug, Clone)]
pub struct SyncConfig {
    pub endpoint: String,
    pub api_key: String,
    pub concurrency: usize,
    pub request_timeout: Duration,
    pub backoff_initial: Duration,
    pub backoff_max: Duration,
    pub poll_interval: Duration,
    /// `None`: no heartbeats.
    pub heartbeat: Option<Duration>,
}

/// Environment variables under this prefix override keys: `WIKO_AGENT__SYNC__ENDPOINT`.
pub const ENV_PREFIX: &str = "WIKO_AGENT";

/// Smallest buffer worth running with: a few hundred full-HD frames.
pub const MIN_BUFFER_BYTES: u64 = 64 * 1024 * 1024;

/// Smallest free-space watermark: room for the write-ahead log between two checkpoints
/// (SQLite's default of 1,000 pages of 4 KiB).
pub const MIN_FREE_BYTES: u64 = 4 * 1024 * 1024;

impl Config {
    /// Reads `path` plus `WIKO_AGENT__…` environment overrides and validates the result.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        Config::load_with_env(path, None)
    }

    /// As [`Config::load`], reading overrides from `env` instead of the process environment.
    pub fn load_with_env(
        path: &Path,
        env: Option<std::collections::HashMap<String, String>>,
    ) -> Result<Config, ConfigError> {
        Config::try_from(load_layered::<RawConfig>(path, ENV_PREFIX, env)?)
    }
}

impl TryFrom<RawConfig> for Config {
    type Error = ConfigError;

    fn try_from(raw: RawConfig) -> Result<Config, ConfigError> {
        let id = |key: &str, value: &str| {
            wiko_wire::frame::validate_id("id", value).map_err(|e| invalid(key, e.to_string()))
        };
        id("device_id", &raw.device_id)?;
        id("facility", &raw.facility)?;
        if raw.buffer.max_disk_bytes < MIN_BUFFER_BYTES {
            return Err(invalid(
                "buffer.max_disk_bytes",
                format!("must be at least {MIN_BUFFER_BYTES}"),
            ));
        }
        if raw.buffer.min_free_bytes < MIN_FREE_BYTES {
            return Err(invalid(
                "buffer.min_free_bytes",
                format!("must be at least {MIN_FREE_BYTES}"),
            ));
        }
        let s = raw.sync;
        let url = s.endpoint.trim_end_matches('/').to_string();
        if !(url.starts_with("http://") || url.starts_with("https://")) {
            return Err(invalid(
                "sync.endpoint",
                "must start with http:// or https://",
            ));
        }
        let api_key = secret("sync.api_key", s.api_key, s.api_key_file.as_deref())?
            .ok_or_else(|| invalid("sync.api_key", "missing (or set api_key_file)"))?;
        if api_key.is_empty() {
            return Err(invalid("sync.api_key", "is empty"));
        }
        if !(1..=64).contains(&s.concurrency) {
            return Err(invalid("sync.concurrency", "must be 1 to 64"));
        }
        if s.request_timeout_secs == 0 || s.backoff_initial_ms == 0 || s.poll_interval_ms == 0 {
            return Err(invalid("sync", "timeouts and intervals must be above zero"));
        }
        if s.heartbeat_secs > u64::from(wiko_wire::Heartbeat::MAX_INTERVAL_SECONDS) {
            return Err(invalid(
                "sync.heartbeat_secs",
                format!(
                    "must be at most {}",
                    wiko_wire::Heartbeat::MAX_INTERVAL_SECONDS
                ),
            ));
        }
        if s.backoff_max_secs * 1000 < s.backoff_initial_ms {
            return Err(invalid(
                "sync.backoff_max_secs",
                "must be at least backoff_initial_ms",
            ));
        }
        let mut names = std::collections::HashSet::new();
        for (i, cam) in raw.camera.iter().enumerate() {
            let key = |k: &str| format!("camera[{i}].{k}");
            if !names.insert(cam.name.as_str()) {
                return Err(invalid(
                    key("name"),
                    format!("`{}` is used twice", cam.name),
                ));
            }
            id(&key("name"), &cam.name)?;
            id(&key("line"), &cam.line)?;
            id(&key("station"), &cam.station)?;
            id(&key("sku"), &cam.sku)?;
            match (&cam.source, &cam.trigger) {
                (SourceConfig::Synthetic { defect_rate, .. }, trigger) => {
                    if !(0.0..=1.0).contains(defect_rate) {
                        return Err(invalid(key("source.defect_rate"), "must be within 0..1"));
                    }
                    match trigger {
                        None => {
                            return Err(invalid(
                                key("trigger"),
                                "a synthetic camera needs a trigger",
                            ));
                        }
                        Some(TriggerConfig::Interval { interval_ms, .. }) if *interval_ms == 0 => {
                            return Err(invalid(key("trigger.interval_ms"), "must be above zero"));
                        }
                        Some(_) => {}
                    }
                }
                (SourceConfig::Folder { .. }, Some(_)) => {
                    return Err(invalid(
                        key("trigger"),
                        "a folder camera is triggered by its files",
                    ));
                }
                (
                    SourceConfig::Folder {
                        settle_ms,
                        poll_interval_ms,
                        ..
                    },
                    None,
                ) => {
                    if *poll_interval_ms == 0 || *settle_ms == 0 {
                        return Err(invalid(
                            key("source"),
                            "settle_ms and poll_interval_ms must be above zero",
                        ));
                    }
                }
            }
        }
        Ok(Config {
            device_id: raw.device_id,
            facility: raw.facility,
            data_dir: raw.data_dir,
            buffer: raw.buffer,
            sync: SyncConfig {
                endpoint: url,
                api_key,
                concurrency: s.concurrency,
                request_timeout: Duration::from_secs(s.request_timeout_secs),
                backoff_initial: Duration::from_millis(s.backoff_initial_ms),
                backoff_max: Duration::from_secs(s.backoff_max_secs),
                poll_interval: Duration::from_millis(s.poll_interval_ms),
                heartbeat: (s.heartbeat_secs > 0).then(|| Duration::from_secs(s.heartbeat_secs)),
            },
            http: raw.http,
            cameras: raw.camera,
        })
    }
}

#[cfg(test)]
mod tests;
