//! `POST /api/v1/analyze`: the prototype's synchronous call. Multipart `image`, `product_sku`,
//! `facility`, optional `line`, `station`, `part_id`; answers with the analysis.
//!
//! The part is recorded with a job that becomes runnable only after a minute, so if this
//! process dies mid-call a worker still completes it; normally the call completes it first.

use std::time::Duration;

use axum::extract::multipart::MultipartRejection;
use axum::extract::{Multipart, State};
use axum::http::HeaderMap;
use axum::routing::post;
use axum::{Json, Router};
use bytes::Bytes;
use chrono::Utc;
use wiko_wire::Analysis;
use wiko_wire::frame::validate_id;

use super::AppState;
use super::auth::{Need, authorize};
use super::error::ApiError;
use super::image;
use crate::analysis;
use crate::store::NewAnalysis;

/// A synchronous call's job waits this long before a worker may take it over.
const TAKEOVER_AFTER: Duration = Duration::from_secs(60);

pub fn router() -> Router<AppState> {
    Router::new().route("/api/v1/analyze", post(analyze))
}

#[derive(Default)]
struct Form {
    image: Option<Bytes>,
    product_sku: Option<String>,
    facility: Option<String>,
    line: Option<String>,
    station: Option<String>,
    part_id: Option<String>,
}

async fn analyze(
    State(s): State<AppState>,
    headers: HeaderMap,
    multipart: Result<Multipart, MultipartRejection>,
) -> Result<Json<Analysis>, ApiError> {
    authorize(&s.keys, &headers, Need::Ingest)?;
    let mut multipart = multipart.map_err(|e| ApiError::bad("invalid_multipart", e.body_text()))?;
    let form = read_form(&mut multipart).await?;
    let image = form
        .image
        .ok_or_else(|| ApiError::bad("missing_field", "the `image` field is missing"))?;
    let field = |name: &'static str,
                 v: Option<String>,
                 default: Option<&str>|
     -> Result<String, ApiError> {
        let v = v.or(default.map(str::to_string)).ok_or_else(|| {
            ApiError::bad("missing_field", format!("the `{name}` field is missing"))
        })?;
        validate_id(name, &v).map_err(|e| ApiError::bad("invalid_field", e.to_string()))?;
        Ok(v)
    };
    let product_sku = field("product_sku", form.product_sku, None)?;
    let facility = field("facility", form.facility, None)?;
    let line = field("line", form.line, Some("default"))?;
    let station = field("station", form.station, Some("default"))?;
    let part_id = form
        .part_id
        .map(|p| field("part_id", Some(p), None))
        .transpose()?;

    let (width, height) = image::check(&image, s.limits)?;
    let decoded = analysis::decode(image.clone(), s.limits)
        .await
        .map_err(image::inspect_error)?;
    let digest = wiko_wire::frame::image_digest(&image);
    let now = Utc::now();
    let key = image::blob_key(&digest, now);
    s.blobs.put(&key, image).await?;
    let (_, id) = s
        .store
        .create(NewAnalysis {
            facility,
            line,
            station,
            product_sku: product_sku.clone(),
            part_id,
            lot: None,
            timestamp: now,
            frame: None,
            image_key: key,
            image_blake3: digest,
            image_width: width,
            image_height: height,
            run_after: TAKEOVER_AFTER,
        })
        .await?;
    let outcome = analysis::run(s.analyzer.as_ref(), &product_sku, decoded).await;
    let done = s.store.complete(id, outcome, &s.public_url).await?;
    s.outbox_wake.notify_one();
    Ok(Json(done))
}

async fn read_form(multipart: &mut Multipart) -> Result<Form, ApiError> {
    let mut form = Form::default();
    while let Some(field) = multipart.next_field().await? {
        let name = field.name().unwrap_or("").to_string();
        if name == "image" {
            form.image = Some(field.bytes().await?);
            continue;
        }
        let text = field.text().await?;
        if text.len() > 256 {
            return Err(ApiError::bad(
                "invalid_field",
                format!("`{name}` is too long"),
            ));
        }
        match name.as_str() {
            "product_sku" => form.product_sku = Some(text),
            "facility" => form.facility = Some(text),
            "line" => form.line = Some(text),
            "station" => form.station = Some(text),
            "part_id" => form.part_id = Some(text),
            _ => {} // the prototype ignored extra fields
        }
    }
    Ok(form)
}
