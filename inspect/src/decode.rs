//! Bytes to an [`Image`] (luma, and chroma where the file has colour), with a pixel limit
//! checked before any pixel is allocated.

use std::io::Cursor;

use image::{DynamicImage, ImageDecoder, ImageFormat, ImageReader};

use crate::{Gray, Image, InspectError};

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

/// Which planes a decode keeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Planes {
    /// Luma, and chroma where the file has colour.
    Colour,
    /// Luma alone, also from a colour file: what a model that reads no colour needs
    /// ([`crate::Model::planes`]). A colour JPEG's chroma is then never upsampled or
    /// converted, about half its decoding time.
    Luma,
}

/// Decodes JPEG, PNG, TIFF or BMP bytes (8 or 16 bit, grey or colour) to 8-bit-range luma,
/// with chroma when the file has colour, turned upright by the EXIF orientation when there is
/// one.
pub fn decode(bytes: &[u8], limits: DecodeLimits) -> Result<Image, InspectError> {
    decode_planes(bytes, limits, Planes::Colour)
}

/// [`decode`], keeping the chroma only when `planes` asks for it; the luma is the same either
/// way.
pub fn decode_planes(
    bytes: &[u8],
    limits: DecodeLimits,
    planes: Planes,
) -> Result<Image, InspectError> {
    let (width, height) = dimensions(bytes, limits)?;
    if image::guess_format(bytes).ok() == Some(ImageFormat::Jpeg)
        && let Some(img) = decode_jpeg(bytes, width, height, planes)
    {
        return Ok(img);
    }
    let img = upright(bytes, (width, height), limits)?;
    Ok(if img.color().has_color() {
        // The luma of a colour file is the analyzer's own (BT.601), whichever planes are kept.
        let rgb = img.to_rgb8();
        let (w, h) = (rgb.width() as usize, rgb.height() as usize);
        match planes {
            Planes::Colour => Image::from_rgb(w, h, rgb.as_raw()),
            Planes::Luma => Image::luma_from_rgb(w, h, rgb.as_raw()),
        }
    } else {
        Image::from(to_gray(&img))
    })
}

/// Decodes what [`decode`] accepts, within the same limits and turned upright the same way,
/// to 8-bit RGB (grey repeated): the picture as a person sees it, for re-encoding.
pub fn decode_rgb(bytes: &[u8], limits: DecodeLimits) -> Result<image::RgbImage, InspectError> {
    let size = dimensions(bytes, limits)?;
    Ok(upright(bytes, size, limits)?.to_rgb8())
}

/// The general path: any supported format, of the `size` [`dimensions`] checked, decoded in
/// its own colours and turned upright by its EXIF orientation.
fn upright(
    bytes: &[u8],
    (width, height): (u32, u32),
    limits: DecodeLimits,
) -> Result<DynamicImage, InspectError> {
    let mut reader = ImageReader::new(Cursor::new(bytes))
        .with_guessed_format()
        .map_err(|e| InspectError::Decode(e.to_string()))?;
    let mut image_limits = image::Limits::default();
    image_limits.max_image_width = Some(width);
    image_limits.max_image_height = Some(height);
    image_limits.max_alloc = Some(limits.max_pixels.saturating_mul(8));
    reader.limits(image_limits);
    let decode_error = |e: image::ImageError| InspectError::Decode(e.to_string());
    let mut decoder = reader.into_decoder().map_err(decode_error)?;
    // An unreadable orientation tag is no reason to refuse the picture: keep it as stored.
    let orientation = decoder.orientation().ok();
    let mut img = DynamicImage::from_decoder(decoder).map_err(decode_error)?;
    if let Some(orientation) = orientation {
        img.apply_orientation(orientation);
    }
    Ok(img)
}

/// Decodes the luma of what [`decode`] accepts, within the same limits and turned upright the
/// same way, box-reduced by `factor` ([`Gray::downscale`], to the bit), with the upright
/// full-resolution size: what a model that first reduces every image by `factor` reads. A JPEG
/// goes from its 8-bit luma plane straight to the reduced image; no full-resolution `f32`
/// image is made (at 1080p and a factor of 3: 2.9 MB held, the plane and the reduced image,
/// instead of 10).
pub fn decode_reduced(
    bytes: &[u8],
    limits: DecodeLimits,
    factor: usize,
) -> Result<(Gray, (usize, usize)), InspectError> {
    let (width, height) = dimensions(bytes, limits)?;
    if factor >= 2
        && image::guess_format(bytes).ok() == Some(ImageFormat::Jpeg)
        && let Some(DynamicImage::ImageLuma8(luma)) =
            jpeg_upright(bytes, width, height, Planes::Luma)
        && luma.width() as usize >= factor
        && luma.height() as usize >= factor
    {
        let (w, h) = (luma.width() as usize, luma.height() as usize);
        return Ok((crate::gray::box_reduce(luma.as_raw(), w, h, factor), (w, h)));
    }
    let luma = decode_planes(bytes, limits, Planes::Luma)?.luma;
    let size = (luma.width, luma.height);
    Ok((luma.downscale(factor), size))
}

/// The fast path for the common case, a colour or grey JPEG: decoded in its own colour space
/// (YCbCr or grey; no colour conversion), or to its luma plane alone. `None` where it does not
/// apply (CMYK, odd headers): the general path decodes those.
fn decode_jpeg(bytes: &[u8], width: u32, height: u32, planes: Planes) -> Option<Image> {
    let img = jpeg_upright(bytes, width, height, planes)?;
    let (w, h) = (img.width() as usize, img.height() as usize);
    Some(match img {
        DynamicImage::ImageRgb8(ycc) => Image::from_ycbcr(w, h, ycc.as_raw()),
        other => Image::from(to_gray(&other)),
    })
}

/// [`decode_jpeg`]'s pixels turned upright by the EXIF orientation: YCbCr triples in an RGB
/// buffer, or 8-bit luma.
fn jpeg_upright(bytes: &[u8], width: u32, height: u32, planes: Planes) -> Option<DynamicImage> {
    use zune_core::bytestream::ZCursor;
    use zune_core::colorspace::ColorSpace;
    use zune_core::options::DecoderOptions;
    let mut probe = zune_jpeg::JpegDecoder::new(ZCursor::new(bytes));
    probe.decode_headers().ok()?;
    let colour = match (probe.input_colorspace()?, planes) {
        (ColorSpace::YCbCr, Planes::Colour) => ColorSpace::YCbCr,
        (ColorSpace::YCbCr | ColorSpace::Luma, _) => ColorSpace::Luma,
        _ => return None,
    };
    let options = DecoderOptions::default()
        .jpeg_set_out_colorspace(colour)
        .set_max_width(width as usize)
        .set_max_height(height as usize);
    let mut decoder = zune_jpeg::JpegDecoder::new_with_options(ZCursor::new(bytes), options);
    let pixels = decoder.decode().ok()?;
    let orientation = ImageReader::with_format(Cursor::new(bytes), ImageFormat::Jpeg)
        .into_decoder()
        .ok()
        .and_then(|mut d| d.orientation().ok());
    // Orientation only moves pixels: YCbCr triples ride in an RGB buffer.
    let mut img = if colour == ColorSpace::YCbCr {
        DynamicImage::ImageRgb8(image::RgbImage::from_raw(width, height, pixels)?)
    } else {
        DynamicImage::ImageLuma8(image::GrayImage::from_raw(width, height, pixels)?)
    };
    if let Some(orientation) = orientation {
        img.apply_orientation(orientation);
    }
    Some(img)
}

/// An 8-bit-range grey image of any decoded image (an 8-bit grey one read in place, not
/// copied: at 1080p that copy is 2 MB per frame).
fn to_gray(img: &DynamicImage) -> Gray {
    let gray = |luma: &image::GrayImage| Gray {
        width: luma.width() as usize,
        height: luma.height() as usize,
        data: luma.as_raw().iter().map(|&v| f32::from(v)).collect(),
    };
    match img.as_luma8() {
        Some(luma) => gray(luma),
        None => gray(&img.to_luma8()),
    }
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
        let g = decode(&jpeg(40, 30), DecodeLimits::default()).unwrap().luma;
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
    fn sixteen_bit_png_is_scaled_to_the_eight_bit_range() {
        let img = image::ImageBuffer::<image::Luma<u16>, _>::from_fn(8, 4, |x, _| {
            image::Luma([if x < 4 { 0 } else { 65535 }])
        });
        let mut out = Vec::new();
        image::DynamicImage::ImageLuma16(img)
            .write_to(&mut Cursor::new(&mut out), ImageFormat::Png)
            .unwrap();
        let g = decode(&out, DecodeLimits::default()).unwrap().luma;
        assert_eq!((g.get(0, 0), g.get(7, 3)), (0.0, 255.0));
    }

    #[test]
    fn exif_orientation_turns_the_picture_upright() {
        // A 4x2 JPEG, bright on the left, tagged "rotate 90° clockwise" (orientation 6).
        let img =
            image::GrayImage::from_fn(16, 8, |x, _| image::Luma([if x < 8 { 250 } else { 5 }]));
        let mut plain = Vec::new();
        image::DynamicImage::ImageLuma8(img)
            .write_to(&mut Cursor::new(&mut plain), ImageFormat::Jpeg)
            .unwrap();
        // APP1 Exif segment: big-endian TIFF with one IFD entry, Orientation (0x0112) = 6.
        let tiff: [u8; 26] = [
            b'M', b'M', 0, 42, 0, 0, 0, 8, // header, IFD at 8
            0, 1, // one entry
            0x01, 0x12, 0, 3, 0, 0, 0, 1, 0, 6, 0, 0, // Orientation, SHORT, 1, value 6
            0, 0, 0, 0, // no next IFD
        ];
        let mut app1 = b"Exif\0\0".to_vec();
        app1.extend_from_slice(&tiff);
        let len = (app1.len() + 2) as u16;
        let mut tagged = vec![0xFF, 0xD8, 0xFF, 0xE1];
        tagged.extend_from_slice(&len.to_be_bytes());
        tagged.extend_from_slice(&app1);
        tagged.extend_from_slice(&plain[2..]);
        let g = decode(&tagged, DecodeLimits::default()).unwrap().luma;
        assert_eq!((g.width, g.height), (8, 16), "turned upright");
        let luma = decode_planes(&tagged, DecodeLimits::default(), Planes::Luma).unwrap();
        assert_eq!(luma.luma, g, "turned the same way when decoding luma alone");
        assert_eq!(
            decode_reduced(&tagged, DecodeLimits::default(), 2).unwrap(),
            (g.downscale(2), (8, 16)),
            "and when decoding it reduced"
        );
        assert!(
            g.get(4, 2) > 200.0 && g.get(4, 13) < 50.0,
            "the bright half is now on top"
        );
        // The RGB decode turns it the same way (see: issue #22, the remote model was sent the
        // picture as stored while the gate's regions were in its upright pixels).
        let rgb = decode_rgb(&tagged, DecodeLimits::default()).unwrap();
        assert_eq!((rgb.width(), rgb.height()), (8, 16), "turned upright");
        assert!(rgb.get_pixel(4, 2)[0] > 200 && rgb.get_pixel(4, 13)[0] < 50);
    }

    #[test]
    fn colour_files_keep_their_chroma_and_grey_ones_are_mono() {
        // Left half red, right half blue, as a JPEG and as a PNG.
        let img = image::RgbImage::from_fn(32, 16, |x, _| {
            image::Rgb(if x < 16 { [200, 30, 30] } else { [30, 30, 200] })
        });
        for format in [ImageFormat::Jpeg, ImageFormat::Png] {
            let mut out = Vec::new();
            image::DynamicImage::ImageRgb8(img.clone())
                .write_to(&mut Cursor::new(&mut out), format)
                .unwrap();
            let decoded = decode(&out, DecodeLimits::default()).unwrap();
            let luma = decode_planes(&out, DecodeLimits::default(), Planes::Luma).unwrap();
            assert_eq!(luma.luma, decoded.luma, "the same luma: {format:?}");
            assert!(luma.chroma.is_none(), "luma alone: {format:?}");
            let [cb, cr] = decoded.chroma.unwrap();
            assert_eq!((cr.width, cr.height), (16, 8), "{format:?}");
            assert!(
                cr.get(2, 4) > 50.0 && cb.get(2, 4) < -10.0,
                "red: {format:?}"
            );
            assert!(
                cb.get(13, 4) > 50.0 && cr.get(13, 4) < -10.0,
                "blue: {format:?}"
            );
        }
        assert!(
            decode(&jpeg(16, 16), DecodeLimits::default())
                .unwrap()
                .chroma
                .is_none()
        );
    }

    #[test]
    fn a_reduced_decode_is_the_full_decode_reduced_to_the_bit() {
        // Odd sizes (partial blocks dropped), colour and grey, JPEG and PNG; smaller than the
        // factor (the general path's resampling).
        let colour = image::RgbImage::from_fn(50, 31, |x, y| {
            image::Rgb([(x * 5) as u8, (y * 8) as u8, ((x + y) * 3) as u8])
        });
        let mut files = vec![jpeg(47, 29), jpeg(2, 2)];
        for format in [ImageFormat::Jpeg, ImageFormat::Png] {
            let mut out = Vec::new();
            image::DynamicImage::ImageRgb8(colour.clone())
                .write_to(&mut Cursor::new(&mut out), format)
                .unwrap();
            files.push(out);
        }
        let limits = DecodeLimits::default();
        for (i, file) in files.iter().enumerate() {
            let full = decode(file, limits).unwrap().luma;
            for factor in [1, 2, 3] {
                assert_eq!(
                    decode_reduced(file, limits, factor).unwrap(),
                    (full.downscale(factor), (full.width, full.height)),
                    "file {i}, factor {factor}"
                );
            }
        }
        assert_eq!(
            decode_reduced(&jpeg(20, 10), DecodeLimits { max_pixels: 100 }, 2),
            Err(InspectError::TooManyPixels {
                width: 20,
                height: 10,
                max_pixels: 100
            })
        );
    }

    /// JPEGs as cameras write them, made by Pillow from a drawn colour pattern of 97 × 61 (not
    /// a whole number of blocks): chroma subsampled 4:2:0 and 4:2:2, progressive, with restart
    /// markers, turned by EXIF (orientation 6), CMYK (the general path), grey.
    const CAMERA_JPEGS: [(&str, &[u8]); 7] = [
        ("4:2:0", include_bytes!("../tests/fixtures/colour-420.jpg")),
        ("4:2:2", include_bytes!("../tests/fixtures/colour-422.jpg")),
        (
            "progressive",
            include_bytes!("../tests/fixtures/colour-420-progressive.jpg"),
        ),
        (
            "restarts",
            include_bytes!("../tests/fixtures/colour-420-restart.jpg"),
        ),
        (
            "exif 6",
            include_bytes!("../tests/fixtures/colour-420-exif6.jpg"),
        ),
        ("cmyk", include_bytes!("../tests/fixtures/cmyk.jpg")),
        ("grey", include_bytes!("../tests/fixtures/grey.jpg")),
    ];

    #[test]
    fn camera_jpegs_give_the_same_luma_whichever_planes_and_scale_are_decoded() {
        let limits = DecodeLimits::default();
        for (name, file) in CAMERA_JPEGS {
            let full = decode(file, limits).unwrap();
            let upright = if name == "exif 6" { (61, 97) } else { (97, 61) };
            assert_eq!((full.width(), full.height()), upright, "{name}");
            assert_eq!(full.chroma.is_some(), name != "grey", "{name}");
            let luma = decode_planes(file, limits, Planes::Luma).unwrap();
            assert_eq!(luma.luma, full.luma, "{name}: luma alone");
            assert!(luma.chroma.is_none(), "{name}");
            for factor in [2, 3] {
                assert_eq!(
                    decode_reduced(file, limits, factor).unwrap(),
                    (full.luma.downscale(factor), upright),
                    "{name}: reduced by {factor}"
                );
            }
        }
    }

    #[test]
    fn refuses_images_over_the_pixel_limit_before_decoding() {
        let limits = DecodeLimits { max_pixels: 100 };
        let refused = InspectError::TooManyPixels {
            width: 20,
            height: 10,
            max_pixels: 100,
        };
        assert_eq!(decode(&jpeg(20, 10), limits), Err(refused.clone()));
        assert_eq!(decode_rgb(&jpeg(20, 10), limits), Err(refused));
    }
}
