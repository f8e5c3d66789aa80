#![allow(clippy::unwrap_used)]

use axum::http::{HeaderMap, StatusCode, header};
use axum::response::IntoResponse;
use wiko_inspect::{FitOptions, Image};
use wiko_synth::{self as synthetic, SHAPES, SynthDefect};

use super::*;

const SKU: &str = "WK-KN-200";

fn jpeg(defect: Option<SynthDefect>, seed: u64) -> Vec<u8> {
    synthetic::part_jpeg(&synthetic::render(&SHAPES[0], defect, seed)).unwrap()
}

/// A model file fitted on thirty good parts, as the cloud serves it: its threshold, set for
/// one good part in a hundred rejected, leaves the good parts these tests judge a margin (with
/// eight, one good part in about 150 lay within a few percent of it either way).
fn model_file() -> Vec<u8> {
    let good: Vec<Image> = (0..30)
        .map(|i| wiko_inspect::decode(&jpeg(None, 100 + i), DecodeLimits::default()).unwrap())
        .collect();
    Model::fit(&good, &FitOptions::default())
        .unwrap()
        .to_bytes()
}

#[test]
fn without_a_model_frames_stay_unjudged_and_with_one_they_are_judged_after_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let models = Models::open(dir.path()).unwrap();
    let rusty = jpeg(Some(SynthDefect::Rust), 900);
    assert_eq!(models.judge(SKU, &rusty), None);

    models.install(SKU, "v1", "\"e1\"", &model_file()).unwrap();
    let ng = models.judge(SKU, &rusty).unwrap();
    assert!(ng.defect_detected && !ng.defects.is_empty(), "{ng:?}");
    assert_eq!(ng.model_version, "v1");
    assert!(ng.latency_ms > 0.0);
    let ok = models.judge(SKU, &jpeg(None, 901)).unwrap();
    assert!(!ok.defect_detected, "{ok:?}");
    // Not an image: no verdict, the cloud judges it.
    assert_eq!(models.judge(SKU, b"not a jpeg"), None);

    // After a restart, without the cloud: the kept model judges the same.
    drop(models);
    let again = Models::open(dir.path()).unwrap();
    assert_eq!(again.current(SKU), Some(("v1".into(), "\"e1\"".into())));
    let after = again.judge(SKU, &rusty).unwrap();
    let timeless = |v: EdgeVerdict| EdgeVerdict {
        latency_ms: 0.0,
        ..v
    };
    assert_eq!(timeless(after), timeless(ng));
}

#[test]
fn a_model_that_does_not_load_is_refused_and_the_previous_one_kept() {
    let dir = tempfile::tempdir().unwrap();
    let models = Models::open(dir.path()).unwrap();
    let file = model_file();
    models.install(SKU, "v1", "\"e1\"", &file).unwrap();
    let damaged = &file[..file.len() / 2];
    let refused = models.install(SKU, "v2", "\"e2\"", damaged).unwrap_err();
    assert!(matches!(refused, EdgeError::Refused { .. }), "{refused}");
    assert_eq!(models.current(SKU), Some(("v1".into(), "\"e1\"".into())));
    // Nor was it written over the kept one.
    drop(models);
    let again = Models::open(dir.path()).unwrap();
    assert_eq!(again.current(SKU).unwrap().0, "v1");

    // A kept file damaged on disk is skipped at start; the next pull replaces it.
    std::fs::write(
        dir.path().join(format!("{SKU}.{EXTENSION}")),
        b"{}\ngarbage",
    )
    .unwrap();
    let skipped = Models::open(dir.path()).unwrap();
    assert_eq!(skipped.current(SKU), None);
}

/// A cloud serving one model file, counting full downloads.
async fn cloud(file: Vec<u8>) -> (String, Arc<std::sync::atomic::AtomicUsize>) {
    let sent = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counter = sent.clone();
    let app = axum::Router::new().route(
        "/api/v1/skus/{sku}/model/file",
        axum::routing::get(
            move |axum::extract::Path(sku): axum::extract::Path<String>, headers: HeaderMap| {
                let (file, counter) = (file.clone(), counter.clone());
                async move {
                    if sku != SKU {
                        return StatusCode::NOT_FOUND.into_response();
                    }
                    let tags = [
                        (header::ETAG.as_str(), "\"e1\""),
                        (wiko_wire::golden::MODEL_VERSION_HEADER, "v1"),
                    ];
                    if headers
                        .get(header::IF_NONE_MATCH)
                        .is_some_and(|t| t == "\"e1\"")
                    {
                        return (StatusCode::NOT_MODIFIED, tags).into_response();
                    }
                    counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                    (tags, file).into_response()
                }
            },
        ),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    (url, sent)
}

#[tokio::test]
async fn a_pull_installs_the_clouds_model_once_and_an_unknown_sku_stays_unjudged() {
    let (url, sent) = cloud(model_file()).await;
    let dir = tempfile::tempdir().unwrap();
    let models = Arc::new(Models::open(dir.path()).unwrap());
    let client = Client::new(&url, "key", Duration::from_secs(10)).unwrap();
    pull(&models, &client, SKU).await;
    assert_eq!(models.current(SKU), Some(("v1".into(), "\"e1\"".into())));
    pull(&models, &client, SKU).await;
    assert_eq!(
        sent.load(std::sync::atomic::Ordering::SeqCst),
        1,
        "not sent again"
    );
    pull(&models, &client, "WK-OTHER").await;
    assert_eq!(models.current("WK-OTHER"), None);
    // The cloud gone: the model stays.
    let gone = Client::new("http://127.0.0.1:1", "key", Duration::from_secs(1)).unwrap();
    pull(&models, &gone, SKU).await;
    assert!(models.judge(SKU, &jpeg(None, 5)).is_some());
}

/// Records the uploads it is given, in order; answers each as accepted.
#[derive(Clone, Default)]
struct Recorder(Arc<std::sync::Mutex<Vec<wiko_wire::FrameMeta>>>);

impl crate::sync::Uplink for Recorder {
    async fn upload(
        &self,
        meta: &wiko_wire::FrameMeta,
        _jpeg: Vec<u8>,
    ) -> Result<wiko_wire::IngestAck, crate::sync::UploadError> {
        self.0.lock().unwrap().push(meta.clone());
        Ok(wiko_wire::IngestAck {
            frame_id: meta.frame_id,
            outcome: wiko_wire::IngestOutcome::Created,
            analysis_id: uuid::Uuid::now_v7(),
        })
    }
}

/// A station judging with the SKU's model ("v1") into a buffer of `max_disk_bytes` whose
/// oldest frames make room, alerts off: its buffer, its context and its camera.
fn judging_station(
    dir: &std::path::Path,
    max_disk_bytes: u64,
) -> (
    Arc<crate::buffer::Buffer>,
    Arc<crate::source::Context>,
    crate::config::CameraConfig,
) {
    use crate::buffer::{Buffer, Limits};
    use crate::config::{Synchronous, WhenFull};

    let models = Arc::new(Models::open(&dir.join("models")).unwrap());
    models.install(SKU, "v1", "\"e1\"", &model_file()).unwrap();
    let limits = Limits {
        max_disk_bytes,
        min_free_bytes: 0,
        when_full: WhenFull::DropOldest,
        synchronous: Synchronous::Normal,
    };
    let (buffer, _) = Buffer::open(&dir.join("buffer.db"), limits).unwrap();
    let buffer = Arc::new(buffer);
    let ctx = Arc::new(crate::source::Context {
        buffer: buffer.clone(),
        wake: Arc::new(tokio::sync::Notify::new()),
        device_id: "pc1".into(),
        facility: "yangjiang".into(),
        health: Arc::new(crate::source::health::Registry::default()),
        edge: Some(models),
        alerts: None,
    });
    let cam = toml::from_str(
        r#"
name = "cam"
line = "l1"
station = "grinding"
sku = "WK-KN-200"
source = { type = "synthetic" }
trigger = { type = "http" }
"#,
    )
    .unwrap();
    (buffer, ctx, cam)
}

#[tokio::test]
async fn with_the_cloud_down_and_the_buffer_full_ng_frames_are_kept_and_uploaded_first() {
    use crate::config::SyncConfig;

    let dir = tempfile::tempdir().unwrap();
    let parts: Vec<(bool, Vec<u8>)> = (0..12u64)
        .map(|i| {
            let ng = i % 4 == 1;
            (ng, jpeg(ng.then_some(SynthDefect::Rust), 2000 + i))
        })
        .collect();
    let largest = parts.iter().map(|(_, j)| j.len() as u64).max().unwrap();
    // Room for six frames: the cloud is down, twelve parts come.
    let (buffer, ctx, cam) =
        judging_station(dir.path(), 6 * (largest + crate::buffer::ROW_OVERHEAD));
    let mut ids = Vec::new();
    for (ng, jpeg) in &parts {
        let id = crate::source::store(&cam, &ctx, crate::source::Capture::jpeg(jpeg.clone()))
            .await
            .unwrap();
        assert_eq!(
            id.defect_detected,
            Some(*ng),
            "the verdict comes back with the frame"
        );
        ids.push((id.frame_id, *ng));
    }
    let ng_ids: Vec<_> = ids
        .iter()
        .filter(|(_, ng)| *ng)
        .map(|(id, _)| *id)
        .collect();
    assert_eq!(ng_ids.len(), 3);
    let stats = buffer.stats().unwrap();
    assert!(stats.evicted_total >= 6, "{stats:?}");

    // The cloud is back: every NG part first, with its edge verdict; then the newest OK parts.
    let cloud = Recorder::default();
    let sync = SyncConfig {
        endpoint: "http://127.0.0.1:1".into(),
        api_key: "k".into(),
        concurrency: 1,
        request_timeout: Duration::from_secs(5),
        backoff_initial: Duration::from_millis(100),
        backoff_max: Duration::from_secs(1),
        poll_interval: Duration::from_millis(20),
        heartbeat: None,
    };
    let stop = CancellationToken::new();
    let uploader = crate::sync::Uploader::with_uplink(
        buffer.clone(),
        cloud.clone(),
        &sync,
        Arc::new(tokio::sync::Notify::new()),
    );
    let task = tokio::spawn(uploader.run(stop.clone()));
    while buffer.stats().unwrap().frames > 0 {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    stop.cancel();
    task.await.unwrap();
    let uploaded = cloud.0.lock().unwrap().clone();
    let first: Vec<_> = uploaded[..3].iter().map(|m| m.frame_id).collect();
    assert_eq!(first, ng_ids, "NG first, oldest first");
    assert!(uploaded[..3].iter().all(|m| {
        m.edge
            .as_ref()
            .is_some_and(|e| e.defect_detected && e.model_version == "v1")
    }));
    let ok_kept: Vec<_> = uploaded[3..].iter().map(|m| m.frame_id).collect();
    let newest_ok: Vec<_> = ids
        .iter()
        .filter(|(_, ng)| !ng)
        .map(|(id, _)| *id)
        .rev()
        .take(ok_kept.len())
        .collect::<Vec<_>>()
        .into_iter()
        .rev()
        .collect();
    assert_eq!(ok_kept, newest_ok, "the oldest OK parts were evicted");
    assert!(
        uploaded[3..]
            .iter()
            .all(|m| m.edge.as_ref().is_some_and(|e| !e.defect_detected))
    );
}

// See: issue #21
#[tokio::test]
async fn a_frame_the_buffer_refuses_still_brings_back_its_verdict() {
    let dir = tempfile::tempdir().unwrap();
    let parts: Vec<(bool, Vec<u8>)> = [(true, 1), (true, 2), (false, 3)]
        .into_iter()
        .map(|(ng, i)| (ng, jpeg(ng.then_some(SynthDefect::Rust), 3000 + i)))
        .collect();
    let largest = parts.iter().map(|(_, j)| j.len() as u64).max().unwrap();
    // Room for one frame: the first NG part (nobody alerts it: alerts off, cloud down) is
    // never evicted, so the next parts are refused.
    let (_buffer, ctx, cam) = judging_station(dir.path(), largest + crate::buffer::ROW_OVERHEAD);
    let store = |jpeg: &Vec<u8>| {
        crate::source::store(&cam, &ctx, crate::source::Capture::jpeg(jpeg.clone()))
    };
    assert_eq!(
        store(&parts[0].1).await.unwrap().defect_detected,
        Some(true)
    );
    for (ng, jpeg) in &parts[1..] {
        let refused = store(jpeg).await.unwrap_err();
        assert_eq!(refused.defect_detected, Some(*ng), "{refused:?}");
        assert!(
            refused.reason.contains("NG parts nobody has alerted yet"),
            "{refused:?}"
        );
    }
}
