//! Checks an uploaded image cheaply before it is stored: format, size against the pixel limit
//! and, for JPEG, the end-of-image marker (all from `wiko_inspect::decode::dimensions`; nothing
//! is decoded).

use axum::http::header;
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use wiko_inspect::{DecodeLimits, InspectError};

use super::error::ApiError;

/// `(width, height)` of an acceptable image.
pub fn check(bytes: &[u8], limits: DecodeLimits) -> Result<(u32, u32), ApiError> {
    wiko_inspect::decode::dimensions(bytes, limits).map_err(inspect_error)
}

pub fn inspect_error(e: InspectError) -> ApiError {
    match e {
        InspectError::UnsupportedFormat => ApiError::UnsupportedImage(e.to_string()),
        _ => ApiError::InvalidImage(e.to_string()),
    }
}

/// A stored image as a response, with the content type of its format (uploads may be JPEG,
/// PNG, TIFF or BMP). Images are content-addressed: the bytes behind a URL never change.
pub fn stored(bytes: Bytes) -> Response {
    (
        [
            (header::CONTENT_TYPE, content_type(&bytes)),
            (header::CACHE_CONTROL, "private, max-age=86400, immutable"),
        ],
        bytes,
    )
        .into_response()
}

fn content_type(bytes: &[u8]) -> &'static str {
    image::guess_format(bytes).map_or("application/octet-stream", |f| f.to_mime_type())
}

/// Content-addressed blob key, grouped by day: `images/20261126/<blake3>.jpg`.
pub fn blob_key(digest: &str, at: chrono::DateTime<chrono::Utc>) -> String {
    format!("images/{}/{digest}.jpg", at.format("%Y%m%d"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_content_addressed_by_day() {
        let t = chrono::DateTime::parse_from_rfc3339("2026-11-26T10:00:00Z")
            .unwrap()
            .to_utc();
        assert_eq!(blob_key("ab", t), "images/20261126/ab.jpg");
    }

    #[test]
    fn a_stored_image_is_served_as_its_own_format() {
        assert_eq!(
            content_type(&[0xFF, 0xD8, 0xFF, 0xE0, 0, 0x10]),
            "image/jpeg"
        );
        assert_eq!(content_type(b"\x89PNG\r\n\x1a\n\0\0"), "image/png");
        assert_eq!(content_type(b"not an image"), "application/octet-stream");
    }
}
