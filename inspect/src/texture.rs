//! Textured surfaces where position carries no meaning (a ground tile, a rolled strip, a
//! commutator seen with play): the model is how strongly lines, steps, wavy paths and long
//! boundaries of each orientation stand out of good surfaces, learned position-free from good
//! images.
//!
//! 1. The image is brought to a working scale (reduced by an integer factor so that its shorter
//!    side is about 250 pixels), lightly smoothed (3×3), its shading removed (minus a 33-pixel
//!    triple box blur, about a Gaussian of σ 16) and divided by its own robust spread: exposure,
//!    illumination gradients and contrast do not count.
//! 2. A bank of line detectors ([`Responses`]): per orientation (0°, 45°, 90°, 135°) the mean level
//!    along a 31-step line through each pixel; the response at a cross offset of 2 or 3 steps is
//!    the mean of the two parallel lines at ± the offset minus the central line. It is positive on
//!    a dark line (a crack, a scratch, a row of pits) and negative on a bright one; a compact pit
//!    answers too, more weakly.
//! 3. Step detectors: per orientation, the mean level of a 7 × 7 box on one side of the pixel minus
//!    that of the box on the other side (centres 4 pixels either side, across the orientation), on
//!    the smoothed image with its shading kept, in units of its robust spread: a pore, a broken
//!    edge or frayed grinding is a step the thin lines miss.
//! 4. Path detectors ([`paths`]): the dark (and the bright) contrast of each pixel across a path,
//!    summed along the best wavy path through it, along the rows and along the columns: a long
//!    faint crack that bends off any straight line stands out of grain that is dark only in short
//!    pieces.
//! 5. Boundary detectors ([`boundaries`]): the step across the rows (and across the columns)
//!    averaged along a straight line of about 120 pixels, a few degrees either way: where a ground
//!    surface was ground unevenly, a band ends in a faint straight boundary across the grinding
//!    marks. Only boundaries across the good surfaces' grain count (the [`Grain`], learned when
//!    fitting): along it, long straight steps are the marks themselves.
//! 6. Beside a glare (a clipped highlight, [`glare`]), within the shading blur's reach, dark
//!    responses (dark lines, dark paths) are dropped: the clipped area pulls the shading up, so the
//!    surface around it looks darker than it is. Bright responses still count.
//! 7. Fitting keeps, per channel (each line orientation × offset, each step orientation, each path
//!    axis and polarity, each boundary axis), the median response of good pixels and its distance
//!    to a low and a high percentile (the bright and the dark tail; 1st and 99th for lines, 0.3rd
//!    and 99.7th for the others, which good surfaces' shading and edges make heavier), pooled over
//!    a sample of the pixels of every good image. Then, per family of detectors (lines, steps,
//!    paths, boundaries), a unit: the median over the good images of the family's largest excess
//!    over its tails. Every family reaches past its pixel tails somewhere in every good image, some
//!    much further than others; counted in units of their good images' typical maximum, the
//!    families have the same say (on four splits of the good images, adding the paths so counted
//!    lifted KolektorSDD's mean AUROC 0.917 → 0.962 and the magnetic tiles' 0.770 → 0.827; dark
//!    paths alone added without units changed neither: 0.916, 0.770).
//! 8. A pixel's anomaly is its largest excess in its family's units, over channels and both
//!    polarities (paths: their own polarity only), floored at 0; pixels within the detectors' reach
//!    of the border are 0 (a boundary's step reads nothing from the band beside it either). A line
//!    counts as far as it stands out at both cross offsets in the same polarity (the smaller of
//!    the two): a response only one width sees is mostly the texture's own grain (on four splits
//!    of the good images, AUROC +0.024 on magnetic tiles, +0.007 on KolektorSDD).
//! 9. The image score is the map's maximum. Fitting and its cross-scoring keep a [`Summary`] per
//!    image, not the responses: a pixel sample, the other channels' extremes and, per line
//!    orientation, the Pareto front of its two offsets' responses, on which the best agreement
//!    lies. A region is boxed on its core, the pixels of the component's strong part whose own
//!    level stands out: a line answers along its whole length, up to half a line beyond the mark,
//!    and a path bends towards a crack from beside it.

use serde::{Deserialize, Serialize};

use crate::boundaries::{self, Grain, gradient_energy};
use crate::regions::{Component, Region, surface_region};
use crate::stats::{self, median_spread, quantile};
use crate::{Gray, InspectError, glare, paths};

/// Line orientations, as one step along the line `(dx, dy)` (image y points down).
const DIRECTIONS: [(isize, isize); 4] = [(1, 0), (1, 1), (0, 1), (-1, 1)];
/// Cross offsets of the parallel lines, in steps across the line. A line counts as far as it
/// stands out at both (the channels of one orientation are `2 × orientation` and the next).
const OFFSETS: [usize; 2] = [2, 3];
const LINE_CHANNELS: usize = DIRECTIONS.len() * OFFSETS.len();
/// One step channel per orientation, after the line channels.
const STEP_CHANNELS: usize = DIRECTIONS.len();
/// Path channels after the step channels: dark paths along the rows and along the columns,
/// then bright ones.
const PATH_CHANNELS: usize = 4;
const PATHS_FROM: usize = LINE_CHANNELS + STEP_CHANNELS;
const DARK_PATHS: std::ops::Range<usize> = PATHS_FROM..PATHS_FROM + 2;
/// Boundary channels after the path channels: boundaries along the rows, along the columns.
const BOUNDARIES_FROM: usize = PATHS_FROM + PATH_CHANNELS;
const CHANNELS: usize = BOUNDARIES_FROM + 2;
/// Families of detectors, each counted in its own unit: lines, steps, paths, boundaries.
const FAMILIES: usize = 4;
const LINES: usize = 0;
const STEPS: usize = 1;
const PATHS: usize = 2;
const BOUNDARIES: usize = 3;
/// Steps from the centre to each end of a line (31 steps in all).
const HALF_LENGTH: usize = 15;
/// Pixels this close to the border are not judged: their lines would leave the image.
const MARGIN: usize = HALF_LENGTH + 3;
/// Radius of the boxes a step compares; their centres lie one more pixel either side.
const STEP_RADIUS: usize = 3;
/// Radius of the box blur run three times to estimate the shading.
const SHADING_RADIUS: usize = 16;
/// The share of good pixels a channel's tail leaves beyond it, on each side: the 1st and 99th
/// percentiles are stable with ten good images, the extreme ones are not (measured on the real
/// surfaces: 1e-4 gave KolektorSDD an AUROC 0.90 on average over four splits, 1e-2 0.935).
const TAIL: f32 = 0.01;
/// The same for the step channels, whose tails good surfaces' own edges and shading make
/// heavier: 1e-2 lifted the magnetic tiles' AUROC most but cost KolektorSDD 0.03; 3e-3 lifts
/// the tiles 0.04 to 0.06 and costs KolektorSDD nothing (prototype, four splits). The path
/// and boundary channels use it too (their figures were measured so).
const STEP_TAIL: f32 = 0.003;
/// At most this many pixels per channel are sampled from each good image.
const SAMPLES_PER_IMAGE: usize = 8_192;
/// Smallest family unit: a family is never counted in less than its own tails (good images
/// reach past their 1% tails almost everywhere, so this binds only on degenerate images).
const MIN_UNIT: f32 = 1.0;
/// Smallest tail width, in units of the image's robust spread.
const TAIL_FLOOR: f32 = 0.05;
/// Largest working image of a reference size a model file may hold: more than any image under
/// the default decode limit (40 megapixels) makes.
const MAX_WORKING_PIXELS: usize = 1 << 26;
/// Largest statistic a model file may hold. Levels are counted in the image's spread (at least
/// one grey level) and steps in their own (at least 0.5), so no response reaches a thousand; a
/// larger value is damage (and could make an anomaly infinite).
const MAX_STATISTIC: f32 = 1.0e4;
/// A region's core: its pixels at least this share of its strongest level, in the same
/// polarity.
const CORE_SHARE: f32 = 0.5;
/// The shorter side of the working image (about; the reduction is by an integer factor).
const WORKING_SHORT_SIDE: usize = 250;
/// Smallest robust spread of an image's levels used for normalisation (grey levels).
const MIN_LEVEL_SPREAD: f32 = 2.0;
/// Smallest robust spread of an image's detail (shading removed) used for normalisation.
const MIN_DETAIL_SPREAD: f32 = 1.0;
/// Aspect ratios this close (relative) count as the same field of view.
const SAME_ASPECT: f32 = 0.05;
/// Good images whose sizes are all this close (relative) to their median share one size.
const SAME_SIZE: f32 = 0.02;

type PerChannel = [f32; CHANNELS];

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TextureModel {
    /// Integer factor input images are reduced by.
    pub downscale: usize,
    /// When every good image had this size, an image of the same aspect ratio but another
    /// size is resized to it first (same field of view at another resolution); otherwise images
    /// are taken at the good images' pixel scale.
    pub reference_size: Option<(usize, usize)>,
    /// Per channel: the median response of good pixels.
    pub median: PerChannel,
    /// Per channel: distance from the median to the upper (dark-line) and the lower
    /// (bright-line) tail quantile of good pixels; positive.
    pub dark_tail: PerChannel,
    pub bright_tail: PerChannel,
    /// Which way good surfaces' marks run: the boundaries across them are judged.
    pub grain: Grain,
    /// Per family of detectors (lines, steps, paths, boundaries): the median over the good
    /// images of their largest excess, the unit the family's excess is counted in. Every family
    /// reaches beyond its pixel tails somewhere in every good image, some further than others
    /// (more channels, heavier tails); counted in its good images' typical maximum, each family
    /// has the same say in the image score.
    pub unit: [f32; FAMILIES],
}

/// One image at the working scale with its line responses, channel by channel.
pub struct Responses {
    width: usize,
    height: usize,
    /// Normalised level (smoothed, shading removed) per pixel.
    level: Gray,
    /// Per channel, the response of each pixel; only the judged pixels (not within [`MARGIN`]
    /// of the border) are read.
    channels: Vec<Gray>,
    /// Input pixels per working pixel, horizontally and vertically.
    scale: (f32, f32),
}

/// What fitting needs of one good image: a sample of each channel's responses, and what the
/// image score needs over the judged pixels: the extremes of each channel but the lines' and,
/// per line orientation, the pixels whose responses at the two offsets no other pixel's exceed
/// at both (the dark front) or undercut at both (the bright front).
pub struct Summary {
    samples: Vec<Vec<f32>>,
    /// Highest and lowest response of each channel from the steps on.
    highest: Vec<f32>,
    lowest: Vec<f32>,
    line_fronts: Vec<[Vec<(f32, f32)>; 2]>,
}

/// The working geometry for a set of good images: reduction factor and reference size.
pub fn geometry(images: &[&Gray]) -> (usize, Option<(usize, usize)>) {
    let (w, h) = median_size(images);
    let close = |a: usize, b: usize| (a as f32 - b as f32).abs() <= SAME_SIZE * b as f32;
    let same = images
        .iter()
        .all(|g| close(g.width, w) && close(g.height, h));
    let downscale = ((w.min(h) + WORKING_SHORT_SIDE / 2) / WORKING_SHORT_SIDE).max(1);
    (downscale, same.then_some((w, h)))
}

/// The median width and height of a set of images (at least 1 × 1).
pub fn median_size(images: &[&Gray]) -> (usize, usize) {
    let mut widths: Vec<f32> = images.iter().map(|g| g.width as f32).collect();
    let mut heights: Vec<f32> = images.iter().map(|g| g.height as f32).collect();
    (
        (stats::median(&mut widths) as usize).max(1),
        (stats::median(&mut heights) as usize).max(1),
    )
}

/// Brings an image to the working scale: an image of the reference's aspect ratio but another
/// size is resized to the reference (same view, other resolution), any other is reduced by
/// `downscale`. Also returns the input pixels per working pixel.
pub fn working_image(
    img: &Gray,
    downscale: usize,
    reference_size: Option<(usize, usize)>,
) -> (Gray, (f32, f32)) {
    let work = match reference_size {
        Some((rw, rh))
            if (img.width, img.height) != (rw, rh)
                && ((img.width as f32 / img.height as f32) / (rw as f32 / rh as f32) - 1.0)
                    .abs()
                    <= SAME_ASPECT =>
        {
            let (tw, th) = ((rw / downscale).max(1), (rh / downscale).max(1));
            img.downscale((img.width / tw).max(1)).resize(tw, th)
        }
        _ => img.downscale(downscale),
    };
    let scale = (
        img.width as f32 / work.width as f32,
        img.height as f32 / work.height as f32,
    );
    (work, scale)
}

/// Levels relative to the image's own median, in units of its robust spread: exposure and
/// contrast changes between images do not count.
pub fn normalise(work: &Gray) -> Gray {
    relative_to_spread(work, MIN_LEVEL_SPREAD)
}

/// Levels relative to the image's median, in units of its robust spread (at least `floor`).
fn relative_to_spread(g: &Gray, floor: f32) -> Gray {
    let mut sample: Vec<f32> = g.data.iter().step_by(7).copied().collect();
    let (m, s) = median_spread(&mut sample);
    let s = s.max(floor);
    g.map(|v| (v - m) / s)
}

/// An image at the working scale ([`working_image`]), large enough for the detectors.
pub struct Working {
    image: Gray,
    /// Input pixels per working pixel, horizontally and vertically.
    scale: (f32, f32),
}

/// Brings an image to the working scale; an image too small for the detectors is an error.
pub fn working(
    img: &Gray,
    downscale: usize,
    reference_size: Option<(usize, usize)>,
) -> Result<Working, InspectError> {
    let (image, scale) = working_image(img, downscale, reference_size);
    if image.width <= 2 * MARGIN || image.height <= 2 * MARGIN {
        return Err(InspectError::TooSmall {
            width: img.width,
            height: img.height,
            min: (2 * MARGIN + 1) * downscale,
        });
    }
    Ok(Working { image, scale })
}

/// The grain of a set of good images at the working scale: their summed gradient energy
/// (after the same light smoothing as [`prepare`]'s), across the columns against across the
/// rows.
pub fn grain(images: &[Working]) -> Grain {
    let (across_columns, across_rows) = images.iter().fold((0f64, 0f64), |(c, r), w| {
        let (dc, dr) = gradient_energy(&w.image.box_blur(1));
        (c + f64::from(dc), r + f64::from(dr))
    });
    Grain::of(across_columns, across_rows)
}

/// Runs the line, step, path and boundary detectors over an image at the working scale (the
/// boundaries only across `grain`: the other axis's channel is 0).
pub fn prepare(working: &Working, grain: Grain) -> Responses {
    let Working { image: work, scale } = working;
    let smooth = work.box_blur(1);
    let level = flatten(&smooth);
    let mut channels: Vec<Gray> = DIRECTIONS
        .iter()
        .flat_map(|&direction| {
            let along = line_mean(&level, direction);
            OFFSETS.map(|offset| across(&along, direction, offset))
        })
        .collect();
    let boxes = normalise(&smooth).box_blur(STEP_RADIUS);
    channels.extend(DIRECTIONS.iter().map(|&d| across_step(&boxes, d)));
    channels.extend(paths::paths(&level));
    channels.extend(boundaries::boundaries(&smooth, MARGIN, grain));
    if let Some(zone) = glare::beside_glare(work, SHADING_RADIUS) {
        drop_dark_responses(&mut channels, &zone);
    }
    Responses {
        width: level.width,
        height: level.height,
        level,
        channels,
        scale: *scale,
    }
}

/// Drops the dark responses (a line's positive response, a dark path's) of the pixels in
/// `zone`: beside a glare, darkness is not evidence ([`glare`]).
fn drop_dark_responses(channels: &mut [Gray], zone: &[bool]) {
    for (c, channel) in channels.iter_mut().enumerate() {
        if c < LINE_CHANNELS || DARK_PATHS.contains(&c) {
            for (v, _) in channel
                .data
                .iter_mut()
                .zip(zone)
                .filter(|(_, beside)| **beside)
            {
                *v = v.min(0.0);
            }
        }
    }
}

/// Shading removed from the (lightly smoothed) working image, in units of the result's robust
/// spread.
fn flatten(smooth: &Gray) -> Gray {
    let shading = smooth
        .box_blur(SHADING_RADIUS)
        .box_blur(SHADING_RADIUS)
        .box_blur(SHADING_RADIUS);
    relative_to_spread(&smooth.zip(&shading, |v, s| v - s), MIN_DETAIL_SPREAD)
}

/// The mean level along a line of `2 × HALF_LENGTH + 1` steps through each pixel, for the
/// pixels whose line stays inside the image (0 elsewhere). A running sum along each maximal
/// run of pixels in the direction: the cost does not grow with the line's length.
fn line_mean(level: &Gray, (dx, dy): (isize, isize)) -> Gray {
    let (w, h) = (level.width as isize, level.height as isize);
    let mut out = Gray::new(level.width, level.height, 0.0);
    let n = 2 * HALF_LENGTH + 1;
    let inside = |x: isize, y: isize| (0..w).contains(&x) && (0..h).contains(&y);
    let mut run: Vec<usize> = Vec::new();
    for y0 in 0..h {
        for x0 in 0..w {
            // A run starts at each pixel whose predecessor in the direction is outside.
            if inside(x0 - dx, y0 - dy) {
                continue;
            }
            run.clear();
            let (mut x, mut y) = (x0, y0);
            while inside(x, y) {
                run.push((y * w + x) as usize);
                (x, y) = (x + dx, y + dy);
            }
            if run.len() < n {
                continue;
            }
            let mut sum: f64 = run[..n].iter().map(|&i| f64::from(level.data[i])).sum();
            for centre in HALF_LENGTH..run.len() - HALF_LENGTH {
                out.data[run[centre]] = (sum / n as f64) as f32;
                if let Some(&next) = run.get(centre + HALF_LENGTH + 1) {
                    sum += f64::from(level.data[next])
                        - f64::from(level.data[run[centre - HALF_LENGTH]]);
                }
            }
        }
    }
    out
}

/// The response of the parallel lines `offset` steps either side of the central one, for the
/// judged pixels (0 within [`MARGIN`] of the border): positive on a dark line.
fn across(along: &Gray, direction: (isize, isize), offset: usize) -> Gray {
    either_side(along, direction, offset, |before, centre, after| {
        0.5 * (before + after) - centre
    })
}

/// The difference of the box means one step radius and a pixel either side of each judged
/// pixel, across `direction` (0 within [`MARGIN`] of the border).
fn across_step(boxes: &Gray, direction: (isize, isize)) -> Gray {
    // The boxes reach 2 × STEP_RADIUS + 1 < MARGIN pixels from a judged pixel.
    either_side(boxes, direction, STEP_RADIUS + 1, |before, _, after| {
        after - before
    })
}

/// `f(before, centre, after)` for each judged pixel of `g` (0 within [`MARGIN`] of the
/// border), with `before` and `after` the pixels `distance` steps either side of it across
/// `(dx, dy)` (the direction turned by a right angle); `distance` stays under [`MARGIN`].
fn either_side(
    g: &Gray,
    (dx, dy): (isize, isize),
    distance: usize,
    f: impl Fn(f32, f32, f32) -> f32,
) -> Gray {
    let (w, h) = (g.width, g.height);
    let mut out = Gray::new(w, h, 0.0);
    let shift = (dx * w as isize - dy) * distance as isize;
    for y in MARGIN..h.saturating_sub(MARGIN) {
        for x in MARGIN..w.saturating_sub(MARGIN) {
            let i = y * w + x;
            let (a, b) = ((i as isize - shift) as usize, (i as isize + shift) as usize);
            out.data[i] = f(g.data[a], g.data[i], g.data[b]);
        }
    }
    out
}

/// The core of component `c`: of its strong part (its pixels at least [`CORE_SHARE`] of its
/// peak in `map`), the pixels whose normalised level has the sign of the strongest there and
/// at least [`CORE_SHARE`] of its size (the whole strong part if it has no contrast at all).
fn core(c: &Component, level: &Gray, map: &Gray) -> Component {
    let strong: Vec<usize> = c
        .pixels
        .iter()
        .copied()
        .filter(|&i| map.data[i] >= CORE_SHARE * c.peak)
        .collect();
    let strongest = strong
        .iter()
        .map(|&i| level.data[i])
        .fold(0.0, |a: f32, v| if v.abs() > a.abs() { v } else { a });
    let pixels = if strongest == 0.0 {
        strong
    } else {
        strong
            .into_iter()
            .filter(|&i| level.data[i] / strongest >= CORE_SHARE)
            .collect()
    };
    Component {
        pixels,
        peak: c.peak,
    }
}

/// The family of channel `c`: [`LINES`], [`STEPS`], [`PATHS`] or [`BOUNDARIES`].
fn family(c: usize) -> usize {
    match c {
        c if c < LINE_CHANNELS => LINES,
        c if c < PATHS_FROM => STEPS,
        c if c < BOUNDARIES_FROM => PATHS,
        _ => BOUNDARIES,
    }
}

/// The share of good pixels left beyond each tail of channel `c`.
fn tail_share(c: usize) -> f32 {
    if family(c) == LINES { TAIL } else { STEP_TAIL }
}

impl Responses {
    /// The judged part (all but the border) of each row of `g`, an image of this size.
    fn judged_rows<'a>(&self, g: &'a Gray) -> impl Iterator<Item = &'a [f32]> + Clone {
        let w = self.width;
        g.data
            .chunks_exact(w)
            .skip(MARGIN)
            .take(self.height - 2 * MARGIN)
            .map(move |row| &row[MARGIN..w - MARGIN])
    }

    /// A sample of each channel, the extremes of each channel but the lines' and the line
    /// orientations' fronts, over the judged pixels.
    pub fn summary(&self) -> Summary {
        let judged = (self.width - 2 * MARGIN) * (self.height - 2 * MARGIN);
        let stride = judged.div_ceil(SAMPLES_PER_IMAGE).max(1);
        let samples = self
            .channels
            .iter()
            .map(|channel| {
                self.judged_rows(channel)
                    .flatten()
                    .step_by(stride)
                    .copied()
                    .collect()
            })
            .collect();
        let highest = |c: usize| {
            self.judged_rows(&self.channels[c])
                .flatten()
                .copied()
                .fold(f32::MIN, f32::max)
        };
        let lowest = |c: usize| {
            self.judged_rows(&self.channels[c])
                .flatten()
                .copied()
                .fold(f32::MAX, f32::min)
        };
        let (highest, lowest) = (LINE_CHANNELS..CHANNELS)
            .map(|c| (highest(c), lowest(c)))
            .unzip();
        let line_fronts = (0..DIRECTIONS.len())
            .map(|d| {
                let pairs = || {
                    self.judged_rows(&self.channels[2 * d])
                        .flatten()
                        .copied()
                        .zip(
                            self.judged_rows(&self.channels[2 * d + 1])
                                .flatten()
                                .copied(),
                        )
                };
                let bright = upper_front(pairs().map(|(u, t)| (-u, -t)));
                [
                    upper_front(pairs()),
                    bright.into_iter().map(|(u, t)| (-u, -t)).collect(),
                ]
            })
            .collect();
        Summary {
            samples,
            highest,
            lowest,
            line_fronts,
        }
    }
}

/// The points no other point exceeds in both coordinates (the upper-right Pareto front), by
/// decreasing first coordinate. The maximum over all points of `min(f(u), g(t))`, for any
/// increasing `f` and `g`, is reached on it. Only points above both the highest-`u` point's
/// `t` and the highest-`t` point's `u` can be on it, which leaves few to sort.
fn upper_front(points: impl Iterator<Item = (f32, f32)> + Clone) -> Vec<(f32, f32)> {
    // The highest-`u` point (of those, the highest `t`) and the highest-`t` point (of those,
    // the highest `u`).
    let mut tops: Option<((f32, f32), (f32, f32))> = None;
    for p in points.clone() {
        let (top_u, top_t) = tops.get_or_insert((p, p));
        if (p.0, p.1) > (top_u.0, top_u.1) {
            *top_u = p;
        }
        if (p.1, p.0) > (top_t.1, top_t.0) {
            *top_t = p;
        }
    }
    let Some((top_u, top_t)) = tops else {
        return Vec::new();
    };
    let mut candidates: Vec<(f32, f32)> = points
        .filter(|&(u, t)| u >= top_t.0 && t >= top_u.1)
        .collect();
    candidates.sort_unstable_by(|a, b| b.0.total_cmp(&a.0).then(b.1.total_cmp(&a.1)));
    let mut front: Vec<(f32, f32)> = Vec::new();
    for p in candidates {
        if front.last().is_none_or(|last| p.1 > last.1) {
            front.push(p);
        }
    }
    front
}

impl TextureModel {
    /// Learns each channel's median and tails from the summaries of good images, prepared with
    /// this geometry and grain.
    pub fn learn(
        images: &[&Summary],
        downscale: usize,
        reference_size: Option<(usize, usize)>,
        grain: Grain,
    ) -> TextureModel {
        let mut median = [0f32; CHANNELS];
        let mut dark_tail = [TAIL_FLOOR; CHANNELS];
        let mut bright_tail = [TAIL_FLOOR; CHANNELS];
        for c in 0..CHANNELS {
            let mut pooled: Vec<f32> = images
                .iter()
                .flat_map(|s| s.samples[c].iter().copied())
                .collect();
            let m = quantile(&mut pooled, 0.5);
            median[c] = m;
            let tail = tail_share(c);
            dark_tail[c] = (quantile(&mut pooled, 1.0 - tail) - m).max(TAIL_FLOOR);
            bright_tail[c] = (m - quantile(&mut pooled, tail)).max(TAIL_FLOOR);
        }
        let mut model = TextureModel {
            downscale,
            reference_size,
            grain,
            median,
            dark_tail,
            bright_tail,
            unit: [1.0; FAMILIES],
        };
        let maxima: Vec<[f32; FAMILIES]> = images.iter().map(|s| model.family_maxima(s)).collect();
        for (f, unit) in model.unit.iter_mut().enumerate() {
            let mut of_family: Vec<f32> = maxima.iter().map(|m| m[f]).collect();
            *unit = stats::median(&mut of_family).max(MIN_UNIT);
        }
        model
    }

    pub fn prepare(&self, img: &Gray) -> Result<Responses, InspectError> {
        let work = working(img, self.downscale, self.reference_size)?;
        Ok(prepare(&work, self.grain))
    }

    /// How far responses of channel `c` lie beyond its good tails (negative inside), as a
    /// function the anomaly map calls per pixel: multiplications by the tails' reciprocals,
    /// computed once, which the compiler can vectorise.
    fn excess(&self, c: usize) -> impl Fn(f32) -> f32 + use<> {
        let unit = self.unit[family(c)];
        // A path's contrast is one-sided by construction: only its upper tail counts.
        let bright = if family(c) == PATHS {
            0.0
        } else {
            -(self.bright_tail[c] * unit).recip()
        };
        let (median, dark) = (self.median[c], (self.dark_tail[c] * unit).recip());
        move |response| {
            let d = response - median;
            d * if d >= 0.0 { dark } else { bright }
        }
    }

    /// How far a line of orientation `d` stands out at both offsets in one polarity: from the
    /// responses `(u, t)` at the two offsets, the smaller of their signed distances beyond the
    /// dark tails, or of those beyond the bright tails, whichever is larger (negative inside).
    /// A response that only one offset sees (noise at one width) does not count.
    fn agreement(&self, d: usize) -> impl Fn(f32, f32) -> f32 + use<> {
        let (a, b) = (2 * d, 2 * d + 1);
        let (ma, mb) = (self.median[a], self.median[b]);
        let unit = self.unit[family(a)];
        let per = |tail: &PerChannel, c: usize| (tail[c] * unit).recip();
        let (da, db) = (per(&self.dark_tail, a), per(&self.dark_tail, b));
        let (ba, bb) = (per(&self.bright_tail, a), per(&self.bright_tail, b));
        move |u, t| {
            let dark = ((u - ma) * da).min((t - mb) * db);
            let bright = ((ma - u) * ba).min((mb - t) * bb);
            dark.max(bright)
        }
    }

    /// The anomaly map at the working scale: per pixel, the largest line agreement, step and
    /// path excess, each in its family's unit, floored at 0.
    pub fn anomaly(&self, r: &Responses) -> Gray {
        let mut map = Gray::new(r.width, r.height, 0.0);
        let w = r.width;
        for d in 0..DIRECTIONS.len() {
            let agreement = self.agreement(d);
            let judged = map.data.chunks_exact_mut(w).skip(MARGIN);
            let pairs = r
                .judged_rows(&r.channels[2 * d])
                .zip(r.judged_rows(&r.channels[2 * d + 1]));
            for (out, (us, ts)) in judged.zip(pairs) {
                for (o, (&u, &t)) in out[MARGIN..w - MARGIN].iter_mut().zip(us.iter().zip(ts)) {
                    *o = o.max(agreement(u, t));
                }
            }
        }
        let judged = r.channels.iter().enumerate().skip(LINE_CHANNELS);
        for (c, channel) in judged.filter(|(c, _)| self.judges(*c)) {
            let excess = self.excess(c);
            let judged = map.data.chunks_exact_mut(w).skip(MARGIN);
            for (out, row) in judged.zip(r.judged_rows(channel)) {
                for (o, &v) in out[MARGIN..w - MARGIN].iter_mut().zip(row) {
                    *o = o.max(excess(v));
                }
            }
        }
        map
    }

    /// Each family's largest excess over the judged pixels, from the image's summary alone.
    fn family_maxima(&self, s: &Summary) -> [f32; FAMILIES] {
        let lines = s.line_fronts.iter().enumerate().flat_map(|(d, fronts)| {
            let agreement = self.agreement(d);
            fronts.iter().flatten().map(move |&(u, t)| agreement(u, t))
        });
        let mut maxima = [0.0; FAMILIES];
        maxima[LINES] = lines.fold(0.0, f32::max);
        let extremes = s.highest.iter().zip(&s.lowest);
        for (c, (&high, &low)) in (LINE_CHANNELS..).zip(extremes) {
            if self.judges(c) {
                let excess = self.excess(c);
                let m = &mut maxima[family(c)];
                *m = m.max(excess(high)).max(excess(low));
            }
        }
        maxima
    }

    /// Whether channel `c` counts: every channel but the boundaries along the grain.
    fn judges(&self, c: usize) -> bool {
        c < BOUNDARIES_FROM || self.grain.judges(c - BOUNDARIES_FROM)
    }

    /// The maximum of [`TextureModel::anomaly`], from the image's summary alone.
    pub fn image_score(&self, s: &Summary) -> f32 {
        self.family_maxima(s).into_iter().fold(0.0, f32::max)
    }

    /// Describes one anomalous component of `map` as a region of the input image: its core,
    /// the pixels of its strong part whose own level stands out (a line through a mark answers
    /// along its whole length, up to half a line beyond the mark, and a path beside it bends
    /// towards it; the mark's own pixels do not).
    pub(crate) fn region(&self, c: &Component, r: &Responses, map: &Gray, input: &Gray) -> Region {
        surface_region(&core(c, &r.level, map), &r.level, r.scale, input)
    }

    /// Whether the stored statistics are ones fitting can make: tails and units at least their
    /// floors, nothing beyond [`MAX_STATISTIC`], so that every anomaly stays finite; and a
    /// reference size whose working image fits in [`MAX_WORKING_PIXELS`] (images of its aspect
    /// ratio are resized to it).
    pub(crate) fn is_consistent(&self) -> bool {
        let within = |v: f32, low: f32| (low..=MAX_STATISTIC).contains(&v);
        let working = |(w, h): (usize, usize)| (w / self.downscale).checked_mul(h / self.downscale);
        self.downscale >= 1
            && self.reference_size.is_none_or(|(w, h)| {
                w >= self.downscale
                    && h >= self.downscale
                    && working((w, h)).is_some_and(|n| n <= MAX_WORKING_PIXELS)
            })
            && self.median.iter().all(|m| within(m.abs(), 0.0))
            && self
                .dark_tail
                .iter()
                .chain(&self.bright_tail)
                .all(|&t| within(t, TAIL_FLOOR))
            && self.unit.iter().all(|&u| within(u, MIN_UNIT))
    }
}

#[cfg(test)]
mod tests {
    use rand::rngs::StdRng;
    use rand::{Rng, SeedableRng};

    use super::*;

    /// A noisy surface with vertical stripes; `mark` paints a dark mark over it.
    fn surface(seed: u64, mark: Option<Mark>) -> Gray {
        let mut rng = StdRng::seed_from_u64(seed);
        let mut g = Gray::new(200, 160, 0.0);
        for y in 0..160 {
            for x in 0..200 {
                let stripe = if (x / 4) % 2 == 0 { 20.0 } else { 0.0 };
                let mut v = 120.0 + stripe + rng.random_range(-8.0..8.0);
                if mark.is_some_and(|m| m.covers(x as f32, y as f32)) {
                    v -= 45.0;
                }
                g.set(x, y, v);
            }
        }
        g
    }

    #[derive(Clone, Copy)]
    enum Mark {
        /// A one-pixel crack from (x0, y) to (x1, y).
        Crack { x0: f32, x1: f32, y: f32 },
        /// A disc at (x, y) of radius r.
        Pit { x: f32, y: f32, r: f32 },
    }

    impl Mark {
        fn covers(self, x: f32, y: f32) -> bool {
            match self {
                Mark::Crack { x0, x1, y: cy } => (x0..=x1).contains(&x) && (y - cy).abs() < 0.5,
                Mark::Pit { x: cx, y: cy, r } => (x - cx).powi(2) + (y - cy).powi(2) < r * r,
            }
        }
    }

    fn model() -> TextureModel {
        let good: Vec<Gray> = (0..8).map(|i| surface(i, None)).collect();
        let (downscale, reference) = geometry(&good.iter().collect::<Vec<_>>());
        assert_eq!((downscale, reference), (1, Some((200, 160))));
        let works: Vec<Working> = good
            .iter()
            .map(|g| working(g, downscale, reference).unwrap())
            .collect();
        let grain = grain(&works);
        let summaries: Vec<Summary> = works.iter().map(|w| prepare(w, grain).summary()).collect();
        TextureModel::learn(
            &summaries.iter().collect::<Vec<_>>(),
            downscale,
            reference,
            grain,
        )
    }

    fn peak(map: &Gray) -> (usize, usize) {
        let i = map
            .data
            .iter()
            .enumerate()
            .fold((0, 0f32), |b, (i, &v)| if v > b.1 { (i, v) } else { b })
            .0;
        (i % map.width, i / map.width)
    }

    #[test]
    fn a_line_answers_in_the_channel_of_its_orientation_with_its_polarity() {
        let mut g = Gray::new(80, 80, 0.0);
        for x in 10..70 {
            g.set(x, 40, 1.0);
        }
        let horizontal = line_mean(&g, DIRECTIONS[0]);
        let vertical = line_mean(&g, DIRECTIONS[2]);
        // On the bright line: the horizontal line mean is its full level, the vertical one a
        // single pixel of it; across, the bright line is a negative response.
        assert!((horizontal.get(40, 40) - 1.0).abs() < 1e-6);
        assert!((vertical.get(40, 40) - 1.0 / 31.0).abs() < 1e-6);
        let response = across(&horizontal, DIRECTIONS[0], 2);
        assert!((response.get(40, 40) + 1.0).abs() < 1e-6);
        assert_eq!(response.get(40, 30), 0.0, "nothing off the line");
        assert_eq!(response.get(5, 40), 0.0, "the border is not judged");
    }

    #[test]
    fn the_running_line_mean_is_the_mean_of_the_line() {
        let mut rng = StdRng::seed_from_u64(3);
        let mut g = Gray::new(70, 50, 0.0);
        g.data
            .iter_mut()
            .for_each(|v| *v = rng.random_range(-3.0..3.0));
        let half = HALF_LENGTH as isize;
        for direction @ (dx, dy) in DIRECTIONS {
            let fast = line_mean(&g, direction);
            for (x, y) in [(20, 20), (15, 15), (54, 34), (35, 25), (50, 16)] {
                let direct: f32 = (-half..=half)
                    .map(|k| g.get((x + k * dx) as usize, (y + k * dy) as usize))
                    .sum::<f32>()
                    / (2 * HALF_LENGTH + 1) as f32;
                let got = fast.get(x as usize, y as usize);
                assert!(
                    (got - direct).abs() < 1e-4,
                    "{direction:?} at {x},{y}: {got} vs {direct}"
                );
            }
        }
    }

    #[test]
    fn a_step_answers_in_the_channel_across_it_with_its_sign() {
        // Brighter below row 40: a step across the vertical direction (index 2).
        let mut g = Gray::new(80, 80, 0.0);
        for y in 40..80 {
            for x in 0..80 {
                g.set(x, y, 1.0);
            }
        }
        let boxes = g.box_blur(STEP_RADIUS);
        let across_rows = across_step(&boxes, DIRECTIONS[0]);
        let across_columns = across_step(&boxes, DIRECTIONS[2]);
        // The box below (rows 41..=47) is bright, the one above (33..=39) dark.
        assert!((across_rows.get(40, 40) - 1.0).abs() < 1e-6);
        assert_eq!(across_columns.get(40, 40), 0.0, "no step along the rows");
        assert_eq!(across_rows.get(40, 20), 0.0, "nothing away from the step");
        assert_eq!(across_rows.get(5, 40), 0.0, "the border is not judged");
    }

    #[test]
    fn the_front_holds_the_undominated_points_and_the_best_agreement() {
        let points = [
            (1.0, 5.0),
            (3.0, 3.0),
            (2.0, 2.0),
            (5.0, 1.0),
            (3.0, 2.5),
            (0.0, 0.0),
        ];
        assert_eq!(
            upper_front(points.iter().copied()),
            [(5.0, 1.0), (3.0, 3.0), (1.0, 5.0)]
        );
        assert!(upper_front(std::iter::empty()).is_empty());
        // Over many correlated points, the best of min(f(u), g(t)) for increasing f and g is
        // on the front.
        let mut rng = StdRng::seed_from_u64(5);
        let cloud: Vec<(f32, f32)> = (0..5000)
            .map(|_| {
                let u: f32 = rng.random_range(-3.0..3.0);
                (u, 0.8 * u + rng.random_range(-1.0..1.0))
            })
            .collect();
        let front = upper_front(cloud.iter().copied());
        assert!(front.len() < 50, "{} points on the front", front.len());
        let best = |pts: &[(f32, f32)]| {
            pts.iter()
                .map(|&(u, t)| (2.0 * u - 1.0).min(0.5 * t + 0.3))
                .fold(f32::MIN, f32::max)
        };
        assert_eq!(best(&front), best(&cloud));
    }

    #[test]
    fn each_family_is_counted_in_its_good_images_typical_maximum() {
        let good: Vec<Gray> = (0..8).map(|i| surface(i, None)).collect();
        let summaries: Vec<Summary> = good
            .iter()
            .map(|g| prepare(&working(g, 1, None).unwrap(), Grain::None).summary())
            .collect();
        let refs: Vec<&Summary> = summaries.iter().collect();
        let m = TextureModel::learn(&refs, 1, None, Grain::None);
        assert!(m.unit.iter().any(|&u| u > MIN_UNIT), "{:?}", m.unit);
        for f in 0..FAMILIES {
            let mut maxima: Vec<f32> = refs.iter().map(|s| m.family_maxima(s)[f]).collect();
            let typical = stats::median(&mut maxima);
            assert!(
                m.unit[f] == MIN_UNIT || (typical - 1.0).abs() < 1e-4,
                "family {f}: unit {}, typical maximum {typical}",
                m.unit[f]
            );
        }
        assert!(m.is_consistent());
    }

    #[test]
    fn a_line_seen_at_one_offset_only_does_not_count() {
        let m = model();
        let agreement = m.agreement(0);
        let ten = 10.0 / m.unit[LINES];
        let (a, b) = (0, 1);
        let far_dark = |c: usize| m.median[c] + 10.0 * m.dark_tail[c];
        let far_bright = |c: usize| m.median[c] - 10.0 * m.bright_tail[c];
        assert!((agreement(far_dark(a), far_dark(b)) - ten).abs() < 1e-3);
        assert!((agreement(far_bright(a), far_bright(b)) - ten).abs() < 1e-3);
        assert!(agreement(far_dark(a), m.median[b]) <= 0.0);
        assert!(
            agreement(far_dark(a), far_bright(b)) < 0.0,
            "opposite polarities"
        );
    }

    #[test]
    fn the_image_score_from_a_summary_is_the_maximum_of_the_map() {
        let m = model();
        for mark in [
            None,
            Some(Mark::Crack {
                x0: 60.0,
                x1: 120.0,
                y: 80.0,
            }),
        ] {
            let r = m.prepare(&surface(50, mark)).unwrap();
            assert_eq!(m.image_score(&r.summary()), m.anomaly(&r).max());
        }
    }

    #[test]
    fn a_crack_and_a_pit_score_higher_than_clean_texture_and_are_found_where_they_are() {
        let m = model();
        let clean = (90..94)
            .map(|seed| m.anomaly(&m.prepare(&surface(seed, None)).unwrap()).max())
            .fold(0.0, f32::max);
        for (mark, (x, y)) in [
            (
                Mark::Crack {
                    x0: 60.0,
                    x1: 120.0,
                    y: 80.0,
                },
                (90, 80),
            ),
            (
                Mark::Pit {
                    x: 110.0,
                    y: 60.0,
                    r: 3.0,
                },
                (110, 60),
            ),
        ] {
            let map = m.anomaly(&m.prepare(&surface(98, Some(mark))).unwrap());
            assert!(map.max() > 1.5 * clean, "{} vs {clean}", map.max());
            // A line through a mark anywhere along its length answers to it, so the peak may
            // lie up to half a line away; a step answers at the mark's edge, a box off its
            // centre. The mark itself scores nearly as high.
            let (px, py) = peak(&map);
            let reach = HALF_LENGTH + 2;
            assert!(
                px.abs_diff(x) <= reach && py.abs_diff(y) <= reach,
                "peak at {px},{py}"
            );
            let step = STEP_RADIUS + 1;
            let map_ref = &map;
            let on_mark = (y - step..=y + step)
                .flat_map(|v| (x - step..=x + step).map(move |u| map_ref.get(u, v)))
                .fold(0.0, f32::max);
            assert!(on_mark >= 0.8 * map.max(), "{on_mark}");
        }
    }

    #[test]
    fn a_faint_boundary_across_the_grain_counts_and_one_along_it_does_not() {
        let m = model();
        assert_eq!(m.grain, Grain::Columns, "the stripes run down the columns");
        let boundaries = |g: &Gray| m.family_maxima(&m.prepare(g).unwrap().summary())[BOUNDARIES];
        let clean = (90..94)
            .map(|seed| boundaries(&surface(seed, None)))
            .fold(0.0, f32::max);
        // The lower part ground 5 grey levels brighter (the stripes are 20 apart, the noise
        // ±8): a boundary along the rows, across the stripes.
        let mut across = surface(95, None);
        let mut along = across.clone();
        for y in 0..160 {
            for x in 0..200 {
                if y >= 90 {
                    across.set(x, y, across.get(x, y) + 5.0);
                }
                if x >= 110 {
                    along.set(x, y, along.get(x, y) + 5.0);
                }
            }
        }
        let r = m.prepare(&across).unwrap();
        let (_, y) = peak(&r.channels[BOUNDARIES_FROM].map(f32::abs));
        assert!(y.abs_diff(90) <= 1, "peak at row {y}");
        assert!(
            boundaries(&across) > 2.0 * clean,
            "{} vs {clean}",
            boundaries(&across)
        );
        assert!(
            boundaries(&along) < 1.2 * clean,
            "{} vs {clean}",
            boundaries(&along)
        );
    }

    #[test]
    fn beside_a_glare_dark_lines_and_paths_do_not_count_and_bright_ones_still_do() {
        // A glare over the left fifth; beside it a dark and a bright vertical line, far from
        // it another dark one.
        let mut g = surface(5, None);
        for y in 0..160 {
            for x in 0..40 {
                g.set(x, y, 255.0);
            }
            if (40..120).contains(&y) {
                for (x, shift) in [(48, -45.0), (53, 45.0), (150, -45.0)] {
                    g.set(x, y, g.get(x, y) + shift);
                }
            }
        }
        let r = prepare(&working(&g, 1, None).unwrap(), Grain::None);
        let at = |c: usize, x: usize| r.channels[c].get(x, 80);
        // Vertical lines: orientation 2, channels 4 and 5; dark paths along the columns.
        let (vertical, dark_columns, bright_columns) = (4..6, PATHS_FROM + 1, PATHS_FROM + 3);
        for c in (0..LINE_CHANNELS).chain(DARK_PATHS) {
            assert!(
                at(c, 48) <= 0.0,
                "channel {c} beside the glare: {}",
                at(c, 48)
            );
        }
        for c in vertical {
            assert!(
                at(c, 150) > 1.0,
                "channel {c} far from the glare: {}",
                at(c, 150)
            );
        }
        assert!(at(dark_columns, 150) > 1.0, "{}", at(dark_columns, 150));
        // The bright line keeps its (negative) line response and its bright path.
        assert!(at(4, 53) < -0.3 && at(bright_columns, 53) > 0.3);
    }

    #[test]
    fn a_crack_region_is_boxed_on_the_crack_not_half_a_line_beyond() {
        let m = model();
        let input = surface(
            97,
            Some(Mark::Crack {
                x0: 60.0,
                x1: 120.0,
                y: 80.0,
            }),
        );
        let r = m.prepare(&input).unwrap();
        let map = m.anomaly(&r);
        // Grown down to a quarter of the peak, as a calibrated threshold well under it grows:
        // the whole component reaches up to half a line beyond each end of the crack.
        let top = &crate::regions::components(&map, 0.25 * map.max(), 0.9 * map.max())[0];
        let [x, y, w, h] = m.region(top, &r, &map, &input).bbox;
        let (x1, y1) = (x + w, y + h);
        assert!(x.abs_diff(60) <= 3 && x1.abs_diff(121) <= 3, "x {x}..{x1}");
        assert!(y.abs_diff(80) <= 3 && y1.abs_diff(81) <= 3, "y {y}..{y1}");
    }

    #[test]
    fn an_image_of_the_same_view_at_another_resolution_is_resized() {
        let p = working(&Gray::new(400, 320, 9.0), 1, Some((200, 160))).unwrap();
        assert_eq!((p.image.width, p.image.height), (200, 160));
        assert_eq!(p.scale, (2.0, 2.0));
        let q = working(&Gray::new(300, 100, 9.0), 1, Some((200, 160))).unwrap();
        assert_eq!(
            (q.image.width, q.image.height),
            (300, 100),
            "another crop: same pixel scale"
        );
        assert_eq!(
            working(&Gray::new(30, 300, 0.0), 1, None).err(),
            Some(InspectError::TooSmall {
                width: 30,
                height: 300,
                min: 2 * MARGIN + 1
            })
        );
    }
}
