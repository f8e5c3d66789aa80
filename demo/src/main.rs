//! `wiko-demo`: the whole system on one machine, no server to install. The cloud runs with its
//! embedded store and MQTT broker; an agent with two synthetic cameras (a chef's knife and a
//! paring knife, one station each) uploads to it. A summary is printed every few seconds from
//! the MQTT messages themselves (parts, NG by type) and the agent's health (backlog). Both run
//! in this process, through their libraries.

mod fake_remote;

use std::collections::BTreeMap;
use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
use tokio_util::sync::CancellationToken;
use wiko_wire::AlertMessage;

use wiko_cloud::config::{Config, RawConfig};

#[derive(Debug, Clone, clap::Parser)]
#[command(
    name = "wiko-demo",
    version,
    about = "The Wiko Defect Analyzer on this machine: cloud, broker and two simulated stations"
)]
struct DemoArgs {
    /// API port (0: any free port).
    #[arg(long, default_value_t = 5001)]
    port: u16,
    /// Embedded MQTT broker port (0: any free port).
    #[arg(long, default_value_t = 0)]
    mqtt_port: u16,
    /// Where data goes; a fresh temporary directory when absent.
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Milliseconds between parts at each station.
    #[arg(long, default_value_t = 400)]
    interval_ms: u64,
    /// Stop after this many seconds (runs until Ctrl-C when absent).
    #[arg(long)]
    duration_secs: Option<u64>,
    /// Send NG and uncertain parts to a fake remote vision model (an OpenAI-compatible server
    /// in this process answering in 1 to 3 s) and show its descriptions arriving.
    #[arg(long)]
    remote_fake: bool,
}

/// Good parts uploaded per SKU as its golden set.
const GOLDEN_PARTS: u64 = 30;

/// Uploads good synthetic parts of every demo SKU to the golden API, as a quality engineer
/// would with photos of approved parts, and waits for each model.
async fn calibrate(api: SocketAddr, admin_key: &str) -> anyhow::Result<()> {
    let client = reqwest::Client::new();
    let health = format!("http://{api}/health");
    for _ in 0..100 {
        if client.get(&health).send().await.is_ok() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    for shape in wiko_synth::SHAPES {
        let mut form = reqwest::multipart::Form::new();
        for i in 0..GOLDEN_PARTS {
            // Seeds far from the stations' so the golden parts are not the parts judged later.
            let part = wiko_synth::render(&shape, None, 1_000_000 + i);
            let jpeg = wiko_synth::part_jpeg(&part).map_err(anyhow::Error::msg)?;
            form = form.part(
                "image",
                reqwest::multipart::Part::bytes(jpeg).file_name(format!("golden-{i}.jpg")),
            );
        }
        let response = client
            .post(format!("http://{api}/api/v1/skus/{}/golden", shape.sku))
            .header(wiko_wire::API_KEY_HEADER, admin_key)
            .multipart(form)
            .send()
            .await?;
        let status = response.status();
        let body: serde_json::Value = response.json().await?;
        anyhow::ensure!(
            status.is_success(),
            "golden upload answered {status}: {body}"
        );
        println!(
            "  {}: model {} ({}) fitted on {} good parts",
            shape.sku,
            body["model"]["version"].as_str().unwrap_or("?"),
            body["model"]["method"].as_str().unwrap_or("?"),
            body["samples"]
        );
    }
    Ok(())
}

fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

fn random_key(prefix: &str) -> String {
    format!("{prefix}-{}", uuid::Uuid::new_v4().simple())
}

fn main() -> anyhow::Result<()> {
    let args = <DemoArgs as clap::Parser>::parse();
    wiko_daemon::telemetry::init_tracing();
    let runtime = tokio::runtime::Runtime::new()?;
    runtime.block_on(run(args, wiko_daemon::shutdown_signal()))
}

async fn run(args: DemoArgs, shutdown: impl Future<Output = ()>) -> anyhow::Result<()> {
    let temp = tempfile_dir(args.data_dir.clone())?;
    let data_dir = temp.path.clone();
    let listener = match tokio::net::TcpListener::bind(("127.0.0.1", args.port)).await {
        Ok(l) => l,
        Err(_) => tokio::net::TcpListener::bind(("127.0.0.1", 0)).await?,
    };
    let api: SocketAddr = listener.local_addr()?;
    let mqtt_port = if args.mqtt_port == 0 {
        free_port()?
    } else {
        args.mqtt_port
    };
    let device_key = random_key("device");
    let viewer_key = random_key("viewer");
    let admin_key = random_key("admin");
    let cloud_toml = format!(
        r#"
listen = "{api}"
data_dir = {cloud_dir:?}
[mqtt]
embedded_listen = "127.0.0.1:{mqtt_port}"
client_id = "wiko-cloud-demo"
[dashboard]
session_secret = "{session_secret}"
[[auth.keys]]
name = "demo-agent"
scope = "device"
key = "{device_key}"
[[auth.keys]]
name = "demo-viewer"
scope = "viewer"
key = "{viewer_key}"
[[auth.keys]]
name = "demo-quality-engineer"
scope = "admin"
key = "{admin_key}"
"#,
        cloud_dir = data_dir.join("cloud").display().to_string(),
        // The demo's sign-ins end with it anyway; set, the cloud does not warn of a random one.
        session_secret = random_key("session"),
    );
    let remote_table = if args.remote_fake {
        let endpoint = fake_remote::start().await?;
        format!(
            "[remote]\nkind = \"openai_compatible\"\nendpoint = \"{endpoint}\"\nmodel = \"fake-vision\"\n\
             workers = 8\nmax_concurrency = 8\nrequests_per_minute = 600\n\
             input_usd_per_million_tokens = 2.5\noutput_usd_per_million_tokens = 10.0\n"
        )
    } else {
        String::new()
    };
    let cloud_toml = format!("{cloud_toml}{remote_table}");
    let cloud: Config =
        Config::try_from(toml::from_str::<RawConfig>(&cloud_toml).context("demo cloud config")?)?;
    let agent_http = free_port()?;
    let agent_toml = format!(
        r#"
device_id = "demo-line1-pc"
facility = "yangjiang"
data_dir = {agent_dir:?}
[sync]
endpoint = "http://{api}"
api_key = "{device_key}"
backoff_max_secs = 5
[http]
listen = "127.0.0.1:{agent_http}"
[[camera]]
name = "grinding-cam"
line = "l1"
station = "grinding"
sku = "WK-KN-200"
source = {{ type = "synthetic", seed = 1, defect_rate = 0.2 }}
trigger = {{ type = "interval", interval_ms = {ms} }}
[[camera]]
name = "polish-cam"
line = "l1"
station = "polish"
sku = "WK-PR-090"
source = {{ type = "synthetic", seed = 2, defect_rate = 0.2 }}
trigger = {{ type = "interval", interval_ms = {ms} }}
"#,
        agent_dir = data_dir.join("agent").display().to_string(),
        ms = args.interval_ms,
    );
    let agent = wiko_agent::config::Config::try_from(
        toml::from_str::<wiko_agent::config::RawConfig>(&agent_toml)
            .context("demo agent config")?,
    )?;

    println!("Wiko Defect Analyzer demo");
    println!(
        "  API:           http://{api}  (try: curl -H 'X-API-Key: {viewer_key}' http://{api}/api/v1/analyses?limit=5)"
    );
    println!("  viewer key:    {viewer_key}");
    println!("  device key:    {device_key}");
    println!("  admin key:     {admin_key}");
    println!("  agent health:  http://127.0.0.1:{agent_http}/healthz");
    println!("  data:          {}", data_dir.display());
    println!(
        "  Each SKU is calibrated first: {GOLDEN_PARTS} good parts uploaded to POST /api/v1/skus/{{sku}}/golden."
    );

    let stop = CancellationToken::new();
    let cloud_stop = stop.clone();
    let cloud_task = tokio::spawn(wiko_cloud::serve(cloud, listener, async move {
        cloud_stop.cancelled().await
    }));
    if let Err(e) = calibrate(api, &admin_key).await {
        stop.cancel();
        let _ = cloud_task.await;
        return Err(e.context("calibrating the demo SKUs"));
    }
    // The embedded broker wrote its accounts at start; subscribers log in as `subscriber`.
    let login = subscriber_login(&data_dir.join("cloud").join("mqtt-credentials.json"))?;
    println!(
        "  MQTT:          mosquitto_sub -h 127.0.0.1 -p {mqtt_port} -u {} -P {} -t 'wiko/+/+/+/alert' -v",
        login.0, login.1
    );
    // The agent stops first, so no upload is cut off by the cloud stopping under it.
    let agent_stop = CancellationToken::new();
    let agent_stopped = agent_stop.clone();
    let agent_task = tokio::spawn(wiko_agent::run(agent, async move {
        agent_stopped.cancelled().await
    }));
    let summary_stop = stop.clone();
    let summary = tokio::spawn(summarize(mqtt_port, login, agent_http, summary_stop));
    if args.remote_fake {
        println!(
            "  Remote:        a fake vision model describes NG and uncertain parts in 1 to 3 s (cost: curl -H 'X-API-Key: {viewer_key}' http://{api}/api/v1/costs)"
        );
    }

    let deadline = async {
        match args.duration_secs {
            Some(s) => tokio::time::sleep(Duration::from_secs(s)).await,
            None => std::future::pending().await,
        }
    };
    tokio::select! {
        _ = shutdown => {}
        _ = deadline => {}
    }
    println!("stopping…");
    agent_stop.cancel();
    let _ = agent_task.await;
    stop.cancel();
    let _ = cloud_task.await;
    let _ = summary.await;
    Ok(())
}

/// The embedded broker's subscriber account (user, password), as the cloud wrote it.
fn subscriber_login(path: &std::path::Path) -> anyhow::Result<(String, String)> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let accounts: serde_json::Value = serde_json::from_str(&text)?;
    let field = |k: &str| {
        accounts["subscriber"][k]
            .as_str()
            .unwrap_or_default()
            .to_string()
    };
    Ok((field("username"), field("password")))
}

/// Tallies the MQTT messages and prints a line every 5 s.
async fn summarize(
    mqtt_port: u16,
    login: (String, String),
    agent_http: u16,
    stop: CancellationToken,
) {
    let mut opts = MqttOptions::new("wiko-demo-summary", "127.0.0.1", mqtt_port);
    opts.set_credentials(login.0, login.1);
    opts.set_keep_alive(Duration::from_secs(30));
    opts.set_max_packet_size(256 * 1024, 256 * 1024);
    let (client, mut events) = AsyncClient::new(opts, 64);
    let mut parts: BTreeMap<String, u64> = BTreeMap::new();
    let mut ng_by_type: BTreeMap<String, u64> = BTreeMap::new();
    let mut alerts = 0u64;
    let mut uncalibrated = 0u64;
    // Results a remote model described (the `--remote-fake` run), and its latest description.
    let mut described = 0u64;
    let mut last_description = String::new();
    // The agent's backlog as it last answered (it answers within a second of its start, long
    // before the first line).
    let mut last_backlog = "(agent not answering yet)".to_string();
    // The first line after 5 s, once the agent has answered its first health check.
    let period = Duration::from_secs(5);
    let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
    let http = reqwest::Client::new();
    loop {
        tokio::select! {
            biased;
            _ = stop.cancelled() => return,
            event = events.poll() => match event {
                Ok(Event::Incoming(Packet::ConnAck(_))) => {
                    let _ = client.subscribe("wiko/#", QoS::AtLeastOnce).await;
                }
                Ok(Event::Incoming(Packet::Publish(p))) => {
                    let Ok(msg) = serde_json::from_slice::<AlertMessage>(&p.payload) else { continue };
                    if p.topic.ends_with("/alert") {
                        alerts += 1;
                        for d in &msg.defects {
                            *ng_by_type.entry(d.kind.as_str().to_string()).or_default() += 1;
                        }
                    } else if msg.status != wiko_wire::AnalysisStatus::Provisional {
                        // A provisional result is followed by its final update: counted once.
                        *parts.entry(msg.station.clone()).or_default() += 1;
                        if msg.status == wiko_wire::AnalysisStatus::NotCalibrated {
                            uncalibrated += 1;
                        }
                        if let Some(d) = msg.defects.iter().find(|d| d.description.starts_with(fake_remote::DESCRIBED_BY)) {
                            described += 1;
                            last_description = d.description.clone();
                        }
                    }
                }
                Ok(_) => {}
                Err(_) => tokio::time::sleep(Duration::from_millis(500)).await,
            },
            _ = tick.tick() => {
                if let Some(now) = backlog(&http, agent_http).await {
                    last_backlog = now;
                }
                let total: u64 = parts.values().sum();
                println!(
                    "parts {total} {parts:?} | not calibrated {uncalibrated} | NG alerts {alerts} by type {ng_by_type:?} | backlog per camera {last_backlog}"
                );
                if described > 0 {
                    println!("  remote descriptions {described}, latest: {last_description}");
                }
            }
        }
    }
}

/// The agent's unsynced frames per camera, from its `/healthz`.
async fn backlog(http: &reqwest::Client, agent_http: u16) -> Option<String> {
    let health: wiko_wire::AgentHealth = http
        .get(format!("http://127.0.0.1:{agent_http}/healthz"))
        .timeout(Duration::from_secs(2))
        .send()
        .await
        .ok()?
        .json()
        .await
        .ok()?;
    Some(format!("{:?}", health.buffer.by_camera))
}

/// The demo's data directory: the given one, or a temporary one removed at exit.
struct DataDir {
    path: PathBuf,
    _temp: Option<tempfile::TempDir>,
}

fn tempfile_dir(given: Option<PathBuf>) -> anyhow::Result<DataDir> {
    match given {
        Some(path) => Ok(DataDir { path, _temp: None }),
        None => {
            let t = tempfile::Builder::new().prefix("wiko-demo-").tempdir()?;
            Ok(DataDir {
                path: t.path().to_path_buf(),
                _temp: Some(t),
            })
        }
    }
}
