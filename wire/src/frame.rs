//! Agent ingest: one frame is one part photographed at one station.
//!
//! The upload is `PUT /api/v1/frames/{frame_id}` with a `multipart/form-data` body of two parts:
//! `meta` ([`FrameMeta`] as JSON) and `image` (the JPEG bytes). The cloud answers [`IngestAck`].

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::analysis::{Defect, Verdict, VerdictSource};

/// Name of the multipart field holding [`FrameMeta`] as JSON.
pub const META_FIELD: &str = "meta";
/// Name of the multipart field holding the JPEG.
pub const IMAGE_FIELD: &str = "image";

/// Longest accepted identifier (device, facility, line, station, SKU, part, lot), in bytes.
pub const MAX_ID_LEN: usize = 128;

/// What an identifier may be, as a regular expression (besides not `.` or `..`): the
/// OpenAPI document states it; [`validate_id`] enforces it.
pub const ID_PATTERN: &str = "^[A-Za-z0-9._:-]{1,128}$";

/// Everything the cloud needs to know about a frame besides its pixels.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct FrameMeta {
    /// UUIDv7 chosen by the agent at capture; the idempotency key of the upload.
    pub frame_id: Uuid,
    #[cfg_attr(feature = "openapi", schema(pattern = "^[A-Za-z0-9._:-]{1,128}$"))]
    pub device_id: String,
    #[cfg_attr(feature = "openapi", schema(pattern = "^[A-Za-z0-9._:-]{1,128}$"))]
    pub facility: String,
    #[cfg_attr(feature = "openapi", schema(pattern = "^[A-Za-z0-9._:-]{1,128}$"))]
    pub line: String,
    #[cfg_attr(feature = "openapi", schema(pattern = "^[A-Za-z0-9._:-]{1,128}$"))]
    pub station: String,
    #[cfg_attr(feature = "openapi", schema(pattern = "^[A-Za-z0-9._:-]{1,128}$"))]
    pub sku: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(pattern = "^[A-Za-z0-9._:-]{1,128}$"))]
    pub part_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(pattern = "^[A-Za-z0-9._:-]{1,128}$"))]
    pub lot: Option<String>,
    /// Capture time, UTC.
    pub captured_at: DateTime<Utc>,
    /// Per-device capture sequence number, strictly increasing across restarts.
    pub seq: u64,
    /// Lower-case hex BLAKE3 of the JPEG bytes ([`image_digest`]); the cloud checks it.
    #[cfg_attr(feature = "openapi", schema(pattern = "^[0-9a-f]{64}$"))]
    pub image_blake3: String,
    /// The agent's own verdict (edge analysis), when it had a model for the SKU. The cloud
    /// shows it at once as the `provisional` result; its own verdict makes the result `final`.
    /// Agents without edge analysis leave it out.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub edge: Option<EdgeVerdict>,
}

/// Most defects an edge verdict may list.
pub const MAX_EDGE_DEFECTS: usize = 64;

/// The agent's verdict on a frame, by the golden model it pulled from the cloud
/// (`GET /api/v1/skus/{sku}/model/file`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct EdgeVerdict {
    pub defect_detected: bool,
    pub score: f32,
    pub score_threshold: f32,
    /// The version of the SKU's model that judged the frame.
    #[cfg_attr(feature = "openapi", schema(pattern = "^[A-Za-z0-9._:-]{1,128}$"))]
    pub model_version: String,
    /// At most [`MAX_EDGE_DEFECTS`], strongest first.
    #[serde(default)]
    pub defects: Vec<Defect>,
    /// Time the agent took to judge the frame (decode and score).
    pub latency_ms: f64,
    /// The agent published this part's NG alert itself (its `[mqtt]`) and the broker had
    /// acknowledged it when this upload was built: the cloud does not alert the part again.
    /// Otherwise (an alert still waiting for the broker, or dropped) the cloud alerts it; a
    /// duplicate under one `result_id` is possible, a lost alert is not.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub alerted: bool,
}

impl EdgeVerdict {
    /// The verdict as a result lists it.
    pub fn verdict(&self) -> Verdict {
        Verdict {
            source: VerdictSource::Edge,
            analyzer: "golden".to_string(),
            model: Some(self.model_version.clone()),
            defect_detected: Some(self.defect_detected),
            score: Some(self.score),
            defects: self.defects.clone(),
            summary: None,
            latency_ms: Some(self.latency_ms),
            usage: None,
            error: None,
            alerted: self.alerted,
        }
    }
}

/// Why a [`FrameMeta`] is not acceptable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MetaError {
    #[error("field `{field}` must not be empty")]
    Empty { field: &'static str },
    #[error("field `{field}` is longer than {MAX_ID_LEN} bytes")]
    TooLong { field: &'static str },
    #[error("field `{field}` may hold only letters, digits and `-_.:`")]
    BadChars { field: &'static str },
    #[error("field `{field}` may not be `.` or `..`")]
    Dots { field: &'static str },
    #[error("`image_blake3` must be 64 lower-case hex digits")]
    BadDigest,
    #[error("the edge verdict lists more than {MAX_EDGE_DEFECTS} defects")]
    EdgeDefects,
    #[error("the edge verdict's score, threshold or latency is not a finite number")]
    EdgeNotFinite,
}

impl FrameMeta {
    /// Checks every identifier. Identifiers end up in MQTT topics and file names, so they are
    /// restricted to a safe alphabet: no `/`, `+`, `#`, spaces or control characters.
    pub fn validate(&self) -> Result<(), MetaError> {
        let required = [
            ("device_id", Some(&self.device_id)),
            ("facility", Some(&self.facility)),
            ("line", Some(&self.line)),
            ("station", Some(&self.station)),
            ("sku", Some(&self.sku)),
            ("part_id", self.part_id.as_ref()),
            ("lot", self.lot.as_ref()),
        ];
        for (field, value) in required {
            if let Some(value) = value {
                validate_id(field, value)?;
            }
        }
        let digest_ok = self.image_blake3.len() == 64
            && self
                .image_blake3
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
        if !digest_ok {
            return Err(MetaError::BadDigest);
        }
        if let Some(edge) = &self.edge {
            validate_id("edge.model_version", &edge.model_version)?;
            if edge.defects.len() > MAX_EDGE_DEFECTS {
                return Err(MetaError::EdgeDefects);
            }
            if !(edge.score.is_finite()
                && edge.score_threshold.is_finite()
                && edge.latency_ms.is_finite())
            {
                return Err(MetaError::EdgeNotFinite);
            }
        }
        Ok(())
    }
}

/// The digest in [`FrameMeta::image_blake3`]: lower-case hex BLAKE3 of the image bytes.
/// BLAKE3 rather than SHA-256: line PCs and cloud hosts often lack SHA instructions, where
/// SHA-256 of a 200 KB frame costs about 1 ms of CPU and BLAKE3 about 0.04 ms.
pub fn image_digest(bytes: &[u8]) -> String {
    blake3::hash(bytes).to_hex().to_string()
}

/// Checks one identifier: the one definition of what a device, facility, line, station, SKU,
/// part or lot may be called (see [`FrameMeta::validate`]): 1 to [`MAX_ID_LEN`] bytes of
/// letters, digits and `-_.:`, and not `.` or `..` (identifiers become path segments).
pub fn validate_id(field: &'static str, value: &str) -> Result<(), MetaError> {
    if value.is_empty() {
        return Err(MetaError::Empty { field });
    }
    if value == "." || value == ".." {
        return Err(MetaError::Dots { field });
    }
    if value.len() > MAX_ID_LEN {
        return Err(MetaError::TooLong { field });
    }
    if !value
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b':'))
    {
        return Err(MetaError::BadChars { field });
    }
    Ok(())
}

/// Whether the frame was new or already known with the same content.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum IngestOutcome {
    Created,
    Duplicate,
}

/// The cloud's answer to an accepted upload. Once received, the agent may delete the frame.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct IngestAck {
    pub frame_id: Uuid,
    pub outcome: IngestOutcome,
    /// Id of the analysis that will hold (or holds) this frame's result.
    pub analysis_id: Uuid,
}
