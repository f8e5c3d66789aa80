//! Trigger to the agent's NG alert on the MQTT broker, measured from outside a real
//! `wiko-agent` with edge analysis on, and the agent's peak resident memory.
//!
//! One cloud (embedded store and broker, calibrated: the agent pulls the SKU's model), one
//! agent with two cameras at two stations (`http` triggers, synthetic parts, every one with a
//! painted defect), the agent's `[mqtt]` on an external broker. Each station is triggered at
//! `--rate` parts per second (open loop: the next trigger does not wait for the answer); each
//! alert is matched to its trigger by `part_id`; the figure is the time from sending the
//! trigger to receiving the alert from the broker. Parts the edge judged OK send no alert and
//! are counted apart.
//!
//! `cargo build --release -p wiko-agent -p wiko-cloud && cargo bench -p wiko-e2e --bench edge_alert -- [--parts N] [--rate R] [--mqtt-port P] [--snapshot [--size WxH]] [--cloud-down]`
//! (a broker, e.g. Mosquitto, on 127.0.0.1:1883 by default; `--snapshot`: the cameras are
//! HTTP snapshot cameras served one encoded defective knife by the bench, instead of synthetic
//! cameras that render each part; `--size 1920x1080`: that knife and the golden parts the
//! model is fitted on are the synthetic camera's 640×480 upscaled to that size, as the
//! analyzer's bench does); `--cloud-down`: the cloud is stopped once the agent has its model,
//! so the agent judges alone with its uplink down, as on a line PC whose cloud runs elsewhere
//! or is unreachable: the cloud's own judging of every upload does not share the cores).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
use serde_json::json;
use wiko_e2e::{Agent, Camera, Cloud, SnapshotServer, Source, free_port, knife_jpeg, wait_until};
use wiko_wire::{AlertMessage, TriggerOutcome};

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let value = |flag: &str| wiko_e2e::flag_value(&args, flag);
    let parts: usize = value("--parts").map_or(Ok(400), |n| n.parse())?;
    let rate: f64 = value("--rate").map_or(Ok(20.0), |n| n.parse())?;
    let broker: u16 = value("--mqtt-port").map_or(Ok(1883), |n| n.parse())?;
    let snapshot = args.iter().any(|a| a == "--snapshot");
    let cloud_down = args.iter().any(|a| a == "--cloud-down");
    let size = value("--size")
        .map(|s| -> anyhow::Result<(u32, u32)> {
            let (w, h) = s
                .split_once('x')
                .ok_or_else(|| anyhow::anyhow!("--size WxH, not {s:?}"))?;
            Ok((w.parse()?, h.parse()?))
        })
        .transpose()?;
    anyhow::ensure!(
        size.is_none() || snapshot,
        "--size needs --snapshot (the synthetic camera renders 640×480)"
    );
    tokio::runtime::Runtime::new()?.block_on(run(parts, rate, broker, snapshot, size, cloud_down))
}

/// A JPEG of the synthetic camera's resized to `size` (`None`: as it is), at its quality.
fn resized(jpeg: Vec<u8>, size: Option<(u32, u32)>) -> anyhow::Result<Vec<u8>> {
    let Some((w, h)) = size else {
        return Ok(jpeg);
    };
    let rgb = image::load_from_memory(&jpeg)?.to_rgb8();
    let big = image::imageops::resize(&rgb, w, h, image::imageops::FilterType::Triangle);
    wiko_synth::encode_jpeg(big.as_raw(), w, h).map_err(anyhow::Error::msg)
}

fn percentile(sorted: &[Duration], p: f64) -> f64 {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted.get(i).map_or(f64::NAN, |d| d.as_secs_f64() * 1000.0)
}

/// Trigger times by part id, and alert arrival times by part id.
type Times = Arc<Mutex<HashMap<String, Instant>>>;

async fn run(
    parts: usize,
    rate: f64,
    broker: u16,
    snapshot: bool,
    size: Option<(u32, u32)>,
    cloud_down: bool,
) -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let mut cloud = Cloud::start(&dir.path().join("cloud"), free_port(), free_port()).await?;
    cloud
        .calibrate_with(dir.path(), |jpeg| resized(jpeg, size))
        .await?;
    // With `--snapshot`, each part is one GET of an already encoded JPEG from a local server
    // (an IP camera's snapshot URL): the agent's own path, without the synthetic camera's
    // rendering of every part.
    let server = if snapshot {
        let knife = resized(knife_jpeg(dir.path(), true)?, size)?;
        println!("the snapshot cameras serve a {} B JPEG", knife.len());
        Some(SnapshotServer::start(knife).await?)
    } else {
        None
    };
    let source = match &server {
        Some(server) => format!(
            "source = {{ type = \"http_snapshot\", url = \"{}\", username = \"wiko\", password = \"secret\" }}",
            server.url()
        ),
        None => "source = { type = \"synthetic\", seed = 7, defect_rate = 1.0 }".to_string(),
    };
    let run_id = format!("bench{}", std::process::id());
    let stations: Vec<&'static str> = (1..=2)
        .map(|n| &*Box::leak(format!("{run_id}-s{n}").into_boxed_str()))
        .collect();
    let cameras: Vec<Camera> = stations
        .iter()
        .map(|station| Camera {
            name: station,
            station,
            sku: "WK-KN-200",
            source: Source::Toml(format!("{source}\ntrigger = {{ type = \"http\" }}")),
        })
        .collect();
    let agent_dir = dir.path().join("agent");
    let http = free_port();
    let config = Agent::write_config(&agent_dir, cloud.port, http, &cameras)?;
    let mut text = std::fs::read_to_string(&config)?;
    text.push_str(&format!(
        "\n[mqtt]\nhost = \"127.0.0.1\"\nport = {broker}\nclient_id = \"{run_id}\"\nalerts = true\n"
    ));
    std::fs::write(&config, text)?;

    let alerts: Times = Arc::default();
    let mut options = MqttOptions::new(format!("{run_id}-sub"), "127.0.0.1", broker);
    options.set_keep_alive(Duration::from_secs(10));
    let (client, mut events) = AsyncClient::new(options, 64);
    events.network_options.set_tcp_nodelay(true);
    client
        // Other runs may alert on the broker too: alerts are matched by this run's part ids.
        .subscribe("wiko/yangjiang/l1/+/alert", QoS::AtLeastOnce)
        .await?;
    let sink = alerts.clone();
    let pump = tokio::spawn(async move {
        while let Ok(event) = events.poll().await {
            if let Event::Incoming(Packet::Publish(p)) = event
                && let Ok(alert) = serde_json::from_slice::<AlertMessage>(&p.payload)
                && let Some(part) = alert.part_id
            {
                let mut seen = sink.lock().unwrap_or_else(|p| p.into_inner());
                seen.entry(part).or_insert_with(Instant::now);
            }
        }
    });

    let agent = Agent::start(&agent_dir, http).await?;
    wait_until(Duration::from_secs(30), "the edge model in use", || async {
        agent
            .process
            .log_text()
            .contains("edge model in use")
            .then_some(())
    })
    .await?;
    if cloud_down {
        cloud.process.terminate()?;
        println!("the cloud is stopped: the agent judges alone, its uplink down");
    }
    tokio::time::sleep(Duration::from_secs(1)).await;

    let sent: Times = Arc::default();
    let captured = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let period = Duration::from_secs_f64(1.0 / rate);
    let cpu_before = agent.process.cpu_time();
    let started = Instant::now();
    let mut tasks = Vec::new();
    for station in &stations {
        let (sent, captured, http_port) = (sent.clone(), captured.clone(), agent.http_port);
        let station = station.to_string();
        tasks.push(tokio::spawn(async move {
            let client = reqwest::Client::new();
            let mut tick = tokio::time::interval(period);
            let mut answers = Vec::new();
            for i in 0..parts {
                tick.tick().await;
                let part = format!("{station}-{i}");
                let request = client
                    .post(format!("http://127.0.0.1:{http_port}/trigger/{station}"))
                    .json(&json!({ "part_id": part }));
                sent.lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .insert(part, Instant::now());
                let captured = captured.clone();
                answers.push(tokio::spawn(async move {
                    if let Ok(r) = request.send().await
                        && let Ok(ack) = r.json::<wiko_wire::TriggerAck>().await
                        && ack.outcome == TriggerOutcome::Captured
                    {
                        captured.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    }
                }));
            }
            for a in answers {
                let _ = a.await;
            }
        }));
    }
    for t in tasks {
        t.await?;
    }
    let elapsed = started.elapsed();
    tokio::time::sleep(Duration::from_secs(3)).await;
    pump.abort();
    let cpu = agent
        .process
        .cpu_time()
        .zip(cpu_before)
        .map(|(a, b)| a.saturating_sub(b));

    let sent = sent.lock().unwrap_or_else(|p| p.into_inner()).clone();
    let alerts = alerts.lock().unwrap_or_else(|p| p.into_inner()).clone();
    let mut times: Vec<Duration> = alerts
        .iter()
        .filter_map(|(part, at)| Some(at.saturating_duration_since(*sent.get(part)?)))
        .collect();
    times.sort();
    let captured = captured.load(std::sync::atomic::Ordering::Relaxed);
    println!(
        "triggers {} in {:.1} s ({:.1}/s per station), captured {captured}, alerts {} (the rest judged OK or not captured)",
        sent.len(),
        elapsed.as_secs_f64(),
        parts as f64 / elapsed.as_secs_f64(),
        times.len()
    );
    println!(
        "trigger → edge NG alert on the broker: p50 {:.1} ms  p99 {:.1} ms  max {:.1} ms",
        percentile(&times, 0.5),
        percentile(&times, 0.99),
        percentile(&times, 1.0)
    );
    println!(
        "agent peak RSS (two cameras, edge analysis on): {:.1} MB",
        agent.process.peak_rss().unwrap_or(0) as f64 / 1e6
    );
    // Everything the agent did while triggered (answering busy triggers, uploads, heartbeats
    // included) over the parts it captured.
    if let Some(cpu) = cpu {
        println!(
            "agent CPU time while triggered: {:.2} s, {:.1} ms per captured part",
            cpu.as_secs_f64(),
            cpu.as_secs_f64() * 1000.0 / captured.max(1) as f64
        );
    }
    Ok(())
}
