//! The body of every HTTP error: `{"error":{"code":"…","message":"…"}}`.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorDetail {
    /// Stable snake_case code, e.g. `frame_conflict`; clients branch on it.
    pub code: String,
    /// Human-readable explanation; never internal detail for a 5xx.
    pub message: String,
}
