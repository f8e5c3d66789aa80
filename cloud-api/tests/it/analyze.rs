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
    // An image whose data does not decode: a stable message, not the decoder's words.
    let (status, body) = send(
        &h,
        "POST",
        "/api/v1/analyze",
        Some(DEVICE),
        form(&broken_png()),
    )
    .await;
    assert_eq!(
        (status, code(&body), body["error"]["message"].as_str()),
        (
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_image",
            Some("the image does not decode")
        )
    );
    assert_eq!(stored(&h).await, 1);
}

/// A PNG whose header is right and whose pixel data is garbage.
fn broken_png() -> Vec<u8> {
    fn chunk(kind: &[u8], data: &[u8], out: &mut Vec<u8>) {
        out.extend_from_slice(&(data.len() as u32).to_be_bytes());
        out.extend_from_slice(kind);
        out.extend_from_slice(data);
        out.extend_from_slice(&[0, 0, 0, 0]); // CRC left wrong too
    }
    let mut png = b"\x89PNG\r\n\x1a\n".to_vec();
    let mut ihdr = Vec::new();
    ihdr.extend_from_slice(&64u32.to_be_bytes());
    ihdr.extend_from_slice(&64u32.to_be_bytes());
    ihdr.extend_from_slice(&[8, 0, 0, 0, 0]);
    chunk(b"IHDR", &ihdr, &mut png);
    chunk(b"IDAT", b"definitely not deflate data", &mut png);
    chunk(b"IEND", b"", &mut png);
    png
}
