//! Raw camera pixels to JPEG, for the sources whose devices give uncompressed frames
//! (`genicam`, `v4l2`): grey, RGB and BGR are encoded as they are; an 8-bit Bayer mosaic is
//! given one colour per 2×2 tile; YUYV (4:2:2) and NV12 (4:2:0) are turned to RGB with the
//! BT.601 studio-swing matrix UVC cameras use. A camera that gives JPEG never comes here.

use image::codecs::jpeg::JpegEncoder;
use image::{ExtendedColorType, ImageEncoder};

use super::SourceError;

/// How the raw pixels of one frame are laid out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Layout {
    Mono8,
    Rgb8,
    Bgr8,
    /// 8-bit Bayer mosaic; the offset of the red pixel in the 2×2 tile (x, y).
    #[cfg_attr(not(feature = "genicam"), allow(dead_code))]
    Bayer8 {
        red: (usize, usize),
    },
    /// Y0 U Y1 V for each pair of pixels.
    #[cfg_attr(not(feature = "v4l2"), allow(dead_code))]
    Yuyv,
    /// A plane of Y, then a plane of interleaved U V at half resolution both ways.
    #[cfg_attr(not(feature = "v4l2"), allow(dead_code))]
    Nv12,
}

impl Layout {
    /// Bytes of a `width`×`height` frame.
    fn bytes(self, width: usize, height: usize) -> usize {
        let pixels = width * height;
        match self {
            Layout::Mono8 | Layout::Bayer8 { .. } => pixels,
            Layout::Rgb8 | Layout::Bgr8 => pixels * 3,
            Layout::Yuyv => width.div_ceil(2) * 4 * height,
            Layout::Nv12 => pixels + width.div_ceil(2) * 2 * height.div_ceil(2),
        }
    }
}

/// Encodes one frame of `layout` pixels to JPEG.
pub fn encode(
    layout: Layout,
    width: usize,
    height: usize,
    data: &[u8],
    quality: u8,
) -> Result<Vec<u8>, SourceError> {
    let needed = layout.bytes(width, height);
    if width == 0 || height == 0 || data.len() < needed {
        return Err(SourceError::Device(format!(
            "a {width}×{height} frame of {} bytes is short",
            data.len()
        )));
    }
    let data = &data[..needed];
    let (bytes, color): (std::borrow::Cow<'_, [u8]>, _) = match layout {
        Layout::Mono8 => (data.into(), ExtendedColorType::L8),
        Layout::Rgb8 => (data.into(), ExtendedColorType::Rgb8),
        Layout::Bgr8 => (
            data.chunks_exact(3)
                .flat_map(|p| [p[2], p[1], p[0]])
                .collect::<Vec<u8>>()
                .into(),
            ExtendedColorType::Rgb8,
        ),
        Layout::Bayer8 { red } => (
            debayer(width, height, data, red).into(),
            ExtendedColorType::Rgb8,
        ),
        Layout::Yuyv => (yuyv(width, height, data).into(), ExtendedColorType::Rgb8),
        Layout::Nv12 => (nv12(width, height, data).into(), ExtendedColorType::Rgb8),
    };
    let (w, h) = (
        u32::try_from(width).map_err(|_| SourceError::Device("frame too wide".into()))?,
        u32::try_from(height).map_err(|_| SourceError::Device("frame too tall".into()))?,
    );
    let mut jpeg = Vec::new();
    JpegEncoder::new_with_quality(&mut jpeg, quality)
        .write_image(&bytes, w, h, color)
        .map_err(|e| SourceError::Device(format!("encoding the JPEG: {e}")))?;
    Ok(jpeg)
}

/// A Bayer mosaic to RGB, one colour per 2×2 tile (red, the mean of the two greens, blue) given
/// to its four pixels: cheap, and sharp enough for the analyzer, which works on brightness.
fn debayer(width: usize, height: usize, mosaic: &[u8], red: (usize, usize)) -> Vec<u8> {
    let blue = (1 - red.0, 1 - red.1);
    let mut rgb = vec![0u8; width * height * 3];
    for ty in (0..height).step_by(2) {
        for tx in (0..width).step_by(2) {
            let at = |dx: usize, dy: usize| -> u16 {
                let x = (tx + dx).min(width - 1);
                let y = (ty + dy).min(height - 1);
                u16::from(mosaic[y * width + x])
            };
            let r = at(red.0, red.1) as u8;
            let b = at(blue.0, blue.1) as u8;
            let g = ((at(1 - red.0, red.1) + at(red.0, 1 - red.1)) / 2) as u8;
            for dy in 0..2 {
                for dx in 0..2 {
                    let (x, y) = (tx + dx, ty + dy);
                    if x < width && y < height {
                        let i = (y * width + x) * 3;
                        rgb[i..i + 3].copy_from_slice(&[r, g, b]);
                    }
                }
            }
        }
    }
    rgb
}

/// One pixel from BT.601 studio-swing Y′CbCr (Y 16..235, Cb and Cr 16..240), in fixed point.
fn rgb_of(y: u8, u: u8, v: u8) -> [u8; 3] {
    let c = (i32::from(y) - 16) * 298;
    let d = i32::from(u) - 128;
    let e = i32::from(v) - 128;
    let clamp = |x: i32| ((x + 128) >> 8).clamp(0, 255) as u8;
    [
        clamp(c + 409 * e),
        clamp(c - 100 * d - 208 * e),
        clamp(c + 516 * d),
    ]
}

fn yuyv(width: usize, height: usize, data: &[u8]) -> Vec<u8> {
    let stride = width.div_ceil(2) * 4;
    let mut rgb = Vec::with_capacity(width * height * 3);
    for row in data.chunks_exact(stride).take(height) {
        for (x, quad) in row.chunks_exact(4).enumerate() {
            let [y0, u, y1, v] = [quad[0], quad[1], quad[2], quad[3]];
            rgb.extend_from_slice(&rgb_of(y0, u, v));
            if 2 * x + 1 < width {
                rgb.extend_from_slice(&rgb_of(y1, u, v));
            }
        }
    }
    rgb
}

fn nv12(width: usize, height: usize, data: &[u8]) -> Vec<u8> {
    let (luma, chroma) = data.split_at(width * height);
    let chroma_stride = width.div_ceil(2) * 2;
    let mut rgb = Vec::with_capacity(width * height * 3);
    for y in 0..height {
        for x in 0..width {
            let c = (y / 2) * chroma_stride + (x / 2) * 2;
            rgb.extend_from_slice(&rgb_of(luma[y * width + x], chroma[c], chroma[c + 1]));
        }
    }
    rgb
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn decoded(jpeg: &[u8]) -> image::RgbImage {
        image::load_from_memory(jpeg).unwrap().to_rgb8()
    }

    fn near(a: [u8; 3], b: [u8; 3]) -> bool {
        a.iter().zip(b).all(|(x, y)| x.abs_diff(y) <= 12)
    }

    #[test]
    fn mono_rgb_and_bgr_frames_become_jpegs_of_their_size() {
        for (layout, bpp) in [(Layout::Mono8, 1), (Layout::Rgb8, 3), (Layout::Bgr8, 3)] {
            let data = vec![128u8; 64 * 48 * bpp];
            let jpeg = encode(layout, 64, 48, &data, 90).unwrap();
            let img = image::load_from_memory(&jpeg).unwrap();
            assert_eq!((img.width(), img.height()), (64, 48), "{layout:?}");
        }
        assert!(encode(Layout::Mono8, 64, 48, &[0; 10], 90).is_err());
    }

    #[test]
    fn a_bayer_tile_gives_its_colours_to_its_four_pixels() {
        // RGGB: red 200, greens 100 and 50, blue 10.
        let mosaic = [200, 100, 50, 10];
        assert_eq!(debayer(2, 2, &mosaic, (0, 0)), [200, 75, 10].repeat(4));
        // BGGR: the same bytes read the other way round.
        assert_eq!(debayer(2, 2, &mosaic, (1, 1)), [10, 75, 200].repeat(4));
        // Odd sizes reuse the last row and column.
        assert_eq!(debayer(3, 1, &[200, 100, 50], (0, 0)).len(), 9);
    }

    #[test]
    fn bt601_white_black_and_primaries() {
        assert_eq!(rgb_of(235, 128, 128), [255, 255, 255]);
        assert_eq!(rgb_of(16, 128, 128), [0, 0, 0]);
        // Studio-swing red, green, blue (Y′CbCr of BT.601).
        assert!(
            near(rgb_of(81, 90, 240), [255, 0, 0]),
            "{:?}",
            rgb_of(81, 90, 240)
        );
        assert!(
            near(rgb_of(145, 54, 34), [0, 255, 0]),
            "{:?}",
            rgb_of(145, 54, 34)
        );
        assert!(
            near(rgb_of(41, 240, 110), [0, 0, 255]),
            "{:?}",
            rgb_of(41, 240, 110)
        );
    }

    #[test]
    fn yuyv_and_nv12_frames_keep_their_colours_through_the_jpeg() {
        // 16×16: left half red, right half blue.
        let (w, h) = (16, 16);
        let (red, blue) = ((81u8, 90u8, 240u8), (41u8, 240u8, 110u8));
        let side = |x: usize| if x < w / 2 { red } else { blue };
        let mut packed = Vec::new();
        for _ in 0..h {
            for x in (0..w).step_by(2) {
                let (y, u, v) = side(x);
                packed.extend_from_slice(&[y, u, y, v]);
            }
        }
        let mut planar: Vec<u8> = (0..h).flat_map(|_| (0..w).map(|x| side(x).0)).collect();
        for _ in 0..h / 2 {
            for x in (0..w).step_by(2) {
                let (_, u, v) = side(x);
                planar.extend_from_slice(&[u, v]);
            }
        }
        for (layout, data) in [(Layout::Yuyv, packed), (Layout::Nv12, planar)] {
            let img = decoded(&encode(layout, w, h, &data, 95).unwrap());
            assert_eq!(img.dimensions(), (16, 16), "{layout:?}");
            assert!(
                near(img.get_pixel(2, 8).0, [255, 0, 0]),
                "{layout:?} {:?}",
                img.get_pixel(2, 8)
            );
            assert!(
                near(img.get_pixel(13, 8).0, [0, 0, 255]),
                "{layout:?} {:?}",
                img.get_pixel(13, 8)
            );
            assert!(encode(layout, w, h, &data[..data.len() - 1], 95).is_err());
        }
    }
}
