//! The per-SKU model: robust per-pixel statistics of registered good parts, and the calibrated
//! thresholds. Fitting and scoring are pure; the model serialises with serde.

use serde::{Deserialize, Serialize};

use crate::classify::{Evidence, Zone, classify};
use crate::regions::{Region, components, elongation};
use crate::register::{Pose, median, register, warp};
use crate::{Gray, InspectError};

/// Version of the model layout; a model of another version must be refitted.
pub const MODEL_FORMAT: u32 = 1;

/// Smallest per-pixel spread (grey levels): sensor noise never goes below it.
const SPREAD_FLOOR: f32 = 4.0;
/// Extra canonical pixels around the largest silhouette seen in fitting.
const MARGIN: f32 = 12.0;
/// Smallest number of good images to fit from.
pub const MIN_GOOD: usize = 5;
/// Region growth threshold, as a share of the image threshold.
const GROW_SHARE: f32 = 0.5;
/// At most this many regions are reported, strongest first.
const MAX_REGIONS: usize = 8;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Model {
    pub format: u32,
    /// Canonical frame size.
    pub width: usize,
    pub height: usize,
    pub median: Vec<f32>,
    pub spread: Vec<f32>,
    /// Canonical columns that belong to the handle (the darker end).
    pub handle_columns: Vec<bool>,
    pub background: f32,
    /// Image score above which a part is NG.
    pub threshold: f32,
    /// Number of good images it was fitted on.
    pub trained_on: usize,
}

/// Why a model could not be fitted.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum FitError {
    #[error("{got} good images given, at least {MIN_GOOD} needed")]
    TooFew { got: usize },
    #[error("good image {index}: {source}")]
    Image { index: usize, source: InspectError },
}

/// The decision for one image.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Verdict {
    pub score: f32,
    pub threshold: f32,
    pub defect_detected: bool,
    /// Strongest first.
    pub regions: Vec<Region>,
    pub pose: Pose,
}

impl Model {
    /// Fits a model from good images (already decoded) and calibrates its threshold by k-fold
    /// cross-scoring: each fold is scored by a model fitted without it.
    pub fn fit(good: &[Gray]) -> Result<Model, FitError> {
        if good.len() < MIN_GOOD {
            return Err(FitError::TooFew { got: good.len() });
        }
        let poses = good
            .iter()
            .enumerate()
            .map(|(index, g)| register(g).map_err(|source| FitError::Image { index, source }))
            .collect::<Result<Vec<_>, _>>()?;
        let half_length = poses.iter().map(|p| p.half_length).fold(0.0, f32::max);
        let half_width = poses.iter().map(|p| p.half_width).fold(0.0, f32::max);
        let width = (2.0 * (half_length + MARGIN)).ceil() as usize;
        let height = (2.0 * (half_width + MARGIN)).ceil() as usize;
        let warped: Vec<Gray> = good
            .iter()
            .zip(&poses)
            .map(|(g, p)| warp(g, p, width, height))
            .collect();
        let mut background: Vec<f32> = poses.iter().map(|p| p.background).collect();
        let background = median(&mut background);

        let folds = good.len().min(5);
        let mut held_out_scores = Vec::with_capacity(good.len());
        for fold in 0..folds {
            let train: Vec<&Gray> = warped
                .iter()
                .enumerate()
                .filter(|(i, _)| i % folds != fold)
                .map(|(_, w)| w)
                .collect();
            let stats = Stats::of(&train, width, height);
            for (_, w) in warped.iter().enumerate().filter(|(i, _)| i % folds == fold) {
                held_out_scores.push(max_of(&zmap(&stats.median, &stats.spread, w)));
            }
        }
        let all: Vec<&Gray> = warped.iter().collect();
        let stats = Stats::of(&all, width, height);
        let handle_columns = handle_columns(&stats.median, width, height, background);
        Ok(Model {
            format: MODEL_FORMAT,
            width,
            height,
            median: stats.median,
            spread: stats.spread,
            handle_columns,
            background,
            threshold: calibrate(&mut held_out_scores),
            trained_on: good.len(),
        })
    }

    /// Scores one decoded image against the model.
    pub fn score(&self, img: &Gray) -> Result<Verdict, InspectError> {
        let pose = register(img)?;
        let canon = warp(img, &pose, self.width, self.height);
        let z = zmap(&self.median, &self.spread, &canon);
        let score = max_of(&z);
        let defect_detected = score > self.threshold;
        let regions = if defect_detected {
            components(&z, self.threshold * GROW_SHARE, self.threshold)
                .into_iter()
                .take(MAX_REGIONS)
                .map(|c| self.region(&c.pixels, c.peak, &canon, &pose, img))
                .collect()
        } else {
            Vec::new()
        };
        Ok(Verdict {
            score,
            threshold: self.threshold,
            defect_detected,
            regions,
            pose,
        })
    }

    fn zone(&self, i: usize) -> Zone {
        if (self.median[i] - self.background).abs() <= 25.0 {
            Zone::Background
        } else if self.handle_columns[i % self.width] {
            Zone::Handle
        } else {
            Zone::Blade
        }
    }

    fn region(&self, pixels: &[usize], peak: f32, canon: &Gray, pose: &Pose, img: &Gray) -> Region {
        let w = self.width;
        let (mut blade, mut handle, mut outside) = (0usize, 0usize, 0usize);
        let (mut shift, mut missing) = (0f32, 0usize);
        let (mut u0, mut v0, mut u1, mut v1) = (usize::MAX, usize::MAX, 0usize, 0usize);
        for &i in pixels {
            match self.zone(i) {
                Zone::Blade => blade += 1,
                Zone::Handle => handle += 1,
                Zone::Background => outside += 1,
            }
            shift += canon.data[i] - self.median[i];
            if (canon.data[i] - self.background).abs() <= 25.0 {
                missing += 1;
            }
            let (u, v) = (i % w, i / w);
            (u0, v0, u1, v1) = (u0.min(u), v0.min(v), u1.max(u), v1.max(v));
        }
        let zone = if outside > blade + handle {
            Zone::Background
        } else if handle > blade {
            Zone::Handle
        } else {
            Zone::Blade
        };
        let n = pixels.len().max(1) as f32;
        let evidence = Evidence {
            zone,
            area: pixels.len(),
            elongation: elongation(pixels, w),
            shift: shift / n,
            missing_share: missing as f32 / n,
        };
        Region {
            bbox: image_box(pose, (u0, v0, u1, v1), w, self.height, img),
            area: evidence.area,
            peak,
            shift: evidence.shift,
            elongation: evidence.elongation,
            kind: classify(&evidence),
        }
    }
}

/// The canonical box `(u0, v0, u1, v1)` (inclusive) as an axis-aligned box of the input image.
fn image_box(
    pose: &Pose,
    (u0, v0, u1, v1): (usize, usize, usize, usize),
    w: usize,
    h: usize,
    img: &Gray,
) -> [u32; 4] {
    let (hw, hh) = (w as f32 / 2.0, h as f32 / 2.0);
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
    let clamp_x = |x: f32| x.clamp(0.0, img.width as f32) as u32;
    let clamp_y = |y: f32| y.clamp(0.0, img.height as f32) as u32;
    let (x0, y0, x1, y1) = (
        clamp_x(x0.floor()),
        clamp_y(y0.floor()),
        clamp_x(x1.ceil()),
        clamp_y(y1.ceil()),
    );
    [
        x0,
        y0,
        x1.saturating_sub(x0).max(1),
        y1.saturating_sub(y0).max(1),
    ]
}

/// Columns whose part pixels are on average darker than the background: the handle.
fn handle_columns(median: &[f32], width: usize, height: usize, background: f32) -> Vec<bool> {
    (0..width)
        .map(|u| {
            let (mut sum, mut n) = (0f32, 0usize);
            for v in 0..height {
                let m = median[v * width + u];
                if (m - background).abs() > 25.0 {
                    sum += m;
                    n += 1;
                }
            }
            n > 0 && sum / (n as f32) < background
        })
        .collect()
}

/// Image threshold from held-out good scores: the median plus eight robust deviations, and at
/// least the 80th percentile with 20% headroom. Robust, so that a few bad parts among the
/// "good" ones do not raise it much.
fn calibrate(scores: &mut [f32]) -> f32 {
    let med = median(scores);
    let mut deviations: Vec<f32> = scores.iter().map(|s| (s - med).abs()).collect();
    let mad = 1.4826 * median(&mut deviations);
    scores.sort_by(f32::total_cmp);
    let p80 = scores[(scores.len() * 4 / 5).min(scores.len() - 1)];
    (med + 8.0 * mad).max(p80 * 1.2)
}

fn max_of(g: &Gray) -> f32 {
    g.data.iter().copied().fold(0.0, f32::max)
}

/// Per-pixel median and spread of registered images.
struct Stats {
    median: Vec<f32>,
    spread: Vec<f32>,
}

impl Stats {
    fn of(images: &[&Gray], width: usize, height: usize) -> Stats {
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
            *m_out = m;
            *mad_out = 1.4826 * median(&mut column);
        }
        // A pixel next to an edge varies with sub-pixel registration: take the largest spread
        // of its 3x3 neighbourhood.
        let mut spread = vec![0f32; n];
        for y in 0..height {
            for x in 0..width {
                let mut s = SPREAD_FLOOR;
                for yy in y.saturating_sub(1)..(y + 2).min(height) {
                    for xx in x.saturating_sub(1)..(x + 2).min(width) {
                        s = s.max(mad.get(xx, yy));
                    }
                }
                spread[y * width + x] = s;
            }
        }
        Stats {
            median: med,
            spread,
        }
    }
}

/// `|x - median| / spread` over the canonical frame, averaged over 3x3 so that single noisy
/// pixels do not count.
fn zmap(median: &[f32], spread: &[f32], canon: &Gray) -> Gray {
    let data = canon
        .data
        .iter()
        .zip(median)
        .zip(spread)
        .map(|((x, m), s)| (x - m).abs() / s)
        .collect();
    Gray {
        width: canon.width,
        height: canon.height,
        data,
    }
    .box_blur(1)
}

#[cfg(test)]
mod tests;
