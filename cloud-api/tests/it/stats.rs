//! `GET /api/v1/stats`: the hourly aggregates kept with each result agree with a scan of the
//! results, after many completions, enrichments and failures, on whichever backend the suite
//! runs on.

use std::time::Duration;

use axum::http::StatusCode;
use bytes::Bytes;
use chrono::{DateTime, TimeDelta, Utc};
use uuid::Uuid;
use wiko_cloud::stats::{StatsRequest, stats};
use wiko_cloud::store::{
    Call, Enrichment, Image, Judgement, ListFilter, Origin, Outcome, StatsSource, Storage,
};
use wiko_wire::{
    AnalysisStatus, Defect, DefectType, StatsBucket, StatsDimension, Verdict, VerdictSource,
};

use crate::harness::*;

/// A part of `station` and `sku` captured at `at`, stored (pending).
pub async fn part(storage: &Storage, n: u32, station: &str, sku: &str, at: DateTime<Utc>) -> Uuid {
    let bytes = Bytes::from(format!("stats image {n}"));
    let image = Image {
        blake3: wiko_wire::frame::image_digest(&bytes),
        bytes,
        width: 64,
        height: 48,
    };
    let origin = Origin::Call(Call {
        facility: if n.is_multiple_of(5) {
            "shenzhen"
        } else {
            "yangjiang"
        }
        .into(),
        line: "l1".into(),
        station: station.into(),
        product_sku: sku.into(),
        part_id: None,
        received_at: at,
    });
    storage
        .put_part(origin, image, Duration::from_secs(3600))
        .await
        .unwrap()
        .1
}

pub fn defect(kind: DefectType) -> Defect {
    Defect {
        kind,
        severity: "high".into(),
        confidence: 0.9,
        bbox: [1, 2, 3, 4],
        description: String::new(),
    }
}

/// A verdict: NG with `defects`, OK without; `status` as given.
pub fn outcome(status: AnalysisStatus, defects: Vec<Defect>) -> Outcome {
    let ng = !defects.is_empty();
    Outcome {
        judgement: Judgement {
            status,
            defect_detected: ng,
            defects,
            score: Some(if ng { 2.0 } else { 0.5 }),
            score_threshold: Some(1.0),
            confidence: Some(0.9),
            recommendation: if ng { "reject" } else { "accept" }.into(),
            model_version: Some("v1".into()),
        },
        analyzer: "golden".into(),
        analyzer_version: "test".into(),
        latency_ms: 1.0,
    }
}

/// A part at the polish station completed now, NG (one chip) or OK.
pub async fn completed(storage: &Storage, n: u32, ng: bool) -> Uuid {
    let id = part(storage, n, "polish", "WK-KN-200", Utc::now()).await;
    judge(storage, id, ng).await;
    id
}

/// Completes the part `id`, final: NG (one chip) or OK.
pub async fn judge(storage: &Storage, id: Uuid, ng: bool) {
    let defects = if ng {
        vec![defect(DefectType::Chip)]
    } else {
        Vec::new()
    };
    storage
        .records
        .complete(id, outcome(AnalysisStatus::Final, defects))
        .await
        .unwrap();
}

/// A remote model's enrichment of a result: its verdict, and the result's defects retyped to
/// `defects`.
pub fn remote_retyping(defect_detected: bool, defects: Vec<Defect>) -> Enrichment {
    Enrichment {
        verdict: Verdict {
            source: VerdictSource::Remote,
            analyzer: "azure_openai".into(),
            model: None,
            defect_detected: Some(defect_detected),
            score: None,
            defects: defects.clone(),
            summary: None,
            latency_ms: None,
            usage: None,
            error: None,
            alerted: false,
        },
        defects,
        disagreement: false,
    }
}

fn request(group_by: Vec<StatsDimension>, bucket: StatsBucket, filter: ListFilter) -> StatsRequest {
    let now = Utc::now();
    StatsRequest {
        since: now - TimeDelta::hours(30),
        until: now,
        bucket,
        utc_offset_minutes: 480,
        filter,
        group_by,
        shift_starts: Vec::new(),
    }
}

#[tokio::test]
async fn the_hourly_aggregates_match_a_scan_of_the_results_after_many_completions() {
    let h = harness().await;
    let storage = h.state.intake.storage.clone();
    let store = storage.records.as_ref();
    let now = Utc::now();
    let stations = ["grinding", "polish", "etch"];
    let skus = ["WK-KN-200", "WK-KN-150"];
    let kinds = [DefectType::Scratch, DefectType::Chip, DefectType::Rust];
    let mut provisional = Vec::new();
    for n in 0..240u32 {
        let at = now - TimeDelta::minutes(i64::from(n) * 7);
        let id = part(
            &storage,
            n,
            stations[n as usize % 3],
            skus[n as usize % 2],
            at,
        )
        .await;
        if n.is_multiple_of(17) {
            continue; // still pending: not counted
        }
        let defects: Vec<Defect> = match n % 4 {
            0 => vec![defect(kinds[n as usize % 3])],
            1 => vec![
                defect(DefectType::Rust),
                defect(DefectType::Rust),
                defect(DefectType::Chip),
            ],
            _ => Vec::new(),
        };
        let status = match n % 11 {
            3 => AnalysisStatus::Failed,
            5 => AnalysisStatus::NotCalibrated,
            7 | 8 => AnalysisStatus::Provisional,
            _ => AnalysisStatus::Final,
        };
        let judged = matches!(status, AnalysisStatus::Final | AnalysisStatus::Provisional);
        let o = outcome(status, if judged { defects } else { Vec::new() });
        store.complete(id, o.clone()).await.unwrap();
        // Completing again changes nothing.
        if n.is_multiple_of(13) {
            store.complete(id, o).await.unwrap();
        }
        if status == AnalysisStatus::Provisional {
            provisional.push(id);
        }
    }
    // Enrichment retypes the defects of provisional results.
    for id in &provisional {
        let current = store.get(*id).await.unwrap();
        let retyped: Vec<Defect> = current
            .defects
            .iter()
            .map(|_| defect(DefectType::Crack))
            .collect();
        let enrichment = remote_retyping(current.defect_detected, retyped);
        store.enrich(*id, enrichment.clone()).await.unwrap();
        store.enrich(*id, enrichment).await.unwrap();
    }
    use StatsDimension as D;
    // Over three days, whole UTC days are read from the daily rollup (one bucket, or days at
    // offset 0) and the hours around them by the hour.
    let days = |group_by, bucket, filter, offset| StatsRequest {
        since: now - TimeDelta::days(3),
        utc_offset_minutes: offset,
        ..request(group_by, bucket, filter)
    };
    let cases = [
        request(vec![], StatsBucket::All, ListFilter::default()),
        days(
            vec![D::Station],
            StatsBucket::All,
            ListFilter::default(),
            480,
        ),
        days(
            vec![D::DefectType],
            StatsBucket::All,
            ListFilter::default(),
            480,
        ),
        days(vec![D::Sku], StatsBucket::Day, ListFilter::default(), 0),
        days(
            vec![D::Station, D::DefectType],
            StatsBucket::Day,
            ListFilter::default(),
            0,
        ),
        days(
            vec![],
            StatsBucket::Day,
            ListFilter {
                defect_type: Some("rust".into()),
                ..ListFilter::default()
            },
            0,
        ),
        days(vec![D::Shift], StatsBucket::All, ListFilter::default(), 480),
        request(vec![D::Station], StatsBucket::Hour, ListFilter::default()),
        request(
            vec![D::Facility, D::Sku],
            StatsBucket::Day,
            ListFilter::default(),
        ),
        request(vec![D::DefectType], StatsBucket::All, ListFilter::default()),
        request(
            vec![D::Station, D::DefectType],
            StatsBucket::Day,
            ListFilter::default(),
        ),
        request(vec![D::Device], StatsBucket::All, ListFilter::default()),
        request(
            vec![D::Station],
            StatsBucket::Hour,
            ListFilter {
                product_sku: Some("WK-KN-200".into()),
                defect_detected: Some(true),
                ..ListFilter::default()
            },
        ),
        request(
            vec![D::Sku],
            StatsBucket::Day,
            ListFilter {
                defect_type: Some("rust".into()),
                ..ListFilter::default()
            },
        ),
    ];
    for case in &cases {
        let kept = stats(store, case, StatsSource::Aggregates)
            .await
            .unwrap()
            .unwrap();
        let scanned = stats(store, case, StatsSource::Results)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(
            kept, scanned,
            "group_by {:?}, filter {:?}",
            case.group_by, case.filter
        );
        assert!(!kept.rows.is_empty());
    }
    let all = stats(store, &cases[0], StatsSource::Aggregates)
        .await
        .unwrap()
        .unwrap();
    let pending = (0..240).filter(|n: &u32| n.is_multiple_of(17)).count() as u64;
    assert_eq!(all.totals.parts, 240 - pending);
    let types = stats(store, &cases[9], StatsSource::Aggregates)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        types.totals, all.totals,
        "a part with two defect types counts once"
    );
    assert!(
        types
            .rows
            .iter()
            .any(|r| r.defect_type == Some(wiko_wire::DefectType::Crack))
    );
}

#[tokio::test]
async fn the_stats_route_answers_a_viewer_and_refuses_what_it_cannot_count() {
    let h = harness().await;
    let storage = h.state.intake.storage.clone();
    for (n, ng) in [(1, true), (2, false), (3, false), (4, false)] {
        completed(&storage, n, ng).await;
    }
    let (s, body) = get_json(&h, "/api/v1/stats?group_by=station,defect_type&bucket=hour").await;
    assert_eq!(s, StatusCode::OK, "{body}");
    assert_eq!(body["totals"]["parts"], 4);
    assert_eq!(body["totals"]["ng"], 1);
    assert_eq!(body["totals"]["first_pass_yield"], 0.75);
    assert_eq!(body["rows"][0]["defect_type"], "chip");
    assert_eq!(body["rows"][0]["station"], "polish");
    let (s, body) = get_json(&h, "/api/v1/stats?sku=WK-KN-200&defect_detected=false").await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(body["totals"]["parts"], 3);
    for bad in [
        "/api/v1/stats?group_by=colour",
        "/api/v1/stats?bucket=hour&since=2020-01-01T00:00:00Z",
        "/api/v1/stats?since=2030-01-01T00:00:00Z&until=2029-01-01T00:00:00Z",
        "/api/v1/stats?defect_type=wobble",
        "/api/v1/stats?feedback=none",
    ] {
        let (s, e) = get_json(&h, bad).await;
        assert_eq!(
            (s, code(&e)),
            (StatusCode::BAD_REQUEST, "invalid_query"),
            "{bad}"
        );
    }
    let (s, _) = call(&h, "GET", "/api/v1/stats", DEVICE).await;
    assert_eq!(s, StatusCode::FORBIDDEN);
}

#[tokio::test]
async fn the_stats_route_groups_by_the_plants_shifts() {
    let h = harness().await;
    let storage = h.state.intake.storage.clone();
    // The plant's shifts (the default [dashboard]): 06:00, 14:00, 22:00.
    let at = |s: &str| s.parse::<DateTime<Utc>>().unwrap();
    for (n, t, ng) in [
        (1, "2026-12-01T05:30:00Z", true),
        (2, "2026-12-01T07:10:00Z", false),
        (3, "2026-12-01T07:40:00Z", true),
        (4, "2026-12-01T23:00:00Z", false),
    ] {
        let id = part(&storage, n, "polish", "WK-KN-200", at(t)).await;
        judge(&storage, id, ng).await;
    }
    let range = "since=2026-12-01T00:00:00Z&until=2026-12-02T00:00:00Z";
    let shifts = |body: &serde_json::Value| -> Vec<(String, u64, u64)> {
        body["rows"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| {
                (
                    r["shift"].as_str().unwrap().to_string(),
                    r["parts"].as_u64().unwrap(),
                    r["ng"].as_u64().unwrap(),
                )
            })
            .collect()
    };
    // UTC: 05:30 is still the night shift begun at 22:00 the day before.
    let (s, body) = get_json(&h, &format!("/api/v1/stats?group_by=shift&{range}")).await;
    assert_eq!(s, StatusCode::OK, "{body}");
    assert_eq!(
        shifts(&body),
        [("06:00".to_string(), 2, 1), ("22:00".into(), 2, 1)]
    );
    assert_eq!(body["totals"]["parts"], 4);
    // UTC+8: 13:30 and 07:00 local are the early shift, 15:10 and 15:40 the late one.
    let (s, body) = get_json(
        &h,
        &format!("/api/v1/stats?group_by=shift&utc_offset_minutes=480&{range}"),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{body}");
    assert_eq!(
        shifts(&body),
        [("06:00".to_string(), 2, 1), ("14:00".into(), 2, 1)]
    );
}
