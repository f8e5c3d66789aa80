//! The cascade under load with a slow remote model:
//! `cargo test -p wiko-cloud --bench remote -- [--stations S --parts-per-second R --secs D]`
//!
//! A `wiko-cloud` (embedded store, MQTT off, started in this process as `wiko-cloud serve`
//! starts) fits the chef's knife's golden model on 8 synthetic good parts; then `S` stations
//! each send `R` parts a second for `D` seconds (`POST /api/v1/analyze`, open loop, synthetic
//! knives, 20% with a painted defect). The gate judges every part; NG and uncertain ones go to
//! a fake OpenAI-compatible remote model that answers each call in 1 to 3 s, behind the
//! deployment's shared budget (`--deployment-rpm`, counted in the store as replicas would
//! share it) and `--workers` remote workers.
//!
//! Printed: parts per second through the gate, the share sent remote, the time from sending a
//! frame to its final result (read from the live feed, `GET /api/v1/events?all=true`: p50, p99,
//! max; for every part and for the parts enriched), and the remote calls the fake received
//! per second of the wall clock (the deployment's window), highest and the limit.

mod cloud_rig;
mod remote_rig;

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use clap::Parser;
use rand::Rng;
use serde_json::{Value, json};
use wiko_synth::SynthDefect;

use cloud_rig::{VIEWER, analyze, fit_golden, form, knife, serve_cloud};
use remote_rig::{Reply, fake_remote, remote_table};

#[derive(Parser)]
struct Args {
    /// Stations sending parts.
    #[arg(long, default_value_t = 2)]
    stations: usize,
    /// Parts each station sends per second.
    #[arg(long, default_value_t = 20)]
    parts_per_second: u32,
    /// Seconds the stations send.
    #[arg(long, default_value_t = 60)]
    secs: u64,
    /// The deployment's requests per minute (shared budget, 10 s windows), measured after a
    /// baseline run without one.
    #[arg(long, default_value_t = 600)]
    deployment_rpm: u64,
    /// Remote workers (each holds one call at a time).
    #[arg(long, default_value_t = 16)]
    workers: usize,
    /// Passed by `cargo bench`.
    #[arg(long, hide = true)]
    bench: bool,
}

/// When each call reached the fake remote model.
type Arrivals = Arc<Mutex<Vec<chrono::DateTime<chrono::Utc>>>>;

/// An OpenAI-compatible server that notes when each call arrives and answers it in 1 to 3 s
/// (as the demo's `--remote-fake`).
async fn slow_remote(arrivals: Arrivals) -> String {
    fake_remote(move |_request| {
        let arrivals = arrivals.clone();
        async move {
            arrivals
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push(chrono::Utc::now());
            let wait = rand::rng().random_range(1000..=3000);
            tokio::time::sleep(Duration::from_millis(wait)).await;
            Reply {
                answer: json!({"defect_detected": true, "summary": "a defect", "defects": []}),
                prompt_tokens: 485,
                completion_tokens: 80,
            }
        }
    })
    .await
}

/// When each result became final, read from the live feed.
type Finals = Arc<Mutex<HashMap<String, (Instant, bool)>>>;

/// Reads the live feed of every result, noting when each id is first final and whether a
/// remote verdict made it so.
async fn follow(url: String, finals: Finals) {
    let client = reqwest::Client::new();
    let mut response = client
        .get(format!("{url}/api/v1/events?all=true"))
        .header("x-api-key", VIEWER)
        .send()
        .await
        .expect("the live feed");
    let mut pending = String::new();
    while let Ok(Some(chunk)) = response.chunk().await {
        pending.push_str(&String::from_utf8_lossy(&chunk));
        while let Some(end) = pending.find("\n\n") {
            let event: String = pending.drain(..end + 2).collect();
            for line in event.lines() {
                let Some(data) = line.strip_prefix("data:") else {
                    continue;
                };
                let Ok(result) = serde_json::from_str::<Value>(data.trim()) else {
                    continue;
                };
                if result["status"] == "final" {
                    let remote = result["verdicts"]
                        .as_array()
                        .is_some_and(|v| v.iter().any(|v| v["source"] == "remote"));
                    let id = result["id"].as_str().unwrap_or_default().to_string();
                    finals
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .entry(id)
                        .or_insert((Instant::now(), remote));
                }
            }
        }
    }
}

fn pct(sorted: &[Duration], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i].as_secs_f64()
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let a = Args::parse();
    // The baseline first: no deployment budget, the same load and the same fake remote.
    for rpm in [0, a.deployment_rpm] {
        println!("\n== deployment budget: {rpm} requests per minute (0: none)");
        run(&a, rpm).await;
    }
}

/// One cloud, one fake remote, one load; `rpm` the deployment's requests per minute.
async fn run(a: &Args, rpm: u64) {
    let dir = tempfile::tempdir().expect("temp dir");
    let arrivals: Arrivals = Arc::default();
    let endpoint = slow_remote(arrivals.clone()).await;
    let stop = tokio_util::sync::CancellationToken::new();
    let _stop = stop.clone().drop_guard();
    let remote = format!(
        "workers = {w}\nmax_concurrency = {w}\nrequests_per_minute = 100000\nmax_side_px = 512\n\
         deployment_requests_per_minute = {rpm}\ndeployment_window_secs = 10\n",
        w = a.workers,
    );
    let url = serve_cloud(dir.path(), &remote_table(&endpoint, &remote), stop).await;
    let client = reqwest::Client::new();
    fit_golden(&client, &url, (640, 480)).await;

    // 100 distinct knives, 20 with a defect, sent round robin.
    let images: Arc<Vec<Vec<u8>>> = Arc::new(
        (0..100u64)
            .map(|i| {
                let defect = (i % 5 == 0).then_some(SynthDefect::Rust);
                knife(defect, 50_000 + i, (640, 480))
            })
            .collect(),
    );
    let finals: Finals = Arc::default();
    let following = tokio::spawn(follow(url.clone(), finals.clone()));
    tokio::time::sleep(Duration::from_millis(300)).await;

    let sent: Arc<Mutex<Vec<(String, Instant)>>> = Arc::default();
    let started = Instant::now();
    let mut stations = Vec::new();
    for s in 0..a.stations {
        let (client, url, images, sent) =
            (client.clone(), url.clone(), images.clone(), sent.clone());
        let (rate, secs) = (a.parts_per_second, a.secs);
        stations.push(tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(1) / rate);
            let mut requests = Vec::new();
            for i in 0..(u64::from(rate) * secs) as usize {
                tick.tick().await;
                let image = &images[(i * 7 + s * 13) % images.len()];
                let station = format!("st{s}");
                let body = form(
                    &[image],
                    &[
                        ("product_sku", "WK-KN-200"),
                        ("facility", "yangjiang"),
                        ("station", station.as_str()),
                    ],
                );
                let (client, url, sent) = (client.clone(), url.clone(), sent.clone());
                requests.push(tokio::spawn(async move {
                    let at = Instant::now();
                    if let Some(v) = analyze(&client, &url, body).await
                        && let Some(id) = v["id"].as_str()
                    {
                        sent.lock()
                            .unwrap_or_else(|e| e.into_inner())
                            .push((id.to_string(), at));
                    }
                }));
            }
            for r in requests {
                let _ = r.await;
            }
        }));
    }
    for s in stations {
        let _ = s.await;
    }
    let sending = started.elapsed();
    // Every part sent is final within 120 s of the last, or counted as not final.
    let sent = sent.lock().unwrap_or_else(|e| e.into_inner()).clone();
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let done = {
            let finals = finals.lock().unwrap_or_else(|e| e.into_inner());
            sent.iter()
                .filter(|(id, _)| finals.contains_key(id))
                .count()
        };
        if done == sent.len() || Instant::now() > deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    following.abort();
    let finals = finals.lock().unwrap_or_else(|e| e.into_inner()).clone();
    let mut all = Vec::new();
    let mut enriched = Vec::new();
    for (id, at) in &sent {
        if let Some((done, remote)) = finals.get(id) {
            all.push(*done - *at);
            if *remote {
                enriched.push(*done - *at);
            }
        }
    }
    all.sort();
    enriched.sort();
    let mut per_second: BTreeMap<i64, u64> = BTreeMap::new();
    for at in arrivals.lock().unwrap_or_else(|e| e.into_inner()).iter() {
        *per_second.entry(at.timestamp()).or_default() += 1;
    }
    let mut per_window: BTreeMap<i64, u64> = BTreeMap::new();
    for (second, n) in &per_second {
        *per_window.entry(second.div_euclid(10)).or_default() += n;
    }
    let asked = a.stations as f64 * f64::from(a.parts_per_second);
    println!(
        "stations {} × {} parts/s for {} s: {} parts sent in {:.1} s ({:.1}/s; asked {asked}/s)",
        a.stations,
        a.parts_per_second,
        a.secs,
        sent.len(),
        sending.as_secs_f64(),
        sent.len() as f64 / sending.as_secs_f64(),
    );
    println!(
        "final: {} of {}; enriched by the remote model: {} ({:.1}% of parts)",
        all.len(),
        sent.len(),
        enriched.len(),
        100.0 * enriched.len() as f64 / sent.len().max(1) as f64
    );
    for (name, times) in [("every part", &all), ("enriched parts", &enriched)] {
        println!(
            "frame → final, {name}: p50 {:.2} s, p99 {:.2} s, max {:.2} s",
            pct(times, 0.5),
            pct(times, 0.99),
            pct(times, 1.0)
        );
    }
    let limit = (rpm * 10).div_ceil(60);
    println!(
        "remote calls: {} in all; per 10 s window at most {} (limit {limit}); per second at most {}",
        per_second.values().sum::<u64>(),
        per_window.values().max().copied().unwrap_or(0),
        per_second.values().max().copied().unwrap_or(0),
    );
}
