//! `POST /api/v1/analyze`: the prototype's synchronous call. Multipart `image`, `product_sku`,
//! `facility`, optional `line`, `station`, `part_id`; answers with the analysis.
//!
//! The part is recorded with a job that becomes runnable only after a minute, so if this
//! process dies mid-call a worker still completes it; normally the call completes it first.
//! The decode and the judgement run as a task holding the call's memory reservation
//! (`Reservation::spawn`): they end, and store the result, even if the request times out;
//! the task gives up after [`TAKEOVER_AFTER`], when a worker may take the job over, and logs
//! its errors itself (the client may have left).

use std::time::Duration;

use axum::extract::multipart::MultipartRejection;
use axum::extract::{Multipart, State};
use axum::routing::post;
use axum::{Json, Router};
use bytes::Bytes;
use chrono::Utc;
use tracing::{Instrument, debug, warn};
use wiko_wire::frame::validate_id;
use wiko_wire::{Analysis, ErrorCode};

use super::AppState;
use super::caller::Caller;
use super::error::ApiError;
use crate::analysis;
use crate::analysis::budget::Budget;
use crate::auth::Need;
use crate::store::{Call, Image, Origin};

/// A synchronous call's job waits this long before a worker may take it over.
const TAKEOVER_AFTER: Duration = Duration::from_secs(60);

pub(super) fn router() -> Router<AppState> {
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

#[utoipa::path(post, path = "/api/v1/analyze", tag = "ingest",
    request_body(content = super::openapi::AnalyzeForm, content_type = "multipart/form-data",
        description = "The prototype's form: `image`, `product_sku`, `facility`, optional `line`, `station`, `part_id`"),
    responses(
        (status = 200, description = "The part, judged", body = wiko_wire::Analysis),
        (status = 415, description = "Not an image (`unsupported_image`)", body = wiko_wire::ErrorBody),
        (status = 422, description = "An image that cannot be used (`invalid_image`, `image_too_large`)", body = wiko_wire::ErrorBody),
    ))]
pub(super) async fn analyze(
    State(s): State<AppState>,
    caller: Caller,
    multipart: Result<Multipart, MultipartRejection>,
) -> Result<Json<Analysis>, ApiError> {
    caller.may(Need::Ingest)?;
    let form = read_form(&mut multipart?).await?;
    let image = form
        .image
        .ok_or_else(|| ApiError::bad(ErrorCode::MissingField, "the `image` field is missing"))?;
    let field = |name: &'static str,
                 v: Option<String>,
                 default: Option<&str>|
     -> Result<String, ApiError> {
        let v = v.or(default.map(str::to_string)).ok_or_else(|| {
            ApiError::bad(
                ErrorCode::MissingField,
                format!("the `{name}` field is missing"),
            )
        })?;
        validate_id(name, &v).map_err(|e| ApiError::bad(ErrorCode::InvalidField, e.to_string()))?;
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
    caller.may_send_for(&facility, None)?;

    let image = s.intake.image(image)?;
    let memory = s
        .intake
        .budget
        .reserve(Budget::judging(image.width, image.height))
        .await?;
    let origin = Origin::Call(Call {
        facility,
        line,
        station,
        product_sku: product_sku.clone(),
        part_id,
        received_at: Utc::now(),
    });
    // The memory is held by the work, not by this request: a request that times out, or a
    // client that leaves, frees it only when the judgement is stored.
    let span = tracing::info_span!("analyze", sku = %product_sku);
    let work = detached(judge(s, origin, image, product_sku)).instrument(span);
    let done = memory
        .spawn(work)
        .await
        .map_err(|e| ApiError::Internal(format!("analysis task: {e}")))??;
    Ok(Json(done))
}

/// The call's work as its detached task runs it: given up after [`TAKEOVER_AFTER`] (a worker
/// may take the job over then), and its error logged here, where the client may have left.
async fn detached(
    work: impl Future<Output = Result<Analysis, ApiError>>,
) -> Result<Analysis, ApiError> {
    let result = match tokio::time::timeout(TAKEOVER_AFTER, work).await {
        Ok(result) => result,
        Err(_) => {
            warn!(
                after_s = TAKEOVER_AFTER.as_secs(),
                "analysis given up: a worker takes its job over"
            );
            return Err(ApiError::RequestTimeout);
        }
    };
    if let Err(e) = &result {
        if e.status().is_server_error() {
            warn!(error = ?e, "analysis failed");
        } else {
            debug!(error = %e, "analysis refused");
        }
    }
    result
}

/// Decodes the image (one that does not decode is refused before anything is stored), records
/// the part, judges it and stores the result.
async fn judge(
    s: AppState,
    origin: Origin,
    image: Image,
    sku: String,
) -> Result<Analysis, ApiError> {
    let planes = s.analyzer.planes(&sku).await;
    let frame = analysis::Frame::decode(image.bytes.clone(), s.intake.limits, planes).await?;
    let (_, id) = s.intake.part(origin, image, TAKEOVER_AFTER).await?;
    let outcome = analysis::run(s.analyzer.as_ref(), &sku, frame).await;
    let done = s.store().complete(id, outcome).await?;
    s.outbox_wake.notify_one();
    Ok(done)
}

/// Longest accepted text field.
const MAX_FIELD_BYTES: usize = 256;

async fn read_form(multipart: &mut Multipart) -> Result<Form, ApiError> {
    let mut form = Form::default();
    while let Some(field) = multipart.next_field().await? {
        let name = field.name().unwrap_or("").to_string();
        if name == "image" {
            once(&name, &form.image)?;
            form.image = Some(field.bytes().await?);
            continue;
        }
        let slot = match name.as_str() {
            "product_sku" => &mut form.product_sku,
            "facility" => &mut form.facility,
            "line" => &mut form.line,
            "station" => &mut form.station,
            "part_id" => &mut form.part_id,
            _ => continue, // the prototype ignored extra fields
        };
        once(&name, slot)?;
        let text = field.text().await?;
        if text.len() > MAX_FIELD_BYTES {
            return Err(ApiError::bad(
                ErrorCode::InvalidField,
                format!("`{name}` is too long"),
            ));
        }
        *slot = Some(text);
    }
    Ok(form)
}

/// A field sent twice is refused (which one would count is anyone's guess).
pub(super) fn once<T>(name: &str, slot: &Option<T>) -> Result<(), ApiError> {
    match slot {
        Some(_) => Err(ApiError::bad(
            ErrorCode::InvalidMultipart,
            format!("the `{name}` part appears twice"),
        )),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_judgement_that_outlasts_the_takeover_time_is_given_up_then() {
        let started = tokio::time::Instant::now();
        let outcome = detached(std::future::pending()).await;
        assert!(
            matches!(outcome, Err(ApiError::RequestTimeout)),
            "{outcome:?}"
        );
        let waited = started.elapsed();
        assert!(
            waited >= TAKEOVER_AFTER && waited < TAKEOVER_AFTER + Duration::from_secs(1),
            "{waited:?}"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_judgement_that_ends_in_time_is_answered_as_it_ended() {
        let outcome = detached(async {
            tokio::time::sleep(TAKEOVER_AFTER - Duration::from_secs(1)).await;
            Err(ApiError::Internal("the work's own answer".into()))
        })
        .await;
        assert!(
            matches!(&outcome, Err(ApiError::Internal(m)) if m == "the work's own answer"),
            "{outcome:?}"
        );
    }
}
