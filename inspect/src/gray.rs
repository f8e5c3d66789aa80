//! A plain single-channel `f32` image: the working type of every stage.

/// Row-major grey image with values in 0..=255.
#[derive(Debug, Clone, PartialEq)]
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
        let horizontal = blur_1d(self, r, true);
        blur_1d(&horizontal, r, false)
    }
}

fn blur_1d(src: &Gray, r: usize, along_x: bool) -> Gray {
    let (w, h) = (src.width, src.height);
    let mut out = Gray::new(w, h, 0.0);
    let (len, lines) = if along_x { (w, h) } else { (h, w) };
    let at = |line: usize, k: usize| {
        if along_x { line * w + k } else { k * w + line }
    };
    for line in 0..lines {
        let mut sum = 0.0f32;
        let mut count = 0usize;
        for k in 0..r.min(len) {
            sum += src.data[at(line, k)];
            count += 1;
        }
        for k in 0..len {
            if k + r < len {
                sum += src.data[at(line, k + r)];
                count += 1;
            }
            if k > r {
                sum -= src.data[at(line, k - r - 1)];
                count -= 1;
            }
            out.data[at(line, k)] = sum / count as f32;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

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
