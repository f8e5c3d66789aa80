//! The cloud as an attacker and a bad day would find it, against a real `wiko-cloud`: memory
//! bombs at once, slow and stalled clients, thousands of idle connections, header bombs, an image
//! that would stall the queue, wrong keys at speed. Throughout, `/health` answers within a second
//! and the process stays within its memory budget.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use wiko_e2e::{ADMIN_KEY, Cloud, DEVICE_KEY, Setup, free_port};

/// The memory budget given to the cloud (the smallest it accepts).
const BUDGET: u64 = 256 * 1024 * 1024;
/// What the process may hold beside the budget: code, runtime, buffers, the embedded broker.
const OVERHEAD: u64 = 300 * 1024 * 1024;
const BOUNDARY: &str = "abuseBoundary";

fn setup() -> Setup {
    Setup {
        extra: format!(
            "[http]\nheader_read_timeout_ms = 2000\nbody_idle_timeout_ms = 2000\n\
             request_timeout_ms = 10000\n[analysis]\nmemory_budget_bytes = {BUDGET}\n"
        ),
        ..Setup::default()
    }
}

/// Polls `/health` every 100 ms until stopped; the slowest answer (or 10 s for none).
fn watch_health(url: String, stop: Arc<AtomicBool>) -> tokio::task::JoinHandle<Duration> {
    tokio::spawn(async move {
        let client = reqwest::Client::new();
        let worst = AtomicU64::new(0);
        while !stop.load(Ordering::Relaxed) {
            let started = Instant::now();
            let ok = client
                .get(format!("{url}/health"))
                .timeout(Duration::from_secs(10))
                .send()
                .await
                .is_ok_and(|r| r.status().is_success());
            let took = if ok {
                started.elapsed()
            } else {
                Duration::from_secs(10)
            };
            worst.fetch_max(took.as_millis() as u64, Ordering::Relaxed);
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Duration::from_millis(worst.load(Ordering::Relaxed))
    })
}

/// A blank PNG: a few kilobytes for any number of pixels.
fn png(width: u32, height: u32) -> Vec<u8> {
    use image::ImageEncoder;
    use image::codecs::png::{CompressionType, FilterType, PngEncoder};
    let pixels = vec![0u8; (width * height) as usize];
    let mut out = Vec::new();
    PngEncoder::new_with_quality(&mut out, CompressionType::Best, FilterType::NoFilter)
        .write_image(&pixels, width, height, image::ExtendedColorType::L8)
        .unwrap();
    out
}

fn form(parts: &[(&str, &[u8])]) -> Vec<u8> {
    let mut body = Vec::new();
    for (name, bytes) in parts {
        body.extend_from_slice(
            format!(
                "--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"{name}\"; filename=\"x\"\r\n\r\n"
            )
            .as_bytes(),
        );
        body.extend_from_slice(bytes);
        body.extend_from_slice(b"\r\n");
    }
    body.extend_from_slice(format!("--{BOUNDARY}--\r\n").as_bytes());
    body
}

async fn post(url: &str, key: &str, body: Vec<u8>) -> (u16, serde_json::Value) {
    let r = reqwest::Client::new()
        .post(url)
        .header("x-api-key", key)
        .header(
            "content-type",
            format!("multipart/form-data; boundary={BOUNDARY}"),
        )
        .body(body)
        .timeout(Duration::from_secs(60))
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or_default())
}

/// Sends `request`, then reads until the server closes or `within` passes; what it answered.
async fn sent_and_closed(port: u16, request: &[u8], within: Duration) -> Option<String> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    s.write_all(request).await.unwrap();
    let mut answer = Vec::new();
    let read = tokio::time::timeout(within, s.read_to_end(&mut answer)).await;
    read.ok()
        .map(|_| String::from_utf8_lossy(&answer).into_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_cloud_stays_up_and_within_its_memory_through_abuse() {
    let _ = rlimit::increase_nofile_limit(u64::MAX);
    let dir = tempfile::tempdir().unwrap();
    let (port, mqtt) = (free_port(), free_port());
    let cloud = Cloud::start_with(dir.path(), port, mqtt, &setup())
        .await
        .unwrap();
    let url = cloud.url();
    let stop = Arc::new(AtomicBool::new(false));
    let health = watch_health(url.clone(), stop.clone());

    // Memory bombs: 4 KB PNGs of 36 megapixels would take 576 MB each to judge, more than the
    // whole budget: refused at once. PNGs of 10 megapixels (160 MB each) are judged one at a
    // time, twenty sent at once.
    let huge = png(6000, 6000);
    assert!(huge.len() < 200_000, "{} bytes", huge.len());
    let analyze = format!("{url}/api/v1/analyze");
    let bombs = (0..20).map(|_| {
        let body = form(&[
            ("image", &huge),
            ("product_sku", b"WK-KN-200"),
            ("facility", b"yj"),
        ]);
        post(&analyze, DEVICE_KEY, body)
    });
    for (status, body) in futures::future::join_all(bombs).await {
        assert_eq!(
            (status, body["error"]["code"].as_str()),
            (422, Some("image_too_large")),
            "{body}"
        );
    }
    let big = png(4000, 2500);
    let judged = (0..20).map(|_| {
        let body = form(&[
            ("image", &big),
            ("product_sku", b"WK-KN-200"),
            ("facility", b"yj"),
        ]);
        post(&analyze, DEVICE_KEY, body)
    });
    for (status, body) in futures::future::join_all(judged).await {
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["status"], "not_calibrated");
    }
    let golden = format!("{url}/api/v1/skus/WK-KN-200/golden");
    let (status, body) = post(&golden, ADMIN_KEY, form(&[("image", &huge)])).await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (422, Some("image_too_large")),
        "{body}"
    );

    // An image that would stall the queue: 6000×6000 claimed by a few kilobytes. Refused at
    // ingest, before it is acknowledged.
    let stalling = {
        let mut jpeg = Vec::new();
        image::codecs::jpeg::JpegEncoder::new(&mut jpeg)
            .encode_image(&image::GrayImage::from_pixel(64, 64, image::Luma([90])))
            .unwrap();
        let sof = jpeg.windows(2).position(|w| w == [0xFF, 0xC0]).unwrap();
        jpeg[sof + 5..sof + 9].copy_from_slice(&[0x17, 0x70, 0x17, 0x70]);
        jpeg
    };
    let id = uuid::Uuid::now_v7();
    let meta = wiko_wire::FrameMeta {
        frame_id: id,
        device_id: "pc1".into(),
        facility: "yj".into(),
        line: "l1".into(),
        station: "s1".into(),
        sku: "WK-KN-200".into(),
        part_id: None,
        lot: None,
        captured_at: chrono::Utc::now(),
        seq: 1,
        image_blake3: wiko_wire::frame::image_digest(&stalling),
        edge: None,
    };
    let meta = serde_json::to_vec(&meta).unwrap();
    let body = form(&[("meta", &meta), ("image", &stalling)]);
    let r = reqwest::Client::new()
        .put(format!("{url}/api/v1/frames/{id}"))
        .header("x-api-key", DEVICE_KEY)
        .header(
            "content-type",
            format!("multipart/form-data; boundary={BOUNDARY}"),
        )
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 422, "{:?}", r.text().await);

    // Slow and stalled clients are cut off: headers at a byte a second, a body that stops, a
    // Content-Length larger than what is sent.
    let slowloris = async {
        let mut s = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
        let started = Instant::now();
        for b in b"GET /health HTTP/1.1\r\nHost: x\r\nX-Slow: " {
            if s.write_all(&[*b]).await.is_err() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
            if started.elapsed() > Duration::from_secs(20) {
                break;
            }
        }
        let mut rest = Vec::new();
        let _ = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut rest)).await;
        started.elapsed()
    };
    let stalled = format!(
        "PUT /api/v1/frames/{id} HTTP/1.1\r\nHost: x\r\nX-API-Key: {DEVICE_KEY}\r\n\
         Content-Type: multipart/form-data; boundary={BOUNDARY}\r\nContent-Length: 100000\r\n\r\n--{BOUNDARY}\r\n"
    );
    let (slow, stalled_answer) = tokio::join!(
        slowloris,
        sent_and_closed(port, stalled.as_bytes(), Duration::from_secs(15))
    );
    assert!(
        slow < Duration::from_secs(8),
        "a slow client was kept {slow:?}"
    );
    assert!(stalled_answer.is_some(), "a stalled body was kept open");

    // Thousands of idle connections: the API keeps answering, and they are closed.
    let mut idle = Vec::new();
    for _ in 0..2000 {
        if let Ok(s) = TcpStream::connect(("127.0.0.1", port)).await {
            idle.push(s);
        }
    }
    assert_eq!(idle.len(), 2000);
    let started = Instant::now();
    let r = reqwest::get(format!("{url}/health")).await.unwrap();
    assert!(r.status().is_success() && started.elapsed() < Duration::from_secs(1));
    tokio::time::sleep(Duration::from_secs(4)).await;
    let mut closed = 0;
    for s in &mut idle {
        let mut byte = [0u8; 1];
        if matches!(
            tokio::time::timeout(Duration::from_millis(5), s.read(&mut byte)).await,
            Ok(Ok(0)) | Ok(Err(_))
        ) {
            closed += 1;
        }
    }
    assert!(closed > 1900, "{closed} of 2000 idle connections closed");
    drop(idle);

    // A header bomb is refused.
    let bomb = format!(
        "GET /health HTTP/1.1\r\nHost: x\r\nX-Bomb: {}\r\n\r\n",
        "a".repeat(1 << 20)
    );
    let answer = sent_and_closed(port, bomb.as_bytes(), Duration::from_secs(10))
        .await
        .unwrap_or_default();
    assert!(
        !answer.starts_with("HTTP/1.1 200"),
        "{}",
        &answer[..answer.len().min(80)]
    );

    // Wrong keys at speed: after the allowed failures the address is refused before its key
    // is looked at.
    let client = reqwest::Client::new();
    let (mut refused, mut throttled) = (0, 0);
    for i in 0..200 {
        let r = client
            .get(format!("{url}/api/v1/analyses"))
            .header("x-api-key", format!("guess-{i:08}"))
            .send()
            .await
            .unwrap();
        match r.status().as_u16() {
            401 => refused += 1,
            429 => throttled += 1,
            other => panic!("answered {other} to a wrong key"),
        }
    }
    assert!(
        refused <= 40 && throttled >= 160,
        "{refused} refused, {throttled} throttled"
    );

    stop.store(true, Ordering::Relaxed);
    let worst = health.await.unwrap();
    assert!(worst < Duration::from_secs(1), "/health took {worst:?}");
    let peak = cloud.process.peak_rss().unwrap();
    eprintln!("peak RSS {} MB (budget {} MB)", peak >> 20, BUDGET >> 20);
    assert!(peak < BUDGET + OVERHEAD, "peak RSS {} MB", peak >> 20);
}
