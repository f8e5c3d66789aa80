//! The rig both Mosquitto scenarios of the agent (`mosquitto_agent`, `mosquitto_broker`) run
//! on: a cloud publishing to the broker, a subscriber to everything on it, and the agent
//! reaching the broker through a switch (`Proxy`: `set_down` cuts it off as a broker outage
//! looks to it), online and judging with the cloud's model; and the helpers that read what
//! arrived.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::Value;
use wiko_e2e::proxy::Proxy;
use wiko_e2e::{Agent, Camera, Cloud, Setup, Source, Subscriber, free_port, wait_until};

/// What differs between the scenarios' rigs.
#[derive(Default)]
pub(crate) struct Plan {
    /// The port the agent's switch leads to, when not the subscribers' (a TLS listener).
    pub agent_broker: Option<u16>,
    /// More top-level keys of the cloud (e.g. `public_url`).
    pub cloud_top: String,
    /// Leave the cloud without models: the agent judges nothing until one is fitted.
    pub unfitted: bool,
    /// More cameras, after the station's own (which names the agent's station).
    pub more_cameras: Vec<Camera>,
    /// More lines after the agent's `[mqtt]` keys (keys of it, or tables after it).
    pub agent_extra: String,
}

pub(crate) struct Rig {
    pub cloud: Cloud,
    /// Subscribed to `wiko/#` on the broker before the agent started.
    pub sub: Subscriber,
    /// Between the agent and its broker.
    pub switch: Proxy,
    pub agent: Agent,
    /// The agent's station (its first camera's, `cam`), of this run only.
    pub station: &'static str,
    pub agent_dir: PathBuf,
    pub http: u16,
    cloud_setup: Setup,
}

impl Rig {
    /// The rig in `dir` on the broker at `broker` (plain, for the cloud and the subscriber);
    /// returns once the agent is online (and judging, unless `plan.unfitted`).
    pub async fn start(dir: &Path, broker: u16, plan: Plan) -> Rig {
        let cloud_setup = Setup {
            external_broker: true,
            top: plan.cloud_top,
            ..Setup::default()
        };
        let cloud = Cloud::start_with(&dir.join("cloud"), free_port(), broker, &cloud_setup)
            .await
            .unwrap();
        if !plan.unfitted {
            cloud.calibrate(dir).await.unwrap();
        }
        let sub = Subscriber::start(broker).await.unwrap();
        let to = plan.agent_broker.unwrap_or(broker);
        let switch = Proxy::start(vec![format!("127.0.0.1:{to}").parse().unwrap()])
            .await
            .unwrap();
        let station = station();
        let mut cameras = vec![camera(station)];
        cameras.extend(plan.more_cameras);
        let agent_dir = dir.join("agent");
        let http = free_port();
        write_agent(
            &agent_dir,
            cloud.port,
            http,
            &cameras,
            switch.port,
            &plan.agent_extra,
        );
        let agent = Agent::start(&agent_dir, http).await.unwrap();
        status(&sub, station, "online", &agent).await;
        if !plan.unfitted {
            judging(&agent).await;
        }
        Rig {
            cloud,
            sub,
            switch,
            agent,
            station,
            agent_dir,
            http,
            cloud_setup,
        }
    }

    /// The cloud started again (after the test stopped it), on its port and data.
    pub async fn cloud_back(&mut self) {
        self.cloud = Cloud::start_with(
            &self.cloud.dir.clone(),
            self.cloud.port,
            self.cloud.mqtt_port,
            &self.cloud_setup,
        )
        .await
        .unwrap();
    }

    /// Messages on the agent's station's `leaf`.
    pub fn on(&self, leaf: &str) -> Vec<Value> {
        on(&self.sub, self.station, leaf)
    }

    /// Alerts per `result_id` on the agent's station.
    pub fn alerts(&self) -> HashMap<String, usize> {
        alerts(&self.sub, self.station)
    }
}

/// A station name no other run uses (the machine's broker is shared).
pub(crate) fn station() -> &'static str {
    Box::leak(format!("edge-{}", uuid::Uuid::new_v4().simple()).into_boxed_str())
}

/// The camera the agent's parts come from: synthetic knives, half of them with a defect,
/// triggered over HTTP.
pub(crate) fn camera(station: &'static str) -> Camera {
    Camera {
        name: "cam",
        station,
        sku: "WK-KN-200",
        source: Source::Toml(
            "source = { type = \"synthetic\", seed = 11, defect_rate = 0.5 }\ntrigger = { type = \"http\" }"
                .into(),
        ),
    }
}

/// The agent's configuration with these cameras (the first names the agent's station), its
/// `[mqtt]` broker on `broker_port` with alerts on, and `extra` lines.
pub(crate) fn write_agent(
    dir: &Path,
    cloud_port: u16,
    http: u16,
    cameras: &[Camera],
    broker_port: u16,
    extra: &str,
) {
    let path = Agent::write_config(dir, cloud_port, http, cameras).unwrap();
    let mut text = std::fs::read_to_string(&path).unwrap();
    text.push_str(&format!(
        "\n[mqtt]\nhost = \"127.0.0.1\"\nport = {broker_port}\nclient_id = \"e2e-agent-{station}\"\nkeep_alive_secs = 5\nalerts = true\n{extra}\n",
        station = cameras[0].station,
    ));
    std::fs::write(&path, text).unwrap();
}

/// Messages on `wiko/yangjiang/l1/{station}/{leaf}`.
pub(crate) fn on(sub: &Subscriber, station: &str, leaf: &str) -> Vec<Value> {
    let topic = format!("wiko/yangjiang/l1/{station}/{leaf}");
    sub.messages
        .lock()
        .unwrap()
        .iter()
        .filter(|(t, _)| *t == topic)
        .map(|(_, v)| v.clone())
        .collect()
}

/// Alerts per `result_id` on the station.
pub(crate) fn alerts(sub: &Subscriber, station: &str) -> HashMap<String, usize> {
    let mut out = HashMap::new();
    for v in on(sub, station, "alert") {
        *out.entry(v["result_id"].as_str().unwrap_or_default().to_string())
            .or_insert(0) += 1;
    }
    out
}

/// Waits for the agent's retained status to say `state` on the station.
pub(crate) async fn status(sub: &Subscriber, station: &str, state: &str, agent: &Agent) {
    wait_until(
        Duration::from_secs(30),
        &format!("the agent {state}"),
        || async { (on(sub, station, "status").last()?["state"] == state).then_some(()) },
    )
    .await
    .unwrap_or_else(|e| panic!("{e}\n{}", agent.process.log_text()));
}

/// Waits until the agent judges parts with the cloud's model.
pub(crate) async fn judging(agent: &Agent) {
    wait_until(Duration::from_secs(20), "the edge model", || async {
        agent
            .process
            .log_text()
            .contains("edge model in use")
            .then_some(())
    })
    .await
    .unwrap_or_else(|e| panic!("{e}\n{}", agent.process.log_text()));
}

/// Fires `n` parts over the agent's HTTP trigger, each captured.
pub(crate) async fn fire(agent: &Agent, n: usize) -> usize {
    for _ in 0..n {
        let (status, ack) = agent.trigger("cam", &serde_json::json!({})).await.unwrap();
        assert_eq!(status, 200, "{ack:?}");
    }
    n
}

/// Fires parts until the agent has queued at least `n` NG alerts (half the parts are painted
/// with a defect); the alerts queued.
pub(crate) async fn fire_until_queued(agent: &Agent, n: u64) -> u64 {
    for _ in 0..80 {
        if queued(agent).await >= n {
            break;
        }
        fire(agent, 1).await;
    }
    let got = queued(agent).await;
    assert!(got >= n, "{got} NG parts in 80");
    got
}

/// NG alerts the agent queued so far, from its metrics.
pub(crate) async fn queued(agent: &Agent) -> u64 {
    agent
        .metric("wiko_agent_alerts_total", "queued")
        .await
        .unwrap_or(0.0) as u64
}

/// Waits until the agent holds no alert (each acknowledged by the broker, or dropped).
pub(crate) async fn outbox_empty(agent: &Agent) {
    wait_until(Duration::from_secs(20), "the outbox empty", || async {
        (agent.health().await?.buffer.alerts_queued == 0).then_some(())
    })
    .await
    .unwrap_or_else(|e| panic!("{e}\n{}", agent.process.log_text()));
}

/// Waits until the agent has seen its connection to the broker go.
pub(crate) async fn disconnected(agent: &Agent) {
    wait_until(
        Duration::from_secs(20),
        "the agent disconnected",
        || async { (agent.metric("wiko_agent_mqtt_connected", "").await? == 0.0).then_some(()) },
    )
    .await
    .unwrap_or_else(|e| panic!("{e}\n{}", agent.process.log_text()));
}
