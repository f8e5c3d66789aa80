//! `GET /api/v1/stats`: parts, NG and first-pass yield by group and time bucket, from the
//! hourly aggregates (`crate::stats`).

use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::routing::get;
use axum::{Json, Router};
use chrono::{DateTime, TimeDelta, Utc};
use serde::Deserialize;
use tracing::Instrument;
use wiko_wire::{ErrorCode, Stats, StatsBucket, StatsDimension};

use super::AppState;
use super::caller::Caller;
use super::error::ApiError;
use super::results::checked_filter;
use crate::auth::Need;
use crate::stats::{StatsRequest, stats};
use crate::store::StatsSource;

/// The range counted when `since` is not given.
const DEFAULT_RANGE: TimeDelta = TimeDelta::hours(24);

pub(super) fn router() -> Router<AppState> {
    Router::new().route("/api/v1/stats", get(get_stats))
}

/// The range, buckets, groups and filters (the listing's, but `feedback`).
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub(super) struct StatsParams {
    /// Capture time from (rounded down to the hour). Default: 24 hours before `until`.
    since: Option<DateTime<Utc>>,
    /// Capture time until (rounded up to the hour). Default: now.
    until: Option<DateTime<Utc>>,
    /// `hour`, `day` or `all` (default): one bucket for the range.
    #[param(value_type = Option<StatsBucket>)]
    bucket: Option<StatsBucket>,
    /// Days and shifts start in local time this many minutes from UTC (e.g. 480 for UTC+8).
    /// Default: the plant's (`[dashboard] utc_offset_minutes`).
    utc_offset_minutes: Option<i32>,
    /// Comma-separated: `facility`, `line`, `station`, `sku`, `device`, `defect_type`, `shift`
    /// (the plant's shifts, `[dashboard] shift_starts`; an hour counts in the shift it begins in).
    group_by: Option<String>,
    facility: Option<String>,
    line: Option<String>,
    station: Option<String>,
    #[serde(alias = "product_sku")]
    sku: Option<String>,
    device_id: Option<String>,
    defect_detected: Option<bool>,
    defect_type: Option<String>,
}

fn group_by(list: Option<&str>) -> Result<Vec<StatsDimension>, ApiError> {
    let mut dims = Vec::new();
    for name in list
        .unwrap_or("")
        .split(',')
        .map(str::trim)
        .filter(|n| !n.is_empty())
    {
        let d = StatsDimension::parse(name).ok_or_else(|| {
            ApiError::bad(
                ErrorCode::InvalidQuery,
                format!("unknown group_by {name:?}"),
            )
        })?;
        if !dims.contains(&d) {
            dims.push(d);
        }
    }
    Ok(dims)
}

#[utoipa::path(get, path = "/api/v1/stats", tag = "results", params(StatsParams),
    responses((status = 200, description = "Rows by bucket and group, and the range's totals", body = wiko_wire::Stats)))]
pub(super) async fn get_stats(
    State(s): State<AppState>,
    caller: Caller,
    query: Result<Query<StatsParams>, QueryRejection>,
) -> Result<Json<Stats>, ApiError> {
    caller.may(Need::Read)?;
    let Query(q) = query.map_err(|e| ApiError::bad(ErrorCode::InvalidQuery, e.body_text()))?;
    let filter = checked_filter(
        [q.facility, q.line, q.station, q.sku, q.device_id],
        q.defect_detected,
        q.defect_type,
    )?;
    let until = q.until.unwrap_or_else(Utc::now);
    let request = StatsRequest {
        since: q.since.unwrap_or(until - DEFAULT_RANGE),
        until,
        bucket: q.bucket.unwrap_or_default(),
        utc_offset_minutes: q.utc_offset_minutes.unwrap_or(s.plant.utc_offset_minutes),
        filter,
        group_by: group_by(q.group_by.as_deref())?,
        shift_starts: s.plant.shift_starts.clone(),
    };
    Ok(Json(answer(&s, &request).await?))
}

/// The statistics of a checked request, from the hourly aggregates (the dashboard's Overview
/// asks the same way).
pub(crate) async fn answer(s: &AppState, request: &StatsRequest) -> Result<Stats, ApiError> {
    let span =
        tracing::info_span!("stats", bucket = ?request.bucket, groups = request.group_by.len());
    let started = std::time::Instant::now();
    let answer = stats(s.store(), request, StatsSource::Aggregates)
        .instrument(span)
        .await?
        .map_err(|refused| ApiError::bad(ErrorCode::InvalidQuery, refused.to_string()))?;
    metrics::histogram!(crate::telemetry::STATS_SECONDS).record(started.elapsed().as_secs_f64());
    Ok(answer)
}
