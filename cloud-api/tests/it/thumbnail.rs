//! `GET /api/v1/analyses/{id}/thumbnail`: a small JPEG, made once and kept in the image store.

use axum::http::StatusCode;
use uuid::Uuid;

use crate::harness::*;

#[tokio::test]
async fn a_thumbnail_is_made_once_kept_in_the_image_store_and_served_to_viewers() {
    let h = harness().await;
    let image = jpeg();
    let id = Uuid::now_v7();
    let (s, ack) = put_frame(
        &h,
        &id.to_string(),
        Some(DEVICE),
        frame_body(&meta(id, &image), &image),
    )
    .await;
    assert_eq!(s, StatusCode::CREATED, "{ack}");
    let analysis = ack["analysis_id"].as_str().unwrap().to_string();
    let analysis_id = Uuid::parse_str(&analysis).unwrap();
    let storage = &h.state.intake.storage;
    let (_, thumb_key) = storage.part_keys(analysis_id).await.unwrap();
    assert!(
        storage.image(&thumb_key).await.is_err(),
        "not made before asked for"
    );
    let uri = format!("/api/v1/analyses/{analysis}/thumbnail");
    let (s, small) = get_bytes(&h, &uri).await;
    assert_eq!(s, StatusCode::OK);
    let thumb = image::load_from_memory_with_format(&small, image::ImageFormat::Jpeg).unwrap();
    let original = image::load_from_memory(&image).unwrap();
    assert_eq!(
        thumb.width().max(thumb.height()),
        320.min(original.width().max(original.height()))
    );
    assert!(small.len() < image.len());
    // Kept: the store holds it, and the next request is served from there.
    assert_eq!(
        storage.image(&thumb_key).await.unwrap().as_ref(),
        small.as_slice()
    );
    let (_, again) = get_bytes(&h, &uri).await;
    assert_eq!(again, small);
    let (_, a) = get_json(&h, &format!("/api/v1/analyses/{analysis}")).await;
    assert_eq!(a["thumbnail_url"], uri);
    let (s, _) = get_bytes(
        &h,
        &format!("/api/v1/analyses/{}/thumbnail", Uuid::now_v7()),
    )
    .await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    let (s, _) = call(&h, "GET", &uri, DEVICE).await;
    assert_eq!(s, StatusCode::FORBIDDEN);
}
