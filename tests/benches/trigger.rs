//! Trigger to frame in the buffer, per trigger kind and source, measured from outside a real
//! `wiko-agent` (release build, next to this benchmark: `cargo build --release -p wiko-agent
//! --features genicam` first).
//!
//! Each trigger is sent only after the previous one was answered; the answer leaves the agent
//! once the frame is committed to its buffer, so each figure is trigger → frame in buffer plus
//! the answer's way back: the HTTP response, the MQTT ack through the broker, the PLC's
//! Busy-off and Ready-on coil writes.
//!
//! `cargo bench -p wiko-e2e --bench trigger -- [--parts N] [--genicam ADDRESS] [--snapshot] [--mqtt | --mqtt-port P]`
//! (`--genicam 127.0.0.1` starts Aravis's fake GigE camera there; `--snapshot` adds an HTTP
//! snapshot camera served one encoded knife by the bench (a camera with no frame clock);
//! `--mqtt` uses a broker on 127.0.0.1:1883, `--mqtt-port` another port of 127.0.0.1).

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
use serde_json::json;
use tokio_modbus::server::tcp::{Server, accept_tcp_connection};
use tokio_modbus::{ExceptionCode, Request, Response};
use wiko_e2e::{Agent, Camera, Process, SnapshotServer, Source, free_port, knife_jpeg, wait_until};
use wiko_wire::{CameraStatus, TriggerAck, TriggerOutcome};

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let value = |flag: &str| wiko_e2e::flag_value(&args, flag);
    let parts: usize = value("--parts").map_or(Ok(200), |n| n.parse())?;
    let genicam = value("--genicam");
    let snapshot = args.iter().any(|a| a == "--snapshot");
    let mqtt = match value("--mqtt-port") {
        Some(port) => Some(port.parse::<u16>()?),
        None => args.iter().any(|a| a == "--mqtt").then_some(1883),
    };
    tokio::runtime::Runtime::new()?.block_on(run(parts, genicam, snapshot, mqtt))
}

fn percentile(sorted: &[Duration], p: f64) -> f64 {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i].as_secs_f64() * 1000.0
}

fn report(what: &str, mut times: Vec<Duration>) {
    times.sort();
    println!(
        "{what:<28} n={:<4} p50 {:>7.2} ms  p99 {:>7.2} ms  max {:>7.2} ms",
        times.len(),
        percentile(&times, 0.5),
        percentile(&times, 0.99),
        percentile(&times, 1.0)
    );
}

/// The PLC: coils in memory; `ready` is told when the agent raises the Ready coil.
#[derive(Clone, Default)]
struct Plc {
    coils: Arc<Mutex<[bool; 4]>>,
    ready: Arc<tokio::sync::Notify>,
}

impl tokio_modbus::server::Service for Plc {
    type Request = Request<'static>;
    type Response = Response;
    type Exception = ExceptionCode;
    type Future = std::future::Ready<Result<Response, ExceptionCode>>;

    fn call(&self, req: Request<'static>) -> Self::Future {
        let mut coils = self.coils.lock().unwrap_or_else(|p| p.into_inner());
        std::future::ready(match req {
            Request::ReadCoils(0, 1) => Ok(Response::ReadCoils(vec![coils[0]])),
            Request::WriteSingleCoil(addr @ 1..=3, on) => {
                coils[addr as usize] = on;
                if addr == 2 && on {
                    self.ready.notify_one();
                }
                Ok(Response::WriteSingleCoil(addr, on))
            }
            _ => Err(ExceptionCode::IllegalDataAddress),
        })
    }
}

async fn start_plc(plc: Plc) -> anyhow::Result<u16> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let port = listener.local_addr()?.port();
    tokio::spawn(async move {
        let server = Server::new(listener);
        let on_connected = |stream, addr| {
            let plc = plc.clone();
            async move { accept_tcp_connection(stream, addr, move |_| Ok(Some(plc.clone()))) }
        };
        let _ = server.serve(&on_connected, |_| {}).await;
    });
    Ok(port)
}

fn camera(name: &'static str, source: &str, trigger: &str) -> Camera {
    Camera {
        name,
        station: name,
        sku: "WK-KN-200",
        source: Source::Toml(format!(
            "source = {source}\ntrigger = {trigger}\nstall_timeout_ms = 10000"
        )),
    }
}

async fn run(
    parts: usize,
    genicam: Option<String>,
    snapshot: bool,
    mqtt: Option<u16>,
) -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let _fake = match &genicam {
        Some(address) => Some(Process::program(
            std::path::Path::new("arv-fake-gv-camera-0.8"),
            &["-i", address],
            dir.path().join("camera.log"),
        )?),
        None => None,
    };
    let mut sources = vec![(
        "synthetic",
        "{ type = \"synthetic\", seed = 1 }".to_string(),
    )];
    if let Some(address) = &genicam {
        sources.push((
            "genicam",
            format!("{{ type = \"genicam\", device = \"{address}\", pixel_format = \"Mono8\" }}"),
        ));
    }
    let server = if snapshot {
        Some(SnapshotServer::start(knife_jpeg(dir.path(), false)?).await?)
    } else {
        None
    };
    if let Some(server) = &server {
        sources.push((
            "snapshot",
            format!(
                "{{ type = \"http_snapshot\", url = \"{}\", username = \"wiko\", password = \"secret\" }}",
                server.url()
            ),
        ));
    }
    // One agent per source and trigger kind: a GigE camera takes one controller at a time.
    for (kind, source) in sources {
        let plc = Plc::default();
        let plc_port = start_plc(plc.clone()).await?;
        let station = format!("bench{}", std::process::id());
        let mut triggers = vec![
            ("http", "{ type = \"http\" }".to_string()),
            (
                "plc",
                format!(
                    "{{ type = \"plc\", address = \"127.0.0.1:{plc_port}\", poll_interval_ms = 5, trigger_coil = 0, busy_coil = 1, ready_coil = 2, error_coil = 3 }}"
                ),
            ),
        ];
        if mqtt.is_some() {
            triggers.push(("mqtt", "{ type = \"mqtt\" }".to_string()));
        }
        for (trigger, table) in triggers {
            let mut cam = camera(trigger, &source, &table);
            cam.station = Box::leak(station.clone().into_boxed_str());
            let agent_dir = dir.path().join(format!("{kind}-{trigger}"));
            let http = free_port();
            let config = Agent::write_config(&agent_dir, free_port(), http, &[cam])?;
            if let Some(port) = mqtt {
                let text = std::fs::read_to_string(&config)?.replace(
                    "[http]",
                    &format!("[mqtt]\nhost = \"127.0.0.1\"\nport = {port}\n[http]"),
                );
                std::fs::write(&config, text)?;
            }
            let agent = Agent::start(&agent_dir, http).await?;
            wait_until(Duration::from_secs(60), "the camera open", || async {
                (agent.camera(trigger).await?.status == CameraStatus::Ok).then_some(())
            })
            .await?;
            let times = match trigger {
                "http" => by_http(&agent, parts).await?,
                "plc" => by_plc(&plc, parts).await?,
                _ => by_mqtt(&station, mqtt.unwrap_or(1883), parts).await?,
            };
            report(&format!("{kind} / {trigger}"), times);
        }
    }
    Ok(())
}

/// Warm-up triggers, not counted.
const WARM_UP: usize = 5;

async fn by_http(agent: &Agent, parts: usize) -> anyhow::Result<Vec<Duration>> {
    let mut times = Vec::with_capacity(parts);
    for i in 0..parts + WARM_UP {
        let start = Instant::now();
        let (_, ack) = agent
            .trigger("http", &json!({ "part_id": format!("P{i}") }))
            .await?;
        anyhow::ensure!(ack.outcome == TriggerOutcome::Captured, "{ack:?}");
        if i >= WARM_UP {
            times.push(start.elapsed());
        }
    }
    Ok(times)
}

async fn by_plc(plc: &Plc, parts: usize) -> anyhow::Result<Vec<Duration>> {
    let mut times = Vec::with_capacity(parts);
    for i in 0..parts + WARM_UP {
        let ready = plc.ready.notified();
        tokio::pin!(ready);
        ready.as_mut().enable();
        let start = Instant::now();
        plc.coils.lock().unwrap_or_else(|p| p.into_inner())[0] = true;
        tokio::time::timeout(Duration::from_secs(30), ready).await?;
        if i >= WARM_UP {
            times.push(start.elapsed());
        }
        anyhow::ensure!(
            !plc.coils.lock().unwrap_or_else(|p| p.into_inner())[3],
            "Error raised"
        );
        plc.coils.lock().unwrap_or_else(|p| p.into_inner())[0] = false;
        tokio::time::sleep(Duration::from_millis(15)).await;
    }
    Ok(times)
}

async fn by_mqtt(station: &str, port: u16, parts: usize) -> anyhow::Result<Vec<Duration>> {
    let topic = format!("wiko/yangjiang/l1/{station}/trigger");
    let mut options = MqttOptions::new(format!("bench-{station}"), "127.0.0.1", port);
    options.set_keep_alive(Duration::from_secs(10));
    let (client, mut events) = AsyncClient::new(options, 64);
    events.network_options.set_tcp_nodelay(true);
    client
        .subscribe(format!("{topic}/ack"), QoS::AtLeastOnce)
        .await?;
    let (tx, mut acks) = tokio::sync::mpsc::unbounded_channel();
    let pump = tokio::spawn(async move {
        while let Ok(event) = events.poll().await {
            if let Event::Incoming(Packet::Publish(p)) = event
                && let Ok(ack) = serde_json::from_slice::<TriggerAck>(&p.payload)
            {
                let _ = tx.send(ack);
            }
        }
    });
    tokio::time::sleep(Duration::from_millis(500)).await;
    let mut times = Vec::with_capacity(parts);
    for i in 0..parts + WARM_UP {
        let start = Instant::now();
        let body = json!({ "request_id": i.to_string() }).to_string();
        client
            .publish(&topic, QoS::AtLeastOnce, false, body)
            .await?;
        let ack = tokio::time::timeout(Duration::from_secs(30), acks.recv())
            .await?
            .ok_or_else(|| anyhow::anyhow!("no answer"))?;
        anyhow::ensure!(ack.outcome == TriggerOutcome::Captured, "{ack:?}");
        if i >= WARM_UP {
            times.push(start.elapsed());
        }
    }
    pump.abort();
    Ok(times)
}
