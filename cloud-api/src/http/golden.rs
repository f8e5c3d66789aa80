//! Golden samples and models per SKU.
//!
//! - `POST /api/v1/skus/{sku}/golden` (admin): multipart with one or more `image` fields, good
//!   parts of the SKU. They join the SKU's golden set (an image already in it is not added
//!   twice) and, once the set holds at least five images, a new model version is fitted from
//!   the whole set and becomes active: `201` with the new model, `202` while the set is too
//!   small, `200` when nothing was new. An upload that cannot make a model (an image without a
//!   part among knives) is refused whole with `422 invalid_image`, naming the image; a set
//!   that would exceed
//!   `MAX_GOLDEN` (200) images is refused with `400 golden_set_full`.
//! - `GET /api/v1/skus` (viewer): every SKU with golden samples, by name: how many, and its
//!   active model (`null` while it has none).
//! - `GET /api/v1/skus/{sku}/golden` (viewer): the golden set, oldest first (each image's
//!   digest and when it was added), and the active model (`null` if none).
//! - `GET /api/v1/skus/{sku}/golden/{digest}` (viewer): one golden image, as uploaded.
//! - `DELETE /api/v1/skus/{sku}/golden/{digest}` (admin): takes a part that should not have been
//!   a golden sample out of the set. A set that makes a model is refitted without it as a new
//!   version: `200` with it. `404 not_found` if the set holds no such image;
//!   `409 golden_set_too_small` if the model would be left with fewer than five images
//!   (upload good parts first, then remove).
//! - `GET /api/v1/skus/{sku}/model` (viewer): the active model, `404 not_calibrated` if none.

use axum::extract::multipart::MultipartRejection;
use axum::extract::{Multipart, Path, State};
use axum::http::StatusCode;
use axum::response::Response;
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::json;
use wiko_wire::frame::validate_id;
use wiko_wire::{Calibration, ErrorCode, GoldenSet, ModelInfo, SkuSummary};

use super::AppState;
use super::caller::Caller;
use super::error::ApiError;
use super::image;
use crate::auth::Need;

pub(super) fn router() -> Router<AppState> {
    Router::new()
        .route("/api/v1/skus", get(skus))
        .route("/api/v1/skus/{sku}/golden", post(upload).get(list))
        .route(
            "/api/v1/skus/{sku}/golden/{digest}",
            get(sample_image).delete(remove),
        )
        .route("/api/v1/skus/{sku}/model", get(model))
}

async fn upload(
    State(s): State<AppState>,
    Path(sku): Path<String>,
    caller: Caller,
    multipart: Result<Multipart, MultipartRejection>,
) -> Result<(StatusCode, Json<Calibration>), ApiError> {
    caller.may(Need::Admin)?;
    valid_sku(&sku)?;
    let mut multipart = multipart?;
    let mut images = Vec::new();
    while let Some(field) = multipart.next_field().await? {
        if field.name() != Some("image") {
            return Err(ApiError::bad(
                ErrorCode::InvalidMultipart,
                format!(
                    "unexpected part {:?}: send `image` parts",
                    field.name().unwrap_or("")
                ),
            ));
        }
        images.push(s.intake.image(field.bytes().await?)?);
    }
    if images.is_empty() {
        return Err(ApiError::bad(
            ErrorCode::MissingField,
            "no `image` field: send one or more good parts",
        ));
    }
    let calibration = s.golden.add_samples(&sku, images).await?;
    caller.audit(
        "golden_added",
        json!({
            "sku": sku,
            "added": calibration.added,
            "samples": calibration.samples,
            "version": calibration.model.as_ref().map(|m| &m.version),
        }),
    );
    let status = if calibration.fit_ms.is_some() {
        StatusCode::CREATED
    } else if calibration.model.is_some() {
        StatusCode::OK
    } else {
        StatusCode::ACCEPTED
    };
    Ok((status, Json(calibration)))
}

async fn model(
    State(s): State<AppState>,
    Path(sku): Path<String>,
    caller: Caller,
) -> Result<Json<ModelInfo>, ApiError> {
    caller.may(Need::Read)?;
    valid_sku(&sku)?;
    s.golden
        .info(&sku)
        .map(Json)
        .ok_or(ApiError::NotCalibrated(sku))
}

async fn skus(
    State(s): State<AppState>,
    caller: Caller,
) -> Result<Json<Vec<SkuSummary>>, ApiError> {
    caller.may(Need::Read)?;
    let sets = s.store().golden_sets().await?;
    Ok(Json(
        sets.into_iter()
            .map(|(sku, samples)| SkuSummary {
                model: s.golden.info(&sku),
                sku,
                samples,
            })
            .collect(),
    ))
}

async fn list(
    State(s): State<AppState>,
    Path(sku): Path<String>,
    caller: Caller,
) -> Result<Json<GoldenSet>, ApiError> {
    caller.may(Need::Read)?;
    valid_sku(&sku)?;
    let samples = s.store().golden(&sku).await?;
    Ok(Json(GoldenSet {
        samples: samples.into_iter().map(|g| g.sample).collect(),
        model: s.golden.info(&sku),
        sku,
    }))
}

async fn sample_image(
    State(s): State<AppState>,
    Path((sku, digest)): Path<(String, String)>,
    caller: Caller,
) -> Result<Response, ApiError> {
    caller.may(Need::Read)?;
    valid_sku(&sku)?;
    let samples = s.store().golden(&sku).await?;
    let sample = samples
        .iter()
        .find(|g| g.sample.digest == digest)
        .ok_or(ApiError::NotFound("golden sample"))?;
    let bytes = s.intake.storage.image(&sample.key).await?;
    Ok(image::stored(bytes))
}

async fn remove(
    State(s): State<AppState>,
    Path((sku, digest)): Path<(String, String)>,
    caller: Caller,
) -> Result<Json<Calibration>, ApiError> {
    caller.may(Need::Admin)?;
    valid_sku(&sku)?;
    let calibration = s.golden.remove_sample(&sku, &digest).await?;
    caller.audit(
        "golden_removed",
        json!({
            "sku": sku,
            "digest": digest,
            "samples": calibration.samples,
            "version": calibration.model.as_ref().map(|m| &m.version),
        }),
    );
    Ok(Json(calibration))
}

/// A SKU in a path, checked like every identifier.
fn valid_sku(sku: &str) -> Result<(), ApiError> {
    validate_id("sku", sku).map_err(|e| ApiError::bad(ErrorCode::InvalidId, e.to_string()))
}
