//! The anomaly heat map of a part (the toggle on its dashboard page): its image scored again by
//! the model version that judged it, drawn by `wiko_eval::heatmap::render` (the picture
//! `model score --heatmap` writes), as a JPEG the size of the image.
//!
//! Made on each request, not kept: only a part an engineer opens and toggles needs one, it
//! costs one decode and one score (what the part's analysis cost), and the same image under
//! the same stored model version always draws the same map, so the browser keeps it
//! (`immutable`) instead of the image store holding a second full-size picture per part.

use bytes::Bytes;
use image::codecs::jpeg::JpegEncoder;
use uuid::Uuid;
use wiko_inspect::{DecodeLimits, Model};

use crate::analysis::budget::{Budget, DECODE_BYTES_PER_PIXEL, TooLarge};
use crate::store::{Storage, StoreError};

const QUALITY: u8 = 85;
/// The map in the image's frame and the picture drawn from it, per pixel.
const DRAW_BYTES_PER_PIXEL: u64 = 4 + 3;

#[derive(Debug, thiserror::Error)]
pub enum HeatmapError {
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The part was not judged by a golden model (pending, failed, not calibrated), or its
    /// model version is no longer stored.
    #[error("{0}")]
    NoModel(String),
    #[error("the image cannot be drawn: {0}")]
    Image(String),
    #[error(transparent)]
    TooLarge(#[from] TooLarge),
}

/// The heat map of part `id` under the model version that judged it.
pub async fn heatmap(
    storage: &Storage,
    budget: &Budget,
    limits: DecodeLimits,
    id: Uuid,
) -> Result<Bytes, HeatmapError> {
    let part = storage.records.get(id).await?;
    let version = match (&part.model_version, part.score) {
        (Some(v), Some(_)) => v.clone(),
        _ => {
            return Err(HeatmapError::NoModel(
                "the part has no golden-model score to map".into(),
            ));
        }
    };
    let stored = storage
        .records
        .model_version(&part.product_sku, &version)
        .await?
        .ok_or_else(|| {
            HeatmapError::NoModel(format!(
                "model {version} of {} is not stored",
                part.product_sku
            ))
        })?;
    let model = Model::from_bytes(&stored.body)
        .map_err(|e| HeatmapError::NoModel(format!("model {version} does not load: {e}")))?;
    let bytes = storage.part_image(id).await?;
    let (width, height) = wiko_inspect::decode::dimensions(&bytes, limits)
        .map_err(|e| HeatmapError::Image(crate::analysis::describe(&e)))?;
    let pixels = u64::from(width) * u64::from(height);
    let _memory = budget
        .reserve(
            Budget::judging(width, height)
                + pixels * (DECODE_BYTES_PER_PIXEL + DRAW_BYTES_PER_PIXEL),
        )
        .await?;
    let span = tracing::info_span!("heatmap", %id, %version);
    let drawn = tokio::task::spawn_blocking(move || span.in_scope(|| draw(&model, &bytes, limits)))
        .await
        .map_err(|e| HeatmapError::Image(format!("heat map task: {e}")))??;
    Ok(Bytes::from(drawn))
}

/// Scores `bytes` with `model` and draws the map over the image in grey, as a JPEG.
fn draw(model: &Model, bytes: &[u8], limits: DecodeLimits) -> Result<Vec<u8>, HeatmapError> {
    let image = wiko_inspect::decode(bytes, limits)
        .map_err(|e| HeatmapError::Image(crate::analysis::describe(&e)))?;
    let verdict = model
        .score(&image)
        .map_err(|e| HeatmapError::Image(crate::analysis::describe(&e)))?;
    let heat = model.map_in_image(&verdict, image.luma.width, image.luma.height);
    let picture =
        wiko_eval::heatmap::render(&image.luma, &heat, verdict.threshold, &verdict.regions);
    let mut out = Vec::new();
    JpegEncoder::new_with_quality(&mut out, QUALITY)
        .encode_image(&picture)
        .map_err(|e| HeatmapError::Image(e.to_string()))?;
    Ok(out)
}
