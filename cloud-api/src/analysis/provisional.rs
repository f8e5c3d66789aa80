//! The provisional analyzer: until golden samples can be uploaded per SKU, each SKU calibrates
//! itself from its first `calibration_frames` frames (per-pixel median of the registered parts,
//! so a minority of defective parts among them does not spoil the model), then judges every
//! later part against that model with `wiko-inspect`.
//!
//! Honest limits: the calibration frames get no verdict (`not_calibrated`); if more than a few
//! of them are defective the threshold rises and small defects are missed. Fitted models are
//! stored, so a restart does not recalibrate.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use chrono::Utc;
use tracing::{info, warn};
use wiko_inspect::{Gray, Model, Verdict};
use wiko_wire::{AnalysisStatus, Defect, DefectType};

use super::{Analyzer, Judgement};
use crate::store::{Store, StoredModel};

enum SkuState {
    Collecting(Vec<Arc<Gray>>),
    Fitting,
    Ready { model: Arc<Model>, version: String },
}

pub struct Provisional {
    store: Arc<dyn Store>,
    calibration_frames: usize,
    skus: Mutex<HashMap<String, SkuState>>,
}

impl Provisional {
    /// Loads the stored models.
    pub async fn new(
        store: Arc<dyn Store>,
        calibration_frames: usize,
    ) -> Result<Provisional, crate::store::StoreError> {
        let mut skus = HashMap::new();
        for m in store.models().await? {
            match serde_json::from_slice::<Model>(&m.body) {
                Ok(model) if model.format == wiko_inspect::model::MODEL_FORMAT => {
                    info!(sku = %m.sku, version = %m.version, "model loaded");
                    skus.insert(
                        m.sku,
                        SkuState::Ready {
                            model: Arc::new(model),
                            version: m.version,
                        },
                    );
                }
                _ => {
                    warn!(sku = %m.sku, "stored model unreadable or of an old format; recalibrating")
                }
            }
        }
        Ok(Provisional {
            store,
            calibration_frames,
            skus: Mutex::new(skus),
        })
    }

    fn state(&self) -> std::sync::MutexGuard<'_, HashMap<String, SkuState>> {
        // The map is only ever replaced entry by entry; a panic cannot leave it half-written.
        self.skus.lock().unwrap_or_else(|p| p.into_inner())
    }

    async fn fit(&self, sku: &str, images: Vec<Arc<Gray>>) {
        let n = images.len();
        let fitted = tokio::task::spawn_blocking(move || {
            let owned: Vec<Gray> = images.iter().map(|g| (**g).clone()).collect();
            Model::fit(&owned)
        })
        .await;
        let next = match fitted {
            Ok(Ok(model)) => {
                let version = format!("prov-{}-{n}", Utc::now().format("%Y%m%dT%H%M%S"));
                info!(%sku, %version, threshold = model.threshold, "SKU calibrated");
                match serde_json::to_vec(&model) {
                    Ok(body) => {
                        let saved = self
                            .store
                            .save_model(StoredModel {
                                sku: sku.to_string(),
                                version: version.clone(),
                                body,
                            })
                            .await;
                        if let Err(e) = saved {
                            warn!(%sku, error = %e, "storing the model failed; it is used until restart");
                        }
                    }
                    Err(e) => warn!(%sku, error = %e, "serialising the model failed"),
                }
                SkuState::Ready {
                    model: Arc::new(model),
                    version,
                }
            }
            Ok(Err(e)) => {
                warn!(%sku, error = %e, "calibration failed; collecting again");
                SkuState::Collecting(Vec::new())
            }
            Err(e) => {
                warn!(%sku, error = %e, "calibration task failed; collecting again");
                SkuState::Collecting(Vec::new())
            }
        };
        self.state().insert(sku.to_string(), next);
    }
}

fn not_calibrated(sku: &str, have: usize, need: usize) -> Judgement {
    Judgement {
        status: AnalysisStatus::NotCalibrated,
        defect_detected: false,
        defects: Vec::new(),
        score: None,
        score_threshold: None,
        confidence: None,
        recommendation: format!(
            "SKU {sku} is not calibrated yet ({have} of {need} reference parts); no verdict"
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
        status: AnalysisStatus::Provisional,
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
impl Analyzer for Provisional {
    fn name(&self) -> &'static str {
        "provisional_median"
    }

    fn version(&self) -> &'static str {
        env!("CARGO_PKG_VERSION")
    }

    async fn judge(&self, sku: &str, image: Arc<Gray>) -> Judgement {
        let need = self.calibration_frames;
        enum Next {
            Score(Arc<Model>, String),
            Fit(Vec<Arc<Gray>>),
            Wait(usize),
        }
        let next = {
            let mut skus = self.state();
            let state = skus
                .entry(sku.to_string())
                .or_insert_with(|| SkuState::Collecting(Vec::new()));
            match state {
                SkuState::Ready { model, version } => Next::Score(model.clone(), version.clone()),
                SkuState::Fitting => Next::Wait(need),
                SkuState::Collecting(images) => {
                    if wiko_inspect::register::register(&image).is_ok() {
                        images.push(image.clone());
                    }
                    if images.len() < need {
                        Next::Wait(images.len())
                    } else {
                        let images = std::mem::take(images);
                        *state = SkuState::Fitting;
                        Next::Fit(images)
                    }
                }
            }
        };
        let (model, version) = match next {
            Next::Score(model, version) => (model, version),
            Next::Wait(have) => return not_calibrated(sku, have, need),
            Next::Fit(images) => {
                self.fit(sku, images).await;
                return not_calibrated(sku, need, need);
            }
        };
        let scored = tokio::task::spawn_blocking(move || model.score(&image)).await;
        match scored {
            Ok(Ok(verdict)) => judgement(&verdict, &version),
            Ok(Err(e)) => Judgement::failed(e, Some(version)),
            Err(e) => Judgement::failed(format!("scoring task failed: {e}"), Some(version)),
        }
    }
}
