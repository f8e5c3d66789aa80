//! `GET /health` (liveness, no key), `GET /ready` (database, image store, broker) and
//! `GET /metrics` (Prometheus text; needs a read key).

use std::sync::atomic::Ordering;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use wiko_wire::{Health, Readiness, ReadinessChecks};

use super::AppState;
use super::caller::Caller;
use super::error::ApiError;
use crate::auth::Need;

pub(super) fn router() -> Router<AppState> {
    Router::new()
        .route("/health", get(health))
        .route("/ready", get(ready))
        .route("/metrics", get(metrics_text))
}

#[utoipa::path(get, path = "/health", tag = "health", security(()),
    responses((status = 200, description = "The process answers", body = wiko_wire::Health)))]
pub(super) async fn health() -> Json<Health> {
    Json(Health {
        status: "healthy".into(),
        service: "wiko-cloud".into(),
        version: env!("CARGO_PKG_VERSION").into(),
    })
}

#[utoipa::path(get, path = "/ready", tag = "health", security(()),
    responses(
        (status = 200, description = "Database, image store and broker answer", body = wiko_wire::Readiness),
        (status = 503, description = "A dependency does not answer", body = wiko_wire::Readiness),
    ))]
pub(super) async fn ready(State(s): State<AppState>) -> Response {
    let checks = ReadinessChecks {
        database: s.store().ping().await.is_ok(),
        object_store: s.intake.storage.images.ping().await.is_ok(),
        broker: s.broker_up.load(Ordering::Relaxed),
    };
    let ok = checks.database && checks.object_store && checks.broker;
    let body = Readiness {
        status: if ok { "ready" } else { "not_ready" }.into(),
        checks,
    };
    let status = if ok {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, Json(body)).into_response()
}

#[utoipa::path(get, path = "/metrics", tag = "health",
    responses((status = 200, description = "Prometheus text", content_type = "text/plain", body = String)))]
pub(super) async fn metrics_text(caller: Caller) -> Result<Response, ApiError> {
    caller.may(Need::Read)?;
    Ok((
        [("content-type", "text/plain; version=0.0.4")],
        wiko_daemon::telemetry::prometheus().render(),
    )
        .into_response())
}
