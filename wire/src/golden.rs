//! Golden sets and models per SKU (`/api/v1/skus…`): what a quality engineer uploads good parts
//! to, and what was fitted from them.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// One image of a SKU's golden set.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct GoldenSample {
    /// BLAKE3 of the image bytes (hex): the image's name in the API.
    pub digest: String,
    pub added_at: DateTime<Utc>,
}

/// A SKU's active model.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ModelInfo {
    pub sku: String,
    /// `v1`, `v2`, …: every fit is a new version; results name the one that judged them.
    pub version: String,
    /// `aligned`, `fixed` or `texture`.
    pub method: String,
    /// Score above which a part is NG.
    pub threshold: f32,
    /// Share of good parts the threshold was calibrated to reject.
    pub false_reject_rate: f32,
    /// Good images it was fitted on.
    pub trained_on: usize,
}

/// The answer to a golden upload or removal: the set and the model now active.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Calibration {
    pub sku: String,
    /// Images in the golden set.
    pub samples: usize,
    /// Of this upload, images that were not in the set yet.
    pub added: usize,
    /// The model now active; `None` while the set is too small for one.
    pub model: Option<ModelInfo>,
    /// How long fitting took, when this request fitted a new version.
    pub fit_ms: Option<f64>,
}

/// `GET /api/v1/skus`: a SKU at a glance.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct SkuSummary {
    pub sku: String,
    pub samples: usize,
    pub model: Option<ModelInfo>,
}

/// `GET /api/v1/skus/{sku}/golden`: the set, oldest first, and its model.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct GoldenSet {
    pub sku: String,
    pub samples: Vec<GoldenSample>,
    pub model: Option<ModelInfo>,
}

/// The response header of `GET /api/v1/skus/{sku}/model/file` naming the model version the
/// file holds (the body is the model file itself, `application/octet-stream`).
pub const MODEL_VERSION_HEADER: &str = "x-wiko-model-version";
