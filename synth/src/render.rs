//! Renders top-down photos of knives on a belt, with defects of known type and pixel mask.
//!
//! Everything is drawn in the part's own coordinates `(u, v)`: `u` runs along the knife from the
//! handle end (negative) to the tip (positive), `v` across it (the cutting edge at positive `v`).
//! The pose (centre, angle) and the lighting are drawn at random from the seed, so the same
//! seed always gives the same picture, defect and mask.

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// Frame size of the synthetic camera.
pub const WIDTH: u32 = 640;
pub const HEIGHT: u32 = 480;

/// A knife model: the geometry of one SKU.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct KnifeShape {
    pub sku: &'static str,
    /// `u` of the handle's end, the handle/blade joint (bolster) and the tip.
    pub handle_start: f32,
    pub bolster: f32,
    pub tip: f32,
    /// Half-width of the handle; the spine's `v` (negative); the edge's `v` at the heel.
    pub handle_half: f32,
    pub spine: f32,
    pub heel: f32,
    /// `u` of each rivet on the handle's centre line.
    pub rivets: &'static [f32],
    pub rivet_radius: f32,
}

/// A chef's knife, 200 mm blade.
pub const CHEF: KnifeShape = KnifeShape {
    sku: "WK-KN-200",
    handle_start: -215.0,
    bolster: -85.0,
    tip: 215.0,
    handle_half: 15.0,
    spine: -20.0,
    heel: 30.0,
    rivets: &[-190.0, -150.0, -110.0],
    rivet_radius: 5.0,
};

/// A paring knife, 90 mm blade.
pub const PARING: KnifeShape = KnifeShape {
    sku: "WK-PR-090",
    handle_start: -150.0,
    bolster: -45.0,
    tip: 150.0,
    handle_half: 13.0,
    spine: -12.0,
    heel: 16.0,
    rivets: &[-125.0, -75.0],
    rivet_radius: 4.5,
};

/// Every SKU the synthetic camera knows.
pub const SHAPES: [KnifeShape; 2] = [CHEF, PARING];

/// Looks a shape up by SKU.
pub fn shape(sku: &str) -> Option<KnifeShape> {
    SHAPES.into_iter().find(|s| s.sku == sku)
}

/// Defects the synthetic camera can paint, with the taxonomy's names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SynthDefect {
    Scratch,
    Chip,
    Rust,
    Pit,
    Stain,
    HandleCrack,
    MissingRivet,
}

impl SynthDefect {
    pub const ALL: [SynthDefect; 7] = [
        SynthDefect::Scratch,
        SynthDefect::Chip,
        SynthDefect::Rust,
        SynthDefect::Pit,
        SynthDefect::Stain,
        SynthDefect::HandleCrack,
        SynthDefect::MissingRivet,
    ];

    /// The defect type name of the taxonomy (a missing rivet is a `rivet` defect).
    pub fn type_name(self) -> &'static str {
        match self {
            SynthDefect::Scratch => "scratch",
            SynthDefect::Chip => "chip",
            SynthDefect::Rust => "rust",
            SynthDefect::Pit => "pit",
            SynthDefect::Stain => "stain",
            SynthDefect::HandleCrack => "handle_crack",
            SynthDefect::MissingRivet => "rivet",
        }
    }
}

/// One rendered part.
#[derive(Debug, Clone)]
pub struct Part {
    pub sku: &'static str,
    pub defect: Option<SynthDefect>,
    /// RGB pixels, row-major, `WIDTH × HEIGHT × 3`.
    pub rgb: Vec<u8>,
    /// 255 where the defect is, row-major `WIDTH × HEIGHT`; all zero for a good part.
    pub mask: Vec<u8>,
}

/// How one part departs from its SKU's drawing within tolerance, each feature on its own: no
/// two good parts are made exactly alike. The default is the drawing itself. Offsets beyond
/// [`Deviation::MAX_OFFSET_PX`] and shares beyond [`Deviation::MAX_SHARE`] are clamped to
/// them: a rivet further off would leave the paring knife's handle, and a blade narrower
/// than that leaves no room to paint a scratch on the paring knife.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Deviation {
    /// Offset `(u, v)` of each rivet from its drawn place, pixels, in the shape's order
    /// (a rivet without an entry sits where it is drawn); at most
    /// [`Deviation::MAX_OFFSET_PX`] in length.
    pub rivets: Vec<(f32, f32)>,
    /// Offset of the handle/blade join (bolster) along the knife, pixels; the blade moves with
    /// it. At most [`Deviation::MAX_OFFSET_PX`] either way.
    pub bolster: f32,
    /// Blade length (bolster to tip) as a share off the drawing's (0.01 is 1% longer); at most
    /// [`Deviation::MAX_SHARE`] either way.
    pub blade_length: f32,
    /// Blade width (spine and edge from the centre line) as a share off the drawing's; at most
    /// [`Deviation::MAX_SHARE`] either way.
    pub blade_width: f32,
}

impl Deviation {
    /// The largest offset of a rivet or of the join (pixels): the paring knife's rivet (radius
    /// 4.5) stays on its handle (half-width 13) up to 8.5 px across it.
    pub const MAX_OFFSET_PX: f32 = 8.0;
    /// The largest share the blade's length or width departs from the drawing: at a width 24%
    /// under the drawing's the paring knife's blade leaves no room to paint a scratch.
    pub const MAX_SHARE: f32 = 0.2;

    /// The shape this part was made to: `shape` with its blade and join moved.
    fn outline(&self, shape: &KnifeShape) -> KnifeShape {
        let share = |s: f32| s.clamp(-Self::MAX_SHARE, Self::MAX_SHARE);
        let bolster = self
            .bolster
            .clamp(-Self::MAX_OFFSET_PX, Self::MAX_OFFSET_PX);
        let width = 1.0 + share(self.blade_width);
        KnifeShape {
            bolster: shape.bolster + bolster,
            tip: shape.tip + bolster + (shape.tip - shape.bolster) * share(self.blade_length),
            spine: shape.spine * width,
            heel: shape.heel * width,
            ..*shape
        }
    }

    /// Where this part's rivets are, `(u, v)`.
    fn rivets(&self, shape: &KnifeShape) -> Vec<(f32, f32)> {
        shape
            .rivets
            .iter()
            .enumerate()
            .map(|(i, &u)| {
                let (du, dv) = self.rivets.get(i).copied().unwrap_or_default();
                let length = (du * du + dv * dv).sqrt();
                let keep = if length > Self::MAX_OFFSET_PX {
                    Self::MAX_OFFSET_PX / length
                } else {
                    1.0
                };
                (u + du * keep, dv * keep)
            })
            .collect()
    }
}

/// How a part is drawn: its rivets' places (from its [`Deviation`]); pose, light and the
/// defect's own parameters (drawn from the part's seed).
struct Scene {
    /// The rivets' places `(u, v)` on this part.
    rivets: Vec<(f32, f32)>,
    cx: f32,
    cy: f32,
    angle: f32,
    gain: f32,
    noise_seed: u64,
    paint: Option<Paint>,
}

/// The geometry of the one defect painted on a part, in part coordinates.
enum Paint {
    /// A line segment of a half-width, and a grey shift.
    Line {
        a: (f32, f32),
        b: (f32, f32),
        half_width: f32,
        shift: f32,
        on_handle: bool,
    },
    /// Material removed within `radius` of a point on the edge.
    Notch {
        u: f32,
        v: f32,
        radius: f32,
    },
    /// A soft blob: sum of discs; `rust` tints it orange, otherwise a grey stain.
    Blob {
        discs: Vec<(f32, f32, f32)>,
        rust: bool,
        strength: f32,
    },
    /// A small dark crater.
    Pit {
        u: f32,
        v: f32,
        radius: f32,
    },
    MissingRivet {
        index: usize,
    },
}

/// Renders the part for `seed`. `defect` chooses what to paint (None: a good part).
pub fn render(shape: &KnifeShape, defect: Option<SynthDefect>, seed: u64) -> Part {
    render_deviating(shape, defect, seed, &Deviation::default())
}

/// Renders the part for `seed` made with `deviation` from its drawing; the defect is painted
/// on the part as made (a missing rivet is missing where that part's rivet would be).
pub fn render_deviating(
    drawing: &KnifeShape,
    defect: Option<SynthDefect>,
    seed: u64,
    deviation: &Deviation,
) -> Part {
    let shape = &deviation.outline(drawing);
    let mut rng = StdRng::seed_from_u64(seed);
    let scene = Scene {
        rivets: deviation.rivets(drawing),
        cx: WIDTH as f32 / 2.0 + rng.random_range(-8.0..8.0),
        cy: HEIGHT as f32 / 2.0 + rng.random_range(-8.0..8.0),
        angle: rng.random_range(-3.0f32..3.0).to_radians(),
        gain: rng.random_range(0.92..1.08),
        noise_seed: rng.random(),
        paint: defect.map(|d| paint(shape, d, &mut rng)),
    };
    let mut rgb = vec![0u8; (WIDTH * HEIGHT * 3) as usize];
    let mut mask = vec![0u8; (WIDTH * HEIGHT) as usize];
    let (s, c) = scene.angle.sin_cos();
    for y in 0..HEIGHT {
        for x in 0..WIDTH {
            let (dx, dy) = (x as f32 + 0.5 - scene.cx, y as f32 + 0.5 - scene.cy);
            let u = dx * c + dy * s;
            let v = -dx * s + dy * c;
            let (color, hit) = shade(shape, &scene, x, y, u, v);
            let i = (y * WIDTH + x) as usize;
            rgb[3 * i..3 * i + 3].copy_from_slice(&color);
            if hit {
                mask[i] = 255;
            }
        }
    }
    Part {
        sku: shape.sku,
        defect,
        rgb,
        mask,
    }
}

/// Draws the defect's parameters.
fn paint(shape: &KnifeShape, defect: SynthDefect, rng: &mut StdRng) -> Paint {
    let blade_len = shape.tip - shape.bolster;
    let blade_u = |rng: &mut StdRng| shape.bolster + blade_len * rng.random_range(0.12..0.7);
    match defect {
        SynthDefect::Scratch => {
            let u = blade_u(rng);
            let v = rng.random_range(shape.spine + 6.0..edge_v(shape, u) - 8.0);
            let len = rng.random_range(35.0..80.0);
            let tilt = rng.random_range(-0.35f32..0.35);
            let (ts, tc) = tilt.sin_cos();
            Paint::Line {
                a: (u, v),
                b: (u + len * tc, v + len * ts),
                half_width: rng.random_range(0.7..1.3),
                shift: if rng.random_bool(0.5) { -70.0 } else { 55.0 },
                on_handle: false,
            }
        }
        SynthDefect::Chip => {
            let u = blade_u(rng);
            Paint::Notch {
                u,
                v: edge_v(shape, u),
                radius: rng.random_range(5.0..9.0),
            }
        }
        SynthDefect::Rust | SynthDefect::Stain => {
            let u = blade_u(rng);
            let v = (shape.spine + edge_v(shape, u)) / 2.0 + rng.random_range(-4.0..4.0);
            let rust = defect == SynthDefect::Rust;
            let n = rng.random_range(3..6);
            let discs = (0..n)
                .map(|_| {
                    (
                        u + rng.random_range(-9.0..9.0),
                        v + rng.random_range(-5.0..5.0),
                        rng.random_range(5.0..10.0),
                    )
                })
                .collect();
            Paint::Blob {
                discs,
                rust,
                strength: if rust { 0.75 } else { 0.45 },
            }
        }
        SynthDefect::Pit => {
            let u = blade_u(rng);
            let v = rng.random_range(shape.spine + 6.0..edge_v(shape, u) - 6.0);
            Paint::Pit {
                u,
                v,
                radius: rng.random_range(2.2..3.5),
            }
        }
        SynthDefect::HandleCrack => {
            let u = rng.random_range(shape.handle_start + 15.0..shape.bolster - 40.0);
            let v = rng.random_range(-shape.handle_half + 4.0..0.0);
            let len = rng.random_range(20.0..35.0);
            let tilt = rng.random_range(-0.5f32..0.5);
            let (ts, tc) = tilt.sin_cos();
            Paint::Line {
                a: (u, v),
                b: (u + len * tc, v + len * ts * 0.5),
                half_width: rng.random_range(0.8..1.3),
                shift: 75.0,
                on_handle: true,
            }
        }
        SynthDefect::MissingRivet => Paint::MissingRivet {
            index: rng.random_range(0..shape.rivets.len()),
        },
    }
}

/// `v` of the cutting edge at `u` on the blade: straight from the heel, curving up to the tip.
fn edge_v(shape: &KnifeShape, u: f32) -> f32 {
    let t = ((u - shape.bolster) / (shape.tip - shape.bolster)).clamp(0.0, 1.0);
    shape.spine + (shape.heel - shape.spine) * (1.0 - t.powi(3))
}

/// Coverage (0..1) of a pixel by a region whose signed inside-distance is `d` pixels.
fn cover(d: f32) -> f32 {
    (d + 0.5).clamp(0.0, 1.0)
}

/// Deterministic per-pixel noise in -1..1.
fn hash_noise(seed: u64, x: u32, y: u32) -> f32 {
    let mut h = seed ^ (u64::from(x) << 32 | u64::from(y)).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    h ^= h >> 33;
    h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
    h ^= h >> 33;
    (h & 0xffff) as f32 / 32767.5 - 1.0
}

fn mix(a: [f32; 3], b: [f32; 3], t: f32) -> [f32; 3] {
    [
        a[0] + (b[0] - a[0]) * t,
        a[1] + (b[1] - a[1]) * t,
        a[2] + (b[2] - a[2]) * t,
    ]
}

fn segment_distance(p: (f32, f32), a: (f32, f32), b: (f32, f32)) -> f32 {
    let (abx, aby) = (b.0 - a.0, b.1 - a.1);
    let t = (((p.0 - a.0) * abx + (p.1 - a.1) * aby) / (abx * abx + aby * aby)).clamp(0.0, 1.0);
    ((p.0 - a.0 - t * abx).powi(2) + (p.1 - a.1 - t * aby).powi(2)).sqrt()
}

/// The colour of one pixel and whether the defect covers it.
fn shade(shape: &KnifeShape, scene: &Scene, x: u32, y: u32, u: f32, v: f32) -> ([u8; 3], bool) {
    let grain = hash_noise(scene.noise_seed, x, y);
    // Belt: grey-green rubber with fine grain and a soft vertical light falloff.
    let falloff = 1.0 - 0.08 * ((y as f32 / HEIGHT as f32) - 0.5).abs();
    let belt = [78.0 * falloff, 92.0 * falloff, 84.0 * falloff].map(|c| c + 4.0 * grain);

    // Handle: rounded rectangle from handle_start to the bolster.
    let handle_in = cover(
        (shape.handle_half - v.abs())
            .min(u - shape.handle_start)
            .min(shape.bolster + 2.0 - u),
    );
    // Blade: between the spine and the edge, from the bolster to the tip.
    let edge = edge_v(shape, u);
    let mut blade_in = cover(
        (v - shape.spine)
            .min(edge - v)
            .min(u - shape.bolster)
            .min(shape.tip - u),
    );

    let mut hit = false;
    if let Some(Paint::Notch {
        u: nu,
        v: nv,
        radius,
    }) = scene.paint
    {
        let d = ((u - nu).powi(2) + (v - nv).powi(2)).sqrt();
        if d < radius + 0.5 && blade_in > 0.0 {
            hit = d < radius;
            blade_in *= 1.0 - cover(radius - d);
        }
    }

    // Brushed steel: streaks constant along u, a brighter bevel near the edge, a soft highlight.
    let streak = hash_noise(scene.noise_seed ^ 0xB1ADE, 0, (v * 2.0 + 1000.0) as u32);
    let bevel = ((8.0 - (edge - v)) / 8.0).clamp(0.0, 1.0);
    let highlight = (-((v - shape.spine * 0.3) / 14.0).powi(2)).exp();
    let steel_level = (168.0 + 10.0 * streak + 28.0 * bevel + 18.0 * highlight) * scene.gain;
    let mut steel = [steel_level, steel_level + 2.0, steel_level + 5.0].map(|c| c + 3.0 * grain);

    let wood = hash_noise(
        scene.noise_seed ^ 0x600D,
        (u * 0.5 + 1000.0) as u32,
        (v * 3.0 + 1000.0) as u32,
    );
    let mut handle = [46.0 + 5.0 * wood, 36.0 + 4.0 * wood, 32.0 + 4.0 * wood]
        .map(|c| c * scene.gain + 2.5 * grain);
    for (index, (ru, rv)) in scene.rivets.iter().enumerate() {
        let d = ((u - ru).powi(2) + (v - rv).powi(2)).sqrt();
        let rivet = cover(shape.rivet_radius - d);
        if rivet > 0.0 {
            if let Some(Paint::MissingRivet { index: missing }) = scene.paint
                && missing == index
            {
                hit |= d < shape.rivet_radius;
                continue;
            }
            let dome = 1.0 - (d / shape.rivet_radius).powi(2) * 0.35;
            handle = mix(handle, [200.0 * dome, 198.0 * dome, 192.0 * dome], rivet);
        }
    }

    match &scene.paint {
        Some(Paint::Line {
            a,
            b,
            half_width,
            shift,
            on_handle,
        }) => {
            let d = segment_distance((u, v), *a, *b);
            let t = cover(half_width - d);
            let inside = if *on_handle { handle_in } else { blade_in };
            if t > 0.0 && inside > 0.5 {
                hit = true;
                let target = if *on_handle { &mut handle } else { &mut steel };
                *target = target.map(|c| c + shift * t);
            }
        }
        Some(Paint::Blob {
            discs,
            rust,
            strength,
        }) => {
            let w: f32 = discs
                .iter()
                .map(|(du, dv, r)| (-(((u - du).powi(2) + (v - dv).powi(2)) / (r * r))).exp())
                .sum::<f32>()
                .min(1.0);
            if w > 0.35 && blade_in > 0.5 {
                hit = true;
                let stain = if *rust {
                    [150.0 + 20.0 * grain, 78.0 + 12.0 * grain, 38.0]
                } else {
                    steel.map(|c| c * 0.72)
                };
                steel = mix(steel, stain, strength * ((w - 0.2) / 0.8).clamp(0.0, 1.0));
            }
        }
        Some(Paint::Pit {
            u: pu,
            v: pv,
            radius,
        }) => {
            let d = ((u - pu).powi(2) + (v - pv).powi(2)).sqrt();
            let t = cover(radius - d);
            if t > 0.0 && blade_in > 0.5 {
                hit = true;
                steel = mix(steel, [40.0, 38.0, 36.0], t * (1.0 - 0.4 * d / radius));
            }
        }
        _ => {}
    }

    let part = mix(mix(belt, handle, handle_in), steel, blade_in);
    (part.map(|c| c.round().clamp(0.0, 255.0) as u8), hit)
}

/// Chooses, for part number `index` of a seeded stream, its SKU-independent defect: `None`
/// with probability `1 - defect_rate`, otherwise one of [`SynthDefect::ALL`] in turn.
pub fn pick_defect(seed: u64, index: u64, defect_rate: f64) -> Option<SynthDefect> {
    let mut rng = StdRng::seed_from_u64(seed ^ index.wrapping_mul(0x2545_F491_4F6C_DD1D));
    if rng.random_bool(defect_rate.clamp(0.0, 1.0)) {
        Some(SynthDefect::ALL[rng.random_range(0..SynthDefect::ALL.len())])
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_same_seed_gives_the_same_part() {
        let a = render(&CHEF, Some(SynthDefect::Scratch), 42);
        let b = render(&CHEF, Some(SynthDefect::Scratch), 42);
        assert_eq!(a.rgb, b.rgb);
        assert_eq!(a.mask, b.mask);
        let c = render(&CHEF, Some(SynthDefect::Scratch), 43);
        assert_ne!(a.rgb, c.rgb);
    }

    #[test]
    fn every_defect_paints_a_mask_and_a_good_part_none() {
        for shape in SHAPES {
            assert!(render(&shape, None, 1).mask.iter().all(|&m| m == 0));
            for defect in SynthDefect::ALL {
                for seed in 0..3 {
                    let part = render(&shape, Some(defect), seed);
                    let area = part.mask.iter().filter(|&&m| m > 0).count();
                    assert!(
                        area >= 10,
                        "{} {defect:?} seed {seed}: mask of {area} px",
                        shape.sku
                    );
                    assert!(area < 5_000, "{} {defect:?}: mask of {area} px", shape.sku);
                }
            }
        }
    }

    #[test]
    fn the_knife_stands_out_from_the_belt() {
        let part = render(&CHEF, None, 7);
        let grey = |x: u32, y: u32| part.rgb[3 * (y * WIDTH + x) as usize];
        let belt = grey(5, 5);
        let blade = grey(WIDTH / 2 + 100, HEIGHT / 2);
        let handle = grey(WIDTH / 2 - 170, HEIGHT / 2);
        assert!(blade > belt + 50, "blade {blade} belt {belt}");
        assert!(handle + 25 < belt, "handle {handle} belt {belt}");
    }

    #[test]
    fn defects_are_picked_at_the_requested_rate() {
        let n = 2000;
        let bad = (0..n).filter(|&i| pick_defect(9, i, 0.2).is_some()).count();
        assert!((300..500).contains(&bad), "{bad} of {n}");
        assert!((0..50).all(|i| pick_defect(9, i, 0.0).is_none()));
    }
}
