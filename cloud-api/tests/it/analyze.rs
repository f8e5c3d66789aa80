//! The prototype's synchronous `POST /api/v1/analyze`.

use axum::http::StatusCode;

use crate::harness::*;

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
