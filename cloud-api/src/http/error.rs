//! [`ApiError`]: every HTTP error, with one status and one stable code ([`ErrorCode`]) each.
//! Its response body is `{"error":{"code":"…","message":"…"}}`; a 5xx says nothing internal
//! (the cause is logged).

use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use wiko_inspect::InspectError;
use wiko_wire::{ErrorBody, ErrorCode};

use crate::analysis::golden::GoldenError;
use crate::intake::IntakeError;
use crate::store::StoreError;

#[derive(Debug, thiserror::Error)]
pub(crate) enum ApiError {
    #[error("missing or invalid API key")]
    Unauthorized,
    #[error("{0}")]
    Forbidden(String),
    /// A dashboard form without its session's CSRF token.
    #[error("the form's CSRF token is missing or not this session's: reload the page")]
    CsrfRejected,
    #[error("{0} not found")]
    NotFound(&'static str),
    #[error("SKU {0} has no golden model yet")]
    NotCalibrated(String),
    /// A malformed request; `code` names what is wrong.
    #[error("{message}")]
    BadRequest { code: ErrorCode, message: String },
    #[error("request body over the size limit")]
    PayloadTooLarge,
    #[error("{0}")]
    UnsupportedImage(String),
    #[error("{0}")]
    InvalidImage(String),
    /// The image needs more memory than the whole budget.
    #[error("{0}")]
    ImageTooLarge(String),
    #[error("frame {0} was already received with other content")]
    FrameConflict(uuid::Uuid),
    /// Removing a golden sample would leave its SKU's model too few images.
    #[error("{0}")]
    GoldenSetTooSmall(String),
    /// The analysis has no verdict to review.
    #[error("{0}")]
    NotJudged(String),
    /// A part not reviewed good cannot join a golden set.
    #[error("{0}")]
    NotReviewedGood(String),
    #[error("the request took longer than the server allows")]
    RequestTimeout,
    /// Over a rate limit; retry after this many seconds.
    #[error("too many requests: retry after {0} s")]
    TooManyRequests(u64),
    #[error("temporarily unavailable, retry later")]
    Unavailable,
    /// As much of a costly piece of work is running as the server allows at once.
    #[error("{0}")]
    Busy(String),
    #[error("internal error")]
    Internal(String),
}

impl ApiError {
    pub(crate) fn bad(code: ErrorCode, message: impl Into<String>) -> ApiError {
        ApiError::BadRequest {
            code,
            message: message.into(),
        }
    }

    pub(crate) fn status(&self) -> StatusCode {
        match self {
            ApiError::Unauthorized => StatusCode::UNAUTHORIZED,
            ApiError::Forbidden(_) | ApiError::CsrfRejected => StatusCode::FORBIDDEN,
            ApiError::NotFound(_) | ApiError::NotCalibrated(_) => StatusCode::NOT_FOUND,
            ApiError::BadRequest { .. } => StatusCode::BAD_REQUEST,
            ApiError::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::UnsupportedImage(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ApiError::InvalidImage(_) | ApiError::ImageTooLarge(_) => {
                StatusCode::UNPROCESSABLE_ENTITY
            }
            ApiError::FrameConflict(_)
            | ApiError::GoldenSetTooSmall(_)
            | ApiError::NotJudged(_)
            | ApiError::NotReviewedGood(_) => StatusCode::CONFLICT,
            ApiError::RequestTimeout => StatusCode::REQUEST_TIMEOUT,
            ApiError::TooManyRequests(_) => StatusCode::TOO_MANY_REQUESTS,
            ApiError::Unavailable | ApiError::Busy(_) => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    pub(crate) fn code(&self) -> ErrorCode {
        match self {
            ApiError::Unauthorized => ErrorCode::Unauthorized,
            ApiError::Forbidden(_) => ErrorCode::Forbidden,
            ApiError::CsrfRejected => ErrorCode::CsrfRejected,
            ApiError::NotFound(_) => ErrorCode::NotFound,
            ApiError::NotCalibrated(_) => ErrorCode::NotCalibrated,
            ApiError::BadRequest { code, .. } => *code,
            ApiError::PayloadTooLarge => ErrorCode::PayloadTooLarge,
            ApiError::UnsupportedImage(_) => ErrorCode::UnsupportedImage,
            ApiError::InvalidImage(_) => ErrorCode::InvalidImage,
            ApiError::ImageTooLarge(_) => ErrorCode::ImageTooLarge,
            ApiError::FrameConflict(_) => ErrorCode::FrameConflict,
            ApiError::GoldenSetTooSmall(_) => ErrorCode::GoldenSetTooSmall,
            ApiError::NotJudged(_) => ErrorCode::NotJudged,
            ApiError::NotReviewedGood(_) => ErrorCode::NotReviewedGood,
            ApiError::RequestTimeout => ErrorCode::RequestTimeout,
            ApiError::TooManyRequests(_) => ErrorCode::TooManyRequests,
            ApiError::Unavailable => ErrorCode::Unavailable,
            ApiError::Busy(_) => ErrorCode::Busy,
            ApiError::Internal(_) => ErrorCode::Internal,
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        if let ApiError::Internal(detail) = &self {
            tracing::error!(%detail, "request failed");
        }
        let retry_after = match &self {
            ApiError::Unavailable => Some(HeaderValue::from_static("5")),
            ApiError::Busy(_) => Some(HeaderValue::from_static("2")),
            ApiError::TooManyRequests(secs) => HeaderValue::from_str(&secs.to_string()).ok(),
            _ => None,
        };
        let body = ErrorBody::new(self.code(), self.to_string());
        let mut response = (status, Json(body)).into_response();
        if let Some(after) = retry_after {
            response.headers_mut().insert(header::RETRY_AFTER, after);
        }
        response
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Conflict(id) => ApiError::FrameConflict(id),
            StoreError::NotFound => ApiError::NotFound("resource"),
            StoreError::BadCursor => ApiError::bad(
                ErrorCode::InvalidCursor,
                "the cursor is not one this API issued",
            ),
            StoreError::Unavailable(detail) | StoreError::Concurrent(detail) => {
                tracing::warn!(%detail, "storage unavailable");
                ApiError::Unavailable
            }
            StoreError::Database(d) | StoreError::Blob(d) => ApiError::Internal(d),
        }
    }
}

impl From<InspectError> for ApiError {
    fn from(e: InspectError) -> Self {
        match e {
            InspectError::UnsupportedFormat => ApiError::UnsupportedImage(e.to_string()),
            _ => ApiError::InvalidImage(crate::analysis::describe(&e)),
        }
    }
}

impl From<IntakeError> for ApiError {
    fn from(e: IntakeError) -> Self {
        match e {
            IntakeError::DigestMismatch => ApiError::bad(ErrorCode::DigestMismatch, e.to_string()),
            IntakeError::Image(e) => e.into(),
            IntakeError::TooLarge(e) => e.into(),
            IntakeError::Store(e) => e.into(),
        }
    }
}

impl From<GoldenError> for ApiError {
    fn from(e: GoldenError) -> Self {
        match e {
            GoldenError::Store(e) => e.into(),
            GoldenError::Image { .. } => ApiError::InvalidImage(e.to_string()),
            GoldenError::Fit(detail) => ApiError::Internal(detail),
            GoldenError::Full { .. } => ApiError::bad(ErrorCode::GoldenSetFull, e.to_string()),
            GoldenError::Degenerate(_) => ApiError::InvalidImage(e.to_string()),
            GoldenError::TooLarge(e) => e.into(),
            GoldenError::NotInSet { .. } => ApiError::NotFound("golden sample"),
            GoldenError::TooSmall { .. } => ApiError::GoldenSetTooSmall(e.to_string()),
        }
    }
}

impl From<crate::thumbnail::ThumbnailError> for ApiError {
    fn from(e: crate::thumbnail::ThumbnailError) -> Self {
        use crate::thumbnail::ThumbnailError;
        match e {
            ThumbnailError::Store(StoreError::NotFound) => ApiError::NotFound("analysis"),
            ThumbnailError::Store(e) => e.into(),
            ThumbnailError::Image(_) => ApiError::InvalidImage(e.to_string()),
            ThumbnailError::TooLarge(e) => e.into(),
        }
    }
}

impl From<crate::heatmap::HeatmapError> for ApiError {
    fn from(e: crate::heatmap::HeatmapError) -> Self {
        use crate::heatmap::HeatmapError;
        match e {
            HeatmapError::Store(StoreError::NotFound) => ApiError::NotFound("analysis"),
            HeatmapError::Store(e) => e.into(),
            HeatmapError::NoModel(why) => ApiError::NotJudged(why),
            HeatmapError::Busy => ApiError::Busy(e.to_string()),
            HeatmapError::Failed(why) => ApiError::Internal(why),
            HeatmapError::TooLarge(e) => e.into(),
        }
    }
}

impl From<crate::analysis::budget::TooLarge> for ApiError {
    fn from(e: crate::analysis::budget::TooLarge) -> Self {
        ApiError::ImageTooLarge(e.to_string())
    }
}

impl From<axum::extract::multipart::MultipartError> for ApiError {
    fn from(e: axum::extract::multipart::MultipartError) -> Self {
        if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::PayloadTooLarge
        } else {
            ApiError::bad(ErrorCode::InvalidMultipart, e.body_text())
        }
    }
}

impl From<axum::extract::multipart::MultipartRejection> for ApiError {
    fn from(e: axum::extract::multipart::MultipartRejection) -> Self {
        ApiError::bad(ErrorCode::InvalidMultipart, e.body_text())
    }
}
