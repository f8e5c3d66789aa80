//! A fixed view: the camera and the fixture put every part in the same place (a machined
//! spindle under a fixed camera), so position carries meaning and no registration is needed.
//! The model holds per-pixel robust statistics (median, spread) of the normalised level at the
//! working scale; a pixel's anomaly is `|x - median| / spread`, averaged over 7×7.
//!
//! Whether a view is fixed is measured on the good images alone ([`view_is_fixed`]): their
//! per-pixel spread must be small against the spatial variation of their median image.

use serde::{Deserialize, Serialize};

use crate::aligned::Channel;
use crate::regions::{Component, Region, surface_region};
use crate::stats::{median, median_spread};
use crate::texture::{normalise, working_image};
use crate::{Gray, InspectError};

/// The shorter side of the working image (about; the reduction is by an integer factor).
const WORKING_SHORT_SIDE: usize = 256;
/// Smallest per-pixel spread, in units of the image's own spread.
const SPREAD_FLOOR: f32 = 0.05;
/// A view is fixed when the typical per-pixel spread of the good images is below this share
/// of the spatial spread of their median image (measured: a fixed spindle camera 0.09; a
/// commutator with play 2.1; random tile crops 0.78).
const FIXED_VIEW_RATIO: f32 = 0.35;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FixedModel {
    /// The good images' common size; every image is brought to it first.
    pub reference_size: (usize, usize),
    /// Integer factor the reference is reduced by.
    pub downscale: usize,
    pub level: Channel,
}

/// One image at the working scale.
pub struct Prepared {
    level: Gray,
    scale: (f32, f32),
}

/// The working reduction for a reference size.
pub fn downscale_for((w, h): (usize, usize)) -> usize {
    ((w.min(h) + WORKING_SHORT_SIDE / 2) / WORKING_SHORT_SIDE).max(1)
}

/// Brings an image to the reference size at the working scale, normalised.
pub fn prepare(
    img: &Gray,
    reference_size: (usize, usize),
    downscale: usize,
) -> Result<Prepared, InspectError> {
    if img.width < 4 || img.height < 4 {
        return Err(InspectError::NoPart);
    }
    let (rw, rh) = reference_size;
    let (tw, th) = ((rw / downscale).max(1), (rh / downscale).max(1));
    let (work, _) = working_image(img, downscale, Some(reference_size));
    // Another aspect ratio than the reference is still judged at the reference's place.
    let work = if (work.width, work.height) == (tw, th) {
        work
    } else {
        work.resize(tw, th)
    };
    let scale = (img.width as f32 / tw as f32, img.height as f32 / th as f32);
    Ok(Prepared {
        level: normalise(&work).box_blur(1),
        scale,
    })
}

/// Whether prepared good images show a fixed view (see [`FIXED_VIEW_RATIO`]).
pub fn view_is_fixed(images: &[&Prepared]) -> bool {
    let Some(first) = images.first() else {
        return false;
    };
    let (w, h) = (first.level.width, first.level.height);
    let levels: Vec<&Gray> = images.iter().map(|p| &p.level).collect();
    let stats = Channel::of(&levels, w, h, 0.0, 0.0);
    let mut spread = stats.spread.clone();
    let typical = median(&mut spread);
    let (_, spatial) = median_spread(&mut stats.median.clone());
    typical < FIXED_VIEW_RATIO * spatial
}

impl FixedModel {
    pub fn learn(
        images: &[&Prepared],
        reference_size: (usize, usize),
        downscale: usize,
    ) -> FixedModel {
        let (w, h) = images
            .first()
            .map_or((1, 1), |p| (p.level.width, p.level.height));
        let levels: Vec<&Gray> = images.iter().map(|p| &p.level).collect();
        FixedModel {
            reference_size,
            downscale,
            level: Channel::of(&levels, w, h, SPREAD_FLOOR, 0.0),
        }
    }

    pub fn prepare(&self, img: &Gray) -> Result<Prepared, InspectError> {
        prepare(img, self.reference_size, self.downscale)
    }

    /// The anomaly map at the working scale.
    pub fn anomaly(&self, p: &Prepared) -> Gray {
        self.level.z(&p.level).box_blur(3)
    }

    pub(crate) fn region(&self, c: &Component, p: &Prepared, input: &Gray) -> Region {
        surface_region(c, &p.level, p.scale, input)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Horizontal stripes that repeat in place, with noise; `spot` paints a dark disc.
    fn view(seed: u64, shift: usize, spot: Option<(usize, usize)>) -> Gray {
        let mut g = Gray::new(120, 80, 0.0);
        let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
        for y in 0..80usize {
            for x in 0..120usize {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                let noise = (state % 9) as f32 - 4.0;
                let stripe = if ((y + shift) / 6).is_multiple_of(2) {
                    60.0
                } else {
                    0.0
                };
                let mut v = 100.0 + stripe + noise;
                if let Some((sx, sy)) = spot
                    && x.abs_diff(sx) < 3
                    && y.abs_diff(sy) < 3
                {
                    v = 20.0;
                }
                g.set(x, y, v);
            }
        }
        g
    }

    fn prepared(images: &[Gray]) -> Vec<Prepared> {
        images
            .iter()
            .map(|g| prepare(g, (120, 80), 1).unwrap())
            .collect()
    }

    #[test]
    fn a_repeating_view_is_fixed_and_a_shifting_one_is_not() {
        let fixed: Vec<Gray> = (0..8).map(|i| view(i, 0, None)).collect();
        let moving: Vec<Gray> = (0..8).map(|i| view(i, i as usize * 2, None)).collect();
        let (a, b) = (prepared(&fixed), prepared(&moving));
        assert!(view_is_fixed(&a.iter().collect::<Vec<_>>()));
        assert!(!view_is_fixed(&b.iter().collect::<Vec<_>>()));
    }

    #[test]
    fn a_spot_stands_out_where_it_is() {
        let good = prepared(&(0..8).map(|i| view(i, 0, None)).collect::<Vec<_>>());
        let model = FixedModel::learn(&good.iter().collect::<Vec<_>>(), (120, 80), 1);
        let clean = model
            .anomaly(&model.prepare(&view(50, 0, None)).unwrap())
            .max();
        let map = model.anomaly(&model.prepare(&view(51, 0, Some((90, 40)))).unwrap());
        assert!(map.max() > 3.0 * clean, "{} vs {clean}", map.max());
        let peak = (0..map.data.len())
            .max_by(|&a, &b| map.data[a].total_cmp(&map.data[b]))
            .unwrap_or(0);
        assert!((peak % 120).abs_diff(90) <= 3 && (peak / 120).abs_diff(40) <= 3);
    }
}
