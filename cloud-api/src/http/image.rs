//! Serving a stored image.

use axum::http::header;
use axum::response::{IntoResponse, Response};
use bytes::Bytes;

/// A stored image as a response, with the content type of its format (uploads may be JPEG,
/// PNG, TIFF or BMP). Images are content-addressed: the bytes behind a URL never change.
pub(crate) fn stored(bytes: Bytes) -> Response {
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

#[cfg(test)]
mod tests {
    use super::*;

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
