//! Position-free comparison of local colour statistics: parts that hang, slide and turn by any
//! angle (a painted plate on a wire), where no registration holds and a defect is a patch
//! that looks like no patch of any good part.
//!
//! 1. The image is brought to a working scale (its shorter side about [`WORKING_SHORT_SIDE`]
//!    pixels for the good images' median size), its gain normalised (the median luma brought
//!    to 128, chroma by the same factor) and cut into cells of [`CELL`] × [`CELL`] pixels.
//! 2. Each cell is described by the mean and the spread of luma and of both chroma channels
//!    and the mean luma gradient: a hue change (rust on blue paint) moves the chroma means, a
//!    scratch the spreads and the gradient, a stain the luma mean.
//! 3. The model is a memory of the good images' cell descriptors, at most [`BANK_SIZE`] of
//!    them (a greedy k-centre coreset: every good descriptor lies near a kept one, rare good
//!    patterns included).
//! 4. A cell's anomaly is the distance of its descriptor to the nearest one in memory (grey
//!    levels); the image score is the map's largest value, a region the cells over threshold.
//!
//! Position plays no part, so a missing feature that leaves only good-looking patches (a
//! rivet gone, showing plain handle) is not seen here: parts on a fixture keep the aligned
//! method, which compares per location.

use serde::{Deserialize, Serialize};

use crate::regions::{Component, Region, surface_region};
use crate::stats::median;
use crate::{Gray, Image, InspectError};

/// The shorter side of the working image for a good image of the median size.
pub const WORKING_SHORT_SIDE: usize = 128;
/// Side of a cell, in working pixels.
pub const CELL: usize = 4;
/// Largest memory: bounds the model file (2 bytes a value) and the time to score.
pub const BANK_SIZE: usize = 4096;
/// Values per descriptor: luma, Cb and Cr means, their spreads, the mean luma gradient, and
/// one zero so that a descriptor is eight floats (one vector register pair).
pub const FEATURES: usize = 8;
/// The level gain normalisation brings an image's median luma to.
const REFERENCE_LEVEL: f32 = 128.0;
/// Fewest cells along a side of the working image.
const MIN_CELLS: usize = 3;
/// Largest statistic a model file may hold (descriptors are grey levels, normalised).
const MAX_STATISTIC: f32 = 1.0e4;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PatchModel {
    /// Working pixels per input pixel (at most 1).
    pub scale: f32,
    /// Whether the good images had colour: a mono model ignores an image's chroma; a colour
    /// model reads a mono image as grey (a camera swapped for a mono one is flagged).
    pub colour: bool,
    /// The memory, [`FEATURES`] values a descriptor, sorted by the first (luma mean).
    #[serde(with = "crate::half_floats")]
    pub bank: Vec<f32>,
}

/// One image cut into described cells.
pub struct Cells {
    /// Cells across and down.
    columns: usize,
    rows: usize,
    /// [`FEATURES`] values per cell, row by row.
    descriptors: Vec<f32>,
    /// Input pixels per cell, across and down.
    size: (f32, f32),
}

/// Working pixels per input pixel for a set of good images: the median shorter side brought to
/// [`WORKING_SHORT_SIDE`], never enlarged.
pub fn scale_for(images: &[&Image]) -> f32 {
    let mut sides: Vec<f32> = images
        .iter()
        .map(|i| i.width().min(i.height()) as f32)
        .collect();
    let side = median(&mut sides).max(1.0);
    (WORKING_SHORT_SIDE as f32 / side).min(1.0)
}

/// Describes the cells of an image at the working scale `scale`; chroma counts when `colour`.
pub fn cells(img: &Image, scale: f32, colour: bool) -> Result<Cells, InspectError> {
    let (w, h) = (img.width(), img.height());
    let (columns, rows) = (
        (w as f32 * scale / CELL as f32).round() as usize,
        (h as f32 * scale / CELL as f32).round() as usize,
    );
    if columns < MIN_CELLS || rows < MIN_CELLS {
        let min = (MIN_CELLS as f32 * CELL as f32 / scale).ceil() as usize;
        return Err(InspectError::TooSmall {
            width: w,
            height: h,
            min,
        });
    }
    let (ww, wh) = (columns * CELL, rows * CELL);
    let luma = to_working(&img.luma, ww, wh);
    let mut sample: Vec<f32> = luma.data.iter().step_by(3).copied().collect();
    let level = median(&mut sample);
    let gain = if level > 1.0 {
        REFERENCE_LEVEL / level
    } else {
        1.0
    };
    let chroma = img
        .chroma
        .as_ref()
        .filter(|_| colour)
        .map(|[cb, cr]| [to_working(cb, ww, wh), to_working(cr, ww, wh)]);
    let mut descriptors = vec![0f32; columns * rows * FEATURES];
    let n = (CELL * CELL) as f32;
    for (cell, d) in descriptors.chunks_exact_mut(FEATURES).enumerate() {
        let (x0, y0) = ((cell % columns) * CELL, (cell / columns) * CELL);
        let mut gradient = 0f32;
        for y in y0..y0 + CELL {
            for x in x0..x0 + CELL {
                let (xl, xr) = (x.saturating_sub(1), (x + 1).min(ww - 1));
                let (yu, yd) = (y.saturating_sub(1), (y + 1).min(wh - 1));
                gradient += (luma.get(xr, y) - luma.get(xl, y)).abs()
                    + (luma.get(x, yd) - luma.get(x, yu)).abs();
            }
        }
        let planes = [
            Some(&luma),
            chroma.as_ref().map(|c| &c[0]),
            chroma.as_ref().map(|c| &c[1]),
        ];
        for (p, plane) in planes.into_iter().enumerate() {
            let Some(plane) = plane else { continue };
            let (mut sum, mut squares) = (0f32, 0f32);
            for y in y0..y0 + CELL {
                for &v in &plane.data[y * ww + x0..y * ww + x0 + CELL] {
                    sum += v;
                    squares += v * v;
                }
            }
            let mean = sum / n;
            d[p] = gain * mean;
            d[3 + p] = gain * (squares / n - mean * mean).max(0.0).sqrt();
        }
        d[6] = gain * gradient / (2.0 * n);
    }
    Ok(Cells {
        columns,
        rows,
        descriptors,
        size: (w as f32 / columns as f32, h as f32 / rows as f32),
    })
}

/// A plane brought to exactly `width × height`: block means by the whole factor, then bilinear.
fn to_working(plane: &Gray, width: usize, height: usize) -> Gray {
    let factor = (plane.width / width).min(plane.height / height).max(1);
    let reduced = plane.downscale(factor);
    if (reduced.width, reduced.height) == (width, height) {
        reduced
    } else {
        reduced.resize(width, height)
    }
}

/// Squared distance between two descriptors.
#[inline]
fn distance2(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| (x - y) * (x - y)).sum()
}

/// The nearest descriptor of `bank` (sorted by its first value) to `query`: its squared
/// distance and its index. The search starts where the query's first value would lie and
/// walks outwards both ways, each way stopping once the first values alone differ by more
/// than the best distance found: exact, and most of the memory is never read.
fn nearest(bank: &[f32], query: &[f32]) -> (f32, usize) {
    let count = bank.len() / FEATURES;
    let at = |i: usize| &bank[i * FEATURES..(i + 1) * FEATURES];
    let (mut low, mut high) = (0, count);
    while low < high {
        let mid = (low + high) / 2;
        if at(mid)[0] < query[0] {
            low = mid + 1;
        } else {
            high = mid;
        }
    }
    let mut best = (f32::INFINITY, 0);
    let mut check = |i: usize| {
        let d = at(i);
        let gap = d[0] - query[0];
        if gap * gap > best.0 {
            return false;
        }
        let d2 = distance2(d, query);
        if d2 < best.0 {
            best = (d2, i);
        }
        true
    };
    for i in low..count {
        if !check(i) {
            break;
        }
    }
    for i in (0..low).rev() {
        if !check(i) {
            break;
        }
    }
    best
}

/// At most `size` of `descriptors` (greedy k-centre: each next one the farthest from those
/// kept), so that every descriptor lies near a kept one.
fn coreset(descriptors: &[f32], size: usize) -> Vec<f32> {
    let count = descriptors.len() / FEATURES;
    if count <= size {
        return descriptors.to_vec();
    }
    let at = |i: usize| &descriptors[i * FEATURES..(i + 1) * FEATURES];
    let mut kept = Vec::with_capacity(size * FEATURES);
    let mut gap = vec![f32::INFINITY; count];
    let mut next = 0;
    for _ in 0..size {
        kept.extend_from_slice(at(next));
        let chosen = at(next).to_vec();
        let mut farthest = (0f32, 0usize);
        for (i, g) in gap.iter_mut().enumerate() {
            *g = g.min(distance2(at(i), &chosen));
            if *g > farthest.0 {
                farthest = (*g, i);
            }
        }
        next = farthest.1;
    }
    kept
}

impl PatchModel {
    /// The memory of the good images' cells.
    pub fn learn(images: &[&Cells], scale: f32, colour: bool) -> PatchModel {
        let all: Vec<f32> = images
            .iter()
            .flat_map(|c| c.descriptors.iter().copied())
            .collect();
        let mut kept: Vec<Vec<f32>> = coreset(&all, BANK_SIZE)
            .chunks_exact(FEATURES)
            .map(|d| d.iter().copied().map(crate::half_floats::rounded).collect())
            .collect();
        kept.sort_by(|a, b| a[0].total_cmp(&b[0]));
        let bank = kept.concat();
        PatchModel {
            scale,
            colour,
            bank,
        }
    }

    pub fn prepare(&self, img: &Image) -> Result<Cells, InspectError> {
        cells(img, self.scale, self.colour)
    }

    /// The anomaly map, a value per cell, and per cell the luma shift from its nearest good
    /// descriptor (grey levels, normalised; negative is darker).
    pub fn anomaly(&self, c: &Cells) -> (Gray, Gray) {
        let mut map = Gray::new(c.columns, c.rows, 0.0);
        let mut shift = Gray::new(c.columns, c.rows, 0.0);
        for (i, q) in c.descriptors.chunks_exact(FEATURES).enumerate() {
            let (d2, j) = nearest(&self.bank, q);
            map.data[i] = d2.sqrt();
            shift.data[i] = q[0] - self.bank[j * FEATURES];
        }
        (map, shift)
    }

    /// The image score alone.
    pub fn image_score(&self, c: &Cells) -> f32 {
        self.anomaly(c).0.max()
    }

    pub(crate) fn region(
        &self,
        c: &Component,
        cells: &Cells,
        shift: &Gray,
        input: &Gray,
    ) -> Region {
        surface_region(c, shift, cells.size, input)
    }

    /// Whether a model read from a file can score: a whole number of finite, bounded
    /// descriptors, at least one, and a usable scale.
    pub(crate) fn is_consistent(&self) -> bool {
        self.scale > 0.0
            && self.scale <= 1.0
            && !self.bank.is_empty()
            && self.bank.len().is_multiple_of(FEATURES)
            && self
                .bank
                .iter()
                .all(|v| v.is_finite() && v.abs() <= MAX_STATISTIC)
            && self
                .bank
                .chunks_exact(FEATURES)
                .zip(self.bank.chunks_exact(FEATURES).skip(1))
                .all(|(a, b)| a[0] <= b[0])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A blue plate on grey at angle `turn` (radians), with an optional rust spot (reddish
    /// brown, about as bright as the paint) at `(fx, fy)` of the plate.
    fn plate(turn: f32, spot: Option<(f32, f32)>, seed: u64) -> Image {
        let (w, h) = (160usize, 120usize);
        let mut rgb = vec![0u8; w * h * 3];
        let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
        let (s, c) = turn.sin_cos();
        for y in 0..h {
            for x in 0..w {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                let noise = (state % 7) as i32 - 3;
                let (dx, dy) = (x as f32 - 80.0, y as f32 - 60.0);
                let (u, v) = (dx * c + dy * s, -dx * s + dy * c);
                let on_plate = u.abs() < 45.0 && v.abs() < 30.0;
                let mut px = if on_plate {
                    [40, 70, 160]
                } else {
                    [120, 120, 120]
                };
                if let Some((fx, fy)) = spot
                    && on_plate
                    && (u - fx).hypot(v - fy) < 5.0
                {
                    px = [130, 60, 30];
                }
                let i = (y * w + x) * 3;
                for k in 0..3 {
                    rgb[i + k] = (px[k] + noise).clamp(0, 255) as u8;
                }
            }
        }
        Image::from_rgb(w, h, &rgb)
    }

    #[test]
    fn rust_on_a_turned_plate_stands_out_where_it_is() {
        let good: Vec<Image> = (0..8).map(|i| plate(i as f32 * 0.4, None, i)).collect();
        let refs: Vec<&Image> = good.iter().collect();
        let scale = scale_for(&refs);
        let described: Vec<Cells> = good
            .iter()
            .map(|g| cells(g, scale, true).unwrap())
            .collect();
        let model = PatchModel::learn(&described.iter().collect::<Vec<_>>(), scale, true);
        let clean = model.image_score(&model.prepare(&plate(2.0, None, 50)).unwrap());
        let rusty = model.prepare(&plate(1.1, Some((20.0, -10.0)), 51)).unwrap();
        let (map, _) = model.anomaly(&rusty);
        assert!(map.max() > 2.0 * clean, "{} vs {clean}", map.max());
        // The spot's centre, in the input: plate centre plus the turned offset.
        let (s, c) = 1.1f32.sin_cos();
        let (x, y) = (80.0 + 20.0 * c + 10.0 * s, 60.0 + 20.0 * s - 10.0 * c);
        let peak = (0..map.data.len())
            .max_by(|&a, &b| map.data[a].total_cmp(&map.data[b]))
            .unwrap_or(0);
        let (px, py) = (
            (peak % map.width) as f32 * rusty.size.0,
            (peak / map.width) as f32 * rusty.size.1,
        );
        assert!(
            (px - x).abs() < 12.0 && (py - y).abs() < 12.0,
            "{px},{py} vs {x},{y}"
        );
        // Judged on luma alone, the same spot (about as bright as the paint) stands out less.
        let grey: Vec<Cells> = good
            .iter()
            .map(|g| cells(g, scale, false).unwrap())
            .collect();
        let mono = PatchModel::learn(&grey.iter().collect::<Vec<_>>(), scale, false);
        let spot = plate(1.1, Some((20.0, -10.0)), 51);
        let ratio = |m: &PatchModel| {
            m.image_score(&m.prepare(&spot).unwrap())
                / m.image_score(&m.prepare(&plate(2.0, None, 50)).unwrap())
        };
        assert!(
            ratio(&model) > ratio(&mono),
            "{} vs {}",
            ratio(&model),
            ratio(&mono)
        );
    }

    #[test]
    fn the_memory_is_bounded_and_keeps_rare_good_patterns() {
        // Many copies of one descriptor and one outlier: the outlier is kept.
        let mut all = Vec::new();
        for _ in 0..100 {
            all.extend_from_slice(&[1.0; FEATURES]);
        }
        all.extend_from_slice(&[50.0; FEATURES]);
        let kept = coreset(&all, 2);
        assert_eq!(kept.len(), 2 * FEATURES);
        assert!(kept.contains(&50.0));
        assert_eq!(coreset(&all[..3 * FEATURES], 5).len(), 3 * FEATURES);
    }

    #[test]
    fn the_pruned_search_finds_the_nearest_descriptor() {
        let mut state = 7u64;
        let mut next = || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state % 1000) as f32 / 10.0
        };
        let mut rows: Vec<Vec<f32>> = (0..300)
            .map(|_| (0..FEATURES).map(|_| next()).collect())
            .collect();
        rows.sort_by(|a, b| a[0].total_cmp(&b[0]));
        let bank = rows.concat();
        for _ in 0..50 {
            let q: Vec<f32> = (0..FEATURES).map(|_| next()).collect();
            let brute = (0..300)
                .map(|i| distance2(&bank[i * FEATURES..(i + 1) * FEATURES], &q))
                .fold(f32::INFINITY, f32::min);
            assert_eq!(nearest(&bank, &q).0, brute);
        }
    }

    #[test]
    fn too_small_an_image_is_refused() {
        let tiny = Image::from(Gray::new(8, 8, 10.0));
        assert!(matches!(
            cells(&tiny, 1.0, false),
            Err(InspectError::TooSmall { .. })
        ));
    }
}
