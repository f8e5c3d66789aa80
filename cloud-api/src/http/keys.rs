//! API keys (admin):
//! - `POST /api/v1/keys`: a new key (`wiko_wire::NewKey`); `201` with the key, shown this
//!   once, and its info. A device key needs the facility it sends parts for.
//! - `GET /api/v1/keys`: every key, revoked ones included (never a secret).
//! - `DELETE /api/v1/keys/{prefix}`: revokes the key; every replica refuses it within a
//!   second. Rotation: create the new key, move the clients to it, revoke the old one.

use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::{delete, get};
use axum::{Json, Router};
use serde_json::json;
use wiko_wire::{CreatedKey, ErrorCode, KeyInfo, NewKey};

use super::AppState;
use super::caller::Caller;
use super::error::ApiError;
use crate::auth::{KeyError, Need, create_key};

pub(super) fn router() -> Router<AppState> {
    Router::new()
        .route("/api/v1/keys", get(list).post(create))
        .route("/api/v1/keys/{prefix}", delete(revoke))
}

#[utoipa::path(post, path = "/api/v1/keys", tag = "keys", request_body = wiko_wire::NewKey,
    responses((status = 201, description = "The key, shown this once", body = wiko_wire::CreatedKey)))]
pub(super) async fn create(
    State(s): State<AppState>,
    caller: Caller,
    body: Result<Json<NewKey>, JsonRejection>,
) -> Result<(StatusCode, Json<CreatedKey>), ApiError> {
    caller.may(Need::Admin)?;
    let Json(new) = body.map_err(|e| ApiError::bad(ErrorCode::InvalidBody, e.body_text()))?;
    let (key, stored) = create_key(s.store(), new).await.map_err(|e| match e {
        KeyError::Invalid(why) => ApiError::bad(ErrorCode::InvalidBody, why),
        KeyError::Store(e) => e.into(),
    })?;
    s.keyring.reload(s.store()).await?;
    let info = stored.info;
    caller.audit(
        "key_created",
        json!({"prefix": info.prefix, "name": info.name, "scope": info.scope.as_str(),
               "facility": info.facility, "device_id": info.device_id}),
    );
    Ok((StatusCode::CREATED, Json(CreatedKey { key, info })))
}

#[utoipa::path(get, path = "/api/v1/keys", tag = "keys",
    responses((status = 200, description = "Every key, without its secret", body = Vec<wiko_wire::KeyInfo>)))]
pub(super) async fn list(
    State(s): State<AppState>,
    caller: Caller,
) -> Result<Json<Vec<KeyInfo>>, ApiError> {
    caller.may(Need::Admin)?;
    let keys = s.store().keys().await?;
    Ok(Json(keys.into_iter().map(|k| k.info).collect()))
}

#[utoipa::path(delete, path = "/api/v1/keys/{prefix}", tag = "keys",
    params(("prefix" = String, Path, description = "The key's prefix")),
    responses(
        (status = 200, description = "Revoked", body = wiko_wire::KeyInfo),
        (status = 404, description = "No such key", body = wiko_wire::ErrorBody),
    ))]
pub(super) async fn revoke(
    State(s): State<AppState>,
    caller: Caller,
    Path(prefix): Path<String>,
) -> Result<Json<KeyInfo>, ApiError> {
    caller.may(Need::Admin)?;
    let revoked = s
        .store()
        .revoke_key(&prefix)
        .await?
        .ok_or(ApiError::NotFound("key"))?;
    s.keyring.reload(s.store()).await?;
    caller.audit(
        "key_revoked",
        json!({"prefix": prefix, "name": revoked.info.name}),
    );
    Ok(Json(revoked.info))
}
