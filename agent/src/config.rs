//! The agent's configuration: one TOML file plus `WIKO_AGENT__` environment overrides
//! (`WIKO_AGENT__SYNC__ENDPOINT=…`), read into [`RawConfig`] and validated into [`Config`].
//!
//! Every key is documented in `config/agent.example.toml`; a test checks that file parses.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;
pub use wiko_daemon::config::ConfigError;
use wiko_daemon::config::{invalid, load_layered, secret};

pub use crate::buffer::alerts::OutboxLimits;

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
    /// Edge analysis: each frame judged on the line PC with its SKU's model from the cloud.
    #[serde(default)]
    pub edge: RawEdgeConfig,
    /// The agent's MQTT broker (status, NG alerts, heartbeats, model announcements, `mqtt`
    /// triggers); required when a camera has an `mqtt` trigger.
    #[serde(default)]
    pub mqtt: Option<RawMqttConfig>,
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

/// Edge analysis, as written.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(test, derive(schemars::JsonSchema))]
pub struct RawEdgeConfig {
    /// Judge each frame locally once the cloud has a model for its SKU.
    #[serde(default = "default_true")]
    pub enabled: bool,
    /// Seconds between two checks of the cloud for a new model of each SKU.
    #[serde(default = "default_refresh_secs")]
    pub refresh_secs: u64,
    /// Where the last good model of each SKU is kept; default `<data_dir>/models`.
    #[serde(default)]
    pub model_dir: Option<PathBuf>,
}

fn default_true() -> bool {
    true
}
fn default_refresh_secs() -> u64 {
    300
}

impl Default for RawEdgeConfig {
    fn default() -> Self {
        RawEdgeConfig {
            enabled: true,
            refresh_secs: default_refresh_secs(),
            model_dir: None,
        }
    }
}

/// Edge analysis, validated; `None` in [`Config::edge`] when disabled.
#[derive(Debug, Clone)]
pub struct EdgeConfig {
    pub refresh: Duration,
    pub model_dir: PathBuf,
}

/// The agent's MQTT broker, as written: its status (retained, Last Will `offline`), its NG
/// alerts, heartbeats, model announcements and `mqtt` triggers.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(test, derive(schemars::JsonSchema))]
pub struct RawMqttConfig {
    /// Host name or address of the broker (with `tls`, the name its certificate carries: the
    /// name checked, there is no separate server name).
    pub host: String,
    /// Default 8883 with `tls`, 1883 without.
    #[serde(default)]
    pub port: Option<u16>,
    /// MQTT client id; default `wiko-agent-<device_id>`.
    #[serde(default)]
    pub client_id: Option<String>,
    #[serde(default)]
    pub username: Option<String>,
    /// Prefer `password_file`.
    #[serde(default)]
    pub password: Option<String>,
    #[serde(default)]
    pub password_file: Option<PathBuf>,
    /// Speak TLS to the broker.
    #[serde(default)]
    pub tls: bool,
    /// The CA certificates (PEM) the broker's certificate is checked against; default the
    /// system's. Needs `tls`.
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    /// A client certificate (PEM) for brokers that ask for one, with `client_key_file`. Needs
    /// `tls`.
    #[serde(default)]
    pub client_cert_file: Option<PathBuf>,
    /// The client certificate's private key (PEM).
    #[serde(default)]
    pub client_key_file: Option<PathBuf>,
    /// Keep-alive interval of the connection.
    #[serde(default = "default_keep_alive_secs")]
    pub keep_alive_secs: u64,
    /// Publish the NG alerts of edge verdicts on this broker (the cloud then leaves out its
    /// own for those parts): only where the alert subscribers listen to it.
    #[serde(default)]
    pub alerts: bool,
    /// The URL an alert's image link starts with: the cloud's `public_url`, as its own alerts
    /// have it; default `sync.endpoint`.
    #[serde(default)]
    pub image_base_url: Option<String>,
    /// Most alerts kept waiting for the broker (those in flight aside); past it the oldest are
    /// dropped (counted) and their parts left to the cloud's alert.
    #[serde(default = "default_outbox_max_alerts")]
    pub outbox_max_alerts: u64,
    /// Alerts older than this (from their part's capture), in seconds, are dropped rather
    /// than sent late (counted) and their parts left to the cloud's alert. NG frames are held for
    /// their alerts at most [`crate::buffer::ALERT_GRACE`]: one uploaded before its alert was
    /// acknowledged is alerted by the cloud as well.
    #[serde(default = "default_outbox_max_age_secs")]
    pub outbox_max_age_secs: u64,
}

fn default_keep_alive_secs() -> u64 {
    30
}
fn default_outbox_max_alerts() -> u64 {
    10_000
}
fn default_outbox_max_age_secs() -> u64 {
    86_400
}

/// The agent's MQTT broker, validated (the password read, the TLS files loaded).
#[derive(Debug, Clone)]
pub struct MqttConfig {
    pub host: String,
    pub port: u16,
    pub client_id: String,
    pub credentials: Option<(String, String)>,
    /// `None`: plain TCP.
    pub tls: Option<Arc<rustls::ClientConfig>>,
    pub keep_alive: Duration,
    /// NG alerts of edge verdicts are published here.
    pub alerts: bool,
    /// What an alert's image link starts with (no trailing `/`).
    pub image_base_url: String,
    /// How many alerts, and how old, the outbox keeps.
    pub outbox: OutboxLimits,
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
    /// Deadline of opening the device and of one picture; a stream with no new frame for
    /// this long is stalled. A stalled or failed camera is reopened.
    #[serde(default = "default_stall_timeout_ms")]
    pub stall_timeout_ms: u64,
    /// First wait before reopening a failed camera; doubles per failure, with jitter.
    #[serde(default = "default_reopen_initial_ms")]
    pub reopen_initial_ms: u64,
    /// Longest wait between two attempts to reopen a camera.
    #[serde(default = "default_reopen_max_secs")]
    pub reopen_max_secs: u64,
}

fn default_stall_timeout_ms() -> u64 {
    5000
}
fn default_reopen_initial_ms() -> u64 {
    500
}
fn default_reopen_max_secs() -> u64 {
    30
}

impl CameraConfig {
    /// The source's `type`, as health and metrics name it.
    pub fn source_type(&self) -> &'static str {
        match self.source {
            SourceConfig::Synthetic { .. } => "synthetic",
            SourceConfig::Folder { .. } => "folder",
            SourceConfig::Genicam { .. } => "genicam",
            SourceConfig::V4l2 { .. } => "v4l2",
            SourceConfig::Rtsp { .. } => "rtsp",
            SourceConfig::HttpSnapshot { .. } => "http_snapshot",
        }
    }
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
    /// A GigE Vision or USB3 Vision camera through Aravis (cargo feature `genicam`), taken
    /// with a software trigger per part.
    Genicam {
        /// Aravis device id (`wiko-agent cameras` lists them) or the camera's IP address;
        /// the first camera found when absent.
        #[serde(default)]
        device: Option<String>,
        /// GenICam pixel format, e.g. `Mono8`, `RGB8`, `BayerRG8`; the camera's own when absent.
        #[serde(default)]
        pixel_format: Option<String>,
        /// Exposure time in microseconds; the camera's own when absent.
        #[serde(default)]
        exposure_us: Option<f64>,
        /// Gain in dB; the camera's own when absent.
        #[serde(default)]
        gain_db: Option<f64>,
        /// Quality of the JPEG the raw pixels are encoded to, 1..100.
        #[serde(default = "default_jpeg_quality")]
        jpeg_quality: u8,
    },
    /// A USB/UVC camera through V4L2 (cargo feature `v4l2`); each trigger takes the first
    /// frame the camera sends after it.
    V4l2 {
        /// `/dev/v4l/by-id/…` (stable across reboots and USB ports; `wiko-agent cameras` lists
        /// them), `/dev/videoN`, or the index N.
        device: String,
        /// Frame width in pixels asked of the camera (it streams its nearest mode).
        #[serde(default = "default_v4l2_width")]
        width: u32,
        /// Frame height in pixels asked of the camera.
        #[serde(default = "default_v4l2_height")]
        height: u32,
        /// Frames per second asked of the camera.
        #[serde(default = "default_v4l2_fps")]
        fps: u32,
        /// Pixel format asked of the camera: `mjpeg` (passed through, never re-encoded),
        /// `yuyv`, `nv12` or `gray` (encoded to JPEG).
        #[serde(default)]
        pixel_format: V4l2PixelFormat,
        /// Exposure in the driver's units (UVC: 100 µs), where the camera has the control; the
        /// camera's own when absent.
        #[serde(default)]
        exposure: Option<i64>,
        /// Gain in the driver's units, where the camera has the control; the camera's own
        /// when absent.
        #[serde(default)]
        gain: Option<i64>,
        /// Quality of the JPEG that raw (not MJPEG) frames are encoded to, 1..100.
        #[serde(default = "default_jpeg_quality")]
        jpeg_quality: u8,
    },
    /// An IP camera's RTSP stream, decoded by an `ffmpeg` child process; each trigger takes
    /// the first frame decoded after it.
    Rtsp {
        /// `rtsp://` or `rtsps://` URL, credentials included if the camera needs them.
        url: String,
        /// RTSP transport: `tcp` (default; survives lossy networks) or `udp`.
        #[serde(default)]
        transport: RtspTransport,
        /// The ffmpeg executable.
        #[serde(default = "default_ffmpeg")]
        ffmpeg: PathBuf,
    },
    /// An IP camera's snapshot URL (a JPEG per GET).
    HttpSnapshot {
        /// `http://` or `https://` URL of the JPEG.
        url: String,
        /// HTTP auth user.
        #[serde(default)]
        username: Option<String>,
        /// HTTP auth password. Prefer `password_file`.
        #[serde(default)]
        password: Option<String>,
        #[serde(default)]
        password_file: Option<PathBuf>,
        /// How the user and password are sent: `basic` or `digest` (RFC 7616).
        #[serde(default)]
        auth: HttpAuth,
    },
}

/// How an `http_snapshot` camera's credentials are sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
#[cfg_attr(test, derive(schemars::JsonSchema))]
pub enum HttpAuth {
    /// In every request, base64-encoded (use it over HTTPS only).
    #[default]
    Basic,
    /// As the answer to the camera's digest challenge (MD5, SHA-256 or SHA-512-256, `qop=auth`).
    Digest,
}

/// The pixel format a V4L2 camera is asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
#[cfg_attr(test, derive(schemars::JsonSchema))]
pub enum V4l2PixelFormat {
    /// JPEG frames from the camera, buffered as they come.
    #[default]
    Mjpeg,
    Yuyv,
    Nv12,
    Gray,
}

fn default_v4l2_width() -> u32 {
    1920
}
fn default_v4l2_height() -> u32 {
    1080
}
fn default_v4l2_fps() -> u32 {
    30
}

/// How RTSP carries the video.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
#[cfg_attr(test, derive(schemars::JsonSchema))]
pub enum RtspTransport {
    #[default]
    Tcp,
    Udp,
}

fn default_jpeg_quality() -> u8 {
    90
}
fn default_ffmpeg() -> PathBuf {
    PathBuf::from("ffmpeg")
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
    /// A part per message on `wiko/{facility}/{line}/{station}/trigger` (needs `[mqtt]`);
    /// answered on `…/trigger/ack`.
    Mqtt {},
    /// A part per `POST /trigger/{camera}` on the agent's HTTP address.
    Http {},
    /// A part at each time of a cron schedule in the plant's local time.
    Cron {
        /// Cron expression: five fields (minute hour day-of-month month day-of-week), or six
        /// with seconds first, or an alias such as `@daily`; read in `timezone`.
        schedule: String,
        /// IANA time zone of the plant, e.g. `Europe/Berlin`. Daylight saving time follows
        /// Vixie cron: a time in the skipped hour fires right after it, a time in the repeated
        /// hour fires once.
        timezone: String,
        /// SKU of the parts; the camera's when absent.
        #[serde(default)]
        sku: Option<String>,
        /// Production lot written into each frame.
        #[serde(default)]
        lot: Option<String>,
    },
    /// A handshake with the line PLC over Modbus TCP, in the PLC's coils or in two of its
    /// holding registers (one mode: the coil keys or the register keys).
    ///
    /// Coils: a part per rising edge of `trigger_coil`; the agent raises `busy_coil`, writes
    /// `error_coil` (raised when nothing was captured) and the result (`ok_coil` or
    /// `ng_coil`), lowers busy and raises `ready_coil`.
    ///
    /// Registers: a part at each new value of `trigger_register` other than zero (from zero
    /// or from another part's value), which is the part's `part_id`; the agent writes the
    /// status word to `status_register`: Busy (1), then Busy with the result, then Ready (2)
    /// with the result (OK 4, NG 8, Error 16), and 0 (idle) once the trigger is back to zero.
    ///
    /// No two keys may map one coil or register of one PLC (`address` and `unit_id`), in one
    /// camera's trigger or in two cameras'.
    Plc {
        /// The PLC's Modbus TCP address, e.g. `192.168.10.5:502`.
        address: SocketAddr,
        /// Modbus unit (slave) id.
        #[serde(default = "default_unit_id")]
        unit_id: u8,
        /// How often the trigger coil or register is read.
        #[serde(default = "default_plc_poll_ms")]
        poll_interval_ms: u64,
        /// Deadline of connecting to the PLC and of each Modbus request, in ms; a request
        /// that misses it drops the connection, which is made again with backoff.
        #[serde(default = "default_plc_request_timeout_ms")]
        request_timeout_ms: u64,
        /// A part the PLC set while the link was down (found on reconnect, not answered) is
        /// taken then when the PLC was last read at most this long before, in ms. Longer, or
        /// on the first connection after the agent started, it is answered Error (counted
        /// missed, `interrupted`). 0 (the default, as before the key existed): always Error.
        /// Set it only on a line that holds the part at the camera until Ready (an indexed
        /// line): on a moving conveyor a late capture is a picture of another part. Keep it
        /// below the PLC's own Busy watchdog (how long it waits for Busy before it gives the
        /// part up).
        #[serde(default = "default_plc_take_pending_within_ms")]
        take_pending_within_ms: u64,
        /// Coil the PLC raises for a part (coil mode).
        #[serde(default)]
        trigger_coil: Option<u16>,
        /// Coil the agent raises while it captures (coil mode).
        #[serde(default)]
        busy_coil: Option<u16>,
        /// Coil the agent raises when the part is done, captured or not (coil mode).
        #[serde(default)]
        ready_coil: Option<u16>,
        /// Coil the agent raises when nothing was captured (coil mode).
        #[serde(default)]
        error_coil: Option<u16>,
        /// Coil the agent raises when the part's edge verdict is OK. A part captured but not
        /// judged (edge analysis off, no model for its SKU yet) raises neither OK nor NG.
        #[serde(default)]
        ok_coil: Option<u16>,
        /// Coil the agent raises when the part's edge verdict is NG.
        #[serde(default)]
        ng_coil: Option<u16>,
        /// Holding register the PLC sets to a value other than zero for a part, a new value
        /// per part (register mode); the value is the part's `part_id`.
        #[serde(default)]
        trigger_register: Option<u16>,
        /// Holding register the agent writes the status word to (register mode): bits Busy 1,
        /// Ready 2, OK 4, NG 8, Error 16.
        #[serde(default)]
        status_register: Option<u16>,
    },
}

fn default_unit_id() -> u8 {
    1
}
fn default_plc_poll_ms() -> u64 {
    20
}
fn default_plc_request_timeout_ms() -> u64 {
    1000
}
fn default_plc_take_pending_within_ms() -> u64 {
    0
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
    /// `None`: edge analysis is off, frames go unjudged to the cloud.
    pub edge: Option<EdgeConfig>,
    pub mqtt: Option<MqttConfig>,
    /// Cameras; an `http_snapshot` password is resolved into `password` (`password_file` read).
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
        let mqtt = raw
            .mqtt
            .map(|m| mqtt_config(m, &raw.device_id, &url))
            .transpose()?;
        if !(1..=86_400).contains(&raw.edge.refresh_secs) {
            return Err(invalid("edge.refresh_secs", "must be 1 to 86400"));
        }
        let edge = raw.edge.enabled.then(|| EdgeConfig {
            refresh: Duration::from_secs(raw.edge.refresh_secs),
            model_dir: raw
                .edge
                .model_dir
                .clone()
                .unwrap_or_else(|| raw.data_dir.join("models")),
        });
        let mut names = std::collections::HashSet::new();
        let mut mqtt_stations = std::collections::HashSet::new();
        let mut plcs = Vec::new();
        let mut cameras = Vec::with_capacity(raw.camera.len());
        for (i, mut cam) in raw.camera.into_iter().enumerate() {
            let key = |k: &str| format!("camera[{i}].{k}");
            if !names.insert(cam.name.clone()) {
                return Err(invalid(
                    key("name"),
                    format!("`{}` is used twice", cam.name),
                ));
            }
            id(&key("name"), &cam.name)?;
            id(&key("line"), &cam.line)?;
            id(&key("station"), &cam.station)?;
            id(&key("sku"), &cam.sku)?;
            if cam.stall_timeout_ms == 0 || cam.reopen_initial_ms == 0 {
                return Err(invalid(
                    key("stall_timeout_ms"),
                    "stall_timeout_ms and reopen_initial_ms must be above zero",
                ));
            }
            if cam.reopen_max_secs * 1000 < cam.reopen_initial_ms {
                return Err(invalid(
                    key("reopen_max_secs"),
                    "must be at least reopen_initial_ms",
                ));
            }
            validate_source(&mut cam.source, &key)?;
            match (&cam.source, &cam.trigger) {
                (SourceConfig::Folder { .. }, Some(_)) => {
                    return Err(invalid(
                        key("trigger"),
                        "a folder camera is triggered by its files",
                    ));
                }
                (SourceConfig::Folder { .. }, None) => {}
                (_, None) => {
                    return Err(invalid(
                        key("trigger"),
                        format!("a {} camera needs a trigger", cam.source_type()),
                    ));
                }
                (_, Some(TriggerConfig::Interval { interval_ms, .. })) if *interval_ms == 0 => {
                    return Err(invalid(key("trigger.interval_ms"), "must be above zero"));
                }
                (_, Some(plc @ TriggerConfig::Plc { .. })) => {
                    match crate::trigger::plc::Handshake::from_config(plc) {
                        Some(Ok(handshake)) => plcs.push((key("trigger"), handshake)),
                        Some(Err((k, why))) => {
                            return Err(invalid(key(&format!("trigger.{k}")), why));
                        }
                        None => {}
                    }
                }
                (
                    _,
                    Some(TriggerConfig::Cron {
                        schedule,
                        timezone,
                        sku,
                        lot,
                    }),
                ) => {
                    let parsed = crate::trigger::cron::Schedule::parse(schedule, timezone)
                        .map_err(|e| invalid(key("trigger.schedule"), e))?;
                    if parsed.next_after(chrono::Utc::now()).is_none() {
                        return Err(invalid(
                            key("trigger.schedule"),
                            "never comes (no such date from now on)",
                        ));
                    }
                    let request = wiko_wire::TriggerRequest {
                        sku: sku.clone(),
                        lot: lot.clone(),
                        ..wiko_wire::TriggerRequest::default()
                    };
                    request
                        .validate()
                        .map_err(|e| invalid(key("trigger"), e.to_string()))?;
                }
                (_, Some(TriggerConfig::Mqtt {})) => {
                    if mqtt.is_none() {
                        return Err(invalid(
                            key("trigger"),
                            "an mqtt trigger needs the [mqtt] section",
                        ));
                    }
                    if !mqtt_stations.insert((cam.line.clone(), cam.station.clone())) {
                        return Err(invalid(
                            key("trigger"),
                            "another camera of this line and station has an mqtt trigger (they would share its topic)",
                        ));
                    }
                }
                (_, Some(_)) => {}
            }
            cameras.push(cam);
        }
        crate::trigger::plc::overlapping(plcs.iter().map(|(key, plc)| (key.clone(), plc)))
            .map_err(|(key, why)| invalid(key, why))?;
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
            edge,
            mqtt,
            cameras,
        })
    }
}

fn mqtt_config(
    m: RawMqttConfig,
    device_id: &str,
    endpoint: &str,
) -> Result<MqttConfig, ConfigError> {
    if m.host.is_empty() {
        return Err(invalid("mqtt.host", "is empty"));
    }
    if m.keep_alive_secs < 5 {
        return Err(invalid("mqtt.keep_alive_secs", "must be at least 5"));
    }
    let tls = mqtt_tls(&m)?;
    let password = secret("mqtt.password", m.password, m.password_file.as_deref())?;
    let credentials = match (m.username, password) {
        (Some(user), Some(password)) => Some((user, password)),
        (None, None) => None,
        _ => {
            return Err(invalid(
                "mqtt.username",
                "set both username and password (or password_file), or neither",
            ));
        }
    };
    let image_base_url = m
        .image_base_url
        .unwrap_or_else(|| endpoint.to_string())
        .trim_end_matches('/')
        .to_string();
    if !(image_base_url.starts_with("http://") || image_base_url.starts_with("https://")) {
        return Err(invalid(
            "mqtt.image_base_url",
            "must start with http:// or https://",
        ));
    }
    if m.outbox_max_alerts == 0 {
        return Err(invalid("mqtt.outbox_max_alerts", "must be above zero"));
    }
    if m.outbox_max_age_secs == 0 {
        return Err(invalid("mqtt.outbox_max_age_secs", "must be above zero"));
    }
    Ok(MqttConfig {
        host: m.host,
        port: m.port.unwrap_or(if m.tls { 8883 } else { 1883 }),
        client_id: m
            .client_id
            .unwrap_or_else(|| format!("wiko-agent-{device_id}")),
        credentials,
        tls: tls.map(Arc::new),
        keep_alive: Duration::from_secs(m.keep_alive_secs),
        alerts: m.alerts,
        image_base_url,
        outbox: OutboxLimits {
            max_alerts: m.outbox_max_alerts,
            max_age: Duration::from_secs(m.outbox_max_age_secs),
        },
    })
}

/// The TLS client of `[mqtt]`, its files read and checked; `None` without `tls`.
fn mqtt_tls(m: &RawMqttConfig) -> Result<Option<rustls::ClientConfig>, ConfigError> {
    use wiko_daemon::tls::{Identity, Roots, client_config};
    if !m.tls {
        return match (&m.ca_file, &m.client_cert_file, &m.client_key_file) {
            (None, None, None) => Ok(None),
            _ => Err(invalid(
                "mqtt.tls",
                "ca_file, client_cert_file and client_key_file need tls = true",
            )),
        };
    }
    let identity = match (&m.client_cert_file, &m.client_key_file) {
        (Some(cert), Some(key)) => Some(Identity {
            cert_key: "mqtt.client_cert_file",
            cert,
            key_key: "mqtt.client_key_file",
            key,
        }),
        (None, None) => None,
        _ => {
            return Err(invalid(
                "mqtt.client_cert_file",
                "set client_cert_file and client_key_file together",
            ));
        }
    };
    let roots = match &m.ca_file {
        Some(path) => Roots::File {
            key: "mqtt.ca_file",
            path,
        },
        None => Roots::System {
            key: "mqtt.ca_file",
        },
    };
    client_config(roots, identity).map(Some)
}

/// Checks one camera's source; reads an `http_snapshot` password file into `password`.
fn validate_source(
    source: &mut SourceConfig,
    key: &dyn Fn(&str) -> String,
) -> Result<(), ConfigError> {
    match source {
        SourceConfig::Synthetic { defect_rate, .. } => {
            if !(0.0..=1.0).contains(defect_rate) {
                return Err(invalid(key("source.defect_rate"), "must be within 0..1"));
            }
        }
        SourceConfig::Folder {
            settle_ms,
            poll_interval_ms,
            ..
        } => {
            if *poll_interval_ms == 0 || *settle_ms == 0 {
                return Err(invalid(
                    key("source"),
                    "settle_ms and poll_interval_ms must be above zero",
                ));
            }
        }
        SourceConfig::Genicam { jpeg_quality, .. } => {
            if !cfg!(feature = "genicam") {
                return Err(invalid(
                    key("source.type"),
                    "this wiko-agent was built without GenICam support (cargo feature `genicam`)",
                ));
            }
            if !(1..=100).contains(jpeg_quality) {
                return Err(invalid(key("source.jpeg_quality"), "must be 1 to 100"));
            }
        }
        SourceConfig::V4l2 {
            device,
            width,
            height,
            fps,
            jpeg_quality,
            ..
        } => {
            if !cfg!(feature = "v4l2") {
                return Err(invalid(
                    key("source.type"),
                    "this wiko-agent was built without V4L2 support (cargo feature `v4l2`)",
                ));
            }
            if device.is_empty() {
                return Err(invalid(key("source.device"), "is empty"));
            }
            if *width == 0 || *height == 0 || *fps == 0 {
                return Err(invalid(
                    key("source"),
                    "width, height and fps must be above zero",
                ));
            }
            if !(1..=100).contains(jpeg_quality) {
                return Err(invalid(key("source.jpeg_quality"), "must be 1 to 100"));
            }
        }
        SourceConfig::Rtsp { url, .. } => {
            if !(url.starts_with("rtsp://") || url.starts_with("rtsps://")) {
                return Err(invalid(
                    key("source.url"),
                    "must start with rtsp:// or rtsps://",
                ));
            }
        }
        SourceConfig::HttpSnapshot {
            url,
            username,
            password,
            password_file,
            ..
        } => {
            if !(url.starts_with("http://") || url.starts_with("https://")) {
                return Err(invalid(
                    key("source.url"),
                    "must start with http:// or https://",
                ));
            }
            let resolved = secret(
                &key("source.password"),
                password.take(),
                password_file.take().as_deref(),
            )?;
            if resolved.is_some() && username.is_none() {
                return Err(invalid(
                    key("source.username"),
                    "a password needs a username",
                ));
            }
            *password = resolved;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests;
