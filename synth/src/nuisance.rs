//! What a line adds to a photo that is no defect, as independent knobs: pose play (shift,
//! rotation, scale), focus (blur), exposure (gain), colour cast, uneven illumination, sensor
//! noise and JPEG quality. Applied after rendering, to the picture and its defect mask alike,
//! each drawn at random up to its level from a seed, so a robustness sweep can turn one knob
//! at a time from none to beyond what a line would see.

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::render::{HEIGHT, Part, WIDTH};

/// The largest of each nuisance; every part draws its own up to it. Zero is none.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Nuisance {
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
}

impl Nuisance {
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
        let direction = either(std::f32::consts::PI);
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
        let light_direction = either(std::f32::consts::PI);
        let (w, h) = (WIDTH as usize, HEIGHT as usize);
        let (mut rgb, mut mask) = (part.rgb.clone(), part.mask.clone());
        if shift > 0.0 || angle != 0.0 || scale != 1.0 {
            (rgb, mask) = warp(&part.rgb, &part.mask, (dx, dy), angle, scale);
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
