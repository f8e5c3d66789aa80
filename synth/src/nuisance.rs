//! What a line adds to a photo that is no defect, as independent knobs: part-to-part
//! geometry within tolerance (rivets and the blade's join placed on their own, the blade's
//! length and width), pose play (shift, rotation, scale, a flip), focus (blur), exposure
//! (gain), colour cast, uneven illumination, marks on the belt that do not move with the
//! part, sensor noise and JPEG quality. The geometry is drawn into the part
//! ([`Nuisance::render`]); the rest is applied after rendering, to the picture and its defect
//! mask alike ([`Nuisance::apply`]). Each is drawn at random up to its level from a seed, so a
//! robustness sweep can turn one knob at a time from none to beyond what a line would see.

use std::f32::consts::PI;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::render::{Deviation, HEIGHT, KnifeShape, Part, SynthDefect, WIDTH, render_deviating};

/// The largest of each nuisance; every part draws its own up to it. Zero is none, and draws
/// nothing: turning one knob on (or `flip`) moves the random draws of the knobs after it, so
/// two levels of different knobs see differently drawn poses and light, not the same ones
/// with one knob more. (Drawing every knob always and scaling it would make them independent
/// but redraw the parts of most committed sweep figures; not done.)
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Nuisance {
    /// Each rivet moved from its drawn place in a random direction, and the handle/blade join
    /// along the knife, each on its own by up to this many pixels (sub-pixel). Valid from 0 to
    /// [`Deviation::MAX_OFFSET_PX`] (8; a rivet further off leaves the paring knife's handle):
    /// larger offsets are clamped to it.
    pub features_px: f32,
    /// The blade's length and its width, each on its own, up to this share either way (0.015
    /// is ±1.5%): not one scale of the whole part. Valid from 0 to [`Deviation::MAX_SHARE`]
    /// (0.2; a narrower blade leaves no room for the paring knife's scratch): larger shares
    /// are clamped to it.
    pub outline: f32,
    /// Shift of the whole frame in a random direction, up to this many pixels (sub-pixel).
    pub shift_px: f32,
    /// Rotation about the frame's centre, up to this many degrees either way.
    pub rotation_deg: f32,
    /// Scale change, up to this share either way (0.015 is ±1.5%).
    pub scale: f32,
    /// Gaussian blur of this standard deviation (pixels), for every part.
    pub blur_sigma: f32,
    /// Exposure change, up to this share either way.
    pub gain: f32,
    /// Gain of red and blue against green, up to this share either way, each.
    pub colour_cast: f32,
    /// Illumination falling off across the frame in a random direction: up to this share
    /// brighter on one side and darker on the other.
    pub gradient: f32,
    /// Sensor noise, standard deviation in grey levels.
    pub noise_sigma: f32,
    /// Half of the parts lie the other way up: the picture mirrored across the frame's
    /// horizontal centre line (a knife turned over shows its edge on the other side).
    pub flip: bool,
    /// Marks on the belt (smooth blotches, up to this many grey levels either way) that lie
    /// somewhere else under every part: the background does not move with the part. Only the
    /// belt gets them, not the part lying on it.
    pub belt_marks: f32,
}

/// The belt's colour as rendered (see `render::shade`): what the belt marks may change.
const BELT: [f32; 3] = [78.0, 92.0, 84.0];
/// Spacing of the belt marks' lattice (pixels): blotches about this large.
const MARK_CELL: f32 = 24.0;

impl Nuisance {
    /// Renders the part for `seed` as made within this nuisance's geometry tolerance (drawn
    /// from `seed`; with none, exactly [`crate::render`]).
    pub fn render(&self, shape: &KnifeShape, defect: Option<SynthDefect>, seed: u64) -> Part {
        render_deviating(shape, defect, seed, &self.deviation(shape, seed))
    }

    /// How the part for `seed` departs from its drawing under this nuisance.
    fn deviation(&self, shape: &KnifeShape, seed: u64) -> Deviation {
        let mut rng = StdRng::seed_from_u64(seed ^ 0x6E0_3E7B);
        let mut either = |range: f32| {
            if range > 0.0 {
                rng.random_range(-range..=range)
            } else {
                0.0
            }
        };
        let rivets = shape
            .rivets
            .iter()
            .map(|_| {
                let (distance, direction) = (either(self.features_px).abs(), either(PI));
                (distance * direction.cos(), distance * direction.sin())
            })
            .collect();
        Deviation {
            rivets,
            bolster: either(self.features_px),
            blade_length: either(self.outline),
            blade_width: either(self.outline),
        }
    }

    /// The part's picture and mask with this nuisance applied, drawn from `seed`.
    pub fn apply(&self, part: &Part, seed: u64) -> (Vec<u8>, Vec<u8>) {
        let mut rng = StdRng::seed_from_u64(seed ^ 0x5EED_0F4A);
        let mut either = |range: f32| {
            if range > 0.0 {
                rng.random_range(-range..=range)
            } else {
                0.0
            }
        };
        let direction = either(PI);
        let shift = either(self.shift_px).abs();
        let (dx, dy) = (shift * direction.cos(), shift * direction.sin());
        let angle = either(self.rotation_deg).to_radians();
        let scale = 1.0 + either(self.scale);
        let gain = 1.0 + either(self.gain);
        let cast = [
            1.0 + either(self.colour_cast),
            1.0,
            1.0 + either(self.colour_cast),
        ];
        let slope = either(self.gradient);
        let light_direction = either(PI);
        let flipped = self.flip && rng.random_bool(0.5);
        let belt_offset = (rng.random_range(0.0..4096.0), rng.random_range(0.0..4096.0));
        let (w, h) = (WIDTH as usize, HEIGHT as usize);
        let (mut rgb, mut mask) = (part.rgb.clone(), part.mask.clone());
        if flipped {
            (rgb, mask) = (mirrored(&rgb, 3), mirrored(&mask, 1));
        }
        if shift > 0.0 || angle != 0.0 || scale != 1.0 {
            (rgb, mask) = warp(&rgb, &mask, (dx, dy), angle, scale);
        }
        if self.belt_marks > 0.0 {
            mark_belt(&mut rgb, self.belt_marks, belt_offset);
        }
        if self.blur_sigma > 0.0 {
            rgb = blur(&rgb, w, h, self.blur_sigma);
        }
        let (lc, ls) = (light_direction.cos(), light_direction.sin());
        let mut noise = StdRng::seed_from_u64(seed ^ 0x0153);
        for y in 0..h {
            for x in 0..w {
                // -1 on one side of the frame to 1 on the other, along the light's direction.
                let along =
                    ((x as f32 / w as f32 - 0.5) * lc + (y as f32 / h as f32 - 0.5) * ls) * 2.0;
                let light = gain * (1.0 + slope * along);
                for (c, factor) in cast.iter().enumerate() {
                    let i = (y * w + x) * 3 + c;
                    let mut v = f32::from(rgb[i]) * light * factor;
                    if self.noise_sigma > 0.0 {
                        v += self.noise_sigma * gaussian(&mut noise);
                    }
                    rgb[i] = v.round().clamp(0.0, 255.0) as u8;
                }
            }
        }
        (rgb, mask)
    }
}

/// Rows of a `WIDTH`-wide image of `channels` bytes per pixel in reverse order.
fn mirrored(pixels: &[u8], channels: usize) -> Vec<u8> {
    let row = WIDTH as usize * channels;
    pixels.chunks(row).rev().flatten().copied().collect()
}

/// Adds smooth blotches of up to `amplitude` grey levels to the pixels that show the belt
/// (weighted by how close they are to its colour, so the part's edges blend), read from a
/// fixed pattern at `offset`.
fn mark_belt(rgb: &mut [u8], amplitude: f32, offset: (f32, f32)) {
    let w = WIDTH as usize;
    for (i, pixel) in rgb.chunks_mut(3).enumerate() {
        let distance = pixel
            .iter()
            .zip(BELT)
            .map(|(&v, b)| (f32::from(v) - b).abs())
            .fold(0.0, f32::max);
        let belt = (1.0 - distance / 30.0).clamp(0.0, 1.0);
        if belt == 0.0 {
            continue;
        }
        let (x, y) = ((i % w) as f32 + offset.0, (i / w) as f32 + offset.1);
        let mark = amplitude * belt * value_noise(x / MARK_CELL, y / MARK_CELL);
        for v in pixel.iter_mut() {
            *v = (f32::from(*v) + mark).round().clamp(0.0, 255.0) as u8;
        }
    }
}

/// Smooth noise in [-1, 1]: hashed values on the integer lattice, interpolated (smoothstep).
fn value_noise(x: f32, y: f32) -> f32 {
    let lattice = |i: i64, j: i64| {
        let h = (i.wrapping_mul(0x9E37_79B9) ^ j.wrapping_mul(0x85EB_CA6B)) as u64;
        let h = (h ^ (h >> 15)).wrapping_mul(0x2C1B_3C6D_297A_4D2B);
        ((h >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
    };
    let (i, j) = (x.floor() as i64, y.floor() as i64);
    let smooth = |t: f32| t * t * (3.0 - 2.0 * t);
    let (fx, fy) = (smooth(x - x.floor()), smooth(y - y.floor()));
    let top = lattice(i, j) * (1.0 - fx) + lattice(i + 1, j) * fx;
    let bottom = lattice(i, j + 1) * (1.0 - fx) + lattice(i + 1, j + 1) * fx;
    top * (1.0 - fy) + bottom * fy
}

/// A standard normal draw (Box-Muller).
fn gaussian(rng: &mut StdRng) -> f32 {
    let u: f32 = rng.random_range(f32::EPSILON..1.0);
    let v: f32 = rng.random_range(0.0..1.0);
    (-2.0 * u.ln()).sqrt() * (std::f32::consts::TAU * v).cos()
}

/// The frame moved by `shift`, turned by `angle` and scaled by `scale` about its centre:
/// the picture bilinear (the border's pixels continue the belt), the mask nearest.
fn warp(rgb: &[u8], mask: &[u8], shift: (f32, f32), angle: f32, scale: f32) -> (Vec<u8>, Vec<u8>) {
    let (w, h) = (WIDTH as usize, HEIGHT as usize);
    let (cx, cy) = (w as f32 / 2.0, h as f32 / 2.0);
    let (s, c) = angle.sin_cos();
    let mut out = vec![0u8; rgb.len()];
    let mut out_mask = vec![0u8; mask.len()];
    for y in 0..h {
        for x in 0..w {
            // Inverse map: from the output pixel back to the source.
            let (px, py) = (x as f32 - cx - shift.0, y as f32 - cy - shift.1);
            let (u, v) = (
                (px * c + py * s) / scale + cx,
                (-px * s + py * c) / scale + cy,
            );
            let (u, v) = (u.clamp(0.0, (w - 1) as f32), v.clamp(0.0, (h - 1) as f32));
            let (x0, y0) = (u as usize, v as usize);
            let (x1, y1) = ((x0 + 1).min(w - 1), (y0 + 1).min(h - 1));
            let (fx, fy) = (u - x0 as f32, v - y0 as f32);
            for ch in 0..3 {
                let at = |xx: usize, yy: usize| f32::from(rgb[(yy * w + xx) * 3 + ch]);
                let top = at(x0, y0) * (1.0 - fx) + at(x1, y0) * fx;
                let bottom = at(x0, y1) * (1.0 - fx) + at(x1, y1) * fx;
                out[(y * w + x) * 3 + ch] = (top * (1.0 - fy) + bottom * fy).round() as u8;
            }
            out_mask[y * w + x] = mask[(v.round() as usize) * w + u.round() as usize];
        }
    }
    (out, out_mask)
}

/// Separable Gaussian blur of an RGB image, clamped at the borders.
fn blur(rgb: &[u8], w: usize, h: usize, sigma: f32) -> Vec<u8> {
    let radius = (3.0 * sigma).ceil() as isize;
    let kernel: Vec<f32> = (-radius..=radius)
        .map(|k| (-(k * k) as f32 / (2.0 * sigma * sigma)).exp())
        .collect();
    let total: f32 = kernel.iter().sum();
    let pass = |src: &[f32], horizontal: bool| -> Vec<f32> {
        let mut out = vec![0f32; src.len()];
        for y in 0..h as isize {
            for x in 0..w as isize {
                for ch in 0..3 {
                    let mut acc = 0f32;
                    for (k, weight) in (-radius..=radius).zip(&kernel) {
                        let (xx, yy) = if horizontal {
                            ((x + k).clamp(0, w as isize - 1), y)
                        } else {
                            (x, (y + k).clamp(0, h as isize - 1))
                        };
                        acc += weight * src[(yy as usize * w + xx as usize) * 3 + ch];
                    }
                    out[(y as usize * w + x as usize) * 3 + ch] = acc / total;
                }
            }
        }
        out
    };
    let src: Vec<f32> = rgb.iter().map(|&v| f32::from(v)).collect();
    pass(&pass(&src, true), false)
        .into_iter()
        .map(|v| v.round().clamp(0.0, 255.0) as u8)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::render::{SHAPES, SynthDefect, render};

    #[test]
    fn no_nuisance_leaves_the_part_as_rendered() {
        let part = render(&SHAPES[0], Some(SynthDefect::ALL[0]), 4);
        let (rgb, mask) = Nuisance::default().apply(&part, 1);
        assert_eq!((rgb, mask), (part.rgb, part.mask));
    }

    #[test]
    fn geometry_tolerance_moves_each_rivet_on_its_own_and_the_mask_with_it() {
        let shape = &SHAPES[0];
        let none = Nuisance::default().render(shape, Some(SynthDefect::MissingRivet), 6);
        assert_eq!(
            none.rgb,
            render(shape, Some(SynthDefect::MissingRivet), 6).rgb,
            "no tolerance draws the drawing"
        );
        let loose = Nuisance {
            features_px: 2.0,
            outline: 0.015,
            ..Nuisance::default()
        };
        // Each rivet draws its own offset (up to 2 px): no two alike, so not the handle moved.
        for seed in [6, 7] {
            let offsets = loose.deviation(shape, seed).rivets;
            assert_eq!(offsets.len(), shape.rivets.len());
            for (i, a) in offsets.iter().enumerate() {
                assert!(a.0.hypot(a.1) <= 2.0, "{a:?}");
                for b in &offsets[i + 1..] {
                    assert!((a.0 - b.0).hypot(a.1 - b.1) > 0.1, "{offsets:?}");
                }
            }
        }
        assert_ne!(
            loose.deviation(shape, 6).rivets,
            loose.deviation(shape, 7).rivets,
            "two parts' rivets lie differently"
        );
        let made = loose.render(shape, Some(SynthDefect::MissingRivet), 6);
        assert_ne!(made.rgb, none.rgb);
        // The missing rivet's mask is a disc of the same size, moved by at most 2 px.
        let centroid = |m: &[u8]| {
            let (mut n, mut sx, mut sy) = (0.0, 0.0, 0.0);
            for (i, _) in m.iter().enumerate().filter(|&(_, &v)| v > 0) {
                n += 1.0;
                sx += (i % WIDTH as usize) as f32;
                sy += (i / WIDTH as usize) as f32;
            }
            (n, sx / n, sy / n)
        };
        let ((n0, x0, y0), (n1, x1, y1)) = (centroid(&none.mask), centroid(&made.mask));
        assert!((n0 - n1).abs() < n0 * 0.2, "{n0} {n1}");
        assert!(((x1 - x0).powi(2) + (y1 - y0).powi(2)).sqrt() <= 2.5);
        // The same part made good: the pictures differ only where this part's rivet is
        // missing, the mask grown by the rim's anti-aliasing (2 px), and they do differ there.
        let good = loose.render(shape, None, 6);
        let (w, h) = (WIDTH as usize, HEIGHT as usize);
        let near_mask = |x: usize, y: usize| {
            (y.saturating_sub(2)..(y + 3).min(h)).any(|yy| {
                (x.saturating_sub(2)..(x + 3).min(w)).any(|xx| made.mask[yy * w + xx] > 0)
            })
        };
        let mut differing = 0;
        for (i, (g, d)) in good.rgb.chunks(3).zip(made.rgb.chunks(3)).enumerate() {
            if g != d {
                assert!(
                    near_mask(i % w, i / w),
                    "pixel ({}, {}) off the mask",
                    i % w,
                    i / w
                );
                differing += 1;
            }
        }
        assert!(differing as f32 > n1 * 0.8, "{differing} of {n1}");
    }

    #[test]
    fn geometry_beyond_its_valid_range_is_clamped() {
        // Unclamped, a blade 24% narrower leaves no room for the paring knife's scratch (the
        // renderer's draw would panic) and a rivet 9 px across leaves its handle.
        let wild = Nuisance {
            features_px: 50.0,
            outline: 0.5,
            ..Nuisance::default()
        };
        // The parts drawn with a blade narrower than the scratch has room on, and a few more.
        let narrow: Vec<u64> = (0..64)
            .filter(|&seed| wild.deviation(&SHAPES[1], seed).blade_width < -0.24)
            .collect();
        assert!(
            !narrow.is_empty(),
            "some part is drawn beyond the valid range"
        );
        for seed in narrow.into_iter().chain(0..4) {
            for defect in [
                SynthDefect::Scratch,
                SynthDefect::Pit,
                SynthDefect::MissingRivet,
            ] {
                let part = wild.render(&SHAPES[1], Some(defect), seed);
                assert!(part.mask.iter().any(|&v| v > 0), "{defect:?} {seed}");
            }
        }
    }

    #[test]
    fn pose_play_keeps_a_flip() {
        let part = render(&SHAPES[0], Some(SynthDefect::ALL[0]), 4);
        let mirrored_part = Part {
            rgb: mirrored(&part.rgb, 3),
            mask: mirrored(&part.mask, 1),
            ..part.clone()
        };
        let both = Nuisance {
            flip: true,
            shift_px: 1.0,
            ..Nuisance::default()
        };
        let shifted = Nuisance {
            shift_px: 1.0,
            ..Nuisance::default()
        };
        // Each seed either leaves the part as it lies or turns it over: then picture and mask
        // are the mirrored part's under the same shift, and the mask is not the unflipped one's.
        let mut flips = 0;
        for seed in 0..16 {
            let (rgb, mask) = both.apply(&part, seed);
            let unflipped = shifted.apply(&part, seed);
            if (&rgb, &mask) == (&unflipped.0, &unflipped.1) {
                continue;
            }
            flips += 1;
            let turned = shifted.apply(&mirrored_part, seed);
            assert_eq!(rgb, turned.0, "the picture flipped, then shifted");
            assert_eq!(mask, turned.1, "the mask flipped with it");
            assert_ne!(mask, unflipped.1);
            assert!(mask.iter().any(|&v| v > 0));
        }
        assert!((1..16).contains(&flips), "{flips} of 16 turned over");
    }

    #[test]
    fn a_turn_moves_the_mask_with_the_picture() {
        let part = render(&SHAPES[0], Some(SynthDefect::ALL[1]), 9);
        let turned = Nuisance {
            rotation_deg: 90.0,
            ..Nuisance::default()
        };
        let (_, mask) = turned.apply(&part, 3);
        let count = |m: &[u8]| m.iter().filter(|&&v| v > 0).count();
        assert_ne!(mask, part.mask, "the defect moved");
        // Area is kept, up to what leaves the frame and the nearest-neighbour rounding.
        assert!(
            count(&mask) * 10 >= count(&part.mask) * 5,
            "{}",
            count(&mask)
        );
    }

    #[test]
    fn a_flip_mirrors_the_picture_and_the_mask() {
        let part = render(&SHAPES[0], Some(SynthDefect::ALL[0]), 4);
        let flip = Nuisance {
            flip: true,
            ..Nuisance::default()
        };
        // Each part draws whether it lies the other way up: some seed turns it over.
        let (rgb, mask) = (0..16)
            .map(|seed| flip.apply(&part, seed))
            .find(|(rgb, _)| *rgb != part.rgb)
            .unwrap();
        assert_eq!(mask, mirrored(&part.mask, 1));
        assert_eq!(rgb, mirrored(&part.rgb, 3));
        assert_eq!(mirrored(&rgb, 3), part.rgb, "twice is the identity");
    }

    #[test]
    fn belt_marks_change_the_belt_not_the_part() {
        let part = render(&SHAPES[0], None, 4);
        let marked = Nuisance {
            belt_marks: 20.0,
            ..Nuisance::default()
        };
        let (a, mask) = marked.apply(&part, 1);
        let (b, _) = marked.apply(&part, 2);
        assert_eq!(mask, part.mask);
        let changed = |rgb: &[u8], i: usize| rgb[i] != part.rgb[i];
        let w = WIDTH as usize;
        // A corner is belt: marked, and differently under two parts.
        assert!((0..w * 3).any(|i| changed(&a, i)));
        assert_ne!(a[..w * 3], b[..w * 3]);
        // The blade at the frame's centre is far brighter than the belt: untouched.
        let centre = (HEIGHT as usize / 2 * w + w / 2) * 3;
        assert!(part.rgb[centre] > 150, "the blade lies at the centre");
        assert_eq!(a[centre..centre + 3], part.rgb[centre..centre + 3]);
    }

    #[test]
    fn light_and_noise_change_levels_but_not_the_mask() {
        let part = render(&SHAPES[1], Some(SynthDefect::ALL[2]), 5);
        let lit = Nuisance {
            gain: 0.3,
            gradient: 0.3,
            noise_sigma: 5.0,
            colour_cast: 0.1,
            blur_sigma: 1.0,
            ..Nuisance::default()
        };
        let (rgb, mask) = lit.apply(&part, 8);
        assert_eq!(mask, part.mask);
        assert_ne!(rgb, part.rgb);
        assert_eq!(
            lit.apply(&part, 8).0,
            rgb,
            "the same seed, the same picture"
        );
    }
}
