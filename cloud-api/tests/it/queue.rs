//! The analysis queue and the outbox, at the store interface, on whichever backend the suite
//! runs on (see `backend.rs`). Two store handles on one place stand for two replicas.

use std::time::Duration;

use bytes::Bytes;
use uuid::Uuid;
use wiko_cloud::store::{
    Call, Event, Image, Judgement, Origin, OutboxItem, Outcome, Stage, Storage,
};
use wiko_wire::{AnalysisStatus, Defect, DefectType};

use crate::backend::Place;

const LEASE: Duration = Duration::from_secs(60);

fn call(n: u32) -> Origin {
    Origin::Call(Call {
        facility: "yangjiang".into(),
        line: "l1".into(),
        station: "grinding".into(),
        product_sku: "WK-KN-200".into(),
        part_id: Some(format!("p{n}")),
        received_at: chrono::Utc::now(),
    })
}

fn image(n: u32) -> Image {
    let bytes = Bytes::from(format!("image {n}"));
    Image {
        blake3: wiko_wire::frame::image_digest(&bytes),
        bytes,
        width: 64,
        height: 48,
    }
}

/// The outbox's events as (kind, NG) pairs.
fn events(items: &[OutboxItem]) -> Vec<(&'static str, bool)> {
    items
        .iter()
        .map(|i| match &i.event {
            Event::Result(a) => ("result", a.defect_detected),
            Event::Message { .. } => ("mqtt", false),
        })
        .collect()
}

fn verdict(ng: bool) -> Outcome {
    let defects = if ng {
        vec![Defect {
            kind: DefectType::Scratch,
            severity: "high".into(),
            confidence: 0.9,
            bbox: [1, 2, 3, 4],
            description: "scratch".into(),
        }]
    } else {
        Vec::new()
    };
    Outcome {
        judgement: Judgement {
            status: AnalysisStatus::Final,
            defect_detected: ng,
            defects,
            score: Some(2.0),
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

async fn ids(storage: &Storage, n: u32) -> Vec<Uuid> {
    let mut ids = Vec::new();
    for i in 0..n {
        let (_, id) = storage
            .put_part(call(i), image(i), Duration::ZERO)
            .await
            .unwrap();
        ids.push(id);
    }
    ids
}

#[tokio::test]
async fn a_leased_job_goes_to_one_worker_and_a_second_completion_changes_nothing() {
    let place = Place::new().await;
    let (storage, b) = (place.open().await, place.open().await.records);
    let a = storage.records.clone();
    let ids = ids(&storage, 3).await;
    let stats = a.queue_stats().await.unwrap();
    assert_eq!(stats.waiting, 3);
    assert!(stats.oldest_due.is_some());

    let mut jobs = a.claim_jobs(Stage::Local, 10, LEASE).await.unwrap();
    assert_eq!(jobs.len(), 3);
    assert!(
        b.claim_jobs(Stage::Local, 10, LEASE)
            .await
            .unwrap()
            .is_empty(),
        "leased jobs are not handed out twice"
    );
    jobs.sort_by_key(|j| j.analysis_id);
    assert_eq!(jobs.iter().map(|j| j.analysis_id).collect::<Vec<_>>(), ids);
    assert!(
        jobs.iter()
            .all(|j| j.attempts == 1 && j.product_sku == "WK-KN-200")
    );

    // The same analysis completed by two workers: the first result stands, one event.
    let first = a.complete(ids[0], verdict(true)).await.unwrap();
    let second = b.complete(ids[0], verdict(false)).await.unwrap();
    assert!(first.defect_detected && second.defect_detected);
    assert_eq!(first.defects, second.defects);
    let messages = a.outbox(100).await.unwrap();
    assert_eq!(events(&messages), [("result", true)], "one result event");
    let Event::Result(stored) = &messages[0].event else {
        unreachable!()
    };
    assert_eq!(**stored, first, "the event carries the result as stored");

    // A completed job is gone; the others stay leased until their lease runs out.
    let before = chrono::Utc::now() - chrono::Duration::seconds(1);
    a.outbox_done(messages.iter().map(|m| m.id).collect())
        .await
        .unwrap();
    let after = chrono::Utc::now() + chrono::Duration::seconds(1);
    // A replay after a start takes what was published before it, not what came after.
    assert_eq!(a.published_between(before, after).await.unwrap().len(), 1);
    assert!(
        a.published_between(before - chrono::Duration::seconds(60), before)
            .await
            .unwrap()
            .is_empty()
    );
    assert!(a.outbox(100).await.unwrap().is_empty());
    assert!(
        a.claim_jobs(Stage::Local, 10, LEASE)
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(
        a.queue_stats().await.unwrap().waiting,
        2,
        "two leased, one done"
    );
}

#[tokio::test]
async fn a_job_whose_lease_ran_out_is_taken_again_and_a_failing_job_ends_failed() {
    let place = Place::new().await;
    let (storage, b) = (place.open().await, place.open().await.records);
    let a = storage.records.clone();
    let id = ids(&storage, 1).await[0];

    // A worker that died: its lease runs out and another replica takes the job.
    let lost = a
        .claim_jobs(Stage::Local, 1, Duration::from_millis(1))
        .await
        .unwrap();
    assert_eq!(lost.len(), 1);
    tokio::time::sleep(Duration::from_millis(20)).await;
    let retaken = b.claim_jobs(Stage::Local, 1, LEASE).await.unwrap();
    assert_eq!((retaken.len(), retaken[0].attempts), (1, 2));

    // A failure under the limit retries later; at the limit the analysis is failed, visibly.
    b.fail_job(&retaken[0], "image store down", Duration::from_millis(1), 3)
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(20)).await;
    let third = a.claim_jobs(Stage::Local, 1, LEASE).await.unwrap();
    assert_eq!(third[0].attempts, 3);
    assert_eq!(a.get(id).await.unwrap().status, AnalysisStatus::Pending);
    a.fail_job(&third[0], "image store down", Duration::from_millis(1), 3)
        .await
        .unwrap();
    let dead = a.get(id).await.unwrap();
    assert_eq!(dead.status, AnalysisStatus::Failed);
    assert!(
        dead.recommendation.contains("gave up after 3 attempts"),
        "{}",
        dead.recommendation
    );
    tokio::time::sleep(Duration::from_millis(20)).await;
    assert!(
        b.claim_jobs(Stage::Local, 1, LEASE)
            .await
            .unwrap()
            .is_empty(),
        "a failed job is not retried"
    );
    assert_eq!(
        events(&a.outbox(10).await.unwrap()),
        [("result", false)],
        "the failure is published as a result"
    );
}

/// Two handles on one store (replicas on PostgreSQL; on the embedded store, the same rules
/// over one file) each take the events the other does not hold.
#[tokio::test]
async fn replicas_sharing_a_store_publish_each_event_once() {
    let place = Place::new().await;
    let (storage, b) = (place.open().await, place.open().await.records);
    let a = storage.records.clone();
    for (i, id) in ids(&storage, 6).await.into_iter().enumerate() {
        a.complete(id, verdict(i % 2 == 0)).await.unwrap();
    }
    let mine = a.outbox(4).await.unwrap();
    let theirs = b.outbox(100).await.unwrap();
    assert_eq!(
        (mine.len(), theirs.len()),
        (4, 2),
        "six events, split by lease"
    );
    assert!(mine.iter().all(|m| theirs.iter().all(|t| t.id != m.id)));
    // A replica's own leased events come back to it (sent again after a reconnect).
    assert_eq!(a.outbox(100).await.unwrap().len(), 4);
    a.outbox_done(mine.iter().map(|m| m.id).collect())
        .await
        .unwrap();
    b.outbox_done(theirs.iter().map(|m| m.id).collect())
        .await
        .unwrap();
    assert!(a.outbox(100).await.unwrap().is_empty() && b.outbox(100).await.unwrap().is_empty());
}

fn frame(device: &str, seq: u64, image: &Image) -> Origin {
    Origin::Frame(wiko_wire::FrameMeta {
        device_id: device.into(),
        seq,
        ..crate::harness::meta(Uuid::now_v7(), &image.bytes)
    })
}

/// A device that uploads a backlog deeper than the turns count (after an outage, say) does not
/// hold the workers: another device's part is taken within the next few jobs; the backlog's
/// own parts are taken in the order they came. (Its images are of 40 megapixels: a second of
/// turn per job, so the parts whose turn passed while the backlog was being written, taken
/// before the other device's, are few however slow this machine writes.)
#[tokio::test]
async fn a_device_with_a_backlog_does_not_hold_the_workers_and_its_parts_keep_their_order() {
    let place = Place::new().await;
    let storage = place.open().await;
    let mut busy = Vec::new();
    for seq in 1..=100u32 {
        let img = Image {
            width: 8000,
            height: 5000,
            ..image(seq)
        };
        let (_, id) = storage
            .put_part(frame("busy-pc", seq.into(), &img), img, Duration::ZERO)
            .await
            .unwrap();
        busy.push(id);
    }
    let img = image(1000);
    let (_, quiet) = storage
        .put_part(frame("quiet-pc", 1, &img), img, Duration::ZERO)
        .await
        .unwrap();

    let mut taken = Vec::new();
    loop {
        let jobs = storage
            .records
            .claim_jobs(Stage::Local, 1, LEASE)
            .await
            .unwrap();
        let Some(job) = jobs.first() else { break };
        taken.push(job.analysis_id);
    }
    assert_eq!(taken.len(), 101);
    let at = taken.iter().position(|&id| id == quiet).unwrap();
    assert!(at < 10, "the quiet device's part was job {at} of 101");
    taken.retain(|&id| id != quiet);
    assert_eq!(taken, busy);
}
