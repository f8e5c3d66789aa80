//! Bytes to a grey image, with a pixel limit checked before any pixel is allocated.

use std::io::Cursor;

use image::{ImageFormat, ImageReader};

use crate::{Gray, InspectError};

/// Bounds on what [`decode`] accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DecodeLimits {
    /// Largest accepted width × height.
    pub max_pixels: u64,
}

impl Default for DecodeLimits {
    /// 40 megapixels: larger than any line camera we support, far below a decompression bomb.
    fn default() -> Self {
        DecodeLimits {
            max_pixels: 40_000_000,
        }
    }
}

/// Decodes JPEG, PNG, TIFF or BMP bytes (8 or 16 bit, grey or colour) to 8-bit-range grey.
pub fn decode(bytes: &[u8], limits: DecodeLimits) -> Result<Gray, InspectError> {
    let (width, height) = dimensions(bytes, limits)?;
    let mut reader = ImageReader::new(Cursor::new(bytes))
        .with_guessed_format()
        .map_err(|e| InspectError::Decode(e.to_string()))?;
    let mut image_limits = image::Limits::default();
    image_limits.max_image_width = Some(width);
    image_limits.max_image_height = Some(height);
    image_limits.max_alloc = Some(limits.max_pixels.saturating_mul(8));
    reader.limits(image_limits);
    let img = reader
        .decode()
        .map_err(|e| InspectError::Decode(e.to_string()))?;
    let luma = img.to_luma8();
    Ok(Gray {
        width: luma.width() as usize,
        height: luma.height() as usize,
        data: luma.into_raw().into_iter().map(f32::from).collect(),
    })
}

/// Whether `bytes` start like a JPEG but lack the end-of-image marker (`FF D9`, possibly
/// followed by padding): a file cut short or still being written. Decoders tolerate this and
/// fill in grey, so it is checked explicitly.
pub fn is_truncated_jpeg(bytes: &[u8]) -> bool {
    if !bytes.starts_with(&[0xFF, 0xD8]) {
        return false;
    }
    let end = bytes
        .iter()
        .rposition(|&b| !matches!(b, 0 | b'\n' | b'\r' | b' '))
        .map_or(0, |i| i + 1);
    !bytes[..end].ends_with(&[0xFF, 0xD9])
}

/// Reads only the header: the format and the size, checked against the limits; a truncated
/// JPEG is refused here too.
pub fn dimensions(bytes: &[u8], limits: DecodeLimits) -> Result<(u32, u32), InspectError> {
    if bytes.is_empty() {
        return Err(InspectError::Empty);
    }
    if is_truncated_jpeg(bytes) {
        return Err(InspectError::Truncated);
    }
    let format = image::guess_format(bytes).map_err(|_| InspectError::UnsupportedFormat)?;
    if !matches!(
        format,
        ImageFormat::Jpeg | ImageFormat::Png | ImageFormat::Tiff | ImageFormat::Bmp
    ) {
        return Err(InspectError::UnsupportedFormat);
    }
    let reader = ImageReader::with_format(Cursor::new(bytes), format);
    let (width, height) = reader
        .into_dimensions()
        .map_err(|e| InspectError::Decode(e.to_string()))?;
    if width == 0 || height == 0 {
        return Err(InspectError::Empty);
    }
    if u64::from(width) * u64::from(height) > limits.max_pixels {
        return Err(InspectError::TooManyPixels {
            width,
            height,
            max_pixels: limits.max_pixels,
        });
    }
    Ok((width, height))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn jpeg(width: u32, height: u32) -> Vec<u8> {
        let img = image::GrayImage::from_fn(width, height, |x, y| image::Luma([(x + y) as u8]));
        let mut out = Vec::new();
        image::DynamicImage::ImageLuma8(img)
            .write_to(&mut Cursor::new(&mut out), ImageFormat::Jpeg)
            .unwrap();
        out
    }

    #[test]
    fn decodes_a_jpeg_to_grey() {
        let g = decode(&jpeg(40, 30), DecodeLimits::default()).unwrap();
        assert_eq!((g.width, g.height), (40, 30));
        assert!(g.get(39, 29) > g.get(0, 0));
    }

    #[test]
    fn rejects_empty_garbage_and_truncated_input() {
        let limits = DecodeLimits::default();
        assert_eq!(decode(&[], limits), Err(InspectError::Empty));
        assert_eq!(
            decode(b"hello world", limits),
            Err(InspectError::UnsupportedFormat)
        );
        let full = jpeg(64, 64);
        assert_eq!(
            decode(&full[..full.len() / 2], limits),
            Err(InspectError::Truncated)
        );
        assert!(decode(&full[..4], limits).is_err());
    }

    #[test]
    fn the_end_marker_tells_a_complete_jpeg_from_a_cut_one() {
        assert!(!is_truncated_jpeg(&[0xFF, 0xD8, 1, 2, 0xFF, 0xD9]));
        assert!(!is_truncated_jpeg(&[0xFF, 0xD8, 1, 2, 0xFF, 0xD9, 0, 0]));
        assert!(is_truncated_jpeg(&[0xFF, 0xD8, 1, 2, 3]));
        assert!(is_truncated_jpeg(&[0xFF, 0xD8]));
        assert!(!is_truncated_jpeg(b"PNG or anything else"));
    }

    #[test]
    fn refuses_images_over_the_pixel_limit_before_decoding() {
        let limits = DecodeLimits { max_pixels: 100 };
        assert_eq!(
            decode(&jpeg(20, 10), limits),
            Err(InspectError::TooManyPixels {
                width: 20,
                height: 10,
                max_pixels: 100
            })
        );
    }
}
