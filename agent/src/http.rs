//! The agent's local HTTP endpoints: `GET /healthz` (JSON status: the buffer and each camera),
//! `GET /metrics`, and `POST /trigger/{camera}` for cameras with an `http` trigger (`POST
//! /trigger` when there is exactly one). `/healthz` says `degraded`, with its reasons, while
//! the buffer's disk is under its watermark, captures fail to be buffered, acknowledged
//! frames cannot be deleted, or NG frames nobody has alerted yet take over half the buffer.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use chrono::Utc;
use tokio::sync::oneshot;
use wiko_wire::{
    AgentHealth, BufferHealth, ErrorBody, ErrorCode, TriggerAck, TriggerOutcome, TriggerRequest,
};

use crate::buffer::{Buffer, Stats};
use crate::source::health::Registry;
use crate::telemetry as names;
use crate::trigger::{ANSWER_DEADLINE, Station, Trigger};
use wiko_daemon::telemetry::prometheus;

/// What the handlers share.
#[derive(Clone)]
pub struct AppState {
    pub buffer: Arc<Buffer>,
    pub health: Arc<Registry>,
    /// Cameras with an `http` trigger, by name.
    pub stations: Arc<BTreeMap<String, Arc<Station>>>,
}

pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/metrics", get(metrics_text))
        .route("/trigger", post(trigger_only))
        .route("/trigger/{camera}", post(trigger))
        .with_state(state)
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

async fn healthz(State(state): State<AppState>) -> Response {
    let reasons = degraded(state.buffer.clone()).await;
    match stats(state.buffer).await {
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
            cameras: state.health.snapshot(),
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
        alerts_queued: s.alerts_queued,
        alerts_dropped_total: s.alerts_dropped_total,
        unalerted_frames: s.unalerted_frames,
        unalerted_bytes: s.unalerted_bytes,
    }
}

fn oldest_age(s: &Stats) -> f64 {
    s.oldest_captured_at
        .map(|t| (Utc::now() - t).num_milliseconds().max(0) as f64 / 1000.0)
        .unwrap_or(0.0)
}

async fn metrics_text(State(state): State<AppState>) -> Response {
    degraded(state.buffer.clone()).await;
    if let Some(s) = stats(state.buffer).await {
        metrics::gauge!(names::BUFFER_FRAMES).set(s.frames as f64);
        for (camera, frames) in &s.by_camera {
            metrics::gauge!(names::BUFFER_CAMERA_FRAMES, "camera" => camera.clone())
                .set(*frames as f64);
        }
        metrics::gauge!(names::BUFFER_BYTES).set(s.bytes as f64);
        metrics::gauge!(names::BUFFER_OLDEST_UNSYNCED_SECONDS).set(oldest_age(&s));
        metrics::gauge!(names::DEAD_LETTERS).set(s.dead_letters as f64);
        metrics::gauge!(names::BUFFER_UNALERTED_FRAMES).set(s.unalerted_frames as f64);
        metrics::gauge!(names::BUFFER_UNALERTED_BYTES).set(s.unalerted_bytes as f64);
    }
    state.health.export_gauges();
    (
        [("content-type", "text/plain; version=0.0.4")],
        prometheus().render(),
    )
        .into_response()
}

/// `POST /trigger`: the one camera with an `http` trigger.
async fn trigger_only(State(state): State<AppState>, body: Bytes) -> Response {
    let mut stations = state.stations.values();
    match (stations.next(), stations.next()) {
        (Some(station), None) => fire(station, &body).await,
        _ => (
            StatusCode::NOT_FOUND,
            Json(ErrorBody::new(
                ErrorCode::NotFound,
                "name the camera: POST /trigger/{camera} (not exactly one camera has an http trigger)",
            )),
        )
            .into_response(),
    }
}

/// `POST /trigger/{camera}`: one part, answered once it is buffered (or why not).
async fn trigger(
    State(state): State<AppState>,
    Path(camera): Path<String>,
    body: Bytes,
) -> Response {
    match state.stations.get(&camera) {
        Some(station) => fire(station, &body).await,
        None => (
            StatusCode::NOT_FOUND,
            Json(ErrorBody::new(
                ErrorCode::NotFound,
                "no camera of that name has an http trigger",
            )),
        )
            .into_response(),
    }
}

async fn fire(station: &Station, body: &[u8]) -> Response {
    let request = if body.iter().all(u8::is_ascii_whitespace) {
        TriggerRequest::default()
    } else {
        match serde_json::from_slice::<TriggerRequest>(body) {
            Ok(request) => request,
            Err(e) => {
                return answer(TriggerAck {
                    request_id: None,
                    camera: station.camera().to_string(),
                    outcome: TriggerOutcome::Invalid,
                    frame_id: None,
                    reason: Some(format!("not a trigger request: {e}")),
                    defect_detected: None,
                });
            }
        }
    };
    let request_id = request.request_id.clone();
    let (tx, rx) = oneshot::channel();
    station.fire(Trigger::new("http", request, Some(tx)));
    let ack = match tokio::time::timeout(ANSWER_DEADLINE, rx).await {
        Ok(Ok(ack)) => ack,
        _ => TriggerAck {
            request_id,
            camera: station.camera().to_string(),
            outcome: TriggerOutcome::CameraFailed,
            frame_id: None,
            reason: Some("no answer from the camera".into()),
            defect_detected: None,
        },
    };
    answer(ack)
}

fn answer(ack: TriggerAck) -> Response {
    let status = match ack.outcome {
        TriggerOutcome::Captured => StatusCode::OK,
        TriggerOutcome::Busy => StatusCode::CONFLICT,
        TriggerOutcome::Invalid => StatusCode::BAD_REQUEST,
        TriggerOutcome::CameraFailed | TriggerOutcome::NotStored => StatusCode::SERVICE_UNAVAILABLE,
    };
    (status, Json(ack)).into_response()
}
