//! [`ApiError`]: every HTTP error, with one status and one stable code each. Its response body is
//! `{"error":{"code":"…","message":"…"}}`; a 5xx says nothing internal (the cause is logged).

use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use wiko_wire::{ErrorBody, ErrorDetail};

use crate::store::StoreError;

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("missing or invalid API key")]
    Unauthorized,
    #[error("this API key may not do that")]
    Forbidden,
    #[error("{0} not found")]
    NotFound(&'static str),
    #[error("SKU {0} has no golden model yet")]
    NotCalibrated(String),
    /// A malformed request; `code` names what is wrong.
    #[error("{message}")]
    BadRequest { code: &'static str, message: String },
    #[error("request body over the size limit")]
    PayloadTooLarge,
    #[error("{0}")]
    UnsupportedImage(String),
    #[error("{0}")]
    InvalidImage(String),
    #[error("frame {0} was already received with other content")]
    FrameConflict(uuid::Uuid),
    /// Removing a golden sample would leave its SKU's model too few images.
    #[error("{0}")]
    GoldenSetTooSmall(String),
    #[error("temporarily unavailable, retry later")]
    Unavailable,
    #[error("internal error")]
    Internal(String),
}

impl ApiError {
    pub fn bad(code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError::BadRequest {
            code,
            message: message.into(),
        }
    }

    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::Unauthorized => StatusCode::UNAUTHORIZED,
            ApiError::Forbidden => StatusCode::FORBIDDEN,
            ApiError::NotFound(_) | ApiError::NotCalibrated(_) => StatusCode::NOT_FOUND,
            ApiError::BadRequest { .. } => StatusCode::BAD_REQUEST,
            ApiError::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::UnsupportedImage(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ApiError::InvalidImage(_) => StatusCode::UNPROCESSABLE_ENTITY,
            ApiError::FrameConflict(_) | ApiError::GoldenSetTooSmall(_) => StatusCode::CONFLICT,
            ApiError::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    pub fn code(&self) -> &'static str {
        match self {
            ApiError::Unauthorized => "unauthorized",
            ApiError::Forbidden => "forbidden",
            ApiError::NotFound(_) => "not_found",
            ApiError::NotCalibrated(_) => "not_calibrated",
            ApiError::BadRequest { code, .. } => code,
            ApiError::PayloadTooLarge => "payload_too_large",
            ApiError::UnsupportedImage(_) => "unsupported_image",
            ApiError::InvalidImage(_) => "invalid_image",
            ApiError::FrameConflict(_) => "frame_conflict",
            ApiError::GoldenSetTooSmall(_) => "golden_set_too_small",
            ApiError::Unavailable => "unavailable",
            ApiError::Internal(_) => "internal",
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        if let ApiError::Internal(detail) = &self {
            tracing::error!(%detail, "request failed");
        }
        let body = ErrorBody {
            error: ErrorDetail {
                code: self.code().to_string(),
                message: self.to_string(),
            },
        };
        let mut response = (status, Json(body)).into_response();
        if status == StatusCode::SERVICE_UNAVAILABLE {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("5"));
        }
        response
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Conflict(id) => ApiError::FrameConflict(id),
            StoreError::NotFound => ApiError::NotFound("resource"),
            StoreError::BadCursor => {
                ApiError::bad("invalid_cursor", "the cursor is not one this API issued")
            }
            StoreError::Unavailable(detail) => {
                tracing::warn!(%detail, "storage unavailable");
                ApiError::Unavailable
            }
            StoreError::Database(d) | StoreError::Blob(d) => ApiError::Internal(d),
        }
    }
}

impl From<axum::extract::multipart::MultipartError> for ApiError {
    fn from(e: axum::extract::multipart::MultipartError) -> Self {
        if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::PayloadTooLarge
        } else {
            ApiError::bad("invalid_multipart", e.body_text())
        }
    }
}
