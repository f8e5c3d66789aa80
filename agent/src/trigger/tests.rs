#![allow(clippy::unwrap_used)]

use super::*;

fn station() -> (Arc<Station>, mpsc::Receiver<Trigger>, Arc<Monitor>) {
    let monitor = Arc::new(Monitor::new("c1", "synthetic"));
    let (station, rx) = Station::new(monitor.clone());
    (station, rx, monitor)
}

fn asked(station: &Station, request: TriggerRequest) -> (bool, oneshot::Receiver<TriggerAck>) {
    let (tx, rx) = oneshot::channel();
    (station.fire(Trigger::new("http", request, Some(tx))), rx)
}

#[test]
fn a_trigger_while_busy_is_answered_busy_and_counted_until_the_camera_is_done() {
    let (station, mut rx, monitor) = station();
    monitor.set_status(CameraStatus::Ok);
    let (taken, _first) = asked(&station, TriggerRequest::default());
    assert!(taken);
    for _ in 0..3 {
        let (taken, mut answer) = asked(&station, TriggerRequest::default());
        assert!(!taken);
        assert_eq!(answer.try_recv().unwrap().outcome, TriggerOutcome::Busy);
    }
    assert_eq!(monitor.snapshot().triggers_missed_total, 3);
    let first = rx.try_recv().expect("the camera has the first one");
    assert!(rx.try_recv().is_err(), "and only that one");
    station.finish(first, TriggerOutcome::Captured, None, None);
    assert!(asked(&station, TriggerRequest::default()).0);
}

#[test]
fn a_camera_not_delivering_answers_camera_failed_and_counts_it() {
    let (station, _rx, monitor) = station();
    for status in [
        CameraStatus::Starting,
        CameraStatus::Reopening,
        CameraStatus::Failed,
    ] {
        monitor.set_status(status);
        let (taken, mut answer) = asked(&station, TriggerRequest::default());
        assert!(!taken);
        let ack = answer.try_recv().unwrap();
        assert_eq!(ack.outcome, TriggerOutcome::CameraFailed);
        assert!(ack.reason.unwrap().contains(status.as_str()));
    }
    assert_eq!(monitor.snapshot().triggers_missed_total, 3);
}

#[test]
fn an_invalid_request_is_refused_without_counting_a_missed_part() {
    let (station, _rx, monitor) = station();
    monitor.set_status(CameraStatus::Ok);
    let bad = TriggerRequest {
        request_id: Some("r9".into()),
        lot: Some("lot 7".into()),
        ..TriggerRequest::default()
    };
    let (taken, mut answer) = asked(&station, bad);
    assert!(!taken);
    let ack = answer.try_recv().unwrap();
    assert_eq!(ack.outcome, TriggerOutcome::Invalid);
    assert_eq!(ack.request_id.as_deref(), Some("r9"));
    assert_eq!(monitor.snapshot().triggers_missed_total, 0);
    assert!(asked(&station, TriggerRequest::default()).0);
}

// See: issue #21
#[test]
fn a_part_the_buffer_refused_is_answered_not_stored_with_its_verdict_and_frees_the_station() {
    let (station, mut rx, monitor) = station();
    monitor.set_status(CameraStatus::Ok);
    let request = TriggerRequest {
        request_id: Some("r1".into()),
        ..TriggerRequest::default()
    };
    let (taken, mut answer) = asked(&station, request);
    assert!(taken);
    station.not_stored(rx.try_recv().unwrap(), "buffer full".into(), Some(true));
    let ack = answer.try_recv().unwrap();
    assert_eq!(
        (ack.outcome, ack.frame_id, ack.defect_detected),
        (TriggerOutcome::NotStored, None, Some(true))
    );
    assert_eq!(
        (ack.request_id.as_deref(), ack.reason.as_deref()),
        (Some("r1"), Some("buffer full"))
    );
    assert!(asked(&station, TriggerRequest::default()).0);
}
