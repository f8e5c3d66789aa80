//! Long, faint, wavy lines: the cracks a straight line detector misses because they wander off
//! its line, and that the eye finds because they run on.
//!
//! A pixel's dark contrast across the path (how much darker it is than both pixels [`OFFSET`]
//! steps either side; for bright paths, how much brighter) is summed along the best path
//! through it, a path that may move one pixel sideways at each step (so it follows any course
//! within 45° of its axis), with weights decaying by `1 − 1/LENGTH` per step in both
//! directions. The result is about the mean contrast
//! along the darkest wavy path of about [`LENGTH`] steps through the pixel: the grain of a good
//! surface is dark in short pieces that go nowhere, a crack stays dark for its whole length.
//! Two axes (paths running along the rows and along the columns) cover every course. A path
//! can bend towards a mark from beside it, so the response spreads around a crack, weaker by
//! the decay per pixel of distance: a region is boxed on the pixels whose own level stands out.

use crate::Gray;

/// How far either side of a pixel the path's contrast is measured.
pub const OFFSET: usize = 2;
/// The decay length of a path's weights, in steps either side of the pixel.
pub const LENGTH: f32 = 30.0;

/// The path responses, each positive where a path runs and never negative: dark paths along
/// the rows (horizontal courses), dark paths along the columns, then the same for bright paths.
pub fn paths(level: &Gray) -> [Gray; 4] {
    let [dark_rows, bright_rows] = along_columns(&level.transposed()).map(|g| g.transposed());
    let [dark_columns, bright_columns] = along_columns(level);
    [dark_rows, dark_columns, bright_rows, bright_columns]
}

/// The dark and the bright response of paths running down the columns of `level`.
fn along_columns(level: &Gray) -> [Gray; 2] {
    across_columns(level, OFFSET).map(|contrast| {
        let down = accumulate(&contrast, Sweep::Down);
        let up = accumulate(&contrast, Sweep::Up);
        let norm = (2.0 * LENGTH).recip();
        // Both sweeps count the pixel's own contrast once.
        down.zip(&up, |d, u| d + u)
            .zip(&contrast, |both, c| (both - c) * norm)
    })
}

/// How much darker, and how much brighter, each pixel is than both pixels `offset` columns
/// either side (0 if it is not, and within `offset` of the left and right borders).
fn across_columns(level: &Gray, offset: usize) -> [Gray; 2] {
    let w = level.width;
    let mut dark = Gray::new(w, level.height, 0.0);
    let mut bright = dark.clone();
    if w <= 2 * offset {
        return [dark, bright];
    }
    let rows = level.data.chunks_exact(w).zip(
        dark.data
            .chunks_exact_mut(w)
            .zip(bright.data.chunks_exact_mut(w)),
    );
    for (row, (dark_row, bright_row)) in rows {
        for x in offset..w - offset {
            let (a, v, b) = (row[x - offset], row[x], row[x + offset]);
            dark_row[x] = (a.min(b) - v).max(0.0);
            bright_row[x] = (v - a.max(b)).max(0.0);
        }
    }
    [dark, bright]
}

#[derive(Clone, Copy)]
enum Sweep {
    Down,
    Up,
}

/// Per pixel, its contrast plus the decayed best of the three pixels before it in the sweep
/// (the row above for `Down`, below for `Up`: the one straight before and its two
/// neighbours): the weighted sum of the best path reaching it.
fn accumulate(contrast: &Gray, sweep: Sweep) -> Gray {
    let (w, h) = (contrast.width, contrast.height);
    let keep = 1.0 - 1.0 / LENGTH;
    let mut out = contrast.clone();
    if w == 0 {
        return out;
    }
    // The best of each pixel's three predecessors, then its decayed share added: two passes
    // over whole rows, which the compiler vectorises.
    let mut best = vec![0f32; w];
    let mut add_best_of = |from: usize, to: usize| {
        let prev = &out.data[from * w..(from + 1) * w];
        best[0] = prev[0].max(prev[w.min(2) - 1]);
        best[w - 1] = prev[w - 1].max(prev[w.saturating_sub(2)]);
        for (b, three) in best[1..].iter_mut().zip(prev.windows(3)) {
            *b = three[0].max(three[1]).max(three[2]);
        }
        for (v, b) in out.data[to * w..(to + 1) * w].iter_mut().zip(&best) {
            *v += keep * b;
        }
    };
    match sweep {
        Sweep::Down => (1..h).for_each(|y| add_best_of(y - 1, y)),
        Sweep::Up => (1..h).rev().for_each(|y| add_best_of(y, y - 1)),
    }
    out
}

#[cfg(test)]
mod tests {
    use rand::rngs::StdRng;
    use rand::{Rng, SeedableRng};

    use super::*;

    /// Uniform noise in -1..1 with, when `depth` is not 0, a wavy crack `depth` darker (one
    /// pixel wide, moving a row up or down every 7 columns) from column 30 to 130 about row
    /// 60. Also returns the crack's pixels.
    fn noisy(seed: u64, depth: f32) -> (Gray, Vec<(usize, usize)>) {
        let mut rng = StdRng::seed_from_u64(seed);
        let mut g = Gray::new(160, 120, 0.0);
        g.data
            .iter_mut()
            .for_each(|v| *v = rng.random_range(-1.0..1.0));
        let mut crack = Vec::new();
        let mut y = 60usize;
        for x in 30..130 {
            if x % 7 == 0 {
                y = if (x / 7) % 2 == 0 { y + 1 } else { y - 1 };
            }
            g.set(x, y, g.get(x, y) - depth);
            crack.push((x, y));
        }
        (g, crack)
    }

    #[test]
    fn a_straight_dark_line_answers_with_its_contrast_on_its_axis_only() {
        let mut g = Gray::new(200, 200, 0.0);
        for y in 0..200 {
            g.set(100, y, -1.0);
        }
        let [rows, columns, ..] = paths(&g);
        // At row 100 the path runs 101 pixels up (row 0 included) and 100 down; weights decay
        // by `keep` per step and the pixel itself is counted once.
        let keep = 1.0 - 1.0 / LENGTH;
        let up = (1.0 - keep.powi(101)) * LENGTH;
        let down = (1.0 - keep.powi(100)) * LENGTH;
        let expected = (up + down - 1.0) / (2.0 * LENGTH);
        let mid = columns.get(100, 100);
        assert!((mid - expected).abs() < 1e-3, "{mid} vs {expected}");
        // Beside it, a path can bend towards it: the response falls off with the distance.
        for d in 1..20 {
            assert!(columns.get(100 - d, 100) < columns.get(101 - d, 100));
        }
        assert!(columns.get(80, 100) < 0.6 * mid);
        assert_eq!(
            rows.get(100, 100),
            0.0,
            "paths along the rows see no contrast"
        );
        assert!(rows.data.iter().all(|&v| v >= 0.0));
    }

    #[test]
    fn a_bright_line_answers_in_the_bright_channels_as_a_dark_one_in_the_dark() {
        let (cracked, _) = noisy(4, 1.0);
        let [dark_rows, dark_columns, bright_rows, bright_columns] = paths(&cracked);
        let [
            neg_dark_rows,
            neg_dark_columns,
            neg_bright_rows,
            neg_bright_columns,
        ] = paths(&cracked.map(|v| -v));
        assert_eq!(bright_rows, neg_dark_rows);
        assert_eq!(bright_columns, neg_dark_columns);
        assert_eq!(dark_rows, neg_bright_rows);
        assert_eq!(dark_columns, neg_bright_columns);
        assert!(dark_rows.max() > bright_rows.max(), "the crack is dark");
    }

    #[test]
    fn a_faint_wavy_crack_stands_out_of_noise_that_hides_it_pixel_by_pixel() {
        let (cracked, crack) = noisy(1, 1.0);
        let (clean, _) = noisy(1, 0.0);
        // Pixel by pixel, half the crack is no darker than the clean noise's darkest pixel...
        let darkest = clean.data.iter().copied().fold(f32::MAX, f32::min);
        let hidden = crack
            .iter()
            .filter(|&&(x, y)| cracked.get(x, y) > darkest)
            .count();
        assert!(3 * hidden > crack.len(), "{hidden} of {}", crack.len());
        // ...but its path is darker than any path of the clean noise, all along its middle.
        let [rows, ..] = paths(&cracked);
        let [clean_rows, ..] = paths(&clean);
        let clean_max = clean_rows.max();
        for &(x, y) in &crack[20..80] {
            let on_crack = rows.get(x, y);
            assert!(
                on_crack > 1.25 * clean_max,
                "{on_crack} vs {clean_max} at {x},{y}"
            );
        }
    }

    #[test]
    fn degenerate_sizes_give_zero_responses() {
        for (w, h) in [(0, 0), (1, 5), (5, 1), (4, 4)] {
            for p in paths(&Gray::new(w, h, 3.0)) {
                assert_eq!((p.width, p.height), (w, h));
                assert!(p.data.iter().all(|&v| v == 0.0));
            }
        }
    }
}
