//! A database or an object store that cannot be reached: ingest answers 503 with `Retry-After`
//! (the agent keeps the frame and retries), `/ready` names the failing dependency, and the
//! service keeps answering. Nothing listens on 127.0.0.1:1, so no service is needed.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use tower::ServiceExt;
use uuid::Uuid;
use wiko_cloud::store::blob::LocalDir;
use wiko_cloud::store::s3::{S3, S3Settings};
use wiko_cloud::store::{PgSettings, Storage, open_postgres, open_sqlite};

use crate::backend::Place;
use crate::harness::{BOUNDARY, DEVICE, Harness, frame_body, jpeg, meta, request, state_of};

async fn answers_503_and_names(storage: Storage, down: &str) {
    let h = Harness {
        state: state_of(storage).await,
        place: Arc::new(Place::new().await),
    };
    let image = jpeg();
    let id = Uuid::now_v7();
    let req = Request::put(format!("/api/v1/frames/{id}"))
        .header("x-api-key", DEVICE)
        .header(
            "content-type",
            format!("multipart/form-data; boundary={BOUNDARY}"),
        )
        .body(Body::from(frame_body(&meta(id, &image), &image)))
        .unwrap();
    let r = wiko_cloud::app(h.state.clone()).oneshot(req).await.unwrap();
    assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(r.headers()["retry-after"], "5");

    let get = |uri: &str| Request::get(uri).body(Body::empty()).unwrap();
    let (status, ready) = request(&h, get("/ready")).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(ready["checks"][down], false, "{ready}");
    let (status, _) = request(&h, get("/health")).await;
    assert_eq!(
        status,
        StatusCode::OK,
        "liveness does not depend on storage"
    );
}

#[tokio::test]
async fn an_unreachable_database_is_a_503_with_retry_after() {
    let dir = tempfile::tempdir().unwrap();
    let settings = PgSettings {
        url: "postgres://wiko@127.0.0.1:1/wiko".into(),
        max_connections: 2,
        acquire_timeout: Duration::from_millis(300),
        statement_timeout: Duration::from_secs(1),
        outbox_lease: Duration::from_secs(30),
    };
    let storage = Storage {
        records: open_postgres(&settings, false).await.unwrap(),
        images: Arc::new(LocalDir::new(dir.path().to_path_buf()).unwrap()),
    };
    answers_503_and_names(storage, "database").await;
}

#[tokio::test]
async fn an_unreachable_object_store_is_a_503_with_retry_after() {
    let dir = tempfile::tempdir().unwrap();
    let records = open_sqlite(&dir.path().join("wiko.db")).unwrap();
    let images = S3::new(&S3Settings {
        bucket: "frames".into(),
        endpoint: Some("http://127.0.0.1:1".into()),
        region: "us-east-1".into(),
        prefix: String::new(),
        path_style: true,
        allow_http: true,
        access_key_id: Some("k".into()),
        secret_access_key: Some("s".into()),
        request_timeout: Duration::from_secs(1),
    })
    .unwrap();
    let storage = Storage {
        records,
        images: Arc::new(images),
    };
    answers_503_and_names(storage, "object_store").await;
}
