//! The per-SKU golden-sample model: fitted from good images only, calibrated from good images
//! only, scored against one image at a time. Pure; the model file is versioned.

use serde::{Deserialize, Serialize};

use crate::aligned::{self, AlignedModel};
use crate::decode::Planes;
use crate::fixed::{self, FixedModel};
use crate::patch::{self, PatchModel};
use crate::regions::{Component, Region, components};
use crate::register::Pose;
use crate::stats::{calibrate, median};
use crate::texture::{self, TextureModel};
use crate::{DecodeLimits, Gray, Image, InspectError};

/// Version of the model layout and of the scores its threshold was calibrated on (5: texture
/// lines count as far as both offsets agree, per-location statistics are half floats; 6:
/// texture path channels and per-family units; 7: texture dark responses beside a glare do
/// not count; 8: texture boundaries across the grain; 9: aligned parts' gain from the upper
/// quartile of the part's levels; 10: colour images and the position-free patch method; 11:
/// aligned parts scaled to the good parts' size and mirrored to one side when they lie either
/// way up, their tolerance widened on edges; 12: an aligned part's pixel compared with the
/// reference within a pixel of its place; 13: an aligned part's light slope divided out when
/// the border shows it against the standard error of its block means, so also on a marked
/// belt; 14: aligned parts lie either way up when their silhouettes are lopsided beyond their
/// scatter, not only over a skewness of 0.2); a model file of another version must be
/// refitted.
pub const MODEL_FORMAT: u32 = 14;
/// Smallest number of good images to fit from.
pub const MIN_GOOD: usize = 5;
/// Region growth threshold, as a share of the image threshold.
const GROW_SHARE: f32 = 0.5;
/// At most this many regions are reported, strongest first.
const MAX_REGIONS: usize = 8;
/// Folds of the cross-scoring that calibrates the threshold.
const FOLDS: usize = 5;
/// Auto choice: an image is an object on a plain background when its silhouette covers this
/// share of it, and the border's spread is below [`PLAIN_BORDER`].
const OBJECT_COVERAGE: std::ops::RangeInclusive<f32> = 0.01..=0.6;
const PLAIN_BORDER: f32 = 15.0;
/// Auto choice: objects whose good images lie within this angle (radians) of their mean
/// direction are compared per location (aligned). Beyond it, an elongated part (its length
/// at least [`ELONGATED`] times its width, as a knife's ten) is still registered by its long
/// axis at any angle; a compact one (a plate, whose axis of inertia means little) hangs or
/// turns freely and is compared position-free (patch).
const ALIGNED_PLAY: f32 = 0.35;
const ELONGATED: f32 = 3.0;
/// First bytes of a model file.
const MAGIC: &[u8; 8] = b"WIKOMODL";

/// Which kind of model to fit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MethodChoice {
    /// Aligned when every good image shows one object on a plain background within a small
    /// angle (patch when it turns further); for surfaces, fixed when the good images repeat
    /// one view in place, else texture.
    #[default]
    Auto,
    Aligned,
    Fixed,
    Texture,
    /// Position-free: local colour statistics against a memory of the good parts' (parts
    /// that hang or turn by any angle).
    Patch,
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct FitOptions {
    pub method: MethodChoice,
    /// The share of good parts the calibrated threshold may reject (0 < rate < 0.5).
    pub false_reject_rate: f32,
}

impl Default for FitOptions {
    fn default() -> Self {
        FitOptions {
            method: MethodChoice::Auto,
            false_reject_rate: 0.01,
        }
    }
}

/// The learned statistics, by kind of part.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Method {
    Aligned(AlignedModel),
    Fixed(FixedModel),
    Texture(TextureModel),
    Patch(PatchModel),
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Model {
    pub format: u32,
    /// The SKU it was fitted for, as its user named it (empty if none was given).
    pub sku: String,
    pub method: Method,
    /// Image score above which a part is NG.
    pub threshold: f32,
    /// The false-reject rate the threshold was calibrated for.
    pub false_reject_rate: f32,
    /// Number of good images it was fitted on.
    pub trained_on: usize,
    /// Scores of the good images when held out of fitting (cross-scoring), in input order.
    pub held_out_scores: Vec<f32>,
}

/// Why a model could not be fitted.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum FitError {
    #[error("{got} good images given, at least {MIN_GOOD} needed")]
    TooFew { got: usize },
    #[error("good image {index}: {source}")]
    Image { index: usize, source: InspectError },
    #[error("the false-reject rate must be above 0 and below 0.5, not {0}")]
    Rate(f32),
}

/// Why bytes are not a usable model.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ModelFileError {
    #[error("not a Wiko model file")]
    NotAModel,
    #[error("model format {found}, this version reads {MODEL_FORMAT}: fit the model again")]
    Format { found: u32 },
    #[error("the model file is damaged: {0}")]
    Corrupt(String),
}

/// The decision for one image.
#[derive(Debug, Clone, PartialEq)]
pub struct Verdict {
    pub score: f32,
    pub threshold: f32,
    pub defect_detected: bool,
    /// Strongest first; empty for an accepted part.
    pub regions: Vec<Region>,
    /// Where the part lay (aligned models only).
    pub pose: Option<Pose>,
    /// The anomaly map in the model's frame: canonical for aligned parts, the working image
    /// for surfaces. The score is its maximum.
    pub map: Gray,
}

impl Model {
    /// Fits a model from good images and calibrates its threshold by cross-scoring: each of
    /// five folds is scored by a model fitted without it. Every image is taken to show a part
    /// of its own.
    pub fn fit(images: &[Image], options: &FitOptions) -> Result<Model, FitError> {
        let objects: Vec<usize> = (0..images.len()).collect();
        Model::fit_objects(images, &objects, options)
    }

    /// [`Model::fit`] for good images of which several may show the same part (`objects[i]`
    /// names the part of image `i`): the cross-scoring's folds hold whole parts, so that no
    /// held-out score comes from a model that saw another photo of the same part, and the
    /// threshold is calibrated as for parts never seen. With fewer than two parts, the folds
    /// hold single images.
    pub fn fit_objects(
        images: &[Image],
        objects: &[usize],
        options: &FitOptions,
    ) -> Result<Model, FitError> {
        let folds = folds_of(objects, images.len());
        if images.len() < MIN_GOOD {
            return Err(FitError::TooFew { got: images.len() });
        }
        let good: Vec<&Gray> = images.iter().map(|i| &i.luma).collect();
        let good = good.as_slice();
        let rate = options.false_reject_rate;
        if !(rate > 0.0 && rate < 0.5) {
            return Err(FitError::Rate(rate));
        }
        let (method, held_out_scores) = match options.method {
            MethodChoice::Texture => fit_texture(good, &folds)?,
            MethodChoice::Patch => fit_patch(images, &folds)?,
            MethodChoice::Fixed => {
                let reference = texture::median_size(good);
                fit_fixed(reference, prepare_fixed(good, reference)?, &folds)
            }
            MethodChoice::Aligned => {
                fit_aligned(good, all_registered(aligned_poses(good))?, &folds)?
            }
            MethodChoice::Auto => {
                let poses = aligned_poses(good);
                let is_object = |p: &Result<(Gray, Pose), InspectError>| {
                    p.as_ref().is_ok_and(|(_, p)| looks_like_an_object(p))
                };
                let objects = poses.iter().filter(|p| is_object(p)).count();
                if objects == good.len() {
                    let registered = all_registered(poses)?;
                    let angles: Vec<f32> = registered.iter().map(|(_, p)| p.angle).collect();
                    let mut elongations: Vec<f32> = registered
                        .iter()
                        .map(|(_, p)| p.half_length / p.half_width.max(1.0))
                        .collect();
                    if angle_play(&angles) > ALIGNED_PLAY && median(&mut elongations) < ELONGATED {
                        fit_patch(images, &folds)?
                    } else {
                        fit_aligned(good, registered, &folds)?
                    }
                } else if objects * 2 > good.len() {
                    // Mostly single parts on a belt: the others are bad golden images (an empty
                    // belt, two parts, a cut-off frame). Refuse rather than fall back to a
                    // texture model that would judge knives poorly.
                    let index = poses.iter().position(|p| !is_object(p)).unwrap_or(0);
                    let source = match &poses[index] {
                        Err(e) => e.clone(),
                        Ok(_) => InspectError::NoPart,
                    };
                    return Err(FitError::Image { index, source });
                } else {
                    fit_surface(good, &folds)?
                }
            }
        };
        Ok(Model {
            format: MODEL_FORMAT,
            sku: String::new(),
            method,
            threshold: calibrate(&held_out_scores, rate),
            false_reject_rate: rate,
            trained_on: good.len(),
            held_out_scores,
        })
    }

    /// `aligned`, `fixed` or `texture`.
    pub fn kind(&self) -> &'static str {
        match self.method {
            Method::Aligned(_) => "aligned",
            Method::Fixed(_) => "fixed",
            Method::Texture(_) => "texture",
            Method::Patch(_) => "patch",
        }
    }

    /// The planes [`Model::score`] reads: chroma only for a patch model fitted on colour
    /// images; every other method judges luma alone. Decoding just these
    /// ([`crate::decode::decode_planes`]) gives the same verdict for less work.
    pub fn planes(&self) -> Planes {
        match &self.method {
            Method::Patch(m) if m.colour => Planes::Colour,
            _ => Planes::Luma,
        }
    }

    /// Decodes `bytes` as this model reads them and scores them: only the planes it reads
    /// ([`Model::planes`]) and, for an aligned model that works below full resolution, straight
    /// to its working resolution ([`crate::decode::decode_reduced`]; no full-resolution image
    /// is made). The same verdict as [`Model::score`] of [`crate::decode()`]'s image (to the
    /// bit: tests compare them on subsampled, progressive, restart-marked, EXIF-turned, CMYK
    /// and grey JPEGs); a malformed JPEG the fast decoder reads only in part may fall back to
    /// the general decoder on one path and not the other.
    pub fn judge(&self, bytes: &[u8], limits: DecodeLimits) -> Result<Verdict, InspectError> {
        match &self.method {
            Method::Aligned(m) if m.downscale > 1 => {
                let (reduced, size) = crate::decode::decode_reduced(bytes, limits, m.downscale)?;
                Ok(self.aligned_verdict(m, &m.prepare_reduced(&reduced)?, size))
            }
            _ => self.score(&crate::decode::decode_planes(bytes, limits, self.planes())?),
        }
    }

    /// Scores one decoded image against the model.
    pub fn score(&self, image: &Image) -> Result<Verdict, InspectError> {
        let img = &image.luma;
        let (map, regions) = match &self.method {
            Method::Aligned(m) => {
                return Ok(self.aligned_verdict(m, &m.prepare(img)?, (img.width, img.height)));
            }
            Method::Fixed(m) => {
                let p = m.prepare(img)?;
                let map = m.anomaly(&p);
                let regions = self.regions(&map, |c| m.region(c, &p, img));
                (map, regions)
            }
            Method::Texture(m) => {
                let p = m.prepare(img)?;
                let map = m.anomaly(&p);
                let regions = self.regions(&map, |c| m.region(c, &p, &map, img));
                (map, regions)
            }
            Method::Patch(m) => {
                let cells = m.prepare(image)?;
                let (map, shift) = m.anomaly(&cells);
                let regions = self.regions(&map, |c| m.region(c, &cells, &shift, img));
                (map, regions)
            }
        };
        Ok(self.verdict(map, None, regions))
    }

    /// The verdict of an aligned model on a prepared image of `size` (full resolution).
    fn aligned_verdict(
        &self,
        m: &AlignedModel,
        p: &aligned::Prepared,
        size: (usize, usize),
    ) -> Verdict {
        let map = m.anomaly(p);
        let regions = self.regions(&map, |c| m.region(c, p, size));
        self.verdict(map, Some(p.pose), regions)
    }

    fn verdict(&self, map: Gray, pose: Option<Pose>, regions: Vec<Region>) -> Verdict {
        let score = map.max();
        Verdict {
            score,
            threshold: self.threshold,
            defect_detected: score > self.threshold,
            regions,
            pose,
            map,
        }
    }

    /// A verdict's anomaly map laid over the `width × height` image it judged (for showing
    /// where the part differs: the map is in the model's frame).
    pub fn map_in_image(&self, v: &Verdict, width: usize, height: usize) -> Gray {
        match (&self.method, &v.pose) {
            (Method::Aligned(m), Some(pose)) => m.map_in_image(&v.map, pose, width, height),
            (Method::Aligned(_), None) => Gray::new(width, height, 0.0),
            // Surfaces are judged on the whole image, brought to the working scale.
            (Method::Fixed(_) | Method::Texture(_) | Method::Patch(_), _) => {
                v.map.resize(width, height)
            }
        }
    }

    /// The regions of a map over the threshold, strongest first; none under it.
    fn regions(&self, map: &Gray, describe: impl Fn(&Component) -> Region) -> Vec<Region> {
        if map.max() <= self.threshold {
            return Vec::new();
        }
        components(map, self.threshold * GROW_SHARE, self.threshold)
            .iter()
            .take(MAX_REGIONS)
            .map(describe)
            .collect()
    }

    /// The model file: a magic number, the format version, then the model in postcard.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = MAGIC.to_vec();
        out.extend_from_slice(&self.format.to_le_bytes());
        // Serialising plain numbers and vectors into a Vec cannot fail.
        out.extend(postcard::to_stdvec(self).unwrap_or_default());
        out
    }

    pub fn from_bytes(bytes: &[u8]) -> Result<Model, ModelFileError> {
        let rest = bytes.strip_prefix(MAGIC).ok_or(ModelFileError::NotAModel)?;
        let (version, body) = rest.split_at_checked(4).ok_or(ModelFileError::NotAModel)?;
        let found = u32::from_le_bytes([version[0], version[1], version[2], version[3]]);
        if found != MODEL_FORMAT {
            return Err(ModelFileError::Format { found });
        }
        let model: Model =
            postcard::from_bytes(body).map_err(|e| ModelFileError::Corrupt(e.to_string()))?;
        if model.format != MODEL_FORMAT || !model.threshold.is_finite() {
            return Err(ModelFileError::Corrupt("inconsistent header".into()));
        }
        if !model.method.is_consistent() {
            return Err(ModelFileError::Corrupt(
                "its statistics do not match its sizes".into(),
            ));
        }
        Ok(model)
    }
}

impl Method {
    /// Whether every size scoring relies on matches the stored statistics and every statistic
    /// is one fitting can make: a file that decodes must still never make scoring index out of
    /// bounds, divide by zero or answer with a NaN or an infinite score.
    fn is_consistent(&self) -> bool {
        match self {
            // Sizes come from the file too: their product must not overflow.
            Method::Aligned(m) => m.width.checked_mul(m.height).is_some_and(|n| {
                m.downscale >= 1
                    && n >= 1
                    && m.background.is_finite()
                    && m.radius.is_finite()
                    && m.handle_columns.len() == m.width
                    && m.channels.iter().all(|c| c.is_sound(n))
            }),
            Method::Fixed(m) => {
                let (w, h) = m.reference_size;
                let (tw, th) = (
                    (w / m.downscale.max(1)).max(1),
                    (h / m.downscale.max(1)).max(1),
                );
                m.downscale >= 1
                    && w >= 1
                    && h >= 1
                    && tw.checked_mul(th).is_some_and(|n| m.level.is_sound(n))
            }
            Method::Texture(m) => m.is_consistent(),
            Method::Patch(m) => m.is_consistent(),
        }
    }
}

/// The largest angle (radians) between a direction and the directions' circular mean.
fn angle_play(angles: &[f32]) -> f32 {
    let (s, c) = angles
        .iter()
        .fold((0f32, 0f32), |(s, c), a| (s + a.sin(), c + a.cos()));
    let mean = s.atan2(c);
    angles
        .iter()
        .map(|a| {
            let d = (a - mean).rem_euclid(std::f32::consts::TAU);
            d.min(std::f32::consts::TAU - d)
        })
        .fold(0.0, f32::max)
}

fn looks_like_an_object(pose: &Pose) -> bool {
    OBJECT_COVERAGE.contains(&pose.coverage) && pose.border_spread <= PLAIN_BORDER
}

/// Registers every good image at the working resolution of the first.
fn aligned_poses(good: &[&Gray]) -> Vec<Result<(Gray, Pose), InspectError>> {
    let downscale = good.first().map_or(1, |g| aligned::downscale_for(g));
    good.iter()
        .map(|g| aligned::pose_of(g, downscale))
        .collect()
}

/// Every registration, or the first failure with its image's index.
fn all_registered(
    poses: Vec<Result<(Gray, Pose), InspectError>>,
) -> Result<Vec<(Gray, Pose)>, FitError> {
    poses
        .into_iter()
        .enumerate()
        .map(|(index, p)| p.map_err(|source| FitError::Image { index, source }))
        .collect()
}

fn fit_aligned(
    good: &[&Gray],
    poses: Vec<(Gray, Pose)>,
    folds: &[usize],
) -> Result<(Method, Vec<f32>), FitError> {
    let downscale = good.first().map_or(1, |g| aligned::downscale_for(g));
    let norm = aligned::Normalisation::of(&poses.iter().map(|(_, p)| *p).collect::<Vec<_>>());
    let poses: Vec<(Gray, Pose)> = poses
        .into_iter()
        .map(|(work, pose)| (work, norm.apply(pose)))
        .collect();
    let (width, height) = aligned::frame_for(&poses.iter().map(|(_, p)| *p).collect::<Vec<_>>());
    let first: Vec<aligned::Prepared> = poses
        .iter()
        .map(|(work, pose)| aligned::prepare(work, *pose, width, height))
        .collect();
    // Each good part's scale refined against a first model of them all, as scoring does.
    let reference = AlignedModel::learn(&first.iter().collect::<Vec<_>>(), downscale, norm);
    let prepared: Vec<aligned::Prepared> = poses
        .into_iter()
        .map(|(work, pose)| aligned::prepare(&work, reference.refined(&work, pose), width, height))
        .collect();
    let (model, held_out) = cross_validate(
        &prepared,
        folds,
        |train| AlignedModel::learn(train, downscale, norm),
        |m, p| m.anomaly(p).max(),
    );
    Ok((Method::Aligned(model), held_out))
}

/// A surface: a fixed view when the good images share one size and repeat one view in place,
/// else a texture.
fn fit_surface(good: &[&Gray], folds: &[usize]) -> Result<(Method, Vec<f32>), FitError> {
    if let (_, Some(reference)) = texture::geometry(good) {
        let prepared = prepare_fixed(good, reference)?;
        if fixed::view_is_fixed(&prepared.iter().collect::<Vec<_>>()) {
            return Ok(fit_fixed(reference, prepared, folds));
        }
    }
    fit_texture(good, folds)
}

fn prepare_fixed(
    good: &[&Gray],
    reference: (usize, usize),
) -> Result<Vec<fixed::Prepared>, FitError> {
    let downscale = fixed::downscale_for(reference);
    good.iter()
        .enumerate()
        .map(|(index, g)| {
            fixed::prepare(g, reference, downscale)
                .map_err(|source| FitError::Image { index, source })
        })
        .collect()
}

fn fit_fixed(
    reference: (usize, usize),
    prepared: Vec<fixed::Prepared>,
    folds: &[usize],
) -> (Method, Vec<f32>) {
    let downscale = fixed::downscale_for(reference);
    let (model, held_out) = cross_validate(
        &prepared,
        folds,
        |train| FixedModel::learn(train, reference, downscale),
        |m, p| m.anomaly(p).max(),
    );
    (Method::Fixed(model), held_out)
}

fn fit_texture(good: &[&Gray], folds: &[usize]) -> Result<(Method, Vec<f32>), FitError> {
    let (downscale, reference) = texture::geometry(good);
    let works = good
        .iter()
        .enumerate()
        .map(|(index, g)| {
            texture::working(g, downscale, reference)
                .map_err(|source| FitError::Image { index, source })
        })
        .collect::<Result<Vec<_>, _>>()?;
    let grain = texture::grain(&works);
    let summaries: Vec<_> = works
        .iter()
        .map(|w| texture::prepare(w, grain).summary())
        .collect();
    let (model, held_out) = cross_validate(
        &summaries,
        folds,
        |train| TextureModel::learn(train, downscale, reference, grain),
        TextureModel::image_score,
    );
    Ok((Method::Texture(model), held_out))
}

/// The position-free patch model: chroma counts when every good image has colour.
fn fit_patch(good: &[Image], folds: &[usize]) -> Result<(Method, Vec<f32>), FitError> {
    let refs: Vec<&Image> = good.iter().collect();
    let scale = patch::scale_for(&refs);
    let colour = good.iter().all(|g| g.chroma.is_some());
    let cells = good
        .iter()
        .enumerate()
        .map(|(index, g)| {
            patch::cells(g, scale, colour).map_err(|source| FitError::Image { index, source })
        })
        .collect::<Result<Vec<_>, _>>()?;
    let (model, held_out) = cross_validate(
        &cells,
        folds,
        |train| PatchModel::learn(train, scale, colour),
        PatchModel::image_score,
    );
    Ok((Method::Patch(model), held_out))
}

/// The cross-scoring fold of each of `count` images from the part each shows: parts are
/// dealt into at most [`FOLDS`] folds in turn, in first-seen order, so a part's images share
/// a fold. With fewer than two parts (or a list of another length), image `i` is in fold
/// `i % FOLDS`.
fn folds_of(objects: &[usize], count: usize) -> Vec<usize> {
    let mut seen: Vec<usize> = Vec::new();
    let order: Vec<usize> = objects
        .iter()
        .map(|o| match seen.iter().position(|s| s == o) {
            Some(i) => i,
            None => {
                seen.push(*o);
                seen.len() - 1
            }
        })
        .collect();
    if objects.len() != count || seen.len() < 2 {
        let folds = count.clamp(1, FOLDS);
        return (0..count).map(|i| i % folds).collect();
    }
    let folds = seen.len().min(FOLDS);
    order.into_iter().map(|i| i % folds).collect()
}

/// Learns on all but one fold and scores that fold, for every fold (`folds[i]` is item `i`'s);
/// then learns on all. Returns the final model and the held-out score of each item, in input
/// order.
fn cross_validate<P, M>(
    items: &[P],
    folds: &[usize],
    learn: impl Fn(&[&P]) -> M,
    score: impl Fn(&M, &P) -> f32,
) -> (M, Vec<f32>) {
    let mut held_out = vec![0f32; items.len()];
    let count = folds.iter().max().map_or(0, |m| m + 1);
    for fold in 0..count {
        let train: Vec<&P> = items
            .iter()
            .zip(folds)
            .filter(|(_, f)| **f != fold)
            .map(|(p, _)| p)
            .collect();
        if train.is_empty() {
            continue;
        }
        let model = learn(&train);
        for (i, p) in items.iter().enumerate().filter(|(i, _)| folds[*i] == fold) {
            held_out[i] = score(&model, p);
        }
    }
    let all: Vec<&P> = items.iter().collect();
    (learn(&all), held_out)
}

#[cfg(test)]
mod tests;
