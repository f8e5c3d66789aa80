//! The fleet: what each agent reports about itself every minute (`POST /api/v1/heartbeats`,
//! and `wiko/{facility}/{line}/{station}/heartbeat` over MQTT when configured), what the cloud
//! makes of it (`GET /api/v1/devices`), and the commands an admin leaves for an agent (which
//! it receives in the answer to its next heartbeat).

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::frame::{MetaError, validate_id};
use crate::health::{BufferHealth, CameraHealth};

/// An agent's report on itself.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Heartbeat {
    pub schema_version: u32,
    pub device_id: String,
    pub facility: String,
    pub line: String,
    pub station: String,
    /// The agent's version.
    pub version: String,
    /// The agent's clock when it sent this (the cloud derives the clock offset from it).
    pub sent_at: DateTime<Utc>,
    pub uptime_seconds: u64,
    /// How often the agent sends a heartbeat; the cloud calls it silent after three missed.
    pub interval_seconds: u32,
    /// Each camera, as the agent's `/healthz` shows it.
    pub cameras: Vec<CameraHealth>,
    pub buffer: BufferHealth,
    /// Free space on the buffer's file system; `None` where it could not be read.
    pub disk_free_bytes: Option<u64>,
    /// The model version in use per SKU, where the agent judges parts itself.
    #[serde(default)]
    pub models: BTreeMap<String, String>,
    /// The newest dead letters (at most [`Heartbeat::MAX_DEAD_LETTERS`]); `buffer.dead_letters`
    /// counts them all.
    #[serde(default)]
    pub dead_letters: Vec<DeadLetter>,
    /// Commands (by id) the agent has carried out since it last reported them.
    #[serde(default)]
    pub commands_done: Vec<i64>,
    /// Why the agent is degraded, as its `/healthz` says (`disk_low`, `buffer_write_failed`,
    /// `acks_not_deleted`, `ng_unalerted`); empty while it is healthy.
    #[serde(default)]
    pub degraded: Vec<String>,
}

impl Heartbeat {
    /// Dead letters listed in one heartbeat, newest first.
    pub const MAX_DEAD_LETTERS: usize = 50;
    /// Cameras one agent may report.
    pub const MAX_CAMERAS: usize = 64;
    /// SKUs with a model, and commands reported done, in one heartbeat.
    pub const MAX_ENTRIES: usize = 1000;
    /// Reasons for being degraded in one heartbeat, and the longest reason.
    pub const MAX_REASONS: usize = 16;
    pub const MAX_REASON_LEN: usize = 200;
    /// The longest heartbeat interval (one hour).
    pub const MAX_INTERVAL_SECONDS: u32 = 3600;

    /// Checks what the cloud keeps: identifiers as [`validate_id`] allows them, bounded lists,
    /// an interval of 1 s to an hour, a schema version this crate knows.
    pub fn validate(&self) -> Result<(), HeartbeatError> {
        if self.schema_version == 0 || self.schema_version > crate::SCHEMA_VERSION {
            return Err(HeartbeatError::SchemaVersion(self.schema_version));
        }
        validate_id("device_id", &self.device_id)?;
        validate_id("facility", &self.facility)?;
        validate_id("line", &self.line)?;
        validate_id("station", &self.station)?;
        if !(1..=Heartbeat::MAX_INTERVAL_SECONDS).contains(&self.interval_seconds) {
            return Err(HeartbeatError::Interval(self.interval_seconds));
        }
        let lists = [
            ("cameras", self.cameras.len(), Heartbeat::MAX_CAMERAS),
            (
                "dead_letters",
                self.dead_letters.len(),
                Heartbeat::MAX_DEAD_LETTERS,
            ),
            ("models", self.models.len(), Heartbeat::MAX_ENTRIES),
            (
                "commands_done",
                self.commands_done.len(),
                Heartbeat::MAX_ENTRIES,
            ),
            ("degraded", self.degraded.len(), Heartbeat::MAX_REASONS),
        ];
        for (field, len, max) in lists {
            if len > max {
                return Err(HeartbeatError::TooMany { field, max });
            }
        }
        for c in &self.cameras {
            validate_id("camera name", &c.name)?;
        }
        if self
            .degraded
            .iter()
            .any(|r| r.len() > Heartbeat::MAX_REASON_LEN)
        {
            return Err(HeartbeatError::TooLong {
                field: "degraded",
                max: Heartbeat::MAX_REASON_LEN,
            });
        }
        for (sku, version) in &self.models {
            validate_id("sku", sku)?;
            validate_id("model version", version)?;
        }
        Ok(())
    }
}

/// Why a heartbeat is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HeartbeatError {
    #[error(transparent)]
    Id(#[from] MetaError),
    #[error("`schema_version` {0} is not one this server knows")]
    SchemaVersion(u32),
    #[error("`interval_seconds` must be 1 to 3600, not {0}")]
    Interval(u32),
    #[error("`{field}` may list at most {max} entries")]
    TooMany { field: &'static str, max: usize },
    #[error("each entry of `{field}` may be at most {max} bytes")]
    TooLong { field: &'static str, max: usize },
}

/// A frame the cloud refused for good, kept on the agent.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct DeadLetter {
    pub frame_id: Uuid,
    pub seq: u64,
    pub camera_id: String,
    /// The HTTP status of the refusal (0 for a row the agent could not read back).
    pub status: u16,
    /// The refusal's error code, or why the row could not be read.
    pub reason: String,
    pub bytes: u64,
    pub at: DateTime<Utc>,
}

/// The cloud's answer to a heartbeat: what the agent should do.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct HeartbeatAck {
    /// The cloud's clock when it received the heartbeat.
    pub received_at: DateTime<Utc>,
    /// Commands not yet reported done; each is carried out once and reported in
    /// `commands_done` (a command sent again is harmless).
    pub commands: Vec<DeviceCommand>,
}

/// Something an admin asked an agent to do.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct DeviceCommand {
    pub id: i64,
    #[serde(flatten)]
    pub action: DeviceAction,
    pub created_at: DateTime<Utc>,
    /// The name of the key that asked for it.
    pub created_by: String,
}

/// What a command asks.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(tag = "action", rename_all = "snake_case")]
pub enum DeviceAction {
    /// Move a dead letter back into the upload queue.
    Requeue { frame_id: Uuid },
}

/// What the cloud makes of a device's last heartbeat.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum DeviceState {
    Ok,
    /// Its oldest unsynced frame is older than the cloud's limit.
    Behind,
    /// A camera is failed, stalled or hung.
    CameraFailed,
    /// The agent says it is degraded (its disk is low, buffer writes fail, …).
    Degraded,
    /// No heartbeat for three of its intervals (or never one).
    Silent,
}

impl DeviceState {
    pub const ALL: [DeviceState; 5] = [
        DeviceState::Ok,
        DeviceState::Behind,
        DeviceState::CameraFailed,
        DeviceState::Degraded,
        DeviceState::Silent,
    ];

    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            DeviceState::Ok => "ok",
            DeviceState::Behind => "behind",
            DeviceState::CameraFailed => "camera_failed",
            DeviceState::Degraded => "degraded",
            DeviceState::Silent => "silent",
        }
    }
}

/// One device of the fleet (`GET /api/v1/devices`, `GET /api/v1/devices/{device_id}`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Device {
    pub device_id: String,
    /// Where it is: from its last heartbeat, else from its first frame.
    pub facility: String,
    pub line: String,
    pub station: String,
    pub state: DeviceState,
    pub first_seen: DateTime<Utc>,
    /// When its newest frame was received; `None` before the first.
    pub last_frame_at: Option<DateTime<Utc>>,
    pub last_heartbeat_at: Option<DateTime<Utc>>,
    pub heartbeat_age_seconds: Option<f64>,
    /// The cloud's clock minus the agent's, from the last heartbeat (network delay included).
    pub clock_offset_seconds: Option<f64>,
    /// The last heartbeat as sent.
    pub heartbeat: Option<Heartbeat>,
    /// Commands the agent has not reported done.
    pub pending_commands: Vec<DeviceCommand>,
}
