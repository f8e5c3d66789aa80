//! Golden samples and models per SKU.
//!
//! - `POST /api/v1/skus/{sku}/golden` (admin): multipart with one or more `image` fields, good
//!   parts of the SKU. They join the SKU's golden set (an image already in it is not added
//!   twice) and, once the set holds at least five images, a new model version is fitted from
//!   the whole set and becomes active: `201` with the new model, `202` while the set is too
//!   small, `200` when nothing was new. An upload that cannot make a model (an image without a
//!   part among knives) is refused whole with `422 invalid_image`, naming the image; a set
//!   that would exceed
//!   [`MAX_GOLDEN`](crate::analysis::golden::MAX_GOLDEN) images is refused with `400 golden_set_full`.
//! - `GET /api/v1/skus/{sku}/model` (viewer): the active model, `404 not_calibrated` if none.

use axum::extract::multipart::MultipartRejection;
use axum::extract::{Multipart, Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::routing::{get, post};
use axum::{Json, Router};
use wiko_wire::frame::validate_id;

use super::AppState;
use super::auth::{Need, authorize};
use super::error::ApiError;
use super::image;
use crate::analysis::golden::{Calibration, GoldenError, ModelInfo};

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/api/v1/skus/{sku}/golden", post(upload))
        .route("/api/v1/skus/{sku}/model", get(model))
}

async fn upload(
    State(s): State<AppState>,
    Path(sku): Path<String>,
    headers: HeaderMap,
    multipart: Result<Multipart, MultipartRejection>,
) -> Result<(StatusCode, Json<Calibration>), ApiError> {
    authorize(&s.keys, &headers, Need::Admin)?;
    validate_id("sku", &sku).map_err(|e| ApiError::bad("invalid_field", e.to_string()))?;
    let mut multipart = multipart.map_err(|e| ApiError::bad("invalid_multipart", e.body_text()))?;
    let mut images = Vec::new();
    while let Some(field) = multipart.next_field().await? {
        if field.name() == Some("image") {
            let bytes = field.bytes().await?;
            image::check(&bytes, s.limits)?;
            images.push(bytes);
        }
    }
    if images.is_empty() {
        return Err(ApiError::bad(
            "missing_field",
            "no `image` field: send one or more good parts",
        ));
    }
    let calibration = s
        .golden
        .add_samples(&sku, images)
        .await
        .map_err(|e| match e {
            GoldenError::Store(e) => ApiError::from(e),
            GoldenError::Image { .. } => ApiError::InvalidImage(e.to_string()),
            GoldenError::Fit(detail) => ApiError::Internal(detail),
            GoldenError::Full { .. } => ApiError::bad("golden_set_full", e.to_string()),
        })?;
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
    headers: HeaderMap,
) -> Result<Json<ModelInfo>, ApiError> {
    authorize(&s.keys, &headers, Need::Read)?;
    s.golden
        .info(&sku)
        .map(Json)
        .ok_or(ApiError::NotCalibrated(sku))
}
