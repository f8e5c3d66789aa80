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

use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Instant;

use async_trait::async_trait;
use bytes::Bytes;
use serde::Serialize;
use tracing::{info, warn};
use wiko_inspect::model::MIN_GOOD;
use wiko_inspect::{DecodeLimits, FitError, FitOptions, Gray, Model, ModelFileError, Verdict};
use wiko_wire::{AnalysisStatus, Defect, DefectType};

use super::{Analyzer, Judgement};

use crate::store::blob::BlobStore;
use crate::store::{GoldenSample, Store, StoreError, StoredModel};

/// Largest golden set per SKU. Fitting holds every image decoded (4 bytes per pixel: 200
/// 640×480 parts take 250 MB, 200 1080p parts 1.7 GB), so the set is bounded.
pub const MAX_GOLDEN: usize = 200;

/// A stored model that cannot be used: of an older format, or damaged.
struct Unusable {
    version: String,
    tried: bool,
}

/// The active model of a SKU.
struct Active {
    model: Arc<Model>,
    version: String,
}

/// What a quality engineer sees about a SKU's model.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ModelInfo {
    pub sku: String,
    pub version: String,
    /// `aligned`, `fixed` or `texture`.
    pub method: &'static str,
    pub threshold: f32,
    pub false_reject_rate: f32,
    pub trained_on: usize,
}

/// The state of a SKU's golden set after an upload.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Calibration {
    pub sku: String,
    /// Images in the golden set.
    pub samples: usize,
    /// Of this upload, images that were not in the set yet.
    pub added: usize,
    /// The model now active; `None` while the set is under [`MIN_GOOD`] images.
    pub model: Option<ModelInfo>,
    pub fit_ms: Option<f64>,
}

#[derive(Debug, thiserror::Error)]
pub enum GoldenError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("golden image {index} cannot be used: {reason}")]
    Image { index: usize, reason: String },
    #[error("fitting failed: {0}")]
    Fit(String),
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
    store: Arc<dyn Store>,
    blobs: Arc<dyn BlobStore>,
    limits: DecodeLimits,
    options: FitOptions,
    active: RwLock<HashMap<String, Active>>,
    /// SKUs whose stored model cannot be used (an older format, or damaged): its version, and
    /// whether a refit was tried (a failed refit is not retried until another version is
    /// stored).
    unusable: Mutex<HashMap<String, Unusable>>,
    /// Fits one SKU at a time: fitting is CPU-heavy and two uploads of one SKU must not race.
    fitting: tokio::sync::Mutex<()>,
}

impl Golden {
    /// Loads the stored models. A store that cannot be reached yet is no reason not to start:
    /// models are then loaded by the periodic [`Golden::refresh`] or when a part needs one.
    pub async fn new(
        store: Arc<dyn Store>,
        blobs: Arc<dyn BlobStore>,
        limits: DecodeLimits,
        options: FitOptions,
    ) -> Golden {
        let golden = Golden {
            store,
            blobs,
            limits,
            options,
            active: RwLock::new(HashMap::new()),
            unusable: Mutex::new(HashMap::new()),
            fitting: tokio::sync::Mutex::new(()),
        };
        if let Err(e) = golden.refresh().await {
            warn!(error = %e, "models not loaded at start; loading them when the store answers");
        }
        golden
    }

    /// Loads every stored model whose version differs from the active one: models that
    /// another replica fitted become active here too.
    pub async fn refresh(&self) -> Result<(), StoreError> {
        for (sku, version) in self.store.model_versions().await? {
            let known_unusable = self.unusable().get(&sku).map(|o| o.version.clone());
            if self.read().get(&sku).is_some_and(|a| a.version == version)
                || known_unusable.is_some_and(|v| v == version)
            {
                continue;
            }
            self.load(&sku).await?;
        }
        Ok(())
    }

    /// Loads and activates the stored model of `sku`; `None` if it has none, or an unusable one
    /// (logged once, and noted for [`Golden::refit_unusable`]).
    async fn load(&self, sku: &str) -> Result<Option<(Arc<Model>, String)>, StoreError> {
        let Some(m) = self.store.model(sku).await? else {
            return Ok(None);
        };
        match Model::from_bytes(&m.body) {
            Ok(model) => {
                info!(sku = %m.sku, version = %m.version, method = model.kind(), "model loaded");
                let model = Arc::new(model);
                self.activate(m.sku, m.version.clone(), model.clone());
                Ok(Some((model, m.version)))
            }
            Err(e) => {
                let mut unusable = self.unusable();
                // Parts of this SKU land here until the refit: note it (and log) once.
                if unusable.get(&m.sku).is_none_or(|o| o.version != m.version) {
                    match e {
                        ModelFileError::Format { found } => {
                            info!(sku = %m.sku, version = %m.version, format = found,
                                  "stored model of an older format: refitting it from its golden set");
                        }
                        e => {
                            warn!(sku = %m.sku, version = %m.version, error = %e,
                                  "stored model damaged: refitting it from its golden set");
                        }
                    }
                    let entry = Unusable {
                        version: m.version,
                        tried: false,
                    };
                    unusable.insert(m.sku, entry);
                }
                Ok(None)
            }
        }
    }

    /// Refits, from their stored golden sets, the SKUs whose stored model cannot be used, each
    /// as the version after the stored one. Returns how many were refitted.
    pub async fn refit_unusable(&self) -> Result<usize, StoreError> {
        let pending: Vec<(String, String)> = self
            .unusable()
            .iter()
            .filter(|(_, o)| !o.tried)
            .map(|(sku, o)| (sku.clone(), o.version.clone()))
            .collect();
        let mut refitted = 0;
        for (sku, stored) in pending {
            let _fitting = self.fitting.lock().await;
            // An upload may have fitted a new version while this waited for the lock.
            let still_pending = self
                .unusable()
                .get(&sku)
                .is_some_and(|o| !o.tried && o.version == stored);
            if !still_pending {
                continue;
            }
            let samples = self.store.golden(&sku).await?;
            let fitted = match self.decode_stored(&samples).await {
                Ok(set) => self.fit(&sku, set, samples.len(), &[]).await,
                Err(e) => Err(e),
            };
            match fitted {
                Ok((model, fit_ms)) => {
                    let info = self.save_and_activate(&sku, after(&stored), model).await?;
                    info!(%sku, version = %info.version, samples = samples.len(), fit_ms, "unusable model refitted");
                    refitted += 1;
                }
                // The store may answer again at the next pass: try again then.
                Err(GoldenError::Store(e)) => return Err(e),
                Err(e) => {
                    warn!(%sku, error = %e, "refitting an unusable model failed; upload golden samples again");
                    if let Some(o) = self.unusable().get_mut(&sku) {
                        o.tried = true;
                    }
                }
            }
        }
        Ok(refitted)
    }

    /// Decodes the stored golden images `samples`.
    async fn decode_stored(&self, samples: &[GoldenSample]) -> Result<Vec<Gray>, GoldenError> {
        let mut set = Vec::with_capacity(samples.len());
        for GoldenSample { image_key: key, .. } in samples {
            let bytes = self.blobs.get(key).await?;
            let g = super::decode(bytes, self.limits)
                .await
                .map_err(|e| GoldenError::Fit(format!("stored golden image {key}: {e}")))?;
            set.push(g);
        }
        Ok(set)
    }

    /// Stores a fitted model as `version` of its SKU and makes it the active one.
    async fn save_and_activate(
        &self,
        sku: &str,
        version: String,
        model: Model,
    ) -> Result<ModelInfo, StoreError> {
        self.store
            .save_model(StoredModel {
                sku: sku.to_string(),
                version: version.clone(),
                body: model.to_bytes(),
            })
            .await?;
        let info = model_info(sku, &version, &model);
        self.activate(sku.to_string(), version, Arc::new(model));
        Ok(info)
    }

    fn unusable(&self) -> std::sync::MutexGuard<'_, HashMap<String, Unusable>> {
        // Entries are replaced whole; a panic cannot leave the map half-written.
        self.unusable.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Makes `model` the SKU's active one; an unusable stored model it replaces is forgotten.
    fn activate(&self, sku: String, version: String, model: Arc<Model>) {
        self.unusable().remove(&sku);
        self.active
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .insert(sku, Active { model, version });
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, HashMap<String, Active>> {
        // Entries are replaced whole; a panic cannot leave the map half-written.
        self.active.read().unwrap_or_else(|p| p.into_inner())
    }

    /// The active model of a SKU.
    pub fn info(&self, sku: &str) -> Option<ModelInfo> {
        self.read()
            .get(sku)
            .map(|a| model_info(sku, &a.version, &a.model))
    }

    /// Adds images (already checked to be acceptable images) to a SKU's golden set and fits a
    /// new model version from the whole set once it is large enough. The model is fitted
    /// before anything is stored: an upload that cannot make a model leaves the set as it was.
    pub async fn add_samples(
        &self,
        sku: &str,
        images: Vec<Bytes>,
    ) -> Result<Calibration, GoldenError> {
        let _fitting = self.fitting.lock().await;
        let stored = self.store.golden(sku).await?;
        // (upload index, digest, key, bytes) of the images not in the set yet.
        let mut new: Vec<(usize, String, String, Bytes)> = Vec::new();
        for (index, bytes) in images.into_iter().enumerate() {
            let digest = wiko_wire::frame::image_digest(&bytes);
            let known = stored.iter().any(|s| s.digest == digest)
                || new.iter().any(|(_, d, ..)| *d == digest);
            if !known {
                let key = format!("golden/{digest}.jpg");
                new.push((index, digest, key, bytes));
            }
        }
        let (samples, added) = (stored.len() + new.len(), new.len());
        if samples > MAX_GOLDEN {
            return Err(GoldenError::Full {
                sku: sku.to_string(),
                would: samples,
            });
        }
        // Every new image must decode, whether or not a model is fitted now.
        let mut fresh = Vec::with_capacity(new.len());
        for (index, _, _, bytes) in &new {
            let g = super::decode(bytes.clone(), self.limits)
                .await
                .map_err(|e| GoldenError::Image {
                    index: *index,
                    reason: e.to_string(),
                })?;
            fresh.push(g);
        }
        let fitted = if samples >= MIN_GOOD && added > 0 {
            let mut set = self.decode_stored(&stored).await?;
            set.extend(fresh);
            let upload_index: Vec<usize> = new.iter().map(|(i, ..)| *i).collect();
            Some(self.fit(sku, set, stored.len(), &upload_index).await?)
        } else {
            None
        };
        for (_, digest, key, bytes) in new {
            self.blobs.put(&key, bytes).await?;
            self.store.add_golden(sku, &digest, &key).await?;
        }
        let Some((model, fit_ms)) = fitted else {
            return Ok(Calibration {
                sku: sku.to_string(),
                samples,
                added,
                model: self.info(sku),
                fit_ms: None,
            });
        };
        let info = self.publish(sku, model).await?;
        info!(%sku, version = %info.version, method = info.method, threshold = info.threshold, samples, fit_ms, "model fitted");
        Ok(Calibration {
            sku: sku.to_string(),
            samples,
            added,
            model: Some(info),
            fit_ms: Some(fit_ms),
        })
    }

    /// Takes the image `digest` out of a SKU's golden set. A set that makes a model is refitted
    /// without it first (the new version active before the image leaves the set: a failure
    /// half-way leaves a set that the next removal or upload refits); it may not shrink below
    /// [`MIN_GOOD`], which would leave the SKU without a model.
    pub async fn remove_sample(&self, sku: &str, digest: &str) -> Result<Calibration, GoldenError> {
        let _fitting = self.fitting.lock().await;
        let mut kept = self.store.golden(sku).await?;
        let before = kept.len();
        kept.retain(|s| s.digest != digest);
        if kept.len() == before {
            return Err(GoldenError::NotInSet {
                sku: sku.to_string(),
                digest: digest.to_string(),
            });
        }
        let samples = kept.len();
        if before >= MIN_GOOD && samples < MIN_GOOD {
            return Err(GoldenError::TooSmall {
                sku: sku.to_string(),
                left: samples,
            });
        }
        let refitted = if samples >= MIN_GOOD {
            let set = self.decode_stored(&kept).await?;
            let (model, fit_ms) = self.fit(sku, set, samples, &[]).await?;
            Some((self.publish(sku, model).await?, fit_ms))
        } else {
            None
        };
        self.store.remove_golden(sku, digest).await?;
        let (model, fit_ms) = match refitted {
            Some((info, fit_ms)) => {
                info!(%sku, %digest, version = %info.version, samples, fit_ms, "golden sample removed; model refitted");
                (Some(info), Some(fit_ms))
            }
            None => {
                info!(%sku, %digest, samples, "golden sample removed");
                (None, None)
            }
        };
        Ok(Calibration {
            sku: sku.to_string(),
            samples,
            added: 0,
            model,
            fit_ms,
        })
    }

    /// Stores `model` as the SKU's next version and makes it active. Another replica may have
    /// fitted a version since this one's last refresh: the number follows the stored one.
    async fn publish(&self, sku: &str, model: Model) -> Result<ModelInfo, StoreError> {
        self.refresh().await?;
        let current = self.read().get(sku).map(|a| a.version.clone());
        let stored = current.or_else(|| self.unusable().get(sku).map(|o| o.version.clone()));
        self.save_and_activate(sku, after(stored.as_deref().unwrap_or("v0")), model)
            .await
    }

    /// Fits on the blocking pool. The set holds the `stored` images first, then the new ones,
    /// whose positions in the upload are `upload_index`: an image error names that position.
    async fn fit(
        &self,
        sku: &str,
        set: Vec<Gray>,
        stored: usize,
        upload_index: &[usize],
    ) -> Result<(Model, f64), GoldenError> {
        let started = Instant::now();
        let options = self.options;
        let sku_name = sku.to_string();
        let model = tokio::task::spawn_blocking(move || {
            let mut model = Model::fit(&set, &options)?;
            model.sku = sku_name;
            Ok::<_, FitError>(model)
        })
        .await
        .map_err(|e| GoldenError::Fit(format!("fitting task: {e}")))?
        .map_err(|e| match e {
            FitError::Image { index, source } if index >= stored => GoldenError::Image {
                index: upload_index.get(index - stored).copied().unwrap_or(index),
                reason: source.to_string(),
            },
            other => GoldenError::Fit(other.to_string()),
        })?;
        Ok((model, started.elapsed().as_secs_f64() * 1000.0))
    }
}

/// `v1`, `v2`, …: the version after `version` (`v1` after anything unnumbered).
fn after(version: &str) -> String {
    let n = version
        .strip_prefix('v')
        .and_then(|n| n.parse::<u64>().ok())
        .unwrap_or(0);
    format!("v{}", n + 1)
}

fn model_info(sku: &str, version: &str, m: &Model) -> ModelInfo {
    ModelInfo {
        sku: sku.to_string(),
        version: version.to_string(),
        method: m.kind(),
        threshold: m.threshold,
        false_reject_rate: m.false_reject_rate,
        trained_on: m.trained_on,
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

/// Turns the inspection verdict into the API's judgement.
pub fn judgement(v: &Verdict, version: &str) -> Judgement {
    let defects: Vec<Defect> = v
        .regions
        .iter()
        .map(|r| {
            let ratio = r.peak / v.threshold.max(1e-6);
            let severity = if ratio > 3.0 {
                "high"
            } else if ratio > 1.5 {
                "medium"
            } else {
                "low"
            };
            let kind = DefectType::parse(r.kind.as_str()).unwrap_or(DefectType::Other);
            Defect {
                kind,
                severity: severity.to_string(),
                confidence: (1.0 - 1.0 / (1.0 + ratio)).clamp(0.0, 0.99),
                bbox: r.bbox,
                description: format!(
                    "{} (heuristic type): {} px, {:.1}x threshold, {} than good parts",
                    kind.as_str(),
                    r.area,
                    ratio,
                    if r.shift < 0.0 { "darker" } else { "brighter" }
                ),
            }
        })
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

    async fn judge(&self, sku: &str, image: Arc<Gray>) -> Judgement {
        let cached = self
            .read()
            .get(sku)
            .map(|a| (a.model.clone(), a.version.clone()));
        // Not cached: another replica may have fitted it since the last refresh. A model known
        // to be unusable is not read again for every part: the refresh finds its successor.
        let found = match cached {
            Some(active) => Some(active),
            None if self.unusable().contains_key(sku) => None,
            None => match self.load(sku).await {
                Ok(found) => found,
                Err(e) => return Judgement::failed(format!("loading the model: {e}"), None),
            },
        };
        let Some((model, version)) = found else {
            return not_calibrated(sku);
        };
        let scored = tokio::task::spawn_blocking(move || model.score(&image)).await;
        match scored {
            Ok(Ok(verdict)) => judgement(&verdict, &version),
            Ok(Err(e)) => Judgement::failed(e, Some(version)),
            Err(e) => Judgement::failed(format!("scoring task failed: {e}"), Some(version)),
        }
    }
}
