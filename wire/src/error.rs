//! The body of every HTTP error, `{"error":{"code":"…","message":"…"}}`, and its stable codes.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ErrorDetail {
    /// Stable snake_case code ([`ErrorCode::as_str`]); clients branch on it. A client meeting a
    /// code it does not know treats it by the HTTP status.
    pub code: String,
    /// Human-readable explanation; never internal detail for a 5xx.
    pub message: String,
}

impl ErrorBody {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> ErrorBody {
        ErrorBody {
            error: ErrorDetail {
                code: code.as_str().to_string(),
                message: message.into(),
            },
        }
    }

    /// The code, if it is one this version knows.
    pub fn code(&self) -> Option<ErrorCode> {
        ErrorCode::parse(&self.error.code)
    }
}

macro_rules! error_codes {
    ($($(#[$doc:meta])* $variant:ident = $name:literal,)*) => {
        /// Every error code the API and the agent's health endpoint answer with. Codes are
        /// never renamed or reused; new ones may appear.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum ErrorCode {
            $($(#[$doc])* $variant,)*
        }

        impl ErrorCode {
            pub const ALL: &[ErrorCode] = &[$(ErrorCode::$variant,)*];

            /// The snake_case name on the wire.
            pub fn as_str(self) -> &'static str {
                match self {
                    $(ErrorCode::$variant => $name,)*
                }
            }
        }
    };
}

error_codes! {
    /// No key, or a key the API does not know (401).
    Unauthorized = "unauthorized",
    /// The key may not do this (403).
    Forbidden = "forbidden",
    /// A dashboard form without its session's CSRF token, or with another's (403).
    CsrfRejected = "csrf_rejected",
    /// No such analysis, image or golden sample (404).
    NotFound = "not_found",
    /// The SKU has no golden model yet (404 on its model).
    NotCalibrated = "not_calibrated",
    /// The body is over the size limit (413).
    PayloadTooLarge = "payload_too_large",
    /// Not an image format the API reads (415).
    UnsupportedImage = "unsupported_image",
    /// An image that cannot be used: truncated, too large, no part in it (422).
    InvalidImage = "invalid_image",
    /// Judging the image would take more memory than the server's whole budget (422).
    ImageTooLarge = "image_too_large",
    /// The frame id was received before with other content (409).
    FrameConflict = "frame_conflict",
    /// The analysis has no verdict to review: pending, failed or not calibrated (409).
    NotJudged = "not_judged",
    /// Only a part whose latest review says it is good joins a golden set (409).
    NotReviewedGood = "not_reviewed_good",
    /// Removing the golden sample would leave its model too few images (409).
    GoldenSetTooSmall = "golden_set_too_small",
    /// The SKU's golden set is full (400).
    GoldenSetFull = "golden_set_full",
    /// The body is not the multipart form the route takes (400).
    InvalidMultipart = "invalid_multipart",
    /// A required form field or part is missing (400).
    MissingField = "missing_field",
    /// A form field's value is not acceptable (400).
    InvalidField = "invalid_field",
    /// The frame's metadata does not parse or validate (400).
    InvalidMetadata = "invalid_metadata",
    /// The frame id in the URL is not a UUID (400).
    InvalidFrameId = "invalid_frame_id",
    /// `meta.frame_id` differs from the URL's (400).
    FrameIdMismatch = "frame_id_mismatch",
    /// The image's BLAKE3 differs from `meta.image_blake3` (400).
    DigestMismatch = "digest_mismatch",
    /// An id in the path is not a UUID (400).
    InvalidId = "invalid_id",
    /// A JSON body does not parse or is not acceptable (400).
    InvalidBody = "invalid_body",
    /// A query parameter is not acceptable (400).
    InvalidQuery = "invalid_query",
    /// The paging cursor is not one the API issued (400).
    InvalidCursor = "invalid_cursor",
    /// The request took longer than the server allows: a body sent too slowly (408).
    RequestTimeout = "request_timeout",
    /// Over a rate limit (per key, per address, or failed key checks); retry after
    /// `Retry-After` (429).
    TooManyRequests = "too_many_requests",
    /// A dependency (database, object store) cannot be reached; retry after `Retry-After` (503).
    Unavailable = "unavailable",
    /// The server is doing as much of this costly work (a part's heat map) as it allows at
    /// once; retry after `Retry-After` (503).
    Busy = "busy",
    /// The agent's buffer cannot be read (503 on `/healthz`).
    BufferUnavailable = "buffer_unavailable",
    /// Anything else (500); the cause is in the server's log, never in the body.
    Internal = "internal",
}

impl ErrorCode {
    /// Parses the wire name; `None` for a code this version does not know.
    pub fn parse(name: &str) -> Option<ErrorCode> {
        ErrorCode::ALL.iter().copied().find(|c| c.as_str() == name)
    }
}
