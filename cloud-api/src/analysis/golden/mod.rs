//! The golden-sample analyzer (the default): each SKU is learned from good parts that a quality
//! engineer uploads (`POST /api/v1/skus/{sku}/golden`). Every upload adds its images to the
//! SKU's golden set and, once there are at least [`MIN_GOOD`], fits a new model version from the
//! whole set; the new version judges every part analysed after it is active. Results name the
//! version that judged them. A SKU without a model gets `not_calibrated`: no verdict, no guess.
//!
//! Models are stored (one active version per SKU), so a restart does not refit; every replica
//! polls the store ([`Golden::refresh`]) and activates versions that another replica fitted.
//! A stored model that cannot be used as it is (of an older file format after an upgrade, or
//! damaged) is refitted from the SKU's stored golden set ([`Golden::refit_unusable`]) as the
//! next version; until then the SKU is not calibrated. Fitting is deterministic, so replicas
//! that refit at once store the same model.

mod models;
mod set;

use async_trait::async_trait;
use tracing::warn;
use wiko_inspect::model::MIN_GOOD;
use wiko_inspect::{DecodeLimits, FitOptions, Planes, Verdict};
use wiko_wire::{AnalysisStatus, Defect, ModelInfo, RegionFigures};

use super::budget::Budget;
use super::{Analyzer, Frame, Judgement, undecodable_reason};
use crate::store::{Storage, StoreError};
pub use models::ModelFile;
use models::Models;

/// Largest golden set per SKU. Fitting holds every image decoded (4 bytes per pixel: 200
/// 640×480 parts take 250 MB, 200 1080p parts 1.7 GB), so the set is bounded.
pub const MAX_GOLDEN: usize = 200;

#[derive(Debug, thiserror::Error)]
pub enum GoldenError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("golden image {index} cannot be used: {reason}")]
    Image { index: usize, reason: String },
    #[error("fitting failed: {0}")]
    Fit(String),
    #[error("the golden set cannot make a model: {0}")]
    Degenerate(&'static str),
    #[error(transparent)]
    TooLarge(#[from] crate::analysis::budget::TooLarge),
    #[error("the golden set of {sku} would hold {would} images, at most {MAX_GOLDEN} are kept")]
    Full { sku: String, would: usize },
    #[error("the golden set of {sku} holds no image {digest}")]
    NotInSet { sku: String, digest: String },
    #[error(
        "the golden set of {sku} would keep {left} images, its model needs at least {MIN_GOOD}: \
         upload good parts first, then remove this one"
    )]
    TooSmall { sku: String, left: usize },
}

pub struct Golden {
    storage: Storage,
    limits: DecodeLimits,
    /// The memory budget fits are counted in.
    budget: Budget,
    options: FitOptions,
    models: Models,
    /// Fits one SKU at a time: fitting is CPU-heavy and two uploads of one SKU must not race.
    fitting: tokio::sync::Mutex<()>,
}

impl Golden {
    /// Loads the stored models. A store that cannot be reached yet is no reason not to start:
    /// models are then loaded by the periodic [`Golden::refresh`] or when a part needs one.
    pub async fn new(
        storage: Storage,
        limits: DecodeLimits,
        budget: Budget,
        options: FitOptions,
    ) -> Golden {
        let golden = Golden {
            models: Models::new(storage.records.clone()),
            storage,
            limits,
            budget,
            options,
            fitting: tokio::sync::Mutex::new(()),
        };
        if let Err(e) = golden.refresh().await {
            warn!(error = %e, "models not loaded at start; loading them when the store answers");
        }
        golden
    }

    /// Activates every stored model version another replica fitted since the last refresh.
    pub async fn refresh(&self) -> Result<(), StoreError> {
        self.models.refresh().await
    }

    /// The file of a SKU's active model, as devices download it.
    pub fn model_file(&self, sku: &str) -> Option<ModelFile> {
        self.models.file(sku)
    }

    /// The active model of a SKU.
    pub fn info(&self, sku: &str) -> Option<ModelInfo> {
        self.models.info(sku)
    }
}

fn not_calibrated(sku: &str) -> Judgement {
    Judgement {
        status: AnalysisStatus::NotCalibrated,
        defect_detected: false,
        defects: Vec::new(),
        score: None,
        score_threshold: None,
        confidence: None,
        recommendation: format!(
            "SKU {sku} has no golden model yet: upload at least {MIN_GOOD} good parts to \
             POST /api/v1/skus/{sku}/golden; no verdict"
        ),
        model_version: None,
    }
}

/// What the wire needs of an inspection region to make it a defect.
fn figures(r: &wiko_inspect::Region) -> RegionFigures<'static> {
    RegionFigures {
        kind: r.kind.as_str(),
        bbox: r.bbox,
        area: r.area,
        peak: r.peak,
        shift: r.shift,
    }
}

/// Turns the inspection verdict into the API's judgement.
fn judgement(v: &Verdict, version: &str) -> Judgement {
    let defects: Vec<Defect> = v
        .regions
        .iter()
        .map(|r| Defect::from_region(figures(r), v.threshold))
        .collect();
    let margin = (v.score / v.threshold.max(1e-6) - 1.0).abs();
    Judgement {
        status: AnalysisStatus::Final,
        defect_detected: v.defect_detected,
        recommendation: if v.defect_detected {
            format!("reject: {} region(s) differ from good parts", defects.len())
        } else {
            "accept".to_string()
        },
        defects,
        score: Some(v.score),
        score_threshold: Some(v.threshold),
        confidence: Some((0.5 + margin).min(0.99)),
        model_version: Some(version.to_string()),
    }
}

#[async_trait]
impl Analyzer for Golden {
    fn name(&self) -> &'static str {
        "golden"
    }

    fn version(&self) -> &'static str {
        env!("CARGO_PKG_VERSION")
    }

    /// The planes the SKU's model loaded here reads; colour where none is loaded (a SKU with
    /// no model, or one another replica fitted and [`Analyzer::judge`] is about to load): the
    /// store is asked at most once per part, by `judge`. A model replaced between this call
    /// and `judge` by one that reads more is still judged on what it reads ([`Frame::image`]).
    async fn planes(&self, sku: &str) -> Planes {
        self.models.planes(sku).unwrap_or(Planes::Colour)
    }

    async fn judge(&self, sku: &str, frame: Frame) -> Judgement {
        let found = match self.models.for_part(sku).await {
            Ok(found) => found,
            Err(e) => return Judgement::failed(format!("loading the model: {e}"), None),
        };
        let Some((model, version)) = found else {
            return not_calibrated(sku);
        };
        let image = match frame.image(model.planes()).await {
            Ok(image) => image,
            Err(e) => return Judgement::failed(undecodable_reason(&e), Some(version)),
        };
        let scored = tokio::task::spawn_blocking(move || model.score(&image)).await;
        match scored {
            Ok(Ok(verdict)) => judgement(&verdict, &version),
            Ok(Err(e)) => Judgement::failed(e, Some(version)),
            Err(e) => Judgement::failed(format!("scoring task failed: {e}"), Some(version)),
        }
    }
}
