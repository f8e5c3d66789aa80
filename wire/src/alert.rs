//! MQTT messages: one JSON message per part, QoS 1, the image by URL (never inline).
//!
//! Topics are `wiko/{facility}/{line}/{station}/{kind}` where kind is `alert` (NG parts only)
//! or `result` (every part). Subscribers deduplicate on (`result_id`, `status`): delivery is at least once, and a
//! `provisional` result is followed by its `final` update when a remote model enriches it.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::analysis::{Analysis, AnalysisStatus, Defect};

/// Which stream of a station a message goes to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum Topic {
    /// NG parts.
    Alert,
    /// Every part.
    Result,
}

impl Topic {
    /// The full topic for a station.
    pub fn path(self, facility: &str, line: &str, station: &str) -> String {
        let leaf = match self {
            Topic::Alert => "alert",
            Topic::Result => "result",
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

impl AlertMessage {
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
