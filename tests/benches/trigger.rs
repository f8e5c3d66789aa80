//! Trigger to frame in the buffer, per trigger kind and source, measured from outside a real
//! `wiko-agent` (release build, next to this benchmark: `cargo build --release -p wiko-agent
//! --features genicam` first).
//!
//! Each trigger is sent only after the previous one was answered; the answer leaves the agent
//! once the frame is committed to its buffer, so each figure is trigger → frame in buffer plus
//! the answer's way back: the HTTP response, the MQTT ack through the broker, the PLC's
//! Busy-off and Ready-on coil writes. Each run also prints where the agent's time went, as the
//! agent itself measured it (`wiko_agent_trigger_stage_seconds`, means over the counted
//! triggers): `way` is the rest of the figure (the trigger's way in before the agent took it,
//! and the answer's way back).
//!
//! `cargo bench -p wiko-e2e --bench trigger -- [--parts N] [--genicam ADDRESS [--genicam-clock-hz HZ]] [--snapshot] [--mqtt | --mqtt-port P]`
//! (`--genicam 127.0.0.1` starts Aravis's fake GigE camera there, as `arv-fake-gv-camera-0.8`
//! runs it: a triggered frame leaves at the camera's next 25 Hz tick; `--genicam-clock-hz`
//! (only with `--genicam`) measures it a second time with that tick rate,
//! `tests/fixtures/fake_gige_camera.py`, once it printed "ready"; the bench refuses to start a
//! fake camera while another program holds UDP port 3956, and fails a run whose fake camera
//! exited;
//! `--snapshot` adds an HTTP snapshot camera served one encoded knife by the bench (a camera
//! with no frame clock); `--mqtt` uses a broker on 127.0.0.1:1883, `--mqtt-port` another port
//! of 127.0.0.1).

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
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
    anyhow::ensure!(parts > 0, "--parts must be at least 1");
    let genicam = value("--genicam");
    let clock_hz: Option<f64> = value("--genicam-clock-hz").map(|n| n.parse()).transpose()?;
    anyhow::ensure!(
        clock_hz.is_none() || genicam.is_some(),
        "--genicam-clock-hz needs --genicam ADDRESS (the fake camera it runs)"
    );
    if let Some(hz) = clock_hz {
        anyhow::ensure!(
            hz.is_finite() && hz > 0.0,
            "--genicam-clock-hz must be a number above 0"
        );
    }
    let snapshot = args.iter().any(|a| a == "--snapshot");
    let mqtt = match value("--mqtt-port") {
        Some(port) => Some(port.parse::<u16>()?),
        None => args.iter().any(|a| a == "--mqtt").then_some(1883),
    };
    tokio::runtime::Runtime::new()?.block_on(run(parts, genicam, clock_hz, snapshot, mqtt))
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

/// GVCP's UDP port, where a GigE camera listens.
const GVCP_PORT: u16 = 3956;

/// Whether a UDP socket of this machine is bound to GVCP's port (`/proc/net/udp` and `udp6`).
fn gvcp_port_bound() -> bool {
    let port = format!(":{GVCP_PORT:04X}");
    ["/proc/net/udp", "/proc/net/udp6"].iter().any(|table| {
        std::fs::read_to_string(table).is_ok_and(|text| {
            text.lines()
                .skip(1)
                .filter_map(|line| line.split_whitespace().nth(1))
                .any(|local| local.ends_with(&port))
        })
    })
}

/// A fake GigE camera on `address`: as Aravis's program runs it, or with its trigger clock at
/// `clock_hz` (the fixture, returned once it printed "ready": it listens on the address).
/// Refused while another program holds GVCP's port: Aravis's fake cameras share the port, so
/// the agent could be answered by the other one and its row labelled with the wrong clock.
async fn fake_camera(
    address: &str,
    clock_hz: Option<f64>,
    log: PathBuf,
) -> anyhow::Result<Process> {
    anyhow::ensure!(
        !gvcp_port_bound(),
        "UDP port {GVCP_PORT} (GVCP) is already bound on this machine: another GigE camera (an arv-fake-gv-camera-0.8 left running?) would answer the agent; stop it first"
    );
    match clock_hz {
        None => Process::program(Path::new("arv-fake-gv-camera-0.8"), &["-i", address], log),
        Some(hz) => {
            let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/fake_gige_camera.py");
            let script = script.to_str().context("the fixture's path")?;
            let mut fake = Process::program(
                Path::new("/usr/bin/python3"),
                &[script, address, &hz.to_string()],
                log,
            )?;
            let start = Instant::now();
            while !fake.log_text().lines().any(|l| l == "ready") {
                anyhow::ensure!(
                    fake.alive(),
                    "the fake camera at {hz} Hz exited before it was ready (another camera on {address} port 3956?): {}",
                    fake.log_text()
                );
                anyhow::ensure!(
                    start.elapsed() < Duration::from_secs(30),
                    "the fake camera at {hz} Hz not ready within 30 s: {}",
                    fake.log_text()
                );
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Ok(fake)
        }
    }
}

/// One source the bench measures: its name, its `source` table, and the fake GigE camera it
/// needs (started for its runs only: the camera's control port is the machine's).
struct Measured {
    name: String,
    table: String,
    gige: Option<(String, Option<f64>)>,
}

async fn run(
    parts: usize,
    genicam: Option<String>,
    clock_hz: Option<f64>,
    snapshot: bool,
    mqtt: Option<u16>,
) -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let mut sources = vec![Measured {
        name: "synthetic".into(),
        table: "{ type = \"synthetic\", seed = 1 }".into(),
        gige: None,
    }];
    if let Some(address) = &genicam {
        let table =
            format!("{{ type = \"genicam\", device = \"{address}\", pixel_format = \"Mono8\" }}");
        sources.push(Measured {
            name: "genicam".into(),
            table: table.clone(),
            gige: Some((address.clone(), None)),
        });
        if let Some(hz) = clock_hz {
            sources.push(Measured {
                name: format!("genicam {hz} Hz"),
                table,
                gige: Some((address.clone(), Some(hz))),
            });
        }
    }
    let server = if snapshot {
        Some(SnapshotServer::start(knife_jpeg(dir.path(), false)?).await?)
    } else {
        None
    };
    if let Some(server) = &server {
        sources.push(Measured {
            name: "snapshot".into(),
            table: format!(
                "{{ type = \"http_snapshot\", url = \"{}\", username = \"wiko\", password = \"secret\" }}",
                server.url()
            ),
            gige: None,
        });
    }
    // One agent per source and trigger kind: a GigE camera takes one controller at a time.
    for (n, source) in sources.iter().enumerate() {
        let mut fake = match &source.gige {
            Some((address, hz)) => {
                Some(fake_camera(address, *hz, dir.path().join(format!("camera-{n}.log"))).await?)
            }
            None => None,
        };
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
            let mut cam = camera(trigger, &source.table, &table);
            cam.station = Box::leak(station.clone().into_boxed_str());
            let agent_dir = dir.path().join(format!("{n}-{trigger}"));
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
            let mut asker = match trigger {
                "http" => Asker::Http,
                "plc" => Asker::Plc(plc.clone()),
                _ => Asker::mqtt(&station, mqtt.unwrap_or(1883)).await?,
            };
            for i in 0..WARM_UP {
                asker.ask(&agent, i).await?;
            }
            let before = Stages::read(&agent).await;
            let camera_cpu = fake.as_ref().and_then(Process::cpu_time);
            let mut times = Vec::with_capacity(parts);
            for i in 0..parts {
                times.push(asker.ask(&agent, WARM_UP + i).await?);
            }
            // A row is the named camera's only if it ran to the end: else the agent's frames
            // came from another camera on the same address.
            if let Some(fake) = &mut fake {
                anyhow::ensure!(
                    fake.alive(),
                    "the fake camera of {} exited during the {trigger} run: {}",
                    source.name,
                    fake.log_text()
                );
            }
            let stages = Stages::read(&agent).await.since(&before);
            let mean = times.iter().sum::<Duration>().as_secs_f64() * 1000.0 / parts as f64;
            report(&format!("{} / {trigger}", source.name), times);
            println!("    {}", stages.breakdown(mean));
            if let (Some(fake), Some(before)) = (&fake, camera_cpu)
                && let Some(after) = fake.cpu_time()
            {
                println!(
                    "    the fake camera process's CPU time over the run, per part: {:.2} ms (mostly its clock thread, which spins at a high clock whatever the triggers)",
                    (after - before).as_secs_f64() * 1000.0 / parts as f64
                );
            }
            asker.close();
        }
    }
    Ok(())
}

/// Warm-up triggers, not counted.
const WARM_UP: usize = 5;

/// The stages of `wiko_agent_trigger_stage_seconds`, in order.
const STAGES: [&str; 6] = ["queued", "trigger", "camera", "encode", "grab", "store"];

/// The agent's own account of its triggers: per stage (and in all, `wiko_agent_trigger_to_frame_seconds`),
/// the seconds summed and the count.
struct Stages {
    stages: Vec<(f64, f64)>,
    total: (f64, f64),
}

impl Stages {
    async fn read(agent: &Agent) -> Stages {
        let sum_count = |name: &'static str, label: String| async move {
            (
                agent
                    .metric(&format!("{name}_sum"), &label)
                    .await
                    .unwrap_or(0.0),
                agent
                    .metric(&format!("{name}_count"), &label)
                    .await
                    .unwrap_or(0.0),
            )
        };
        let mut stages = Vec::new();
        for stage in STAGES {
            let label = format!("stage=\"{stage}\"");
            stages.push(sum_count("wiko_agent_trigger_stage_seconds", label).await);
        }
        let total = sum_count("wiko_agent_trigger_to_frame_seconds", String::new()).await;
        Stages { stages, total }
    }

    fn since(&self, before: &Stages) -> Stages {
        let minus = |(s, c): (f64, f64), (s0, c0): (f64, f64)| (s - s0, c - c0);
        Stages {
            stages: self
                .stages
                .iter()
                .zip(&before.stages)
                .map(|(a, b)| minus(*a, *b))
                .collect(),
            total: minus(self.total, before.total),
        }
    }

    /// Mean ms per stage, the agent's trigger-to-frame, and the rest of `mean_ms`.
    fn breakdown(&self, mean_ms: f64) -> String {
        let ms = |(sum, count): (f64, f64)| (count > 0.0).then(|| sum * 1000.0 / count);
        let mut line: Vec<String> = STAGES
            .iter()
            .zip(&self.stages)
            .filter_map(|(stage, &x)| Some(format!("{stage} {:.2}", ms(x)?)))
            .collect();
        if let Some(agent) = ms(self.total) {
            line.push(format!(
                "= agent {agent:.2}; way {:.2} (mean ms)",
                mean_ms - agent
            ));
        }
        line.join(", ")
    }
}

/// What sends a trigger and waits for its answer.
enum Asker {
    Http,
    Plc(Plc),
    Mqtt {
        client: AsyncClient,
        topic: String,
        acks: tokio::sync::mpsc::UnboundedReceiver<TriggerAck>,
        pump: tokio::task::JoinHandle<()>,
    },
}

impl Asker {
    async fn mqtt(station: &str, port: u16) -> anyhow::Result<Asker> {
        let topic = format!("wiko/yangjiang/l1/{station}/trigger");
        let mut options = MqttOptions::new(format!("bench-{station}"), "127.0.0.1", port);
        options.set_keep_alive(Duration::from_secs(10));
        let (client, mut events) = AsyncClient::new(options, 64);
        events.network_options.set_tcp_nodelay(true);
        client
            .subscribe(format!("{topic}/ack"), QoS::AtLeastOnce)
            .await?;
        let (tx, acks) = tokio::sync::mpsc::unbounded_channel();
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
        Ok(Asker::Mqtt {
            client,
            topic,
            acks,
            pump,
        })
    }

    /// Trigger `i`, answered `captured`: the time from the trigger to its answer.
    async fn ask(&mut self, agent: &Agent, i: usize) -> anyhow::Result<Duration> {
        let start = Instant::now();
        match self {
            Asker::Http => {
                let (_, ack) = agent
                    .trigger("http", &json!({ "part_id": format!("P{i}") }))
                    .await?;
                anyhow::ensure!(ack.outcome == TriggerOutcome::Captured, "{ack:?}");
                Ok(start.elapsed())
            }
            Asker::Plc(plc) => {
                let coils = || plc.coils.lock().unwrap_or_else(|p| p.into_inner());
                let ready = plc.ready.notified();
                tokio::pin!(ready);
                ready.as_mut().enable();
                let start = Instant::now();
                coils()[0] = true;
                tokio::time::timeout(Duration::from_secs(30), ready).await?;
                let took = start.elapsed();
                anyhow::ensure!(!coils()[3], "Error raised");
                coils()[0] = false;
                // The agent sees the trigger fall (it lowers Ready) before the next part.
                tokio::time::sleep(Duration::from_millis(15)).await;
                Ok(took)
            }
            Asker::Mqtt {
                client,
                topic,
                acks,
                ..
            } => {
                let body = json!({ "request_id": i.to_string() }).to_string();
                client
                    .publish(topic.as_str(), QoS::AtLeastOnce, false, body)
                    .await?;
                let ack = tokio::time::timeout(Duration::from_secs(30), acks.recv())
                    .await?
                    .ok_or_else(|| anyhow::anyhow!("no answer"))?;
                anyhow::ensure!(ack.outcome == TriggerOutcome::Captured, "{ack:?}");
                Ok(start.elapsed())
            }
        }
    }

    fn close(self) {
        if let Asker::Mqtt { pump, .. } = self {
            pump.abort();
        }
    }
}
