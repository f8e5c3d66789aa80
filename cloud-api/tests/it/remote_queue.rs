//! The remote analyzer's queue behaviour (issue #22): the deployment's token and request
//! budget shared by two replicas over one store, counted at the server that speaks Azure's
//! protocol (`azure_mock.rs`), and the store's reservations themselves; a 429 asking to wait
//! past `max_retry_wait_secs` puts the part back in the queue, enriched later, once; a call put
//! off past `max_deferral_secs` after the part came in is given up, the gate's verdict final;
//! a call put off costs no blob read and no image work, and a call waiting for its turn holds
//! no memory; a burst against the budget loses or repeats nothing.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use serde_json::Value;
use tokio_util::sync::CancellationToken;
use wiko_cloud::analysis::budget::MIN_BUDGET;
use wiko_cloud::analysis::remote::{Cause, ImageSource, Part};
use wiko_cloud::store::{BlobStore, PgSettings, Storage, StoreError, WindowClaim, open_postgres};
use wiko_wire::{AnalysisStatus, VerdictErrorCode};

use crate::azure_mock::{INPUT_TOKENS, Mock, OUTPUT_TOKENS, Reply};
use crate::backend::Place;
use crate::harness::*;
use crate::remote_rig::*;

/// Waits until the wall clock is just past the start of a `window`, so that the calls of a
/// test begin at a window's start (a call reserved at a window's very end could reach the
/// server in the next one).
async fn at_window_start(window: Duration) {
    let ms = window.as_millis() as i64;
    let now = chrono::Utc::now().timestamp_millis();
    let next = (now.div_euclid(ms) + 1) * ms;
    tokio::time::sleep(Duration::from_millis((next - now) as u64 + 10)).await;
}

/// Runs the remote workers of every replica until each of `ids` is final (or 60 s pass).
async fn enrich_all(replicas: &[&Harness], ids: &[Value]) {
    let stop = CancellationToken::new();
    let mut tasks = Vec::new();
    for h in replicas {
        for _ in 0..2 {
            let workers = h.state.remote_workers().unwrap();
            tasks.push(tokio::spawn(workers.run(stop.clone())));
        }
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    for id in ids {
        while result(replicas[0], id).await["status"] != "final" {
            assert!(
                tokio::time::Instant::now() < deadline,
                "{id} not enriched in 60 s"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    stop.cancel();
    for t in tasks {
        t.await.unwrap();
    }
}

/// The events of `id` in the outbox: its provisional result, then its one final update.
async fn provisional_then_final(h: &Harness, id: &Value) {
    assert_eq!(
        result_events(h, id).await,
        [AnalysisStatus::Provisional, AnalysisStatus::Final],
        "{id}"
    );
}

/// Each part: one provisional result event, then one final update, and a remote verdict
/// without error.
async fn enriched_once(h: &Harness, ids: &[Value]) {
    for id in ids {
        provisional_then_final(h, id).await;
        let done = result(h, id).await;
        let verdicts = done["verdicts"].as_array().unwrap();
        assert_eq!(verdicts.len(), 2, "{done}");
        assert_eq!(verdicts[1]["source"], "remote");
        assert_eq!(verdicts[1]["error"], Value::Null, "{done}");
    }
}

#[tokio::test]
async fn two_replicas_never_send_more_tokens_together_than_the_deployment_allows() {
    let mock = Mock::start(KEY).await;
    // 4,000 tokens per 1 s window: each call reserves its estimate (about 500 text, 85 image,
    // 800 max_tokens) and is corrected to the 1,100 the server reports, so two or three calls
    // fit in a window, whichever replica makes them.
    let per_window = 4000;
    // Workers wait for a later window (up to 5 s) rather than put their part off, so every call
    // is reserved at a window's start or just after an answer: it reaches the server within
    // the window it was counted in.
    let table = remote_table(
        &mock,
        "azure_openai",
        &format!(
            "deployment_tokens_per_minute = {}\ndeployment_window_secs = 1\n",
            per_window * 60
        ),
    )
    .replace("max_retry_wait_secs = 2", "max_retry_wait_secs = 5");
    let place = Arc::new(Place::new().await);
    let a = started_with(place.clone(), &table).await;
    calibrate(&a).await;
    let b = started_with(place, &table).await;
    let mut ids = ng_parts(&a, 5).await;
    ids.extend(ng_parts(&b, 5).await);

    at_window_start(Duration::from_secs(1)).await;
    enrich_all(&[&a, &b], &ids).await;

    let mut per_second: BTreeMap<i64, u64> = BTreeMap::new();
    for seen in mock.seen() {
        *per_second.entry(seen.wall.timestamp()).or_default() += INPUT_TOKENS + OUTPUT_TOKENS;
    }
    assert_eq!(
        per_second.values().sum::<u64>(),
        10 * (INPUT_TOKENS + OUTPUT_TOKENS),
        "one call per part"
    );
    assert!(
        per_second.values().all(|&tokens| tokens <= per_window),
        "tokens per window at the server: {per_second:?}"
    );
    assert!(
        per_second.len() >= 3,
        "the budget spread the calls: {per_second:?}"
    );
    enriched_once(&a, &ids).await;
}

#[tokio::test]
async fn a_429_asking_past_the_max_wait_puts_the_part_back_until_then() {
    let mock = Mock::start(KEY).await;
    // max_retry_wait_secs = 2: a 429 asking for 3 s is not waited out by the worker.
    let h = harness_with(&remote_table(&mock, "azure_openai", "")).await;
    calibrate(&h).await;
    let workers = h.state.remote_workers().unwrap();
    let ids = ng_parts(&h, 1).await;

    mock.script([Reply::too_many("retry-after", "3")]);
    assert!(workers.work_once().await);
    assert_eq!(mock.seen().len(), 1);
    let waiting = result(&h, &ids[0]).await;
    assert_eq!(waiting["status"], "provisional", "{waiting}");
    assert_eq!(waiting["verdicts"].as_array().unwrap().len(), 1);
    assert!(!workers.work_once().await, "the part waits for its time");

    tokio::time::sleep(Duration::from_millis(3100)).await;
    assert!(workers.work_once().await);
    assert!(!workers.work_once().await, "enriched once");
    assert_eq!(mock.seen().len(), 2);
    enriched_once(&h, &ids).await;
    let (_, costs) = get_json(&h, "/api/v1/costs").await;
    assert_eq!(costs["rows"][0]["parts"], 1, "{costs}");
}

// See: issue #22 (a part could be put off forever)
#[tokio::test]
async fn a_call_put_off_past_max_deferral_is_given_up_and_the_gates_verdict_is_final() {
    let mock = Mock::start(KEY).await;
    // max_retry_wait_secs = 2: a 429 asking for 3 s puts the part off; max_deferral_secs =
    // 10: the part may wait until 10 s after it came in, no later.
    let h = harness_with(&remote_table(
        &mock,
        "azure_openai",
        "max_deferral_secs = 10\n",
    ))
    .await;
    calibrate(&h).await;
    let workers = h.state.remote_workers().unwrap();
    let ids = ng_parts(&h, 1).await;

    mock.script([Reply::too_many("retry-after", "3")]);
    assert!(workers.work_once().await);
    let waiting = result(&h, &ids[0]).await;
    assert_eq!(waiting["status"], "provisional");
    tokio::time::sleep(Duration::from_millis(3100)).await;
    // Asked again, the service wants 20 s more: past 10 s after the part came in.
    mock.script([Reply::too_many("retry-after", "20")]);
    assert!(workers.work_once().await);
    assert_eq!(mock.seen().len(), 2);

    let done = result(&h, &ids[0]).await;
    assert_eq!(
        (&done["status"], &done["defect_detected"]),
        (&"final".into(), &true.into()),
        "the gate's verdict, final: {done}"
    );
    let remote = &done["verdicts"][1];
    assert_eq!(remote["source"], "remote");
    assert_eq!(remote["error"]["code"], "rate_limited", "{done}");
    let message = remote["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("given up") && message.contains("max_deferral_secs"),
        "{message}"
    );
    assert_eq!(
        done["defects"], waiting["defects"],
        "the gate's regions stay"
    );
    provisional_then_final(&h, &ids[0]).await;
    let (_, costs) = get_json(&h, "/api/v1/costs").await;
    assert_eq!(
        (&costs["rows"][0]["parts"], &costs["rows"][0]["failures"]),
        (&1.into(), &1.into()),
        "{costs}"
    );
}

#[tokio::test]
async fn with_no_deferral_allowed_a_full_deployment_window_gives_the_part_up_at_once() {
    let mock = Mock::start(KEY).await;
    // One request per 5 s window for the deployment (both calls fall in one window, however
    // loaded the machine); a call that does not fit is not put off.
    let table = remote_table(
        &mock,
        "openai_compatible",
        "deployment_requests_per_minute = 12\ndeployment_window_secs = 5\nmax_deferral_secs = 0\n",
    )
    .replace("max_retry_wait_secs = 2", "max_retry_wait_secs = 0");
    let h = harness_with(&table).await;
    calibrate(&h).await;
    let workers = h.state.remote_workers().unwrap();
    let ids = ng_parts(&h, 2).await;

    at_window_start(Duration::from_secs(5)).await;
    assert!(workers.work_once().await);
    assert!(workers.work_once().await);
    assert_eq!(mock.seen().len(), 1, "one request in the window");
    let codes: Vec<Value> = {
        let mut codes = Vec::new();
        for id in &ids {
            let done = result(&h, id).await;
            assert_eq!(done["status"], "final", "{done}");
            codes.push(done["verdicts"][1]["error"]["code"].clone());
        }
        codes
    };
    assert_eq!(codes, [Value::Null, "budget_exhausted".into()]);
    for id in &ids {
        provisional_then_final(&h, id).await;
    }
}

// See: issue #22 (a part put off was re-encoded every time before its reservation)
#[tokio::test]
async fn a_call_put_off_by_the_deployments_budget_costs_no_image_work() {
    let mock = Mock::start(KEY).await;
    // One request per 5 s window (both first calls fall in one, however loaded the machine),
    // no waiting for the next.
    let table = remote_table(
        &mock,
        "azure_openai",
        "deployment_requests_per_minute = 12\ndeployment_window_secs = 5\n",
    )
    .replace("max_retry_wait_secs = 2", "max_retry_wait_secs = 0");
    let place = Place::new().await;
    let remote = remote(&table).sharing(place.open().await.records);
    // Bytes that are no image, of a part recorded as 640 × 480: decoding them fails the part.
    let not_a_jpeg = Bytes::from_static(b"not a JPEG at all");
    let garbage = ng_part(&not_a_jpeg);
    let knife = rusty_knife();
    let good = ng_part(&knife);

    at_window_start(Duration::from_secs(5)).await;
    assert_eq!(remote.judge(&good).await.unwrap().error, None);
    // The window is full: the call is put off before its image is touched (a decode would
    // have failed it).
    let later = remote.judge(&garbage).await.unwrap_err();
    assert_eq!(later.cause, Cause::Budget);
    // In the next window it has its place; only then is the image decoded, and it fails.
    tokio::time::sleep(later.retry_in).await;
    let failed = remote.judge(&garbage).await.unwrap().error.unwrap();
    assert_eq!(failed.code, VerdictErrorCode::ImageUnusable);
    assert!(
        failed.message.contains("image cannot be prepared"),
        "{}",
        failed.message
    );
    assert_eq!(
        mock.seen().len(),
        1,
        "no request for an image that cannot be sent"
    );
}

/// An image store that counts its reads, and fails them while `failing`.
struct Counting {
    inner: Arc<dyn BlobStore>,
    reads: AtomicUsize,
    failing: AtomicBool,
}

impl Counting {
    fn reads(&self) -> usize {
        self.reads.load(Ordering::SeqCst)
    }
}

#[async_trait::async_trait]
impl BlobStore for Counting {
    async fn put(&self, key: &str, bytes: Bytes) -> Result<(), StoreError> {
        self.inner.put(key, bytes).await
    }
    async fn get(&self, key: &str) -> Result<Bytes, StoreError> {
        self.reads.fetch_add(1, Ordering::SeqCst);
        if self.failing.load(Ordering::SeqCst) {
            return Err(StoreError::Unavailable("the image store is down".into()));
        }
        self.inner.get(key).await
    }
    async fn ping(&self) -> Result<(), StoreError> {
        self.inner.ping().await
    }
}

/// A cloud with the `[remote]` table `table` whose image store counts its reads.
async fn counting_reads(table: &str) -> (Harness, Arc<Counting>) {
    let place = Arc::new(Place::new().await);
    let storage = place.open().await;
    let blobs = Arc::new(Counting {
        inner: storage.images,
        reads: AtomicUsize::new(0),
        failing: AtomicBool::new(false),
    });
    let storage = Storage {
        records: storage.records,
        images: blobs.clone(),
    };
    (started_over(storage, place, table).await, blobs)
}

// See: issue #22 (a part put off read its image from the store at every deferral)
#[tokio::test]
async fn a_part_put_off_reads_its_image_only_when_its_call_is_made() {
    let mock = Mock::start(KEY).await;
    // One request per 5 s window (both first calls fall in one, however loaded the machine),
    // no waiting for the next.
    let table = remote_table(
        &mock,
        "openai_compatible",
        "deployment_requests_per_minute = 12\ndeployment_window_secs = 5\n",
    )
    .replace("max_retry_wait_secs = 2", "max_retry_wait_secs = 0");
    let (h, blobs) = counting_reads(&table).await;
    calibrate(&h).await;
    let workers = h.state.remote_workers().unwrap();
    let ids = ng_parts(&h, 2).await;
    let before = blobs.reads();

    at_window_start(Duration::from_secs(5)).await;
    assert!(workers.work_once().await);
    assert!(workers.work_once().await);
    assert_eq!(mock.seen().len(), 1, "one request in the window");
    assert_eq!(
        blobs.reads() - before,
        1,
        "the part put off read nothing: only the call made read its image"
    );
    // In a later window the part put off is sent: one read more.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    while mock.seen().len() < 2 {
        assert!(tokio::time::Instant::now() < deadline, "not sent in 15 s");
        workers.work_once().await;
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(blobs.reads() - before, 2, "one read per call made");
    enriched_once(&h, &ids).await;
}

/// An image that cannot be read: the store is down.
struct Unreadable;

#[async_trait::async_trait]
impl ImageSource for Unreadable {
    async fn read(&self) -> Result<Bytes, StoreError> {
        Err(StoreError::Unavailable("the image store is down".into()))
    }
}

// See: issue #22 (a call whose image could not be read kept its request counted in the
// deployment's window, and its part was put back at once: with max_retry_wait_secs = 0 the
// worker spun on the failing store)
#[tokio::test]
async fn an_image_store_that_fails_puts_the_part_off_without_spending_the_budget_or_spinning() {
    let mock = Mock::start(KEY).await;
    // One request per 60 s window (a request counted for a call never made leaves none for
    // the part once its image can be read), no waiting for a window, and a 3 s job lease
    // (the longest a part the store put off waits).
    let table = remote_table(
        &mock,
        "openai_compatible",
        "deployment_requests_per_minute = 1\ndeployment_tokens_per_minute = 100000\n\
         job_lease_secs = 3\n",
    )
    .replace("max_retry_wait_secs = 2", "max_retry_wait_secs = 0");
    let (h, blobs) = counting_reads(&table).await;
    calibrate(&h).await;
    let records = h.state.intake.storage.records.clone();

    // The analyzer alone: the call is put off (cause image), and the window it had its place
    // in is as it was, its tokens and its request given back.
    let remote = remote(&table).sharing(records.clone());
    let s = remote.settings();
    let deployment = format!("{} {}", s.endpoint, s.model);
    let budget = s.deployment.unwrap();
    let window_ms = budget.window.as_millis() as i64;
    let knife = rusty_knife();
    let part = Part {
        image: &Unreadable,
        ..ng_part(&knife)
    };
    let (later, slot) = loop {
        let slot = chrono::Utc::now().timestamp_millis().div_euclid(window_ms);
        let later = remote.judge(&part).await.unwrap_err();
        // Judged within one window (else again, in the next).
        if chrono::Utc::now().timestamp_millis().div_euclid(window_ms) == slot {
            break (later, slot);
        }
    };
    assert_eq!(later.cause, Cause::Image, "{}", later.reason);
    assert!(
        later.reason.contains("image cannot be read"),
        "{}",
        later.reason
    );
    assert!(
        later.retry_in >= Duration::from_secs(1),
        "a store failure waits at least 1 s, whatever max_retry_wait_secs: {:?}",
        later.retry_in
    );
    let whole = WindowClaim {
        deployment: deployment.clone(),
        slot,
        tokens: budget.tokens,
        max_tokens: budget.tokens,
        max_requests: 1,
    };
    assert!(
        records.reserve_remote(&whole).await.unwrap(),
        "nothing counted for a call never made: the whole window is free"
    );
    let tokens = i64::try_from(budget.tokens).unwrap();
    records
        .settle_remote(&deployment, slot, -tokens, -1)
        .await
        .unwrap();
    assert!(mock.seen().is_empty());

    // Through the queue: while the image store fails, the part is put off with a backoff of
    // at least 1 s (max_retry_wait_secs = 0 does not make it spin), not given up before
    // max_deferral_secs (an hour); once the store is back it is enriched once, in the same window (its request was not spent).
    let ids = ng_parts(&h, 1).await;
    blobs.failing.store(true, Ordering::SeqCst);
    let before = blobs.reads();
    let stop = CancellationToken::new();
    let tasks: Vec<_> = (0..2)
        .map(|_| tokio::spawn(h.state.remote_workers().unwrap().run(stop.clone())))
        .collect();
    tokio::time::sleep(Duration::from_secs(4)).await;
    let failed_reads = blobs.reads() - before;
    assert!(
        (1..=6).contains(&failed_reads),
        "the part was tried, with a backoff: {failed_reads} reads in 4 s"
    );
    assert_eq!(result(&h, &ids[0]).await["status"], "provisional");
    assert!(mock.seen().is_empty());
    blobs.failing.store(false, Ordering::SeqCst);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while result(&h, &ids[0]).await["status"] != "final" {
        assert!(
            tokio::time::Instant::now() < deadline,
            "not enriched within 10 s of the store's return"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    stop.cancel();
    for t in tasks {
        t.await.unwrap();
    }
    assert_eq!(
        mock.seen().len(),
        1,
        "one call, once the image could be read"
    );
    enriched_once(&h, &ids).await;
}

// See: issue #22 (a part whose image could not be read stayed provisional for ever)
#[tokio::test]
async fn a_part_whose_image_cannot_be_read_past_max_deferral_is_given_up() {
    let mock = Mock::start(KEY).await;
    let table = remote_table(&mock, "openai_compatible", "max_deferral_secs = 0\n");
    let (h, blobs) = counting_reads(&table).await;
    calibrate(&h).await;
    let ids = ng_parts(&h, 1).await;
    blobs.failing.store(true, Ordering::SeqCst);
    let workers = h.state.remote_workers().unwrap();
    assert!(workers.work_once().await);

    let done = result(&h, &ids[0]).await;
    assert_eq!(done["status"], "final", "the gate's verdict, final: {done}");
    let remote = &done["verdicts"][1];
    assert_eq!(remote["error"]["code"], "unavailable", "{done}");
    let message = remote["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("given up") && message.contains("image cannot be read"),
        "{message}"
    );
    assert!(mock.seen().is_empty(), "no call without its image");
    provisional_then_final(&h, &ids[0]).await;
}

// See: issue #22 (the image's memory was reserved before the call's waits and held through them)
#[tokio::test]
async fn calls_waiting_for_their_turn_hold_no_memory() {
    let mock = Mock::start(KEY).await;
    // One request every 5 s from this replica; the whole memory budget is the smallest allowed,
    // so the test can tell whether any of it is held.
    let table = format!(
        "[analysis]\nmemory_budget_bytes = {MIN_BUDGET}\n{}",
        remote_table(&mock, "openai_compatible", "")
            .replace("requests_per_minute = 6000", "requests_per_minute = 12")
    );
    let h = harness_with(&table).await;
    calibrate(&h).await;
    let ids = ng_parts(&h, 3).await;
    let workers = h.state.remote_workers().unwrap();
    assert!(workers.work_once().await, "the first part goes at once");
    // The two others are taken, their images prepared, and wait for the rate limiter (5 and
    // 10 s).
    let waiting: Vec<_> = (0..2)
        .map(|_| {
            let workers = workers.clone();
            tokio::spawn(async move { workers.work_once().await })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(mock.seen().len(), 1, "the others wait for their turn");
    assert!(waiting.iter().all(|w| !w.is_finished()));
    // Meanwhile the whole memory budget is free for other image work.
    let memory = &h.state.intake.budget;
    let all = tokio::time::timeout(Duration::from_secs(2), memory.reserve(MIN_BUDGET))
        .await
        .expect("no waiting call holds memory")
        .unwrap();
    drop(all);
    for w in waiting {
        assert!(w.await.unwrap());
    }
    assert_eq!(mock.seen().len(), 3);
    enriched_once(&h, &ids).await;
}

// See: issue #22 (a store error while reserving was put off as the budget's, and so could
// give a part up as budget_exhausted)
#[tokio::test]
async fn a_store_that_cannot_count_the_budget_puts_the_call_off_and_never_gives_it_up() {
    let mock = Mock::start(KEY).await;
    // A deployment budget, and no deferral allowed: a budget that is full gives a part up.
    let table = remote_table(
        &mock,
        "azure_openai",
        "deployment_requests_per_minute = 60\nmax_deferral_secs = 0\n",
    );
    // Nothing listens on 127.0.0.1:1: every reservation fails.
    let down = PgSettings {
        url: "postgres://wiko@127.0.0.1:1/wiko".into(),
        max_connections: 2,
        acquire_timeout: Duration::from_millis(300),
        statement_timeout: Duration::from_secs(1),
        outbox_lease: Duration::from_secs(30),
    };
    let remote = remote(&table).sharing(open_postgres(&down, false).await.unwrap());
    let later = remote.judge(&ng_part(&rusty_knife())).await.unwrap_err();
    assert_eq!(later.cause, Cause::Store, "{}", later.reason);
    assert!(
        later.reason.contains("cannot be counted"),
        "{}",
        later.reason
    );
    assert_eq!(
        later.cause.give_up_code(),
        None,
        "put back, never given up (even with max_deferral_secs = 0)"
    );
    assert!(mock.seen().is_empty(), "no call without a reservation");
}

#[tokio::test]
async fn a_burst_against_the_request_budget_loses_or_repeats_nothing() {
    let mock = Mock::start(KEY).await;
    // Three requests per 1 s window for both replicas, and no waiting for a window: a call
    // that does not fit puts its part back until the next one.
    let table = remote_table(
        &mock,
        "openai_compatible",
        "deployment_requests_per_minute = 180\ndeployment_window_secs = 1\n",
    )
    .replace("max_retry_wait_secs = 2", "max_retry_wait_secs = 0");
    let place = Arc::new(Place::new().await);
    let a = started_with(place.clone(), &table).await;
    calibrate(&a).await;
    let b = started_with(place, &table).await;
    let mut ids = ng_parts(&a, 6).await;
    ids.extend(ng_parts(&b, 6).await);

    // Each window, the workers of both replicas take turns with the parts that are due until
    // none is (those that do not fit are put off until the next window).
    let workers = [
        a.state.remote_workers().unwrap(),
        b.state.remote_workers().unwrap(),
    ];
    let mut windows = 0;
    while windows < 30 {
        at_window_start(Duration::from_secs(1)).await;
        // Parts put off are due within 5% of a window after its start.
        tokio::time::sleep(Duration::from_millis(100)).await;
        windows += 1;
        let mut took = true;
        while took {
            took = false;
            for w in &workers {
                took |= w.work_once().await;
            }
        }
        let mut waiting = 0;
        for id in &ids {
            if result(&a, id).await["status"] != "final" {
                waiting += 1;
            }
        }
        if waiting == 0 {
            break;
        }
    }

    let seen = mock.seen();
    assert_eq!(seen.len(), ids.len(), "one call per part");
    let mut per_second: BTreeMap<i64, usize> = BTreeMap::new();
    for s in &seen {
        *per_second.entry(s.wall.timestamp()).or_default() += 1;
    }
    assert!(
        per_second.values().all(|&n| n <= 3),
        "requests per window: {per_second:?}"
    );
    assert!(
        per_second.len() >= 4,
        "12 parts at 3 per window take 4 windows: {per_second:?}"
    );
    enriched_once(&a, &ids).await;
}

#[tokio::test]
async fn reservations_from_two_replicas_never_exceed_the_window_together() {
    let place = Place::new().await;
    let (a, b) = (place.open().await.records, place.open().await.records);
    let claim = WindowClaim {
        deployment: "https://x.openai.azure.com gpt-4o".into(),
        slot: 7,
        tokens: 300,
        max_tokens: 1000,
        max_requests: 100,
    };
    let tries: Vec<_> = (0..20)
        .map(|i| {
            let store = if i % 2 == 0 { a.clone() } else { b.clone() };
            let claim = claim.clone();
            tokio::spawn(async move { store.reserve_remote(&claim).await.unwrap() })
        })
        .collect();
    let mut fitted = 0;
    for t in tries {
        fitted += usize::from(t.await.unwrap());
    }
    assert_eq!(fitted, 3, "3 × 300 of 1,000 tokens");
    // A call used 200 tokens less than estimated: room for one more.
    a.settle_remote(&claim.deployment, 7, -200, 0)
        .await
        .unwrap();
    assert!(b.reserve_remote(&claim).await.unwrap());
    assert!(!a.reserve_remote(&claim).await.unwrap());
    // Another window starts empty; its request limit holds as well.
    let requests = WindowClaim {
        slot: 8,
        tokens: 1,
        max_requests: 2,
        ..claim.clone()
    };
    assert!(a.reserve_remote(&requests).await.unwrap());
    assert!(b.reserve_remote(&requests).await.unwrap());
    assert!(!a.reserve_remote(&requests).await.unwrap());
    // A call never made gives back its tokens and its request: room for one more.
    a.settle_remote(&claim.deployment, 8, -1, -1).await.unwrap();
    assert!(b.reserve_remote(&requests).await.unwrap());
    assert!(!a.reserve_remote(&requests).await.unwrap());
    // A call estimated above the whole window still runs, alone in a window.
    let big = WindowClaim {
        slot: 9,
        tokens: 5000,
        ..claim.clone()
    };
    assert!(a.reserve_remote(&big).await.unwrap());
    assert!(
        !b.reserve_remote(&WindowClaim { tokens: 1, ..big })
            .await
            .unwrap()
    );
}
