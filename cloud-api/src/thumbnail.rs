//! Thumbnails of part images (`GET /api/v1/analyses/{id}/thumbnail`): a JPEG at most
//! [`MAX_SIDE`] pixels on its long side, made on the first request, then kept in the image
//! store under the image's thumbnail key (built by the store) and read from there. Making one
//! decodes the whole image, so it reserves its memory from the shared budget first and holds it
//! until the decode ends, even when the request has gone.

use std::io::Cursor;

use bytes::Bytes;
use image::ImageReader;
use image::codecs::jpeg::JpegEncoder;
use uuid::Uuid;
use wiko_inspect::DecodeLimits;

use crate::analysis::budget::{Budget, DECODE_BYTES_PER_PIXEL, TooLarge};
use crate::store::{Storage, StoreError};
use crate::telemetry;

/// The long side of a thumbnail at most, in pixels.
pub const MAX_SIDE: u32 = 320;
const QUALITY: u8 = 80;

#[derive(Debug, thiserror::Error)]
pub enum ThumbnailError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("the image cannot be read: {0}")]
    Image(String),
    #[error(transparent)]
    TooLarge(#[from] TooLarge),
}

/// The thumbnail of a part's image: read from the image store, or made and kept there.
pub async fn thumbnail(
    storage: &Storage,
    budget: &Budget,
    limits: DecodeLimits,
    id: Uuid,
) -> Result<Bytes, ThumbnailError> {
    let (image, thumb) = storage.part_keys(id).await?;
    match storage.image(&thumb).await {
        Ok(bytes) => return Ok(bytes),
        Err(StoreError::NotFound) => {}
        Err(e) => return Err(e.into()),
    }
    let bytes = storage.image(&image).await?;
    let (width, height) = dimensions(&bytes)?;
    let pixels = u64::from(width) * u64::from(height);
    if pixels > limits.max_pixels {
        return Err(ThumbnailError::Image(format!(
            "{width}×{height} is over the pixel limit"
        )));
    }
    let memory = budget.reserve(pixels * DECODE_BYTES_PER_PIXEL).await?;
    let small = memory
        .run(move || make(&bytes))
        .await
        .map_err(|e| ThumbnailError::Image(format!("thumbnail task: {e}")))??;
    let small = Bytes::from(small);
    storage.put_thumbnail(&thumb, small.clone()).await?;
    metrics::counter!(telemetry::THUMBNAILS_MADE_TOTAL).increment(1);
    Ok(small)
}

fn reader(bytes: &[u8]) -> Result<ImageReader<Cursor<&[u8]>>, ThumbnailError> {
    ImageReader::new(Cursor::new(bytes))
        .with_guessed_format()
        .map_err(|e| ThumbnailError::Image(e.to_string()))
}

/// Width and height from the image's header.
fn dimensions(bytes: &[u8]) -> Result<(u32, u32), ThumbnailError> {
    reader(bytes)?
        .into_dimensions()
        .map_err(|e| ThumbnailError::Image(e.to_string()))
}

/// A JPEG of the image, its long side at most [`MAX_SIDE`] (a smaller image keeps its size).
pub fn make(bytes: &[u8]) -> Result<Vec<u8>, ThumbnailError> {
    let image = reader(bytes)?
        .decode()
        .map_err(|e| ThumbnailError::Image(e.to_string()))?;
    let small = if image.width().max(image.height()) > MAX_SIDE {
        image.thumbnail(MAX_SIDE, MAX_SIDE)
    } else {
        image
    };
    let mut out = Vec::new();
    JpegEncoder::new_with_quality(&mut out, QUALITY)
        .encode_image(&small.to_rgb8())
        .map_err(|e| ThumbnailError::Image(e.to_string()))?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn png(width: u32, height: u32) -> Vec<u8> {
        let image = image::RgbImage::from_fn(width, height, |x, y| {
            image::Rgb([(x % 256) as u8, (y % 256) as u8, 128])
        });
        let mut out = Vec::new();
        image::DynamicImage::ImageRgb8(image)
            .write_to(&mut Cursor::new(&mut out), image::ImageFormat::Png)
            .unwrap();
        out
    }

    #[test]
    fn the_long_side_becomes_320_and_the_shape_stays() {
        let small = make(&png(1280, 480)).unwrap();
        assert_eq!(
            image::guess_format(&small).unwrap(),
            image::ImageFormat::Jpeg
        );
        assert_eq!(dimensions(&small).unwrap(), (320, 120));
        let tiny = make(&png(200, 100)).unwrap();
        assert_eq!(dimensions(&tiny).unwrap(), (200, 100));
        assert!(matches!(
            make(b"not an image"),
            Err(ThumbnailError::Image(_))
        ));
    }
}
