//! Aligned parts (a knife on a belt or fixture, with a few millimetres and degrees of play):
//! each image is registered to a canonical frame, and the model holds per-location robust
//! statistics of two features there.
//!
//! - **Level**: the grey level after gain normalisation (the upper quartile of the part's levels
//!   is brought to a fixed value, so exposure and lamp ageing do not count as defects). Finds
//!   stains, rust, chips, missing rivets.
//! - **Cross-grain detail**: the level minus its robust mean along the part's long axis (41
//!   pixels, of levels clipped near a first mean). Brushed steel is ground along the blade, so
//!   each part's own streaks vanish here while scratches, cracks and pits, which run across the
//!   grain or are short, stay.
//!
//! Each feature's anomaly at a canonical pixel is the least `|x - median| / spread` over the
//! reference's locations within [`FEATURE_PLAY`] of it; the map is the larger of the two,
//! averaged over 3×3 so that single noisy pixels do not count.

use serde::{Deserialize, Serialize};

use crate::classify::{Evidence, Zone, classify};
use crate::regions::{Component, Region, elongation};
use crate::register::{Pose, flatten, register, warp};
use crate::stats::{median, median_spread, quantile};
use crate::{Gray, InspectError};

/// Part level that gain normalisation brings every image to.
const REFERENCE_LEVEL: f32 = 128.0;
/// The part level measured for the gain: the upper quartile of the part's pixels, which lies
/// in the blade's levels (the larger, brighter part) whatever the handle's share. The median
/// did not: on a paring knife, whose dark handle is about half the part, it lay between the
/// handle's and the blade's levels, and a dark blob on the blade moved it from one to the other,
/// so that the whole part looked brighter than good ones (synthetic paring knives, seed-99 set:
/// the top region of 4 of 16 rust blobs lay on the belt, 7 were typed rust; since, none on
/// the belt, 14 typed rust).
const GAIN_QUANTILE: f32 = 0.75;
/// Difference from the background (grey levels, normalised) that counts as part.
const PART_CONTRAST: f32 = 25.0;
/// Smallest per-pixel spread of each feature: sensor noise never goes below it.
const SPREAD_FLOOR: [f32; 2] = [4.0, 3.0];
/// The registration's residual play (canonical pixels) that the tolerance allows on edges, as
/// a variation model does: where the reference has a slope, a good part shifted by this much
/// differs by the slope times it, so a pixel's spread is at least that (see [`Channel::of`]).
/// A sub-pixel shift of a rivet rim or of the silhouette is then no defect, while a faint
/// stain on a flat blade, where the slope is nil, keeps the floor's tolerance.
const EDGE_PLAY: f32 = 0.25;
/// How far (canonical pixels: input pixels times the model's reduction, 3 at 1080p) a feature
/// of a good part may sit from where the good parts put it: a pixel is compared with the
/// reference at every location within this distance and keeps its least z-score
/// ([`Channel::z_within`]). A rivet or the handle's join placed a pixel or two off (a line's
/// tolerances) then matches the reference's rivet beside it, while a stain, a scratch or a
/// missing rivet on a flat area differs from every location around it. The price: a mark
/// within this distance of an edge of its own level, a chip or burr one pixel deep, and the
/// rim of a missing feature match the reference beside them; a missing feature is seen inside
/// its rim only, so one under about five pixels across (after the 3×3 average) hardly is.
const FEATURE_PLAY: usize = 1;
/// How far (a share either way) a part's size may differ from the reference's and still be
/// brought to it before the per-location comparison (parts nearer the camera, or made a little
/// larger, within a line's tolerances); a larger difference is left for the statistics to see.
const SCALE_TOLERANCE: f32 = 0.08;
/// The scale refinement's steps (a share) and how many either way (see
/// [`AlignedModel::refined`]): ±0.8%, twice the size estimate's error under exposure changes.
const SCALE_STEP: f32 = 0.004;
const SCALE_STEPS: i32 = 2;
/// z-scores are clipped here in the refinement's cost.
const REFINE_CLIP: f32 = 4.0;
/// A part lies either way up when both sides are seen among the good parts and every good
/// part's silhouette is lopsided across its axis beyond doubt: the size of its skewness over
/// [`HANDED_CLEAR`], or, with at least [`HANDED_MIN_PARTS`] good parts to read their scatter
/// off, at least [`HANDED_FLOOR`] and [`HANDED_SIGNIFICANCE`] robust spreads of the good
/// parts' sizes. The parts are then mirrored to one side before the comparison. One kind of
/// part scatters little about its own skewness under a line's nuisances (measured on 30
/// parts: chef's knife 0.32 to 0.34, paring knife 0.14 to 0.22 at twice a line's nuisances,
/// robust spread 0.015 at most), so its sign tells the side; a symmetric part's skewness
/// scatters about 0 and some good part comes near it, so it is not mirrored: which way it lies
/// cannot be told from its outline.
const HANDED_CLEAR: f32 = 0.2;
/// Fewest good parts whose scatter of skewness is read: a symmetric part, simulated (skewness
/// normal about 0 with a spread of 0.05 to 0.4, 100,000 draws each), passed the scatter test
/// up to 3.4% of the time with five good parts, 0.2% with eight and never with thirty.
const HANDED_MIN_PARTS: usize = 8;
/// A skewness under this never counts as lopsided, however tight the good parts' scatter.
const HANDED_FLOOR: f32 = 0.05;
/// How many robust spreads of the good parts' skewness sizes the least of them must reach.
const HANDED_SIGNIFICANCE: f32 = 4.0;
/// Half-length of the along-the-grain mean of the detail feature (canonical pixels).
const GRAIN_RADIUS: usize = 20;
/// The along-the-grain mean is taken of levels clipped to this far from a first mean, so a
/// defect barely moves it (no halo beside a dark spot).
const GRAIN_CLIP: f32 = 12.0;
/// Extra canonical pixels around the largest silhouette seen in fitting.
const MARGIN: f32 = 12.0;
/// Longest side the registration works at; larger images are reduced by an integer factor.
const WORKING_SIDE: usize = 800;

/// Per-location statistics of one feature, rounded to half floats (as they are stored).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Channel {
    #[serde(with = "crate::half_floats")]
    pub median: Vec<f32>,
    #[serde(with = "crate::half_floats")]
    pub spread: Vec<f32>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AlignedModel {
    /// Integer factor input images are reduced by before registration.
    pub downscale: usize,
    /// Canonical frame size.
    pub width: usize,
    pub height: usize,
    /// Background level (normalised).
    pub background: f32,
    /// Radius of gyration of the good parts' silhouettes (median, working pixels): every part
    /// is scaled to it (within [`SCALE_TOLERANCE`]) before the comparison.
    pub radius: f32,
    /// Whether the good parts lie either way up: parts are then mirrored to one side first.
    pub either_way: bool,
    /// Level, then cross-grain detail.
    pub channels: [Channel; 2],
    /// Canonical columns that belong to the handle (the darker end).
    pub handle_columns: Vec<bool>,
}

/// One image prepared for fitting or scoring: registered and turned into features.
pub struct Prepared {
    pub pose: Pose,
    /// Factor the gain normalisation applied.
    gain: f32,
    /// Level, then cross-grain detail (the order of [`AlignedModel::channels`]).
    features: [Gray; 2],
}

impl Prepared {
    fn level(&self) -> &Gray {
        &self.features[0]
    }
}

/// The reduction factor for images of this size.
pub fn downscale_for(img: &Gray) -> usize {
    img.width.max(img.height).div_ceil(WORKING_SIDE).max(1)
}

/// Registers an image and measures its pose, at the working resolution, after uneven light is
/// divided out ([`flatten`]); the flattened working image is what the part is compared on.
pub fn pose_of(img: &Gray, downscale: usize) -> Result<(Gray, Pose), InspectError> {
    pose_of_working(&img.downscale(downscale))
}

/// [`pose_of`] an image already at the working resolution.
fn pose_of_working(reduced: &Gray) -> Result<(Gray, Pose), InspectError> {
    let work = flatten(reduced);
    let pose = register(&work)?;
    Ok((work, pose))
}

/// How the good parts are brought to one size and one side: their median radius of gyration
/// and whether they lie either way up (see [`HANDED_FLOOR`]).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Normalisation {
    pub radius: f32,
    pub either_way: bool,
}

impl Normalisation {
    /// Learned from the good parts' poses.
    pub fn of(poses: &[Pose]) -> Normalisation {
        let mut radii: Vec<f32> = poses.iter().map(|p| p.radius).collect();
        // A skewness that is not a number tells no side.
        let mut sizes: Vec<f32> = poses
            .iter()
            .map(|p| p.handedness.abs())
            .map(|size| if size.is_finite() { size } else { 0.0 })
            .collect();
        let least = sizes.iter().copied().fold(f32::INFINITY, f32::min);
        let (_, spread) = median_spread(&mut sizes);
        let beyond_scatter = poses.len() >= HANDED_MIN_PARTS
            && least >= HANDED_FLOOR.max(HANDED_SIGNIFICANCE * spread);
        let handed = least > HANDED_CLEAR || beyond_scatter;
        let sides = |positive: bool| poses.iter().any(|p| (p.handedness > 0.0) == positive);
        Normalisation {
            radius: median(&mut radii),
            either_way: handed && sides(true) && sides(false),
        }
    }

    /// A registered pose brought to the reference size and side.
    pub fn apply(&self, pose: Pose) -> Pose {
        pose.scaled_to(self.radius, SCALE_TOLERANCE)
            .mirrored_if(self.either_way)
    }
}

/// The canonical frame size that holds every pose with a margin.
pub fn frame_for(poses: &[Pose]) -> (usize, usize) {
    let extents: Vec<(f32, f32)> = poses.iter().map(Pose::canonical_half_extent).collect();
    let half_length = extents.iter().map(|e| e.0).fold(0.0, f32::max);
    let half_width = extents.iter().map(|e| e.1).fold(0.0, f32::max);
    (
        (2.0 * (half_length + MARGIN)).ceil() as usize,
        (2.0 * (half_width + MARGIN)).ceil() as usize,
    )
}

/// Warps a registered image into the canonical frame and computes its features.
pub fn prepare(work: &Gray, pose: Pose, width: usize, height: usize) -> Prepared {
    let (level, gain) = level(work, &pose, width, height);
    let first = level.blur_x(GRAIN_RADIUS);
    let clipped = level.zip(&first, |v, m| v.clamp(m - GRAIN_CLIP, m + GRAIN_CLIP));
    let detail = level.zip(&clipped.blur_x(GRAIN_RADIUS), |a, b| a - b);
    Prepared {
        pose,
        gain,
        features: [level, detail],
    }
}

/// The gain-normalised level in the canonical frame, and the gain.
fn level(work: &Gray, pose: &Pose, width: usize, height: usize) -> (Gray, f32) {
    let canon = warp(work, pose, width, height);
    let mut part: Vec<f32> = canon
        .data
        .iter()
        .copied()
        .filter(|v| (v - pose.background).abs() > PART_CONTRAST)
        .collect();
    let level = quantile(&mut part, GAIN_QUANTILE);
    let gain = if level > 1.0 {
        REFERENCE_LEVEL / level
    } else {
        1.0
    };
    (canon.map(|v| v * gain), gain)
}

impl AlignedModel {
    /// Learns per-location statistics from prepared good images.
    pub fn learn(images: &[&Prepared], downscale: usize, norm: Normalisation) -> AlignedModel {
        let (width, height) = images
            .first()
            .map_or((1, 1), |p| (p.level().width, p.level().height));
        let channels = [0, 1].map(|c| {
            let values: Vec<&Gray> = images.iter().map(|p| &p.features[c]).collect();
            Channel::of(&values, width, height, SPREAD_FLOOR[c], EDGE_PLAY)
        });
        let mut backgrounds: Vec<f32> = images.iter().map(|p| p.pose.background * p.gain).collect();
        let background = median(&mut backgrounds);
        let handle_columns = handle_columns(&channels[0].median, width, height, background);
        AlignedModel {
            downscale,
            width,
            height,
            background,
            radius: norm.radius,
            either_way: norm.either_way,
            channels,
            handle_columns,
        }
    }

    /// Registers and prepares an input image for this model.
    pub fn prepare(&self, img: &Gray) -> Result<Prepared, InspectError> {
        self.prepare_reduced(&img.downscale(self.downscale))
    }

    /// [`AlignedModel::prepare`] of an image already reduced by the model's `downscale`
    /// ([`Gray::downscale`], or [`crate::decode::decode_reduced`] straight from the file).
    pub fn prepare_reduced(&self, reduced: &Gray) -> Result<Prepared, InspectError> {
        let (work, pose) = pose_of_working(reduced)?;
        let norm = Normalisation {
            radius: self.radius,
            either_way: self.either_way,
        };
        let pose = self.refined(&work, norm.apply(pose));
        Ok(prepare(&work, pose, self.width, self.height))
    }

    /// The pose with its scale refined against this model's reference: the silhouette's size
    /// moves a little with exposure (a darker part crosses the contrast threshold nearer its
    /// middle; ±0.4% under a ±30% gain), which at a knife's tip is a pixel. The level is
    /// compared at scales a few tenths of a percent apart around the pose's, and the scale
    /// where it departs least from the reference (mean z-score, clipped so a defect weighs
    /// no more than an edge) is interpolated between the best and its neighbours.
    pub fn refined(&self, work: &Gray, pose: Pose) -> Pose {
        let cost = |k: f32| {
            let mut p = pose;
            p.scale *= 1.0 + k * SCALE_STEP;
            let (level, _) = level(work, &p, self.width, self.height);
            self.channels[0].clipped_z_mean(&level)
        };
        let costs: Vec<f32> = (-SCALE_STEPS..=SCALE_STEPS)
            .map(|k| cost(k as f32))
            .collect();
        let best = costs
            .iter()
            .enumerate()
            .min_by(|a, b| a.1.total_cmp(b.1))
            .map_or(SCALE_STEPS as usize, |(i, _)| i);
        let offset = match (best.checked_sub(1), costs.get(best + 1)) {
            (Some(before), Some(&after)) => {
                let (a, b) = (costs[before], costs[best]);
                let curvature = a - 2.0 * b + after;
                if curvature > 0.0 {
                    (0.5 * (a - after) / curvature).clamp(-0.5, 0.5)
                } else {
                    0.0
                }
            }
            _ => 0.0,
        };
        let mut p = pose;
        p.scale *= 1.0 + (best as f32 - SCALE_STEPS as f32 + offset) * SCALE_STEP;
        p
    }

    /// The anomaly map in the canonical frame.
    pub fn anomaly(&self, p: &Prepared) -> Gray {
        let [level, detail] = [0, 1].map(|c| {
            self.channels[c]
                .z_within(&p.features[c], FEATURE_PLAY)
                .box_blur(1)
        });
        level.zip(&detail, f32::max)
    }

    /// Describes one anomalous component as a region of the `input` image (its width and
    /// height, at full resolution).
    pub(crate) fn region(&self, c: &Component, p: &Prepared, input: (usize, usize)) -> Region {
        let w = self.width;
        let (mut blade, mut handle) = (0usize, 0usize);
        let (mut missing, mut added) = (0usize, 0usize);
        let (mut u0, mut v0, mut u1, mut v1) = (usize::MAX, usize::MAX, 0usize, 0usize);
        let median = &self.channels[0].median;
        let level = p.level();
        let mut shifts: Vec<f32> = Vec::with_capacity(c.pixels.len());
        for &i in &c.pixels {
            let like_background = (level.data[i] - self.background).abs() <= PART_CONTRAST;
            match self.zone(i) {
                Zone::Background | Zone::Surface => added += usize::from(!like_background),
                part => {
                    missing += usize::from(like_background);
                    if part == Zone::Blade {
                        blade += 1;
                    } else {
                        handle += 1;
                    }
                }
            }
            shifts.push(level.data[i] - median[i]);
            let (u, v) = (i % w, i / w);
            (u0, v0, u1, v1) = (u0.min(u), v0.min(v), u1.max(u), v1.max(v));
        }
        let outside = c.pixels.len() - blade - handle;
        let zone = if outside > blade + handle {
            Zone::Background
        } else if handle > blade {
            Zone::Handle
        } else {
            Zone::Blade
        };
        let share = |part: usize, of: usize| part as f32 / of.max(1) as f32;
        let shift = shifts.iter().sum::<f32>() / c.pixels.len().max(1) as f32;
        let evidence = Evidence {
            zone,
            area: c.pixels.len(),
            elongation: elongation(&c.pixels, w),
            shift,
            dark_shift: quantile(&mut shifts, 0.1),
            missing_share: share(missing, blade + handle),
            outside_share: share(outside, c.pixels.len()),
            added_share: share(added, outside),
        };
        Region {
            bbox: self.image_box(&p.pose, (u0, v0, u1, v1), input),
            area: evidence.area,
            peak: c.peak,
            shift: evidence.shift,
            elongation: evidence.elongation,
            kind: classify(&evidence),
        }
    }

    fn zone(&self, i: usize) -> Zone {
        if (self.channels[0].median[i] - self.background).abs() <= PART_CONTRAST {
            Zone::Background
        } else if self.handle_columns[i % self.width] {
            Zone::Handle
        } else {
            Zone::Blade
        }
    }

    /// An anomaly map of this model (canonical) laid over the `width × height` input in which
    /// the part lay at `pose`; 0 outside the canonical frame.
    pub fn map_in_image(&self, map: &Gray, pose: &Pose, width: usize, height: usize) -> Gray {
        let s = self.downscale as f32;
        let (hw, hh) = (self.width as f32 / 2.0, self.height as f32 / 2.0);
        let (right, bottom) = ((map.width - 1) as f32, (map.height - 1) as f32);
        let mut out = Gray::new(width, height, 0.0);
        for y in 0..height {
            for x in 0..width {
                let (u, v) = pose.to_canonical(x as f32 / s, y as f32 / s);
                let (u, v) = (u + hw, v + hh);
                if (0.0..=right).contains(&u) && (0.0..=bottom).contains(&v) {
                    out.data[y * width + x] = map.sample_clamped(u, v);
                }
            }
        }
        out
    }

    /// The canonical box `(u0, v0, u1, v1)` (inclusive) as an axis-aligned box of the input.
    fn image_box(
        &self,
        pose: &Pose,
        (u0, v0, u1, v1): (usize, usize, usize, usize),
        (width, height): (usize, usize),
    ) -> [u32; 4] {
        let (hw, hh) = (self.width as f32 / 2.0, self.height as f32 / 2.0);
        let corners = [
            (u0 as f32, v0 as f32),
            (u1 as f32 + 1.0, v0 as f32),
            (u0 as f32, v1 as f32 + 1.0),
            (u1 as f32 + 1.0, v1 as f32 + 1.0),
        ];
        let (mut x0, mut y0, mut x1, mut y1) = (f32::MAX, f32::MAX, f32::MIN, f32::MIN);
        for (u, v) in corners {
            let (x, y) = pose.to_image(u - hw, v - hh);
            (x0, y0, x1, y1) = (x0.min(x), y0.min(y), x1.max(x), y1.max(y));
        }
        let s = self.downscale as f32;
        crate::regions::clamped_box([x0 * s, y0 * s, x1 * s, y1 * s], width, height)
    }
}

impl Channel {
    /// Per-pixel median and spread of images of one size; a pixel's spread is the largest of
    /// its 3×3 neighbourhood (edges move by sub-pixel amounts), at least `floor`, and at least
    /// the median's slope there times `edge_play` (pixels): the variation model's tolerance
    /// on edges, which a few good images may not have shown moving.
    pub(crate) fn of(
        images: &[&Gray],
        width: usize,
        height: usize,
        floor: f32,
        edge_play: f32,
    ) -> Channel {
        let n = width * height;
        let mut med = vec![0f32; n];
        let mut mad = Gray::new(width, height, 0.0);
        let mut column = Vec::with_capacity(images.len());
        for (i, (m_out, mad_out)) in med.iter_mut().zip(mad.data.iter_mut()).enumerate() {
            column.clear();
            column.extend(images.iter().map(|g| g.data[i]));
            let m = median(&mut column);
            for v in column.iter_mut() {
                *v = (*v - m).abs();
            }
            *m_out = crate::half_floats::rounded(m);
            *mad_out = 1.4826 * median(&mut column);
        }
        // A pixel next to an edge varies with sub-pixel registration: take the largest spread
        // of its 3x3 neighbourhood.
        let mut spread = vec![0f32; n];
        for y in 0..height {
            for x in 0..width {
                let mut s = floor.max(edge_play * slope(&med, width, height, x, y));
                for yy in y.saturating_sub(1)..(y + 2).min(height) {
                    for xx in x.saturating_sub(1)..(x + 2).min(width) {
                        s = s.max(mad.get(xx, yy));
                    }
                }
                spread[y * width + x] = crate::half_floats::rounded(s);
            }
        }
        Channel {
            median: med,
            spread,
        }
    }

    /// Whether a channel read from a file can judge `n` pixels: a median and a spread for
    /// each, every value finite and every spread positive (as [`Channel::of`] makes them with a
    /// positive floor), so that [`Channel::z`] and [`Channel::z_within`] stay finite.
    pub(crate) fn is_sound(&self, n: usize) -> bool {
        self.median.len() == n
            && self.spread.len() == n
            && self.median.iter().all(|m| m.is_finite())
            && self.spread.iter().all(|s| s.is_finite() && *s > 0.0)
    }

    /// The mean of `|x - median| / spread` over the pixels, each clipped at [`REFINE_CLIP`].
    fn clipped_z_mean(&self, x: &Gray) -> f32 {
        let sum: f32 = x
            .data
            .iter()
            .zip(&self.median)
            .zip(&self.spread)
            .map(|((x, m), s)| ((x - m).abs() / s).min(REFINE_CLIP))
            .sum();
        sum / x.data.len().max(1) as f32
    }

    /// Per pixel, the least `|x - median| / spread` over the reference's locations within
    /// `radius` (a square, clipped to the frame): a feature a little off its place matches
    /// the reference beside it. `radius` 0 is [`Channel::z`].
    pub(crate) fn z_within(&self, x: &Gray, radius: usize) -> Gray {
        let (w, h) = (x.width, x.height);
        debug_assert_eq!(self.median.len(), w * h, "the reference's frame");
        let mut out = Gray::new(w, h, 0.0);
        for y in 0..h {
            let rows = y.saturating_sub(radius)..(y + radius + 1).min(h);
            for xx in 0..w {
                let v = x.data[y * w + xx];
                let columns = xx.saturating_sub(radius)..(xx + radius + 1).min(w);
                out.data[y * w + xx] = rows
                    .clone()
                    .flat_map(|qy| columns.clone().map(move |qx| qy * w + qx))
                    .map(|i| (v - self.median[i]).abs() / self.spread[i])
                    .fold(f32::INFINITY, f32::min);
            }
        }
        out
    }

    /// `|x - median| / spread` per pixel.
    pub(crate) fn z(&self, x: &Gray) -> Gray {
        Gray {
            width: x.width,
            height: x.height,
            data: x
                .data
                .iter()
                .zip(&self.median)
                .zip(&self.spread)
                .map(|((x, m), s)| (x - m).abs() / s)
                .collect(),
        }
    }
}

/// The gradient magnitude of a `width × height` image at `(x, y)` (central differences,
/// one-sided at the border).
fn slope(img: &[f32], width: usize, height: usize, x: usize, y: usize) -> f32 {
    let at = |xx: usize, yy: usize| img[yy * width + xx];
    let (x0, x1) = (x.saturating_sub(1), (x + 1).min(width - 1));
    let (y0, y1) = (y.saturating_sub(1), (y + 1).min(height - 1));
    let gx = (at(x1, y) - at(x0, y)) / (x1 - x0).max(1) as f32;
    let gy = (at(x, y1) - at(x, y0)) / (y1 - y0).max(1) as f32;
    gx.hypot(gy)
}

/// Columns whose part pixels are on average darker than the background: the handle.
fn handle_columns(median: &[f32], width: usize, height: usize, background: f32) -> Vec<bool> {
    (0..width)
        .map(|u| {
            let (mut sum, mut n) = (0f32, 0usize);
            for v in 0..height {
                let m = median[v * width + u];
                if (m - background).abs() > PART_CONTRAST {
                    sum += m;
                    n += 1;
                }
            }
            n > 0 && sum / (n as f32) < background
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A 12 × 12 reference: a bright bar down column 5 on a flat level, spread 2 everywhere.
    fn reference() -> Channel {
        let median: Vec<f32> = (0..144)
            .map(|i| if i % 12 == 5 { 200.0 } else { 100.0 })
            .collect();
        Channel {
            median,
            spread: vec![2.0; 144],
        }
    }

    fn image(bar: usize, spot: Option<(usize, usize)>) -> Gray {
        let mut g = Gray::new(12, 12, 100.0);
        for y in 0..12 {
            g.data[y * 12 + bar] = 200.0;
        }
        if let Some((x, y)) = spot {
            g.data[y * 12 + x] = 140.0;
        }
        g
    }

    #[test]
    fn a_feature_a_pixel_off_matches_its_place_and_a_spot_does_not() {
        let c = reference();
        let moved = image(6, Some((2, 8)));
        assert_eq!(c.z_within(&moved, 0), c.z(&moved), "radius 0 is z");
        let z0 = c.z(&moved);
        let z1 = c.z_within(&moved, 1);
        // The bar moved by one pixel: 50 spreads off at radius 0, matched at radius 1.
        assert_eq!((z0.get(6, 3), z1.get(6, 3)), (50.0, 0.0));
        assert_eq!((z0.get(5, 3), z1.get(5, 3)), (50.0, 0.0));
        // A spot on the flat level differs from every location around it.
        assert_eq!((z0.get(2, 8), z1.get(2, 8)), (20.0, 20.0));
        // Two pixels off is beyond the play.
        let far = image(7, None);
        assert_eq!(c.z_within(&far, 1).get(7, 3), 50.0);
    }

    /// Good parts' poses with these skewnesses across the axis.
    fn lying(handedness: &[f32]) -> Vec<Pose> {
        handedness
            .iter()
            .map(|&handedness| Pose {
                cx: 0.0,
                cy: 0.0,
                angle: 0.0,
                background: 0.0,
                half_length: 100.0,
                half_width: 20.0,
                coverage: 0.1,
                border_spread: 1.0,
                radius: 50.0,
                scale: 1.0,
                handedness,
                mirrored: false,
            })
            .collect()
    }

    #[test]
    fn a_part_lopsided_beyond_its_scatter_lies_either_way_and_a_symmetric_one_never() {
        let either_way = |h: &[f32]| Normalisation::of(&lying(h)).either_way;
        // A paring knife's skewness (0.14 to 0.22 under twice a line's nuisances) and a chef's
        // knife's (0.32 to 0.34), either way up.
        let paring = [0.15, -0.16, 0.17, -0.15, 0.22, -0.19, 0.14, 0.16];
        assert!(either_way(&paring));
        assert!(either_way(&[0.33, -0.32, 0.34, -0.33, 0.32]));
        // Too few parts to read the scatter off: only a clear skewness counts.
        assert!(!either_way(&paring[..5]));
        // One side only: nothing to mirror.
        assert!(!either_way(&[
            0.15, 0.16, 0.17, 0.15, 0.22, 0.16, 0.17, 0.15
        ]));
        // A symmetric part: its skewness scatters about 0, wide or narrow.
        assert!(!either_way(&[
            0.01, -0.03, 0.02, -0.01, 0.04, -0.02, 0.0, 0.01
        ]));
        assert!(!either_way(&[
            0.3, -0.1, 0.2, -0.4, 0.05, -0.25, 0.15, -0.3
        ]));
        // Nearly symmetric, however tight: under the floor.
        assert!(!either_way(&[
            0.03, -0.031, 0.029, -0.03, 0.03, -0.03, 0.031, -0.029
        ]));
        // Lopsided, but scattered so that the least is within four spreads of none.
        assert!(!either_way(&[0.3, -0.1, 0.3, -0.5, 0.2, -0.4, 0.25, -0.3]));
        // A skewness that is not a number.
        assert!(!either_way(&[
            0.15,
            -0.16,
            0.17,
            f32::NAN,
            0.22,
            -0.19,
            0.14,
            0.16
        ]));
        assert!(!either_way(&[]));
    }
}
