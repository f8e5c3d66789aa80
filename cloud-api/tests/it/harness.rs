//! The harness every topic file shares: a cloud over a [`Place`] (built by the same
//! `AppState::new` as `wiko-cloud serve`), synthetic parts, and requests through
//! `app(state).oneshot(…)`.

use std::sync::Arc;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use http_body_util::BodyExt;
use serde_json::Value;
use tower::ServiceExt;
use uuid::Uuid;
use wiko_cloud::config::Config;
use wiko_cloud::store::Storage;
use wiko_cloud::{AppState, app};
use wiko_synth::{self as synthetic, SynthDefect};
use wiko_wire::FrameMeta;

use crate::backend::Place;

pub const DEVICE: &str = "it-device-key-000000001";
pub const VIEWER: &str = "it-viewer-key-000000001";
pub const ADMIN: &str = "it-admin-key-0000000001";
pub const BOUNDARY: &str = "XwikoBoundaryX";
pub const MAX_BODY: usize = 2 * 1024 * 1024;

pub struct Harness {
    pub state: AppState,
    pub place: Arc<Place>,
}

pub async fn harness() -> Harness {
    started_in(Arc::new(Place::new().await)).await
}

/// A cloud whose data lives in `place` (a second call is a restart).
pub async fn started_in(place: Arc<Place>) -> Harness {
    let storage = place.open().await;
    Harness {
        state: state_of(storage).await,
        place,
    }
}

/// A cloud with `tables` (TOML, e.g. `[remote]`) added to the test configuration.
pub async fn harness_with(tables: &str) -> Harness {
    started_with(Arc::new(Place::new().await), tables).await
}

/// A cloud over `place` with `tables` added (a second call is a second replica).
pub async fn started_with(place: Arc<Place>, tables: &str) -> Harness {
    let storage = place.open().await;
    started_over(storage, place, tables).await
}

/// A cloud with `tables` added over `storage`: `place`'s, as the test wraps it.
pub async fn started_over(storage: Storage, place: Arc<Place>, tables: &str) -> Harness {
    let _ = tracing_subscriber::fmt().with_test_writer().try_init();
    Harness {
        state: AppState::new(&config(tables), storage).await,
        place,
    }
}

/// The test cloud's configuration: three keys, a small body limit, no MQTT; `tables` added.
fn config(tables: &str) -> Config {
    Config::from_toml(&format!(
        r#"
max_body_bytes = {MAX_BODY}
max_concurrent_requests = 8
max_image_pixels = 4000000
[mqtt]
disabled = true
[[auth.keys]]
name = "d"
scope = "device"
key = "{DEVICE}"
[[auth.keys]]
name = "v"
scope = "viewer"
key = "{VIEWER}"
[[auth.keys]]
name = "a"
scope = "admin"
key = "{ADMIN}"
{tables}
"#
    ))
    .unwrap()
}

/// The API over this storage, as `wiko-cloud serve` builds it.
pub async fn state_of(storage: Storage) -> AppState {
    // Logs of a failing test are shown with its output.
    let _ = tracing_subscriber::fmt().with_test_writer().try_init();
    AppState::new(&config(""), storage).await
}

pub fn jpeg() -> Vec<u8> {
    part_jpeg(None, 1)
}

/// A chef's knife from the synthetic camera, with a painted defect or none.
pub fn part_jpeg(defect: Option<SynthDefect>, seed: u64) -> Vec<u8> {
    let part = synthetic::render(&synthetic::SHAPES[0], defect, seed);
    synthetic::part_jpeg(&part).unwrap()
}

pub fn meta(frame_id: Uuid, image: &[u8]) -> FrameMeta {
    FrameMeta {
        frame_id,
        device_id: "pc1".into(),
        facility: "yangjiang".into(),
        line: "l1".into(),
        station: "grinding".into(),
        sku: "WK-KN-200".into(),
        part_id: None,
        lot: None,
        captured_at: chrono::Utc::now(),
        seq: 1,
        image_blake3: wiko_wire::frame::image_digest(image),
        edge: None,
    }
}

/// A multipart body from (name, content type, bytes) parts.
pub fn multipart(parts: &[(&str, &str, &[u8])]) -> Vec<u8> {
    let mut body = Vec::new();
    for (name, ctype, bytes) in parts {
        body.extend_from_slice(
            format!("--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"{name}\"").as_bytes(),
        );
        if *name == "image" {
            body.extend_from_slice(b"; filename=\"x.jpg\"");
        }
        body.extend_from_slice(format!("\r\nContent-Type: {ctype}\r\n\r\n").as_bytes());
        body.extend_from_slice(bytes);
        body.extend_from_slice(b"\r\n");
    }
    body.extend_from_slice(format!("--{BOUNDARY}--\r\n").as_bytes());
    body
}

pub fn frame_body(m: &FrameMeta, image: &[u8]) -> Vec<u8> {
    multipart(&[
        ("meta", "application/json", &serde_json::to_vec(m).unwrap()),
        ("image", "image/jpeg", image),
    ])
}

/// The answer's status and bytes.
pub async fn request_bytes(h: &Harness, req: Request<Body>) -> (StatusCode, Vec<u8>) {
    let response = app(h.state.clone()).oneshot(req).await.unwrap();
    let status = response.status();
    let bytes = response.into_body().collect().await.unwrap().to_bytes();
    (status, bytes.to_vec())
}

/// The answer's status and JSON body (`null` if none).
pub async fn request(h: &Harness, req: Request<Body>) -> (StatusCode, Value) {
    let (status, bytes) = request_bytes(h, req).await;
    (
        status,
        serde_json::from_slice(&bytes).unwrap_or(Value::Null),
    )
}

pub async fn send(
    h: &Harness,
    method: &str,
    uri: &str,
    key: Option<&str>,
    body: Vec<u8>,
) -> (StatusCode, Value) {
    let mut req = Request::builder().method(method).uri(uri).header(
        "content-type",
        format!("multipart/form-data; boundary={BOUNDARY}"),
    );
    if let Some(k) = key {
        req = req.header("x-api-key", k);
    }
    request(h, req.body(Body::from(body)).unwrap()).await
}

pub async fn send_raw(
    h: &Harness,
    method: &str,
    uri: &str,
    content_type: &str,
    body: Vec<u8>,
) -> (StatusCode, Value) {
    let req = Request::builder()
        .method(method)
        .uri(uri)
        .header("content-type", content_type)
        .header("x-api-key", DEVICE)
        .body(Body::from(body))
        .unwrap();
    request(h, req).await
}

pub async fn put_frame(
    h: &Harness,
    id: &str,
    key: Option<&str>,
    body: Vec<u8>,
) -> (StatusCode, Value) {
    send(h, "PUT", &format!("/api/v1/frames/{id}"), key, body).await
}

/// How many analyses the store holds.
pub async fn stored(h: &Harness) -> usize {
    let store = &h.state.intake.storage.records;
    let (items, _) = store.list(&Default::default(), None, 100).await.unwrap();
    items.len()
}

/// A JSON body to `uri` with `key`.
pub async fn post_json(h: &Harness, uri: &str, key: &str, body: Value) -> (StatusCode, Value) {
    let req = Request::post(uri)
        .header("x-api-key", key)
        .header("content-type", "application/json")
        .body(Body::from(body.to_string()))
        .unwrap();
    request(h, req).await
}

/// A request without a body to `uri` with `key`.
pub async fn call(h: &Harness, method: &str, uri: &str, key: &str) -> (StatusCode, Value) {
    let req = Request::builder()
        .method(method)
        .uri(uri)
        .header("x-api-key", key)
        .body(Body::empty())
        .unwrap();
    request(h, req).await
}

/// The error code of an error body.
pub fn code(v: &Value) -> &str {
    v["error"]["code"].as_str().unwrap_or("<no error code>")
}

fn viewer_get(uri: &str) -> Request<Body> {
    Request::builder()
        .uri(uri)
        .header("x-api-key", VIEWER)
        .body(Body::empty())
        .unwrap()
}

pub async fn get_json(h: &Harness, uri: &str) -> (StatusCode, Value) {
    request(h, viewer_get(uri)).await
}

pub async fn get_bytes(h: &Harness, uri: &str) -> (StatusCode, Vec<u8>) {
    request_bytes(h, viewer_get(uri)).await
}

/// Uploads `images` as golden samples to `uri` (`/api/v1/skus/{sku}/golden`).
pub async fn upload_golden(h: &Harness, uri: &str, images: &[Vec<u8>]) -> (StatusCode, Value) {
    let parts: Vec<_> = images
        .iter()
        .map(|i| ("image", "image/jpeg", i.as_slice()))
        .collect();
    send(h, "POST", uri, Some(ADMIN), multipart(&parts)).await
}

pub async fn get_model(h: &Harness) -> (StatusCode, Value) {
    get_json(h, "/api/v1/skus/WK-KN-200/model").await
}

/// The prototype's call for a chef's knife image.
pub async fn analyze(h: &Harness, image: Vec<u8>) -> (StatusCode, Value) {
    let form = multipart(&[
        ("image", "image/jpeg", &image),
        ("product_sku", "text/plain", b"WK-KN-200"),
        ("facility", "text/plain", b"yangjiang"),
    ]);
    send(h, "POST", "/api/v1/analyze", Some(DEVICE), form).await
}
