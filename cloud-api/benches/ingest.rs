//! Ingest throughput: `cargo bench -p wiko-cloud --bench ingest [-- --requests N --connections C --peer URL]`
//!
//! In one run, with the same client and the same 200 KB JPEG body:
//! 1. a bare axum handler that reads the multipart body and answers its length (the framework's
//!    ceiling: no auth, no disk, no database);
//! 2. `wiko-cloud`'s `PUT /api/v1/frames/{id}` on the embedded store, started in this process with
//!    MQTT disabled and no analysis workers (analysis is queued, as in production, and runs on
//!    other cores or replicas): key check, multipart, BLAKE3 digest check, header checks, image
//!    appended to the segment log and synced (group sync), record and job committed with
//!    `synchronous=FULL` (group commit), JSON ack;
//! 3. when `WIKOTEST_DATABASE_URL`, `WIKOTEST_S3_ENDPOINT` and `WIKOTEST_S3_BUCKET` name a
//!    PostgreSQL database and an S3 server (credentials in `AWS_ACCESS_KEY_ID`/
//!    `AWS_SECRET_ACCESS_KEY`): the same on the production backend, image stored in S3 (a
//!    conditional PUT) before the record commits in PostgreSQL, with one replica and with three
//!    replicas sharing both (the client sends request `i` to replica `i mod 3`; all replicas run
//!    in this process, on the same cores); and, as the baseline of these, the same images PUT
//!    straight to the S3 server by the same client, without the cloud;
//! 4. optionally the Flask prototype's `POST /api/v1/analyze` at `--peer URL` (start it with
//!    `shared/peers/flask_prototype`).
//!
//! The servers run on a tokio runtime of their own (two worker threads, like the `wiko-cloud`
//! process), the load generator on another, so neither's tasks queue behind the other's.
//!
//! Every request carries a distinct image (a JPEG comment segment holds its index), so no write
//! is skipped as a duplicate. Closed loop: `C` connections each send the next request as soon as
//! the previous answer arrived.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::Multipart;
use axum::routing::{post, put};
use bytes::Bytes;
use sqlx::Connection;
use uuid::Uuid;

const BOUNDARY: &str = "wikoBenchBoundary7MA4YWxk";
const KEY: &str = "bench-device-key-000000001";

#[derive(clap::Parser)]
struct Args {
    /// Requests sent to each target.
    #[arg(long, default_value_t = 12_000)]
    requests: usize,
    /// Connections sending at once (closed loop).
    #[arg(long, default_value_t = 64)]
    connections: usize,
    /// The Flask prototype's URL, e.g. `http://127.0.0.1:5000`.
    #[arg(long)]
    peer: Option<String>,
    /// Passed by `cargo bench`.
    #[arg(long, hide = true)]
    bench: bool,
}

/// A ~200 KB JPEG of a noisy gradient, as the prototype's load test used.
fn base_jpeg() -> Vec<u8> {
    let (w, h) = (1024u32, 768u32);
    let mut state = 0x2545_F491_4F6C_DD1Du64;
    let img = image::RgbImage::from_fn(w, h, |x, y| {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        let n = (state % 24) as u8;
        image::Rgb([
            ((x / 4) as u8).wrapping_add(n),
            ((y / 3) as u8).wrapping_add(n),
            (((x + y) / 8) as u8).wrapping_add(n),
        ])
    });
    let mut out = Vec::new();
    image::codecs::jpeg::JpegEncoder::new_with_quality(&mut out, 62)
        .encode_image(&img)
        .expect("encoding a JPEG in memory");
    out
}

/// The base JPEG with a comment segment holding `index` right after the SOI marker.
fn variant(base: &[u8], index: usize) -> Vec<u8> {
    let text = format!("bench frame {index:010}");
    let len = (text.len() + 2) as u16;
    let mut out = Vec::with_capacity(base.len() + text.len() + 4);
    out.extend_from_slice(&base[..2]);
    out.extend_from_slice(&[0xFF, 0xFE]);
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(text.as_bytes());
    out.extend_from_slice(&base[2..]);
    out
}

fn part(name: &str, filename: Option<&str>, ctype: &str, bytes: &[u8], body: &mut Vec<u8>) {
    body.extend_from_slice(
        format!("--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"{name}\"").as_bytes(),
    );
    if let Some(f) = filename {
        body.extend_from_slice(format!("; filename=\"{f}\"").as_bytes());
    }
    body.extend_from_slice(format!("\r\nContent-Type: {ctype}\r\n\r\n").as_bytes());
    body.extend_from_slice(bytes);
    body.extend_from_slice(b"\r\n");
}

/// (url path, body) of one agent frame upload.
fn frame_request(base: &[u8], index: usize) -> (String, Bytes) {
    let jpeg = variant(base, index);
    let id = Uuid::now_v7();
    let meta = wiko_wire::FrameMeta {
        frame_id: id,
        device_id: "bench-pc".into(),
        facility: "yangjiang".into(),
        line: "l1".into(),
        station: "grinding".into(),
        sku: "WK-KN-200".into(),
        part_id: None,
        lot: None,
        captured_at: chrono::Utc::now(),
        seq: index as u64 + 1,
        image_blake3: wiko_wire::frame::image_digest(&jpeg),
        edge: None,
    };
    let mut body = Vec::with_capacity(jpeg.len() + 1024);
    part(
        "meta",
        None,
        "application/json",
        &serde_json::to_vec(&meta).expect("meta serialises"),
        &mut body,
    );
    part("image", Some("frame.jpg"), "image/jpeg", &jpeg, &mut body);
    body.extend_from_slice(format!("--{BOUNDARY}--\r\n").as_bytes());
    (format!("/api/v1/frames/{id}"), Bytes::from(body))
}

/// The prototype's form: `image`, `product_sku`, `facility`.
fn prototype_request(base: &[u8], index: usize) -> (String, Bytes) {
    let mut body = Vec::new();
    part(
        "image",
        Some("knife.jpg"),
        "image/jpeg",
        &variant(base, index),
        &mut body,
    );
    part("product_sku", None, "text/plain", b"WK-KN-200", &mut body);
    part("facility", None, "text/plain", b"yangjiang", &mut body);
    body.extend_from_slice(format!("--{BOUNDARY}--\r\n").as_bytes());
    ("/api/v1/analyze".to_string(), Bytes::from(body))
}

struct Report {
    name: String,
    seconds: f64,
    ok: usize,
    errors: usize,
    latencies_us: Vec<u64>,
}

impl Report {
    fn pct(&self, p: f64) -> f64 {
        if self.latencies_us.is_empty() {
            return f64::NAN;
        }
        let i = ((self.latencies_us.len() as f64 * p).ceil() as usize)
            .clamp(1, self.latencies_us.len())
            - 1;
        self.latencies_us[i] as f64 / 1000.0
    }
}

/// Runs `op(0..n)` from `connections` tasks in a closed loop (each starts its next operation
/// when the previous one finished) and reports throughput and latency; `op` answers success.
async fn closed_loop<F, Fut>(name: &str, n: usize, connections: usize, op: F) -> Report
where
    F: Fn(usize) -> Fut + Clone + Send + 'static,
    Fut: std::future::Future<Output = bool> + Send,
{
    let next = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let tasks: Vec<_> = (0..connections)
        .map(|_| {
            let (op, next) = (op.clone(), next.clone());
            tokio::spawn(async move {
                let (mut ok, mut errors, mut lat) = (0usize, 0usize, Vec::new());
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= n {
                        break;
                    }
                    let t = Instant::now();
                    if op(i).await {
                        ok += 1
                    } else {
                        errors += 1
                    }
                    lat.push(t.elapsed().as_micros() as u64);
                }
                (ok, errors, lat)
            })
        })
        .collect();
    let mut report = Report {
        name: name.to_string(),
        seconds: 0.0,
        ok: 0,
        errors: 0,
        latencies_us: Vec::new(),
    };
    for t in tasks {
        let (ok, errors, lat) = t.await.expect("load task");
        report.ok += ok;
        report.errors += errors;
        report.latencies_us.extend(lat);
    }
    report.seconds = started.elapsed().as_secs_f64();
    report.latencies_us.sort_unstable();
    report
}

/// Sends request `i` to `base_urls[i % n]`.
async fn load(
    name: &str,
    base_urls: &[String],
    method: reqwest::Method,
    requests: Arc<Vec<(String, Bytes)>>,
    connections: usize,
) -> Report {
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(connections)
        .build()
        .expect("client");
    let base_urls = Arc::new(base_urls.to_vec());
    let n = requests.len();
    closed_loop(name, n, connections, move |i| {
        let (client, requests, base_urls, method) = (
            client.clone(),
            requests.clone(),
            base_urls.clone(),
            method.clone(),
        );
        async move {
            let (path, body) = &requests[i];
            let base_url = &base_urls[i % base_urls.len()];
            let sent = client
                .request(method, format!("{base_url}{path}"))
                .header("x-api-key", KEY)
                .header(
                    "content-type",
                    format!("multipart/form-data; boundary={BOUNDARY}"),
                )
                .body(body.clone())
                .send()
                .await;
            match sent {
                Ok(r) => {
                    let status = r.status();
                    let _ = r.bytes().await;
                    status.is_success()
                }
                Err(_) => false,
            }
        }
    })
    .await
}

async fn echo(mut multipart: Multipart) -> String {
    let mut n = 0;
    while let Ok(Some(field)) = multipart.next_field().await {
        n += field.bytes().await.map(|b| b.len()).unwrap_or(0);
    }
    n.to_string()
}

/// The servers' own runtime (two worker threads, as a server process would have): the load
/// generator's tasks do not queue behind the servers' tasks, nor the other way round.
fn servers() -> &'static tokio::runtime::Runtime {
    static SERVERS: std::sync::OnceLock<tokio::runtime::Runtime> = std::sync::OnceLock::new();
    SERVERS.get_or_init(|| tokio::runtime::Runtime::new().expect("server runtime"))
}

/// A listener on a free port, for a server on [`servers`].
fn listen() -> (std::net::TcpListener, std::net::SocketAddr) {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    listener.set_nonblocking(true).expect("non-blocking");
    let addr = listener.local_addr().expect("addr");
    (listener, addr)
}

async fn serve_echo() -> String {
    let (listener, addr) = listen();
    let app = Router::new()
        .route("/api/v1/frames/{id}", put(echo))
        .route("/api/v1/analyze", post(echo))
        .layer(axum::extract::DefaultBodyLimit::max(16 << 20));
    servers().spawn(async move {
        let listener = tokio::net::TcpListener::from_std(listener).expect("listener");
        axum::serve(listener, app).await
    });
    format!("http://{addr}")
}

/// The `[database]` and `[images.s3]` tables for a fresh schema and key prefix on the services
/// named by the `WIKOTEST_*` variables, if they are set.
async fn production_toml() -> Option<String> {
    let var = |name: &str| std::env::var(name).ok();
    let (db, s3, bucket) = (
        var("WIKOTEST_DATABASE_URL")?,
        var("WIKOTEST_S3_ENDPOINT")?,
        var("WIKOTEST_S3_BUCKET")?,
    );
    let schema = format!("wiko_bench_{}", Uuid::new_v4().simple());
    let mut admin = sqlx::PgConnection::connect(&db).await.expect("database");
    sqlx::query(&format!("CREATE SCHEMA {schema}"))
        .execute(&mut admin)
        .await
        .expect("create schema");
    Some(format!(
        "[database]\nurl = \"{db}?options[search_path]={schema}\"\nmax_connections = 32\n\
         [images.s3]\nbucket = \"{bucket}\"\nendpoint = \"{s3}\"\nprefix = \"{schema}/\"\n\
         path_style = true\nallow_http = true\n"
    ))
}

/// The S3 server's own ceiling: the same images PUT straight through the cloud's S3 client
/// (conditional create), `connections` at a time, no HTTP server in between.
async fn s3_ceiling(base: &[u8], from: usize, a: &Args) -> Option<Report> {
    let settings = wiko_cloud::store::s3::S3Settings {
        bucket: std::env::var("WIKOTEST_S3_BUCKET").ok()?,
        endpoint: std::env::var("WIKOTEST_S3_ENDPOINT").ok(),
        region: "us-east-1".into(),
        prefix: format!("bench-raw-{}/", Uuid::new_v4().simple()),
        path_style: true,
        allow_http: true,
        access_key_id: None,
        secret_access_key: None,
        request_timeout: Duration::from_secs(30),
    };
    let s3 = Arc::new(wiko_cloud::store::s3::S3::new(&settings).expect("S3 settings"));
    let images: Arc<Vec<Bytes>> = Arc::new(
        (0..a.requests)
            .map(|i| Bytes::from(variant(base, from + i)))
            .collect(),
    );
    let report = closed_loop(
        "baseline: S3 PUT alone (object_store client)",
        images.len(),
        a.connections,
        move |i| {
            let (s3, img) = (s3.clone(), images[i].clone());
            async move {
                let key = format!("{}.jpg", wiko_wire::frame::image_digest(&img));
                wiko_cloud::store::blob::BlobStore::put(s3.as_ref(), &key, img)
                    .await
                    .is_ok()
            }
        },
    )
    .await;
    Some(report)
}

async fn serve_cloud(dir: &std::path::Path, production: &str) -> String {
    let toml = format!(
        // One key sends thousands of requests a second: lift the per-key and per-address
        // limits (their defaults would refuse most of the load).
        "listen = \"127.0.0.1:0\"\ndata_dir = {:?}\n[mqtt]\ndisabled = true\n[analysis]\nworkers = 0\n\
         [auth.limits]\nrequests_per_second_per_key = 1000000\nrequests_per_second_per_address = 1000000\n\
         [[auth.keys]]\nname = \"bench\"\nscope = \"device\"\nkey = \"{KEY}\"\n{production}",
        dir.display().to_string()
    );
    let config = wiko_cloud::config::Config::from_toml(&toml).expect("valid bench config");
    let (listener, addr) = listen();
    servers().spawn(async move {
        let listener = tokio::net::TcpListener::from_std(listener).expect("listener");
        wiko_cloud::serve(config, listener, std::future::pending()).await
    });
    let url = format!("http://{addr}");
    for _ in 0..100 {
        if reqwest::get(format!("{url}/health")).await.is_ok() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    url
}

/// Warms `urls` up, then loads them with `requests` fresh frames starting at index `from`.
async fn run_frames(name: &str, urls: &[String], base: &[u8], from: usize, a: &Args) {
    let warm: Arc<Vec<_>> = Arc::new((0..500).map(|i| frame_request(base, from + i)).collect());
    let _ = load("warm-up", urls, reqwest::Method::PUT, warm, a.connections).await;
    let frames: Arc<Vec<_>> = Arc::new(
        (0..a.requests)
            .map(|i| frame_request(base, from + 500 + i))
            .collect(),
    );
    print(&load(name, urls, reqwest::Method::PUT, frames, a.connections).await);
}

fn print(r: &Report) {
    println!(
        "| {} | {:.0} | {:.2} | {:.2} | {:.2} | {} / {} |",
        r.name,
        r.ok as f64 / r.seconds,
        r.pct(0.50),
        r.pct(0.99),
        r.pct(1.0),
        r.errors,
        r.ok + r.errors
    );
}

fn main() {
    let a = <Args as clap::Parser>::parse();
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let base = base_jpeg();
    eprintln!(
        "body: {} byte JPEG, {} requests per target, {} connections",
        base.len(),
        a.requests,
        a.connections
    );
    let dir = tempfile::tempdir().expect("temp dir");
    runtime.block_on(async {
        let echo_url = vec![serve_echo().await];
        let cloud_url = vec![serve_cloud(&dir.path().join("embedded"), "").await];
        println!("| target | req/s | p50 ms | p99 ms | max ms | errors |");
        println!("|---|---|---|---|---|---|");
        let step = a.requests + 500;
        run_frames("bare axum, multipart echo", &echo_url, &base, 0, &a).await;
        run_frames(
            "wiko-cloud PUT /api/v1/frames, embedded (durable)",
            &cloud_url,
            &base,
            step,
            &a,
        )
        .await;
        if let Some(production) = production_toml().await {
            if let Some(r) = s3_ceiling(&base, 4 * step, &a).await {
                print(&r);
            }
            let one = vec![serve_cloud(&dir.path().join("pg1"), &production).await];
            run_frames(
                "wiko-cloud, PostgreSQL + S3, 1 replica",
                &one,
                &base,
                2 * step,
                &a,
            )
            .await;
            let production = production_toml().await.unwrap_or_default();
            let mut three = Vec::new();
            for i in 0..3 {
                three.push(serve_cloud(&dir.path().join(format!("pg3-{i}")), &production).await);
            }
            run_frames(
                "wiko-cloud, PostgreSQL + S3, 3 replicas",
                &three,
                &base,
                3 * step,
                &a,
            )
            .await;
        } else {
            eprintln!("WIKOTEST_DATABASE_URL/S3 not set: production figures skipped");
        }
        if let Some(peer) = &a.peer {
            let proto: Arc<Vec<_>> = Arc::new(
                (0..a.requests)
                    .map(|i| prototype_request(&base, i))
                    .collect(),
            );
            print(
                &load(
                    "Flask peer POST /api/v1/analyze",
                    std::slice::from_ref(peer),
                    reqwest::Method::POST,
                    proto,
                    a.connections,
                )
                .await,
            );
        }
    });
}
