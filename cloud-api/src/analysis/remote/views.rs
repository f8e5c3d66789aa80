//! What a request shows of a part: its [`View`]s (the whole frame, and with `image =
//! "regions"` a close-up of the gate's strongest region), planned from the frame's size alone
//! ([`Planner`]), so that a call's image tokens are known, and the call counted in the
//! deployment's budget, before any pixel is decoded; the pixels are decoded (upright, by
//! `wiko_inspect::decode::decode_rgb`) and encoded ([`encode`]) only once the call is to be
//! made.

use image::RgbImage;
use image::imageops::{self, FilterType};

use super::RemoteError;
use super::config::{Detail, ImageMode};

/// The side a low-detail image is seen at (gpt-4o-class models look at 512 × 512 at most):
/// a low-detail view is sent no larger.
pub const LOW_DETAIL_SIDE: u32 = 512;
/// The longer side of a close-up as sent, at most: one 512-px tile at high detail.
pub const CLOSE_UP_SIDE: u32 = 512;
/// The least a close-up shows of the frame per side, in the frame's pixels (a region of a few
/// pixels gets this much around it, as far as the frame allows).
pub const CLOSE_UP_MIN: u32 = 256;

/// One image of a request: the rectangle of the frame it shows, its size as sent and the
/// detail it is asked at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct View {
    /// `[x, y, width, height]` in pixels of the frame (upright).
    pub within: [u32; 4],
    pub width: u32,
    pub height: u32,
    pub detail: Detail,
}

impl View {
    /// The whole frame of `(width, height)`, its longer side at most `max_side` (and at most
    /// [`LOW_DETAIL_SIDE`] at low detail).
    pub fn whole((w, h): (u32, u32), max_side: u32, detail: Detail) -> View {
        let side = if detail == Detail::Low {
            max_side.min(LOW_DETAIL_SIDE)
        } else {
            max_side
        };
        let (width, height) = fit(w, h, side);
        View {
            within: [0, 0, w, h],
            width,
            height,
            detail,
        }
    }

    /// The surroundings of `region` in a frame of `(width, height)`: the region with its own
    /// width and height again on every side, at least [`CLOSE_UP_MIN`] a side, shifted to lie
    /// inside the frame; sent at high detail, its longer side at most `side`.
    pub fn close_up(region: [u32; 4], (w, h): (u32, u32), side: u32) -> View {
        let span = |at: u32, len: u32, frame: u32| {
            let want = len.saturating_mul(3).max(CLOSE_UP_MIN).min(frame);
            let centre = u64::from(at) + u64::from(len) / 2;
            let start = centre.saturating_sub(u64::from(want) / 2);
            // Within the frame: want ≤ frame, so the start fits in u32.
            (start.min(u64::from(frame - want)) as u32, want)
        };
        let (x, cw) = span(region[0], region[2], w);
        let (y, ch) = span(region[1], region[3], h);
        let (width, height) = fit(cw, ch, side);
        View {
            within: [x, y, cw, ch],
            width,
            height,
            detail: Detail::High,
        }
    }

    /// The tokens this image costs.
    pub fn tokens(&self) -> u64 {
        image_tokens(self.width, self.height, self.detail)
    }

    /// A box of the frame in pixels of this view as sent (the part inside it).
    pub fn from_frame(&self, [x, y, w, h]: [u32; 4]) -> [u32; 4] {
        let [vx, vy, vw, vh] = self.within;
        let sx = f64::from(self.width) / f64::from(vw.max(1));
        let sy = f64::from(self.height) / f64::from(vh.max(1));
        let s = |v: u32, f: f64| (f64::from(v) * f).round() as u32;
        let (x0, y0) = (x.clamp(vx, vx + vw), y.clamp(vy, vy + vh));
        let (x1, y1) = (
            x.saturating_add(w).clamp(vx, vx + vw),
            y.saturating_add(h).clamp(vy, vy + vh),
        );
        [
            s(x0 - vx, sx),
            s(y0 - vy, sy),
            s(x1 - x0, sx),
            s(y1 - y0, sy),
        ]
    }

    /// A box in pixels of this view as sent, in pixels of the frame (kept inside the view).
    pub fn to_frame(&self, [x, y, w, h]: [u32; 4]) -> [u32; 4] {
        let [vx, vy, vw, vh] = self.within;
        let sx = f64::from(vw) / f64::from(self.width.max(1));
        let sy = f64::from(vh) / f64::from(self.height.max(1));
        let s = |v: u32, f: f64, limit: u32| ((f64::from(v) * f).round() as u32).min(limit);
        let (fx, fy) = (s(x, sx, vw), s(y, sy, vh));
        [vx + fx, vy + fy, s(w, sx, vw - fx), s(h, sy, vh - fy)]
    }
}

/// `(w, h)` scaled so that its longer side is at most `max_side` (at least 1 pixel a side).
fn fit(w: u32, h: u32, max_side: u32) -> (u32, u32) {
    let longest = w.max(h);
    if longest <= max_side {
        return (w.max(1), h.max(1));
    }
    let scale = f64::from(max_side) / f64::from(longest);
    let s = |v: u32| ((f64::from(v) * scale).round() as u32).max(1);
    (s(w), s(h))
}

/// How a part's views are chosen (`image`, `detail`, `max_side_px`, and the gate's strongest
/// region).
#[derive(Debug, Clone, Copy)]
pub struct Planner {
    pub mode: ImageMode,
    pub detail: Detail,
    pub max_side: u32,
    /// The gate's strongest region, in pixels of the frame.
    pub top_region: Option<[u32; 4]>,
}

impl Planner {
    /// The views of a frame of `(width, height)`: the whole frame at `detail` (`frame`, or a
    /// part the gate found no region on); for `regions`, the whole frame at low detail and a
    /// close-up of the strongest region at high detail.
    pub fn views(&self, frame: (u32, u32)) -> Vec<View> {
        match (self.mode, self.top_region) {
            (ImageMode::Regions, Some(region)) => vec![
                View::whole(frame, self.max_side, Detail::Low),
                View::close_up(region, frame, self.max_side.min(CLOSE_UP_SIDE)),
            ],
            _ => vec![View::whole(frame, self.max_side, self.detail)],
        }
    }
}

/// Each view of `image` as a JPEG. CPU work: run it on the blocking pool.
pub fn encode(image: &RgbImage, views: &[View]) -> Result<Vec<Vec<u8>>, RemoteError> {
    views
        .iter()
        .map(|v| {
            let [x, y, w, h] = v.within;
            let shown = imageops::crop_imm(image, x, y, w, h);
            let pixels = if (w, h) == (v.width, v.height) {
                shown.to_image()
            } else {
                imageops::resize(&*shown, v.width, v.height, FilterType::Triangle)
            };
            let mut jpeg = Vec::new();
            image::codecs::jpeg::JpegEncoder::new_with_quality(&mut jpeg, 85)
                .encode_image(&pixels)
                .map_err(|e| RemoteError::Image(e.to_string()))?;
            Ok(jpeg)
        })
        .collect()
}

/// Tokens an image costs gpt-4o-class models: 85 at low detail; at high (and `auto`, counted
/// as high) 85 plus 170 per 512-px tile of the image fitted into 2048×2048, its short side
/// then scaled down to 768.
pub fn image_tokens(width: u32, height: u32, detail: Detail) -> u64 {
    if detail == Detail::Low {
        return 85;
    }
    let (mut w, mut h) = (f64::from(width.max(1)), f64::from(height.max(1)));
    let fit = (2048.0 / w.max(h)).min(1.0);
    (w, h) = (w * fit, h * fit);
    let short = (768.0 / w.min(h)).min(1.0);
    (w, h) = (w * short, h * short);
    let tiles = (w / 512.0).ceil() * (h / 512.0).ceil();
    85 + 170 * tiles as u64
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn image_tokens_follow_the_tile_formula() {
        assert_eq!(image_tokens(1920, 1080, Detail::Low), 85);
        assert_eq!(image_tokens(640, 480, Detail::High), 85 + 170 * 2);
        assert_eq!(image_tokens(1024, 576, Detail::High), 85 + 170 * 4);
        assert_eq!(image_tokens(1920, 1080, Detail::Auto), 85 + 170 * 6);
    }

    #[test]
    fn a_frame_is_planned_at_the_size_it_is_encoded_at() {
        let view = View::whole((1920, 1080), 1024, Detail::High);
        assert_eq!((view.width, view.height), (1024, 576));
        assert_eq!(view.tokens(), 85 + 170 * 4);
        let low = View::whole((1920, 1080), 1024, Detail::Low);
        assert_eq!(
            (low.width, low.height),
            (512, 288),
            "low detail sees no more"
        );
        let image = RgbImage::from_pixel(1920, 1080, image::Rgb([90, 90, 90]));
        let jpegs = encode(&image, &[view, low]).unwrap();
        for (jpeg, v) in jpegs.iter().zip([view, low]) {
            let sent = image::load_from_memory(jpeg).unwrap();
            assert_eq!((sent.width(), sent.height()), (v.width, v.height));
        }
    }

    #[test]
    fn a_close_up_surrounds_its_region_inside_the_frame() {
        // A 20 px pit mid-frame: 256 px around it, at full resolution.
        let pit = View::close_up([900, 500, 20, 20], (1920, 1080), CLOSE_UP_SIDE);
        assert_eq!(pit.within, [782, 382, 256, 256]);
        assert_eq!((pit.width, pit.height), (256, 256));
        assert_eq!(pit.tokens(), 85 + 170, "one tile");
        // A long scratch at the frame's edge: three times its size, shifted inside, scaled.
        let scratch = View::close_up([1700, 1000, 400, 60], (1920, 1080), CLOSE_UP_SIDE);
        assert_eq!(scratch.within, [720, 824, 1200, 256]);
        assert_eq!((scratch.width, scratch.height), (512, 109));
        // A frame smaller than the least close-up: the whole of it.
        let small = View::close_up([10, 10, 5, 5], (200, 100), CLOSE_UP_SIDE);
        assert_eq!(small.within, [0, 0, 200, 100]);
    }

    #[test]
    fn boxes_map_between_a_view_and_the_frame() {
        let close = View::close_up([1700, 1000, 400, 60], (1920, 1080), CLOSE_UP_SIDE);
        // The close-up is 1200 × 256 of the frame sent as 512 × 109.
        let [x, y, w, h] = close.to_frame([256, 50, 100, 20]);
        assert_eq!([x, y], [720 + 600, 824 + 117]);
        assert_eq!([w, h], [234, 47]);
        // Back again, within rounding.
        let back = close.from_frame([x, y, w, h]);
        assert!(
            back.iter()
                .zip([256, 50, 100, 20])
                .all(|(a, b)| a.abs_diff(b) <= 1),
            "{back:?}"
        );
        // A box running off the view is cut at its edge.
        assert_eq!(close.to_frame([500, 100, 50, 50])[2], 1200 - 1172);
        let whole = View::whole((1920, 1080), 1024, Detail::High);
        assert_eq!(whole.from_frame([960, 540, 192, 108]), [512, 288, 102, 58]);
    }

    #[test]
    fn regions_send_the_frame_at_low_detail_and_a_close_up_only_where_the_gate_found_one() {
        let mut planner = Planner {
            mode: ImageMode::Regions,
            detail: Detail::High,
            max_side: 1024,
            top_region: Some([900, 500, 20, 20]),
        };
        let views = planner.views((1920, 1080));
        assert_eq!(views.len(), 2);
        assert_eq!(views[0].detail, Detail::Low);
        assert_eq!(views[1].detail, Detail::High);
        assert_eq!(views.iter().map(View::tokens).sum::<u64>(), 85 + 255);
        planner.top_region = None;
        assert_eq!(
            planner.views((1920, 1080)),
            [View::whole((1920, 1080), 1024, Detail::High)]
        );
    }
}
