//! The API driven through `wiko_cloud::app(state).oneshot(…)`: no network, real embedded store.
//!
//! - bad input of every kind gets a 4xx with a stable code, stores nothing, and the service
//!   keeps answering;
//! - ingest is idempotent on the frame id;
//! - golden samples calibrate a SKU: before, `not_calibrated`; after, verdicts naming the model
//!   version, which survives a restart.

// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used)]

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use axum::body::Body;
use axum::http::{Request, StatusCode};
use http_body_util::BodyExt;
use serde_json::Value;
use tokio::sync::Notify;
use tower::ServiceExt;
use uuid::Uuid;
use wiko_agent::source::synthetic::{self, SynthDefect};
use wiko_cloud::analysis::golden::Golden;
use wiko_cloud::http::auth::{KeyEntry, Scope};
use wiko_cloud::store::blob::BlobStore;
use wiko_cloud::store::{Store, StoreError};
use wiko_cloud::{AppState, app};
use wiko_inspect::{DecodeLimits, FitOptions};
use wiko_wire::FrameMeta;

mod backend;
mod queue;
mod real_surfaces;
mod unreachable;

use backend::Place;

const DEVICE: &str = "it-device-key-000000001";
const VIEWER: &str = "it-viewer-key-000000001";
const ADMIN: &str = "it-admin-key-0000000001";
const BOUNDARY: &str = "XwikoBoundaryX";
const MAX_BODY: usize = 2 * 1024 * 1024;

struct Harness {
    state: AppState,
    place: Arc<Place>,
}

async fn harness() -> Harness {
    started_in(Arc::new(Place::new().await)).await
}

/// A cloud whose data lives in `place` (a second call is a restart).
async fn started_in(place: Arc<Place>) -> Harness {
    let (store, blobs) = place.open().await;
    Harness {
        state: state_of(store, blobs).await,
        place,
    }
}

/// The API over these stores.
async fn state_of(store: Arc<dyn Store>, blobs: Arc<dyn BlobStore>) -> AppState {
    // Logs of a failing test are shown with its output.
    let _ = tracing_subscriber::fmt().with_test_writer().try_init();
    let limits = DecodeLimits {
        max_pixels: 4_000_000,
    };
    let golden =
        Arc::new(Golden::new(store.clone(), blobs.clone(), limits, FitOptions::default()).await);
    AppState {
        store,
        blobs,
        analyzer: golden.clone(),
        golden,
        keys: vec![
            KeyEntry {
                name: "d".into(),
                scope: Scope::Device,
                sha256: KeyEntry::hash(DEVICE),
            },
            KeyEntry {
                name: "v".into(),
                scope: Scope::Viewer,
                sha256: KeyEntry::hash(VIEWER),
            },
            KeyEntry {
                name: "a".into(),
                scope: Scope::Admin,
                sha256: KeyEntry::hash(ADMIN),
            },
        ]
        .into(),
        limits,
        public_url: "http://127.0.0.1:5001".into(),
        max_body_bytes: MAX_BODY,
        max_concurrent_requests: 8,
        jobs_wake: Arc::new(Notify::new()),
        outbox_wake: Arc::new(Notify::new()),
        broker_up: Arc::new(AtomicBool::new(true)),
    }
}

fn jpeg() -> Vec<u8> {
    part_jpeg(None, 1)
}

/// A chef's knife from the synthetic camera, with a painted defect or none.
fn part_jpeg(defect: Option<SynthDefect>, seed: u64) -> Vec<u8> {
    let part = synthetic::render(&synthetic::SHAPES[0], defect, seed);
    synthetic::encode_jpeg(&part.rgb, 640, 480).unwrap()
}

fn meta(frame_id: Uuid, image: &[u8]) -> FrameMeta {
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
    }
}

/// A multipart body from (name, content type, bytes) parts.
fn multipart(parts: &[(&str, &str, &[u8])]) -> Vec<u8> {
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

fn frame_body(m: &FrameMeta, image: &[u8]) -> Vec<u8> {
    multipart(&[
        ("meta", "application/json", &serde_json::to_vec(m).unwrap()),
        ("image", "image/jpeg", image),
    ])
}

async fn request(h: &Harness, req: Request<Body>) -> (StatusCode, Value) {
    let response = app(h.state.clone()).oneshot(req).await.unwrap();
    let status = response.status();
    let bytes = response.into_body().collect().await.unwrap().to_bytes();
    (
        status,
        serde_json::from_slice(&bytes).unwrap_or(Value::Null),
    )
}

async fn send(
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

async fn send_raw(
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

async fn put_frame(h: &Harness, id: &str, key: Option<&str>, body: Vec<u8>) -> (StatusCode, Value) {
    send(h, "PUT", &format!("/api/v1/frames/{id}"), key, body).await
}

async fn stored(h: &Harness) -> usize {
    let (items, _) = h
        .state
        .store
        .list(&Default::default(), None, 100)
        .await
        .unwrap();
    items.len()
}

fn code(v: &Value) -> &str {
    v["error"]["code"].as_str().unwrap_or("<no error code>")
}

#[tokio::test]
async fn ingest_is_idempotent_on_the_frame_id() {
    let h = harness().await;
    let image = jpeg();
    let id = Uuid::now_v7();
    let m = meta(id, &image);
    let (status, first) =
        put_frame(&h, &id.to_string(), Some(DEVICE), frame_body(&m, &image)).await;
    assert_eq!(status, StatusCode::CREATED, "{first}");
    assert_eq!(first["outcome"], "created");
    let (status, again) =
        put_frame(&h, &id.to_string(), Some(DEVICE), frame_body(&m, &image)).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(again["outcome"], "duplicate");
    assert_eq!(again["analysis_id"], first["analysis_id"]);

    let mut other = image.clone();
    let n = other.len();
    other[n / 2] ^= 0x55;
    let (status, conflict) = put_frame(
        &h,
        &id.to_string(),
        Some(DEVICE),
        frame_body(&meta(id, &other), &other),
    )
    .await;
    assert_eq!(status, StatusCode::CONFLICT);
    assert_eq!(code(&conflict), "frame_conflict");
    assert_eq!(stored(&h).await, 1);
}

#[tokio::test]
async fn bad_input_gets_a_coded_4xx_and_stores_nothing() {
    let h = harness().await;
    let image = jpeg();
    let id = Uuid::now_v7();
    let good = frame_body(&meta(id, &image), &image);
    let uri = id.to_string();

    struct Case {
        what: &'static str,
        status: StatusCode,
        code: &'static str,
        id: String,
        key: Option<&'static str>,
        body: Vec<u8>,
    }
    let case = |what, status, code, key, body| Case {
        what,
        status,
        code,
        id: uri.clone(),
        key,
        body,
    };
    let mut cases = vec![
        case(
            "no key",
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            None,
            good.clone(),
        ),
        case(
            "wrong key",
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            Some("not-a-key"),
            good.clone(),
        ),
        case(
            "viewer key",
            StatusCode::FORBIDDEN,
            "forbidden",
            Some(VIEWER),
            good.clone(),
        ),
        case(
            "malformed metadata",
            StatusCode::BAD_REQUEST,
            "invalid_metadata",
            Some(DEVICE),
            multipart(&[
                ("meta", "application/json", b"{\"frame_id\": 3"),
                ("image", "image/jpeg", &image),
            ]),
        ),
        case(
            "station with a slash",
            StatusCode::BAD_REQUEST,
            "invalid_metadata",
            Some(DEVICE),
            {
                let mut m = meta(id, &image);
                m.station = "a/b".into();
                frame_body(&m, &image)
            },
        ),
        case(
            "no image part",
            StatusCode::BAD_REQUEST,
            "missing_field",
            Some(DEVICE),
            multipart(&[(
                "meta",
                "application/json",
                &serde_json::to_vec(&meta(id, &image)).unwrap(),
            )]),
        ),
        case(
            "digest mismatch",
            StatusCode::BAD_REQUEST,
            "digest_mismatch",
            Some(DEVICE),
            frame_body(&meta(id, b"other"), &image),
        ),
        case(
            "not an image",
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_image",
            Some(DEVICE),
            frame_body(&meta(id, b"hello world"), b"hello world"),
        ),
        case(
            "zero bytes",
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_image",
            Some(DEVICE),
            frame_body(&meta(id, b""), b""),
        ),
        case(
            "truncated JPEG",
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_image",
            Some(DEVICE),
            {
                let cut = &image[..image.len() / 2];
                frame_body(&meta(id, cut), cut)
            },
        ),
        case(
            "body over the limit",
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
            Some(DEVICE),
            {
                let big = vec![0u8; MAX_BODY + 1];
                frame_body(&meta(id, &big), &big)
            },
        ),
    ];
    cases.push(Case {
        id: "frame-1".into(),
        ..case(
            "frame id not a UUID",
            StatusCode::BAD_REQUEST,
            "invalid_frame_id",
            Some(DEVICE),
            good.clone(),
        )
    });
    cases.push(Case {
        id: Uuid::now_v7().to_string(),
        ..case(
            "id differs from meta",
            StatusCode::BAD_REQUEST,
            "frame_id_mismatch",
            Some(DEVICE),
            good.clone(),
        )
    });
    for c in cases {
        let (got, body) = put_frame(&h, &c.id, c.key, c.body).await;
        assert_eq!(got, c.status, "{}: {body}", c.what);
        assert_eq!(code(&body), c.code, "{}", c.what);
        assert!(body["error"]["message"].is_string(), "{}", c.what);
    }
    let (got, body) = send_raw(
        &h,
        "PUT",
        &format!("/api/v1/frames/{uri}"),
        "text/plain",
        b"plain".to_vec(),
    )
    .await;
    assert_eq!(
        (got, code(&body)),
        (StatusCode::BAD_REQUEST, "invalid_multipart"),
        "not multipart"
    );
    assert_eq!(
        stored(&h).await,
        0,
        "nothing is stored by a refused request"
    );
    let (status, _) = put_frame(&h, &uri, Some(DEVICE), good).await;
    assert_eq!(status, StatusCode::CREATED, "the service still serves");
}

#[tokio::test]
async fn the_prototype_analyze_call_answers_with_the_analysis_or_a_code() {
    let h = harness().await;
    let image = jpeg();
    let form = |img: &[u8]| {
        multipart(&[
            ("image", "image/jpeg", img),
            ("product_sku", "text/plain", b"WK-KN-200"),
            ("facility", "text/plain", b"yangjiang"),
        ])
    };
    let (status, body) = send(&h, "POST", "/api/v1/analyze", Some(DEVICE), form(&image)).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["product_sku"], "WK-KN-200");
    assert_eq!(
        body["status"], "not_calibrated",
        "no golden samples were uploaded for this SKU"
    );
    let (status, body) = send(
        &h,
        "POST",
        "/api/v1/analyze",
        Some(DEVICE),
        form(&image[..image.len() - 100]),
    )
    .await;
    assert_eq!(
        (status, code(&body)),
        (StatusCode::UNPROCESSABLE_ENTITY, "invalid_image")
    );
    let (status, body) = send(
        &h,
        "POST",
        "/api/v1/analyze",
        Some(DEVICE),
        multipart(&[("image", "image/jpeg", &image)]),
    )
    .await;
    assert_eq!(
        (status, code(&body)),
        (StatusCode::BAD_REQUEST, "missing_field")
    );
    assert_eq!(stored(&h).await, 1);
}

#[tokio::test]
async fn results_can_be_filtered_and_paged_with_a_viewer_key() {
    let h = harness().await;
    for station in ["grinding", "polish", "polish"] {
        let image = jpeg();
        let id = Uuid::now_v7();
        let mut m = meta(id, &image);
        m.station = station.into();
        let (status, _) =
            put_frame(&h, &id.to_string(), Some(DEVICE), frame_body(&m, &image)).await;
        assert_eq!(status, StatusCode::CREATED);
    }
    let get = |uri: String, key: &'static str| {
        let req = Request::builder()
            .uri(uri)
            .header("x-api-key", key)
            .body(Body::empty())
            .unwrap();
        request(&h, req)
    };
    let (s, page) = get("/api/v1/analyses?station=polish&limit=1".into(), VIEWER).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(page["items"].as_array().unwrap().len(), 1);
    let cursor = page["next_cursor"].as_str().unwrap().to_string();
    let (_, next) = get(
        format!("/api/v1/analyses?station=polish&limit=1&cursor={cursor}"),
        VIEWER,
    )
    .await;
    assert_eq!(next["items"].as_array().unwrap().len(), 1);
    assert!(next["next_cursor"].is_null());
    assert_ne!(page["items"][0]["id"], next["items"][0]["id"]);
    let id = page["items"][0]["id"].as_str().unwrap().to_string();
    assert_eq!(
        get(format!("/api/v1/analyses/{id}"), VIEWER).await.0,
        StatusCode::OK
    );
    assert_eq!(
        get(format!("/api/v1/analyses/{id}"), DEVICE).await.0,
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        get(format!("/api/v1/analyses/{}", Uuid::now_v7()), VIEWER)
            .await
            .0,
        StatusCode::NOT_FOUND
    );
    let (s, e) = get("/api/v1/analyses?cursor=garbage".into(), VIEWER).await;
    assert_eq!((s, code(&e)), (StatusCode::BAD_REQUEST, "invalid_cursor"));
    let (s, e) = get("/api/v1/analyses?defect_type=wobble".into(), VIEWER).await;
    assert_eq!((s, code(&e)), (StatusCode::BAD_REQUEST, "invalid_query"));
    let req = Request::builder()
        .uri(format!("/api/v1/analyses/{id}/image"))
        .header("x-api-key", VIEWER)
        .body(Body::empty())
        .unwrap();
    let r = app(h.state.clone()).oneshot(req).await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.headers()["content-type"], "image/jpeg");
}

#[tokio::test]
async fn golden_samples_calibrate_a_sku_and_results_name_the_model_version() {
    let h = harness().await;
    let golden = |range: std::ops::Range<u64>| {
        let images: Vec<Vec<u8>> = range.map(|seed| part_jpeg(None, 50_000 + seed)).collect();
        multipart(
            &images
                .iter()
                .map(|i| ("image", "image/jpeg", i.as_slice()))
                .collect::<Vec<_>>(),
        )
    };
    let uri = "/api/v1/skus/WK-KN-200/golden";
    let (status, body) = send(&h, "POST", uri, Some(DEVICE), golden(0..1)).await;
    assert_eq!((status, code(&body)), (StatusCode::FORBIDDEN, "forbidden"));
    let (status, body) = send(&h, "POST", uri, Some(ADMIN), golden(0..3)).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    assert_eq!(
        (body["samples"].as_u64(), body["added"].as_u64()),
        (Some(3), Some(3))
    );
    assert!(body["model"].is_null());
    let (status, body) = get_model(&h).await;
    assert_eq!(
        (status, code(&body)),
        (StatusCode::NOT_FOUND, "not_calibrated")
    );

    // The same three again add nothing; a damaged image is refused before anything is stored.
    let (status, body) = send(&h, "POST", uri, Some(ADMIN), golden(0..3)).await;
    assert_eq!(
        (status, body["added"].as_u64()),
        (StatusCode::ACCEPTED, Some(0))
    );
    let cut = part_jpeg(None, 7);
    let (status, body) = send(
        &h,
        "POST",
        uri,
        Some(ADMIN),
        multipart(&[("image", "image/jpeg", &cut[..cut.len() / 2])]),
    )
    .await;
    assert_eq!(
        (status, code(&body)),
        (StatusCode::UNPROCESSABLE_ENTITY, "invalid_image")
    );

    let (status, body) = send(&h, "POST", uri, Some(ADMIN), golden(3..24)).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    assert_eq!(body["samples"].as_u64(), Some(24));
    assert_eq!(body["model"]["version"], "v1");
    assert_eq!(body["model"]["method"], "aligned");

    let (status, good) = analyze(&h, part_jpeg(None, 90_001)).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        (
            &good["status"],
            &good["defect_detected"],
            &good["model_version"]
        ),
        (&"final".into(), &false.into(), &"v1".into()),
        "{good}"
    );
    let (_, bad) = analyze(&h, part_jpeg(Some(SynthDefect::Rust), 90_002)).await;
    assert_eq!(bad["defect_detected"], true, "{bad}");
    assert!(!bad["defects"].as_array().unwrap().is_empty());

    // An image without a part among knives spoils the model: the upload is refused whole and
    // the set stays as it was; the same parts again change nothing.
    let empty_belt = {
        let img = image::RgbImage::from_pixel(640, 480, image::Rgb([80, 92, 84]));
        synthetic::encode_jpeg(img.as_raw(), 640, 480).unwrap()
    };
    let mut with_empty: Vec<Vec<u8>> = vec![part_jpeg(None, 60_000)];
    with_empty.push(empty_belt);
    let parts: Vec<_> = with_empty
        .iter()
        .map(|i| ("image", "image/jpeg", i.as_slice()))
        .collect();
    let (status, body) = send(&h, "POST", uri, Some(ADMIN), multipart(&parts)).await;
    assert_eq!(
        (status, code(&body)),
        (StatusCode::UNPROCESSABLE_ENTITY, "invalid_image")
    );
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("image 1"),
        "{body}"
    );
    let (status, body) = send(&h, "POST", uri, Some(ADMIN), golden(0..3)).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(
        (body["samples"].as_u64(), body["added"].as_u64()),
        (Some(24), Some(0))
    );
    assert_eq!(body["model"]["version"], "v1");

    // The set is bounded: an upload that would pass the limit is refused whole.
    let tiny: Vec<Vec<u8>> = (0..=wiko_cloud::analysis::golden::MAX_GOLDEN as u32)
        .map(|i| {
            // Distinct sizes make distinct bytes (solid colours can compress alike).
            let img = image::RgbImage::from_pixel(8, 8 + i, image::Rgb([90, 90, 90]));
            synthetic::encode_jpeg(img.as_raw(), 8, 8 + i).unwrap()
        })
        .collect();
    let parts: Vec<_> = tiny
        .iter()
        .map(|i| ("image", "image/jpeg", i.as_slice()))
        .collect();
    let (status, body) = send(
        &h,
        "POST",
        "/api/v1/skus/OTHER-SKU/golden",
        Some(ADMIN),
        multipart(&parts),
    )
    .await;
    assert_eq!(
        (status, code(&body)),
        (StatusCode::BAD_REQUEST, "golden_set_full"),
        "{body}"
    );

    // A restart loads the stored model: no refit, the same version.
    let restarted = started_in(h.place.clone()).await;
    let (status, body) = get_model(&restarted).await;
    assert_eq!((status, &body["version"]), (StatusCode::OK, &"v1".into()));
    let (_, again) = analyze(&restarted, part_jpeg(Some(SynthDefect::Pit), 90_003)).await;
    assert_eq!(
        (&again["defect_detected"], &again["model_version"]),
        (&true.into(), &"v1".into())
    );
    // Another upload fits the next version.
    let (status, body) = send(&restarted, "POST", uri, Some(ADMIN), golden(24..26)).await;
    assert_eq!(
        (status, &body["model"]["version"]),
        (StatusCode::CREATED, &"v2".into())
    );
}

#[tokio::test]
async fn a_part_taken_out_of_the_golden_set_is_refitted_without_and_the_set_keeps_a_model() {
    let h = harness().await;
    // Five good parts and, by mistake, a rusty one.
    let mistake = part_jpeg(Some(SynthDefect::Rust), 71_000);
    let mut images: Vec<Vec<u8>> = (0..5).map(|seed| part_jpeg(None, 71_100 + seed)).collect();
    images.push(mistake.clone());
    let uri = "/api/v1/skus/WK-KN-200/golden";
    let (status, body) = upload_golden(&h, uri, &images).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");

    let (status, set) = get_json(&h, uri).await;
    assert_eq!(status, StatusCode::OK, "{set}");
    let digests: Vec<&str> = set["samples"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["digest"].as_str().unwrap())
        .collect();
    let wrong = wiko_wire::frame::image_digest(&mistake);
    assert_eq!(digests.len(), 6);
    assert_eq!(digests[5], wrong, "oldest first");
    assert!(set["samples"][0]["added_at"].is_string() && set["samples"][0]["image_key"].is_null());
    assert_eq!(set["model"]["version"], "v1");
    let one = format!("{uri}/{wrong}");
    let (status, bytes) = get_bytes(&h, &one).await;
    assert_eq!(
        (status, bytes.as_slice()),
        (StatusCode::OK, mistake.as_slice())
    );

    let (status, body) = send(&h, "DELETE", &one, Some(VIEWER), Vec::new()).await;
    assert_eq!((status, code(&body)), (StatusCode::FORBIDDEN, "forbidden"));
    let (status, body) = send(
        &h,
        "DELETE",
        &format!("{uri}/00ff"),
        Some(ADMIN),
        Vec::new(),
    )
    .await;
    assert_eq!((status, code(&body)), (StatusCode::NOT_FOUND, "not_found"));

    let (status, body) = send(&h, "DELETE", &one, Some(ADMIN), Vec::new()).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(
        (
            &body["samples"],
            &body["model"]["version"],
            &body["model"]["trained_on"]
        ),
        (&5.into(), &"v2".into(), &5.into()),
        "{body}"
    );
    let (_, rusty) = analyze(&h, mistake.clone()).await;
    assert_eq!(
        (&rusty["defect_detected"], &rusty["model_version"]),
        (&true.into(), &"v2".into()),
        "the refitted model rejects the part it no longer learns from: {rusty}"
    );
    let (status, _) = get_bytes(&h, &one).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, body) = send(&h, "DELETE", &one, Some(ADMIN), Vec::new()).await;
    assert_eq!((status, code(&body)), (StatusCode::NOT_FOUND, "not_found"));

    // Five left: taking another out would leave the model too few; nothing changes.
    let good = format!("{uri}/{}", digests[0]);
    let (status, body) = send(&h, "DELETE", &good, Some(ADMIN), Vec::new()).await;
    assert_eq!(
        (status, code(&body)),
        (StatusCode::CONFLICT, "golden_set_too_small"),
        "{body}"
    );
    let (_, set) = get_json(&h, uri).await;
    assert_eq!(
        (
            set["samples"].as_array().unwrap().len(),
            &set["model"]["version"]
        ),
        (5, &"v2".into())
    );

    // A set too small for a model yet shrinks freely.
    let other = "/api/v1/skus/WK-PR-090/golden";
    let (status, _) = upload_golden(&h, other, &images[..2]).await;
    assert_eq!(status, StatusCode::ACCEPTED);
    let (status, body) = send(
        &h,
        "DELETE",
        &format!("{other}/{}", digests[0]),
        Some(ADMIN),
        Vec::new(),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(
        (&body["samples"], &body["model"]),
        (&1.into(), &Value::Null)
    );

    // The SKUs at a glance, by name.
    let (status, skus) = get_json(&h, "/api/v1/skus").await;
    assert_eq!(status, StatusCode::OK, "{skus}");
    let seen: Vec<(&str, u64, &Value)> = skus
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            (
                s["sku"].as_str().unwrap(),
                s["samples"].as_u64().unwrap(),
                &s["model"]["version"],
            )
        })
        .collect();
    assert_eq!(
        seen,
        [
            ("WK-KN-200", 5, &Value::from("v2")),
            ("WK-PR-090", 1, &Value::Null)
        ]
    );

    // A restart sees the set and the model as they were left.
    let restarted = started_in(h.place.clone()).await;
    let (_, set) = get_json(&restarted, uri).await;
    assert_eq!(
        (
            set["samples"].as_array().unwrap().len(),
            &set["model"]["version"]
        ),
        (5, &"v2".into())
    );
}

/// Uploads `images` as golden samples to `uri` (`/api/v1/skus/{sku}/golden`).
async fn upload_golden(h: &Harness, uri: &str, images: &[Vec<u8>]) -> (StatusCode, Value) {
    let parts: Vec<_> = images
        .iter()
        .map(|i| ("image", "image/jpeg", i.as_slice()))
        .collect();
    send(h, "POST", uri, Some(ADMIN), multipart(&parts)).await
}

async fn get_json(h: &Harness, uri: &str) -> (StatusCode, Value) {
    let req = Request::builder()
        .uri(uri)
        .header("x-api-key", VIEWER)
        .body(Body::empty())
        .unwrap();
    request(h, req).await
}

async fn get_bytes(h: &Harness, uri: &str) -> (StatusCode, Vec<u8>) {
    let req = Request::builder()
        .uri(uri)
        .header("x-api-key", VIEWER)
        .body(Body::empty())
        .unwrap();
    let response = app(h.state.clone()).oneshot(req).await.unwrap();
    let status = response.status();
    let bytes = response.into_body().collect().await.unwrap().to_bytes();
    (status, bytes.to_vec())
}

#[tokio::test]
async fn a_stored_model_of_an_older_format_is_refitted_from_its_golden_set() {
    refitted_from_its_golden_set(calibrated_by_an_older_release().await).await;
}

#[tokio::test]
async fn a_damaged_stored_model_is_refitted_from_its_golden_set() {
    let damaged = calibrated_then_stored_as(|body| body.truncate(body.len() / 2)).await;
    refitted_from_its_golden_set(damaged).await;
}

/// After a restart, the SKU of `h`, whose stored v1 cannot be used, is not calibrated until
/// the housekeeping pass refits it from its golden set as v2, once.
async fn refitted_from_its_golden_set(h: Harness) {
    let restarted = started_in(h.place.clone()).await;
    let (status, body) = get_model(&restarted).await;
    assert_eq!(
        (status, code(&body)),
        (StatusCode::NOT_FOUND, "not_calibrated"),
        "not usable until refitted"
    );
    for seed in [90_004, 90_005] {
        let (_, before) = analyze(&restarted, part_jpeg(None, seed)).await;
        assert_eq!(before["status"], "not_calibrated", "{before}");
    }
    let golden = &restarted.state.golden;
    assert_eq!(golden.refit_unusable().await.unwrap(), 1);
    let (status, body) = get_model(&restarted).await;
    assert_eq!(
        (status, &body["version"], &body["trained_on"]),
        (StatusCode::OK, &"v2".into(), &6.into()),
        "{body}"
    );
    let (_, good) = analyze(&restarted, part_jpeg(None, 90_001)).await;
    assert_eq!(
        (&good["status"], &good["model_version"]),
        (&"final".into(), &"v2".into()),
        "{good}"
    );
    assert_eq!(golden.refit_unusable().await.unwrap(), 0, "done once");
    // Stored as the new version: another restart loads it without refitting.
    let again = started_in(h.place.clone()).await;
    let (_, body) = get_model(&again).await;
    assert_eq!(body["version"], "v2");
}

/// What an upgrade finds: WK-KN-200 calibrated from six good parts, its stored v1 written by a
/// release with an older model format.
async fn calibrated_by_an_older_release() -> Harness {
    calibrated_then_stored_as(|body| {
        body[8..12].copy_from_slice(&(wiko_inspect::model::MODEL_FORMAT - 1).to_le_bytes());
    })
    .await
}

/// WK-KN-200 calibrated from six good parts, the body of its stored v1 then changed by `change`.
async fn calibrated_then_stored_as(change: fn(&mut Vec<u8>)) -> Harness {
    let h = harness().await;
    let images: Vec<Vec<u8>> = (0..6).map(|seed| part_jpeg(None, 70_000 + seed)).collect();
    let (status, body) = upload_golden(&h, "/api/v1/skus/WK-KN-200/golden", &images).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let store = &h.state.store;
    let mut stored = store.model("WK-KN-200").await.unwrap().unwrap();
    change(&mut stored.body);
    store.save_model(stored).await.unwrap();
    h
}

/// An object store that does not answer while `down` is set.
struct Flaky {
    inner: Arc<dyn BlobStore>,
    down: AtomicBool,
}

#[async_trait::async_trait]
impl BlobStore for Flaky {
    async fn put(&self, key: &str, bytes: bytes::Bytes) -> Result<(), StoreError> {
        self.inner.put(key, bytes).await
    }
    async fn get(&self, key: &str) -> Result<bytes::Bytes, StoreError> {
        if self.down.load(Ordering::SeqCst) {
            return Err(StoreError::Unavailable("object store down (test)".into()));
        }
        self.inner.get(key).await
    }
    async fn ping(&self) -> Result<(), StoreError> {
        self.inner.ping().await
    }
}

#[tokio::test]
async fn a_refit_cut_short_by_the_object_store_is_tried_again_at_the_next_pass() {
    let place = calibrated_by_an_older_release().await.place;
    let (store, blobs) = place.open().await;
    let blobs = Arc::new(Flaky {
        inner: blobs,
        down: AtomicBool::new(true),
    });
    let h = Harness {
        state: state_of(store, blobs.clone()).await,
        place,
    };
    let golden = &h.state.golden;
    let failed = golden.refit_unusable().await;
    assert!(
        matches!(failed, Err(StoreError::Unavailable(_))),
        "{failed:?}"
    );
    let (status, body) = get_model(&h).await;
    assert_eq!(
        (status, code(&body)),
        (StatusCode::NOT_FOUND, "not_calibrated")
    );

    blobs.down.store(false, Ordering::SeqCst);
    assert_eq!(golden.refit_unusable().await.unwrap(), 1, "tried again");
    let (_, body) = get_model(&h).await;
    assert_eq!(body["version"], "v2", "{body}");
}

async fn get_model(h: &Harness) -> (StatusCode, Value) {
    get_json(h, "/api/v1/skus/WK-KN-200/model").await
}

/// The prototype's call for a chef's knife image.
async fn analyze(h: &Harness, image: Vec<u8>) -> (StatusCode, Value) {
    let form = multipart(&[
        ("image", "image/jpeg", &image),
        ("product_sku", "text/plain", b"WK-KN-200"),
        ("facility", "text/plain", b"yangjiang"),
    ]);
    send(h, "POST", "/api/v1/analyze", Some(DEVICE), form).await
}
