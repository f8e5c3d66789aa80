//! The analysis queue and the PostgreSQL connection:
//! `cargo bench -p wiko-cloud --bench queue [-- --jobs N]`
//!
//! 1. Jobs drained per second by 1 and by 3 workers, on the embedded store and, when
//!    `WIKOTEST_DATABASE_URL` names a PostgreSQL database, on PostgreSQL (each worker with its
//!    own connection pool, as a worker of another replica would be; the embedded store belongs
//!    to one process, whose workers share it). A worker leases one job
//!    (`FOR UPDATE SKIP LOCKED` on PostgreSQL), then completes it (result, job deleted, result
//!    event queued) in one transaction. The analyzer is left out (it is `--bench analyzer`):
//!    this is what the queue itself costs per part. Filling the queue is timed too (parts
//!    created per second by one client, one transaction each; images go to a store that keeps
//!    nothing, so only the records are timed).
//! 2. Multi-row statements over TCP next to the Unix socket (`/var/run/postgresql`), the figure
//!    that shows whether the client sets TCP_NODELAY (sqlx 0.9.0 does not: about 40 ms per
//!    statement).

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use clap::Parser;
use sqlx::Connection;
use uuid::Uuid;
use wiko_cloud::store::{
    Call, Image, Judgement, Origin, Outcome, PgSettings, Stage, Storage, Store, open_postgres,
    open_sqlite,
};
use wiko_wire::AnalysisStatus;

mod store_rig;
use store_rig::NoImages;

const LEASE: Duration = Duration::from_secs(60);

#[derive(Parser)]
struct Args {
    /// Jobs queued and drained per run.
    #[arg(long, default_value_t = 3000)]
    jobs: usize,
    /// Passed by `cargo bench`.
    #[arg(long, hide = true)]
    bench: bool,
}

fn part(i: usize) -> (Origin, Image) {
    let origin = Origin::Call(Call {
        facility: "yangjiang".into(),
        line: "l1".into(),
        station: "grinding".into(),
        product_sku: "WK-KN-200".into(),
        part_id: Some(format!("p{i}")),
        received_at: chrono::Utc::now(),
    });
    let image = Image {
        bytes: Bytes::new(),
        blake3: format!("{i:064}"),
        width: 640,
        height: 480,
    };
    (origin, image)
}

fn outcome() -> Outcome {
    Outcome {
        judgement: Judgement {
            status: AnalysisStatus::Final,
            defect_detected: false,
            defects: Vec::new(),
            score: Some(0.5),
            score_threshold: Some(1.0),
            confidence: Some(0.9),
            recommendation: "accept".into(),
            model_version: Some("v1".into()),
        },
        analyzer: "bench".into(),
        analyzer_version: "0".into(),
        latency_ms: 0.0,
    }
}

/// Fills the queue from one client; returns parts per second.
async fn fill(records: &Arc<dyn Store>, jobs: usize) -> f64 {
    let storage = Storage {
        records: records.clone(),
        images: Arc::new(NoImages),
    };
    let started = Instant::now();
    for i in 0..jobs {
        let (origin, image) = part(i);
        storage
            .put_part(origin, image, Duration::ZERO)
            .await
            .expect("create");
    }
    jobs as f64 / started.elapsed().as_secs_f64()
}

/// Drains the queue with one task per store; returns jobs per second.
async fn drain(stores: Vec<Arc<dyn Store>>, jobs: usize) -> f64 {
    let started = Instant::now();
    let tasks: Vec<_> = stores
        .into_iter()
        .map(|store| {
            tokio::spawn(async move {
                let mut done = 0usize;
                loop {
                    let claimed = store
                        .claim_jobs(Stage::Local, 1, LEASE)
                        .await
                        .expect("claim");
                    let Some(job) = claimed.first() else {
                        return done;
                    };
                    store
                        .complete(job.analysis_id, outcome())
                        .await
                        .expect("complete");
                    done += 1;
                }
            })
        })
        .collect();
    let mut done = 0;
    for t in tasks {
        done += t.await.expect("worker");
    }
    assert_eq!(done, jobs, "every job drained once");
    jobs as f64 / started.elapsed().as_secs_f64()
}

async fn pg_schema(base: &str) -> PgSettings {
    let schema = format!("wiko_bench_{}", Uuid::new_v4().simple());
    let mut admin = sqlx::PgConnection::connect(base).await.expect("database");
    sqlx::query(&format!("CREATE SCHEMA {schema}"))
        .execute(&mut admin)
        .await
        .expect("create schema");
    let sep = if base.contains('?') { '&' } else { '?' };
    PgSettings {
        url: format!("{base}{sep}options[search_path]={schema}"),
        max_connections: 4,
        acquire_timeout: Duration::from_secs(10),
        statement_timeout: Duration::from_secs(30),
        outbox_lease: Duration::from_secs(30),
    }
}

/// Rows per second inserted with 100-row statements over the connection at `url`.
async fn multi_row(url: &str) -> f64 {
    let mut conn = sqlx::PgConnection::connect(url).await.expect("connect");
    sqlx::query("CREATE TEMP TABLE bench_rows (a bigint, b text)")
        .execute(&mut conn)
        .await
        .expect("temp table");
    let values: Vec<String> = (0..100)
        .map(|i| format!("(${}, ${})", 2 * i + 1, 2 * i + 2))
        .collect();
    let sql = format!("INSERT INTO bench_rows (a, b) VALUES {}", values.join(", "));
    let statements = 200;
    let started = Instant::now();
    for s in 0..statements {
        let mut q = sqlx::query(&sql);
        for i in 0..100i64 {
            q = q
                .bind(s * 100 + i)
                .bind(format!("row {i} of statement {s}"));
        }
        q.execute(&mut conn).await.expect("insert");
    }
    (statements * 100) as f64 / started.elapsed().as_secs_f64()
}

fn main() {
    let jobs = Args::parse().jobs;
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    runtime.block_on(async {
        println!("| store | workers | parts created/s (1 client) | jobs drained/s |");
        println!("|---|---|---|---|");
        for workers in [1usize, 3] {
            let dir = tempfile::tempdir().expect("temp dir");
            let path = dir.path().join("wiko.db");
            let first = open_sqlite(&path).expect("sqlite");
            let created = fill(&first, jobs).await;
            // One process owns the embedded store: its workers share one handle.
            let drained = drain(vec![first; workers], jobs).await;
            println!("| embedded SQLite | {workers} | {created:.0} | {drained:.0} |");
        }
        let Ok(base) = std::env::var("WIKOTEST_DATABASE_URL") else {
            eprintln!("WIKOTEST_DATABASE_URL is not set: PostgreSQL figures skipped");
            return;
        };
        for workers in [1usize, 3] {
            let settings = pg_schema(&base).await;
            let first = open_postgres(&settings, true).await.expect("pg");
            let created = fill(&first, jobs).await;
            let mut stores = vec![first];
            while stores.len() < workers {
                stores.push(open_postgres(&settings, false).await.expect("pg"));
            }
            let drained = drain(stores, jobs).await;
            println!("| PostgreSQL (TCP) | {workers} | {created:.0} | {drained:.0} |");
        }
        let socket = base.replace("127.0.0.1:5432", "localhost") + "?host=/var/run/postgresql";
        println!();
        println!("| connection | rows/s, 100-row INSERT statements |");
        println!("|---|---|");
        println!("| TCP 127.0.0.1 | {:.0} |", multi_row(&base).await);
        println!("| Unix socket | {:.0} |", multi_row(&socket).await);
    });
}
