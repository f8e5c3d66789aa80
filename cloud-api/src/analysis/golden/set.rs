//! Golden sets: adding good parts to a SKU's set and taking a wrong one out, each fitting the
//! next model version from the whole set; and refitting, from its stored set, a SKU whose
//! stored model cannot be used.

use std::time::Instant;

use tracing::{info, warn};
use wiko_inspect::model::MIN_GOOD;
use wiko_inspect::{FitError, Gray, Model, Planes};
use wiko_wire::Calibration;

use bytes::Bytes;

use super::{Golden, GoldenError, MAX_GOLDEN};
use crate::analysis::budget::{Budget, Reservation};
use crate::analysis::{decode, describe};
use crate::store::{GoldenImage, Image, StoreError};

fn stored_error(s: &GoldenImage, e: &wiko_inspect::InspectError) -> GoldenError {
    GoldenError::Fit(format!(
        "stored golden image {}: {}",
        s.sample.digest,
        describe(e)
    ))
}

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
        let fitting = samples >= MIN_GOOD && added > 0;
        let stored_images = if fitting {
            self.load(&stored).await?
        } else {
            Vec::new()
        };
        // The whole set is held decoded while it is fitted: its memory is reserved first.
        let sizes = stored_images
            .iter()
            .map(|(_, w, h)| (*w, *h))
            .chain(new.iter().map(|(_, i)| (i.width, i.height)));
        let _memory = self.budget.reserve(Budget::fitting(sizes)).await?;
        // Every new image must decode, whether or not a model is fitted now.
        let mut fresh = Vec::with_capacity(new.len());
        for (index, image) in &new {
            let g = decode(image.bytes.clone(), self.limits, Planes::Colour)
                .await
                .map_err(|e| GoldenError::Image {
                    index: *index,
                    reason: describe(&e),
                })?;
            fresh.push(g);
        }
        let fitted = if fitting {
            let mut set = self.decode_stored(stored_images, &stored).await?;
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
            let (set, _memory) = self.decode_kept(&kept).await?;
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
            let fitted = match self.decode_kept(&samples).await {
                Ok((set, _memory)) => self.fit(&sku, set, samples.len(), &[]).await,
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

    /// The stored golden images `samples`: their bytes and sizes.
    async fn load(&self, samples: &[GoldenImage]) -> Result<Vec<(Bytes, u32, u32)>, GoldenError> {
        let mut images = Vec::with_capacity(samples.len());
        for s in samples {
            let bytes = self.storage.image(&s.key).await?;
            let (w, h) = wiko_inspect::decode::dimensions(&bytes, self.limits)
                .map_err(|e| stored_error(s, &e))?;
            images.push((bytes, w, h));
        }
        Ok(images)
    }

    /// Decodes stored golden images (loaded by [`Golden::load`]); the caller holds their
    /// memory.
    async fn decode_stored(
        &self,
        images: Vec<(Bytes, u32, u32)>,
        samples: &[GoldenImage],
    ) -> Result<Vec<wiko_inspect::Image>, GoldenError> {
        let mut set = Vec::with_capacity(images.len());
        for ((bytes, _, _), s) in images.into_iter().zip(samples) {
            set.push(
                decode(bytes, self.limits, Planes::Colour)
                    .await
                    .map_err(|e| stored_error(s, &e))?,
            );
        }
        Ok(set)
    }

    /// A stored set, decoded to be fitted, with the memory it holds reserved.
    async fn decode_kept(
        &self,
        samples: &[GoldenImage],
    ) -> Result<(Vec<wiko_inspect::Image>, Reservation), GoldenError> {
        let images = self.load(samples).await?;
        let sizes = images.iter().map(|(_, w, h)| (*w, *h));
        let memory = self.budget.reserve(Budget::fitting(sizes)).await?;
        Ok((self.decode_stored(images, samples).await?, memory))
    }

    /// Fits on the blocking pool. The set holds the `stored` images first, then the new ones,
    /// whose positions in the upload are `upload_index`: an image error names that position.
    async fn fit(
        &self,
        sku: &str,
        set: Vec<wiko_inspect::Image>,
        stored: usize,
        upload_index: &[usize],
    ) -> Result<(Model, f64), GoldenError> {
        if let Some(why) = degenerate(&set.iter().map(|i| &i.luma).collect::<Vec<_>>()) {
            return Err(GoldenError::Degenerate(why));
        }
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

/// Grey levels below which an image counts as blank (no texture at all).
const BLANK_SPREAD: f32 = 0.5;

/// Why a set cannot teach a model what good parts look like: every image blank, or every
/// image the same.
fn degenerate(set: &[&Gray]) -> Option<&'static str> {
    let spread = |g: &Gray| {
        let n = g.data.len().max(1) as f32;
        let mean = g.data.iter().sum::<f32>() / n;
        (g.data.iter().map(|v| (v - mean) * (v - mean)).sum::<f32>() / n).sqrt()
    };
    if set.iter().all(|g| spread(g) < BLANK_SPREAD) {
        return Some("every image is blank (no texture): photograph good parts");
    }
    let first = set.first()?;
    if set.len() > 1 && set[1..].iter().all(|g| g.data == first.data) {
        return Some("every image shows exactly the same pixels: photograph several good parts");
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blank_or_identical_sets_are_degenerate_and_varied_ones_are_not() {
        let flat = |v: f32| Gray::new(8, 8, v);
        assert!(degenerate(&[&flat(10.0), &flat(200.0)]).is_some(), "blank");
        let mut textured = flat(10.0);
        textured.data[3] = 90.0;
        assert!(degenerate(&[&textured, &textured]).is_some(), "identical");
        let mut other = textured.clone();
        other.data[5] = 40.0;
        assert!(degenerate(&[&textured, &other]).is_none());
    }
}
