//! An image as the analyzer sees it: luma at full resolution and, where the camera gives
//! colour, the two chroma planes at half resolution (as a JPEG stores them). Rust on paint,
//! a stain or a discoloured grinding mark is a change of hue more than of brightness; a mono
//! camera's frames carry luma only, and every method that needs no colour reads luma alone.

use crate::Gray;

/// Luma (BT.601, as JPEG's Y, 0..=255) at full resolution, and the blue and red differences
/// (JPEG's Cb and Cr less 128, so 0 is grey) averaged over 2×2 blocks: `(w/2, h/2)`, at least
/// 1×1; an odd last row or column joins the block before it.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Image {
    pub luma: Gray,
    pub chroma: Option<[Gray; 2]>,
}

impl From<Gray> for Image {
    /// A mono image.
    fn from(luma: Gray) -> Image {
        Image { luma, chroma: None }
    }
}

impl Image {
    pub fn width(&self) -> usize {
        self.luma.width
    }

    pub fn height(&self) -> usize {
        self.luma.height
    }

    /// The `width × height` part whose top-left pixel is `(x0, y0)`, clipped to the image
    /// (chroma: the blocks that cover it).
    pub fn crop(&self, x0: usize, y0: usize, width: usize, height: usize) -> Image {
        let luma = self.luma.crop(x0, y0, width, height);
        let (w, h) = (luma.width, luma.height);
        let chroma = self.chroma.as_ref().map(|planes| {
            planes.each_ref().map(|p| {
                let part = p.crop(x0 / 2, y0 / 2, (w / 2).max(1), (h / 2).max(1));
                if part.data.is_empty() {
                    Gray::new((w / 2).max(1), (h / 2).max(1), 0.0)
                } else {
                    part
                }
            })
        });
        Image { luma, chroma }
    }

    /// From interleaved 8-bit Y, Cb, Cr samples (a JPEG's own colour space).
    pub fn from_ycbcr(width: usize, height: usize, pixels: &[u8]) -> Image {
        Image::from_triples(width, height, pixels, |p| {
            (
                f32::from(p[0]),
                f32::from(p[1]) - 128.0,
                f32::from(p[2]) - 128.0,
            )
        })
    }

    /// From interleaved 8-bit R, G, B samples.
    pub fn from_rgb(width: usize, height: usize, pixels: &[u8]) -> Image {
        Image::from_triples(width, height, pixels, |p| {
            let (r, g, b) = (f32::from(p[0]), f32::from(p[1]), f32::from(p[2]));
            let y = bt601(r, g, b);
            (y, 0.564 * (b - y), 0.713 * (r - y))
        })
    }

    /// The luma [`Image::from_rgb`] gives of `width × height` samples, to the bit, without
    /// computing the chroma: a colour file read by a model that needs no colour.
    pub fn luma_from_rgb(width: usize, height: usize, pixels: &[u8]) -> Image {
        let mut luma = Gray::new(width, height, 0.0);
        for (v, p) in luma.data.iter_mut().zip(pixels.chunks_exact(3)) {
            *v = bt601(f32::from(p[0]), f32::from(p[1]), f32::from(p[2]));
        }
        Image::from(luma)
    }

    fn from_triples(
        width: usize,
        height: usize,
        pixels: &[u8],
        convert: impl Fn(&[u8]) -> (f32, f32, f32),
    ) -> Image {
        let mut luma = Gray::new(width, height, 0.0);
        let (cw, ch) = ((width / 2).max(1), (height / 2).max(1));
        let mut sums = [Gray::new(cw, ch, 0.0), Gray::new(cw, ch, 0.0)];
        let mut counts = vec![0u32; cw * ch];
        if width > 0 {
            let rows = pixels.chunks_exact(3 * width).take(height);
            for (y, row) in rows.enumerate() {
                let by = (y / 2).min(ch - 1) * cw;
                for (x, p) in row.chunks_exact(3).enumerate() {
                    let (l, cb, cr) = convert(p);
                    luma.data[y * width + x] = l;
                    let b = by + (x / 2).min(cw - 1);
                    sums[0].data[b] += cb;
                    sums[1].data[b] += cr;
                    counts[b] += 1;
                }
            }
        }
        for plane in &mut sums {
            for (v, &n) in plane.data.iter_mut().zip(&counts) {
                *v /= n.max(1) as f32;
            }
        }
        Image {
            luma,
            chroma: Some(sums),
        }
    }
}

/// Luma (BT.601) of one RGB sample.
fn bt601(r: f32, g: f32, b: f32) -> f32 {
    0.299 * r + 0.587 * g + 0.114 * b
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rgb_and_ycbcr_give_the_same_luma_and_chroma() {
        // A 3 × 3 image: red on the left column, grey elsewhere.
        let mut rgb = Vec::new();
        for _ in 0..3 {
            rgb.extend_from_slice(&[200, 30, 30, 128, 128, 128, 128, 128, 128]);
        }
        let img = Image::from_rgb(3, 3, &rgb);
        assert_eq!((img.width(), img.height()), (3, 3));
        let [cb, cr] = img.chroma.as_ref().unwrap();
        assert_eq!(
            (cb.width, cb.height),
            (1, 1),
            "an odd side joins the block before"
        );
        assert!(
            cr.data[0] > 20.0 && cb.data[0] < -5.0,
            "reddish: {cr:?} {cb:?}"
        );
        assert!((img.luma.get(1, 1) - 128.0).abs() < 0.01);
        // The same red in JPEG's YCbCr.
        let (y, cb8, cr8) = (81u8, 99u8, 213u8);
        let ycc = Image::from_ycbcr(1, 1, &[y, cb8, cr8]);
        let reds = Image::from_rgb(1, 1, &[200, 30, 30]);
        let (a, b) = (ycc.chroma.unwrap(), reds.chroma.unwrap());
        assert!((ycc.luma.data[0] - reds.luma.data[0]).abs() < 1.0);
        assert!((a[0].data[0] - b[0].data[0]).abs() < 1.5);
        assert!((a[1].data[0] - b[1].data[0]).abs() < 1.5);
    }

    #[test]
    fn the_luma_alone_is_the_colour_images_luma_to_the_bit() {
        let (w, h) = (5, 3);
        let rgb: Vec<u8> = (0..w * h * 3).map(|i| (i * 37 % 256) as u8).collect();
        let luma = Image::luma_from_rgb(w, h, &rgb);
        assert!(luma.chroma.is_none());
        assert_eq!(luma.luma, Image::from_rgb(w, h, &rgb).luma);
    }

    #[test]
    fn a_crop_keeps_the_chroma_of_its_part() {
        let mut rgb = Vec::new();
        for _ in 0..4 {
            for x in 0..8 {
                rgb.extend_from_slice(if x < 4 {
                    &[200, 30, 30]
                } else {
                    &[30, 30, 200]
                });
            }
        }
        let part = Image::from_rgb(8, 4, &rgb).crop(4, 0, 4, 4);
        assert_eq!((part.width(), part.height()), (4, 4));
        let [cb, cr] = part.chroma.unwrap();
        assert_eq!((cb.width, cb.height), (2, 2));
        assert!(cb.data.iter().all(|&v| v > 50.0) && cr.data.iter().all(|&v| v < 0.0));
    }

    #[test]
    fn a_grey_image_is_mono() {
        let img = Image::from(Gray::new(4, 2, 9.0));
        assert!(img.chroma.is_none());
        assert_eq!(img.luma.get(3, 1), 9.0);
    }
}
