//! The agent's local HTTP endpoints: `GET /healthz` (JSON status) and `GET /metrics`.
//! `/healthz` says `degraded`, with its reasons, while the buffer's disk is under its
//! watermark, captures fail to be buffered, or acknowledged frames cannot be deleted.

use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use chrono::Utc;
use wiko_wire::{AgentHealth, BufferHealth, ErrorBody, ErrorCode};

use crate::buffer::{Buffer, Stats};
use crate::telemetry as names;
use wiko_daemon::telemetry::prometheus;

pub fn router(buffer: Arc<Buffer>) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/metrics", get(metrics_text))
        .with_state(buffer)
}

async fn stats(buffer: Arc<Buffer>) -> Option<Stats> {
    tokio::task::spawn_blocking(move || buffer.stats())
        .await
        .ok()?
        .ok()
}

/// Why the agent is degraded (checks the free space again); also sets the gauges.
async fn degraded(buffer: Arc<Buffer>) -> Vec<String> {
    let reasons = tokio::task::spawn_blocking(move || {
        let reasons = buffer.degraded();
        if let Ok(free) = buffer.faults().free_bytes() {
            metrics::gauge!(names::BUFFER_DISK_FREE_BYTES).set(free as f64);
        }
        reasons
    })
    .await
    .unwrap_or_else(|e| vec![format!("buffer_unavailable: {e}")]);
    metrics::gauge!(names::DEGRADED).set(if reasons.is_empty() { 0.0 } else { 1.0 });
    reasons
}

async fn healthz(State(buffer): State<Arc<Buffer>>) -> Response {
    let reasons = degraded(buffer.clone()).await;
    match stats(buffer).await {
        Some(s) => Json(AgentHealth {
            status: if reasons.is_empty() {
                "healthy"
            } else {
                "degraded"
            }
            .into(),
            version: env!("CARGO_PKG_VERSION").into(),
            buffer: buffer_health(s),
            reasons,
        })
        .into_response(),
        None => (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(ErrorBody::new(
                ErrorCode::BufferUnavailable,
                "the frame buffer cannot be read",
            )),
        )
            .into_response(),
    }
}

/// The buffer as `/healthz` and heartbeats report it.
pub(crate) fn buffer_health(s: Stats) -> BufferHealth {
    BufferHealth {
        frames: s.frames,
        bytes: s.bytes,
        oldest_unsynced_seconds: oldest_age(&s),
        dead_letters: s.dead_letters,
        evicted_total: s.evicted_total,
        by_camera: s.by_camera.into_iter().collect(),
    }
}

fn oldest_age(s: &Stats) -> f64 {
    s.oldest_captured_at
        .map(|t| (Utc::now() - t).num_milliseconds().max(0) as f64 / 1000.0)
        .unwrap_or(0.0)
}

async fn metrics_text(State(buffer): State<Arc<Buffer>>) -> Response {
    degraded(buffer.clone()).await;
    if let Some(s) = stats(buffer).await {
        metrics::gauge!(names::BUFFER_FRAMES).set(s.frames as f64);
        for (camera, frames) in &s.by_camera {
            metrics::gauge!(names::BUFFER_CAMERA_FRAMES, "camera" => camera.clone())
                .set(*frames as f64);
        }
        metrics::gauge!(names::BUFFER_BYTES).set(s.bytes as f64);
        metrics::gauge!(names::BUFFER_OLDEST_UNSYNCED_SECONDS).set(oldest_age(&s));
        metrics::gauge!(names::DEAD_LETTERS).set(s.dead_letters as f64);
    }
    (
        [("content-type", "text/plain; version=0.0.4")],
        prometheus().render(),
    )
        .into_response()
}
