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
    /// Share of the region's pixels whose observed level is close to the background: material
    /// is missing there.
    pub missing_share: f32,
}

/// Below this many canonical pixels, a compact region is a pit.
const PIT_MAX_AREA: usize = 80;
/// Above this long-to-short axis ratio, a region is a line (scratch, crack).
const LINE_ELONGATION: f32 = 3.5;

pub fn classify(e: &Evidence) -> RegionKind {
    match e.zone {
        Zone::Background => {
            if e.missing_share > 0.5 {
                RegionKind::Other
            } else {
                // Material where good parts have none: a burr or something on the belt.
                RegionKind::Burr
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
            } else if e.area <= PIT_MAX_AREA {
                RegionKind::Pit
            } else {
                RegionKind::Stain
            }
        }
        Zone::Blade => {
            if e.missing_share > 0.5 {
                RegionKind::Chip
            } else if e.elongation >= LINE_ELONGATION {
                RegionKind::Scratch
            } else if e.area <= PIT_MAX_AREA {
                RegionKind::Pit
            } else if e.shift < 0.0 {
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

    fn blade(area: usize, elongation: f32, shift: f32, missing_share: f32) -> Evidence {
        Evidence {
            zone: Zone::Blade,
            area,
            elongation,
            shift,
            missing_share,
        }
    }

    #[test]
    fn typing_follows_shape_place_and_intensity() {
        assert_eq!(classify(&blade(200, 8.0, -30.0, 0.0)), RegionKind::Scratch);
        assert_eq!(classify(&blade(20, 1.2, -40.0, 0.0)), RegionKind::Pit);
        assert_eq!(classify(&blade(300, 1.5, -40.0, 0.0)), RegionKind::Rust);
        assert_eq!(classify(&blade(300, 1.5, 20.0, 0.0)), RegionKind::Stain);
        assert_eq!(classify(&blade(100, 2.0, -90.0, 0.9)), RegionKind::Chip);
        let handle = |elongation| Evidence {
            zone: Zone::Handle,
            area: 60,
            elongation,
            shift: 10.0,
            missing_share: 0.0,
        };
        assert_eq!(classify(&handle(6.0)), RegionKind::HandleCrack);
        assert_eq!(classify(&handle(1.1)), RegionKind::Rivet);
        let surface = |area, elongation| Evidence {
            zone: Zone::Surface,
            area,
            elongation,
            shift: -1.0,
            missing_share: 0.0,
        };
        assert_eq!(classify(&surface(300, 6.0)), RegionKind::Scratch);
        assert_eq!(classify(&surface(30, 1.5)), RegionKind::Pit);
        assert_eq!(classify(&surface(300, 1.5)), RegionKind::Stain);
    }
}
