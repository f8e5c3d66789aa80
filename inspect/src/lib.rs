//! Image analysis for knife inspection, as pure functions.
//!
//! No IO, no async, no logging. The same input gives the same output, and no input makes it panic:
//! bad bytes are an [`InspectError`], a defect is a [`Region`] in a [`Verdict`].
//!
//! # Method (provisional, aligned parts)
//! 1. [`decode`]: JPEG/PNG/TIFF/BMP bytes to an 8-bit grey image, refusing anything over the pixel
//!    limit before pixels are allocated (no decompression bombs).
//! 2. [`register`]: the part is separated from the belt (pixels that differ from the belt level,
//!    estimated on the image border), its pose is taken from the silhouette's image moments
//!    (centroid and principal axis; the 180° ambiguity is resolved by putting the darker end,
//!    the handle, on the left), and the image is resampled into a canonical frame.
//! 3. [`model::Model::fit`]: per canonical pixel, the median and the robust spread (MAD) of the
//!    registered good images. The decision threshold is calibrated from the good images alone by
//!    leave-one-out scoring, robustly, so a few bad parts among the "good" ones do not inflate it.
//! 4. [`model::Model::score`]: the z-map `|x - median| / spread`, smoothed; its maximum is the image
//!    score; connected components above the pixel threshold are the regions, mapped back to
//!    pixel boxes of the input image.
//! 5. Region typing is heuristic (shape, place on the part, intensity shift); see [`classify`].
//!
//! The golden-sample analyzer with texture features and position-free models replaces this method
//! in a later version; the [`model::Model`] file is versioned for that reason.

pub mod classify;
pub mod decode;
pub mod gray;
pub mod model;
pub mod regions;
pub mod register;

pub use classify::RegionKind;
pub use decode::{DecodeLimits, decode};
pub use gray::Gray;
pub use model::{FitError, Model, Verdict};
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
}
