//! Registration: find the part's pose from its silhouette and resample it into a canonical frame.

use serde::{Deserialize, Serialize};

use crate::stats::median_spread;
use crate::{Gray, InspectError};

/// Where the part lies in the input image: its centroid and the angle of its long axis
/// (radians, pointing from the handle to the tip).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Pose {
    pub cx: f32,
    pub cy: f32,
    pub angle: f32,
    /// Grey level of the background (the belt), estimated on the image border.
    pub background: f32,
    /// Half-extent of the silhouette along its long axis and across it, in pixels.
    pub half_length: f32,
    pub half_width: f32,
    /// Share of the image the silhouette covers (0..1).
    pub coverage: f32,
    /// Robust spread of the border's grey levels: small for a plain belt, large when the
    /// image is all surface texture.
    pub border_spread: f32,
    /// Radius of gyration of the silhouette (pixels): its size, sub-pixel, whatever its angle.
    pub radius: f32,
    /// Input pixels per canonical pixel: 1 as registered; [`Pose::scaled_to`] sets it so that
    /// parts a little nearer or larger than the reference fill the same canonical frame.
    pub scale: f32,
    /// Skewness of the silhouette across its long axis: its sign tells which way up an
    /// asymmetric part lies (a knife's edge on one side of its axis, its spine on the other).
    pub handedness: f32,
    /// Whether the canonical frame is mirrored across the long axis (a part lying the other
    /// way up, see [`Pose::mirrored_if`]).
    pub mirrored: bool,
}

impl Pose {
    /// Maps a canonical position (origin at the frame's centre) to input-image coordinates.
    #[inline]
    pub fn to_image(&self, u: f32, v: f32) -> (f32, f32) {
        let (s, c) = self.angle.sin_cos();
        let v = if self.mirrored { -v } else { v };
        let (u, v) = (u * self.scale, v * self.scale);
        (self.cx + u * c - v * s, self.cy + u * s + v * c)
    }

    /// Maps input-image coordinates to a canonical position: the inverse of [`Pose::to_image`].
    #[inline]
    pub fn to_canonical(&self, x: f32, y: f32) -> (f32, f32) {
        let (s, c) = self.angle.sin_cos();
        let (dx, dy) = ((x - self.cx) / self.scale, (y - self.cy) / self.scale);
        let v = -dx * s + dy * c;
        (dx * c + dy * s, if self.mirrored { -v } else { v })
    }

    /// This pose, mirrored across the long axis when `either_way` and its handedness is
    /// negative: parts that lie either way up then all show the same side in the canonical
    /// frame.
    pub fn mirrored_if(mut self, either_way: bool) -> Pose {
        self.mirrored = either_way && self.handedness < 0.0;
        self
    }

    /// This pose with the scale that brings the part's radius of gyration to `reference`,
    /// within `tolerance` (a share) either way: a part's distance to the camera and its size
    /// vary a little from part to part, and an unscaled warp moves its far end by that share
    /// of its length (a 500-pixel knife 1.5% larger ends 7 pixels further), which the
    /// per-location statistics would take for a defect. Beyond the tolerance the part is not
    /// the reference's size, and that stays visible.
    pub fn scaled_to(mut self, reference: f32, tolerance: f32) -> Pose {
        if reference > 0.0 && self.radius > 0.0 {
            self.scale = (self.radius / reference).clamp(1.0 - tolerance, 1.0 + tolerance);
        }
        self
    }

    /// Half-extents along and across the part in canonical pixels.
    pub fn canonical_half_extent(&self) -> (f32, f32) {
        (self.half_length / self.scale, self.half_width / self.scale)
    }
}

/// Smallest difference from the background (grey levels) that counts as part.
const MIN_CONTRAST: f32 = 25.0;

/// Finds the part: pixels that differ from the border's median level, and their moments.
pub fn register(img: &Gray) -> Result<Pose, InspectError> {
    if img.width < 8 || img.height < 8 {
        return Err(InspectError::NoPart);
    }
    let (background, border_spread) = border_level(img);
    let smooth = img.box_blur(1);
    let step = if img.width * img.height > 1_000_000 {
        2
    } else {
        1
    };
    let (mut n, mut sx, mut sy) = (0f64, 0f64, 0f64);
    let (mut sxx, mut syy, mut sxy) = (0f64, 0f64, 0f64);
    for y in (0..img.height).step_by(step) {
        for x in (0..img.width).step_by(step) {
            if (smooth.get(x, y) - background).abs() > MIN_CONTRAST {
                let (xf, yf) = (x as f64, y as f64);
                n += 1.0;
                sx += xf;
                sy += yf;
                sxx += xf * xf;
                syy += yf * yf;
                sxy += xf * yf;
            }
        }
    }
    let min_pixels = (img.width * img.height / (step * step * 400)).max(16) as f64;
    if n < min_pixels {
        return Err(InspectError::NoPart);
    }
    let (cx, cy) = (sx / n, sy / n);
    let mu20 = sxx / n - cx * cx;
    let mu02 = syy / n - cy * cy;
    let mu11 = sxy / n - cx * cy;
    let mut angle = 0.5 * (2.0 * mu11).atan2(mu20 - mu02);

    // Resolve the 180° ambiguity: the darker end (the handle) goes to negative u.
    let (s, c) = angle.sin_cos();
    let (mut dark_pos, mut n_pos, mut dark_neg, mut n_neg) = (0f64, 0f64, 0f64, 0f64);
    let (mut max_u, mut max_v) = (0f64, 0f64);
    let (mut v2, mut v3) = (0f64, 0f64);
    for y in (0..img.height).step_by(step) {
        for x in (0..img.width).step_by(step) {
            let value = smooth.get(x, y);
            if (value - background).abs() > MIN_CONTRAST {
                let (dx, dy) = (x as f64 - cx, y as f64 - cy);
                let u = dx * c + dy * s;
                let v = -dx * s + dy * c;
                max_u = max_u.max(u.abs());
                max_v = max_v.max(v.abs());
                v2 += v * v;
                v3 += v * v * v;
                if u >= 0.0 {
                    dark_pos += f64::from(value);
                    n_pos += 1.0;
                } else {
                    dark_neg += f64::from(value);
                    n_neg += 1.0;
                }
            }
        }
    }
    let mut turn = 1.0;
    if n_pos > 0.0 && n_neg > 0.0 && dark_pos / n_pos < dark_neg / n_neg {
        angle += std::f64::consts::PI;
        turn = -1.0;
    }
    Ok(Pose {
        cx: cx as f32,
        cy: cy as f32,
        angle: angle as f32,
        background,
        half_length: max_u as f32,
        half_width: max_v as f32,
        coverage: (n * (step * step) as f64 / (img.width * img.height) as f64) as f32,
        border_spread,
        radius: (mu20 + mu02).max(0.0).sqrt() as f32,
        scale: 1.0,
        // Turning by 180° below changes v's sign.
        handedness: (turn * (v3 / n) / (v2 / n).max(1e-9).powf(1.5)) as f32,
        mirrored: false,
    })
}

/// Resamples the image into a `width × height` canonical frame centred on the pose.
/// Pixels that fall outside the input take the background level.
pub fn warp(img: &Gray, pose: &Pose, width: usize, height: usize) -> Gray {
    let mut out = Gray::new(width, height, pose.background);
    let (hw, hh) = (width as f32 / 2.0, height as f32 / 2.0);
    for v in 0..height {
        for u in 0..width {
            let (x, y) = pose.to_image(u as f32 - hw, v as f32 - hh);
            out.set(u, v, img.sample(x, y, pose.background));
        }
    }
    out
}

/// Median and robust spread of the grey levels of a 4-pixel-wide border.
fn border_level(img: &Gray) -> (f32, f32) {
    let mut values: Vec<f32> = border(img).map(|(_, _, v)| v).collect();
    median_spread(&mut values)
}

/// The pixels `(x, y, level)` of a 4-pixel-wide border.
fn border(img: &Gray) -> impl Iterator<Item = (f32, f32, f32)> + '_ {
    let band = 4.min(img.width / 2).min(img.height / 2);
    (0..img.height).flat_map(move |y| {
        let inner = y >= band && y < img.height - band;
        let xs: Box<dyn Iterator<Item = usize>> = if inner {
            Box::new((0..band).chain(img.width - band..img.width))
        } else {
            Box::new(0..img.width)
        };
        xs.map(move |x| (x as f32, y as f32, img.get(x, y)))
    })
}

/// A slope is divided out only when it rises across the frame by more than this many times
/// its standard error (at least one grey level), and then shrunk towards none by the share
/// `(this × error / rise)²` (see [`border_plane`]). The rise adds both slopes' sizes, so with
/// no slope at all it passes the cut about one time in two hundred, not the one in seven
/// hundred of a single normal; the shrinkage keeps such a slope small.
const FLAT_SIGNIFICANCE: f32 = 3.0;
/// Sides of the border's blocks (working pixels) whose mean residuals estimate the standard
/// error of the plane's slope: a mark on the belt spans neighbouring pixels, so pixels are not
/// independent samples of the light; blocks larger than the marks nearly are. The largest
/// estimate over these sides is taken, a conservative form of the blocking method for
/// correlated samples (there the estimate grows with the block until blocks outgrow the
/// correlation, and its plateau is read), so marks of up to about 64 working pixels (190
/// pixels of a 1080p frame) are accounted for.
const FLAT_BLOCKS: [usize; 3] = [16, 32, 64];
/// Background darker than this (grey levels) is not flattened: a gradient barely shows on it
/// and dividing by it would amplify noise.
const FLAT_MIN_LEVEL: f32 = 20.0;

/// The image with uneven illumination divided out (flat-field correction): a plane is fitted
/// to the border's levels (the plain belt around the part; robustly, so a part that touches
/// the border does not tilt it) and each pixel is scaled by the plane's level at the image
/// centre over its level there. Light that falls off across the frame multiplies the belt and
/// the part alike, so the part is then found against one background level and keeps its
/// levels wherever it lies. A plain, evenly lit belt gives a flat plane: nothing changes.
pub fn flatten(img: &Gray) -> Gray {
    let Some(plane) = border_plane(img) else {
        return img.clone();
    };
    let (cx, cy) = (img.width as f32 / 2.0, img.height as f32 / 2.0);
    let centre = plane.at(cx, cy);
    if centre < FLAT_MIN_LEVEL {
        return img.clone();
    }
    let mut out = img.clone();
    for y in 0..img.height {
        for x in 0..img.width {
            let light = plane.at(x as f32, y as f32).max(0.25 * centre);
            out.data[y * img.width + x] *= centre / light;
        }
    }
    out
}

/// A plane `a + b x + c y` of grey levels.
#[derive(Debug, Clone, Copy)]
struct Plane {
    a: f32,
    b: f32,
    c: f32,
}

impl Plane {
    fn at(&self, x: f32, y: f32) -> f32 {
        self.a + self.b * x + self.c * y
    }

    /// The plane with its slopes times `share`, turned about its level at `(x, y)`.
    fn tilted(&self, share: f32, (x, y): (f32, f32)) -> Plane {
        let (b, c) = (self.b * share, self.c * share);
        Plane {
            a: self.at(x, y) - b * x - c * y,
            b,
            c,
        }
    }
}

/// The plane fitted to the border by least squares, then again without the pixels more than
/// three robust spreads from the first fit (a part or a mark on the border), its slope shrunk
/// by how clearly the border shows it. `None` when the border cannot fix a plane, when no
/// block size gives eight blocks that span one (images under about 40 pixels a side, or 16 or
/// fewer wide or high; working images are hundreds), or when it shows no clear slope: one
/// whose rise across the frame is under [`FLAT_SIGNIFICANCE`] times its standard error (at
/// least one grey level). On a belt with marks of its own a plane fitted to them tilts at
/// random, and dividing that out would shade the part: the standard error is read off the
/// residuals' means over blocks of the border ([`FLAT_BLOCKS`]), so it grows with the marks
/// but, unlike their pixels' spread, shrinks with the border's length (a light slope of a
/// tenth across a marked belt is seen). A rise of `r` standard errors keeps the share
/// `1 - (3 / r)²` of its slope: all but a hundredth from 30 on, three quarters at 6, none at
/// 3, so whether a slope is divided out decides nothing abruptly (a rise just over the cut on
/// one part and just under on the next shades the two parts alike).
fn border_plane(img: &Gray) -> Option<Plane> {
    let border: Vec<(f32, f32, f32)> = border(img).collect();
    let first = fit_plane(&border)?;
    let mut residuals: Vec<f32> = border.iter().map(|&(x, y, v)| v - first.at(x, y)).collect();
    let (_, spread) = median_spread(&mut residuals);
    let limit = 3.0 * spread.max(1.0);
    let kept: Vec<(f32, f32, f32)> = border
        .into_iter()
        .filter(|&(x, y, v)| (v - first.at(x, y)).abs() <= limit)
        .collect();
    let plane = fit_plane(&kept)?;
    let (width, height) = (img.width as f32, img.height as f32);
    let rise = plane.b.abs() * width + plane.c.abs() * height;
    let direction = (plane.b.signum() * width, plane.c.signum() * height);
    let left: Vec<(f32, f32, f32)> = kept
        .iter()
        .map(|&(x, y, v)| (x, y, v - plane.at(x, y)))
        .collect();
    let size = (img.width, img.height);
    let error = FLAT_BLOCKS
        .iter()
        .filter_map(|&side| slope_error(&left, size, direction, side))
        .reduce(f32::max)?;
    let noise = FLAT_SIGNIFICANCE * error.max(1.0);
    (rise > noise).then(|| plane.tilted(1.0 - (noise / rise).powi(2), (width / 2.0, height / 2.0)))
}

/// The standard error of a plane's rise along `direction` (`(dx, dy)`: the rise is
/// `b dx + c dy`), from the residuals `(x, y, r)` of the pixels (of an image of `width ×
/// height`) it was fitted to, taken as independent by blocks of `side` pixels: each block's
/// mean residual at its mean place.
/// `None` when there are too few blocks or they do not span a plane.
fn slope_error(
    residuals: &[(f32, f32, f32)],
    (width, height): (usize, usize),
    direction: (f32, f32),
    side: usize,
) -> Option<f32> {
    let columns = width.div_ceil(side);
    let mut blocks = vec![[0f64; 4]; columns * height.div_ceil(side)];
    for &(x, y, r) in residuals {
        let b = &mut blocks[(y as usize / side) * columns + x as usize / side];
        *b = [
            b[0] + 1.0,
            b[1] + f64::from(x),
            b[2] + f64::from(y),
            b[3] + f64::from(r),
        ];
    }
    let means: Vec<(f64, f64, f64)> = blocks
        .iter()
        .filter(|b| b[0] > 0.0)
        .map(|&[n, x, y, r]| (x / n, y / n, r / n))
        .collect();
    if means.len() < 8 {
        return None;
    }
    let m = Moments::of(&means)?;
    // The residual variance of a block mean (three parameters fitted), and the covariance of
    // the slopes, variance × the inverse of [[sxx, sxy], [sxy, syy]].
    let variance = means.iter().map(|p| p.2 * p.2).sum::<f64>() / (m.n - 3.0);
    let (dx, dy) = (f64::from(direction.0), f64::from(direction.1));
    let quadratic = (dx * dx * m.syy - 2.0 * dx * dy * m.sxy + dy * dy * m.sxx) / m.det;
    Some((variance * quadratic).sqrt() as f32)
}

/// The sums behind a least-squares plane through points `(x, y, level)`, about the points'
/// mean (in f64, for conditioning).
struct Moments {
    n: f64,
    mean: (f64, f64, f64),
    sxx: f64,
    sxy: f64,
    syy: f64,
    sxv: f64,
    syv: f64,
    /// `sxx syy - sxy²`, the determinant of the normal equations.
    det: f64,
}

impl Moments {
    /// `None` when the points do not span a plane.
    fn of(points: &[(f64, f64, f64)]) -> Option<Moments> {
        let n = points.len() as f64;
        if points.len() < 3 {
            return None;
        }
        let mean = points.iter().fold((0.0, 0.0, 0.0), |(a, b, c), p| {
            (a + p.0 / n, b + p.1 / n, c + p.2 / n)
        });
        let (mut sxx, mut sxy, mut syy, mut sxv, mut syv) = (0f64, 0f64, 0f64, 0f64, 0f64);
        for &(x, y, v) in points {
            let (x, y, v) = (x - mean.0, y - mean.1, v - mean.2);
            sxx += x * x;
            sxy += x * y;
            syy += y * y;
            sxv += x * v;
            syv += y * v;
        }
        let det = sxx * syy - sxy * sxy;
        (det.abs() >= 1e-9 * (sxx * syy).max(1.0)).then_some(Moments {
            n,
            mean,
            sxx,
            sxy,
            syy,
            sxv,
            syv,
            det,
        })
    }
}

/// The least-squares plane through points `(x, y, level)`; `None` when they do not span a
/// plane.
fn fit_plane(points: &[(f32, f32, f32)]) -> Option<Plane> {
    let points: Vec<(f64, f64, f64)> = points
        .iter()
        .map(|&(x, y, v)| (f64::from(x), f64::from(y), f64::from(v)))
        .collect();
    let m = Moments::of(&points)?;
    let (mx, my, mv) = m.mean;
    let b = (m.sxv * m.syy - m.syv * m.sxy) / m.det;
    let c = (m.syv * m.sxx - m.sxv * m.sxy) / m.det;
    Some(Plane {
        a: (mv - b * mx - c * my) as f32,
        b: b as f32,
        c: c as f32,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A bright bar with a dark end, on a mid-grey background, rotated by `angle`.
    fn bar(angle: f32, cx: f32, cy: f32) -> Gray {
        let mut g = Gray::new(200, 150, 100.0);
        let (s, c) = angle.sin_cos();
        for y in 0..150 {
            for x in 0..200 {
                let (dx, dy) = (x as f32 - cx, y as f32 - cy);
                let u = dx * c + dy * s;
                let v = -dx * s + dy * c;
                if u.abs() < 60.0 && v.abs() < 8.0 {
                    g.set(x, y, if u < -30.0 { 30.0 } else { 200.0 });
                }
            }
        }
        g
    }

    #[test]
    fn finds_centroid_and_angle_with_the_dark_end_first() {
        for angle in [0.0f32, 0.4, -1.0, 2.5] {
            let pose = register(&bar(angle, 95.0, 70.0)).unwrap();
            let diff = (pose.angle - angle).rem_euclid(std::f32::consts::TAU);
            let diff = diff.min(std::f32::consts::TAU - diff);
            assert!(diff < 0.03, "angle {angle}: got {}", pose.angle);
            // The centroid is pulled towards the bright end by the contrast threshold only.
            assert!((pose.cx - 95.0).abs() < 3.0 && (pose.cy - 70.0).abs() < 3.0);
            assert!((pose.background - 100.0).abs() < 1.0);
        }
    }

    #[test]
    fn canonical_and_image_positions_map_both_ways() {
        let pose = register(&bar(0.7, 95.0, 70.0)).unwrap();
        for (u, v) in [(0.0, 0.0), (40.0, -5.0), (-30.0, 12.0)] {
            let (x, y) = pose.to_image(u, v);
            let (back_u, back_v) = pose.to_canonical(x, y);
            assert!((back_u - u).abs() < 1e-3 && (back_v - v).abs() < 1e-3);
        }
    }

    #[test]
    fn warp_puts_the_part_in_the_same_place_whatever_its_pose() {
        let a = warp(
            &bar(0.3, 90.0, 70.0),
            &register(&bar(0.3, 90.0, 70.0)).unwrap(),
            140,
            30,
        );
        let b = warp(
            &bar(-1.2, 110.0, 80.0),
            &register(&bar(-1.2, 110.0, 80.0)).unwrap(),
            140,
            30,
        );
        let mean_diff: f32 = a
            .data
            .iter()
            .zip(&b.data)
            .map(|(x, y)| (x - y).abs())
            .sum::<f32>()
            / a.data.len() as f32;
        assert!(mean_diff < 6.0, "mean difference {mean_diff}");
        assert!(a.get(10, 15) < 60.0, "handle on the left");
        assert!(a.get(120, 15) > 150.0, "blade on the right");
    }

    /// A bright bar with a dark end and a bump on one side of its axis (`side` ±1), drawn
    /// `size` times as large as at 1.
    fn lopsided_bar(side: f32, size: f32) -> Gray {
        let mut g = Gray::new(240, 160, 100.0);
        for y in 0..160 {
            for x in 0..240 {
                let (u, v) = ((x as f32 - 120.0) / size, (y as f32 - 80.0) / size);
                let bump = (0.0..40.0).contains(&u) && (0.0..16.0).contains(&(v * side));
                if (u.abs() < 60.0 && v.abs() < 6.0) || bump {
                    g.set(x, y, if u < -30.0 { 30.0 } else { 200.0 });
                }
            }
        }
        g
    }

    #[test]
    fn the_radius_measures_size_and_the_handedness_which_way_up() {
        let (a, b) = (lopsided_bar(1.0, 1.0), lopsided_bar(1.0, 1.05));
        let (pa, pb) = (register(&a).unwrap(), register(&b).unwrap());
        // Up to the drawing's whole pixels (its thickness is rounded to whole rows).
        let ratio = pb.radius / pa.radius;
        assert!((ratio - 1.05).abs() < 0.02, "radius ratio {ratio}");
        assert_eq!(pb.scaled_to(pa.radius, 0.08).scale, ratio);
        assert_eq!(
            pb.scaled_to(pa.radius * 0.5, 0.08).scale,
            1.08,
            "within the tolerance"
        );

        let flipped = register(&lopsided_bar(-1.0, 1.0)).unwrap();
        assert!(pa.handedness.abs() > 0.2, "{}", pa.handedness);
        assert!(pa.handedness * flipped.handedness < 0.0, "opposite sides");
        // Mirrored to one side, both parts warp to the same canonical picture.
        let [ca, cf] = [(&a, pa), (&lopsided_bar(-1.0, 1.0), flipped)]
            .map(|(img, pose)| warp(img, &pose.mirrored_if(true), 150, 50));
        let diff = ca.zip(&cf, |x, y| (x - y).abs()).data.iter().sum::<f32>();
        assert!(diff / (150.0 * 50.0) < 3.0, "mean difference {diff}");
        // Not when they may not lie either way.
        let [ca, cf] = [(&a, pa), (&lopsided_bar(-1.0, 1.0), flipped)]
            .map(|(img, pose)| warp(img, &pose.mirrored_if(false), 150, 50));
        let diff = ca.zip(&cf, |x, y| (x - y).abs()).data.iter().sum::<f32>();
        assert!(diff / (150.0 * 50.0) > 10.0, "mean difference {diff}");
    }

    #[test]
    fn a_scaled_and_mirrored_pose_maps_both_ways() {
        let mut pose = register(&lopsided_bar(-1.0, 1.03))
            .unwrap()
            .mirrored_if(true);
        pose.scale = 1.03;
        assert!(pose.mirrored);
        for (u, v) in [(0.0, 0.0), (40.0, -5.0), (-30.0, 12.0)] {
            let (x, y) = pose.to_image(u, v);
            let (back_u, back_v) = pose.to_canonical(x, y);
            assert!((back_u - u).abs() < 1e-3 && (back_v - v).abs() < 1e-3);
        }
    }

    #[test]
    fn flattening_divides_out_light_that_falls_across_the_frame() {
        let plain = bar(0.3, 100.0, 75.0);
        // Light rising by 30% from left to right, over belt and part alike.
        let mut lit = plain.clone();
        for y in 0..lit.height {
            for x in 0..lit.width {
                let light = 0.7 + 0.6 * x as f32 / lit.width as f32;
                lit.data[y * lit.width + x] *= light;
            }
        }
        let truth = register(&plain).unwrap();
        // Unflattened, the belt's dark and bright sides pass for part.
        assert!(register(&lit).is_ok_and(|p| p.coverage > 2.0 * truth.coverage));
        let pose = register(&flatten(&lit)).unwrap();
        assert!((pose.cx - truth.cx).abs() < 1.0 && (pose.cy - truth.cy).abs() < 1.0);
        assert!((pose.radius / truth.radius - 1.0).abs() < 0.01);
        // A plain, evenly lit scene is left as it is.
        assert_eq!(flatten(&plain), plain);
    }

    /// A belt of 640 × 480 pixels marked in blotches of `side × side` pixels up to ±16 grey
    /// levels about 100 (a hash of the blotch's place), under light rising by `slope` across it.
    fn marked_belt(side: usize, slope: f32) -> Gray {
        let mut g = Gray::new(640, 480, 0.0);
        for y in 0..g.height {
            for x in 0..g.width {
                let cell = ((x / side) * 7919 + (y / side) * 104_729) as u32;
                let mark = (cell.wrapping_mul(2_654_435_761) >> 24) as f32 / 255.0 * 32.0 - 16.0;
                let light = 1.0 + slope * (x as f32 / g.width as f32 - 0.5);
                g.set(x, y, (100.0 + mark) * light);
            }
        }
        g
    }

    #[test]
    fn a_light_slope_across_a_marked_belt_is_divided_out_and_the_marks_alone_are_not() {
        // Marks alone, smaller than the smallest block and larger than it.
        for side in [8, 32] {
            let marked = marked_belt(side, 0.0);
            assert_eq!(flatten(&marked), marked, "marks of {side} pixels alone");
        }
        // A fifth more light on the right: 20 grey levels, under the marks' own range (32).
        let lit = marked_belt(8, 0.2);
        let flat = flatten(&lit);
        let rise = |g: &Gray| {
            let column = |x: usize| (0..g.height).map(|y| g.get(x, y)).sum::<f32>() / 480.0;
            (0..40).map(|x| column(600 + x) - column(x)).sum::<f32>() / 40.0
        };
        assert!(rise(&lit) > 16.0, "{}", rise(&lit));
        assert!(rise(&flat).abs() < 0.1 * rise(&lit), "{}", rise(&flat));
    }

    /// Blocks smaller than the marks (32 pixels here) take neighbouring blocks of one mark for
    /// independent samples and understate the slope's error; blocks larger than the marks do
    /// not.
    #[test]
    fn the_slopes_error_is_read_off_blocks_larger_than_the_marks() {
        let belt = marked_belt(32, 0.0);
        let size = (belt.width, belt.height);
        let residuals: Vec<(f32, f32, f32)> =
            border(&belt).map(|(x, y, v)| (x, y, v - 100.0)).collect();
        let error = |side| slope_error(&residuals, size, (640.0, 480.0), side).unwrap();
        // Measured 3.0, 4.3 and 4.3: it grows until the blocks outgrow the marks, then holds.
        assert!(
            error(32) > 1.3 * error(16),
            "{} against {}",
            error(32),
            error(16)
        );
        assert!(
            (error(64) / error(32) - 1.0).abs() < 0.2,
            "{} against {}",
            error(64),
            error(32)
        );
    }

    #[test]
    fn images_too_small_or_narrow_to_read_a_plane_off_are_left_as_they_are() {
        for (width, height) in [(1, 1), (3, 3), (5, 200), (200, 5)] {
            let mut lit = Gray::new(width, height, 0.0);
            for y in 0..height {
                for x in 0..width {
                    lit.set(x, y, 60.0 + x as f32 + 0.5 * y as f32);
                }
            }
            assert_eq!(flatten(&lit), lit, "{width} × {height}");
        }
    }

    #[test]
    fn an_empty_scene_has_no_part() {
        assert_eq!(
            register(&Gray::new(100, 100, 90.0)),
            Err(InspectError::NoPart)
        );
        assert_eq!(register(&Gray::new(3, 3, 90.0)), Err(InspectError::NoPart));
    }
}
