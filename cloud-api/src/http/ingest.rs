//! `PUT /api/v1/frames/{frame_id}`: agent ingest. Multipart `meta` (FrameMeta JSON) and `image`.
//! Answers 201 with the ack once the image and the record are durable, 200 for the same frame
//! again, 409 for the same id with other content.

use axum::Json;
use axum::Router;
use axum::extract::multipart::MultipartRejection;
use axum::extract::{Multipart, Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::routing::put;
use bytes::Bytes;
use tracing::Instrument;
use uuid::Uuid;
use wiko_wire::frame::{IMAGE_FIELD, META_FIELD};
use wiko_wire::{FrameMeta, IngestAck, IngestOutcome};

use super::AppState;
use super::auth::{Need, authorize};
use super::error::ApiError;
use super::image;
use crate::store::NewAnalysis;
use crate::telemetry;

/// Longest accepted `meta` part.
const MAX_META_BYTES: usize = 16 * 1024;

pub fn router() -> Router<AppState> {
    Router::new().route("/api/v1/frames/{frame_id}", put(put_frame))
}

async fn put_frame(
    State(s): State<AppState>,
    Path(frame_id): Path<String>,
    headers: HeaderMap,
    multipart: Result<Multipart, MultipartRejection>,
) -> Result<(StatusCode, Json<IngestAck>), ApiError> {
    let started = std::time::Instant::now();
    let principal = authorize(&s.keys, &headers, Need::Ingest)?;
    let frame_id = Uuid::parse_str(&frame_id)
        .map_err(|_| ApiError::bad("invalid_frame_id", "the frame id is not a UUID"))?;
    let span = tracing::info_span!("ingest", %frame_id, key = %principal.name);
    let result = async {
        let mut multipart =
            multipart.map_err(|e| ApiError::bad("invalid_multipart", e.body_text()))?;
        let (meta, jpeg) = read_parts(&mut multipart).await?;
        if meta.frame_id != frame_id {
            return Err(ApiError::bad(
                "frame_id_mismatch",
                "meta.frame_id differs from the URL",
            ));
        }
        meta.validate()
            .map_err(|e| ApiError::bad("invalid_metadata", e.to_string()))?;
        let digest = wiko_wire::frame::image_digest(&jpeg);
        if digest != meta.image_blake3 {
            return Err(ApiError::bad(
                "digest_mismatch",
                "the image does not match meta.image_blake3",
            ));
        }
        let (width, height) = image::check(&jpeg, s.limits)?;
        let key = image::blob_key(&digest, meta.captured_at);
        s.blobs.put(&key, jpeg).await?;
        let new = NewAnalysis {
            facility: meta.facility.clone(),
            line: meta.line.clone(),
            station: meta.station.clone(),
            product_sku: meta.sku.clone(),
            part_id: meta.part_id.clone(),
            lot: meta.lot.clone(),
            timestamp: meta.captured_at,
            frame: Some(meta),
            image_key: key,
            image_blake3: digest,
            image_width: width,
            image_height: height,
            run_after: std::time::Duration::ZERO,
        };
        let (outcome, analysis_id) = s.store.create(new).await?;
        if outcome == IngestOutcome::Created {
            s.jobs_wake.notify_one();
        }
        let status = match outcome {
            IngestOutcome::Created => StatusCode::CREATED,
            IngestOutcome::Duplicate => StatusCode::OK,
        };
        Ok((
            status,
            Json(IngestAck {
                frame_id,
                outcome,
                analysis_id,
            }),
        ))
    }
    .instrument(span)
    .await;
    let label = match &result {
        Ok((StatusCode::CREATED, _)) => "created",
        Ok(_) => "duplicate",
        Err(e) => e.code(),
    };
    metrics::counter!(telemetry::INGEST_TOTAL, "outcome" => label).increment(1);
    metrics::histogram!(telemetry::INGEST_SECONDS).record(started.elapsed().as_secs_f64());
    result
}

/// Reads the `meta` and `image` parts; anything else is refused.
async fn read_parts(multipart: &mut Multipart) -> Result<(FrameMeta, Bytes), ApiError> {
    let (mut meta, mut jpeg) = (None, None);
    while let Some(field) = multipart.next_field().await? {
        match field.name() {
            Some(META_FIELD) => {
                let bytes = field.bytes().await?;
                if bytes.len() > MAX_META_BYTES {
                    return Err(ApiError::bad("invalid_metadata", "meta is over 16 KiB"));
                }
                let parsed: FrameMeta = serde_json::from_slice(&bytes)
                    .map_err(|e| ApiError::bad("invalid_metadata", format!("meta: {e}")))?;
                meta = Some(parsed);
            }
            Some(IMAGE_FIELD) => jpeg = Some(field.bytes().await?),
            other => {
                return Err(ApiError::bad(
                    "invalid_multipart",
                    format!("unexpected part {:?}", other.unwrap_or("")),
                ));
            }
        }
    }
    let meta = meta.ok_or_else(|| ApiError::bad("missing_field", "the `meta` part is missing"))?;
    let jpeg = jpeg.ok_or_else(|| ApiError::bad("missing_field", "the `image` part is missing"))?;
    Ok((meta, jpeg))
}
