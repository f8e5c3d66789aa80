//! The fleet:
//! - `POST /api/v1/heartbeats` (device): an agent's report on itself (`wiko_wire::Heartbeat`);
//!   the answer (`HeartbeatAck`) carries the commands left for it.
//! - `GET /api/v1/devices`, `GET /api/v1/devices/{device_id}` (viewer): each device with its
//!   last heartbeat, its age and the state derived from it (`crate::fleet`).
//! - `POST /api/v1/devices/{device_id}/dead-letters/{frame_id}/requeue` (admin): asks the
//!   agent to upload a dead letter again (delivered with its next heartbeat's answer).

use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Json, Router};
use chrono::Utc;
use serde_json::json;
use uuid::Uuid;
use wiko_wire::frame::validate_id;
use wiko_wire::{Device, DeviceAction, DeviceCommand, ErrorCode, Heartbeat, HeartbeatAck};

use super::AppState;
use super::caller::Caller;
use super::error::ApiError;
use crate::auth::Need;
use crate::fleet::describe;
use crate::telemetry;

pub(super) fn router() -> Router<AppState> {
    Router::new()
        .route("/api/v1/heartbeats", post(heartbeat))
        .route("/api/v1/devices", get(devices))
        .route("/api/v1/devices/{device_id}", get(device))
        .route(
            "/api/v1/devices/{device_id}/dead-letters/{frame_id}/requeue",
            post(requeue),
        )
}

#[utoipa::path(post, path = "/api/v1/heartbeats", tag = "fleet", request_body = wiko_wire::Heartbeat,
    responses(
        (status = 200, description = "Kept; the commands left for the device", body = wiko_wire::HeartbeatAck),
        (status = 400, description = "Not a heartbeat this server keeps", body = wiko_wire::ErrorBody),
    ))]
pub(super) async fn heartbeat(
    State(s): State<AppState>,
    caller: Caller,
    body: Result<Json<Heartbeat>, JsonRejection>,
) -> Result<Json<HeartbeatAck>, ApiError> {
    caller.may(Need::Ingest)?;
    let Json(hb) = body.map_err(|e| ApiError::bad(ErrorCode::InvalidBody, e.body_text()))?;
    hb.validate()
        .map_err(|e| ApiError::bad(ErrorCode::InvalidBody, e.to_string()))?;
    caller.may_send_for(&hb.facility, Some(&hb.device_id))?;
    let received_at = Utc::now();
    let commands = s.store().heartbeat(&hb, received_at).await?;
    metrics::counter!(telemetry::HEARTBEATS_TOTAL).increment(1);
    Ok(Json(HeartbeatAck {
        received_at,
        commands,
    }))
}

#[utoipa::path(get, path = "/api/v1/devices", tag = "fleet",
    responses((status = 200, description = "Every device seen, by id", body = Vec<wiko_wire::Device>)))]
pub(super) async fn devices(
    State(s): State<AppState>,
    caller: Caller,
) -> Result<Json<Vec<Device>>, ApiError> {
    caller.may(Need::Read)?;
    Ok(Json(every_device(&s).await?))
}

/// Every device seen, described as of now.
pub(crate) async fn every_device(s: &AppState) -> Result<Vec<Device>, ApiError> {
    let now = Utc::now();
    let records = s.store().devices().await?;
    Ok(records
        .into_iter()
        .map(|r| describe(r, now, &s.fleet))
        .collect())
}

#[utoipa::path(get, path = "/api/v1/devices/{device_id}", tag = "fleet",
    params(("device_id" = String, Path, description = "The device's id")),
    responses(
        (status = 200, description = "The device", body = wiko_wire::Device),
        (status = 404, description = "Never seen", body = wiko_wire::ErrorBody),
    ))]
pub(super) async fn device(
    State(s): State<AppState>,
    caller: Caller,
    Path(device_id): Path<String>,
) -> Result<Json<Device>, ApiError> {
    caller.may(Need::Read)?;
    let record = s
        .store()
        .device(&device_id)
        .await?
        .ok_or(ApiError::NotFound("device"))?;
    Ok(Json(describe(record, Utc::now(), &s.fleet)))
}

#[utoipa::path(post, path = "/api/v1/devices/{device_id}/dead-letters/{frame_id}/requeue",
    tag = "fleet",
    params(
        ("device_id" = String, Path, description = "The device's id"),
        ("frame_id" = String, Path, description = "The dead letter's frame id (a UUID)"),
    ),
    responses(
        (status = 202, description = "Left for the device's next heartbeat", body = wiko_wire::DeviceCommand),
        (status = 404, description = "Never seen", body = wiko_wire::ErrorBody),
    ))]
pub(super) async fn requeue(
    State(s): State<AppState>,
    caller: Caller,
    Path((device_id, frame_id)): Path<(String, String)>,
) -> Result<(StatusCode, Json<DeviceCommand>), ApiError> {
    let principal = caller.may(Need::Admin)?;
    validate_id("device_id", &device_id)
        .map_err(|e| ApiError::bad(ErrorCode::InvalidId, e.to_string()))?;
    let frame_id = Uuid::parse_str(&frame_id)
        .map_err(|_| ApiError::bad(ErrorCode::InvalidId, "the frame id is not a UUID"))?;
    if s.store().device(&device_id).await?.is_none() {
        return Err(ApiError::NotFound("device"));
    }
    let command = s
        .store()
        .add_command(
            &device_id,
            DeviceAction::Requeue { frame_id },
            &principal.name,
        )
        .await?;
    caller.audit(
        "dead_letter_requeued",
        json!({"device_id": device_id, "frame_id": frame_id, "command": command.id}),
    );
    Ok((StatusCode::ACCEPTED, Json(command)))
}
