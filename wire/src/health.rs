//! Health bodies: the cloud's `GET /health` and `GET /ready`, and the agent's local
//! `GET /healthz`.

use std::collections::BTreeMap;

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
    /// `buffer_write_failed`, `acks_not_deleted`); empty when healthy.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub reasons: Vec<String>,
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
}
