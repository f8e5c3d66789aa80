//! Edge analysis: a device downloads its SKU's model file (sent again only when it changed),
//! and a frame the agent judged is a `provisional` result at once, made `final` by the
//! cloud's own verdict under the same id, with a disagreement counted and visible.

use axum::body::Body;
use axum::http::{Request, StatusCode};
use uuid::Uuid;
use wiko_cloud::store::{Event, Judgement, Outcome};
use wiko_synth::SynthDefect;
use wiko_wire::{AnalysisStatus, Defect, DefectType, EdgeVerdict};

use crate::harness::*;

const FILE: &str = "/api/v1/skus/WK-KN-200/model/file";

async fn model_file(
    h: &Harness,
    key: &str,
    if_none_match: Option<&str>,
) -> (StatusCode, Option<String>, Option<String>, Vec<u8>) {
    let mut req = Request::builder().uri(FILE).header("x-api-key", key);
    if let Some(tag) = if_none_match {
        req = req.header("if-none-match", tag);
    }
    let response = tower::ServiceExt::oneshot(
        wiko_cloud::app(h.state.clone()),
        req.body(Body::empty()).unwrap(),
    )
    .await
    .unwrap();
    let header = |name: &str| {
        response
            .headers()
            .get(name)
            .map(|v| v.to_str().unwrap().to_string())
    };
    let (status, etag, version) = (
        response.status(),
        header("etag"),
        header(wiko_wire::golden::MODEL_VERSION_HEADER),
    );
    let body = http_body_util::BodyExt::collect(response.into_body())
        .await
        .unwrap()
        .to_bytes()
        .to_vec();
    (status, etag, version, body)
}

async fn calibrate(h: &Harness, seeds: std::ops::Range<u64>) {
    let good: Vec<Vec<u8>> = seeds.map(|i| part_jpeg(None, 60_000 + i)).collect();
    let (status, body) = upload_golden(h, "/api/v1/skus/WK-KN-200/golden", &good).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
}

#[tokio::test]
async fn a_device_downloads_the_model_file_once_per_version() {
    let h = harness().await;
    let (status, _, _, body) = model_file(&h, DEVICE, None).await;
    let body: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(
        (status, code(&body)),
        (StatusCode::NOT_FOUND, "not_calibrated")
    );

    calibrate(&h, 0..6).await;
    let (status, etag, version, file) = model_file(&h, DEVICE, None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(version.as_deref(), Some("v1"));
    let etag = etag.unwrap();
    // The file is the model itself: it judges a part as the cloud does.
    let model = wiko_inspect::Model::from_bytes(&file).unwrap();
    let image = wiko_inspect::decode(
        &part_jpeg(Some(SynthDefect::Rust), 60_100),
        Default::default(),
    )
    .unwrap();
    assert!(model.score(&image).unwrap().defect_detected);

    // Unchanged: 304 without a body; a viewer may download it too.
    let (status, again, version, body) = model_file(&h, DEVICE, Some(&etag)).await;
    assert_eq!(
        (status, again.as_deref(), version.as_deref(), body.len()),
        (StatusCode::NOT_MODIFIED, Some(etag.as_str()), Some("v1"), 0)
    );
    assert_eq!(model_file(&h, VIEWER, None).await.0, StatusCode::OK);

    // A new version is sent in full to a device holding the old one.
    calibrate(&h, 6..8).await;
    let (status, newer, version, file) = model_file(&h, DEVICE, Some(&etag)).await;
    assert_eq!((status, version.as_deref()), (StatusCode::OK, Some("v2")));
    assert_ne!(newer.unwrap(), etag);
    assert!(wiko_inspect::Model::from_bytes(&file).is_ok());
}

fn edge(ng: bool) -> EdgeVerdict {
    EdgeVerdict {
        defect_detected: ng,
        score: if ng { 3.0 } else { 0.5 },
        score_threshold: 1.0,
        model_version: "v1".into(),
        defects: if ng {
            vec![Defect {
                kind: DefectType::Rust,
                severity: "high".into(),
                confidence: 0.75,
                bbox: [10, 20, 30, 40],
                description: "rust".into(),
            }]
        } else {
            Vec::new()
        },
        latency_ms: 12.5,
        alerted: false,
    }
}

fn cloud(ng: bool) -> Outcome {
    Outcome {
        judgement: Judgement {
            status: AnalysisStatus::Final,
            defect_detected: ng,
            defects: Vec::new(),
            score: Some(if ng { 2.0 } else { 0.4 }),
            score_threshold: Some(1.0),
            confidence: Some(0.9),
            recommendation: if ng { "reject" } else { "accept" }.into(),
            model_version: Some("v1".into()),
        },
        analyzer: "golden".into(),
        analyzer_version: "test".into(),
        latency_ms: 30.0,
    }
}

/// Uploads a frame carrying `verdict`; the id of its analysis.
async fn upload(h: &Harness, verdict: Option<EdgeVerdict>) -> Uuid {
    let image = jpeg();
    let id = Uuid::now_v7();
    let mut m = meta(id, &image);
    m.edge = verdict;
    let (status, ack) = put_frame(h, &id.to_string(), Some(DEVICE), frame_body(&m, &image)).await;
    assert_eq!(status, StatusCode::CREATED, "{ack}");
    // The same upload again is the same analysis.
    let (status, again) = put_frame(h, &id.to_string(), Some(DEVICE), frame_body(&m, &image)).await;
    assert_eq!(
        (status, &again["analysis_id"]),
        (StatusCode::OK, &ack["analysis_id"])
    );
    ack["analysis_id"].as_str().unwrap().parse().unwrap()
}

async fn result(h: &Harness, id: Uuid) -> serde_json::Value {
    let (status, body) = get_json(h, &format!("/api/v1/analyses/{id}")).await;
    assert_eq!(status, StatusCode::OK);
    body
}

#[tokio::test]
async fn an_edge_verdict_is_provisional_at_once_and_the_clouds_makes_it_final() {
    let h = harness().await;
    let store = h.state.intake.storage.records.clone();
    let ng = upload(&h, Some(edge(true))).await;
    let provisional = result(&h, ng).await;
    assert_eq!(
        (
            &provisional["status"],
            &provisional["defect_detected"],
            &provisional["model_version"],
            &provisional["defects"][0]["type"]
        ),
        (
            &"provisional".into(),
            &true.into(),
            &"v1".into(),
            &"rust".into()
        ),
        "{provisional}"
    );
    assert_eq!(provisional["verdicts"].as_array().unwrap().len(), 1);
    assert_eq!(provisional["verdicts"][0]["source"], "edge");
    // Only the final result is published: one result message per part.
    assert!(store.outbox(10).await.unwrap().is_empty());

    // The cloud agrees: final, same id, both verdicts.
    let done = store.complete(ng, cloud(true)).await.unwrap();
    assert_eq!(
        (done.id, done.status, done.disagreement),
        (ng, AnalysisStatus::Final, false)
    );
    let sources: Vec<_> = done.verdicts.iter().map(|v| v.source).collect();
    assert_eq!(
        sources,
        [
            wiko_wire::VerdictSource::Edge,
            wiko_wire::VerdictSource::Cloud
        ]
    );
    // Completing again changes nothing.
    assert_eq!(store.complete(ng, cloud(false)).await.unwrap(), done);
    let events = store.outbox(10).await.unwrap();
    assert!(
        matches!(&events[..], [e] if matches!(&e.event, Event::Result(a) if a.id == ng && a.status == AnalysisStatus::Final)),
        "one result event, the final one"
    );

    // The cloud disagrees: the cloud's verdict decides, the disagreement shows.
    let ok_at_edge = upload(&h, Some(edge(false))).await;
    assert_eq!(result(&h, ok_at_edge).await["status"], "provisional");
    let done = store.complete(ok_at_edge, cloud(true)).await.unwrap();
    assert_eq!(
        (done.status, done.defect_detected, done.disagreement),
        (AnalysisStatus::Final, true, true)
    );
    let shown = result(&h, ok_at_edge).await;
    assert_eq!(
        (
            &shown["disagreement"],
            &shown["verdicts"][0]["defect_detected"]
        ),
        (&true.into(), &false.into())
    );

    // A frame without an edge verdict (an older agent) waits as before.
    let plain = upload(&h, None).await;
    assert_eq!(result(&h, plain).await["status"], "pending");
}

#[tokio::test]
async fn an_edge_verdict_that_makes_no_sense_is_refused() {
    let h = harness().await;
    let image = jpeg();
    let id = Uuid::now_v7();
    let mut m = meta(id, &image);
    let mut bad = edge(true);
    bad.model_version = "v1/../x".into();
    m.edge = Some(bad);
    let (status, body) = put_frame(&h, &id.to_string(), Some(DEVICE), frame_body(&m, &image)).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    let mut bad = edge(true);
    bad.defects = vec![bad.defects[0].clone(); wiko_wire::frame::MAX_EDGE_DEFECTS + 1];
    m.edge = Some(bad);
    let (status, body) = put_frame(&h, &id.to_string(), Some(DEVICE), frame_body(&m, &image)).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
}
