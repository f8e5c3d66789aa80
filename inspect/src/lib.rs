//! Image analysis for knife inspection, as pure functions.
//!
//! No IO, no async, no logging. The same input gives the same output, and no input makes it panic:
//! bad bytes are an [`InspectError`], a defect is a [`Region`] in a [`Verdict`].
//!
//! # The golden-sample method
//! A [`Model`] is fitted per SKU from good images only and tells how far an image is from them.
//! 1. [`decode`]: JPEG/PNG/TIFF/BMP (8 or 16 bit, grey or colour, EXIF orientation applied) to
//!    an [`Image`]: 8-bit-range luma, and chroma at half resolution where the file has colour;
//!    refusing anything over the pixel limit before pixels are allocated (no decompression
//!    bombs) and truncated JPEGs.
//! 2. Four kinds of view, chosen per model ([`model::MethodChoice`], `auto` by default):
//!    - [`aligned`]: an object on a plain background (a knife on a belt). [`register`] divides
//!      out light that falls across the frame (a plane fitted to the border), finds the pose
//!      from the silhouette's moments, scales the part to the good parts' size (refined on the
//!      reference) and mirrors it when good parts lie either way up; per canonical location
//!      the model holds robust statistics (median, spread) of the gain-normalised level and of
//!      the cross-grain detail, the spread at least the reference's slope times a quarter
//!      pixel (a variation model's tolerance on edges); a pixel keeps its least z-score
//!      against the reference within a pixel of its place (a rivet placed a pixel off).
//!    - [`fixed`]: a surface filling the image under a fixed camera and fixture, so the same
//!      thing is always in the same place: per-pixel robust statistics, no registration.
//!      Chosen when the good images' per-pixel spread is small against their spatial variation.
//!    - [`texture`]: a surface filling the image, where position means nothing. A bank of line
//!      detectors (four orientations, dark and bright) and of wavy-path detectors ([`paths`])
//!      runs over the shading-free image and of step detectors and long boundary detectors
//!      across the surface's grain ([`boundaries`]) over the smoothed one; the
//!      model holds each channel's median and percentiles over good pixels and each family's
//!      typical maximum in good images, and a pixel's anomaly is its strongest response in
//!      those units (a line's, as far as it stands out at both of its widths).
//!    - [`patch`]: a part that hangs or turns by any angle (chosen for compact objects whose
//!      good images turn by more than 20°; elongated ones are registered by their axis): per cell of the working image, the mean and spread of
//!      luma and chroma and the luma gradient, against a bounded memory of the good images'
//!      cells; a cell's anomaly is the distance to its nearest good one. Colour counts here:
//!      rust on paint is a change of hue.
//! 3. The image score is the maximum of the anomaly map. The threshold comes from good images
//!    alone: five-fold cross-scoring gives each good image a held-out score (the folds hold
//!    whole parts when several images show one, [`Model::fit_objects`]), and
//!    [`stats::calibrate`] fits an extreme-value law to them for a stated false-reject rate.
//! 4. Regions are the connected components of the map (hysteresis), with a box in input
//!    pixels. Their type is heuristic (shape, place on the part, intensity shift); see
//!    [`classify`].

pub mod aligned;
pub mod boundaries;
pub mod classify;
pub mod colour;
pub mod decode;
pub mod fixed;
pub mod glare;
pub mod gray;
mod half_floats;
pub mod model;
pub mod patch;
pub mod paths;
pub mod regions;
pub mod register;
pub mod stats;
pub mod texture;

pub use classify::RegionKind;
pub use colour::Image;
pub use decode::{DecodeLimits, Planes, decode, decode_planes};
pub use gray::Gray;
pub use model::{FitError, FitOptions, MethodChoice, Model, ModelFileError, Verdict};
pub use regions::Region;

/// Why an image could not be analysed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InspectError {
    #[error("the image is empty")]
    Empty,
    #[error("the image is {width}x{height} pixels, over the limit of {max_pixels}")]
    TooManyPixels {
        width: u32,
        height: u32,
        max_pixels: u64,
    },
    #[error("unsupported image format (JPEG, PNG, TIFF or BMP expected)")]
    UnsupportedFormat,
    #[error("the JPEG is truncated (no end-of-image marker)")]
    Truncated,
    #[error("the image does not decode: {0}")]
    Decode(String),
    #[error("no part found in the image (nothing differs from the background)")]
    NoPart,
    #[error(
        "the image is {width}x{height} pixels, too small to judge (at least {min} on each side)"
    )]
    TooSmall {
        width: usize,
        height: usize,
        min: usize,
    },
}
