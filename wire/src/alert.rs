//! MQTT messages: one JSON message per part, QoS 1, the image by URL (never inline).
//!
//! Topics are `wiko/{facility}/{line}/{station}/{kind}` where kind is `alert` (NG parts only)
//! or `result` (every part). Subscribers deduplicate on (`result_id`, `status`): delivery is at least once, and a
//! `provisional` result is followed by its `final` update when a remote model enriches it.
//!
//! One alert per NG part: when the agent judged the part NG at the edge it publishes the alert
//! itself ([`AlertMessage::from_edge`], `status` `provisional`; its uploaded verdict says
//! `alerted` when the broker had acknowledged the alert by then) and the cloud does not; the
//! cloud alerts a part its own verdict finds NG whose upload does not say `alerted` (so a part
//! may be alerted by both, under one `result_id`; never by neither). A part's `result_id` is its
//! `frame_id` ([`result_id`]), so both sides name the part alike.
//!
//! The agent's own topics, beside its station's: `…/status` ([`AgentStatus`], retained:
//! `online` after each connect, `offline` as its Last Will) and `…/heartbeat` (the
//! [`crate::Heartbeat`] it also posts to the cloud). The cloud announces each SKU's active model
//! on `wiko/models/{sku}` ([`ModelAnnouncement`], retained).

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::analysis::{Analysis, AnalysisStatus, Defect};
use crate::frame::{EdgeVerdict, FrameMeta};

/// Which stream of a station a message goes to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum Topic {
    /// NG parts.
    Alert,
    /// Every part.
    Result,
    /// The agent's [`AgentStatus`] (retained).
    Status,
    /// The agent's heartbeats.
    Heartbeat,
}

impl Topic {
    /// The full topic for a station.
    pub fn path(self, facility: &str, line: &str, station: &str) -> String {
        let leaf = match self {
            Topic::Alert => "alert",
            Topic::Result => "result",
            Topic::Status => "status",
            Topic::Heartbeat => "heartbeat",
        };
        format!("wiko/{facility}/{line}/{station}/{leaf}")
    }
}

/// Payload of `…/alert` and `…/result`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct AlertMessage {
    pub schema_version: u32,
    /// The analysis id; the idempotency id of the message.
    pub result_id: Uuid,
    pub defect_id: String,
    pub frame_id: Option<Uuid>,
    pub device_id: Option<String>,
    pub facility: String,
    pub line: String,
    pub station: String,
    pub product_sku: String,
    pub part_id: Option<String>,
    pub timestamp: DateTime<Utc>,
    pub status: AnalysisStatus,
    pub defect_detected: bool,
    pub defects: Vec<Defect>,
    pub score: Option<f32>,
    /// The remote model disagreed with the gate on OK/NG (in a `final` update).
    #[serde(default)]
    pub disagreement: bool,
    /// Absolute URL of the image when the cloud knows its public URL, else the API path.
    pub image_url: String,
}

/// The id of a part's result: its `frame_id` for a frame from an agent (which alerts an NG
/// part before the cloud has seen it), a new id otherwise.
pub fn result_id(frame_id: Option<Uuid>) -> Uuid {
    frame_id.unwrap_or_else(Uuid::now_v7)
}

/// The human-facing id of a result: `DEF-` and the last 16 hex digits of its id.
pub fn defect_id(result_id: Uuid) -> String {
    format!(
        "DEF-{}",
        result_id.simple().to_string()[16..].to_uppercase()
    )
}

/// The API path of a result's image.
pub fn image_path(result_id: Uuid) -> String {
    format!("/api/v1/analyses/{result_id}/image")
}

impl AlertMessage {
    /// The alert the agent publishes for a frame it judged NG: the same body and `result_id`
    /// the cloud would publish, `provisional`. `base_url` is the cloud's, for the image.
    pub fn from_edge(meta: &FrameMeta, edge: &EdgeVerdict, base_url: &str) -> AlertMessage {
        let id = result_id(Some(meta.frame_id));
        AlertMessage {
            schema_version: crate::SCHEMA_VERSION,
            result_id: id,
            defect_id: defect_id(id),
            frame_id: Some(meta.frame_id),
            device_id: Some(meta.device_id.clone()),
            facility: meta.facility.clone(),
            line: meta.line.clone(),
            station: meta.station.clone(),
            product_sku: meta.sku.clone(),
            part_id: meta.part_id.clone(),
            timestamp: meta.captured_at,
            status: AnalysisStatus::Provisional,
            defect_detected: edge.defect_detected,
            defects: edge.defects.clone(),
            score: Some(edge.score),
            disagreement: false,
            image_url: format!("{}{}", base_url.trim_end_matches('/'), image_path(id)),
        }
    }

    /// Builds the message for an analysis; `base_url` is prepended to the image path.
    pub fn from_analysis(a: &Analysis, base_url: &str) -> AlertMessage {
        AlertMessage {
            schema_version: crate::SCHEMA_VERSION,
            result_id: a.id,
            defect_id: a.defect_id.clone(),
            frame_id: a.frame_id,
            device_id: a.device_id.clone(),
            facility: a.facility.clone(),
            line: a.line.clone(),
            station: a.station.clone(),
            product_sku: a.product_sku.clone(),
            part_id: a.part_id.clone(),
            timestamp: a.timestamp,
            status: a.status,
            defect_detected: a.defect_detected,
            defects: a.defects.clone(),
            score: a.score,
            disagreement: a.disagreement,
            image_url: format!("{}{}", base_url.trim_end_matches('/'), a.image_url),
        }
    }
}

/// Whether an agent is connected to the broker.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AgentState {
    Online,
    /// Published by the broker as the agent's Last Will when its connection is lost.
    Offline,
}

/// Payload of `…/status`, retained.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AgentStatus {
    pub schema_version: u32,
    pub device_id: String,
    pub state: AgentState,
}

/// Payload of `wiko/models/{sku}`, retained: the SKU's active model, published by the cloud
/// when a model is activated or refitted; an agent judging that SKU pulls it at once.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ModelAnnouncement {
    pub schema_version: u32,
    pub sku: String,
    pub version: String,
}

impl ModelAnnouncement {
    /// The topic filter of every SKU's announcement.
    pub const FILTER: &'static str = "wiko/models/+";

    /// The announcement topic of `sku`.
    pub fn topic(sku: &str) -> String {
        format!("wiko/models/{sku}")
    }

    /// Whether `topic` is an announcement's (these are published retained).
    pub fn is_topic(topic: &str) -> bool {
        topic.starts_with("wiko/models/")
    }
}
