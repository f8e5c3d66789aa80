//! Connected anomalous regions of a z-map, by hysteresis: a region holds every pixel above the
//! low threshold that is 8-connected to a pixel above the high threshold.

use serde::{Deserialize, Serialize};

use crate::Gray;
use crate::classify::{Evidence, RegionKind, classify};

/// One anomalous region, in canonical coordinates plus its box in the input image.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Region {
    /// `[x, y, w, h]` in pixels of the input image.
    pub bbox: [u32; 4],
    /// Pixels in the canonical frame.
    pub area: usize,
    /// Highest z-score inside the region.
    pub peak: f32,
    /// Mean signed difference from the model's median (grey levels); negative is darker.
    pub shift: f32,
    /// Ratio of the long to the short axis of the region (1 for a disc).
    pub elongation: f32,
    pub kind: RegionKind,
}

/// A component before classification: canonical pixel indices and summary statistics.
#[derive(Debug, Clone)]
pub(crate) struct Component {
    pub pixels: Vec<usize>,
    pub peak: f32,
}

/// Finds the components of `z` seeded above `high` and grown above `low`, largest peak first.
pub(crate) fn components(z: &Gray, low: f32, high: f32) -> Vec<Component> {
    let (w, h) = (z.width, z.height);
    let mut seen = vec![false; w * h];
    let mut out = Vec::new();
    let mut stack = Vec::new();
    for start in 0..w * h {
        if seen[start] || z.data[start] < high {
            continue;
        }
        seen[start] = true;
        stack.push(start);
        let mut pixels = Vec::new();
        let mut peak = 0f32;
        while let Some(i) = stack.pop() {
            pixels.push(i);
            peak = peak.max(z.data[i]);
            let (x, y) = (i % w, i / w);
            for dy in -1i64..=1 {
                for dx in -1i64..=1 {
                    let (nx, ny) = (x as i64 + dx, y as i64 + dy);
                    if nx < 0 || ny < 0 || nx >= w as i64 || ny >= h as i64 {
                        continue;
                    }
                    let j = ny as usize * w + nx as usize;
                    if !seen[j] && z.data[j] >= low {
                        seen[j] = true;
                        stack.push(j);
                    }
                }
            }
        }
        out.push(Component { pixels, peak });
    }
    out.sort_by(|a, b| b.peak.total_cmp(&a.peak));
    out
}

/// A component of a surface's anomaly map (no parts: the zone is the surface) as a region of
/// the input image; `level` is the normalised working image, `scale` input pixels per working
/// pixel.
pub(crate) fn surface_region(
    c: &Component,
    level: &Gray,
    scale: (f32, f32),
    input: &Gray,
) -> Region {
    let w = level.width;
    let (mut x0, mut y0, mut x1, mut y1) = (usize::MAX, usize::MAX, 0usize, 0usize);
    let mut shift = 0f32;
    for &i in &c.pixels {
        let (x, y) = (i % w, i / w);
        (x0, y0, x1, y1) = (x0.min(x), y0.min(y), x1.max(x), y1.max(y));
        shift += level.data[i];
    }
    let n = c.pixels.len().max(1) as f32;
    let evidence = Evidence::on_surface(c.pixels.len(), elongation(&c.pixels, w), shift / n);
    let (sx, sy) = scale;
    Region {
        bbox: clamped_box(
            [
                x0 as f32 * sx,
                y0 as f32 * sy,
                (x1 + 1) as f32 * sx,
                (y1 + 1) as f32 * sy,
            ],
            input.width,
            input.height,
        ),
        area: evidence.area,
        peak: c.peak,
        shift: evidence.shift,
        elongation: evidence.elongation,
        kind: classify(&evidence),
    }
}

/// An axis-aligned box `[x, y, w, h]` from real corners `[x0, y0, x1, y1]`, rounded outwards
/// and clamped to a `width × height` image; at least one pixel wide and high.
pub(crate) fn clamped_box([x0, y0, x1, y1]: [f32; 4], width: usize, height: usize) -> [u32; 4] {
    let clamp_x = |x: f32| x.clamp(0.0, width as f32) as u32;
    let clamp_y = |y: f32| y.clamp(0.0, height as f32) as u32;
    let (x0, y0, x1, y1) = (
        clamp_x(x0.floor()),
        clamp_y(y0.floor()),
        clamp_x(x1.ceil()),
        clamp_y(y1.ceil()),
    );
    [
        x0.min(width.saturating_sub(1) as u32),
        y0.min(height.saturating_sub(1) as u32),
        x1.saturating_sub(x0).max(1),
        y1.saturating_sub(y0).max(1),
    ]
}

/// Ratio of the principal axes of a set of canonical pixels.
pub(crate) fn elongation(pixels: &[usize], width: usize) -> f32 {
    let n = pixels.len() as f32;
    if pixels.len() < 2 {
        return 1.0;
    }
    let (mut sx, mut sy) = (0f32, 0f32);
    for &i in pixels {
        sx += (i % width) as f32;
        sy += (i / width) as f32;
    }
    let (mx, my) = (sx / n, sy / n);
    let (mut xx, mut yy, mut xy) = (0f32, 0f32, 0f32);
    for &i in pixels {
        let (dx, dy) = ((i % width) as f32 - mx, (i / width) as f32 - my);
        xx += dx * dx;
        yy += dy * dy;
        xy += dx * dy;
    }
    let (xx, yy, xy) = (xx / n + 1.0 / 12.0, yy / n + 1.0 / 12.0, xy / n);
    let tr = xx + yy;
    let disc = ((xx - yy).powi(2) + 4.0 * xy * xy).sqrt();
    let (l1, l2) = ((tr + disc) / 2.0, ((tr - disc) / 2.0).max(1e-3));
    (l1 / l2).sqrt()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hysteresis_grows_seeds_and_drops_weak_islands() {
        let mut z = Gray::new(20, 10, 0.0);
        for x in 2..8 {
            z.set(x, 2, 3.0);
        }
        z.set(4, 2, 10.0);
        z.set(15, 7, 4.0); // above low, never seeded
        let c = components(&z, 2.0, 8.0);
        assert_eq!(c.len(), 1);
        assert_eq!(c[0].pixels.len(), 6);
        assert_eq!(c[0].peak, 10.0);
    }

    #[test]
    fn elongation_tells_lines_from_blobs() {
        let line: Vec<usize> = (0..30).map(|x| 5 * 40 + x).collect();
        assert!(elongation(&line, 40) > 10.0);
        let blob: Vec<usize> = (0..5)
            .flat_map(|y| (0..5).map(move |x| y * 40 + x))
            .collect();
        assert!((elongation(&blob, 40) - 1.0).abs() < 0.05);
    }
}
