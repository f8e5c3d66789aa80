use std::collections::BTreeMap;

use chrono::{Duration, TimeZone, Utc};
use wiko_wire::{BufferHealth, CameraHealth, CameraStatus, DeviceState, Heartbeat};

use super::{FleetConfig, describe, state};
use crate::store::DeviceRecord;

fn heartbeat(cameras: &[CameraStatus], oldest_unsynced_seconds: f64) -> Heartbeat {
    Heartbeat {
        schema_version: 1,
        device_id: "line-pc-1".into(),
        facility: "yangjiang-2".into(),
        line: "L1".into(),
        station: "S1".into(),
        version: "0.1.0".into(),
        sent_at: Utc.with_ymd_and_hms(2026, 12, 6, 8, 0, 0).unwrap(),
        uptime_seconds: 3600,
        interval_seconds: 60,
        cameras: cameras
            .iter()
            .enumerate()
            .map(|(i, s)| CameraHealth {
                name: format!("cam{i}"),
                source: "genicam".into(),
                status: *s,
                last_frame_at: None,
                frame_age_seconds: Some(0.05),
                fps: 20.0,
                frames_total: 100,
                errors_total: 0,
                reopens_total: 0,
                triggers_missed_total: 0,
                last_error: None,
            })
            .collect(),
        buffer: BufferHealth {
            frames: 3,
            bytes: 300_000,
            oldest_unsynced_seconds,
            dead_letters: 0,
            evicted_total: 0,
            by_camera: BTreeMap::new(),
            alerts_queued: 0,
            alerts_dropped_total: 0,
            unalerted_frames: 0,
            unalerted_bytes: 0,
        },
        disk_free_bytes: Some(10 << 30),
        models: BTreeMap::new(),
        dead_letters: Vec::new(),
        commands_done: Vec::new(),
        degraded: Vec::new(),
    }
}

#[test]
fn each_state_follows_from_the_last_heartbeat() {
    let cfg = FleetConfig::default();
    let at = Utc.with_ymd_and_hms(2026, 12, 6, 8, 0, 1).unwrap();
    let ok = heartbeat(&[CameraStatus::Ok], 1.0);
    let low_disk = |cameras: &[CameraStatus], age: f64| Heartbeat {
        degraded: vec!["disk_low: 3 MB free, under the watermark".into()],
        ..heartbeat(cameras, age)
    };
    let cases = [
        (
            low_disk(&[CameraStatus::Ok], 999.0),
            0,
            DeviceState::Degraded,
        ),
        (
            low_disk(&[CameraStatus::Failed], 1.0),
            0,
            DeviceState::CameraFailed,
        ),
        (
            heartbeat(&[CameraStatus::Ok, CameraStatus::Starting], 1.0),
            0,
            DeviceState::Ok,
        ),
        (
            heartbeat(&[CameraStatus::Ok, CameraStatus::Failed], 1.0),
            0,
            DeviceState::CameraFailed,
        ),
        (
            heartbeat(&[CameraStatus::Stalled], 1.0),
            0,
            DeviceState::CameraFailed,
        ),
        (
            heartbeat(&[CameraStatus::Ok, CameraStatus::Hung], 1.0),
            0,
            DeviceState::CameraFailed,
        ),
        (
            // A status a newer agent sends, unknown to this cloud.
            heartbeat(&[CameraStatus::Ok, CameraStatus::Unknown], 1.0),
            0,
            DeviceState::CameraFailed,
        ),
        (
            heartbeat(&[CameraStatus::Ok], 301.0),
            0,
            DeviceState::Behind,
        ),
        (heartbeat(&[CameraStatus::Ok], 299.0), 0, DeviceState::Ok),
        // Three intervals of 60 s: still heard at 180 s, silent after.
        (ok.clone(), 180, DeviceState::Ok),
        (ok, 181, DeviceState::Silent),
        // Silent wins over what its last heartbeat said.
        (
            heartbeat(&[CameraStatus::Failed], 999.0),
            200,
            DeviceState::Silent,
        ),
    ];
    for (hb, after, want) in cases {
        let now = at + Duration::seconds(after);
        assert_eq!(
            state(Some((at, &hb)), now, &cfg),
            want,
            "{hb:?} after {after} s"
        );
    }
    assert_eq!(state(None, at, &cfg), DeviceState::Silent);
}

#[test]
fn silence_counts_the_devices_own_interval() {
    let cfg = FleetConfig {
        silent_after_missed: 3,
        ..FleetConfig::default()
    };
    let mut hb = heartbeat(&[CameraStatus::Ok], 0.0);
    hb.interval_seconds = 2;
    let at = Utc::now();
    assert_eq!(
        state(Some((at, &hb)), at + Duration::seconds(6), &cfg),
        DeviceState::Ok
    );
    assert_eq!(
        state(Some((at, &hb)), at + Duration::seconds(7), &cfg),
        DeviceState::Silent
    );
}

#[test]
fn a_device_is_shown_where_its_last_heartbeat_says_with_its_clock_offset() {
    let hb = heartbeat(&[CameraStatus::Ok], 0.0);
    let received = hb.sent_at + Duration::milliseconds(2500);
    let first_seen = hb.sent_at - Duration::days(3);
    let record = |heartbeat| DeviceRecord {
        device_id: "line-pc-1".into(),
        facility: "old-plant".into(),
        line: "L9".into(),
        station: "S9".into(),
        first_seen,
        last_frame_at: None,
        heartbeat,
        pending: Vec::new(),
    };
    let now = received + Duration::seconds(10);
    let d = describe(
        record(Some((received, hb.clone()))),
        now,
        &FleetConfig::default(),
    );
    assert_eq!(
        (d.facility.as_str(), d.line.as_str()),
        ("yangjiang-2", "L1")
    );
    assert_eq!(d.state, DeviceState::Ok);
    assert_eq!(d.clock_offset_seconds, Some(2.5));
    assert_eq!(d.heartbeat_age_seconds, Some(10.0));
    assert_eq!(d.heartbeat, Some(hb));

    // Seen by its frames only: where its first frame came from, silent.
    let d = describe(record(None), now, &FleetConfig::default());
    assert_eq!(
        (d.facility.as_str(), d.state),
        ("old-plant", DeviceState::Silent)
    );
    assert_eq!(
        (d.heartbeat_age_seconds, d.clock_offset_seconds),
        (None, None)
    );
}
