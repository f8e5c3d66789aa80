//! The Live page's delay, from a result's commit to its arrival on the live feed:
//! `cargo bench -p wiko-cloud --bench live [-- --parts-per-second R --secs D]`
//!
//! A `wiko-cloud` (started in this process as `wiko-cloud serve` starts: the embedded store,
//! then PostgreSQL too when `WIKOTEST_DATABASE_URL` names a database, in a schema of its own;
//! MQTT off) fits the chef's knife's golden model on 8 synthetic good parts. A load generator
//! task then sends `R` parts a second for `D` seconds (`POST /api/v1/analyze`, open loop,
//! synthetic knives, a fifth with a painted defect) while a client follows the live feed as the
//! Live page does (`GET /api/v1/events`: NG parts) and notes when each result arrives.
//!
//! Printed per store: for each NG part, the time from its result's commit to its arrival over
//! SSE, p50 / p99 / max, and the NG parts that never arrived. The commit's time is the result's
//! `analyzed_at`, taken in the transaction that commits it just before the commit (so each
//! figure is the delay plus that commit), on the same clock as the arrival.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};
use clap::Parser;
use serde_json::Value;
use sqlx::Connection;
use wiko_synth::SynthDefect;

mod cloud_rig;
use cloud_rig::{VIEWER, analyze, fit_golden, form, knife, serve_cloud};

/// The knives' size: the synthetic camera's.
const KNIFE: (u32, u32) = (640, 480);

#[derive(Parser)]
struct Args {
    /// Parts sent per second.
    #[arg(long, default_value_t = 20)]
    parts_per_second: u32,
    /// Seconds the parts are sent for.
    #[arg(long, default_value_t = 60)]
    secs: u64,
    /// Passed by `cargo bench`.
    #[arg(long, hide = true)]
    bench: bool,
}

/// When each NG result arrived on the feed, and when it was committed (`analyzed_at`).
type Arrivals = Arc<Mutex<HashMap<String, (DateTime<Utc>, DateTime<Utc>)>>>;

/// Follows the live feed of NG parts, noting each result's arrival.
async fn follow(url: String, arrivals: Arrivals) {
    let mut response = reqwest::Client::new()
        .get(format!("{url}/api/v1/events"))
        .header("x-api-key", VIEWER)
        .send()
        .await
        .expect("the live feed");
    let mut pending = String::new();
    while let Ok(Some(chunk)) = response.chunk().await {
        let arrived = Utc::now();
        pending.push_str(&String::from_utf8_lossy(&chunk));
        while let Some(end) = pending.find("\n\n") {
            let event: String = pending.drain(..end + 2).collect();
            let Some(result) = event
                .lines()
                .find_map(|l| l.strip_prefix("data:"))
                .and_then(|data| serde_json::from_str::<Value>(data.trim()).ok())
            else {
                continue;
            };
            let committed = result["analyzed_at"]
                .as_str()
                .and_then(|t| DateTime::parse_from_rfc3339(t).ok());
            if let (Some(id), Some(committed)) = (result["id"].as_str(), committed) {
                arrivals
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .entry(id.to_string())
                    .or_insert((arrived, committed.with_timezone(&Utc)));
            }
        }
    }
}

fn pct(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

/// One cloud over `database`, one load; prints the delays.
async fn run(a: &Args, name: &str, database: &str) {
    let dir = tempfile::tempdir().expect("temp dir");
    let stop = tokio_util::sync::CancellationToken::new();
    let _stop = stop.clone().drop_guard();
    let url = serve_cloud(dir.path(), database, stop).await;
    let client = reqwest::Client::new();
    fit_golden(&client, &url, KNIFE).await;

    // 50 distinct knives, 10 with a defect, sent round robin.
    let images: Arc<Vec<Vec<u8>>> = Arc::new(
        (0..50u64)
            .map(|i| knife((i % 5 == 0).then_some(SynthDefect::Rust), 50_000 + i, KNIFE))
            .collect(),
    );
    let arrivals: Arrivals = Arc::default();
    let following = tokio::spawn(follow(url.clone(), arrivals.clone()));
    tokio::time::sleep(Duration::from_millis(500)).await;

    // The load generator: open loop, one request per tick, each in a task of its own.
    let ng: Arc<Mutex<Vec<String>>> = Arc::default();
    let mut tick = tokio::time::interval(Duration::from_secs(1) / a.parts_per_second);
    let mut requests = Vec::new();
    for i in 0..(u64::from(a.parts_per_second) * a.secs) as usize {
        tick.tick().await;
        let form = form(
            &[&images[i % images.len()]],
            &[("product_sku", "WK-KN-200"), ("facility", "yangjiang")],
        );
        let (client, url, ng) = (client.clone(), url.clone(), ng.clone());
        requests.push(tokio::spawn(async move {
            if let Some(v) = analyze(&client, &url, form).await
                && v["defect_detected"] == true
                && let Some(id) = v["id"].as_str()
            {
                ng.lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .push(id.to_string());
            }
        }));
    }
    let sent = requests.len();
    for r in requests {
        let _ = r.await;
    }
    // The feed polls every 200 ms: 5 s is plenty for the last ones.
    tokio::time::sleep(Duration::from_secs(5)).await;
    following.abort();
    let ng = ng.lock().unwrap_or_else(|e| e.into_inner()).clone();
    let arrivals = arrivals.lock().unwrap_or_else(|e| e.into_inner()).clone();
    let mut delays: Vec<f64> = ng
        .iter()
        .filter_map(|id| arrivals.get(id))
        .map(|(arrived, committed)| {
            (*arrived - *committed).num_microseconds().unwrap_or(0) as f64 / 1000.0
        })
        .collect();
    delays.sort_by(f64::total_cmp);
    println!(
        "{name}: {sent} parts sent at {} parts/s for {} s; {} NG answered, {} of them on the feed",
        a.parts_per_second,
        a.secs,
        ng.len(),
        delays.len(),
    );
    println!(
        "{name}: commit -> live feed (SSE), NG parts: p50 {:.0} ms, p99 {:.0} ms, max {:.0} ms; \
         never arrived: {}",
        pct(&delays, 0.5),
        pct(&delays, 0.99),
        pct(&delays, 1.0),
        ng.len() - delays.len(),
    );
}

/// A fresh schema in the database at `base`: its `[database]` table.
async fn pg_database(base: &str) -> String {
    let schema = format!("wiko_live_{}", uuid::Uuid::new_v4().simple());
    let mut admin = sqlx::PgConnection::connect(base).await.expect("connect");
    sqlx::query(&format!("CREATE SCHEMA {schema}"))
        .execute(&mut admin)
        .await
        .expect("create schema");
    let sep = if base.contains('?') { '&' } else { '?' };
    format!("[database]\nurl = \"{base}{sep}options[search_path]={schema}\"\n")
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let a = Args::parse();
    run(&a, "embedded SQLite", "").await;
    if let Ok(base) = std::env::var("WIKOTEST_DATABASE_URL") {
        run(&a, "PostgreSQL", &pg_database(&base).await).await;
    } else {
        eprintln!("WIKOTEST_DATABASE_URL is not set: PostgreSQL skipped");
    }
}
