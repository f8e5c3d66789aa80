use super::*;

fn limits(max_disk_bytes: u64, when_full: WhenFull) -> Limits {
    Limits {
        max_disk_bytes,
        min_free_bytes: 0,
        when_full,
        synchronous: Synchronous::Normal,
    }
}

fn frame(n: u8, size: usize, ng: Option<bool>) -> NewFrame {
    NewFrame {
        frame_id: Uuid::now_v7(),
        camera: "cam".into(),
        device_id: "dev".into(),
        facility: "yangjiang".into(),
        line: "l1".into(),
        station: "s1".into(),
        sku: "WK-KN-200".into(),
        part_id: Some(format!("P{n}")),
        lot: None,
        captured_at: Utc::now(),
        jpeg: vec![n; size],
        edge: ng.map(verdict),
    }
}

/// An edge verdict of `ng`, as edge analysis would write it.
fn verdict(ng: bool) -> wiko_wire::EdgeVerdict {
    wiko_wire::EdgeVerdict {
        defect_detected: ng,
        score: if ng { 3.0 } else { 0.5 },
        score_threshold: 1.0,
        model_version: "v1".into(),
        defects: Vec::new(),
        latency_ms: 20.0,
        alerted: false,
    }
}

fn open(dir: &Path, l: Limits) -> Buffer {
    Buffer::open(&dir.join("buffer.db"), l).unwrap().0
}

#[test]
fn buffer_keeps_frames_until_acked() {
    let dir = tempfile::tempdir().unwrap();
    let b = open(dir.path(), limits(1 << 30, WhenFull::DropOldest));
    let f = frame(1, 1000, None);
    b.insert(&f).unwrap();
    b.record_failure(f.frame_id, "connection refused").unwrap();
    let p = b.pending(10, &[]).unwrap();
    assert_eq!(p.len(), 1);
    assert_eq!(p[0].meta.frame_id, f.frame_id);
    assert_eq!(p[0].jpeg, f.jpeg);
    assert_eq!(p[0].attempts, 1);
    assert_eq!(
        p[0].meta.image_blake3,
        wiko_wire::frame::image_digest(&f.jpeg)
    );
    assert!(b.ack(f.frame_id).unwrap());
    assert!(!b.ack(f.frame_id).unwrap(), "a second ack finds nothing");
    assert!(b.pending(10, &[]).unwrap().is_empty());
    assert_eq!(b.stats().unwrap().frames, 0);
}

#[test]
fn pending_puts_ng_first_then_oldest_and_skips_in_flight() {
    let dir = tempfile::tempdir().unwrap();
    let b = open(dir.path(), limits(1 << 30, WhenFull::DropOldest));
    let a = frame(1, 10, None);
    let ng = frame(2, 10, Some(true));
    let c = frame(3, 10, Some(false));
    for f in [&a, &ng, &c] {
        b.insert(f).unwrap();
    }
    let order: Vec<Uuid> = b
        .pending(10, &[])
        .unwrap()
        .iter()
        .map(|p| p.meta.frame_id)
        .collect();
    assert_eq!(order, vec![ng.frame_id, a.frame_id, c.frame_id]);
    let rest: Vec<Uuid> = b
        .pending(10, &[ng.frame_id])
        .unwrap()
        .iter()
        .map(|p| p.meta.frame_id)
        .collect();
    assert_eq!(rest, vec![a.frame_id, c.frame_id]);
    assert_eq!(b.pending(1, &[]).unwrap().len(), 1);
}

#[test]
fn restart_keeps_frames_and_never_reuses_a_sequence_number() {
    let dir = tempfile::tempdir().unwrap();
    let first;
    {
        let b = open(dir.path(), limits(1 << 30, WhenFull::DropOldest));
        b.insert(&frame(1, 100, None)).unwrap();
        let f = frame(2, 100, None);
        first = b.insert(&f).unwrap().seq;
        b.ack(f.frame_id).unwrap(); // the highest seq is gone
    }
    let b = open(dir.path(), limits(1 << 30, WhenFull::DropOldest));
    assert_eq!(b.stats().unwrap().frames, 1);
    let next = b.insert(&frame(3, 100, None)).unwrap().seq;
    assert!(next > first, "seq {next} after {first}");
}

#[test]
fn size_accounting_counts_jpeg_and_row_overhead() {
    let dir = tempfile::tempdir().unwrap();
    let b = open(dir.path(), limits(1 << 30, WhenFull::DropOldest));
    let f = frame(1, 1000, None);
    b.insert(&f).unwrap();
    b.insert(&frame(2, 500, None)).unwrap();
    let s = b.stats().unwrap();
    assert_eq!(s.bytes, 1500 + 2 * ROW_OVERHEAD);
    assert_eq!(s.by_camera, vec![("cam".to_string(), 2)]);
    b.ack(f.frame_id).unwrap();
    assert_eq!(b.stats().unwrap().bytes, 500 + ROW_OVERHEAD);
}

#[test]
fn size_limits_evict_ok_frames_before_ng_and_count_them() {
    let dir = tempfile::tempdir().unwrap();
    let row = 1000 + ROW_OVERHEAD;
    let b = open(dir.path(), limits(3 * row, WhenFull::DropOldest));
    let ng = frame(1, 1000, Some(true));
    let ok1 = frame(2, 1000, Some(false));
    let ok2 = frame(3, 1000, None);
    for f in [&ng, &ok1, &ok2] {
        assert_eq!(b.insert(f).unwrap().evicted, 0);
    }
    let newest = frame(4, 1000, None);
    assert_eq!(b.insert(&newest).unwrap().evicted, 1);
    let left: Vec<Uuid> = b
        .pending(10, &[])
        .unwrap()
        .iter()
        .map(|p| p.meta.frame_id)
        .collect();
    assert_eq!(left, vec![ng.frame_id, ok2.frame_id, newest.frame_id]);
    let s = b.stats().unwrap();
    assert!(s.bytes <= 3 * row);
    assert_eq!(s.evicted_total, 1);
}

#[test]
fn size_limits_reject_new_keeps_what_is_buffered() {
    let dir = tempfile::tempdir().unwrap();
    let row = 1000 + ROW_OVERHEAD;
    let b = open(dir.path(), limits(2 * row, WhenFull::RejectNew));
    b.insert(&frame(1, 1000, None)).unwrap();
    b.insert(&frame(2, 1000, None)).unwrap();
    assert!(matches!(
        b.insert(&frame(3, 1000, None)),
        Err(BufferError::Full { .. })
    ));
    assert_eq!(b.stats().unwrap().frames, 2);
    assert!(matches!(
        b.insert(&frame(4, 10_000, None)),
        Err(BufferError::Full { .. })
    ));
}

#[test]
fn dead_letters_keep_the_frame_and_the_reason() {
    let dir = tempfile::tempdir().unwrap();
    let b = open(dir.path(), limits(1 << 30, WhenFull::DropOldest));
    let f = frame(1, 100, None);
    b.insert(&f).unwrap();
    b.dead_letter(f.frame_id, 409, "frame_conflict").unwrap();
    let s = b.stats().unwrap();
    assert_eq!((s.frames, s.dead_letters), (0, 1));
    let conn = b.conn();
    let (status, reason, jpeg): (u16, String, Vec<u8>) = conn
        .query_row("SELECT status, reason, jpeg FROM dead_letters", [], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?))
        })
        .unwrap();
    assert_eq!(
        (status, reason.as_str(), jpeg),
        (409, "frame_conflict", f.jpeg)
    );
}

#[test]
fn a_corrupt_buffer_is_quarantined_and_replaced() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("buffer.db");
    std::fs::write(
        &path,
        b"this is not a sqlite database, just garbage bytes".repeat(100),
    )
    .unwrap();
    let (b, aside) = Buffer::open(&path, limits(1 << 30, WhenFull::DropOldest)).unwrap();
    let aside = aside.expect("the corrupt file was moved aside");
    assert!(aside.exists());
    assert_eq!(b.stats().unwrap().frames, 0);
    b.insert(&frame(1, 10, None)).unwrap();
}

#[test]
fn an_unreadable_row_moves_to_dead_letters_and_blocks_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let b = open(dir.path(), limits(1 << 30, WhenFull::DropOldest));
    let damaged = frame(1, 10, None);
    let fine = frame(2, 10, None);
    b.insert(&damaged).unwrap();
    b.insert(&fine).unwrap();
    b.conn()
        .execute(
            "UPDATE frames SET captured_at = 'not a time' WHERE frame_id = ?1",
            [damaged.frame_id.to_string()],
        )
        .unwrap();
    let p = b.pending(10, &[]).unwrap();
    assert_eq!(p.len(), 1);
    assert_eq!(p[0].meta.frame_id, fine.frame_id);
    let s = b.stats().unwrap();
    assert_eq!((s.frames, s.dead_letters), (1, 1));
}

#[test]
fn a_dead_letter_is_listed_and_requeued_under_its_own_id_and_seq() {
    let dir = tempfile::tempdir().unwrap();
    let b = open(dir.path(), limits(1 << 30, WhenFull::DropOldest));
    let f = frame(7, 100, None);
    let seq = b.insert(&f).unwrap().seq;
    let later = frame(8, 100, None);
    b.insert(&later).unwrap();
    b.dead_letter(f.frame_id, 422, "invalid_image: truncated")
        .unwrap();
    let listed = b.dead_letters(10).unwrap();
    assert_eq!(listed.len(), 1);
    let d = &listed[0];
    assert_eq!((d.frame_id, d.seq, d.status), (f.frame_id, seq, 422));
    assert_eq!((d.camera_id.as_str(), d.bytes), ("cam", 100));
    assert_eq!(d.reason, "invalid_image: truncated");

    assert!(b.requeue(f.frame_id).unwrap());
    assert!(
        !b.requeue(f.frame_id).unwrap(),
        "a second requeue finds nothing"
    );
    assert!(b.dead_letters(10).unwrap().is_empty());
    let stats = b.stats().unwrap();
    assert_eq!((stats.frames, stats.dead_letters), (2, 0));
    assert_eq!(stats.bytes, 2 * (100 + ROW_OVERHEAD), "accounted again");
    let p = b.pending(10, &[]).unwrap();
    let back = p.iter().find(|p| p.meta.frame_id == f.frame_id).unwrap();
    assert_eq!(back.meta.seq, seq, "the same sequence number");
    assert_eq!(back.meta.part_id.as_deref(), Some("P7"));
    assert_eq!(back.meta.captured_at, f.captured_at);
    assert_eq!(back.jpeg, f.jpeg);
    assert_eq!(p[0].meta.frame_id, f.frame_id, "oldest first again");
}

#[test]
fn a_requeued_dead_letter_stays_within_the_buffers_limit() {
    let dir = tempfile::tempdir().unwrap();
    // Room for two frames of 100 bytes.
    let max = 2 * (100 + ROW_OVERHEAD);
    let b = open(dir.path(), limits(max, WhenFull::DropOldest));
    let refused = frame(1, 100, None);
    b.insert(&refused).unwrap();
    b.dead_letter(refused.frame_id, 422, "refused").unwrap();
    let (ok, ng) = (frame(2, 100, Some(false)), frame(3, 100, Some(true)));
    b.insert(&ok).unwrap();
    b.insert(&ng).unwrap();

    assert!(b.requeue(refused.frame_id).unwrap());
    let stats = b.stats().unwrap();
    assert_eq!(
        (stats.frames, stats.bytes),
        (2, max),
        "still within max_disk_bytes"
    );
    assert_eq!(stats.evicted_total, 1);
    let left: Vec<_> = b
        .pending(10, &[])
        .unwrap()
        .iter()
        .map(|p| p.meta.frame_id)
        .collect();
    assert_eq!(
        left,
        [ng.frame_id, refused.frame_id],
        "the OK frame made room"
    );

    // Refusing new frames, a full buffer leaves the dead letter where it is.
    let dir = tempfile::tempdir().unwrap();
    let b = open(dir.path(), limits(max, WhenFull::RejectNew));
    b.insert(&refused).unwrap();
    b.dead_letter(refused.frame_id, 422, "refused").unwrap();
    b.insert(&ok).unwrap();
    b.insert(&ng).unwrap();
    assert!(matches!(
        b.requeue(refused.frame_id),
        Err(BufferError::Full { .. })
    ));
    assert_eq!(b.dead_letters(10).unwrap().len(), 1, "still a dead letter");
    assert_eq!(b.stats().unwrap().frames, 2);
}

#[test]
fn the_edge_verdict_is_uploaded_with_its_frame_and_survives_a_dead_letter_and_requeue() {
    let dir = tempfile::tempdir().unwrap();
    let b = open(dir.path(), limits(1 << 30, WhenFull::DropOldest));
    let ok = frame(1, 10, Some(false));
    let ng = frame(2, 10, Some(true));
    for f in [&ok, &ng] {
        b.insert(f).unwrap();
    }
    let pending = b.pending(10, &[]).unwrap();
    let edges: Vec<_> = pending.iter().map(|p| p.meta.edge.clone()).collect();
    assert_eq!(edges, [Some(verdict(true)), Some(verdict(false))]);
    b.dead_letter(ng.frame_id, 422, "refused").unwrap();
    assert!(b.requeue(ng.frame_id).unwrap());
    let back = b.pending(10, &[]).unwrap();
    assert_eq!(back[0].meta.frame_id, ng.frame_id, "still NG first");
    assert_eq!(back[0].meta.edge, Some(verdict(true)));
}

#[test]
fn a_buffer_written_before_edge_analysis_gains_its_column_and_keeps_its_frames() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("buffer.db");
    {
        let b = open(dir.path(), limits(1 << 30, WhenFull::DropOldest));
        b.insert(&frame(1, 10, None)).unwrap();
    }
    // The table as the previous version created it: no `edge` column.
    let conn = Connection::open(&path).unwrap();
    conn.execute("ALTER TABLE frames DROP COLUMN edge", [])
        .unwrap();
    drop(conn);
    let b = open(dir.path(), limits(1 << 30, WhenFull::DropOldest));
    assert_eq!(b.pending(10, &[]).unwrap()[0].meta.edge, None);
    b.insert(&frame(2, 10, Some(true))).unwrap();
    assert_eq!(
        b.pending(10, &[]).unwrap()[0].meta.edge,
        Some(verdict(true))
    );
}

const CLOUD: &str = "http://cloud.example";
const LEASE: std::time::Duration = std::time::Duration::from_secs(30);

/// The frames of the alerts a lease takes now, in the outbox's order.
fn leased_frames(b: &Buffer) -> Vec<Uuid> {
    b.lease_alerts(10, LEASE)
        .unwrap()
        .iter()
        .map(|a| a.frame_id)
        .collect()
}

fn outbox() -> AlertOutbox {
    bounded(1000, 3600)
}

fn bounded(max_alerts: u64, max_age_secs: u64) -> AlertOutbox {
    AlertOutbox {
        image_base_url: CLOUD.into(),
        limits: alerts::OutboxLimits {
            max_alerts,
            max_age: std::time::Duration::from_secs(max_age_secs),
        },
    }
}

#[test]
fn an_ng_frame_queues_its_alert_in_its_transaction_and_an_ok_one_none() {
    let dir = tempfile::tempdir().unwrap();
    let b = open(dir.path(), limits(1 << 30, WhenFull::DropOldest));
    let ok = b
        .insert_alerting(&frame(1, 100, Some(false)), Some(&outbox()))
        .unwrap();
    let unjudged = b
        .insert_alerting(&frame(2, 100, None), Some(&outbox()))
        .unwrap();
    let off = b.insert(&frame(3, 100, Some(true))).unwrap();
    assert!(!ok.alerted && !unjudged.alerted && !off.alerted);
    let ng = frame(4, 100, Some(true));
    assert!(b.insert_alerting(&ng, Some(&outbox())).unwrap().alerted);
    assert_eq!(b.alerts_queued().unwrap(), 1);
    let leased = b.lease_alerts(10, LEASE).unwrap();
    assert_eq!(leased.len(), 1);
    assert_eq!(leased[0].frame_id, ng.frame_id);
    assert_eq!(leased[0].topic, "wiko/yangjiang/l1/s1/alert");
    let message: wiko_wire::AlertMessage = serde_json::from_slice(&leased[0].payload).unwrap();
    assert_eq!(
        message.result_id, ng.frame_id,
        "the cloud's id for the part"
    );
    assert_eq!(message.status, wiko_wire::AnalysisStatus::Provisional);
    assert!(message.defect_detected);
    assert_eq!(
        message.image_url,
        format!("{CLOUD}/api/v1/analyses/{}/image", ng.frame_id)
    );
    // The upload tells the cloud which NG parts the agent alerted (not the one buffered
    // without alerts), once the broker has the alert.
    assert!(b.ack_alert(leased[0].seq).unwrap());
    let alerted: Vec<(bool, bool)> = b
        .pending(10, &[])
        .unwrap()
        .iter()
        .filter_map(|p| p.meta.edge.as_ref())
        .map(|e| (e.defect_detected, e.alerted))
        .collect();
    assert_eq!(alerted, [(true, false), (true, true), (false, false)]);
}

#[test]
fn a_refused_frame_queues_no_alert() {
    let dir = tempfile::tempdir().unwrap();
    let b = open(dir.path(), limits(2000, WhenFull::RejectNew));
    b.insert_alerting(&frame(1, 1000, Some(true)), Some(&outbox()))
        .unwrap();
    assert!(
        b.insert_alerting(&frame(2, 1000, Some(true)), Some(&outbox()))
            .is_err()
    );
    assert_eq!(b.alerts_queued().unwrap(), 1, "rolled back with its frame");
}

#[test]
fn a_leased_alert_is_not_leased_again_until_released_and_leaves_on_ack() {
    let dir = tempfile::tempdir().unwrap();
    let b = open(dir.path(), limits(1 << 30, WhenFull::DropOldest));
    for n in 0..3 {
        b.insert_alerting(&frame(n, 100, Some(true)), Some(&outbox()))
            .unwrap();
    }
    let first = b.lease_alerts(2, LEASE).unwrap();
    assert_eq!(first.len(), 2);
    assert!(first[0].seq < first[1].seq, "oldest first");
    let rest = b.lease_alerts(10, LEASE).unwrap();
    assert_eq!(rest.len(), 1, "only the one not leased");
    assert!(b.lease_alerts(10, LEASE).unwrap().is_empty());
    assert!(b.ack_alert(first[0].seq).unwrap());
    assert!(!b.ack_alert(first[0].seq).unwrap(), "an ack may come twice");
    b.release_alerts().unwrap();
    let again: Vec<i64> = b
        .lease_alerts(10, LEASE)
        .unwrap()
        .iter()
        .map(|a| a.seq)
        .collect();
    assert_eq!(
        again,
        [first[1].seq, rest[0].seq],
        "the acknowledged one is gone"
    );
}

#[test]
fn a_lease_that_ran_out_is_leased_again() {
    let dir = tempfile::tempdir().unwrap();
    let b = open(dir.path(), limits(1 << 30, WhenFull::DropOldest));
    b.insert_alerting(&frame(1, 100, Some(true)), Some(&outbox()))
        .unwrap();
    assert_eq!(
        b.lease_alerts(10, std::time::Duration::ZERO).unwrap().len(),
        1
    );
    assert_eq!(b.lease_alerts(10, LEASE).unwrap().len(), 1);
}

#[test]
fn a_restart_sends_the_alerts_in_flight_again_and_not_the_acknowledged_ones() {
    let dir = tempfile::tempdir().unwrap();
    let (acked, in_flight) = {
        let b = open(dir.path(), limits(1 << 30, WhenFull::DropOldest));
        for n in 0..2 {
            b.insert_alerting(&frame(n, 100, Some(true)), Some(&outbox()))
                .unwrap();
        }
        let leased = b.lease_alerts(10, LEASE).unwrap();
        b.ack_alert(leased[0].seq).unwrap();
        (leased[0].clone(), leased[1].clone())
    };
    let b = open(dir.path(), limits(1 << 30, WhenFull::DropOldest));
    let after = b.lease_alerts(10, LEASE).unwrap();
    assert_eq!(after, std::slice::from_ref(&in_flight));
    assert_ne!(after[0].frame_id, acked.frame_id);
    assert_eq!(b.alerts_queued().unwrap(), 1);
}

#[test]
fn a_full_outbox_drops_its_oldest_alerts_and_counts_them() {
    let dir = tempfile::tempdir().unwrap();
    let b = open(dir.path(), limits(1 << 30, WhenFull::DropOldest));
    let outbox = bounded(3, 3600);
    let frames: Vec<NewFrame> = (0..5).map(|n| frame(n, 100, Some(true))).collect();
    for f in &frames {
        b.insert_alerting(f, Some(&outbox)).unwrap();
    }
    let kept = leased_frames(&b);
    let newest: Vec<Uuid> = frames[2..].iter().map(|f| f.frame_id).collect();
    assert_eq!(kept, newest, "the two oldest dropped");
    let stats = b.stats().unwrap();
    assert_eq!((stats.alerts_queued, stats.alerts_dropped_total), (3, 2));
    // Every frame is still buffered: only alerts are dropped.
    assert_eq!(stats.frames, 5);
    drop(b);
    let b = open(dir.path(), limits(1 << 30, WhenFull::DropOldest));
    assert_eq!(
        b.stats().unwrap().alerts_dropped_total,
        2,
        "kept across a restart"
    );
}

#[test]
fn alerts_older_than_the_outbox_age_are_dropped_and_counted() {
    let dir = tempfile::tempdir().unwrap();
    let b = open(dir.path(), limits(1 << 30, WhenFull::DropOldest));
    let mut old = frame(1, 100, Some(true));
    old.captured_at = Utc::now() - chrono::Duration::seconds(7200);
    let mut borderline = frame(2, 100, Some(true));
    borderline.captured_at = Utc::now() - chrono::Duration::seconds(3000);
    let fresh = frame(3, 100, Some(true));
    for f in [&old, &borderline, &fresh] {
        b.insert_alerting(f, Some(&outbox())).unwrap();
    }
    let one_hour = std::time::Duration::from_secs(3600);
    let dropped = b.expire_alerts(one_hour).unwrap();
    assert_eq!(dropped.count, 1);
    // julianday's doubles are exact to some 10 µs only.
    assert!(
        dropped.oldest_age_secs.is_some_and(|age| age >= 7199.9),
        "{dropped:?}"
    );
    assert_eq!(b.expire_alerts(one_hour).unwrap().count, 0, "nothing more");
    let left = leased_frames(&b);
    assert_eq!(left, [borderline.frame_id, fresh.frame_id]);
    assert_eq!(b.stats().unwrap().alerts_dropped_total, 1);
    // An age beyond the calendar drops nothing.
    assert_eq!(b.expire_alerts(std::time::Duration::MAX).unwrap().count, 0);
}

/// The `alerted` mark each frame would be uploaded with, by frame id, for the frames
/// `pending` hands out.
fn uploads(b: &Buffer) -> Vec<(Uuid, bool)> {
    uploads_except(b, &[])
}

/// [`uploads`] but for `exclude` (in flight: not handed out).
fn uploads_except(b: &Buffer, exclude: &[Uuid]) -> Vec<(Uuid, bool)> {
    uploads_after(b, exclude, ALERT_GRACE)
}

/// [`uploads_except`] with the alert's grace `grace` (zero: the grace has passed).
fn uploads_after(b: &Buffer, exclude: &[Uuid], grace: std::time::Duration) -> Vec<(Uuid, bool)> {
    b.pending_with_grace(100, exclude, grace)
        .unwrap()
        .iter()
        .map(|p| {
            (
                p.meta.frame_id,
                p.meta.edge.as_ref().is_some_and(|e| e.alerted),
            )
        })
        .collect()
}

// See: issue #21
#[test]
fn an_ng_frame_whose_alert_is_queued_is_held_for_the_grace_then_goes_up_unmarked() {
    let dir = tempfile::tempdir().unwrap();
    let b = open(dir.path(), limits(1 << 30, WhenFull::DropOldest));
    let ok = frame(1, 100, Some(false));
    b.insert_alerting(&ok, Some(&outbox())).unwrap();
    let ng = frame(2, 100, Some(true));
    b.insert_alerting(&ng, Some(&outbox())).unwrap();
    assert_eq!(b.alerts_queued().unwrap(), 1);
    assert_eq!(
        uploads(&b),
        [(ok.frame_id, false)],
        "held within the grace while its alert is queued"
    );
    let grace_passed = std::time::Duration::ZERO;
    assert_eq!(
        uploads_after(&b, &[], grace_passed),
        [(ng.frame_id, false), (ok.frame_id, false)],
        "after the grace, NG first; not `alerted`, so the cloud alerts the part too"
    );
    // Its alert in flight, not acknowledged yet: still held, then unmarked.
    let leased = b.lease_alerts(10, LEASE).unwrap();
    assert_eq!(uploads(&b), [(ok.frame_id, false)]);
    assert_eq!(
        uploads_after(&b, &[], grace_passed),
        [(ng.frame_id, false), (ok.frame_id, false)]
    );
    // Acknowledged: an attempt built now says the agent alerted it, within the grace too.
    assert!(b.ack_alert(leased[0].seq).unwrap());
    assert_eq!(uploads(&b), [(ng.frame_id, true), (ok.frame_id, false)]);
}

// See: issue #21
#[test]
fn a_frame_stamped_before_the_clock_was_set_back_is_not_held() {
    let dir = tempfile::tempdir().unwrap();
    let b = open(dir.path(), limits(1 << 30, WhenFull::DropOldest));
    let ng = frame(1, 100, Some(true));
    b.insert_alerting(&ng, Some(&outbox())).unwrap();
    assert_eq!(uploads(&b), [], "held within the grace");
    // Stamped an hour ahead of the clock as it reads now: the clock went back since.
    let later = chrono::Utc::now().timestamp_millis() + 3_600_000;
    b.conn()
        .execute("UPDATE frames SET inserted_ms = ?1", [later])
        .unwrap();
    assert_eq!(uploads(&b), [(ng.frame_id, false)]);
}

// See: issue #21
#[test]
fn an_ng_frame_is_stored_unmarked_until_its_alert_is_acknowledged() {
    let dir = tempfile::tempdir().unwrap();
    let b = open(dir.path(), limits(1 << 30, WhenFull::DropOldest));
    let mut ng = frame(1, 100, Some(true));
    ng.edge.as_mut().unwrap().alerted = true;
    b.insert_alerting(&ng, Some(&outbox())).unwrap();
    let stored: bool = b
        .conn()
        .query_row(
            "SELECT coalesce(edge ->> '$.alerted', 0) FROM frames",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert!(!stored, "queued is not alerted");
    let leased = b.lease_alerts(10, LEASE).unwrap();
    assert!(b.ack_alert(leased[0].seq).unwrap());
    assert_eq!(uploads(&b), [(ng.frame_id, true)]);
}

// See: issue #21
#[test]
fn a_requeued_dead_letter_whose_alert_was_dropped_goes_up_unmarked() {
    let dir = tempfile::tempdir().unwrap();
    let b = open(dir.path(), limits(1 << 30, WhenFull::DropOldest));
    let (dropped, acked) = (frame(1, 100, Some(true)), frame(2, 100, Some(true)));
    for f in [&dropped, &acked] {
        b.insert_alerting(f, Some(&outbox())).unwrap();
        b.dead_letter(f.frame_id, 422, "refused").unwrap();
    }
    // One alert acknowledged while its frame is a dead letter, the other dropped.
    let leased = b.lease_alerts(1, LEASE).unwrap();
    assert_eq!(leased[0].frame_id, dropped.frame_id);
    b.release_alerts().unwrap();
    let leased = b.lease_alerts(10, LEASE).unwrap();
    let of_acked = leased
        .iter()
        .find(|a| a.frame_id == acked.frame_id)
        .unwrap();
    assert!(b.ack_alert(of_acked.seq).unwrap());
    b.release_alerts().unwrap();
    assert_eq!(b.abandon_alerts().unwrap().count, 1);
    assert!(b.requeue(dropped.frame_id).unwrap());
    assert!(b.requeue(acked.frame_id).unwrap());
    let mut up = uploads(&b);
    up.sort();
    let mut want = vec![(dropped.frame_id, false), (acked.frame_id, true)];
    want.sort();
    assert_eq!(
        up, want,
        "the cloud alerts the part whose alert was dropped"
    );
}

// See: issue #21
#[test]
fn a_buffer_of_an_earlier_version_loses_the_marks_of_alerts_not_acknowledged() {
    let dir = tempfile::tempdir().unwrap();
    let (queued, acked, dead) = (
        frame(1, 100, Some(true)),
        frame(2, 100, Some(true)),
        frame(3, 100, Some(true)),
    );
    {
        let b = open(dir.path(), limits(1 << 30, WhenFull::DropOldest));
        for f in [&queued, &acked, &dead] {
            b.insert_alerting(f, Some(&outbox())).unwrap();
        }
        let leased = b.lease_alerts(10, LEASE).unwrap();
        assert!(b.ack_alert(leased[1].seq).unwrap());
        b.dead_letter(dead.frame_id, 422, "refused").unwrap();
        assert!(b.ack_alert(leased[2].seq).unwrap());
        // As an earlier version wrote it: marked when the alert was queued, no frame
        // marked `unalerted`.
        let conn = b.conn();
        conn.execute_batch(
            "UPDATE frames SET edge = json_set(edge, '$.alerted', json('true')), unalerted = 0;
             UPDATE dead_letters SET meta_json = json_set(meta_json, '$.edge.alerted', json('true'));
             PRAGMA user_version = 0;",
        )
        .unwrap();
    }
    let b = open(dir.path(), limits(1 << 30, WhenFull::DropOldest));
    let version: i64 = b
        .conn()
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .unwrap();
    assert_eq!(version, SCHEMA_VERSION);
    assert!(b.requeue(dead.frame_id).unwrap());
    let mut up = uploads_after(&b, &[], std::time::Duration::ZERO);
    up.sort();
    let mut want = vec![
        (queued.frame_id, false),
        (acked.frame_id, true),
        (dead.frame_id, false),
    ];
    want.sort();
    assert_eq!(up, want, "a dead letter's alert may have been dropped");
    let unalerted: Vec<String> = {
        let conn = b.conn();
        let mut stmt = conn
            .prepare("SELECT frame_id FROM frames WHERE unalerted = 1 ORDER BY seq")
            .unwrap();
        stmt.query_map([], |r| r.get(0))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap()
    };
    assert_eq!(
        unalerted,
        [queued.frame_id.to_string(), dead.frame_id.to_string()],
        "never evicted"
    );
}

// See: issue #21
#[test]
fn an_ng_frame_whose_alert_was_acknowledged_before_its_upload_goes_up_alerted() {
    let dir = tempfile::tempdir().unwrap();
    let b = open(dir.path(), limits(1 << 30, WhenFull::DropOldest));
    let ng = frame(1, 100, Some(true));
    b.insert_alerting(&ng, Some(&outbox())).unwrap();
    let leased = b.lease_alerts(10, LEASE).unwrap();
    assert!(b.ack_alert(leased[0].seq).unwrap());
    assert_eq!(
        uploads(&b),
        [(ng.frame_id, true)],
        "the agent alerted it: the cloud does not"
    );
}

// See: issue #21
#[test]
fn a_dropped_alerts_frame_goes_up_unmarked_so_the_cloud_alerts_the_part() {
    let dir = tempfile::tempdir().unwrap();
    let b = open(dir.path(), limits(1 << 30, WhenFull::DropOldest));
    // Past the bound: the oldest alert is dropped and its frame goes up unmarked (its alert
    // no longer in the outbox, only the cleared mark says so); the newest's alert waits.
    let outbox = bounded(1, 3600);
    let (first, second) = (frame(1, 100, Some(true)), frame(2, 100, Some(true)));
    b.insert_alerting(&first, Some(&outbox)).unwrap();
    b.insert_alerting(&second, Some(&outbox)).unwrap();
    assert_eq!(
        uploads_except(&b, &[second.frame_id]),
        [(first.frame_id, false)]
    );
    // Too old: dropped by the sweep, its frame goes up unmarked too.
    let mut old = frame(3, 100, Some(true));
    old.captured_at = Utc::now() - chrono::Duration::seconds(7200);
    b.insert_alerting(&old, Some(&bounded(10, 3600))).unwrap();
    b.expire_alerts(std::time::Duration::from_secs(3600))
        .unwrap();
    assert_eq!(
        uploads_except(&b, &[first.frame_id, second.frame_id]),
        [(old.frame_id, false)]
    );
    assert_eq!(b.stats().unwrap().alerts_dropped_total, 2);
    // The newest's alert is still the outbox's.
    let leased = b.lease_alerts(10, LEASE).unwrap();
    assert_eq!(leased.len(), 1);
    assert_eq!(leased[0].frame_id, second.frame_id);
}

// See: issue #21
#[test]
fn an_alert_in_flight_is_never_dropped_by_the_bound_or_the_age() {
    let dir = tempfile::tempdir().unwrap();
    let b = open(dir.path(), limits(1 << 30, WhenFull::DropOldest));
    let outbox = bounded(1, 3600);
    let mut old = frame(1, 100, Some(true));
    old.captured_at = Utc::now() - chrono::Duration::seconds(7200);
    b.insert_alerting(&old, Some(&outbox)).unwrap();
    // Its lease runs out at once (no PUBACK in time): still in flight on its connection.
    let in_flight = b.lease_alerts(10, std::time::Duration::ZERO).unwrap();
    assert_eq!(in_flight.len(), 1);
    let next = frame(2, 100, Some(true));
    b.insert_alerting(&next, Some(&outbox)).unwrap();
    let one_hour = std::time::Duration::from_secs(3600);
    assert_eq!(b.expire_alerts(one_hour).unwrap().count, 0);
    assert_eq!(
        (
            b.alerts_queued().unwrap(),
            b.stats().unwrap().alerts_dropped_total
        ),
        (2, 0),
        "one in flight, one waiting: within the bound of one waiting"
    );
    // Acknowledged: delivered, never counted dropped.
    assert!(b.ack_alert(in_flight[0].seq).unwrap());
    assert_eq!(uploads_except(&b, &[next.frame_id]), [(old.frame_id, true)]);

    // The connection ends without the PUBACK: no longer in flight, so the age drops it and
    // the cloud alerts the part.
    let mut late = frame(3, 100, Some(true));
    late.captured_at = Utc::now() - chrono::Duration::seconds(7200);
    b.insert_alerting(&late, Some(&bounded(10, 3600))).unwrap();
    let leased = b.lease_alerts(10, LEASE).unwrap();
    assert_eq!(leased.len(), 2);
    assert_eq!(b.expire_alerts(one_hour).unwrap().count, 0);
    b.release_alerts().unwrap();
    assert_eq!(b.expire_alerts(one_hour).unwrap().count, 1);
    assert!(
        !b.ack_alert(leased[1].seq).unwrap(),
        "dropped, not acknowledged"
    );
    assert!(uploads_except(&b, &[next.frame_id]).contains(&(late.frame_id, false)));
}

#[test]
fn a_sweep_that_empties_the_outbox_ends_the_episode_of_drops() {
    let dir = tempfile::tempdir().unwrap();
    let b = open(dir.path(), limits(1 << 30, WhenFull::DropOldest));
    let outbox = bounded(1, 3600);
    for n in 0..2 {
        let mut f = frame(n, 100, Some(true));
        f.captured_at = Utc::now() - chrono::Duration::seconds(7200);
        b.insert_alerting(&f, Some(&outbox)).unwrap();
    }
    assert_eq!(b.alert_drops.load(std::sync::atomic::Ordering::Relaxed), 1);
    let swept = b
        .expire_alerts(std::time::Duration::from_secs(3600))
        .unwrap();
    assert_eq!(swept.count, 1);
    assert_eq!(b.alerts_queued().unwrap(), 0);
    assert_eq!(
        b.alert_drops.load(std::sync::atomic::Ordering::Relaxed),
        0,
        "the next drop is logged again"
    );
}

#[test]
fn alerts_left_when_alerts_are_off_are_dropped_and_their_frames_go_up_unmarked() {
    let dir = tempfile::tempdir().unwrap();
    let b = open(dir.path(), limits(1 << 30, WhenFull::DropOldest));
    let ng = frame(1, 100, Some(true));
    b.insert_alerting(&ng, Some(&outbox())).unwrap();
    assert_eq!(b.abandon_alerts().unwrap().count, 1);
    assert_eq!(uploads(&b), [(ng.frame_id, false)]);
    assert_eq!(b.alerts_queued().unwrap(), 0);
}

/// The frames `pending` hands out (the grace passed), in upload order.
fn buffered(b: &Buffer) -> Vec<Uuid> {
    uploads_after(b, &[], std::time::Duration::ZERO)
        .into_iter()
        .map(|(id, _)| id)
        .collect()
}

// See: issue #21
#[test]
fn eviction_takes_ok_frames_then_alerted_ng_ones_and_never_an_ng_part_nobody_alerted() {
    let dir = tempfile::tempdir().unwrap();
    let row = 100 + ROW_OVERHEAD;
    let b = open(dir.path(), limits(4 * row, WhenFull::DropOldest));
    // Oldest first: an NG part the broker has (alerted), an NG part whose alert waits, an
    // NG part whose alert was dropped (the cloud is the one to alert it), an OK part.
    let (alerted, queued, dropped, ok) = (
        frame(1, 100, Some(true)),
        frame(2, 100, Some(true)),
        frame(3, 100, Some(true)),
        frame(4, 100, Some(false)),
    );
    b.insert_alerting(&alerted, Some(&outbox())).unwrap();
    let leased = b.lease_alerts(10, LEASE).unwrap();
    assert!(b.ack_alert(leased[0].seq).unwrap());
    b.insert_alerting(&queued, Some(&outbox())).unwrap();
    b.insert_alerting(&dropped, Some(&outbox())).unwrap();
    b.conn()
        .execute(
            "DELETE FROM alerts WHERE frame_id = ?1",
            [dropped.frame_id.to_string()],
        )
        .unwrap();
    b.insert_alerting(&ok, Some(&outbox())).unwrap();

    // The cloud is down and the buffer full: the OK and unjudged parts go first, then the NG
    // part the operator was alerted to.
    let unjudged = frame(5, 100, None);
    assert_eq!(b.insert(&unjudged).unwrap().evicted, 1);
    assert!(!buffered(&b).contains(&ok.frame_id), "the OK part first");
    let ng = frame(6, 100, Some(true));
    assert_eq!(b.insert(&ng).unwrap().evicted, 1);
    assert!(
        !buffered(&b).contains(&unjudged.frame_id),
        "then the unjudged"
    );
    let last = frame(7, 100, Some(true));
    assert_eq!(b.insert(&last).unwrap().evicted, 1);
    assert_eq!(
        buffered(&b),
        [
            queued.frame_id,
            dropped.frame_id,
            ng.frame_id,
            last.frame_id
        ],
        "then the NG part already alerted"
    );
    assert!(matches!(
        b.insert(&frame(8, 100, Some(false))),
        Err(BufferError::NgUnalerted { frames: 4, .. })
    ));
    assert_eq!(b.stats().unwrap().evicted_total, 3);
}

// See: issue #21
#[test]
fn a_buffer_holding_only_ng_parts_nobody_alerted_refuses_new_frames_and_says_why() {
    let dir = tempfile::tempdir().unwrap();
    let row = 100 + ROW_OVERHEAD;
    let b = open(dir.path(), limits(2 * row, WhenFull::DropOldest));
    // Alerts off (nobody but the cloud alerts them), or alerts on with the broker away.
    let (off, waiting) = (frame(1, 100, Some(true)), frame(2, 100, Some(true)));
    b.insert(&off).unwrap();
    b.insert_alerting(&waiting, Some(&outbox())).unwrap();
    for new in [frame(3, 100, Some(false)), frame(4, 100, Some(true))] {
        match b.insert_alerting(&new, Some(&outbox())) {
            Err(BufferError::NgUnalerted {
                needed,
                frames: 2,
                bytes,
            }) => assert_eq!((needed, bytes), (row, 2 * row)),
            other => panic!("{other:?}"),
        }
    }
    let s = b.stats().unwrap();
    assert_eq!((s.frames, s.evicted_total, s.alerts_queued), (2, 0, 1));
    let reasons = b.degraded();
    assert!(
        reasons.iter().any(|r| r.starts_with("buffer_write_failed:")
            && r.contains("NG parts nobody has alerted yet")),
        "{reasons:?}"
    );
    // Once the broker has the waiting alert, its frame may make room.
    let leased = b.lease_alerts(10, LEASE).unwrap();
    assert!(b.ack_alert(leased[0].seq).unwrap());
    let ok = frame(5, 100, Some(false));
    assert_eq!(b.insert(&ok).unwrap().evicted, 1);
    assert_eq!(buffered(&b), [off.frame_id, ok.frame_id]);
    // And once the cloud acknowledged the other, there is room without evicting.
    assert!(b.ack(off.frame_id).unwrap());
    assert_eq!(b.insert(&frame(6, 100, None)).unwrap().evicted, 0);
    assert!(b.degraded().is_empty());
}

// See: issue #21
#[test]
fn a_requeued_dead_letter_nobody_alerted_is_not_evicted() {
    let dir = tempfile::tempdir().unwrap();
    let row = 100 + ROW_OVERHEAD;
    // Room for one frame: the requeued NG frame is the only candidate for eviction.
    let b = open(dir.path(), limits(row, WhenFull::DropOldest));
    let ng = frame(1, 100, Some(true));
    b.insert(&ng).unwrap();
    b.dead_letter(ng.frame_id, 422, "refused").unwrap();
    assert!(b.requeue(ng.frame_id).unwrap());
    let unalerted: bool = b
        .conn()
        .query_row(
            "SELECT unalerted FROM frames WHERE frame_id = ?1",
            [ng.frame_id.to_string()],
            |r| r.get(0),
        )
        .unwrap();
    assert!(unalerted, "requeued unalerted");
    match b.insert(&frame(2, 100, Some(false))) {
        Err(BufferError::NgUnalerted {
            needed,
            frames: 1,
            bytes,
        }) => assert_eq!((needed, bytes), (row, row)),
        other => panic!("{other:?}"),
    }
    assert_eq!(buffered(&b), [ng.frame_id]);
}

// See: issue #21
#[test]
fn unalerted_frames_are_the_refusal_reason_only_when_evicting_them_would_make_room() {
    let full = || BufferError::Full {
        needed: 1000,
        max: 1000,
    };
    // Evicting everything else leaves 200 bytes; the unalerted NG frames hold 900.
    assert!(matches!(
        refusal(1000, 200, 3, 900, full),
        BufferError::NgUnalerted {
            needed: 1000,
            frames: 3,
            bytes: 900
        }
    ));
    // The disk is too low for the frame even without them: not their doing.
    let low = || BufferError::DiskLow {
        needed: 1000,
        room: 500,
    };
    assert!(matches!(
        refusal(1000, 200, 3, 300, low),
        BufferError::DiskLow { .. }
    ));
    assert!(matches!(
        refusal(1000, 200, 0, 0, full),
        BufferError::Full { .. }
    ));
}

// See: issue #21
#[test]
fn unalerted_frames_past_half_the_buffer_are_counted_and_degrade() {
    let dir = tempfile::tempdir().unwrap();
    let row = 100 + ROW_OVERHEAD;
    let b = open(dir.path(), limits(4 * row, WhenFull::DropOldest));
    b.insert(&frame(1, 100, Some(false))).unwrap();
    b.insert(&frame(2, 100, Some(true))).unwrap();
    b.insert(&frame(3, 100, Some(true))).unwrap();
    let s = b.stats().unwrap();
    assert_eq!((s.unalerted_frames, s.unalerted_bytes), (2, 2 * row));
    assert!(b.degraded().is_empty(), "half the buffer: not past it");
    b.insert(&frame(4, 100, Some(true))).unwrap();
    let reasons = b.degraded();
    assert_eq!(reasons.len(), 1, "{reasons:?}");
    assert!(
        reasons[0].starts_with("ng_unalerted: 3 NG frames"),
        "{reasons:?}"
    );
}

// See: issue #21
#[test]
fn the_alert_of_a_dead_letter_is_never_dropped_by_the_outboxs_bounds() {
    let dir = tempfile::tempdir().unwrap();
    let b = open(dir.path(), limits(1 << 30, WhenFull::DropOldest));
    // The cloud refused the NG frame: the agent's alert is the part's only one.
    let mut refused = frame(1, 100, Some(true));
    refused.captured_at = Utc::now() - chrono::Duration::seconds(7200);
    b.insert_alerting(&refused, Some(&outbox())).unwrap();
    b.dead_letter(refused.frame_id, 422, "refused").unwrap();
    let outbox = bounded(1, 3600);
    let (first, mut second) = (frame(2, 100, Some(true)), frame(3, 100, Some(true)));
    second.captured_at = refused.captured_at;
    b.insert_alerting(&first, Some(&outbox)).unwrap();
    b.insert_alerting(&second, Some(&outbox)).unwrap();
    let max_age = std::time::Duration::from_secs(3600);
    assert_eq!(b.expire_alerts(max_age).unwrap().count, 1);
    let left = leased_frames(&b);
    assert_eq!(left, [refused.frame_id], "past the bound and the age");
    assert_eq!(b.stats().unwrap().alerts_dropped_total, 2);
    // Alerts turned off: nothing will send it; dropped, and said to be lost.
    b.release_alerts().unwrap();
    let abandoned = b.abandon_alerts().unwrap();
    assert_eq!((abandoned.count, abandoned.lost), (1, 1));
    assert_eq!(
        b.stats().unwrap().alerts_dropped_total,
        2,
        "lost is counted apart, as in the metric"
    );
}
