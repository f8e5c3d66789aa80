//! API keys from the store: created and revoked by an admin, bound to a facility and a device,
//! refused at once when revoked, and every refusal and admin action audited.

use std::time::Duration;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use serde_json::{Value, json};
use uuid::Uuid;
use wiko_cloud::store::AuditEntry;

use crate::harness::*;

/// A frame of `facility` from `device`, uploaded with `key`.
async fn ingest(h: &Harness, key: &str, facility: &str, device: &str) -> (StatusCode, Value) {
    let image = jpeg();
    let id = Uuid::now_v7();
    let mut m = meta(id, &image);
    m.facility = facility.into();
    m.device_id = device.into();
    put_frame(h, &id.to_string(), Some(key), frame_body(&m, &image)).await
}

/// The audit log's newest entries once they are written (the writer batches).
async fn audit(h: &Harness, wanted: &[&str]) -> Vec<AuditEntry> {
    let store = &h.state.intake.storage.records;
    for _ in 0..50 {
        let log = store.audit_log(100).await.unwrap();
        if wanted.iter().all(|w| {
            log.iter()
                .any(|e| e.action == *w || e.detail["reason"] == *w)
        }) {
            return log;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("the audit log lacks {wanted:?}");
}

#[tokio::test]
async fn a_stored_key_works_for_its_own_facility_and_device_until_revoked() {
    let h = harness().await;
    let new =
        json!({"name": "line1-pc", "scope": "device", "facility": "yangjiang", "device_id": "pc1"});
    let (status, body) = post_json(&h, "/api/v1/keys", VIEWER, new.clone()).await;
    assert_eq!((status, code(&body)), (StatusCode::FORBIDDEN, "forbidden"));
    let unbound = json!({"name": "x", "scope": "device"});
    let (status, body) = post_json(&h, "/api/v1/keys", ADMIN, unbound).await;
    assert_eq!(
        (status, code(&body)),
        (StatusCode::BAD_REQUEST, "invalid_body"),
        "{body}"
    );
    let (status, body) = post_json(&h, "/api/v1/keys", ADMIN, json!({"scope": 3})).await;
    assert_eq!(
        (status, code(&body)),
        (StatusCode::BAD_REQUEST, "invalid_body"),
        "{body}"
    );

    let (status, created) = post_json(&h, "/api/v1/keys", ADMIN, new).await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    let key = created["key"].as_str().unwrap().to_string();
    let prefix = created["info"]["prefix"].as_str().unwrap().to_string();
    assert!(key.starts_with(&format!("wk_{prefix}_")), "{key}");

    assert_eq!(
        ingest(&h, &key, "yangjiang", "pc1").await.0,
        StatusCode::CREATED
    );
    let (status, body) = ingest(&h, &key, "elsewhere", "pc1").await;
    assert_eq!(
        (status, code(&body)),
        (StatusCode::FORBIDDEN, "forbidden"),
        "{body}"
    );
    let (status, _) = ingest(&h, &key, "yangjiang", "pc2").await;
    assert_eq!(status, StatusCode::FORBIDDEN, "bound to pc1");

    // Listed without its secret; its last use is recorded.
    h.state
        .keyring
        .reload(h.state.intake.storage.records.as_ref())
        .await
        .unwrap();
    let (status, list) = call(&h, "GET", "/api/v1/keys", ADMIN).await;
    assert_eq!(status, StatusCode::OK, "{list}");
    let listed = &list.as_array().unwrap()[0];
    assert_eq!(listed["prefix"], prefix.as_str());
    assert!(listed["last_used_at"].is_string(), "{listed}");
    assert!(!list.to_string().contains(&key), "no secret in a listing");

    let (status, revoked) = call(&h, "DELETE", &format!("/api/v1/keys/{prefix}"), ADMIN).await;
    assert_eq!(status, StatusCode::OK, "{revoked}");
    assert!(revoked["revoked_at"].is_string());
    let (status, body) = ingest(&h, &key, "yangjiang", "pc1").await;
    assert_eq!(
        (status, code(&body)),
        (StatusCode::UNAUTHORIZED, "unauthorized")
    );
    let (status, _) = call(&h, "DELETE", "/api/v1/keys/0000ffff", ADMIN).await;
    assert_eq!(status, StatusCode::NOT_FOUND);

    let log = audit(&h, &["key_created", "key_revoked", "revoked", "binding"]).await;
    let failed: Vec<&AuditEntry> = log.iter().filter(|e| e.action == "auth_failed").collect();
    assert!(
        failed
            .iter()
            .any(|e| e.detail["key_prefix"] == prefix.as_str()
                && e.detail["route"] == "/api/v1/frames/{frame_id}"),
        "{failed:?}"
    );
}

#[tokio::test]
async fn a_missing_key_and_a_wrong_scope_are_audited_too() {
    let h = harness().await;
    let req = Request::get("/api/v1/analyses")
        .body(Body::empty())
        .unwrap();
    assert_eq!(request(&h, req).await.0, StatusCode::UNAUTHORIZED);
    assert_eq!(
        call(&h, "GET", "/api/v1/analyses", DEVICE).await.0,
        StatusCode::FORBIDDEN
    );
    let log = audit(&h, &["missing", "scope"]).await;
    let scope = log.iter().find(|e| e.detail["reason"] == "scope").unwrap();
    assert_eq!(
        (scope.actor.as_str(), scope.detail["method"].as_str()),
        ("d", Some("GET"))
    );
}
