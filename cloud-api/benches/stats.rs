//! Production statistics as results grow:
//! `cargo bench -p wiko-cloud --bench stats [-- --results N]`
//!
//! Seeds N completed results (30 days of capture times, 3 facilities × 4 stations × 3 SKUs,
//! a quarter NG with one or two defect types) into the embedded store and, when
//! `WIKOTEST_DATABASE_URL` names a PostgreSQL database, into a fresh schema there. Then times
//! the Overview's requests, each answered from the hourly aggregates the store keeps with every
//! result (what `GET /api/v1/stats` does) and, as the baseline in the same run, from a scan of
//! the results (the same figures; `StatsSource::Results`): p50 and p95 of 20 requests each.
//! Seeding is timed too (results created and completed per second, 64 at once).

use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use bytes::Bytes;
use chrono::{TimeDelta, Utc};
use clap::Parser;
use sqlx::Connection;
use uuid::Uuid;
use wiko_cloud::stats::{StatsRequest, stats};
use wiko_cloud::store::{
    BlobStore, Call, Image, Judgement, ListFilter, Origin, Outcome, PgSettings, StatsSource,
    Storage, Store, StoreError, open_postgres, open_sqlite,
};
use wiko_wire::{AnalysisStatus, Defect, DefectType, StatsBucket, StatsDimension};

#[derive(Parser)]
struct Args {
    /// Completed results seeded per store.
    #[arg(long, default_value_t = 100_000)]
    results: usize,
    /// Requests timed per figure.
    #[arg(long, default_value_t = 20)]
    requests: usize,
    /// Passed by `cargo bench`.
    #[arg(long, hide = true)]
    bench: bool,
}

/// An image store that keeps nothing: the records alone are timed.
struct NoImages;

#[async_trait]
impl BlobStore for NoImages {
    async fn put(&self, _key: &str, _bytes: Bytes) -> Result<(), StoreError> {
        Ok(())
    }
    async fn get(&self, _key: &str) -> Result<Bytes, StoreError> {
        Err(StoreError::NotFound)
    }
    async fn ping(&self) -> Result<(), StoreError> {
        Ok(())
    }
}

const DAYS: i64 = 30;

fn defect(kind: DefectType) -> Defect {
    Defect {
        kind,
        severity: "high".into(),
        confidence: 0.9,
        bbox: [1, 2, 3, 4],
        description: String::new(),
    }
}

/// The `i`th of `n` results: its part and its verdict.
fn result(i: usize, n: usize) -> (Origin, Image, Outcome) {
    let at = Utc::now() - TimeDelta::seconds((i as i64 * DAYS * 86_400) / n as i64);
    let origin = Origin::Call(Call {
        facility: ["yangjiang", "shenzhen", "solingen"][i % 3].into(),
        line: "l1".into(),
        station: ["grinding", "polish", "etch", "pack"][i / 3 % 4].into(),
        product_sku: ["WK-KN-200", "WK-KN-150", "WK-SC-80"][i / 12 % 3].into(),
        part_id: None,
        received_at: at,
    });
    let image = Image {
        bytes: Bytes::new(),
        blake3: format!("{i:064}"),
        width: 640,
        height: 480,
    };
    let kinds = [
        DefectType::Scratch,
        DefectType::Chip,
        DefectType::Rust,
        DefectType::Burr,
    ];
    let defects = match i % 8 {
        0 => vec![defect(kinds[i / 8 % 4])],
        1 => vec![defect(kinds[i / 8 % 4]), defect(DefectType::Dent)],
        _ => Vec::new(),
    };
    let ng = !defects.is_empty();
    let outcome = Outcome {
        judgement: Judgement {
            status: AnalysisStatus::Final,
            defect_detected: ng,
            defects,
            score: Some(1.0),
            score_threshold: Some(1.0),
            confidence: Some(0.9),
            recommendation: String::new(),
            model_version: Some("v1".into()),
        },
        analyzer: "golden".into(),
        analyzer_version: "bench".into(),
        latency_ms: 1.0,
    };
    (origin, image, outcome)
}

/// Seeds `n` completed results, 64 at once; results per second.
async fn seed(store: &Arc<dyn Store>, n: usize) -> f64 {
    let storage = Storage {
        records: store.clone(),
        images: Arc::new(NoImages),
    };
    let started = Instant::now();
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let tasks: Vec<_> = (0..64)
        .map(|_| {
            let (storage, next) = (storage.clone(), next.clone());
            tokio::spawn(async move {
                loop {
                    let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    if i >= n {
                        return;
                    }
                    let (origin, image, outcome) = result(i, n);
                    let (_, id) = storage
                        .put_part(origin, image, Duration::from_secs(86_400))
                        .await
                        .expect("create");
                    storage
                        .records
                        .complete(id, outcome)
                        .await
                        .expect("complete");
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.expect("seeder");
    }
    n as f64 / started.elapsed().as_secs_f64()
}

/// The Overview's requests: (what, request).
fn requests() -> Vec<(&'static str, StatsRequest)> {
    let now = Utc::now();
    let request = |days: i64, bucket, group_by: Vec<StatsDimension>| StatsRequest {
        since: now - TimeDelta::days(days),
        until: now,
        bucket,
        utc_offset_minutes: 480,
        filter: ListFilter::default(),
        group_by,
        shift_starts: Vec::new(),
    };
    vec![
        ("today: totals", request(1, StatsBucket::All, vec![])),
        (
            "7 days by hour, per station",
            request(7, StatsBucket::Hour, vec![StatsDimension::Station]),
        ),
        (
            "30 days by day, Pareto of defect types",
            request(30, StatsBucket::Day, vec![StatsDimension::DefectType]),
        ),
        (
            "30 days, one facility and SKU, per station",
            StatsRequest {
                filter: ListFilter {
                    facility: Some("yangjiang".into()),
                    product_sku: Some("WK-KN-200".into()),
                    ..ListFilter::default()
                },
                ..request(30, StatsBucket::All, vec![StatsDimension::Station])
            },
        ),
    ]
}

/// p50 and p95 of `n` answers, in ms.
async fn time(store: &dyn Store, r: &StatsRequest, source: StatsSource, n: usize) -> (f64, f64) {
    let mut ms = Vec::with_capacity(n);
    for _ in 0..n {
        let started = Instant::now();
        let answer = stats(store, r, source)
            .await
            .expect("store")
            .expect("request");
        std::hint::black_box(answer);
        ms.push(started.elapsed().as_secs_f64() * 1000.0);
    }
    ms.sort_by(f64::total_cmp);
    let at = |q: f64| ms[((ms.len() as f64 * q).ceil() as usize).clamp(1, ms.len()) - 1];
    (at(0.5), at(0.95))
}

async fn report(name: &str, store: &Arc<dyn Store>, args: &Args) {
    let seeded = seed(store, args.results).await;
    println!(
        "{name}: {} results seeded at {seeded:.0}/s (create + complete)",
        args.results
    );
    println!();
    println!("| request | aggregates p50 / p95 ms | scan p50 / p95 ms | same answer |");
    println!("|---|---|---|---|");
    for (what, r) in requests() {
        let (a50, a95) = time(store.as_ref(), &r, StatsSource::Aggregates, args.requests).await;
        let (s50, s95) = time(
            store.as_ref(),
            &r,
            StatsSource::Results,
            args.requests.min(5),
        )
        .await;
        let same = stats(store.as_ref(), &r, StatsSource::Aggregates)
            .await
            .ok()
            == stats(store.as_ref(), &r, StatsSource::Results).await.ok();
        println!("| {what} | {a50:.1} / {a95:.1} | {s50:.1} / {s95:.1} | {same} |");
    }
    println!();
}

async fn pg_schema(base: &str) -> PgSettings {
    let schema = format!("wiko_bench_{}", Uuid::new_v4().simple());
    let mut admin = sqlx::PgConnection::connect(base).await.expect("connect");
    sqlx::query(&format!("CREATE SCHEMA {schema}"))
        .execute(&mut admin)
        .await
        .expect("create schema");
    let sep = if base.contains('?') { '&' } else { '?' };
    PgSettings {
        url: format!("{base}{sep}options[search_path]={schema}"),
        max_connections: 16,
        acquire_timeout: Duration::from_secs(30),
        statement_timeout: Duration::from_secs(120),
        outbox_lease: Duration::from_secs(30),
    }
}

fn main() {
    let args = Args::parse();
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    runtime.block_on(async {
        let dir = tempfile::tempdir().expect("temp dir");
        let sqlite = open_sqlite(&dir.path().join("wiko.db")).expect("sqlite");
        report("embedded SQLite", &sqlite, &args).await;
        let Ok(base) = std::env::var("WIKOTEST_DATABASE_URL") else {
            eprintln!("WIKOTEST_DATABASE_URL is not set: PostgreSQL figures skipped");
            return;
        };
        let pg = open_postgres(&pg_schema(&base).await, true)
            .await
            .expect("pg");
        report("PostgreSQL", &pg, &args).await;
    });
}
