//! A plain single-channel `f32` image: the working type of every stage.

/// Row-major grey image with values in 0..=255.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Gray {
    pub width: usize,
    pub height: usize,
    pub data: Vec<f32>,
}

impl Gray {
    pub fn new(width: usize, height: usize, fill: f32) -> Gray {
        Gray {
            width,
            height,
            data: vec![fill; width * height],
        }
    }

    #[inline]
    pub fn get(&self, x: usize, y: usize) -> f32 {
        self.data[y * self.width + x]
    }

    #[inline]
    pub fn set(&mut self, x: usize, y: usize, v: f32) {
        self.data[y * self.width + x] = v;
    }

    /// Bilinear sample at a real position; `outside` beyond the border.
    pub fn sample(&self, x: f32, y: f32, outside: f32) -> f32 {
        if !(x >= 0.0 && y >= 0.0) {
            return outside;
        }
        let (x0, y0) = (x as usize, y as usize);
        if x0 + 1 >= self.width || y0 + 1 >= self.height {
            return outside;
        }
        let (fx, fy) = (x - x0 as f32, y - y0 as f32);
        let i = y0 * self.width + x0;
        let top = self.data[i] * (1.0 - fx) + self.data[i + 1] * fx;
        let bottom = self.data[i + self.width] * (1.0 - fx) + self.data[i + self.width + 1] * fx;
        top * (1.0 - fy) + bottom * fy
    }

    /// Mean over a `(2r+1)²` window, clamped at the borders (separable running sums).
    pub fn box_blur(&self, r: usize) -> Gray {
        blur_columns(&blur_rows(self, r), r)
    }

    /// Mean over `2r+1` pixels along x only (rows), clamped at the borders.
    pub fn blur_x(&self, r: usize) -> Gray {
        blur_rows(self, r)
    }

    /// Mean of each `factor × factor` block (the last partial blocks are dropped); `factor` 0 or
    /// 1 returns a copy.
    pub fn downscale(&self, factor: usize) -> Gray {
        if factor <= 1 {
            return self.clone();
        }
        let (w, h) = (self.width / factor, self.height / factor);
        if w == 0 || h == 0 {
            return self.resize(w.max(1), h.max(1));
        }
        box_reduce(&self.data, self.width, self.height, factor)
    }

    /// Bilinear resampling to `width × height` (both at least 1).
    pub fn resize(&self, width: usize, height: usize) -> Gray {
        let (width, height) = (width.max(1), height.max(1));
        let mut out = Gray::new(width, height, 0.0);
        if self.data.is_empty() {
            return out;
        }
        let sx = self.width as f32 / width as f32;
        let sy = self.height as f32 / height as f32;
        for y in 0..height {
            let fy = ((y as f32 + 0.5) * sy - 0.5).clamp(0.0, (self.height - 1) as f32);
            for x in 0..width {
                let fx = ((x as f32 + 0.5) * sx - 0.5).clamp(0.0, (self.width - 1) as f32);
                out.data[y * width + x] = self.sample_clamped(fx, fy);
            }
        }
        out
    }

    /// Bilinear sample inside the image (the position is assumed clamped to it).
    pub(crate) fn sample_clamped(&self, x: f32, y: f32) -> f32 {
        let (x0, y0) = (x as usize, y as usize);
        let (x1, y1) = ((x0 + 1).min(self.width - 1), (y0 + 1).min(self.height - 1));
        let (fx, fy) = (x - x0 as f32, y - y0 as f32);
        let top = self.get(x0, y0) * (1.0 - fx) + self.get(x1, y0) * fx;
        let bottom = self.get(x0, y1) * (1.0 - fx) + self.get(x1, y1) * fx;
        top * (1.0 - fy) + bottom * fy
    }

    /// The `width × height` part whose top-left pixel is `(x0, y0)`, clipped to the image.
    pub fn crop(&self, x0: usize, y0: usize, width: usize, height: usize) -> Gray {
        let width = width.min(self.width.saturating_sub(x0));
        let height = if width == 0 {
            0
        } else {
            height.min(self.height.saturating_sub(y0))
        };
        let data = self
            .data
            .chunks_exact(self.width.max(1))
            .skip(y0)
            .take(height)
            .flat_map(|row| &row[x0..x0 + width])
            .copied()
            .collect();
        Gray {
            width,
            height,
            data,
        }
    }

    /// The image with rows and columns swapped, a tile at a time (both images stay in cache).
    pub fn transposed(&self) -> Gray {
        const TILE: usize = 32;
        let (w, h) = (self.width, self.height);
        let mut out = Gray::new(h, w, 0.0);
        for y0 in (0..h).step_by(TILE) {
            for x0 in (0..w).step_by(TILE) {
                for y in y0..(y0 + TILE).min(h) {
                    for x in x0..(x0 + TILE).min(w) {
                        out.data[x * h + y] = self.data[y * w + x];
                    }
                }
            }
        }
        out
    }

    /// Largest value (0 for an empty image).
    pub fn max(&self) -> f32 {
        self.data.iter().copied().fold(0.0, f32::max)
    }

    /// The image with `f` applied to every pixel.
    pub fn map(&self, f: impl Fn(f32) -> f32) -> Gray {
        Gray {
            width: self.width,
            height: self.height,
            data: self.data.iter().map(|&v| f(v)).collect(),
        }
    }

    /// Pixel-wise combination of two images of the same size.
    pub fn zip(&self, other: &Gray, f: impl Fn(f32, f32) -> f32) -> Gray {
        Gray {
            width: self.width,
            height: self.height,
            data: self
                .data
                .iter()
                .zip(&other.data)
                .map(|(&a, &b)| f(a, b))
                .collect(),
        }
    }
}

/// The mean of each `factor × factor` block of a `width × height` row-major image of 8-bit
/// or `f32` samples, the last partial blocks dropped; `factor` ≥ 2 and the image at least one
/// block. Sums of 8-bit values are exact in `f32`, so an 8-bit image and its `f32` copy give
/// the same result to the bit.
pub(crate) fn box_reduce<T: Copy + Into<f32>>(
    data: &[T],
    width: usize,
    height: usize,
    factor: usize,
) -> Gray {
    debug_assert!(factor >= 2 && width >= factor && height >= factor);
    debug_assert_eq!(data.len(), width * height);
    let (w, h) = (width / factor, height / factor);
    let mut out = Gray::new(w, h, 0.0);
    let norm = 1.0 / (factor * factor) as f32;
    let mut row = vec![0f32; w];
    for y in 0..h {
        row.fill(0.0);
        for dy in 0..factor {
            let start = (y * factor + dy) * width;
            let line = &data[start..start + width];
            for (acc, block) in row.iter_mut().zip(line.chunks_exact(factor)) {
                *acc += block.iter().map(|&v| v.into()).sum::<f32>();
            }
        }
        for (out, acc) in out.data[y * w..(y + 1) * w].iter_mut().zip(&row) {
            *out = acc * norm;
        }
    }
    out
}

/// Mean over `2r+1` pixels along each row, clamped at the borders (a running sum).
fn blur_rows(src: &Gray, r: usize) -> Gray {
    let w = src.width;
    let mut out = Gray::new(w, src.height, 0.0);
    if w == 0 {
        return out;
    }
    for (row, out_row) in src.data.chunks_exact(w).zip(out.data.chunks_exact_mut(w)) {
        let mut sum = 0.0f32;
        let mut count = 0usize;
        for &v in &row[..r.min(w)] {
            sum += v;
            count += 1;
        }
        for (k, out) in out_row.iter_mut().enumerate() {
            if let Some(&v) = row.get(k + r) {
                sum += v;
                count += 1;
            }
            if k > r {
                sum -= row[k - r - 1];
                count -= 1;
            }
            *out = sum / count as f32;
        }
    }
    out
}

/// Mean over `2r+1` pixels down each column, clamped at the borders: a running sum of whole
/// rows, so memory is read in order.
fn blur_columns(src: &Gray, r: usize) -> Gray {
    let (w, h) = (src.width, src.height);
    let mut out = Gray::new(w, h, 0.0);
    if w == 0 {
        return out;
    }
    let row = |y: usize| &src.data[y * w..(y + 1) * w];
    let mut sum = vec![0f32; w];
    let mut count = 0usize;
    for y in 0..r.min(h) {
        sum.iter_mut().zip(row(y)).for_each(|(s, v)| *s += v);
        count += 1;
    }
    for (k, out_row) in out.data.chunks_exact_mut(w).enumerate() {
        if k + r < h {
            sum.iter_mut().zip(row(k + r)).for_each(|(s, v)| *s += v);
            count += 1;
        }
        if k > r {
            sum.iter_mut()
                .zip(row(k - r - 1))
                .for_each(|(s, v)| *s -= v);
            count -= 1;
        }
        let n = count as f32;
        out_row.iter_mut().zip(&sum).for_each(|(o, s)| *o = s / n);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transposing_swaps_rows_and_columns() {
        let mut g = Gray::new(70, 45, 0.0);
        g.data
            .iter_mut()
            .enumerate()
            .for_each(|(i, v)| *v = i as f32);
        let t = g.transposed();
        assert_eq!((t.width, t.height), (45, 70));
        for (x, y) in [(0, 0), (69, 44), (33, 40), (64, 31)] {
            assert_eq!(t.get(y, x), g.get(x, y));
        }
        assert_eq!(t.transposed(), g);
    }

    #[test]
    fn box_blur_preserves_a_constant_image() {
        let g = Gray::new(7, 5, 3.0);
        let b = g.box_blur(2);
        assert!(b.data.iter().all(|v| (v - 3.0).abs() < 1e-5));
    }

    #[test]
    fn box_blur_spreads_a_point_evenly() {
        let mut g = Gray::new(9, 9, 0.0);
        g.set(4, 4, 9.0);
        let b = g.box_blur(1);
        assert!((b.get(4, 4) - 1.0).abs() < 1e-5);
        assert!((b.get(3, 5) - 1.0).abs() < 1e-5);
        assert_eq!(b.get(2, 4), 0.0);
    }

    #[test]
    fn crop_takes_a_window_clipped_to_the_image() {
        let g = Gray {
            width: 3,
            height: 3,
            data: (0..9).map(|v| v as f32).collect(),
        };
        assert_eq!(g.crop(1, 1, 2, 2).data, [4.0, 5.0, 7.0, 8.0]);
        let clipped = g.crop(2, 0, 5, 5);
        assert_eq!((clipped.width, clipped.height), (1, 3));
        assert_eq!(clipped.data, [2.0, 5.0, 8.0]);
        assert!(g.crop(3, 3, 2, 2).data.is_empty());
        assert_eq!(
            g.crop(5, 0, 2, 2),
            Gray::new(0, 0, 0.0),
            "outside the image"
        );
    }

    #[test]
    fn downscale_averages_blocks_and_resize_keeps_a_ramp() {
        let g = Gray {
            width: 4,
            height: 2,
            data: vec![0.0, 2.0, 4.0, 6.0, 2.0, 4.0, 6.0, 8.0],
        };
        let d = g.downscale(2);
        assert_eq!((d.width, d.height), (2, 1));
        assert_eq!(d.data, vec![2.0, 6.0]);
        let ramp = Gray {
            width: 8,
            height: 1,
            data: (0..8).map(|x| x as f32).collect(),
        };
        let r = ramp.resize(4, 1);
        assert!((r.data[0] - 0.5).abs() < 1e-5 && (r.data[3] - 6.5).abs() < 1e-5);
        assert_eq!(Gray::new(3, 3, 1.0).downscale(5).data, vec![1.0]);
    }

    #[test]
    fn sample_interpolates_and_guards_the_border() {
        let g3 = Gray {
            width: 3,
            height: 3,
            data: vec![0.0, 10.0, 0.0, 20.0, 30.0, 0.0, 0.0, 0.0, 0.0],
        };
        assert!((g3.sample(0.5, 0.5, -1.0) - 15.0).abs() < 1e-5);
        assert_eq!(g3.sample(-0.1, 0.0, -1.0), -1.0);
        assert_eq!(
            g3.sample(2.5, 0.0, -1.0),
            -1.0,
            "needs both neighbours inside"
        );
        assert_eq!(g3.sample(f32::NAN, 0.0, -1.0), -1.0);
    }
}
