use chrono::TimeZone;
use uuid::Uuid;

use super::*;
use crate::frame::MAX_ID_LEN;

fn meta() -> FrameMeta {
    FrameMeta {
        frame_id: Uuid::now_v7(),
        device_id: "line1-pc".into(),
        facility: "yangjiang".into(),
        line: "l1".into(),
        station: "polish".into(),
        sku: "WK-KN-200".into(),
        part_id: Some("P-0001".into()),
        lot: None,
        captured_at: chrono::Utc.with_ymd_and_hms(2026, 11, 26, 8, 0, 0).unwrap(),
        seq: 7,
        image_blake3: "ab".repeat(32),
        edge: None,
    }
}

#[test]
fn frame_meta_round_trips_through_json() {
    let m = meta();
    let json = serde_json::to_string(&m).unwrap();
    assert!(!json.contains("lot"), "absent options are omitted: {json}");
    let back: FrameMeta = serde_json::from_str(&json).unwrap();
    assert_eq!(back, m);
}

#[test]
fn frame_meta_rejects_unknown_fields() {
    let mut v = serde_json::to_value(meta()).unwrap();
    v["surprise"] = serde_json::json!(1);
    assert!(serde_json::from_value::<FrameMeta>(v).is_err());
}

#[test]
fn frame_meta_validation_names_the_field() {
    assert_eq!(meta().validate(), Ok(()));
    let mut m = meta();
    m.station = "a/b".into();
    assert_eq!(m.validate(), Err(MetaError::BadChars { field: "station" }));
    let mut m = meta();
    m.sku = String::new();
    assert_eq!(m.validate(), Err(MetaError::Empty { field: "sku" }));
    let mut m = meta();
    m.image_blake3 = "AB".repeat(32);
    assert_eq!(m.validate(), Err(MetaError::BadDigest));
    let mut m = meta();
    m.lot = Some("x".repeat(MAX_ID_LEN + 1));
    assert_eq!(m.validate(), Err(MetaError::TooLong { field: "lot" }));
    for dots in [".", ".."] {
        let mut m = meta();
        m.facility = dots.into();
        assert_eq!(m.validate(), Err(MetaError::Dots { field: "facility" }));
    }
    let mut m = meta();
    m.line = "l.1".into();
    assert_eq!(m.validate(), Ok(()), "a dot inside a name is fine");
}

#[test]
fn an_edge_verdict_travels_in_the_meta_and_old_agents_leave_it_out() {
    let json = serde_json::to_string(&meta()).unwrap();
    assert!(!json.contains("edge"), "{json}");
    let mut m = meta();
    m.edge = Some(EdgeVerdict {
        defect_detected: true,
        score: 2.5,
        score_threshold: 1.0,
        model_version: "v3".into(),
        defects: vec![Defect::from_region(
            RegionFigures {
                kind: "rust",
                bbox: [1, 2, 3, 4],
                area: 40,
                peak: 4.0,
                shift: -3.0,
            },
            1.0,
        )],
        latency_ms: 18.0,
        alerted: false,
    });
    assert_eq!(m.validate(), Ok(()));
    let back: FrameMeta = serde_json::from_str(&serde_json::to_string(&m).unwrap()).unwrap();
    assert_eq!(back, m);
    let edge = m.edge.as_ref().unwrap();
    assert_eq!(edge.defects[0].kind, DefectType::Rust);
    assert_eq!(edge.defects[0].severity, "high");
    let v = edge.verdict();
    assert_eq!(
        (v.source, v.defect_detected, v.model.as_deref()),
        (VerdictSource::Edge, Some(true), Some("v3"))
    );
    let mut bad = m.clone();
    bad.edge.as_mut().unwrap().score = f32::NAN;
    assert_eq!(bad.validate(), Err(MetaError::EdgeNotFinite));
    let mut bad = m;
    bad.edge.as_mut().unwrap().model_version = "v/3".into();
    assert!(bad.validate().is_err());
}

#[test]
fn defect_type_names_round_trip() {
    for t in DefectType::ALL {
        assert_eq!(DefectType::parse(t.as_str()), Some(t));
        let json = serde_json::to_string(&t).unwrap();
        assert_eq!(json, format!("\"{}\"", t.as_str()));
    }
    assert_eq!(DefectType::parse("Scratch"), None);
}

#[test]
fn alert_topics_follow_the_station_path() {
    assert_eq!(
        Topic::Alert.path("yangjiang", "l1", "polish"),
        "wiko/yangjiang/l1/polish/alert"
    );
    assert_eq!(
        Topic::Result.path("yangjiang", "l1", "polish"),
        "wiko/yangjiang/l1/polish/result"
    );
}

#[test]
fn error_body_has_the_documented_shape() {
    let body = ErrorBody {
        error: ErrorDetail {
            code: "frame_conflict".into(),
            message: "m".into(),
        },
    };
    assert_eq!(
        serde_json::to_value(&body).unwrap(),
        serde_json::json!({"error": {"code": "frame_conflict", "message": "m"}})
    );
}

#[test]
fn error_codes_round_trip_by_name_and_are_unique() {
    let mut names = std::collections::HashSet::new();
    for code in ErrorCode::ALL {
        assert!(names.insert(code.as_str()), "{code:?} named twice");
        assert_eq!(ErrorCode::parse(code.as_str()), Some(*code));
    }
    let body = ErrorBody::new(ErrorCode::FrameConflict, "x");
    let json = serde_json::to_value(&body).unwrap();
    assert_eq!(json["error"]["code"], "frame_conflict");
    assert_eq!(body.code(), Some(ErrorCode::FrameConflict));
    assert_eq!(ErrorCode::parse("from_a_later_version"), None);
}

#[test]
fn capability_figures_come_from_the_four_counts() {
    let c = Capability::new("WK".into(), None, [8, 2, 30, 2, 1]);
    assert_eq!(c.precision, Some(0.8));
    assert_eq!(c.recall, Some(0.8));
    assert_eq!(c.false_reject_rate, Some(2.0 / 32.0));
    let none = Capability::new("WK".into(), None, [0; 5]);
    assert_eq!((none.precision, none.recall), (None, None));
    assert!(FeedbackVerdict::FalseNg.fits(true) && !FeedbackVerdict::FalseNg.fits(false));
    assert!(FeedbackVerdict::FalseOk.fits(false) && !FeedbackVerdict::FalseOk.fits(true));
    for v in FeedbackVerdict::ALL {
        assert_eq!(FeedbackVerdict::parse(v.as_str()), Some(v));
        assert_eq!(serde_json::to_value(v).unwrap(), v.as_str());
    }
}

#[test]
fn stats_rows_omit_the_dimensions_not_grouped_by() {
    for d in StatsDimension::ALL {
        assert_eq!(StatsDimension::parse(d.as_str()), Some(d));
        assert_eq!(serde_json::to_value(d).unwrap(), d.as_str());
    }
    assert_eq!(
        StatsDimension::parse("product_sku"),
        Some(StatsDimension::Sku)
    );
    let row = StatsRow {
        bucket_start: chrono::Utc.with_ymd_and_hms(2026, 11, 26, 8, 0, 0).unwrap(),
        facility: None,
        line: None,
        station: Some("polish".into()),
        product_sku: None,
        device_id: None,
        defect_type: None,
        shift: None,
        counts: StatsCounts::new(10, 8, 2, 3),
    };
    let v = serde_json::to_value(&row).unwrap();
    assert_eq!(v["station"], "polish");
    assert!(v.get("facility").is_none());
    assert_eq!(v["parts"], 10);
    assert_eq!(v["first_pass_yield"], 0.75);
    assert_eq!(serde_json::from_value::<StatsRow>(v).unwrap(), row);
}

#[test]
fn a_camera_status_this_build_does_not_know_is_read_as_unknown() {
    use crate::health::{CameraHealth, CameraStatus};
    let camera = serde_json::json!({
        "name": "c1",
        "source": "genicam",
        "status": "overheated",
        "fps": 0.0,
        "frames_total": 0,
        "errors_total": 0,
        "reopens_total": 0,
        "triggers_missed_total": 0,
    });
    let camera: CameraHealth = serde_json::from_value(camera).unwrap();
    assert_eq!(camera.status, CameraStatus::Unknown);
    for status in CameraStatus::ALL {
        let json = serde_json::to_value(status).unwrap();
        assert_eq!(json, status.as_str());
        assert_eq!(
            serde_json::from_value::<CameraStatus>(json).unwrap(),
            status
        );
    }
}
