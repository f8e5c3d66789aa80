//! The analysis of one part, as the API returns it. Field names follow the prototype's
//! `analyses` table (`id`, `defect_id`, `timestamp`, `facility`, `product_sku`, `defect_detected`).

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// The knife defect taxonomy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum DefectType {
    Scratch,
    /// Edge nick: material missing on the blade's silhouette.
    Chip,
    Dent,
    Pit,
    Rust,
    Stain,
    Burr,
    Crack,
    GrindingMark,
    HandleCrack,
    /// Missing or misaligned rivet.
    Rivet,
    /// Logo print.
    Print,
    Other,
}

impl DefectType {
    pub const ALL: [DefectType; 13] = [
        DefectType::Scratch,
        DefectType::Chip,
        DefectType::Dent,
        DefectType::Pit,
        DefectType::Rust,
        DefectType::Stain,
        DefectType::Burr,
        DefectType::Crack,
        DefectType::GrindingMark,
        DefectType::HandleCrack,
        DefectType::Rivet,
        DefectType::Print,
        DefectType::Other,
    ];

    /// The snake_case name used on the wire and in manifests.
    pub fn as_str(self) -> &'static str {
        match self {
            DefectType::Scratch => "scratch",
            DefectType::Chip => "chip",
            DefectType::Dent => "dent",
            DefectType::Pit => "pit",
            DefectType::Rust => "rust",
            DefectType::Stain => "stain",
            DefectType::Burr => "burr",
            DefectType::Crack => "crack",
            DefectType::GrindingMark => "grinding_mark",
            DefectType::HandleCrack => "handle_crack",
            DefectType::Rivet => "rivet",
            DefectType::Print => "print",
            DefectType::Other => "other",
        }
    }

    /// Parses the wire name; `None` for anything else.
    pub fn parse(name: &str) -> Option<DefectType> {
        DefectType::ALL.into_iter().find(|t| t.as_str() == name)
    }
}

/// One defect found on a part.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Defect {
    #[serde(rename = "type")]
    pub kind: DefectType,
    /// `low`, `medium` or `high`.
    pub severity: String,
    /// 0..1.
    pub confidence: f32,
    /// `[x, y, w, h]` in pixels of the uploaded image.
    pub bbox: [u32; 4],
    pub description: String,
}

/// A region the golden model found, as the inspection reports it: what [`Defect::from_region`]
/// needs.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RegionFigures<'a> {
    /// The heuristic type's name (`scratch`, `chip`, …; anything else is `other`).
    pub kind: &'a str,
    pub bbox: [u32; 4],
    /// Pixels in the model's frame.
    pub area: usize,
    /// Highest anomaly inside the region.
    pub peak: f32,
    /// Mean signed difference from good parts (grey levels); negative is darker.
    pub shift: f32,
}

impl Defect {
    /// A golden-model region as a defect, the same at the edge and in the cloud: its severity
    /// and confidence follow how far its peak stands over the model's `threshold`.
    pub fn from_region(r: RegionFigures<'_>, threshold: f32) -> Defect {
        let ratio = r.peak / threshold.max(1e-6);
        let severity = if ratio > 3.0 {
            "high"
        } else if ratio > 1.5 {
            "medium"
        } else {
            "low"
        };
        let kind = DefectType::parse(r.kind).unwrap_or(DefectType::Other);
        Defect {
            kind,
            severity: severity.to_string(),
            confidence: (1.0 - 1.0 / (1.0 + ratio)).clamp(0.0, 0.99),
            bbox: r.bbox,
            description: format!(
                "{} (heuristic type): {} px, {:.1}x threshold, {} than good parts",
                kind.as_str(),
                r.area,
                ratio,
                if r.shift < 0.0 { "darker" } else { "brighter" }
            ),
        }
    }
}

/// How far an analysis has come.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum AnalysisStatus {
    /// Stored, waiting for an analyzer.
    Pending,
    /// The SKU has no model yet: no verdict was made.
    NotCalibrated,
    /// A verdict that a later, deeper analysis may enrich.
    Provisional,
    Final,
    /// The analyzer could not process the image (for example it does not decode).
    Failed,
}

impl AnalysisStatus {
    /// The snake_case name on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            AnalysisStatus::Pending => "pending",
            AnalysisStatus::NotCalibrated => "not_calibrated",
            AnalysisStatus::Provisional => "provisional",
            AnalysisStatus::Final => "final",
            AnalysisStatus::Failed => "failed",
        }
    }
}

/// One analysed part.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Analysis {
    pub id: Uuid,
    /// Human-facing unique id, `DEF-` plus 16 hex digits (the prototype's format).
    pub defect_id: String,
    /// Capture time of the part (UTC).
    pub timestamp: DateTime<Utc>,
    pub facility: String,
    pub line: String,
    pub station: String,
    pub product_sku: String,
    pub part_id: Option<String>,
    pub lot: Option<String>,
    pub device_id: Option<String>,
    pub frame_id: Option<Uuid>,
    /// The agent's per-device sequence number of the frame.
    pub seq: Option<u64>,
    pub status: AnalysisStatus,
    pub defect_detected: bool,
    pub defects: Vec<Defect>,
    /// Anomaly score; higher is more anomalous. The threshold is `score_threshold`.
    pub score: Option<f32>,
    pub score_threshold: Option<f32>,
    /// 0..1.
    pub confidence: Option<f32>,
    pub recommendation: String,
    pub analyzer: String,
    pub analyzer_version: String,
    pub model_version: Option<String>,
    pub latency_ms: Option<f64>,
    pub image_width: u32,
    pub image_height: u32,
    /// Path of the image under the API, e.g. `/api/v1/analyses/{id}/image`.
    pub image_url: String,
    pub created_at: DateTime<Utc>,
    pub analyzed_at: Option<DateTime<Utc>>,
    /// Every analyzer's verdict on the part: the agent's (edge analysis) when it judged the
    /// frame, the cloud's golden gate's, then the remote model's once it answered (or failed).
    #[serde(default)]
    pub verdicts: Vec<Verdict>,
    /// The verdicts disagree on OK/NG (the gate's decides `defect_detected`).
    #[serde(default)]
    pub disagreement: bool,
    /// A small JPEG of the image (at most 320 px on its long side), e.g.
    /// `/api/v1/analyses/{id}/thumbnail`.
    #[serde(default)]
    pub thumbnail_url: String,
    /// The latest review of the result, if any (`POST /api/v1/analyses/{id}/feedback`).
    #[serde(default)]
    pub feedback: Option<crate::Feedback>,
}

/// Where an analyzer runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum VerdictSource {
    /// On the line PC.
    Edge,
    /// In this cloud (the golden-sample analyzer).
    Cloud,
    /// A remote vision model (Azure OpenAI, Azure AI Foundry, an OpenAI-compatible server).
    Remote,
}

/// One analyzer's verdict on a part.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Verdict {
    pub source: VerdictSource,
    /// `golden`, `azure_openai`, `azure_ai_inference`, `openai_compatible`.
    pub analyzer: String,
    /// The model version (golden) or the model / deployment name (remote).
    pub model: Option<String>,
    /// `None` when the analyzer gave no verdict (see `error`).
    pub defect_detected: Option<bool>,
    pub score: Option<f32>,
    pub defects: Vec<Defect>,
    /// A summary of what the analyzer saw, when it gives one.
    pub summary: Option<String>,
    pub latency_ms: Option<f64>,
    /// Tokens and estimated cost of a remote call.
    pub usage: Option<Usage>,
    pub error: Option<VerdictError>,
    /// An edge verdict whose NG alert the agent published itself, acknowledged by the broker
    /// before the frame was uploaded.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub alerted: bool,
}

/// What a remote call used and cost.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Usage {
    pub input_tokens: u64,
    pub output_tokens: u64,
    /// Estimated from the configured per-token prices.
    pub cost_usd: f64,
}

/// Why an analyzer gave no verdict.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct VerdictError {
    pub code: VerdictErrorCode,
    /// What happened, in words (the service's own message where it sent one).
    pub message: String,
}

/// The kinds of remote analyzer failure.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum VerdictErrorCode {
    /// No answer within the request timeout, after every retry.
    Timeout,
    /// Still rate limited (429) after every retry, or a 429 asked to wait until past
    /// `max_deferral_secs` after the part was taken in (given up; the call that was answered
    /// 429 may have been another part's, which paused every call of the replica).
    RateLimited,
    /// The service failed (5xx) after every retry, or could not be reached.
    Unavailable,
    /// The service refused the request (4xx other than 429).
    Rejected,
    /// The model refused to answer.
    Refused,
    /// The answer was cut at `max_tokens` (`finish_reason: length`).
    Truncated,
    /// The service's content filter withheld the answer.
    ContentFilter,
    /// The answer is not the JSON asked for, or names boxes outside the image.
    InvalidAnswer,
    /// The daily or monthly budget is spent, or the deployment's token or request budget
    /// stayed used up until past `max_deferral_secs` after the part was taken in: no call was
    /// made.
    BudgetExhausted,
    /// The part's image could not be prepared for the call (gone from the image store, too
    /// large, not decodable): no call was made.
    ImageUnusable,
}

/// Remote analysis cost per day, analyzer, facility and SKU (`GET /api/v1/costs`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct CostRow {
    /// UTC day, `YYYY-MM-DD`.
    pub day: String,
    pub analyzer: String,
    pub facility: String,
    pub product_sku: String,
    /// Parts sent to the remote analyzer (budget stops included).
    pub parts: u64,
    /// Of which the answer was an error.
    pub failures: u64,
    /// Of which the remote verdict disagreed with the local gate.
    pub disagreements: u64,
    pub input_tokens: u64,
    pub output_tokens: u64,
    pub cost_usd: f64,
}

/// `GET /api/v1/costs`: rows and their total.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Costs {
    pub rows: Vec<CostRow>,
    pub total_cost_usd: f64,
    /// Cost per part sent, over the rows.
    pub cost_per_part_usd: Option<f64>,
}

/// One page of a listing; pass `next_cursor` back as `cursor` for the next page.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Page<T> {
    pub items: Vec<T>,
    pub next_cursor: Option<String>,
}
