//! What the remote analyzer's test files (`remote.rs`, `remote_queue.rs`) share: a `[remote]`
//! table for the server speaking Azure's protocol (`azure_mock.rs`), a remote analyzer alone,
//! the chef's knife calibrated, NG parts sent and their results and result events read back.

use axum::http::StatusCode;
use bytes::Bytes;
use serde_json::Value;
use wiko_cloud::analysis::remote::{Part, Remote};
use wiko_cloud::config::Config;
use wiko_cloud::store::Event;
use wiko_synth::SynthDefect;
use wiko_wire::AnalysisStatus;

use crate::azure_mock::{INPUT_TOKENS, Mock, OUTPUT_TOKENS};
use crate::harness::*;

pub const KEY: &str = "azure-test-key-5f3a9c1e7d";
/// gpt-4o's list prices, USD per million tokens.
const PRICES: &str = "input_usd_per_million_tokens = 2.5\noutput_usd_per_million_tokens = 10.0\n";
/// What one mock answer costs at those prices.
pub const CALL_USD: f64 = (INPUT_TOKENS as f64 * 2.5 + OUTPUT_TOKENS as f64 * 10.0) / 1e6;

/// A `[remote]` table for the mock: `kind`, then `extra` keys.
pub fn remote_table(mock: &Mock, kind: &str, extra: &str) -> String {
    let endpoint = if kind == "openai_compatible" {
        format!("{}/v1", mock.url)
    } else {
        mock.url.clone()
    };
    format!(
        "[remote]\nkind = \"{kind}\"\nendpoint = \"{endpoint}\"\nmodel = \"gpt4o-prod\"\n\
         api_key = \"{KEY}\"\nmax_side_px = 512\nmax_attempts = 2\nmax_retry_wait_secs = 2\n\
         timeout_secs = 1\nrequests_per_minute = 6000\n{PRICES}{extra}"
    )
}

/// A remote analyzer alone, configured by a `[remote]` table.
pub fn remote(table: &str) -> Remote {
    let config = Config::from_toml(table).unwrap();
    Remote::new(config.remote.unwrap()).unwrap()
}

/// A part the gate judged NG (score twice its threshold, no region), recorded as 640 × 480,
/// as the cascade hands it to the remote analyzer.
pub fn ng_part(image: &Bytes) -> Part<'_> {
    Part {
        sku: "WK-KN-200",
        image,
        width: 640,
        height: 480,
        gate_ng: true,
        score: Some(2.0),
        threshold: Some(1.0),
        regions: &[],
    }
}

/// A rusty knife's JPEG.
pub fn rusty_knife() -> Bytes {
    Bytes::from(part_jpeg(Some(SynthDefect::Rust), 5))
}

pub async fn calibrate(h: &Harness) {
    let good: Vec<Vec<u8>> = (0..8).map(|i| part_jpeg(None, 40_000 + i)).collect();
    let (status, body) = upload_golden(h, "/api/v1/skus/WK-KN-200/golden", &good).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
}

pub async fn result(h: &Harness, id: &Value) -> Value {
    let (status, body) = get_json(h, &format!("/api/v1/analyses/{}", id.as_str().unwrap())).await;
    assert_eq!(status, StatusCode::OK);
    body
}

/// Sends `n` NG parts through `h`, each provisional; their ids.
pub async fn ng_parts(h: &Harness, n: u64) -> Vec<Value> {
    let mut ids = Vec::new();
    for i in 0..n {
        let (_, part) = analyze(h, part_jpeg(Some(SynthDefect::Rust), 70_000 + i)).await;
        assert_eq!(part["status"], "provisional", "{part}");
        ids.push(part["id"].clone());
    }
    ids
}

/// The statuses of the result events of `id` in the outbox, in order.
pub async fn result_events(h: &Harness, id: &Value) -> Vec<AnalysisStatus> {
    let events = h.state.intake.storage.records.outbox(1000).await.unwrap();
    events
        .iter()
        .filter_map(|e| match &e.event {
            Event::Result(a) if a.id.to_string() == id.as_str().unwrap() => Some(a.status),
            _ => None,
        })
        .collect()
}
