//! `PUT /api/v1/frames/{frame_id}`: agent ingest. Multipart `meta` (FrameMeta JSON) and `image`.
//! Answers 201 with the ack once the image and the record are durable, 200 for the same frame
//! again, 409 for the same id with other content.

use axum::Json;
use axum::Router;
use axum::extract::multipart::MultipartRejection;
use axum::extract::{Multipart, Path, State};
use axum::http::StatusCode;
use axum::routing::put;
use bytes::Bytes;
use tracing::Instrument;
use uuid::Uuid;
use wiko_wire::frame::{IMAGE_FIELD, META_FIELD};
use wiko_wire::{ErrorCode, FrameMeta, IngestAck, IngestOutcome};

use super::AppState;
use super::analyze::once;
use super::caller::Caller;
use super::error::ApiError;
use crate::auth::Need;
use crate::store::Origin;
use crate::telemetry;

/// Longest accepted `meta` part.
const MAX_META_BYTES: usize = 16 * 1024;

pub(super) fn router() -> Router<AppState> {
    Router::new().route("/api/v1/frames/{frame_id}", put(put_frame))
}

#[utoipa::path(put, path = "/api/v1/frames/{frame_id}", tag = "ingest",
    params(("frame_id" = uuid::Uuid, Path, description = "The frame's id, as in its metadata")),
    request_body(content = super::openapi::FrameUpload, content_type = "multipart/form-data",
        description = "`meta` (FrameMeta as JSON) and `image` (the JPEG)"),
    responses(
        (status = 201, description = "Stored: durable, analysis queued", body = wiko_wire::IngestAck),
        (status = 200, description = "The same frame again", body = wiko_wire::IngestAck),
        (status = 409, description = "The id was received with other content (`frame_conflict`)", body = wiko_wire::ErrorBody),
        (status = 415, description = "Not an image (`unsupported_image`)", body = wiko_wire::ErrorBody),
        (status = 422, description = "An image that cannot be used (`invalid_image`, `image_too_large`)", body = wiko_wire::ErrorBody),
    ))]
pub(super) async fn put_frame(
    State(s): State<AppState>,
    Path(frame_id): Path<String>,
    caller: Caller,
    multipart: Result<Multipart, MultipartRejection>,
) -> Result<(StatusCode, Json<IngestAck>), ApiError> {
    let started = std::time::Instant::now();
    let principal = caller.may(Need::Ingest)?;
    let frame_id = Uuid::parse_str(&frame_id)
        .map_err(|_| ApiError::bad(ErrorCode::InvalidFrameId, "the frame id is not a UUID"))?;
    let span = tracing::info_span!("ingest", %frame_id, key = %principal.name);
    let result = async {
        let (meta, bytes) = read_parts(&mut multipart?).await?;
        if meta.frame_id != frame_id {
            return Err(ApiError::bad(
                ErrorCode::FrameIdMismatch,
                "meta.frame_id differs from the URL",
            ));
        }
        meta.validate()
            .map_err(|e| ApiError::bad(ErrorCode::InvalidMetadata, e.to_string()))?;
        caller.may_send_for(&meta.facility, Some(&meta.device_id))?;
        let image = s.intake.image(bytes)?;
        s.intake.verify(&image).await?;
        let run_now = std::time::Duration::ZERO;
        let (outcome, analysis_id) = s.intake.part(Origin::Frame(meta), image, run_now).await?;
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
        Err(e) => e.code().as_str(),
    };
    metrics::counter!(telemetry::INGEST_TOTAL, "outcome" => label).increment(1);
    metrics::histogram!(telemetry::INGEST_SECONDS).record(started.elapsed().as_secs_f64());
    result
}

/// Reads the `meta` and `image` parts; anything else is refused.
async fn read_parts(multipart: &mut Multipart) -> Result<(FrameMeta, Bytes), ApiError> {
    let (mut meta, mut image) = (None, None);
    while let Some(field) = multipart.next_field().await? {
        match field.name() {
            Some(META_FIELD) => {
                once(META_FIELD, &meta)?;
                let bytes = field.bytes().await?;
                if bytes.len() > MAX_META_BYTES {
                    return Err(ApiError::bad(
                        ErrorCode::InvalidMetadata,
                        "meta is over 16 KiB",
                    ));
                }
                let parsed: FrameMeta = serde_json::from_slice(&bytes)
                    .map_err(|e| ApiError::bad(ErrorCode::InvalidMetadata, format!("meta: {e}")))?;
                meta = Some(parsed);
            }
            Some(IMAGE_FIELD) => {
                once(IMAGE_FIELD, &image)?;
                image = Some(field.bytes().await?);
            }
            other => {
                return Err(ApiError::bad(
                    ErrorCode::InvalidMultipart,
                    format!("unexpected part {:?}", other.unwrap_or("")),
                ));
            }
        }
    }
    let missing = |part| {
        ApiError::bad(
            ErrorCode::MissingField,
            format!("the `{part}` part is missing"),
        )
    };
    Ok((
        meta.ok_or_else(|| missing(META_FIELD))?,
        image.ok_or_else(|| missing(IMAGE_FIELD))?,
    ))
}
