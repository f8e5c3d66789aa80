//! Textured surfaces where position carries no meaning (a ground tile, a rolled strip, a
//! machined spindle seen at varying positions): the model is a position-free vocabulary of
//! local appearance, learned from good images.
//!
//! 1. The image is brought to a working scale (reduced by an integer factor so that its shorter
//!    side is about 400 pixels) and its levels are normalised by its own median and robust
//!    spread, so exposure does not count.
//! 2. Per pixel, six features: fine level (3×3 mean), coarse level (9×9 mean), their
//!    difference (band-pass), local contrast (5×5 standard deviation), and the horizontal and
//!    vertical gradient magnitudes.
//! 3. Fitting clusters the standardised features of pixels sampled from every good image
//!    (k-means, deterministic seeding) and keeps each cluster's per-feature variance.
//! 4. A pixel's anomaly is its Mahalanobis distance (diagonal) to the nearest cluster; the map
//!    is averaged over 5×5, and its maximum is the image score.

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};

use crate::regions::{Component, Region, surface_region};
use crate::stats::median_spread;
use crate::{Gray, InspectError};

const FEATURES: usize = 6;
/// Clusters of the appearance vocabulary.
const CLUSTERS: usize = 32;
/// The shorter side of the working image (about; the reduction is by an integer factor).
const WORKING_SHORT_SIDE: usize = 400;
/// Pixels sampled per good image for clustering.
const SAMPLES_PER_IMAGE: usize = 4000;
const KMEANS_ROUNDS: usize = 10;
/// Smallest per-feature variance of a cluster, in standardised units.
const VARIANCE_FLOOR: f32 = 0.01;
/// Clusters with fewer samples use unit variance.
const MIN_CLUSTER_SAMPLES: usize = 20;
/// Smallest robust spread of an image's levels used for normalisation (grey levels).
const MIN_LEVEL_SPREAD: f32 = 2.0;
/// Aspect ratios this close (relative) count as the same field of view.
const SAME_ASPECT: f32 = 0.05;
/// Good images whose sizes are all this close (relative) to their median share one size.
const SAME_SIZE: f32 = 0.02;

type Vector = [f32; FEATURES];

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TextureModel {
    /// Integer factor input images are reduced by.
    pub downscale: usize,
    /// When every good image had this size, an image of the same aspect ratio but another
    /// size is resized to it first (same field of view at another resolution); otherwise images
    /// are taken at the good images' pixel scale.
    pub reference_size: Option<(usize, usize)>,
    /// Per-feature mean and standard deviation of the good pixels (standardisation).
    pub feature_mean: Vector,
    pub feature_std: Vector,
    pub centres: Vec<Vector>,
    /// Inverse per-feature variance of each cluster.
    pub inverse_variance: Vec<Vector>,
}

/// One image brought to the working scale, with its features.
pub struct Prepared {
    width: usize,
    height: usize,
    /// Normalised level (3×3 mean) per pixel.
    level: Gray,
    features: Vec<Vector>,
    /// Input pixels per working pixel, horizontally and vertically.
    scale: (f32, f32),
}

/// The working geometry for a set of good images: reduction factor and reference size.
pub fn geometry(images: &[Gray]) -> (usize, Option<(usize, usize)>) {
    let (w, h) = median_size(images);
    let close = |a: usize, b: usize| (a as f32 - b as f32).abs() <= SAME_SIZE * b as f32;
    let same = images
        .iter()
        .all(|g| close(g.width, w) && close(g.height, h));
    let downscale = ((w.min(h) + WORKING_SHORT_SIDE / 2) / WORKING_SHORT_SIDE).max(1);
    (downscale, same.then_some((w, h)))
}

/// The median width and height of a set of images (at least 1 × 1).
pub fn median_size(images: &[Gray]) -> (usize, usize) {
    let mut widths: Vec<f32> = images.iter().map(|g| g.width as f32).collect();
    let mut heights: Vec<f32> = images.iter().map(|g| g.height as f32).collect();
    (
        (crate::stats::median(&mut widths) as usize).max(1),
        (crate::stats::median(&mut heights) as usize).max(1),
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
    let mut sample: Vec<f32> = work.data.iter().step_by(7).copied().collect();
    let (m, s) = median_spread(&mut sample);
    let s = s.max(MIN_LEVEL_SPREAD);
    work.map(|v| (v - m) / s)
}

/// Brings an image to the working scale and computes its features.
pub fn prepare(
    img: &Gray,
    downscale: usize,
    reference_size: Option<(usize, usize)>,
) -> Result<Prepared, InspectError> {
    if img.width < 4 || img.height < 4 {
        return Err(InspectError::NoPart);
    }
    let (work, scale) = working_image(img, downscale, reference_size);
    let x = normalise(&work);
    let fine = x.box_blur(1);
    let coarse = x.box_blur(4);
    let mean = x.box_blur(2);
    let mean_sq = x.map(|v| v * v).box_blur(2);
    let (w, h) = (x.width, x.height);
    let mut gx = Gray::new(w, h, 0.0);
    let mut gy = Gray::new(w, h, 0.0);
    for yy in 0..h {
        for xx in 0..w {
            let dx = fine.get((xx + 1).min(w - 1), yy) - fine.get(xx.saturating_sub(1), yy);
            let dy = fine.get(xx, (yy + 1).min(h - 1)) - fine.get(xx, yy.saturating_sub(1));
            gx.set(xx, yy, dx.abs());
            gy.set(xx, yy, dy.abs());
        }
    }
    let gx = gx.box_blur(1);
    let gy = gy.box_blur(1);
    let features = (0..w * h)
        .map(|i| {
            let contrast = (mean_sq.data[i] - mean.data[i] * mean.data[i])
                .max(0.0)
                .sqrt();
            [
                fine.data[i],
                coarse.data[i],
                fine.data[i] - coarse.data[i],
                contrast,
                gx.data[i],
                gy.data[i],
            ]
        })
        .collect();
    Ok(Prepared {
        width: w,
        height: h,
        level: fine,
        features,
        scale,
    })
}

impl TextureModel {
    /// Learns the appearance vocabulary from prepared good images.
    pub fn learn(
        images: &[&Prepared],
        downscale: usize,
        reference_size: Option<(usize, usize)>,
    ) -> TextureModel {
        let mut samples: Vec<Vector> = Vec::new();
        for p in images {
            let step = (p.features.len() / SAMPLES_PER_IMAGE).max(1);
            samples.extend(p.features.iter().step_by(step));
        }
        let (feature_mean, feature_std) = standardisation(&samples);
        for s in samples.iter_mut() {
            *s = standardise(s, &feature_mean, &feature_std);
        }
        let centres = kmeans(&samples);
        let inverse_variance = cluster_variances(&samples, &centres);
        TextureModel {
            downscale,
            reference_size,
            feature_mean,
            feature_std,
            centres,
            inverse_variance,
        }
    }

    pub fn prepare(&self, img: &Gray) -> Result<Prepared, InspectError> {
        prepare(img, self.downscale, self.reference_size)
    }

    /// The anomaly map at the working scale.
    pub fn anomaly(&self, p: &Prepared) -> Gray {
        let data = p
            .features
            .iter()
            .map(|f| {
                let f = standardise(f, &self.feature_mean, &self.feature_std);
                self.centres
                    .iter()
                    .zip(&self.inverse_variance)
                    .map(|(c, iv)| distance(&f, c, iv))
                    .fold(f32::MAX, f32::min)
                    .sqrt()
            })
            .collect();
        Gray {
            width: p.width,
            height: p.height,
            data,
        }
        .box_blur(2)
    }

    /// Describes one anomalous component as a region of the input image.
    pub(crate) fn region(&self, c: &Component, p: &Prepared, input: &Gray) -> Region {
        surface_region(c, &p.level, p.scale, input)
    }
}

fn standardisation(samples: &[Vector]) -> (Vector, Vector) {
    let n = samples.len().max(1) as f32;
    let mut mean = [0f32; FEATURES];
    for s in samples {
        for (m, v) in mean.iter_mut().zip(s) {
            *m += v / n;
        }
    }
    let mut var = [0f32; FEATURES];
    for s in samples {
        for ((acc, v), m) in var.iter_mut().zip(s).zip(&mean) {
            *acc += (v - m) * (v - m) / n;
        }
    }
    (mean, var.map(|v| v.sqrt().max(1e-3)))
}

fn standardise(f: &Vector, mean: &Vector, std: &Vector) -> Vector {
    std::array::from_fn(|d| (f[d] - mean[d]) / std[d])
}

#[inline]
fn distance(f: &Vector, c: &Vector, iv: &Vector) -> f32 {
    let mut sum = 0.0;
    for d in 0..FEATURES {
        let diff = f[d] - c[d];
        sum += diff * diff * iv[d];
    }
    sum
}

fn nearest(f: &Vector, centres: &[Vector]) -> (usize, f32) {
    let ones = [1.0; FEATURES];
    centres
        .iter()
        .enumerate()
        .map(|(k, c)| (k, distance(f, c, &ones)))
        .fold(
            (0, f32::MAX),
            |best, cur| if cur.1 < best.1 { cur } else { best },
        )
}

/// k-means with k-means++ seeding from a fixed seed: the same samples give the same clusters.
fn kmeans(samples: &[Vector]) -> Vec<Vector> {
    if samples.is_empty() {
        return vec![[0.0; FEATURES]];
    }
    let mut rng = StdRng::seed_from_u64(0x5EED);
    let k = CLUSTERS.min(samples.len());
    let mut centres = vec![samples[rng.random_range(0..samples.len())]];
    let mut closest: Vec<f32> = samples.iter().map(|s| nearest(s, &centres).1).collect();
    while centres.len() < k {
        let total: f32 = closest.iter().sum();
        if total <= 0.0 {
            break;
        }
        let mut pick = rng.random_range(0.0..total);
        let mut chosen = samples.len() - 1;
        for (i, d) in closest.iter().enumerate() {
            if pick < *d {
                chosen = i;
                break;
            }
            pick -= d;
        }
        let centre = samples[chosen];
        centres.push(centre);
        let ones = [1.0; FEATURES];
        for (c, s) in closest.iter_mut().zip(samples) {
            *c = c.min(distance(s, &centre, &ones));
        }
    }
    for _ in 0..KMEANS_ROUNDS {
        let mut sums = vec![[0f32; FEATURES]; centres.len()];
        let mut counts = vec![0usize; centres.len()];
        for s in samples {
            let (k, _) = nearest(s, &centres);
            counts[k] += 1;
            for (acc, v) in sums[k].iter_mut().zip(s) {
                *acc += v;
            }
        }
        for ((c, sum), n) in centres.iter_mut().zip(&sums).zip(&counts) {
            if *n > 0 {
                *c = sum.map(|v| v / *n as f32);
            }
        }
    }
    centres
}

fn cluster_variances(samples: &[Vector], centres: &[Vector]) -> Vec<Vector> {
    let mut sums = vec![[0f32; FEATURES]; centres.len()];
    let mut counts = vec![0usize; centres.len()];
    for s in samples {
        let (k, _) = nearest(s, centres);
        counts[k] += 1;
        for ((acc, v), c) in sums[k].iter_mut().zip(s).zip(&centres[k]) {
            *acc += (v - c) * (v - c);
        }
    }
    sums.iter()
        .zip(&counts)
        .map(|(sum, &n)| {
            if n < MIN_CLUSTER_SAMPLES {
                [1.0; FEATURES]
            } else {
                sum.map(|v| 1.0 / (v / n as f32).max(VARIANCE_FLOOR))
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A noisy texture; `spot` paints a dark disc (x, y, radius).
    fn surface(seed: u64, spot: Option<(f32, f32, f32)>) -> Gray {
        let mut rng = StdRng::seed_from_u64(seed);
        let mut g = Gray::new(160, 120, 0.0);
        for y in 0..120 {
            for x in 0..160 {
                let stripe = if (x / 4) % 2 == 0 { 20.0 } else { 0.0 };
                let mut v = 120.0 + stripe + rng.random_range(-8.0..8.0);
                if let Some((sx, sy, r)) = spot
                    && (x as f32 - sx).powi(2) + (y as f32 - sy).powi(2) < r * r
                {
                    v = 40.0;
                }
                g.set(x, y, v);
            }
        }
        g
    }

    #[test]
    fn a_spot_scores_higher_than_clean_texture_and_is_boxed() {
        let good: Vec<Gray> = (0..8).map(|i| surface(i, None)).collect();
        let (downscale, reference) = geometry(&good);
        assert_eq!((downscale, reference), (1, Some((160, 120))));
        let prepared: Vec<Prepared> = good
            .iter()
            .map(|g| prepare(g, downscale, reference).unwrap())
            .collect();
        let refs: Vec<&Prepared> = prepared.iter().collect();
        let model = TextureModel::learn(&refs, downscale, reference);
        let clean = model
            .anomaly(&model.prepare(&surface(99, None)).unwrap())
            .max();
        let spotted = model
            .prepare(&surface(98, Some((100.0, 60.0, 5.0))))
            .unwrap();
        let map = model.anomaly(&spotted);
        assert!(map.max() > 2.0 * clean, "{} vs {clean}", map.max());
        let peak = map
            .data
            .iter()
            .enumerate()
            .fold((0, 0f32), |b, (i, &v)| if v > b.1 { (i, v) } else { b })
            .0;
        let (px, py) = (peak % map.width, peak / map.width);
        assert!(
            px.abs_diff(100) <= 6 && py.abs_diff(60) <= 6,
            "peak at {px},{py}"
        );
    }

    #[test]
    fn an_image_of_the_same_view_at_another_resolution_is_resized() {
        let p = prepare(&Gray::new(320, 240, 9.0), 1, Some((160, 120))).unwrap();
        assert_eq!((p.width, p.height), (160, 120));
        let q = prepare(&Gray::new(300, 100, 9.0), 1, Some((160, 120))).unwrap();
        assert_eq!(
            (q.width, q.height),
            (300, 100),
            "another crop: same pixel scale"
        );
        assert!(prepare(&Gray::new(2, 2, 0.0), 1, None).is_err());
    }
}
