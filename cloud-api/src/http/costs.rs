//! `GET /api/v1/costs`: what the remote analyzer cost, per UTC day, analyzer, facility and
//! SKU, with the parts sent, failures and disagreements with the gate.

use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::routing::get;
use axum::{Json, Router};
use chrono::{NaiveDate, Utc};
use serde::Deserialize;
use wiko_wire::frame::validate_id;
use wiko_wire::{Costs, ErrorCode};

use super::AppState;
use super::caller::Caller;
use super::error::ApiError;
use crate::auth::Need;
use crate::store::CostFilter;

/// Days listed when `since` is not given.
const DEFAULT_DAYS: i64 = 30;

pub(super) fn router() -> Router<AppState> {
    Router::new().route("/api/v1/costs", get(costs))
}

/// Which days, facility and SKU; days are UTC and inclusive.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub(super) struct CostQuery {
    /// First day, `YYYY-MM-DD`. Default: 29 days before `until`.
    since: Option<NaiveDate>,
    /// Last day, `YYYY-MM-DD`. Default: today.
    until: Option<NaiveDate>,
    facility: Option<String>,
    #[serde(alias = "product_sku")]
    sku: Option<String>,
}

#[utoipa::path(get, path = "/api/v1/costs", tag = "results", params(CostQuery),
    responses((status = 200, description = "Rows by day, analyzer, facility and SKU, and their total", body = wiko_wire::Costs)))]
pub(super) async fn costs(
    State(s): State<AppState>,
    caller: Caller,
    query: Result<Query<CostQuery>, QueryRejection>,
) -> Result<Json<Costs>, ApiError> {
    caller.may(Need::Read)?;
    let Query(q) = query.map_err(|e| ApiError::bad(ErrorCode::InvalidQuery, e.body_text()))?;
    for (name, value) in [("facility", &q.facility), ("sku", &q.sku)] {
        if let Some(v) = value {
            validate_id(name, v)
                .map_err(|e| ApiError::bad(ErrorCode::InvalidQuery, e.to_string()))?;
        }
    }
    let until = q.until.unwrap_or_else(|| Utc::now().date_naive());
    let since = q
        .since
        .unwrap_or_else(|| until - chrono::Duration::days(DEFAULT_DAYS - 1));
    if since > until {
        return Err(ApiError::bad(
            ErrorCode::InvalidQuery,
            "since is after until",
        ));
    }
    let day = |d: NaiveDate| d.and_time(chrono::NaiveTime::MIN).and_utc();
    let rows = s
        .store()
        .costs(&CostFilter {
            since: day(since),
            until: day(until),
            facility: q.facility,
            product_sku: q.sku,
        })
        .await?;
    let total_cost_usd: f64 = rows.iter().map(|r| r.cost_usd).sum();
    let parts: u64 = rows.iter().map(|r| r.parts).sum();
    Ok(Json(Costs {
        cost_per_part_usd: (parts > 0).then(|| total_cost_usd / parts as f64),
        total_cost_usd,
        rows,
    }))
}
