//! `GET /health` (liveness, no key), `GET /ready` (database, image store, broker) and
//! `GET /metrics` (Prometheus text; needs a read key).

use std::sync::atomic::Ordering;

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde_json::json;

use super::AppState;
use super::auth::{Need, authorize};
use super::error::ApiError;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/health", get(health))
        .route("/ready", get(ready))
        .route("/metrics", get(metrics_text))
}

async fn health() -> Json<serde_json::Value> {
    Json(
        json!({"status": "healthy", "service": "wiko-cloud", "version": env!("CARGO_PKG_VERSION")}),
    )
}

async fn ready(State(s): State<AppState>) -> Response {
    let database = s.store.ping().await.is_ok();
    let images = s.blobs.ping().await.is_ok();
    let broker = s.broker_up.load(Ordering::Relaxed);
    let ok = database && images && broker;
    let body = json!({
        "status": if ok { "ready" } else { "not_ready" },
        "checks": {"database": database, "object_store": images, "broker": broker},
    });
    let status = if ok {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, Json(body)).into_response()
}

async fn metrics_text(State(s): State<AppState>, headers: HeaderMap) -> Result<Response, ApiError> {
    authorize(&s.keys, &headers, Need::Read)?;
    Ok((
        [("content-type", "text/plain; version=0.0.4")],
        crate::telemetry::prometheus().render(),
    )
        .into_response())
}
