//! The analysis queue and the outbox, at the store interface, on whichever backend the suite
//! runs on (see `backend.rs`). Two store handles on one place stand for two replicas.

use std::time::Duration;

use uuid::Uuid;
use wiko_cloud::store::{Judgement, NewAnalysis, Outcome, Store};
use wiko_wire::{AnalysisStatus, Defect, DefectType};

use crate::backend::Place;

const LEASE: Duration = Duration::from_secs(60);
const URL: &str = "http://127.0.0.1:5001";

fn part(n: u32) -> NewAnalysis {
    NewAnalysis {
        facility: "yangjiang".into(),
        line: "l1".into(),
        station: "grinding".into(),
        product_sku: "WK-KN-200".into(),
        part_id: Some(format!("p{n}")),
        lot: None,
        timestamp: chrono::Utc::now(),
        frame: None,
        image_key: format!("20261126/{n}.jpg"),
        image_blake3: format!("{n:064}"),
        image_width: 64,
        image_height: 48,
        run_after: Duration::ZERO,
    }
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

async fn ids(store: &dyn Store, n: u32) -> Vec<Uuid> {
    let mut ids = Vec::new();
    for i in 0..n {
        ids.push(store.create(part(i)).await.unwrap().1);
    }
    ids
}

#[tokio::test]
async fn a_leased_job_goes_to_one_worker_and_a_second_completion_changes_nothing() {
    let place = Place::new().await;
    let (a, _) = place.open().await;
    let (b, _) = place.open().await;
    let ids = ids(a.as_ref(), 3).await;
    let stats = a.queue_stats().await.unwrap();
    assert_eq!(stats.waiting, 3);
    assert!(stats.oldest_due.is_some());

    let mut jobs = a.claim_jobs(10, LEASE).await.unwrap();
    assert_eq!(jobs.len(), 3);
    assert!(
        b.claim_jobs(10, LEASE).await.unwrap().is_empty(),
        "leased jobs are not handed out twice"
    );
    jobs.sort_by_key(|j| j.analysis_id);
    assert_eq!(jobs.iter().map(|j| j.analysis_id).collect::<Vec<_>>(), ids);
    assert!(
        jobs.iter()
            .all(|j| j.attempts == 1 && j.product_sku == "WK-KN-200")
    );

    // The same analysis completed by two workers: the first result stands, one set of messages.
    let first = a.complete(ids[0], verdict(true), URL).await.unwrap();
    let second = b.complete(ids[0], verdict(false), URL).await.unwrap();
    assert!(first.defect_detected && second.defect_detected);
    assert_eq!(first.defects, second.defects);
    let messages = a.outbox(100).await.unwrap();
    assert_eq!(messages.len(), 2, "one result and one alert");
    assert!(messages[0].topic.ends_with("/result") && messages[1].topic.ends_with("/alert"));

    // A completed job is gone; the others stay leased until their lease runs out.
    a.outbox_done(messages.iter().map(|m| m.id).collect())
        .await
        .unwrap();
    assert!(a.outbox(100).await.unwrap().is_empty());
    assert!(a.claim_jobs(10, LEASE).await.unwrap().is_empty());
    assert_eq!(
        a.queue_stats().await.unwrap().waiting,
        2,
        "two leased, one done"
    );
}

#[tokio::test]
async fn a_job_whose_lease_ran_out_is_taken_again_and_a_failing_job_ends_failed() {
    let place = Place::new().await;
    let (a, _) = place.open().await;
    let (b, _) = place.open().await;
    let id = ids(a.as_ref(), 1).await[0];

    // A worker that died: its lease runs out and another replica takes the job.
    let lost = a.claim_jobs(1, Duration::from_millis(1)).await.unwrap();
    assert_eq!(lost.len(), 1);
    tokio::time::sleep(Duration::from_millis(20)).await;
    let retaken = b.claim_jobs(1, LEASE).await.unwrap();
    assert_eq!((retaken.len(), retaken[0].attempts), (1, 2));

    // A failure under the limit retries later; at the limit the analysis is failed, visibly.
    b.fail_job(
        &retaken[0],
        "image store down",
        Duration::from_millis(1),
        3,
        URL,
    )
    .await
    .unwrap();
    tokio::time::sleep(Duration::from_millis(20)).await;
    let third = a.claim_jobs(1, LEASE).await.unwrap();
    assert_eq!(third[0].attempts, 3);
    assert_eq!(a.get(id).await.unwrap().status, AnalysisStatus::Pending);
    a.fail_job(
        &third[0],
        "image store down",
        Duration::from_millis(1),
        3,
        URL,
    )
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
        b.claim_jobs(1, LEASE).await.unwrap().is_empty(),
        "a failed job is not retried"
    );
    assert_eq!(
        a.outbox(10).await.unwrap().len(),
        1,
        "the failure is published as a result"
    );
}

#[tokio::test]
async fn replicas_sharing_a_store_publish_each_message_once() {
    let place = Place::new().await;
    if !place.is_shared() {
        return; // one embedded store serves one replica: nothing to share
    }
    let (a, _) = place.open().await;
    let (b, _) = place.open().await;
    for (i, id) in ids(a.as_ref(), 4).await.into_iter().enumerate() {
        a.complete(id, verdict(i % 2 == 0), URL).await.unwrap();
    }
    let mine = a.outbox(4).await.unwrap();
    let theirs = b.outbox(100).await.unwrap();
    assert_eq!(
        (mine.len(), theirs.len()),
        (4, 2),
        "six messages, split by lease"
    );
    assert!(mine.iter().all(|m| theirs.iter().all(|t| t.id != m.id)));
    // A replica's own leased messages come back to it (re-sent after a reconnect).
    assert_eq!(a.outbox(100).await.unwrap().len(), 4);
    a.outbox_done(mine.iter().map(|m| m.id).collect())
        .await
        .unwrap();
    b.outbox_done(theirs.iter().map(|m| m.id).collect())
        .await
        .unwrap();
    assert!(a.outbox(100).await.unwrap().is_empty() && b.outbox(100).await.unwrap().is_empty());
}
