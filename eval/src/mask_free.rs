//! Defect-free surface from a labelled defect image: the largest rectangle its mask leaves
//! clear. A source with no good images (NEU) can still be measured on the surface around its
//! defects.

/// The largest rectangle `[x, y, w, h]` holding no mask pixel (≥ 128) whose sides are both at
/// least `min_side`; `None` if there is none. Per row, the clear run above each pixel is a bar
/// of a histogram, and every maximal rectangle is a bar extended left and right while the
/// bars are at least as tall (one stack pass per row): O(width × height).
pub fn largest_clear_rectangle(mask: &image::GrayImage, min_side: u32) -> Option<[u32; 4]> {
    let (w, h) = (mask.width() as usize, mask.height() as usize);
    let mut bars = vec![0u32; w];
    let mut best: Option<[u32; 4]> = None;
    let mut stack: Vec<usize> = Vec::with_capacity(w);
    for y in 0..h {
        for (x, bar) in bars.iter_mut().enumerate() {
            let clear = mask.get_pixel(x as u32, y as u32).0[0] < 128;
            *bar = if clear { *bar + 1 } else { 0 };
        }
        stack.clear();
        for x in 0..=w {
            let height = bars.get(x).copied().unwrap_or(0);
            while let Some(&top) = stack.last() {
                if bars[top] < height {
                    break;
                }
                stack.pop();
                let tall = bars[top];
                let left = stack.last().map_or(0, |&l| l + 1);
                let wide = (x - left) as u32;
                let area = u64::from(wide) * u64::from(tall);
                let larger = best.is_none_or(|[_, _, bw, bh]| area > u64::from(bw) * u64::from(bh));
                if tall >= min_side && wide >= min_side && larger {
                    best = Some([left as u32, y as u32 + 1 - tall, wide, tall]);
                }
            }
            stack.push(x);
        }
    }
    best
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mask(w: u32, h: u32, defect: impl Fn(u32, u32) -> bool) -> image::GrayImage {
        image::GrayImage::from_fn(w, h, |x, y| {
            image::Luma([if defect(x, y) { 255 } else { 0 }])
        })
    }

    #[test]
    fn a_clear_mask_is_one_rectangle() {
        assert_eq!(
            largest_clear_rectangle(&mask(30, 20, |_, _| false), 5),
            Some([0, 0, 30, 20])
        );
    }

    #[test]
    fn the_largest_rectangle_beside_a_box() {
        // A defect box over x 10..20, y 0..15 of a 40 × 20 mask: the clear part right of it
        // (20 × 20) beats the strip below it (40 × 5) and the part left of it (10 × 20).
        let m = mask(40, 20, |x, y| (10..20).contains(&x) && y < 15);
        assert_eq!(largest_clear_rectangle(&m, 3), Some([20, 0, 20, 20]));
        // Pixels under 128 are clear.
        let faint = image::GrayImage::from_pixel(8, 8, image::Luma([127]));
        assert_eq!(largest_clear_rectangle(&faint, 8), Some([0, 0, 8, 8]));
    }

    #[test]
    fn rectangles_thinner_than_the_minimum_are_not_taken() {
        // Clear: a 40 × 4 strip at the top and a 6 × 6 square at the bottom right.
        let m = mask(40, 20, |x, y| y >= 4 && !(x >= 34 && y >= 14));
        assert_eq!(largest_clear_rectangle(&m, 1), Some([0, 0, 40, 4]));
        assert_eq!(largest_clear_rectangle(&m, 5), Some([34, 14, 6, 6]));
        assert_eq!(largest_clear_rectangle(&m, 7), None);
        assert_eq!(largest_clear_rectangle(&mask(10, 10, |_, _| true), 1), None);
    }
}
