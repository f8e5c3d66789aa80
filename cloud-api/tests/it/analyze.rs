//! The prototype's synchronous `POST /api/v1/analyze`.

use std::sync::Arc;
use std::time::Duration;

use axum::http::StatusCode;
use wiko_cloud::analysis::budget::Budget;
use wiko_cloud::analysis::{Analyzer, Frame, Judgement};
use wiko_inspect::Planes;

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

/// An analyzer that says when it starts judging and answers only when the test lets it.
struct Held {
    began: tokio::sync::mpsc::Sender<()>,
    go: Arc<tokio::sync::Semaphore>,
}

#[async_trait::async_trait]
impl Analyzer for Held {
    fn name(&self) -> &'static str {
        "held"
    }
    fn version(&self) -> &'static str {
        "test"
    }
    async fn judge(&self, _sku: &str, _frame: Frame) -> Judgement {
        let _ = self.began.send(()).await;
        let _ = self.go.acquire().await;
        Judgement::failed("held by the test", None)
    }
}

/// An analyzer that asks for luma alone, judges `reads` (its model replaced by one that reads
/// colour between the two calls, when that is colour) and records whether its image had
/// chroma.
struct LumaAsked {
    reads: Planes,
    seen: Arc<std::sync::Mutex<Vec<bool>>>,
}

#[async_trait::async_trait]
impl Analyzer for LumaAsked {
    fn name(&self) -> &'static str {
        "luma-asked"
    }
    fn version(&self) -> &'static str {
        "test"
    }
    async fn planes(&self, _sku: &str) -> Planes {
        Planes::Luma
    }
    async fn judge(&self, _sku: &str, frame: Frame) -> Judgement {
        let image = frame.image(self.reads).await.unwrap();
        self.seen.lock().unwrap().push(image.chroma.is_some());
        Judgement::failed("recorded by the test", None)
    }
}

#[tokio::test]
async fn a_colour_frame_is_decoded_to_the_planes_its_analyzer_reads() {
    let mut h = harness().await;
    let seen = Arc::default();
    h.state.analyzer = Arc::new(LumaAsked {
        reads: Planes::Luma,
        seen: Arc::clone(&seen),
    });
    let image = jpeg();
    assert!(
        wiko_inspect::decode(&image, h.state.intake.limits)
            .unwrap()
            .chroma
            .is_some(),
        "the synthetic camera's frames are in colour"
    );
    let (status, body) = analyze(&h, image).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(*seen.lock().unwrap(), [false], "luma alone");
}

/// The planes are asked before the decode: a model replaced in between by one that reads
/// colour is given the frame decoded again in colour, not judged on luma alone.
#[tokio::test]
async fn a_frame_decoded_in_luma_for_a_model_replaced_by_a_colour_one_is_decoded_again() {
    let mut h = harness().await;
    let seen = Arc::default();
    h.state.analyzer = Arc::new(LumaAsked {
        reads: Planes::Colour,
        seen: Arc::clone(&seen),
    });
    let (status, body) = analyze(&h, jpeg()).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(*seen.lock().unwrap(), [true], "colour, as its judge reads");
}

// See: issue #23 (the call's reservation went with its request: a request that timed out
// freed the memory while the judgement went on)
#[tokio::test]
async fn the_analyze_call_holds_its_memory_until_its_judgement_ends_after_the_caller_left() {
    let mut h = harness().await;
    let image = jpeg();
    let limits = h.state.intake.limits;
    let (width, height) = wiko_inspect::decode::dimensions(&image, limits).unwrap();
    // Room for this one call's judgement, no more.
    let budget = Budget::new(Budget::judging(width, height));
    h.state.intake.budget = budget.clone();
    let (began, mut judging) = tokio::sync::mpsc::channel(1);
    let go = Arc::new(tokio::sync::Semaphore::new(0));
    h.state.analyzer = Arc::new(Held {
        began,
        go: go.clone(),
    });
    let h = Arc::new(h);
    let caller = {
        let h = h.clone();
        tokio::spawn(async move {
            let form = multipart(&[
                ("image", "image/jpeg", &image),
                ("product_sku", "text/plain", b"WK-KN-200"),
                ("facility", "text/plain", b"yangjiang"),
            ]);
            send(&h, "POST", "/api/v1/analyze", Some(DEVICE), form).await
        })
    };
    judging.recv().await.unwrap();
    // The client leaves (as a request's timeout drops it) while the part is being judged.
    caller.abort();
    assert!(caller.await.unwrap_err().is_cancelled());
    let waiting = tokio::spawn(async move { budget.reserve(1).await.map(|_| ()) });
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(
        !waiting.is_finished(),
        "the judgement still running holds its memory though its caller is gone"
    );
    go.add_permits(1);
    tokio::time::timeout(Duration::from_secs(5), waiting)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    // And its result was stored: nobody waits a minute for a worker to take the part over.
    let store = h.state.intake.storage.records.clone();
    let (parts, _) = store.list(&Default::default(), None, 10).await.unwrap();
    assert_eq!(parts.len(), 1);
    assert_eq!(parts[0].status, wiko_wire::AnalysisStatus::Failed);
    assert_eq!(parts[0].analyzer, "held");
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
