//! Golden samples calibrate a SKU: before, `not_calibrated`; after, verdicts naming the model
//! version, which survives a restart; a wrong sample is taken out and refitted without; a
//! stored model that cannot be used is refitted from its golden set.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use axum::http::StatusCode;
use serde_json::Value;
use wiko_cloud::store::{BlobStore, Storage, StoreError};
use wiko_synth::{self as synthetic, SynthDefect};

use crate::harness::*;

/// The upload of good parts `range` (synthetic seeds) as golden samples.
fn golden(range: std::ops::Range<u64>) -> Vec<u8> {
    let images: Vec<Vec<u8>> = range.map(|seed| part_jpeg(None, 50_000 + seed)).collect();
    multipart(
        &images
            .iter()
            .map(|i| ("image", "image/jpeg", i.as_slice()))
            .collect::<Vec<_>>(),
    )
}

/// A model another replica fitted after this one started: this one's first part of the SKU is
/// decoded in colour (no model of it is loaded here; colour serves any), judged by the stored
/// model, and from then on decoded in luma alone.
#[tokio::test]
async fn a_model_another_replica_fitted_judges_here_and_then_sets_the_planes() {
    let h = harness().await;
    let second = started_in(h.place.clone()).await;
    let uri = "/api/v1/skus/WK-KN-200/golden";
    let (status, body) = send(&h, "POST", uri, Some(ADMIN), golden(0..24)).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    assert_eq!(
        second.state.analyzer.planes("WK-KN-200").await,
        wiko_inspect::Planes::Colour,
        "not loaded on the second replica yet"
    );
    let (status, good) = analyze(&second, part_jpeg(None, 90_001)).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        (&good["status"], &good["model_version"]),
        (&"final".into(), &"v1".into()),
        "{good}"
    );
    assert_eq!(
        second.state.analyzer.planes("WK-KN-200").await,
        wiko_inspect::Planes::Luma
    );
}

#[tokio::test]
async fn golden_samples_calibrate_a_sku_and_results_name_the_model_version() {
    let h = harness().await;
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
    // An aligned model judges luma: the workers decode no chroma for it.
    assert_eq!(
        h.state.analyzer.planes("WK-KN-200").await,
        wiko_inspect::Planes::Luma
    );
    assert_eq!(
        h.state.analyzer.planes("WK-OTHER").await,
        wiko_inspect::Planes::Colour,
        "a SKU without a model is decoded whole"
    );

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
    let store = &h.state.intake.storage.records;
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
    let storage = place.open().await;
    let blobs = Arc::new(Flaky {
        inner: storage.images,
        down: AtomicBool::new(true),
    });
    let h = Harness {
        state: state_of(Storage {
            records: storage.records,
            images: blobs.clone(),
        })
        .await,
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

#[tokio::test]
async fn a_blank_or_repeated_golden_set_is_refused_with_the_reason() {
    let h = harness().await;
    let uri = "/api/v1/skus/WK-KN-200/golden";
    let blank: Vec<Vec<u8>> = (0..6u8)
        .map(|i| {
            let img = image::RgbImage::from_pixel(640, 480, image::Rgb([60 + i, 60 + i, 60 + i]));
            synthetic::encode_jpeg(img.as_raw(), 640, 480).unwrap()
        })
        .collect();
    let (status, body) = upload_golden(&h, uri, &blank).await;
    assert_eq!(
        (status, code(&body)),
        (StatusCode::UNPROCESSABLE_ENTITY, "invalid_image"),
        "{body}"
    );
    assert!(
        body["error"]["message"].as_str().unwrap().contains("blank"),
        "{body}"
    );
    let (_, set) = get_json(&h, uri).await;
    assert_eq!(
        set["samples"].as_array().unwrap().len(),
        0,
        "nothing stored"
    );
}
