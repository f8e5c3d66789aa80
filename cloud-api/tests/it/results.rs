//! Results: filters, cursor paging and images, with a viewer key.

use axum::body::Body;
use axum::http::{Request, StatusCode};
use tower::ServiceExt;
use uuid::Uuid;

use crate::harness::*;

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
    let r = wiko_cloud::app(h.state.clone()).oneshot(req).await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.headers()["content-type"], "image/jpeg");
}
