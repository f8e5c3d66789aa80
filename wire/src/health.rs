//! Health bodies: the cloud's `GET /health` and `GET /ready`, and the agent's local
//! `GET /healthz`.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// `GET /health` of either service: the process answers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Health {
    /// Always `healthy` (a process that cannot say so does not answer).
    pub status: String,
    pub service: String,
    pub version: String,
}

/// `GET /ready` of the cloud: 200 when every dependency answers, 503 otherwise.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Readiness {
    /// `ready` or `not_ready`.
    pub status: String,
    pub checks: ReadinessChecks,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ReadinessChecks {
    pub database: bool,
    pub object_store: bool,
    pub broker: bool,
}

/// The agent's `GET /healthz`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct AgentHealth {
    /// `healthy`, or `degraded` when frames may be lost or captures fail (see `reasons`).
    pub status: String,
    pub version: String,
    pub buffer: BufferHealth,
    /// Why the agent is degraded, one line each starting with a stable code (`disk_low`,
    /// `buffer_write_failed`, `acks_not_deleted`, `ng_unalerted`); empty when healthy.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub reasons: Vec<String>,
    /// Each camera, in configuration order.
    #[serde(default)]
    pub cameras: Vec<CameraHealth>,
}

/// One camera as the agent sees it now.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct CameraHealth {
    /// The camera's configured name.
    pub name: String,
    /// Its source type: `synthetic`, `folder`, `genicam`, `rtsp`, `http_snapshot`, `v4l2`.
    pub source: String,
    pub status: CameraStatus,
    /// When its last frame was buffered.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_frame_at: Option<DateTime<Utc>>,
    /// Seconds since then; absent before the first frame.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub frame_age_seconds: Option<f64>,
    /// Frames buffered per second over the last minute.
    pub fps: f64,
    /// Frames buffered since the agent started.
    pub frames_total: u64,
    /// Failed opens, grabs and stalls since the agent started.
    pub errors_total: u64,
    /// Times the device was opened again after a failure.
    pub reopens_total: u64,
    /// Triggers not served (station busy, camera failed) since the agent started.
    pub triggers_missed_total: u64,
    /// The last error, for people.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
}

/// Where a camera stands. A camera that fails keeps being reopened with backoff; it is never
/// given up on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum CameraStatus {
    /// Opened for the first time.
    Starting,
    /// Delivering frames (or ready to, on the next trigger).
    Ok,
    /// No frame within `stall_timeout_ms`, or a read failed: about to be reopened.
    Stalled,
    /// Being opened again.
    Reopening,
    /// The last open failed; the next attempt waits for the backoff.
    Failed,
    /// A device call (a V4L2 or Aravis call, a blocking driver call) outlived its deadline and
    /// has not returned: the camera is not opened again (no second thread) until it does.
    Hung,
    /// A status this build does not know (a newer agent's): read, so one camera does not make
    /// a whole heartbeat refused; never sent by the agent, counted as failed by the fleet.
    #[serde(other)]
    Unknown,
}

impl CameraStatus {
    /// Every status the agent sets ([`CameraStatus::Unknown`] is only read).
    pub const ALL: [CameraStatus; 6] = [
        CameraStatus::Starting,
        CameraStatus::Ok,
        CameraStatus::Stalled,
        CameraStatus::Reopening,
        CameraStatus::Failed,
        CameraStatus::Hung,
    ];

    /// The name used in JSON and in metric labels.
    pub fn as_str(self) -> &'static str {
        match self {
            CameraStatus::Starting => "starting",
            CameraStatus::Ok => "ok",
            CameraStatus::Stalled => "stalled",
            CameraStatus::Reopening => "reopening",
            CameraStatus::Failed => "failed",
            CameraStatus::Hung => "hung",
            CameraStatus::Unknown => "unknown",
        }
    }
}

/// The agent's frame buffer at a glance.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct BufferHealth {
    /// Frames not yet acknowledged by the cloud.
    pub frames: u64,
    /// Bytes they take, as the buffer accounts them.
    pub bytes: u64,
    /// Age of the oldest of them; 0 when there is none.
    pub oldest_unsynced_seconds: f64,
    /// Frames the cloud refused for good (kept aside, never dropped silently).
    pub dead_letters: u64,
    /// Frames evicted unsynced because the buffer was full, since it was created.
    pub evicted_total: u64,
    /// Unsynced frames per camera.
    pub by_camera: BTreeMap<String, u64>,
    /// NG alerts waiting for the MQTT broker (the agent's outbox).
    #[serde(default)]
    pub alerts_queued: u64,
    /// Alerts dropped from the outbox unsent (past its size or age limit), since the buffer
    /// was created.
    #[serde(default)]
    pub alerts_dropped_total: u64,
    /// NG frames nobody has alerted yet (the broker has not acknowledged their alert, the cloud
    /// not their upload): never evicted, so a buffer full of them refuses new frames. Absent
    /// from older agents (0).
    #[serde(default)]
    pub unalerted_frames: u64,
    /// Bytes they take, as the buffer accounts them.
    #[serde(default)]
    pub unalerted_bytes: u64,
}
