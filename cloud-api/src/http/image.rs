//! Checks an uploaded image cheaply before it is stored: format, size against the pixel limit
//! (read from the header, nothing decoded), and for JPEG the end-of-image marker, which a
//! truncated upload lacks.

use sha2::{Digest, Sha256};
use wiko_inspect::{DecodeLimits, InspectError};

use super::error::ApiError;

/// `(width, height)` of an acceptable image.
pub fn check(bytes: &[u8], limits: DecodeLimits) -> Result<(u32, u32), ApiError> {
    let (w, h) = wiko_inspect::decode::dimensions(bytes, limits).map_err(inspect_error)?;
    if image_is_jpeg(bytes) && !has_jpeg_end(bytes) {
        return Err(ApiError::InvalidImage(
            "the JPEG is truncated (no end-of-image marker)".into(),
        ));
    }
    Ok((w, h))
}

pub fn inspect_error(e: InspectError) -> ApiError {
    match e {
        InspectError::UnsupportedFormat => ApiError::UnsupportedImage(e.to_string()),
        _ => ApiError::InvalidImage(e.to_string()),
    }
}

fn image_is_jpeg(bytes: &[u8]) -> bool {
    bytes.starts_with(&[0xFF, 0xD8])
}

/// The last non-padding bytes are `FF D9`.
fn has_jpeg_end(bytes: &[u8]) -> bool {
    let trimmed = bytes
        .iter()
        .rposition(|&b| b != 0 && b != b'\n' && b != b'\r' && b != b' ')
        .map_or(&bytes[..0], |i| &bytes[..=i]);
    trimmed.ends_with(&[0xFF, 0xD9])
}

pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// Content-addressed blob key, grouped by day: `images/20261126/<sha256>.jpg`.
pub fn blob_key(sha256: &str, at: chrono::DateTime<chrono::Utc>) -> String {
    format!("images/{}/{sha256}.jpg", at.format("%Y%m%d"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jpeg_end_marker_detects_truncation() {
        assert!(has_jpeg_end(&[0xFF, 0xD8, 1, 2, 0xFF, 0xD9]));
        assert!(has_jpeg_end(&[0xFF, 0xD8, 1, 2, 0xFF, 0xD9, 0, 0]));
        assert!(!has_jpeg_end(&[0xFF, 0xD8, 1, 2, 3]));
        assert!(!has_jpeg_end(&[]));
    }

    #[test]
    fn keys_are_content_addressed_by_day() {
        let t = chrono::DateTime::parse_from_rfc3339("2026-11-26T10:00:00Z")
            .unwrap()
            .to_utc();
        assert_eq!(blob_key("ab", t), "images/20261126/ab.jpg");
    }
}
