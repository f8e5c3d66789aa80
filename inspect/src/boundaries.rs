//! Long straight boundaries across the grain: where a ground surface was ground unevenly (a
//! band ground again, a pass that stopped short), its level changes along a straight line that
//! runs across the whole part, across the grinding marks. Pixel by pixel the change is smaller
//! than what the marks and the shading of good surfaces make, but averaged along a line it
//! stands out: a boundary lines up over its whole length, the marks across it do not.
//!
//! Per axis: the step across the rows at each pixel (the mean of 4 rows above it minus that of
//! 4 rows below, 2 rows either side left out, none read from the border band above and below
//! that the texture model does not judge), in units of its own robust spread over the image,
//! is averaged along a line of 124 pixels through the pixel (31 blocks of 4 columns, centred on
//! the pixel's block), level or up to about 9° off; the response is the signed mean of largest
//! size. Boundaries along the columns are those of the transposed image.
//!
//! Along the grain, long straight steps are the grain itself (a ground tile's marks, a strip's
//! rolling lines): which axis is judged follows the good images' [`Grain`], learned when
//! fitting. Measured on the magnetic tiles (marks down the columns; four splits of the good
//! images, mean AUROC): judging boundaries along the rows lifts the tiles 0.828 → 0.868 and
//! their "uneven" grinding, whose bands end in such a boundary, 0.656 → 0.769; judging both
//! axes (Python prototype) lost: 0.787. KolektorSDD, grain along the rows, stays at 0.975.

use serde::{Deserialize, Serialize};

use crate::Gray;
use crate::stats::median_spread;

/// Rows of each of the two boxes whose means a step compares.
const BOX: usize = 4;
/// Rows left out between each box and the pixel.
const GAP: usize = 2;
/// Columns averaged into one block before the lines are followed: a line of 124 pixels is as
/// well measured by 31 block means, at a quarter of the cost.
const BLOCK: usize = 4;
/// Blocks either side of the centre along a boundary's line (31 in all, 124 pixels: about half
/// the working image's shorter side, a boundary running across the part).
const HALF_LENGTH: usize = 15;
/// Blocks sheared at a time when following the lines (see [`long_mean`]).
const SEGMENT: usize = 256;
/// Slopes of the lines, in rows per column (up to about 9°: ±0.1 at most lost the tiles 0.006,
/// ±0.2 gained nothing more).
const SLOPES: [f32; 7] = [-0.15, -0.1, -0.05, 0.0, 0.05, 0.1, 0.15];
/// Smallest robust spread of the step, in grey levels, used for normalisation.
const MIN_STEP_SPREAD: f32 = 0.5;
/// One axis's gradient energy at least this multiple of the other's makes a grain.
const ANISOTROPY: f32 = 1.25;

/// Which way the good surfaces' marks run, from their gradient energy; boundaries across the
/// marks are judged.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Grain {
    /// Marks run down the columns (levels change more across the rows than down them):
    /// boundaries along the rows are judged.
    Columns,
    /// Marks run along the rows: boundaries along the columns are judged.
    Rows,
    /// No direction dominates: boundaries along both axes are judged.
    None,
}

impl Grain {
    /// The grain of surfaces whose summed gradient energies across the columns (neighbours in
    /// a row) and across the rows (neighbours in a column) are `across_columns` and
    /// `across_rows`.
    pub fn of(across_columns: f64, across_rows: f64) -> Grain {
        let anisotropy = f64::from(ANISOTROPY);
        if across_columns > anisotropy * across_rows {
            Grain::Columns
        } else if across_rows > anisotropy * across_columns {
            Grain::Rows
        } else {
            Grain::None
        }
    }

    /// Whether boundaries along axis `axis` (0: along the rows, 1: along the columns) are
    /// judged.
    pub fn judges(self, axis: usize) -> bool {
        match self {
            Grain::Columns => axis == 0,
            Grain::Rows => axis == 1,
            Grain::None => true,
        }
    }
}

/// The mean absolute difference of neighbours in a row and of neighbours in a column.
pub fn gradient_energy(g: &Gray) -> (f32, f32) {
    let (w, h) = (g.width, g.height);
    let mut across_columns = 0f64;
    let mut across_rows = 0f64;
    for (y, row) in g.data.chunks_exact(w.max(1)).enumerate() {
        across_columns += row
            .windows(2)
            .map(|p| f64::from((p[1] - p[0]).abs()))
            .sum::<f64>();
        if let Some(next) = g.data.get((y + 1) * w..(y + 2) * w) {
            across_rows += row
                .iter()
                .zip(next)
                .map(|(a, b)| f64::from((b - a).abs()))
                .sum::<f64>();
        }
    }
    let mean = |sum: f64, n: usize| if n == 0 { 0.0 } else { (sum / n as f64) as f32 };
    (
        mean(across_columns, w.saturating_sub(1) * h),
        mean(across_rows, w * h.saturating_sub(1)),
    )
}

/// The boundary responses of the (lightly smoothed) working image: along the rows, then along
/// the columns, each 0 where `grain` does not judge that axis; positive where the side above
/// (left of) the line is brighter. No step reads the `border` rows at the top and the bottom
/// of the image (for boundaries along the columns, the columns at its sides), where a part's
/// own edge often lies: a row whose boxes would reach into them has no step. Along the line
/// every pixel counts.
pub fn boundaries(smooth: &Gray, border: usize, grain: Grain) -> [Gray; 2] {
    let unjudged = || Gray::new(smooth.width, smooth.height, 0.0);
    [
        if grain.judges(0) {
            along_rows(smooth, border)
        } else {
            unjudged()
        },
        if grain.judges(1) {
            along_rows(&smooth.transposed(), border).transposed()
        } else {
            unjudged()
        },
    ]
}

fn along_rows(smooth: &Gray, border: usize) -> Gray {
    let (w, h) = (smooth.width, smooth.height);
    let mut out = Gray::new(w, h, 0.0);
    if w == 0 {
        return out;
    }
    let means = long_mean(&column_blocks(&step_across_rows(smooth, border)));
    for (row, blocks) in out
        .data
        .chunks_exact_mut(w)
        .zip(means.data.chunks_exact(means.width))
    {
        for (pixels, &v) in row.chunks_mut(BLOCK).zip(blocks) {
            pixels.fill(v);
        }
    }
    out
}

/// The mean of each [`BLOCK`] columns (of fewer, for the last block of a row); `g` not empty.
fn column_blocks(g: &Gray) -> Gray {
    let blocks = g.width.div_ceil(BLOCK);
    let mut out = Gray::new(blocks, g.height, 0.0);
    for (row, out_row) in g
        .data
        .chunks_exact(g.width)
        .zip(out.data.chunks_exact_mut(blocks))
    {
        for (block, o) in row.chunks(BLOCK).zip(out_row) {
            *o = block.iter().sum::<f32>() / block.len() as f32;
        }
    }
    out
}

/// The mean of [`BOX`] rows above each pixel minus that of [`BOX`] rows below, [`GAP`] rows
/// either side left out, in units of its robust spread over the image; 0 on the rows whose
/// boxes would reach within `border` of the top or the bottom.
fn step_across_rows(g: &Gray, border: usize) -> Gray {
    let (w, h) = (g.width, g.height);
    let mut out = Gray::new(w, h, 0.0);
    let reach = GAP + BOX;
    let rows = border + reach..h.saturating_sub(border + reach);
    if rows.is_empty() || w == 0 {
        return out;
    }
    let row = |y: usize| &g.data[y * w..(y + 1) * w];
    let norm = (BOX as f32).recip();
    for y in rows.clone() {
        let out_row = &mut out.data[y * w..(y + 1) * w];
        for k in GAP + 1..=reach {
            for (o, (a, b)) in out_row.iter_mut().zip(row(y - k).iter().zip(row(y + k))) {
                *o += (a - b) * norm;
            }
        }
    }
    let stepped = &mut out.data[rows.start * w..rows.end * w];
    let mut sample: Vec<f32> = stepped.iter().step_by(7).copied().collect();
    let (median, spread) = median_spread(&mut sample);
    let scale = spread.max(MIN_STEP_SPREAD).recip();
    stepped.iter_mut().for_each(|v| *v = (*v - median) * scale);
    out
}

/// Per block of `step` (block means of a step image), of the means along the lines through it
/// ([`SLOPES`], `2 × HALF_LENGTH + 1` blocks, nothing beyond the border), the one of largest
/// size.
///
/// Per slope, the image is sheared so that each line lies in one row: a line of this slope
/// through (x, y) meets column x' at row y + shift[x'] − shift[x], so sheared row r holds the
/// pixels (x, r + shift[x]). Prefix sums along each sheared row give every line's mean. The
/// columns are sheared [`SEGMENT`] at a time (with the lines' reach either side), so that the
/// sheared rows and the zero rows around the image stay few however wide the image is.
fn long_mean(step: &Gray) -> Gray {
    let (w, h) = (step.width, step.height);
    let mut best = Gray::new(w, h, 0.0);
    let shifts: Vec<Vec<isize>> = SLOPES
        .iter()
        .map(|slope| {
            (0..w)
                .map(|x| (slope * BLOCK as f32 * (x as f32 - w as f32 / 2.0)).round() as isize)
                .collect()
        })
        .collect();
    // Each segment's columns and the columns its lines reach.
    let segments: Vec<(std::ops::Range<usize>, std::ops::Range<usize>)> = (0..w)
        .step_by(SEGMENT)
        .map(|start| {
            let end = (start + SEGMENT).min(w);
            let reach = start.saturating_sub(HALF_LENGTH)..(end + HALF_LENGTH).min(w);
            (start..end, reach)
        })
        .collect();
    // The lowest shift over some columns, and how far the highest climbs above it.
    let span = |shift: &[isize]| {
        let lowest = shift.iter().copied().min().unwrap_or(0);
        (lowest, shift.iter().copied().max().unwrap_or(0) - lowest)
    };
    // Zero rows above and below, as many as any line climbs: no read leaves the image.
    let pad = shifts
        .iter()
        .flat_map(|shift| {
            segments
                .iter()
                .map(|(_, reach)| span(&shift[reach.clone()]).1)
        })
        .max()
        .unwrap_or(0) as usize;
    let mut padded = vec![0f32; (h + 2 * pad) * w];
    padded[pad * w..(pad + h) * w].copy_from_slice(&step.data);
    let norm = ((2 * HALF_LENGTH + 1) as f32).recip();
    let widest = segments
        .iter()
        .map(|(_, reach)| reach.len())
        .max()
        .unwrap_or(0);
    let mut prefix = vec![0f32; widest + 1];
    let mut means = vec![0f32; (h + pad) * widest];
    for shift in &shifts {
        for (columns, reach) in &segments {
            let (lowest, climb) = span(&shift[reach.clone()]);
            let cols = reach.len();
            // Sheared row i holds the line {(x, r + shift[x])} with r = i − climb − lowest:
            // from the first line that meets the image to the last.
            let rows = h + climb as usize;
            for (i, out) in means[..rows * cols].chunks_exact_mut(cols).enumerate() {
                // Padded row of (x, r + shift[x]): r + shift[x] + pad.
                let first = i as isize - climb - lowest + pad as isize;
                let mut sum = 0f32;
                for (x, p) in reach.clone().zip(&mut prefix[1..]) {
                    sum += padded[(first + shift[x]) as usize * w + x];
                    *p = sum;
                }
                // Within the reach, a line is clipped where the image ends.
                for (x, o) in out.iter_mut().enumerate() {
                    let (from, to) = (
                        x.saturating_sub(HALF_LENGTH),
                        (x + HALF_LENGTH + 1).min(cols),
                    );
                    *o = (prefix[to] - prefix[from]) * norm;
                }
            }
            for (y, row) in best.data.chunks_exact_mut(w).enumerate() {
                for x in columns.clone() {
                    let i = (y as isize - shift[x] + climb + lowest) as usize;
                    let mean = means[i * cols + x - reach.start];
                    if mean.abs() > row[x].abs() {
                        row[x] = mean;
                    }
                }
            }
        }
    }
    best
}

#[cfg(test)]
mod tests {
    use rand::rngs::StdRng;
    use rand::{Rng, SeedableRng};

    use super::*;

    /// The band the texture model leaves out at the working scale.
    const BORDER: usize = 18;

    /// A noisy surface with marks down the columns. With a `boundary` `(y0, slope, span)`,
    /// the pixels of the columns in `span` below the line `y = y0 + slope × x` are ground
    /// `shift` grey levels brighter.
    fn ground(seed: u64, boundary: Option<(f32, f32, std::ops::Range<usize>)>, shift: f32) -> Gray {
        let mut rng = StdRng::seed_from_u64(seed);
        let marks: Vec<f32> = (0..240).map(|_| rng.random_range(-12.0..12.0)).collect();
        let mut g = Gray::new(240, 200, 0.0);
        for y in 0..200 {
            for (x, mark) in marks.iter().enumerate() {
                let mut v = 120.0 + mark + rng.random_range(-6.0..6.0);
                if let Some((y0, slope, span)) = &boundary
                    && span.contains(&x)
                    && y as f32 >= y0 + slope * x as f32
                {
                    v += shift;
                }
                g.set(x, y, v);
            }
        }
        g.box_blur(1)
    }

    fn strongest(g: &Gray) -> (f32, usize, usize) {
        let mut best = (0f32, 0, 0);
        for y in 20..g.height - 20 {
            for x in 20..g.width - 20 {
                if g.get(x, y).abs() > best.0.abs() {
                    best = (g.get(x, y), x, y);
                }
            }
        }
        best
    }

    #[test]
    fn a_faint_boundary_across_the_marks_answers_along_its_line() {
        let [rows, _] = boundaries(
            &ground(1, Some((100.0, 0.0, 0..240)), 4.0),
            BORDER,
            Grain::None,
        );
        let [clean, _] = boundaries(&ground(1, None, 0.0), BORDER, Grain::None);
        let (peak, _, y) = strongest(&rows);
        // Brighter below: negative, on the boundary (between the last dark and the first
        // bright row).
        assert!(peak < 0.0, "{peak}");
        assert!((98..=101).contains(&y), "{y}");
        let (clean_peak, ..) = strongest(&clean);
        assert!(
            peak.abs() > 3.0 * clean_peak.abs(),
            "{peak} vs {clean_peak}"
        );
    }

    #[test]
    fn a_slanted_boundary_answers_as_a_level_one_and_a_short_one_less() {
        let peak = |boundary| {
            strongest(&boundaries(&ground(2, Some(boundary), 4.0), BORDER, Grain::None)[0]).0
        };
        let level = peak((100.0, 0.0, 0..240));
        let slanted = peak((90.0, 0.05, 0..240));
        let short = peak((100.0, 0.0, 100..130));
        assert!(slanted.abs() > 0.8 * level.abs(), "{slanted} vs {level}");
        assert!(short.abs() < 0.5 * level.abs(), "{short} vs {level}");
    }

    #[test]
    fn an_edge_in_the_border_band_is_not_read() {
        let clean = strongest(&boundaries(&ground(7, None, 0.0), BORDER, Grain::None)[0]).0;
        let mut edged = ground(7, None, 0.0);
        for y in edged.height - BORDER + 4..edged.height {
            for x in 0..edged.width {
                edged.set(x, y, 20.0);
            }
        }
        let [rows, _] = boundaries(&edged, BORDER, Grain::None);
        assert!((strongest(&rows).0 - clean).abs() < 0.05 * clean.abs());
        // Nothing is read from the band: rows whose boxes reach into it have no response of
        // their own, only what lines through them carry from the judged rows.
        let (reach, h) = (GAP + BOX, edged.height);
        assert!((h - BORDER - reach..h).all(|y| step_across_rows(&edged, BORDER).get(5, y) == 0.0));
    }

    #[test]
    fn the_running_mean_is_the_mean_along_the_line() {
        let mut rng = StdRng::seed_from_u64(3);
        // Three segments wide: lines that cross from one to the next.
        let mut step = Gray::new(2 * SEGMENT + 150, 40, 0.0);
        step.data
            .iter_mut()
            .for_each(|v| *v = rng.random_range(-2.0..2.0));
        let fast = long_mean(&step);
        let w = step.width as f32;
        let edge = SEGMENT;
        for (x, y) in [
            (75usize, 20usize),
            (10, 5),
            (140, 33),
            (60, 0),
            (edge - 1, 20),
            (edge, 21),
            (edge + 3, 39),
            (2 * edge + 149, 10),
        ] {
            let direct = SLOPES
                .iter()
                .map(|&slope| {
                    let shift =
                        |x: usize| (slope * BLOCK as f32 * (x as f32 - w / 2.0)).round() as isize;
                    let half = HALF_LENGTH as isize;
                    let sum: f32 = (x as isize - half..=x as isize + half)
                        .filter(|&xx| (0..step.width as isize).contains(&xx))
                        .filter_map(|xx| {
                            let yy = y as isize + shift(xx as usize) - shift(x);
                            (0..step.height as isize)
                                .contains(&yy)
                                .then(|| step.get(xx as usize, yy as usize))
                        })
                        .sum();
                    sum / (2 * HALF_LENGTH + 1) as f32
                })
                .fold(0f32, |b, m| if m.abs() > b.abs() { m } else { b });
            let got = fast.get(x, y);
            assert!((got - direct).abs() < 1e-4, "{x},{y}: {got} vs {direct}");
        }
    }

    #[test]
    fn boundaries_along_the_columns_are_those_of_the_transposed_image_and_only_across_the_grain() {
        let g = ground(4, Some((100.0, 0.0, 0..240)), 4.0);
        let [rows, _] = boundaries(&g, BORDER, Grain::None);
        let [_, columns] = boundaries(&g.transposed(), BORDER, Grain::None);
        assert_eq!(columns, rows.transposed());
        // Only the axes across the grain are computed; the other is 0.
        let [across, along] = boundaries(&g, BORDER, Grain::Columns);
        assert_eq!(across, rows);
        assert!(along.data.iter().all(|&v| v == 0.0));
        let [along, across] = boundaries(&g.transposed(), BORDER, Grain::Rows);
        assert_eq!(across, columns);
        assert!(along.data.iter().all(|&v| v == 0.0));
    }

    #[test]
    fn the_grain_follows_the_marks() {
        let marked = ground(5, None, 0.0);
        let (across_columns, across_rows) = gradient_energy(&marked);
        assert!(across_columns > 2.0 * across_rows);
        let grain = |g: &Gray| {
            let (c, r) = gradient_energy(g);
            Grain::of(f64::from(c), f64::from(r))
        };
        assert_eq!(grain(&marked), Grain::Columns);
        assert_eq!(grain(&marked.transposed()), Grain::Rows);
        let mut rng = StdRng::seed_from_u64(6);
        let mut noise = Gray::new(100, 100, 0.0);
        noise
            .data
            .iter_mut()
            .for_each(|v| *v = rng.random_range(0.0..50.0));
        assert_eq!(grain(&noise), Grain::None);
        assert!(Grain::Columns.judges(0) && !Grain::Columns.judges(1));
        assert!(Grain::Rows.judges(1) && !Grain::Rows.judges(0));
        assert!(Grain::None.judges(0) && Grain::None.judges(1));
    }

    #[test]
    fn degenerate_sizes_give_zero_responses() {
        for (w, h) in [(0, 0), (1, 5), (5, 1), (3, 3)] {
            let g = Gray::new(w, h, 7.0);
            for b in boundaries(&g, BORDER, Grain::None) {
                assert_eq!((b.width, b.height), (w, h));
                assert!(b.data.iter().all(|&v| v == 0.0));
            }
            assert_eq!(gradient_energy(&g), (0.0, 0.0));
        }
    }
}
