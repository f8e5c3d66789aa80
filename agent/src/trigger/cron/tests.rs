//! The schedule across both daylight saving changes of Europe/Berlin, in paused tokio time: a
//! wall clock that follows it, a station whose camera notes when each trigger came.

#![allow(clippy::unwrap_used)]

use std::sync::Mutex;

use chrono::TimeZone;
use tokio::sync::mpsc;
use wiko_wire::{CameraStatus, TriggerOutcome};

use super::*;
use crate::source::health::Monitor;

const BERLIN: &str = "Europe/Berlin";

/// A wall clock starting at `start` that moves with tokio's (paused) clock.
fn clock_from(start: DateTime<Utc>) -> impl Fn() -> DateTime<Utc> + Clone {
    let base = tokio::time::Instant::now();
    move || start + chrono::Duration::from_std(base.elapsed()).unwrap()
}

fn utc(text: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(text).unwrap().to_utc()
}

/// Runs `expression` from `start` to `end` (wall clock) and returns when each trigger reached
/// the camera, and its request.
async fn fired(
    expression: &str,
    start: &str,
    end: &str,
    request: TriggerRequest,
) -> Vec<(DateTime<Utc>, TriggerRequest)> {
    let clock = clock_from(utc(start));
    let monitor = Arc::new(Monitor::new("c1", "synthetic"));
    monitor.set_status(CameraStatus::Ok);
    let (station, mut rx): (_, mpsc::Receiver<Trigger>) = Station::new(monitor.clone());
    let seen = Arc::new(Mutex::new(Vec::new()));
    let camera = {
        let (station, seen, clock) = (station.clone(), seen.clone(), clock.clone());
        tokio::spawn(async move {
            while let Some(trigger) = rx.recv().await {
                seen.lock()
                    .unwrap()
                    .push((clock(), trigger.request.clone()));
                station.finish(trigger, TriggerOutcome::Captured, None, None);
            }
        })
    };
    let stop = CancellationToken::new();
    let schedule = Schedule::parse(expression, BERLIN).unwrap();
    let task = tokio::spawn(run(station, schedule, request, clock.clone(), stop.clone()));
    let end = utc(end);
    while clock() < end {
        tokio::time::sleep(Duration::from_secs(600)).await;
    }
    stop.cancel();
    task.await.unwrap();
    camera.abort();
    assert_eq!(monitor.snapshot().triggers_missed_total, 0);
    seen.lock().unwrap().clone()
}

fn berlin(times: &[(DateTime<Utc>, TriggerRequest)]) -> Vec<String> {
    times
        .iter()
        .map(|(t, _)| {
            t.with_timezone(&chrono_tz::Europe::Berlin)
                .format("%m-%d %H:%M:%S%:z")
                .to_string()
        })
        .collect()
}

#[tokio::test(start_paused = true)]
async fn a_daily_time_in_the_skipped_spring_hour_fires_once_right_after_the_gap() {
    // See: issue #20. Clocks go from 02:00 to 03:00 on 29 March 2026.
    let request = TriggerRequest {
        sku: Some("WK-REF-01".into()),
        lot: Some("L7".into()),
        ..TriggerRequest::default()
    };
    let times = fired(
        "30 2 * * *",
        "2026-03-27T12:00:00Z",
        "2026-03-31T12:00:00Z",
        request.clone(),
    )
    .await;
    assert_eq!(
        berlin(&times),
        [
            "03-28 02:30:00+01:00",
            "03-29 03:00:00+02:00",
            "03-30 02:30:00+02:00",
            "03-31 02:30:00+02:00",
        ]
    );
    assert!(times.iter().all(|(_, r)| *r == request), "{times:?}");
}

#[tokio::test(start_paused = true)]
async fn a_daily_time_in_the_repeated_autumn_hour_fires_once() {
    // Clocks go from 03:00 back to 02:00 on 25 October 2026: 02:30 happens twice.
    let times = fired(
        "30 2 * * *",
        "2026-10-23T12:00:00Z",
        "2026-10-27T12:00:00Z",
        TriggerRequest::default(),
    )
    .await;
    assert_eq!(
        berlin(&times),
        [
            "10-24 02:30:00+02:00",
            "10-25 02:30:00+02:00",
            "10-26 02:30:00+01:00",
            "10-27 02:30:00+01:00",
        ]
    );
}

#[tokio::test(start_paused = true)]
async fn a_step_schedule_keeps_its_pace_in_real_time_across_both_changes() {
    for (start, end, local) in [
        (
            "2026-03-28T23:50:00Z",
            "2026-03-29T02:10:00Z",
            // 02:00 and 02:30 do not exist that night.
            [
                "03-29 01:00:00+01:00",
                "03-29 01:30:00+01:00",
                "03-29 03:00:00+02:00",
                "03-29 03:30:00+02:00",
                "03-29 04:00:00+02:00",
            ],
        ),
        (
            "2026-10-24T23:50:00Z",
            "2026-10-25T02:10:00Z",
            // 02:00 and 02:30 happen twice, half an hour apart in real time.
            [
                "10-25 02:00:00+02:00",
                "10-25 02:30:00+02:00",
                "10-25 02:00:00+01:00",
                "10-25 02:30:00+01:00",
                "10-25 03:00:00+01:00",
            ],
        ),
    ] {
        let times = fired("*/30 * * * *", start, end, TriggerRequest::default()).await;
        assert_eq!(berlin(&times), local);
        for pair in times.windows(2) {
            assert_eq!(pair[1].0 - pair[0].0, chrono::Duration::minutes(30));
        }
    }
}

#[test]
fn a_bad_expression_or_zone_is_named() {
    let e = Schedule::parse("61 * * * *", BERLIN).unwrap_err();
    assert!(e.contains("61 * * * *"), "{e}");
    let e = Schedule::parse("0 6 * * *", "Mars/Olympus").unwrap_err();
    assert!(e.contains("Mars/Olympus"), "{e}");
    // Seconds are optional; the next time is strictly after the one given.
    let s = Schedule::parse("*/15 * * * * *", "UTC").unwrap();
    let t = Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).unwrap();
    assert_eq!(s.next_after(t), Some(t + chrono::Duration::seconds(15)));
}
