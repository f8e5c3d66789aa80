//! Tokens per remote call, counted from the requests the cloud really builds:
//! `cargo test -p wiko-cloud --bench remote_tokens -- [--parts N]` (no figure here is a time)
//!
//! For each frame size (the synthetic 640×480 knives, and the same knives scaled to 1920×1080)
//! and each way of sending a part (`image = "frame"` at low and at high detail, `image =
//! "regions"`), a `wiko-cloud` (embedded store, MQTT off, started in this process as
//! `wiko-cloud serve` starts it, `max_side_px` 1024) fits the chef's knife's golden model on 8
//! good parts, then judges `N` parts (one in five with a painted defect, the seven kinds in
//! turn). The parts the cascade sends (NG and uncertain, band 0.2) go to a fake
//! OpenAI-compatible model that counts each request's input tokens as gpt-4o bills them: the
//! request's JSON without the images' data at 4 characters a token (an estimate: the service
//! tokenises), and each image from its decoded size and its `detail` (85 at low; 85 + 170 per
//! 512-px tile at high) with the crate's own `views::image_tokens`, the cloud's estimate: the
//! image tokens repeat that estimate for the images really sent, they do not check it.
//! Printed per configuration: calls, and per call the mean text tokens,
//! image tokens, input tokens and image bytes, for calls about parts the gate judged NG and
//! about parts it judged good (uncertain).

mod cloud_rig;
mod remote_rig;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine;
use clap::Parser;
use serde_json::{Value, json};
use wiko_cloud::analysis::remote::config::Detail;
use wiko_cloud::analysis::remote::views::image_tokens;
use wiko_synth::SynthDefect;

use cloud_rig::{VIEWER, analyze, fit_golden, form, knife, serve_cloud};
use remote_rig::{Reply, fake_remote, remote_table};

#[derive(Parser)]
struct Args {
    /// Parts judged per configuration.
    #[arg(long, default_value_t = 100)]
    parts: u64,
    /// Passed by `cargo bench`.
    #[arg(long, hide = true)]
    bench: bool,
}

/// One request as the fake counted it.
#[derive(Debug, Clone, Copy)]
struct Counted {
    gate_ng: bool,
    text_tokens: u64,
    image_tokens: u64,
    image_bytes: u64,
}

type Calls = Arc<Mutex<Vec<Counted>>>;

/// Counts a request: its text (the JSON with each image's data left out, ÷ 4) and its images.
fn count(request: &Value) -> Counted {
    let mut text = request.clone();
    let (mut image_tokens_sum, mut image_bytes) = (0, 0);
    if let Some(content) = text["messages"][1]["content"].as_array_mut() {
        for item in content {
            let Some(url) = item["image_url"]["url"].as_str() else {
                continue;
            };
            let jpeg = url
                .strip_prefix("data:image/jpeg;base64,")
                .and_then(|b64| base64::engine::general_purpose::STANDARD.decode(b64).ok())
                .unwrap_or_default();
            let (w, h) = image::load_from_memory(&jpeg)
                .map(|i| (i.width(), i.height()))
                .unwrap_or((0, 0));
            let detail = match item["image_url"]["detail"].as_str() {
                Some("low") => Detail::Low,
                _ => Detail::High,
            };
            image_tokens_sum += image_tokens(w, h, detail);
            image_bytes += jpeg.len() as u64;
            item["image_url"]["url"] = Value::from("");
        }
    }
    let prompt = request["messages"][1]["content"][0]["text"]
        .as_str()
        .unwrap_or_default();
    Counted {
        gate_ng: prompt.contains("judged it defective"),
        text_tokens: text.to_string().len().div_ceil(4) as u64,
        image_tokens: image_tokens_sum,
        image_bytes,
    }
}

/// An OpenAI-compatible server that counts each request and answers at once, agreeing with
/// the gate, naming no box.
async fn counting_remote(calls: Calls) -> String {
    fake_remote(move |request| {
        let calls = calls.clone();
        async move {
            let counted = count(&request);
            calls
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push(counted);
            Reply {
                answer: json!({"defect_detected": counted.gate_ng, "summary": "", "defects": []}),
                prompt_tokens: counted.text_tokens + counted.image_tokens,
                completion_tokens: 100,
            }
        }
    })
    .await
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let a = Args::parse();
    println!(
        "| frame | image | calls (gate NG / good) | NG part: text + image = input tokens, image KB | good part: text + image = input tokens, image KB |"
    );
    println!("|---|---|---|---|---|");
    for size in [(640, 480), (1920, 1080)] {
        for (name, keys) in [
            ("frame, low", "image = \"frame\"\ndetail = \"low\"\n"),
            ("frame, high", "image = \"frame\"\ndetail = \"high\"\n"),
            ("regions", "image = \"regions\"\ndetail = \"low\"\n"),
        ] {
            let calls = run(&a, size, keys).await;
            let mean = |ng: bool| {
                let of: Vec<&Counted> = calls.iter().filter(|c| c.gate_ng == ng).collect();
                let n = of.len().max(1) as f64;
                let sum = |f: fn(&Counted) -> u64| of.iter().map(|&c| f(c)).sum::<u64>() as f64 / n;
                let (text, image) = (sum(|c| c.text_tokens), sum(|c| c.image_tokens));
                format!(
                    "{text:.0} + {image:.0} = {:.0}, {:.1} KB",
                    text + image,
                    sum(|c| c.image_bytes) / 1000.0
                )
            };
            let ng = calls.iter().filter(|c| c.gate_ng).count();
            println!(
                "| {}×{} | {name} | {} ({ng} / {}) | {} | {} |",
                size.0,
                size.1,
                calls.len(),
                calls.len() - ng,
                mean(true),
                mean(false)
            );
        }
    }
}

/// One cloud with `keys` in its `[remote]` table judging `a.parts` knives of `size`; the calls
/// the fake counted.
async fn run(a: &Args, size: (u32, u32), keys: &str) -> Vec<Counted> {
    let dir = tempfile::tempdir().expect("temp dir");
    let calls: Calls = Arc::default();
    let endpoint = counting_remote(calls.clone()).await;
    let stop = tokio_util::sync::CancellationToken::new();
    let _stop = stop.clone().drop_guard();
    let remote = format!("workers = 4\nmax_concurrency = 4\nrequests_per_minute = 100000\n{keys}");
    let url = serve_cloud(dir.path(), &remote_table(&endpoint, &remote), stop).await;
    let client = reqwest::Client::new();
    fit_golden(&client, &url, size).await;

    let mut ids = Vec::new();
    for i in 0..a.parts {
        let defect = (i % 5 == 0).then(|| SynthDefect::ALL[(i / 5) as usize % 7]);
        let image = knife(defect, 60_000 + i, size);
        let answer = analyze(
            &client,
            &url,
            form(
                &[&image],
                &[("product_sku", "WK-KN-200"), ("facility", "bench")],
            ),
        )
        .await
        .expect("a result of analyze");
        if answer["status"] == "provisional" {
            ids.push(answer["id"].as_str().unwrap_or_default().to_string());
        }
    }
    // Every part sent remote is enriched (final) before the calls are read.
    for id in &ids {
        for _ in 0..600 {
            let result: Value = client
                .get(format!("{url}/api/v1/analyses/{id}"))
                .header("x-api-key", VIEWER)
                .send()
                .await
                .expect("a result")
                .json()
                .await
                .expect("JSON");
            if result["status"] == "final" {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    let calls = calls.lock().unwrap_or_else(|e| e.into_inner()).clone();
    assert_eq!(calls.len(), ids.len(), "one call per part sent");
    calls
}
