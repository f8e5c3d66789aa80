//! The upload loop against a scripted uplink, with tokio's clock paused: backoff, `Retry-After`,
//! dead letters and acknowledgements are checked at exact instants.

use std::collections::VecDeque;
use std::sync::Mutex;
use std::time::Duration;

use chrono::Utc;
use tokio::time::Instant;
use uuid::Uuid;
use wiko_wire::IngestOutcome;

use super::*;
use crate::buffer::{Limits, NewFrame};
use crate::config::{Synchronous, WhenFull};

/// Answers uploads from a script, recording when each arrived.
#[derive(Clone, Default)]
struct Scripted {
    script: Arc<Mutex<VecDeque<Result<(), UploadError>>>>,
    calls: Arc<Mutex<Vec<(Instant, Uuid)>>>,
    /// How long each upload takes.
    latency: Duration,
    /// (now in flight, most ever in flight)
    in_flight: Arc<Mutex<(usize, usize)>>,
}

impl Scripted {
    fn new(script: Vec<Result<(), UploadError>>) -> Scripted {
        Scripted {
            script: Arc::new(Mutex::new(script.into())),
            ..Scripted::default()
        }
    }

    fn calls(&self) -> Vec<(Instant, Uuid)> {
        self.calls.lock().unwrap().clone()
    }
}

impl Uplink for Scripted {
    async fn upload(&self, meta: &FrameMeta, _jpeg: Vec<u8>) -> Result<IngestAck, UploadError> {
        self.calls
            .lock()
            .unwrap()
            .push((Instant::now(), meta.frame_id));
        {
            let mut f = self.in_flight.lock().unwrap();
            f.0 += 1;
            f.1 = f.1.max(f.0);
        }
        tokio::time::sleep(self.latency).await;
        self.in_flight.lock().unwrap().0 -= 1;
        let next = self.script.lock().unwrap().pop_front().unwrap_or(Ok(()));
        next.map(|()| IngestAck {
            frame_id: meta.frame_id,
            outcome: IngestOutcome::Created,
            analysis_id: Uuid::now_v7(),
        })
    }
}

fn retry(after: Option<Duration>) -> Result<(), UploadError> {
    Err(UploadError::Retryable {
        reason: "503".into(),
        retry_after: after,
    })
}

fn cfg(concurrency: usize) -> SyncConfig {
    SyncConfig {
        endpoint: "http://127.0.0.1:1".into(),
        api_key: "k".into(),
        concurrency,
        request_timeout: Duration::from_secs(5),
        backoff_initial: Duration::from_millis(100),
        backoff_max: Duration::from_secs(2),
        poll_interval: Duration::from_millis(50),
        heartbeat: None,
    }
}

fn buffer_with(n: usize) -> (tempfile::TempDir, Arc<Buffer>, Vec<Uuid>) {
    let dir = tempfile::tempdir().unwrap();
    let limits = Limits {
        max_disk_bytes: 1 << 30,
        min_free_bytes: 0,
        when_full: WhenFull::DropOldest,
        synchronous: Synchronous::Normal,
    };
    let (buffer, _) = Buffer::open(&dir.path().join("b.db"), limits).unwrap();
    let ids = (0..n)
        .map(|i| {
            let f = NewFrame {
                frame_id: Uuid::now_v7(),
                camera: "c".into(),
                device_id: "d".into(),
                facility: "f".into(),
                line: "l".into(),
                station: "s".into(),
                sku: "k".into(),
                part_id: None,
                lot: None,
                captured_at: Utc::now(),
                jpeg: vec![i as u8; 10],
                edge: None,
            };
            buffer.insert(&f).unwrap();
            f.frame_id
        })
        .collect();
    (dir, Arc::new(buffer), ids)
}

/// Runs the uploader until the buffer is empty (or 60 s of paused time), then stops it.
async fn drain(buffer: &Arc<Buffer>, uplink: Scripted, concurrency: usize) {
    let stop = CancellationToken::new();
    let up = Uploader::with_uplink(
        buffer.clone(),
        uplink,
        &cfg(concurrency),
        Arc::new(Notify::new()),
    );
    let task = tokio::spawn(up.run(stop.clone()));
    let deadline = Instant::now() + Duration::from_secs(60);
    while Instant::now() < deadline {
        let s = buffer.stats().unwrap();
        if s.frames == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    stop.cancel();
    task.await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn acknowledged_frames_leave_the_buffer_oldest_first() {
    let (_dir, buffer, ids) = buffer_with(3);
    let uplink = Scripted::new(vec![]);
    drain(&buffer, uplink.clone(), 1).await;
    let order: Vec<Uuid> = uplink.calls().iter().map(|(_, id)| *id).collect();
    assert_eq!(order, ids);
    assert_eq!(buffer.stats().unwrap().frames, 0);
}

#[tokio::test(start_paused = true)]
async fn failures_back_off_exponentially_and_then_resume() {
    let (_dir, buffer, ids) = buffer_with(1);
    let uplink = Scripted::new(vec![retry(None), retry(None), retry(None)]);
    drain(&buffer, uplink.clone(), 1).await;
    let calls = uplink.calls();
    assert_eq!(calls.len(), 4, "three failures, then success");
    assert!(calls.iter().all(|(_, id)| *id == ids[0]));
    let gaps: Vec<Duration> = calls.windows(2).map(|w| w[1].0 - w[0].0).collect();
    // Equal jitter: each delay lies in [cap/2, cap] with caps 100, 200, 400 ms.
    for (gap, cap) in gaps.iter().zip([100u64, 200, 400]) {
        let cap = Duration::from_millis(cap);
        assert!(
            *gap >= cap / 2 && *gap <= cap + Duration::from_millis(60),
            "gap {gap:?} for cap {cap:?}"
        );
    }
    assert_eq!(buffer.stats().unwrap().frames, 0);
}

#[tokio::test(start_paused = true)]
async fn retry_after_from_the_cloud_is_honoured() {
    let (_dir, buffer, _) = buffer_with(1);
    let uplink = Scripted::new(vec![retry(Some(Duration::from_secs(7)))]);
    drain(&buffer, uplink.clone(), 1).await;
    let calls = uplink.calls();
    assert_eq!(calls.len(), 2);
    let gap = calls[1].0 - calls[0].0;
    assert!(
        gap >= Duration::from_secs(7) && gap < Duration::from_secs(8),
        "{gap:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn a_permanent_rejection_goes_to_dead_letters_and_the_rest_flows_on() {
    let (_dir, buffer, _) = buffer_with(3);
    let uplink = Scripted::new(vec![Err(UploadError::Rejected {
        status: 409,
        reason: "frame_conflict".into(),
    })]);
    drain(&buffer, uplink.clone(), 1).await;
    assert_eq!(uplink.calls().len(), 3, "the rejected frame is not retried");
    let s = buffer.stats().unwrap();
    assert_eq!((s.frames, s.dead_letters), (0, 1));
}

#[tokio::test(start_paused = true)]
async fn at_most_concurrency_uploads_are_in_flight() {
    let (_dir, buffer, _) = buffer_with(10);
    let uplink = Scripted {
        latency: Duration::from_millis(100),
        ..Scripted::new(vec![])
    };
    drain(&buffer, uplink.clone(), 3).await;
    assert_eq!(uplink.calls().len(), 10);
    let most = uplink.in_flight.lock().unwrap().1;
    assert_eq!(most, 3, "uploads in flight at once with concurrency 3");
}

// See: issue #19
#[tokio::test(start_paused = true)]
async fn an_acknowledged_frame_whose_delete_fails_is_not_uploaded_again() {
    let (dir, buffer, ids) = buffer_with(3);
    // Deletes fail, as they do on a full disk, until the trigger is dropped.
    let side = rusqlite::Connection::open(dir.path().join("b.db")).unwrap();
    side.execute_batch(
        "CREATE TRIGGER full BEFORE DELETE ON frames BEGIN SELECT RAISE(FAIL, 'database or disk is full'); END;",
    )
    .unwrap();
    let uplink = Scripted::new(vec![]);
    let stop = CancellationToken::new();
    let up = Uploader::with_uplink(
        buffer.clone(),
        uplink.clone(),
        &cfg(1),
        Arc::new(Notify::new()),
    );
    let task = tokio::spawn(up.run(stop.clone()));
    tokio::time::sleep(Duration::from_secs(30)).await;
    let order: Vec<Uuid> = uplink.calls().iter().map(|(_, id)| *id).collect();
    assert_eq!(
        order, ids,
        "each frame uploaded once, however long the deletes fail"
    );
    assert_eq!(buffer.stats().unwrap().frames, 3);
    let reasons = buffer.degraded();
    assert!(
        reasons
            .iter()
            .any(|r| r.starts_with("acks_not_deleted: 3 ")),
        "{reasons:?}"
    );

    side.execute_batch("DROP TRIGGER full").unwrap();
    // Retried within the backoff's cap (2 s) plus a poll.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(
        buffer.stats().unwrap().frames,
        0,
        "deleted once the disk has room"
    );
    assert_eq!(uplink.calls().len(), 3, "and still never uploaded again");
    assert!(buffer.degraded().is_empty());
    stop.cancel();
    task.await.unwrap();
}
