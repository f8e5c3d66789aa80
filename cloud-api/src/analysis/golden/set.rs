//! Golden sets: adding good parts to a SKU's set and taking a wrong one out, each fitting the
//! next model version from the whole set; and refitting, from its stored set, a SKU whose
//! stored model cannot be used.

use std::time::Instant;

use tracing::{info, warn};
use wiko_inspect::model::MIN_GOOD;
use wiko_inspect::{FitError, Gray, Model};
use wiko_wire::Calibration;

use super::{Golden, GoldenError, MAX_GOLDEN};
use crate::analysis::{decode, describe};
use crate::store::{GoldenImage, Image, StoreError};

impl Golden {
    /// Adds images (already checked to be acceptable images) to a SKU's golden set and fits a
    /// new model version from the whole set once it is large enough. The model is fitted
    /// before anything is stored: an upload that cannot make a model leaves the set as it was.
    pub async fn add_samples(
        &self,
        sku: &str,
        images: Vec<Image>,
    ) -> Result<Calibration, GoldenError> {
        let _fitting = self.fitting.lock().await;
        let stored = self.storage.records.golden(sku).await?;
        // (upload index, image) of the images not in the set yet.
        let mut new: Vec<(usize, Image)> = Vec::new();
        for (index, image) in images.into_iter().enumerate() {
            let known = stored.iter().any(|s| s.sample.digest == image.blake3)
                || new.iter().any(|(_, n)| n.blake3 == image.blake3);
            if !known {
                new.push((index, image));
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
        for (index, image) in &new {
            let g = decode(image.bytes.clone(), self.limits)
                .await
                .map_err(|e| GoldenError::Image {
                    index: *index,
                    reason: describe(&e),
                })?;
            fresh.push(g);
        }
        let fitted = if samples >= MIN_GOOD && added > 0 {
            let mut set = self.decode_stored(&stored).await?;
            set.extend(fresh);
            let upload_index: Vec<usize> = new.iter().map(|(i, _)| *i).collect();
            Some(self.fit(sku, set, stored.len(), &upload_index).await?)
        } else {
            None
        };
        for (_, image) in new {
            self.storage.put_golden(sku, image).await?;
        }
        let Some((model, fit_ms)) = fitted else {
            return Ok(Calibration {
                sku: sku.to_string(),
                samples,
                added,
                model: self.models.info(sku),
                fit_ms: None,
            });
        };
        let info = self.models.publish(sku, model).await?;
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
        let mut kept = self.storage.records.golden(sku).await?;
        let before = kept.len();
        kept.retain(|s| s.sample.digest != digest);
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
            Some((self.models.publish(sku, model).await?, fit_ms))
        } else {
            None
        };
        self.storage.records.remove_golden(sku, digest).await?;
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

    /// Refits, from their stored golden sets, the SKUs whose stored model cannot be used, each
    /// as the version after the stored one. Returns how many were refitted.
    pub async fn refit_unusable(&self) -> Result<usize, StoreError> {
        let mut refitted = 0;
        for (sku, stored) in self.models.to_refit() {
            let _fitting = self.fitting.lock().await;
            if !self.models.still_to_refit(&sku, &stored) {
                continue;
            }
            let samples = self.storage.records.golden(&sku).await?;
            let fitted = match self.decode_stored(&samples).await {
                Ok(set) => self.fit(&sku, set, samples.len(), &[]).await,
                Err(e) => Err(e),
            };
            match fitted {
                Ok((model, fit_ms)) => {
                    let info = self.models.replace(&sku, &stored, model).await?;
                    info!(%sku, version = %info.version, samples = samples.len(), fit_ms, "unusable model refitted");
                    refitted += 1;
                }
                // The store may answer again at the next pass: try again then.
                Err(GoldenError::Store(e)) => return Err(e),
                Err(e) => {
                    warn!(%sku, error = %e, "refitting an unusable model failed; upload golden samples again");
                    self.models.refit_failed(&sku);
                }
            }
        }
        Ok(refitted)
    }

    /// Decodes the stored golden images `samples`.
    async fn decode_stored(&self, samples: &[GoldenImage]) -> Result<Vec<Gray>, GoldenError> {
        let mut set = Vec::with_capacity(samples.len());
        for s in samples {
            let bytes = self.storage.image(&s.key).await?;
            let g = decode(bytes, self.limits).await.map_err(|e| {
                GoldenError::Fit(format!("stored golden image {}: {e}", s.sample.digest))
            })?;
            set.push(g);
        }
        Ok(set)
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
                reason: describe(&source),
            },
            other => GoldenError::Fit(other.to_string()),
        })?;
        Ok((model, started.elapsed().as_secs_f64() * 1000.0))
    }
}
