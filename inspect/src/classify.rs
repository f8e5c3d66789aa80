//! Heuristic typing of a region from its shape, its place on the part and its intensity.
//!
//! All of it is heuristic: the analyzer knows where the part differs from good parts, not why.
//! The place comes from the model's median at the region: darker than the background is the
//! handle, brighter is the blade, equal is outside the part.

use serde::{Deserialize, Serialize};

/// What a region most likely is, in the knife taxonomy's terms.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RegionKind {
    Scratch,
    Chip,
    Pit,
    Rust,
    Stain,
    Burr,
    HandleCrack,
    Rivet,
    Other,
}

impl RegionKind {
    /// The taxonomy name (as in `wiko_wire::DefectType`).
    pub fn as_str(self) -> &'static str {
        match self {
            RegionKind::Scratch => "scratch",
            RegionKind::Chip => "chip",
            RegionKind::Pit => "pit",
            RegionKind::Rust => "rust",
            RegionKind::Stain => "stain",
            RegionKind::Burr => "burr",
            RegionKind::HandleCrack => "handle_crack",
            RegionKind::Rivet => "rivet",
            RegionKind::Other => "other",
        }
    }
}

/// Where on the part a region lies: for aligned parts from the model's median there; a
/// textured surface has no parts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Zone {
    Background,
    Handle,
    Blade,
    Surface,
}

/// The facts about a region that typing looks at.
#[derive(Debug, Clone, Copy)]
pub struct Evidence {
    pub zone: Zone,
    /// Canonical pixels.
    pub area: usize,
    pub elongation: f32,
    /// Mean observed grey level minus the model's median.
    pub shift: f32,
    /// The same for the region's darkest tenth of pixels (aligned parts; 0 on surfaces).
    pub dark_shift: f32,
    /// Of the region's pixels where good parts have material, the share observed as dark as
    /// the background: material is missing there (aligned parts; 0 on surfaces).
    pub missing_share: f32,
    /// Share of the region's pixels where good parts have none: outside the silhouette.
    pub outside_share: f32,
    /// Of those, the share observed unlike the background: material where good parts have none.
    pub added_share: f32,
}

impl Evidence {
    /// A surface region: shape and mean shift only.
    pub fn on_surface(area: usize, elongation: f32, shift: f32) -> Evidence {
        Evidence {
            zone: Zone::Surface,
            area,
            elongation,
            shift,
            dark_shift: 0.0,
            missing_share: 0.0,
            outside_share: 0.0,
            added_share: 0.0,
        }
    }

    /// Width across the region's long axis, in canonical pixels (as of an ellipse of its area
    /// and elongation, up to a constant).
    fn thickness(&self) -> f32 {
        (self.area as f32 / self.elongation.max(1.0)).sqrt()
    }

    /// Long and thin: a scratch or a crack (a large elongated blob is not one).
    fn is_line(&self) -> bool {
        self.elongation >= LINE_ELONGATION && self.thickness() <= LINE_THICKNESS
    }

    /// On the silhouette, with material missing where good parts have it.
    fn is_notch(&self) -> bool {
        self.outside_share >= SILHOUETTE_SHARE && self.missing_share >= NOTCH_MISSING_SHARE
    }
}

/// Up to this many canonical pixels, a compact region on a part is a pit (the synthetic
/// knives' pits, 2 to 4 px in radius, make regions of 58 to 100; rust and stains 250 and more).
const PIT_MAX_AREA: usize = 120;
/// The same on a surface, in working pixels.
const SURFACE_PIT_MAX_AREA: usize = 80;
/// Above this long-to-short axis ratio, a region is a line (scratch, crack)...
const LINE_ELONGATION: f32 = 3.5;
/// ...if it is also thin: measured on the synthetic knives, scratches 4.7 to 8.4, rust and
/// stains 16 to 25 (a stain on a narrow blade runs along it).
const LINE_THICKNESS: f32 = 10.0;
/// A region on the silhouette covers at least this share of pixels outside it...
const SILHOUETTE_SHARE: f32 = 0.03;
/// ...and a notch has material missing from at least this share of its part pixels (chips on
/// the synthetic knives 0.20 to 0.30; scratches that reach the edge at most 0.12).
const NOTCH_MISSING_SHARE: f32 = 0.15;
/// A blob whose darkest tenth is at least this much darker than good parts is rust; a milder
/// shift, either way, a stain (grey levels).
const RUST_DARKENING: f32 = 30.0;

pub fn classify(e: &Evidence) -> RegionKind {
    match e.zone {
        Zone::Background => {
            if e.added_share > 0.5 {
                // Material where good parts have none: a burr or something on the belt.
                RegionKind::Burr
            } else {
                RegionKind::Other
            }
        }
        Zone::Handle => {
            if e.elongation >= LINE_ELONGATION {
                RegionKind::HandleCrack
            } else {
                RegionKind::Rivet
            }
        }
        Zone::Surface => {
            if e.elongation >= LINE_ELONGATION {
                RegionKind::Scratch
            } else if e.area <= SURFACE_PIT_MAX_AREA {
                RegionKind::Pit
            } else {
                RegionKind::Stain
            }
        }
        Zone::Blade => {
            if e.is_notch() {
                RegionKind::Chip
            } else if e.is_line() {
                RegionKind::Scratch
            } else if e.area <= PIT_MAX_AREA {
                RegionKind::Pit
            } else if e.dark_shift <= -RUST_DARKENING {
                RegionKind::Rust
            } else {
                RegionKind::Stain
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn blade(area: usize, elongation: f32, dark_shift: f32) -> Evidence {
        Evidence {
            zone: Zone::Blade,
            dark_shift,
            ..Evidence::on_surface(area, elongation, dark_shift / 3.0)
        }
    }

    #[test]
    fn typing_follows_shape_place_and_intensity() {
        assert_eq!(classify(&blade(300, 10.0, -40.0)), RegionKind::Scratch);
        assert_eq!(
            classify(&blade(3000, 6.5, -25.0)),
            RegionKind::Stain,
            "a long blob is not a line"
        );
        assert_eq!(classify(&blade(60, 1.2, -80.0)), RegionKind::Pit);
        assert_eq!(classify(&blade(1200, 2.5, -50.0)), RegionKind::Rust);
        assert_eq!(classify(&blade(800, 2.0, -18.0)), RegionKind::Stain);
        assert_eq!(classify(&blade(300, 1.5, 0.0)), RegionKind::Stain);
        let notch = Evidence {
            missing_share: 0.25,
            outside_share: 0.1,
            ..blade(350, 5.8, -70.0)
        };
        assert_eq!(classify(&notch), RegionKind::Chip);
        let scratch_to_the_edge = Evidence {
            missing_share: 0.1,
            ..notch
        };
        assert_eq!(classify(&scratch_to_the_edge), RegionKind::Scratch);
        let handle = |elongation| Evidence {
            zone: Zone::Handle,
            ..Evidence::on_surface(60, elongation, 10.0)
        };
        assert_eq!(classify(&handle(6.0)), RegionKind::HandleCrack);
        assert_eq!(classify(&handle(1.1)), RegionKind::Rivet);
        let outside = |added_share| Evidence {
            zone: Zone::Background,
            outside_share: 0.9,
            added_share,
            ..Evidence::on_surface(400, 2.0, 30.0)
        };
        assert_eq!(classify(&outside(0.8)), RegionKind::Burr);
        assert_eq!(classify(&outside(0.1)), RegionKind::Other);
        let surface = |area, elongation| Evidence::on_surface(area, elongation, -1.0);
        assert_eq!(classify(&surface(300, 6.0)), RegionKind::Scratch);
        assert_eq!(classify(&surface(30, 1.5)), RegionKind::Pit);
        assert_eq!(classify(&surface(300, 1.5)), RegionKind::Stain);
    }
}
