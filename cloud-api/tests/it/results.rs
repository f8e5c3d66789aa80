//! Results: filters, cursor paging and images, with a viewer key.

use axum::body::Body;
use axum::http::{Request, StatusCode};
use chrono::{DateTime, TimeDelta, Utc};
use tower::ServiceExt;
use uuid::Uuid;
use wiko_cloud::store::ListFilter;
use wiko_wire::{AnalysisStatus, DefectType, EdgeVerdict};

use crate::harness::*;
use crate::stats::{defect, outcome, part, remote_retyping};

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

/// One stored result as the listing should show it: its id, station, capture time and
/// defect types.
struct Listed {
    id: Uuid,
    station: &'static str,
    at: DateTime<Utc>,
    types: Vec<DefectType>,
}

/// Every (defect type, station, time range) listing, paged two at a time, against `parts`:
/// each matching result exactly once, newest first (ties by id, descending).
async fn check_listings(
    store: &dyn wiko_cloud::store::Store,
    parts: &[Listed],
    base: DateTime<Utc>,
) {
    let kinds = [
        DefectType::Chip,
        DefectType::Scratch,
        DefectType::Crack,
        DefectType::Rust,
    ];
    let ranges = [
        (None, None),
        (
            Some(base - TimeDelta::minutes(6)),
            Some(base - TimeDelta::minutes(1)),
        ),
    ];
    for kind in kinds {
        for station in [None, Some("polish")] {
            for (since, until) in ranges {
                let filter = ListFilter {
                    defect_type: Some(kind.as_str().into()),
                    station: station.map(Into::into),
                    since,
                    until,
                    ..ListFilter::default()
                };
                let mut expected: Vec<(DateTime<Utc>, Uuid)> = parts
                    .iter()
                    .filter(|p| p.types.contains(&kind))
                    .filter(|p| station.is_none_or(|s| s == p.station))
                    .filter(|p| since.is_none_or(|t| p.at >= t))
                    .filter(|p| until.is_none_or(|t| p.at < t))
                    .map(|p| (p.at, p.id))
                    .collect();
                expected.sort_by(|a, b| b.cmp(a));
                let expected: Vec<Uuid> = expected.into_iter().map(|(_, id)| id).collect();
                let mut seen = Vec::new();
                let mut cursor: Option<String> = None;
                loop {
                    let (items, next) = store.list(&filter, cursor.as_deref(), 2).await.unwrap();
                    assert!(items.len() <= 2);
                    seen.extend(items.iter().map(|a| a.id));
                    match next {
                        Some(c) => cursor = Some(c),
                        None => break,
                    }
                    assert!(
                        seen.len() <= parts.len(),
                        "the paging does not end: {filter:?}"
                    );
                }
                assert_eq!(seen, expected, "{filter:?}");
            }
        }
    }
}

#[tokio::test]
async fn the_listing_by_defect_type_pages_each_result_once_newest_first() {
    let h = harness().await;
    let storage = h.state.intake.storage.clone();
    let store = storage.records.as_ref();
    // Whole seconds: the same instant on every backend.
    let base = DateTime::from_timestamp(Utc::now().timestamp(), 0).unwrap();
    use DefectType::{Chip, Crack, Rust, Scratch};
    // (minutes before `base`, station, defects); some share one capture time.
    let plan: [(i64, &str, Vec<DefectType>); 12] = [
        (1, "polish", vec![Chip]),
        (1, "polish", vec![Chip, Scratch]),
        (1, "grinding", vec![Chip]),
        (2, "polish", vec![Scratch]),
        (3, "polish", vec![Chip, Chip, Scratch]),
        (3, "polish", vec![Chip]),
        (3, "polish", vec![Chip]),
        (4, "grinding", vec![Scratch, Chip]),
        (5, "polish", vec![]),
        (6, "polish", vec![Chip]),
        (6, "grinding", vec![Scratch]),
        (8, "polish", vec![Chip]),
    ];
    let mut parts = Vec::new();
    for (n, (minutes, station, types)) in plan.into_iter().enumerate() {
        let at = base - TimeDelta::minutes(minutes);
        let id = part(&storage, n as u32, station, "WK-KN-200", at).await;
        let defects = types.iter().map(|k| defect(*k)).collect();
        store
            .complete(id, outcome(AnalysisStatus::Final, defects))
            .await
            .unwrap();
        parts.push(Listed {
            id,
            station,
            at,
            types,
        });
    }
    // A provisional result (scratch, the remote stage to come), and an edge verdict (rust)
    // the cloud has yet to judge.
    let at = base - TimeDelta::minutes(3);
    let provisional = part(&storage, 100, "polish", "WK-KN-200", at).await;
    store
        .complete(
            provisional,
            outcome(AnalysisStatus::Provisional, vec![defect(Scratch)]),
        )
        .await
        .unwrap();
    parts.push(Listed {
        id: provisional,
        station: "polish",
        at,
        types: vec![Scratch],
    });
    let image = jpeg();
    let frame = Uuid::now_v7();
    let mut m = meta(frame, &image);
    m.station = "polish".into();
    m.captured_at = base - TimeDelta::minutes(2);
    m.edge = Some(EdgeVerdict {
        defect_detected: true,
        score: 3.0,
        score_threshold: 1.0,
        model_version: "v1".into(),
        defects: vec![defect(Rust)],
        latency_ms: 1.0,
        alerted: false,
    });
    let (s, ack) = put_frame(&h, &frame.to_string(), Some(DEVICE), frame_body(&m, &image)).await;
    assert_eq!(s, StatusCode::CREATED, "{ack}");
    let edge: Uuid = ack["analysis_id"].as_str().unwrap().parse().unwrap();
    parts.push(Listed {
        id: edge,
        station: "polish",
        at: m.captured_at,
        types: vec![Rust],
    });
    check_listings(store, &parts, base).await;

    // The cloud's completion retypes the edge verdict (rust to crack), the remote stage the
    // provisional result (scratch to crack): each leaves its old type for the new one.
    store
        .complete(edge, outcome(AnalysisStatus::Final, vec![defect(Crack)]))
        .await
        .unwrap();
    let enrichment = remote_retyping(true, vec![defect(Crack)]);
    store.enrich(provisional, enrichment).await.unwrap();
    for p in parts
        .iter_mut()
        .filter(|p| p.id == edge || p.id == provisional)
    {
        p.types = vec![Crack];
    }
    check_listings(store, &parts, base).await;
}

/// A pending result with a row of `analysis_defects` left behind (a completion whose commit
/// was lost halfway, on an older schema): its completion replaces the row, where it failed on
/// the (result, type) key at every retry.
#[tokio::test]
async fn a_completion_replaces_a_stale_defect_row_of_its_result() {
    if std::env::var("WIKOTEST_BACKEND").as_deref() == Ok("postgres") {
        return; // the stale row is written into the embedded store's file
    }
    let h = harness().await;
    let storage = h.state.intake.storage.clone();
    let store = storage.records.as_ref();
    let id = part(&storage, 1, "polish", "WK-KN-200", Utc::now()).await;
    let db = rusqlite::Connection::open(h.place.dir.path().join("wiko.db")).unwrap();
    db.execute(
        "INSERT INTO analysis_defects (analysis_id, type, captured_at, found)
         SELECT id, 'chip', timestamp, 1 FROM analyses WHERE id = ?1",
        [id.to_string()],
    )
    .unwrap();
    let defects = vec![defect(DefectType::Chip), defect(DefectType::Scratch)];
    store
        .complete(id, outcome(AnalysisStatus::Final, defects))
        .await
        .unwrap();
    for kind in ["chip", "scratch"] {
        let filter = ListFilter {
            defect_type: Some(kind.into()),
            ..ListFilter::default()
        };
        let (items, next) = store.list(&filter, None, 10).await.unwrap();
        let ids: Vec<Uuid> = items.iter().map(|a| a.id).collect();
        assert_eq!((ids, next), (vec![id], None), "{kind}");
    }
}
