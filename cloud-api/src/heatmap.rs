//! The anomaly heat map of a part (the toggle on its dashboard page): its image scored again by
//! the model version that judged it, drawn by `wiko_eval::heatmap::render` (the picture
//! `model score --heatmap` writes), as a JPEG the size of the image.
//!
//! Made on each request, not kept: only a part an engineer opens and toggles needs one, it
//! costs one decode and one score (what the part's analysis cost), and the same image under
//! the same stored model version always draws the same map, so the browser keeps it
//! (`immutable`) instead of the image store holding a second full-size picture per part. At
//! most [`AT_ONCE`] are made at once per process; one more is answered 503 `busy` with a
//! `Retry-After`. The part's page offers the toggle only when that model version is stored and
//! still loads ([`unavailable`], the answer kept per SKU and version: a stored version never
//! changes); otherwise it says why.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use image::codecs::jpeg::JpegEncoder;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use uuid::Uuid;
use wiko_inspect::{DecodeLimits, Model};
use wiko_wire::Analysis;

use crate::analysis::budget::{Budget, DECODE_BYTES_PER_PIXEL, TooLarge};
use crate::store::{Storage, StoreError, StoredModel};
use crate::telemetry;

const QUALITY: u8 = 85;
/// The map in the image's frame and the picture drawn from it, per pixel.
const DRAW_BYTES_PER_PIXEL: u64 = 4 + 3;
/// Heat maps made at once by a process. Each costs a part's analysis on the blocking pool the
/// workers also use; one more is refused, not queued behind them.
pub const AT_ONCE: usize = 2;

#[derive(Debug, thiserror::Error)]
pub enum HeatmapError {
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The part was not judged by a golden model (pending, failed, not calibrated), or its
    /// model version is no longer stored or does not load.
    #[error("{0}")]
    NoModel(String),
    /// As many heat maps as [`AT_ONCE`] are being made.
    #[error("the server is making as many heat maps as it allows at once: retry shortly")]
    Busy,
    /// The stored image does not decode or score: the server's fault, not the caller's.
    #[error("the heat map cannot be drawn: {0}")]
    Failed(String),
    #[error(transparent)]
    TooLarge(#[from] TooLarge),
}

/// Stored model versions whose load is remembered ([`unavailable`]); past this many the
/// memory starts afresh.
const LOADS_KEPT: usize = 1024;

/// Whether a stored model version loads, by (SKU, version): `None` when it does, else why not.
type Loads = HashMap<(String, String), Option<String>>;

/// The heat maps being made, at most a fixed number at once, and whether the stored model
/// versions asked about load (shared by the clones).
#[derive(Clone)]
pub struct Heatmaps {
    places: Arc<Semaphore>,
    loads: Arc<Mutex<Loads>>,
}

impl Heatmaps {
    pub fn new(at_once: usize) -> Heatmaps {
        Heatmaps {
            places: Arc::new(Semaphore::new(at_once)),
            loads: Arc::default(),
        }
    }

    /// Whether the stored `version` of `sku` loads, if known.
    fn loads(&self, sku: &str, version: &str) -> Option<Option<String>> {
        let loads = self.loads.lock().unwrap_or_else(|e| e.into_inner());
        loads.get(&(sku.to_string(), version.to_string())).cloned()
    }

    /// Remembers whether the stored `version` of `sku` loads (it never changes).
    fn loaded(&self, sku: &str, version: &str, why_not: Option<String>) {
        let mut loads = self.loads.lock().unwrap_or_else(|e| e.into_inner());
        if loads.len() >= LOADS_KEPT {
            loads.clear();
        }
        loads.insert((sku.to_string(), version.to_string()), why_not);
    }

    /// A place among the heat maps being made, held until dropped; [`HeatmapError::Busy`]
    /// when every place is taken.
    fn place(&self) -> Result<OwnedSemaphorePermit, HeatmapError> {
        self.places
            .clone()
            .try_acquire_owned()
            .map_err(|_| HeatmapError::Busy)
    }
}

/// The heat map of part `id` under the model version that judged it. The place among
/// `heatmaps` and the memory are held by the blocking work, so a request that times out or a
/// client that leaves frees neither before the work ends.
pub async fn heatmap(
    storage: &Storage,
    heatmaps: &Heatmaps,
    budget: &Budget,
    limits: DecodeLimits,
    id: Uuid,
) -> Result<Bytes, HeatmapError> {
    let place = heatmaps.place().inspect_err(|_| {
        metrics::counter!(telemetry::HEATMAPS_TOTAL, "outcome" => "busy").increment(1);
    })?;
    let part = storage.records.get(id).await?;
    let (version, stored) = stored_model(storage, &part).await?;
    let bytes = storage.part_image(id).await?;
    let (width, height) = wiko_inspect::decode::dimensions(&bytes, limits)
        .map_err(|e| HeatmapError::Failed(crate::analysis::describe(&e)))?;
    let pixels = u64::from(width) * u64::from(height);
    let memory = budget
        .reserve(
            Budget::judging(width, height)
                + pixels * (DECODE_BYTES_PER_PIXEL + DRAW_BYTES_PER_PIXEL),
        )
        .await?;
    let span = tracing::info_span!("heatmap", %id, %version);
    let drawn = memory
        .run(move || {
            let _place = place;
            span.in_scope(|| draw(&load(&version, &stored)?, &bytes, limits))
        })
        .await
        .map_err(|e| HeatmapError::Failed(format!("heat map task: {e}")))??;
    metrics::counter!(telemetry::HEATMAPS_TOTAL, "outcome" => "drawn").increment(1);
    Ok(Bytes::from(drawn))
}

/// Why `part`'s page offers no heat map, shown in place of the toggle: `None` when the model
/// version that scored it is stored and loads (loaded on the blocking pool, as [`heatmap`]
/// loads it), else what [`heatmap`] would answer. Whether a stored version loads is read and
/// decoded once, then remembered in `heatmaps`; a store that cannot be read is logged and the
/// heat map shown as unavailable, not the page refused.
pub async fn unavailable(
    storage: &Storage,
    heatmaps: &Heatmaps,
    part: &Analysis,
) -> Option<String> {
    if let (Some(version), Some(_)) = (&part.model_version, part.score)
        && let Some(known) = heatmaps.loads(&part.product_sku, version)
    {
        return known;
    }
    let loaded = match stored_model(storage, part).await {
        Ok((version, stored)) => {
            let loaded = tokio::task::spawn_blocking(move || load(&version, &stored).map(drop))
                .await
                .unwrap_or_else(|e| Err(HeatmapError::Failed(format!("model load task: {e}"))));
            if let (Ok(()) | Err(HeatmapError::NoModel(_)), Some(version)) =
                (&loaded, &part.model_version)
            {
                let why_not = loaded.as_ref().err().map(ToString::to_string);
                heatmaps.loaded(&part.product_sku, version, why_not);
            }
            loaded
        }
        Err(e) => Err(e),
    };
    match loaded {
        Ok(()) => None,
        Err(HeatmapError::NoModel(why)) => Some(why),
        Err(HeatmapError::Store(e)) => {
            tracing::warn!(part = %part.id, error = %e, "the part's model version could not be read");
            Some("the model store could not be read, retry later".into())
        }
        Err(other) => Some(other.to_string()),
    }
}

/// The stored model version that scored `part`: [`HeatmapError::NoModel`] when the part has no
/// golden-model score or its version is no longer stored.
async fn stored_model(
    storage: &Storage,
    part: &Analysis,
) -> Result<(String, StoredModel), HeatmapError> {
    let (Some(version), Some(_)) = (&part.model_version, part.score) else {
        return Err(HeatmapError::NoModel(
            "the part has no golden-model score to map".into(),
        ));
    };
    let stored = storage
        .records
        .model_version(&part.product_sku, version)
        .await?
        .ok_or_else(|| {
            HeatmapError::NoModel(format!(
                "model {version} of {} is not stored",
                part.product_sku
            ))
        })?;
    Ok((version.clone(), stored))
}

/// A stored model version's file, loaded: [`HeatmapError::NoModel`] when it no longer loads
/// (of an older format, or damaged).
fn load(version: &str, stored: &StoredModel) -> Result<Model, HeatmapError> {
    Model::from_bytes(&stored.body)
        .map_err(|e| HeatmapError::NoModel(format!("model {version} does not load: {e}")))
}

/// Scores `bytes` with `model` and draws the map over the image in grey, as a JPEG.
fn draw(model: &Model, bytes: &[u8], limits: DecodeLimits) -> Result<Vec<u8>, HeatmapError> {
    let image = wiko_inspect::decode_planes(bytes, limits, model.planes())
        .map_err(|e| HeatmapError::Failed(crate::analysis::describe(&e)))?;
    let verdict = model
        .score(&image)
        .map_err(|e| HeatmapError::Failed(crate::analysis::describe(&e)))?;
    let heat = model.map_in_image(&verdict, image.luma.width, image.luma.height);
    let picture =
        wiko_eval::heatmap::render(&image.luma, &heat, verdict.threshold, &verdict.regions);
    let mut out = Vec::new();
    JpegEncoder::new_with_quality(&mut out, QUALITY)
        .encode_image(&picture)
        .map_err(|e| HeatmapError::Failed(e.to_string()))?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn one_heat_map_more_than_allowed_is_refused_until_one_ends() {
        let heatmaps = Heatmaps::new(AT_ONCE);
        let held: Vec<_> = (0..AT_ONCE).map(|_| heatmaps.place().unwrap()).collect();
        assert!(matches!(heatmaps.clone().place(), Err(HeatmapError::Busy)));
        drop(held);
        assert!(heatmaps.place().is_ok());
    }

    #[test]
    fn a_refused_heat_map_is_a_503_busy_with_a_retry_after() {
        use axum::response::IntoResponse;

        let answer = crate::http::error::ApiError::from(HeatmapError::Busy).into_response();
        assert_eq!(answer.status(), axum::http::StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(answer.headers()[axum::http::header::RETRY_AFTER], "2");
        let failed = crate::http::error::ApiError::from(HeatmapError::Failed("x".into()));
        assert_eq!(failed.code(), wiko_wire::ErrorCode::Internal);
        assert_eq!(
            crate::http::error::ApiError::from(HeatmapError::Busy).code(),
            wiko_wire::ErrorCode::Busy
        );
    }
}
