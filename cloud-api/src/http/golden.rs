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
//! - `POST /api/v1/analyses/{id}/golden` (admin): the part's image joins its SKU's golden set
//!   (refitted as an upload is) when its latest review says the part is good: a false NG (the
//!   one-click fix of a false reject), or a confirmed OK; otherwise `409 not_reviewed_good`.
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
//! - `GET /api/v1/skus/{sku}/model/file` (device or viewer): the active model's file, for edge
//!   analysis: its version in `X-Wiko-Model-Version`, its BLAKE3 as a strong `ETag`;
//!   `If-None-Match` with the current tag is answered `304` without a body.

use axum::extract::multipart::MultipartRejection;
use axum::extract::{Multipart, Path, State};
use axum::http::{HeaderMap, HeaderName, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::json;
use uuid::Uuid;
use wiko_wire::frame::validate_id;
use wiko_wire::{
    Analysis, Calibration, ErrorCode, FeedbackVerdict, GoldenSet, ModelInfo, SkuSummary,
};

use super::AppState;
use super::caller::Caller;
use super::error::ApiError;
use super::image;
use super::results::{not_found, parse_id};
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
        .route("/api/v1/skus/{sku}/model/file", get(model_file))
        .route("/api/v1/analyses/{id}/golden", post(add_result))
}

#[utoipa::path(post, path = "/api/v1/skus/{sku}/golden", tag = "golden",
    params(("sku" = String, Path, description = "The SKU")),
    request_body(content = super::openapi::GoldenUpload, content_type = "multipart/form-data",
        description = "One or more `image` parts: good parts of the SKU"),
    responses(
        (status = 201, description = "A new model version was fitted", body = wiko_wire::Calibration),
        (status = 200, description = "Nothing new: the images were in the set", body = wiko_wire::Calibration),
        (status = 202, description = "Added; too few images for a model yet", body = wiko_wire::Calibration),
        (status = 415, description = "Not an image (`unsupported_image`)", body = wiko_wire::ErrorBody),
        (status = 422, description = "An image, or the set, that cannot make a model", body = wiko_wire::ErrorBody),
    ))]
pub(super) async fn upload(
    State(s): State<AppState>,
    Path(sku): Path<String>,
    caller: Caller,
    multipart: Result<Multipart, MultipartRejection>,
) -> Result<(StatusCode, Json<Calibration>), ApiError> {
    caller.may(Need::Admin)?;
    let (calibration, detail) = upload_images(&s, &sku, multipart?).await?;
    caller.audit("golden_added", detail);
    Ok((added_status(&calibration), Json(calibration)))
}

/// Reads the `image` parts of `multipart` and adds them to `sku`'s golden set: the
/// calibration and what to audit (the golden page's upload form adds the same way).
pub(crate) async fn upload_images(
    s: &AppState,
    sku: &str,
    mut multipart: Multipart,
) -> Result<(Calibration, serde_json::Value), ApiError> {
    valid_sku(sku)?;
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
    add(s, sku, images, None).await
}

/// `201` when a new version was fitted, `200` when nothing was new, `202` while the set is
/// too small for a model.
fn added_status(calibration: &Calibration) -> StatusCode {
    if calibration.fit_ms.is_some() {
        StatusCode::CREATED
    } else if calibration.model.is_some() {
        StatusCode::OK
    } else {
        StatusCode::ACCEPTED
    }
}

/// Adds `images` to `sku`'s golden set (refitted once large enough): the calibration, and what
/// to audit as `golden_added` (with the result the image came from, if any).
async fn add(
    s: &AppState,
    sku: &str,
    images: Vec<crate::store::Image>,
    from: Option<Uuid>,
) -> Result<(Calibration, serde_json::Value), ApiError> {
    let calibration = s.golden.add_samples(sku, images).await?;
    let detail = json!({
        "sku": sku,
        "added": calibration.added,
        "samples": calibration.samples,
        "version": calibration.model.as_ref().map(|m| &m.version),
        "analysis_id": from,
    });
    Ok((calibration, detail))
}

#[utoipa::path(post, path = "/api/v1/analyses/{id}/golden", tag = "golden",
    params(("id" = uuid::Uuid, Path, description = "The analysis id")),
    responses(
        (status = 201, description = "The part's image joined its SKU's golden set; a new model version was fitted", body = wiko_wire::Calibration),
        (status = 200, description = "The image was in the set already", body = wiko_wire::Calibration),
        (status = 202, description = "Added; too few images for a model yet", body = wiko_wire::Calibration),
        (status = 404, description = "No such analysis", body = wiko_wire::ErrorBody),
        (status = 409, description = "Its latest review does not say the part is good (`not_reviewed_good`)", body = wiko_wire::ErrorBody),
        (status = 422, description = "An image that cannot make a model", body = wiko_wire::ErrorBody),
    ))]
pub(super) async fn add_result(
    State(s): State<AppState>,
    Path(id): Path<String>,
    caller: Caller,
) -> Result<(StatusCode, Json<Calibration>), ApiError> {
    caller.may(Need::Admin)?;
    let (calibration, detail) = add_part(&s, parse_id(&id)?).await?;
    caller.audit("golden_added", detail);
    Ok((added_status(&calibration), Json(calibration)))
}

/// Whether the latest review of `a` says the part is good (a false NG, or a confirmed OK):
/// only such a part may join a golden set.
pub(crate) fn reviewed_good(a: &Analysis) -> bool {
    a.feedback.as_ref().is_some_and(|f| match f.verdict {
        FeedbackVerdict::FalseNg => true,
        FeedbackVerdict::Confirmed => !a.defect_detected,
        FeedbackVerdict::FalseOk | FeedbackVerdict::Inconclusive => false,
    })
}

/// Adds a result's image to its SKU's golden set, when its latest review says the part is
/// good (a false NG, or a confirmed OK): the calibration and what to audit (the dashboard's
/// button adds the same way).
pub(crate) async fn add_part(
    s: &AppState,
    id: Uuid,
) -> Result<(Calibration, serde_json::Value), ApiError> {
    let analysis = s.store().get(id).await.map_err(not_found)?;
    if !reviewed_good(&analysis) {
        return Err(ApiError::NotReviewedGood(
            "only a part reviewed good (a false NG, or a confirmed OK) joins a golden set".into(),
        ));
    }
    let bytes = s.intake.storage.part_image(id).await.map_err(not_found)?;
    let image = s.intake.image(bytes)?;
    add(s, &analysis.product_sku, vec![image], Some(id)).await
}

#[utoipa::path(get, path = "/api/v1/skus/{sku}/model", tag = "golden",
    params(("sku" = String, Path, description = "The SKU")),
    responses(
        (status = 200, description = "The active model", body = wiko_wire::ModelInfo),
        (status = 404, description = "The SKU has no model (`not_calibrated`)", body = wiko_wire::ErrorBody),
    ))]
pub(super) async fn model(
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

#[utoipa::path(get, path = "/api/v1/skus/{sku}/model/file", tag = "golden",
    params(
        ("sku" = String, Path, description = "The SKU"),
        ("If-None-Match" = Option<String>, Header, description = "The `ETag` of the model file the device holds"),
    ),
    responses(
        (status = 200, description = "The active model's file; its version in `X-Wiko-Model-Version`, its BLAKE3 in `ETag`",
            content_type = "application/octet-stream", body = Vec<u8>,
            headers(("X-Wiko-Model-Version" = String, description = "The model version"),
                    ("ETag" = String, description = "The file's BLAKE3, quoted"))),
        (status = 304, description = "The device holds the active model already (`If-None-Match`)"),
        (status = 404, description = "The SKU has no model (`not_calibrated`)", body = wiko_wire::ErrorBody),
    ))]
pub(super) async fn model_file(
    State(s): State<AppState>,
    Path(sku): Path<String>,
    headers: HeaderMap,
    caller: Caller,
) -> Result<Response, ApiError> {
    caller.may(Need::Model)?;
    valid_sku(&sku)?;
    let file = s
        .golden
        .model_file(&sku)
        .ok_or(ApiError::NotCalibrated(sku))?;
    let tags = [
        (header::ETAG, file.etag.clone()),
        (
            HeaderName::from_static(wiko_wire::golden::MODEL_VERSION_HEADER),
            file.version.clone(),
        ),
    ];
    if holds(&headers, &file.etag) {
        return Ok((StatusCode::NOT_MODIFIED, tags).into_response());
    }
    Ok((
        tags,
        [(header::CONTENT_TYPE, "application/octet-stream")],
        file.body,
    )
        .into_response())
}

/// Whether `If-None-Match` names `etag` (or is `*`).
fn holds(headers: &HeaderMap, etag: &str) -> bool {
    headers
        .get_all(header::IF_NONE_MATCH)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|t| t.trim().trim_start_matches("W/"))
        .any(|t| t == "*" || t == etag)
}

#[utoipa::path(get, path = "/api/v1/skus", tag = "golden",
    responses((status = 200, description = "Every SKU with golden samples", body = Vec<wiko_wire::SkuSummary>)))]
pub(super) async fn skus(
    State(s): State<AppState>,
    caller: Caller,
) -> Result<Json<Vec<SkuSummary>>, ApiError> {
    caller.may(Need::Read)?;
    Ok(Json(summaries(&s).await?))
}

/// Every SKU with golden samples, and its active model (the dashboard shows them too).
pub(crate) async fn summaries(s: &AppState) -> Result<Vec<SkuSummary>, ApiError> {
    let sets = s.store().golden_sets().await?;
    Ok(sets
        .into_iter()
        .map(|(sku, samples)| SkuSummary {
            model: s.golden.info(&sku),
            sku,
            samples,
        })
        .collect())
}

#[utoipa::path(get, path = "/api/v1/skus/{sku}/golden", tag = "golden",
    params(("sku" = String, Path, description = "The SKU")),
    responses((status = 200, description = "The golden set, oldest first, and its model", body = wiko_wire::GoldenSet)))]
pub(super) async fn list(
    State(s): State<AppState>,
    Path(sku): Path<String>,
    caller: Caller,
) -> Result<Json<GoldenSet>, ApiError> {
    caller.may(Need::Read)?;
    Ok(Json(golden_set(&s, sku).await?))
}

/// A SKU's golden set, oldest first, and its active model.
pub(crate) async fn golden_set(s: &AppState, sku: String) -> Result<GoldenSet, ApiError> {
    valid_sku(&sku)?;
    let samples = s.store().golden(&sku).await?;
    Ok(GoldenSet {
        samples: samples.into_iter().map(|g| g.sample).collect(),
        model: s.golden.info(&sku),
        sku,
    })
}

#[utoipa::path(get, path = "/api/v1/skus/{sku}/golden/{digest}", tag = "golden",
    params(("sku" = String, Path, description = "The SKU"), ("digest" = String, Path, description = "The image's BLAKE3")),
    responses(
        (status = 200, description = "The golden image as uploaded", content_type = "image/*", body = Vec<u8>),
        (status = 404, description = "No such image in the set", body = wiko_wire::ErrorBody),
    ))]
pub(super) async fn sample_image(
    State(s): State<AppState>,
    Path((sku, digest)): Path<(String, String)>,
    caller: Caller,
) -> Result<Response, ApiError> {
    caller.may(Need::Read)?;
    sample_bytes(&s, &sku, &digest).await
}

/// One golden image of a SKU, as uploaded.
pub(crate) async fn sample_bytes(
    s: &AppState,
    sku: &str,
    digest: &str,
) -> Result<Response, ApiError> {
    valid_sku(sku)?;
    let samples = s.store().golden(sku).await?;
    let sample = samples
        .iter()
        .find(|g| g.sample.digest == digest)
        .ok_or(ApiError::NotFound("golden sample"))?;
    let bytes = s.intake.storage.image(&sample.key).await?;
    Ok(image::stored(bytes))
}

#[utoipa::path(delete, path = "/api/v1/skus/{sku}/golden/{digest}", tag = "golden",
    params(("sku" = String, Path, description = "The SKU"), ("digest" = String, Path, description = "The image's BLAKE3")),
    responses(
        (status = 200, description = "Taken out; the model refitted without it", body = wiko_wire::Calibration),
        (status = 404, description = "No such image in the set", body = wiko_wire::ErrorBody),
        (status = 409, description = "The model would keep too few images (`golden_set_too_small`)", body = wiko_wire::ErrorBody),
        (status = 422, description = "The rest of the set cannot make a model", body = wiko_wire::ErrorBody),
    ))]
pub(super) async fn remove(
    State(s): State<AppState>,
    Path((sku, digest)): Path<(String, String)>,
    caller: Caller,
) -> Result<Json<Calibration>, ApiError> {
    caller.may(Need::Admin)?;
    let (calibration, detail) = remove_sample(&s, &sku, &digest).await?;
    caller.audit("golden_removed", detail);
    Ok(Json(calibration))
}

/// Takes an image out of `sku`'s golden set (refitted without it): the calibration and what
/// to audit (the golden page's remove button removes the same way).
pub(crate) async fn remove_sample(
    s: &AppState,
    sku: &str,
    digest: &str,
) -> Result<(Calibration, serde_json::Value), ApiError> {
    valid_sku(sku)?;
    let calibration = s.golden.remove_sample(sku, digest).await?;
    let detail = json!({
        "sku": sku,
        "digest": digest,
        "samples": calibration.samples,
        "version": calibration.model.as_ref().map(|m| &m.version),
    });
    Ok((calibration, detail))
}

/// A SKU in a path, checked like every identifier.
fn valid_sku(sku: &str) -> Result<(), ApiError> {
    validate_id("sku", sku).map_err(|e| ApiError::bad(ErrorCode::InvalidId, e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn if_none_match_names_the_current_tag_in_a_list_or_weakly_or_as_a_star() {
        let with = |v: &str| {
            let mut h = HeaderMap::new();
            h.insert(header::IF_NONE_MATCH, v.parse().unwrap());
            h
        };
        assert!(holds(&with("\"ab\""), "\"ab\""));
        assert!(holds(&with("\"x\", W/\"ab\""), "\"ab\""));
        assert!(holds(&with("*"), "\"ab\""));
        assert!(!holds(&with("\"x\""), "\"ab\""));
        assert!(!holds(&HeaderMap::new(), "\"ab\""));
    }
}
