//! Clipped highlights (glare) and the surface beside them, where darkness is not evidence.
//!
//! Where a reflection clips the sensor, the true level is lost, and a wide shading estimate
//! (the texture model's, a blur of [`crate::texture`]'s shading radius) is pulled up by the
//! clipped area: the surface around it looks darker than it is, up to the blur's reach, and
//! flare and JPEG ringing darken its edge further. A dark line or a dark path there is weak
//! evidence of a crack. Measured on the real surfaces (four splits of the good images, mean
//! AUROC): with dark responses beside glare left out, KolektorSDD 0.962 → 0.975 (its good
//! images' strongest dark marks lay at a glare on the commutator's edge), magnetic tiles
//! 0.827 → 0.828. Bright responses still count everywhere: a clipped blob can be the defect.
//!
//! A glare is an area of clipped pixels at least `2 × GLARE_CORE + 1` pixels wide: a glinting
//! grain or the rim of a pore is not one, and the dark pore beside it is still judged.

use crate::Gray;

/// Levels at or above this are clipped (the 8-bit range's top, less JPEG noise).
pub const CLIPPED: f32 = 250.0;
/// A clipped pixel belongs to a glare when every pixel within this radius (a square) is
/// clipped too.
const GLARE_CORE: usize = 2;

/// Per pixel of `g`, whether it lies within `reach` pixels (a square) of a glare; `None` when
/// `g` has no glare (most images, an empty one too: nothing is computed beyond one scan).
pub fn beside_glare(g: &Gray, reach: usize) -> Option<Vec<bool>> {
    if !g.data.iter().any(|&v| v >= CLIPPED) {
        return None;
    }
    let not_clipped: Vec<bool> = g.data.iter().map(|&v| v < CLIPPED).collect();
    // The glare: clipped pixels with no unclipped pixel within the core radius.
    let glare: Vec<bool> = dilate(&not_clipped, g.width, g.height, GLARE_CORE)
        .into_iter()
        .map(|near_unclipped| !near_unclipped)
        .collect();
    if !glare.contains(&true) {
        return None;
    }
    // Its clipped area back (the core's radius) and the reach around it.
    Some(dilate(&glare, g.width, g.height, GLARE_CORE + reach))
}

/// Whether each pixel has a set pixel within `r` pixels (a square): a sliding count along each
/// row, then one per column, moved a whole row at a time (memory order).
fn dilate(mask: &[bool], width: usize, height: usize, r: usize) -> Vec<bool> {
    let mut rows = vec![false; mask.len()];
    for (row, out) in mask.chunks_exact(width).zip(rows.chunks_exact_mut(width)) {
        let mut count: usize = row[..r.min(width)].iter().map(|&b| usize::from(b)).sum();
        for x in 0..width {
            if let Some(&entering) = row.get(x + r) {
                count += usize::from(entering);
            }
            if x > r {
                count -= usize::from(row[x - r - 1]);
            }
            out[x] = count > 0;
        }
    }
    // Per column, the set pixels of `rows` in the rows [y − r, y + r].
    let mut counts = vec![0usize; width];
    let row = |y: usize| &rows[y * width..(y + 1) * width];
    for y in 0..r.min(height) {
        counts
            .iter_mut()
            .zip(row(y))
            .for_each(|(c, &b)| *c += usize::from(b));
    }
    let mut out = vec![false; mask.len()];
    for (y, out_row) in out.chunks_exact_mut(width).enumerate() {
        if y + r < height {
            counts
                .iter_mut()
                .zip(row(y + r))
                .for_each(|(c, &b)| *c += usize::from(b));
        }
        if y > r {
            counts
                .iter_mut()
                .zip(row(y - r - 1))
                .for_each(|(c, &b)| *c -= usize::from(b));
        }
        for (o, &c) in out_row.iter_mut().zip(&counts) {
            *o = c > 0;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn image_with(width: usize, height: usize, clipped: impl Fn(usize, usize) -> bool) -> Gray {
        let mut g = Gray::new(width, height, 120.0);
        for y in 0..height {
            for x in 0..width {
                if clipped(x, y) {
                    g.set(x, y, 255.0);
                }
            }
        }
        g
    }

    #[test]
    fn no_clipped_pixel_no_zone() {
        assert_eq!(beside_glare(&Gray::new(40, 30, 249.0), 5), None);
    }

    #[test]
    fn a_glint_smaller_than_a_glare_is_left_alone() {
        // A 4 × 4 clipped square: no pixel has its whole 5 × 5 neighbourhood clipped.
        let g = image_with(40, 30, |x, y| {
            (10..14).contains(&x) && (10..14).contains(&y)
        });
        assert_eq!(beside_glare(&g, 5), None);
    }

    #[test]
    fn the_zone_is_the_glare_and_its_reach() {
        // A glare over columns 0..10 (at the border, as on a part's edge), all rows.
        let g = image_with(40, 30, |x, _| x < 10);
        let zone = beside_glare(&g, 6).expect("a glare");
        for y in 0..30 {
            for x in 0..40 {
                assert_eq!(zone[y * 40 + x], x < 16, "at {x},{y}");
            }
        }
    }

    #[test]
    fn dilation_matches_a_direct_search() {
        let (w, h) = (23, 17);
        let mask: Vec<bool> = (0..w * h).map(|i| (i * 7919) % 31 == 0).collect();
        for r in [0, 1, 3, 30] {
            let fast = dilate(&mask, w, h, r);
            for y in 0..h {
                for x in 0..w {
                    let direct = (y.saturating_sub(r)..=(y + r).min(h - 1)).any(|yy| {
                        (x.saturating_sub(r)..=(x + r).min(w - 1)).any(|xx| mask[yy * w + xx])
                    });
                    assert_eq!(fast[y * w + x], direct, "r {r} at {x},{y}");
                }
            }
        }
    }
}
