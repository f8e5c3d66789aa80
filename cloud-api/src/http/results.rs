//! Results: `GET /api/v1/analyses` (filters, cursor paging), `GET /api/v1/analyses/export`
//! (the same filters, every page as one CSV, streamed), `GET /api/v1/analyses/{id}`,
//! `GET /api/v1/analyses/{id}/image`, `GET /api/v1/analyses/{id}/thumbnail`.

use axum::body::Body;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use chrono::{DateTime, Utc};
use futures::TryStreamExt;
use serde::Deserialize;
use uuid::Uuid;
use wiko_wire::frame::validate_id;
use wiko_wire::{Analysis, ErrorCode, FeedbackVerdict, Page};

use super::AppState;
use super::caller::Caller;
use super::error::ApiError;
use super::image;
use crate::auth::Need;
use crate::export::Export;
use crate::store::{FeedbackFilter, ListFilter, Store, StoreError};

const DEFAULT_LIMIT: usize = 50;
const MAX_LIMIT: usize = 500;

pub(super) fn router() -> Router<AppState> {
    Router::new()
        .route("/api/v1/analyses", get(list))
        .route("/api/v1/analyses/export", get(export))
        .route("/api/v1/analyses/{id}", get(one))
        .route("/api/v1/analyses/{id}/image", get(image))
        .route("/api/v1/analyses/{id}/thumbnail", get(thumbnail))
}

/// Filters and paging of the results listing.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub(crate) struct ListQuery {
    facility: Option<String>,
    line: Option<String>,
    station: Option<String>,
    #[serde(alias = "product_sku")]
    sku: Option<String>,
    device_id: Option<String>,
    defect_detected: Option<bool>,
    defect_type: Option<String>,
    /// The latest review: a verdict (`confirmed`, `false_ng`, `false_ok`, `inconclusive`),
    /// `none` (not reviewed) or `any`.
    feedback: Option<String>,
    since: Option<DateTime<Utc>>,
    until: Option<DateTime<Utc>>,
    cursor: Option<String>,
    limit: Option<usize>,
}

#[utoipa::path(get, path = "/api/v1/analyses", tag = "results", params(ListQuery),
    responses((status = 200, description = "Newest first; `next_cursor` for the next page", body = wiko_wire::Page<wiko_wire::Analysis>)))]
pub(super) async fn list(
    State(s): State<AppState>,
    caller: Caller,
    query: Result<Query<ListQuery>, QueryRejection>,
) -> Result<Json<Page<Analysis>>, ApiError> {
    caller.may(Need::Read)?;
    let Query(q) = query.map_err(|e| ApiError::bad(ErrorCode::InvalidQuery, e.body_text()))?;
    Ok(Json(q.page(s.store()).await?))
}

impl ListQuery {
    /// The page of results this query asks for, its filters checked (the dashboard's results
    /// page asks the same way).
    pub(crate) async fn page(self, store: &dyn Store) -> Result<Page<Analysis>, ApiError> {
        let limit = self.limit.unwrap_or(DEFAULT_LIMIT).clamp(1, MAX_LIMIT);
        let cursor = self.cursor.clone();
        let filter = self.filter()?;
        let (items, next_cursor) = store.list(&filter, cursor.as_deref(), limit).await?;
        Ok(Page { items, next_cursor })
    }

    /// The CSV export this query asks for: its filters checked, from after its cursor, at
    /// most `limit` rows (default every row).
    pub(crate) fn export(self) -> Result<Export, ApiError> {
        let (cursor, limit) = (self.cursor.clone(), self.limit);
        if let Some(c) = &cursor {
            // A cursor that does not decode is refused before the status line is sent.
            crate::store::check_cursor(c)?;
        }
        Ok(Export {
            filter: self.filter()?,
            cursor,
            limit,
        })
    }

    /// The store's filter, checked.
    fn filter(self) -> Result<ListFilter, ApiError> {
        let q = self;
        Ok(ListFilter {
            since: q.since,
            until: q.until,
            feedback: q.feedback.as_deref().map(feedback_filter).transpose()?,
            ..checked_filter(
                [q.facility, q.line, q.station, q.sku, q.device_id],
                q.defect_detected,
                q.defect_type,
            )?
        })
    }
}

#[utoipa::path(get, path = "/api/v1/analyses/export", tag = "results", params(ListQuery),
    responses(
        (status = 200, description = "Every result the filters select, newest first, as CSV with a header row; `cursor` starts after a listing's page, `limit` caps the rows (default all)", content_type = "text/csv", body = String),
        (status = 400, description = "A filter or the cursor is invalid", body = wiko_wire::ErrorBody),
    ))]
pub(super) async fn export(
    State(s): State<AppState>,
    caller: Caller,
    query: Result<Query<ListQuery>, QueryRejection>,
) -> Result<Response, ApiError> {
    caller.may(Need::Read)?;
    let Query(q) = query.map_err(|e| ApiError::bad(ErrorCode::InvalidQuery, e.body_text()))?;
    Ok(csv_response(&s, q.export()?))
}

/// The streamed CSV of `export` as a download (the dashboard's link answers the same way).
pub(crate) fn csv_response(s: &AppState, export: Export) -> Response {
    tracing::info!(filter = ?export.filter, "CSV export");
    let stream = crate::export::csv_stream(s.intake.storage.records.clone(), export)
        .inspect_err(|e| tracing::warn!(error = %e, "CSV export ended early"));
    let file = format!(
        "attachment; filename=\"results-{}.csv\"",
        Utc::now().format("%Y%m%dT%H%M%SZ")
    );
    (
        [
            (header::CONTENT_TYPE, "text/csv; charset=utf-8".to_string()),
            (header::CONTENT_DISPOSITION, file),
        ],
        Body::from_stream(stream),
    )
        .into_response()
}

/// The listing's filters by place, verdict and defect type, checked: identifiers as a frame's,
/// a known defect type.
pub(crate) fn checked_filter(
    [facility, line, station, sku, device_id]: [Option<String>; 5],
    defect_detected: Option<bool>,
    defect_type: Option<String>,
) -> Result<ListFilter, ApiError> {
    for (name, value) in [
        ("facility", &facility),
        ("line", &line),
        ("station", &station),
        ("sku", &sku),
        ("device_id", &device_id),
    ] {
        if let Some(v) = value {
            validate_id(name, v)
                .map_err(|e| ApiError::bad(ErrorCode::InvalidQuery, e.to_string()))?;
        }
    }
    if let Some(t) = &defect_type
        && wiko_wire::DefectType::parse(t).is_none()
    {
        return Err(ApiError::bad(
            ErrorCode::InvalidQuery,
            format!("unknown defect_type {t:?}"),
        ));
    }
    Ok(ListFilter {
        facility,
        line,
        station,
        product_sku: sku,
        device_id,
        defect_detected,
        defect_type,
        ..ListFilter::default()
    })
}

fn feedback_filter(name: &str) -> Result<FeedbackFilter, ApiError> {
    match name {
        "none" => Ok(FeedbackFilter::None),
        "any" => Ok(FeedbackFilter::Any),
        _ => FeedbackVerdict::parse(name)
            .map(FeedbackFilter::Is)
            .ok_or_else(|| {
                ApiError::bad(
                    ErrorCode::InvalidQuery,
                    format!("unknown feedback {name:?}"),
                )
            }),
    }
}

pub(crate) fn parse_id(id: &str) -> Result<Uuid, ApiError> {
    Uuid::parse_str(id).map_err(|_| ApiError::bad(ErrorCode::InvalidId, "the id is not a UUID"))
}

pub(crate) fn not_found(e: StoreError) -> ApiError {
    match e {
        StoreError::NotFound => ApiError::NotFound("analysis"),
        other => other.into(),
    }
}

#[utoipa::path(get, path = "/api/v1/analyses/{id}", tag = "results",
    params(("id" = uuid::Uuid, Path, description = "The analysis id")),
    responses(
        (status = 200, description = "One analysis", body = wiko_wire::Analysis),
        (status = 404, description = "No such analysis", body = wiko_wire::ErrorBody),
    ))]
pub(super) async fn one(
    State(s): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<Analysis>, ApiError> {
    caller.may(Need::Read)?;
    Ok(Json(
        s.store().get(parse_id(&id)?).await.map_err(not_found)?,
    ))
}

#[utoipa::path(get, path = "/api/v1/analyses/{id}/image", tag = "results",
    params(("id" = uuid::Uuid, Path, description = "The analysis id")),
    responses(
        (status = 200, description = "The image as uploaded", content_type = "image/*", body = Vec<u8>),
        (status = 404, description = "No such analysis", body = wiko_wire::ErrorBody),
    ))]
pub(super) async fn image(
    State(s): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    caller.may(Need::Read)?;
    let bytes = s
        .intake
        .storage
        .part_image(parse_id(&id)?)
        .await
        .map_err(not_found)?;
    Ok(image::stored(bytes))
}

#[utoipa::path(get, path = "/api/v1/analyses/{id}/thumbnail", tag = "results",
    params(("id" = uuid::Uuid, Path, description = "The analysis id")),
    responses(
        (status = 200, description = "A JPEG of the image, at most 320 px on its long side", content_type = "image/jpeg", body = Vec<u8>),
        (status = 404, description = "No such analysis", body = wiko_wire::ErrorBody),
    ))]
pub(super) async fn thumbnail(
    State(s): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    caller.may(Need::Read)?;
    let id = parse_id(&id)?;
    let i = &s.intake;
    let bytes = crate::thumbnail::thumbnail(&i.storage, &i.budget, i.limits, id).await?;
    Ok(image::stored(bytes))
}
