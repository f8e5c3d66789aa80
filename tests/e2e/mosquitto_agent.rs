//! The agent's own MQTT contract, through the machine's Mosquitto: it alerts an NG part the
//! moment it judged it, with the cloud down, once (across a broker outage and a restart with
//! alerts still in its outbox), and the cloud does not alert that part again; its status is
//! retained, `online` after each connect and `offline` (its Last Will) when it is killed; a
//! model the cloud announces is pulled at once.

use std::time::Duration;

use serde_json::Value;
use wiko_e2e::proxy::Proxy;
use wiko_e2e::{Agent, Camera, Cloud, Source, Subscriber, free_port, wait_until};

/// A station name no other run uses: the broker is shared.
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

/// The agent's configuration with its `[mqtt]` broker on `broker_port` and `extra` lines.
fn write_agent(
    dir: &std::path::Path,
    cloud_port: u16,
    http: u16,
    station: &'static str,
    broker_port: u16,
    extra: &str,
) {
    write_agent_with(
        dir,
        cloud_port,
        http,
        &[camera(station)],
        broker_port,
        extra,
    );
}

/// As [`write_agent`], with these cameras (the first names the agent's station).
pub(crate) fn write_agent_with(
    dir: &std::path::Path,
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

/// Fires `n` parts over the agent's HTTP trigger, each captured.
pub(crate) async fn fire(agent: &Agent, n: usize) -> usize {
    for _ in 0..n {
        let (status, ack) = agent.trigger("cam", &serde_json::json!({})).await.unwrap();
        assert_eq!(status, 200, "{ack:?}");
    }
    n
}

/// Alerts per `result_id` on the station.
pub(crate) fn alerts(sub: &Subscriber, station: &str) -> std::collections::HashMap<String, usize> {
    let mut out = std::collections::HashMap::new();
    for v in on(sub, station, "alert") {
        *out.entry(v["result_id"].as_str().unwrap_or_default().to_string())
            .or_insert(0) += 1;
    }
    out
}

/// NG alerts the agent queued so far, from its metrics.
pub(crate) async fn queued(agent: &Agent) -> u64 {
    agent
        .metric("wiko_agent_alerts_total", "queued")
        .await
        .unwrap_or(0.0) as u64
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_agent_alerts_an_ng_part_once_with_the_cloud_down_and_the_cloud_does_not_again() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let cloud_dir = dir.path().join("cloud");
    let mut cloud = Cloud::start_external_broker(&cloud_dir, port, 1883)
        .await
        .unwrap();
    cloud.calibrate(dir.path()).await.unwrap();
    let sub = Subscriber::start(1883).await.unwrap();
    let broker = Proxy::start(vec!["127.0.0.1:1883".parse().unwrap()])
        .await
        .unwrap();
    let station = station();
    let agent_dir = dir.path().join("agent");
    let http = free_port();
    write_agent(&agent_dir, port, http, station, broker.port, "");
    let mut agent = Agent::start(&agent_dir, http).await.unwrap();
    wait_until(Duration::from_secs(20), "the agent online", || async {
        let status = on(&sub, station, "status");
        (status.last()?["state"] == "online").then_some(())
    })
    .await
    .unwrap_or_else(|e| panic!("{e}\n{}", agent.process.log_text()));
    assert!(agent.process.log_text().contains("edge model in use"));

    // The cloud stops: the agent judges and alerts on its own.
    assert!(cloud.process.terminate().unwrap().success());
    let mut triggered = fire(&agent, 10).await;
    let ng = wait_until(Duration::from_secs(20), "the agent's alerts", || async {
        let queued = queued(&agent).await;
        let got = alerts(&sub, station);
        (queued > 0 && got.len() as u64 == queued).then_some(queued)
    })
    .await
    .unwrap_or_else(|e| panic!("{e}\n{}", agent.process.log_text()));

    // The broker goes away: alerts wait in the outbox; the agent is killed with them there.
    broker.set_down(true);
    triggered += fire(&agent, 10).await;
    let queued = queued(&agent).await;
    assert!(queued > ng, "the second batch has NG parts too");
    agent.process.kill();
    assert_eq!(
        alerts(&sub, station).len() as u64,
        ng,
        "nothing went out while the broker was away"
    );
    broker.set_down(false);
    agent = Agent::start(&agent_dir, http).await.unwrap();
    wait_until(
        Duration::from_secs(20),
        "the outbox's alerts after the restart",
        || async { (alerts(&sub, station).len() as u64 == queued).then_some(()) },
    )
    .await
    .unwrap_or_else(|e| panic!("{e}\n{}", agent.process.log_text()));

    // The cloud comes back: every part gets its final result, and no NG part a second alert.
    cloud = Cloud::start_external_broker(&cloud_dir, port, 1883)
        .await
        .unwrap();
    let finals = wait_until(Duration::from_secs(60), "every part final", || async {
        let all = cloud.analyses().await.ok()?;
        (all.len() == triggered && all.iter().all(|a| a["status"] == "final")).then_some(all)
    })
    .await
    .unwrap_or_else(|e| panic!("{e}\n{}", agent.process.log_text()));
    wait_until(
        Duration::from_secs(30),
        "the cloud's result messages",
        || async {
            let results = on(&sub, station, "result");
            finals
                .iter()
                .all(|a| {
                    results
                        .iter()
                        .any(|r| r["result_id"] == a["id"] && r["status"] == "final")
                })
                .then_some(())
        },
    )
    .await
    .unwrap();
    let got = alerts(&sub, station);
    assert_eq!(got.len() as u64, queued);
    assert!(
        got.values().all(|&n| n == 1),
        "an alert came twice: {got:?}"
    );
    for a in &finals {
        let id = a["id"].as_str().unwrap();
        let edge_ng = a["verdicts"]
            .as_array()
            .unwrap()
            .iter()
            .any(|v| v["source"] == "edge" && v["defect_detected"] == true);
        assert_eq!(
            got.contains_key(id),
            edge_ng,
            "alerted by the agent under the cloud's id: {a}"
        );
        if edge_ng {
            assert_eq!(a["id"], a["frame_id"]);
        }
    }

    // Killed: the broker publishes its Last Will, retained.
    agent.process.kill();
    wait_until(Duration::from_secs(30), "the agent offline", || async {
        (on(&sub, station, "status").last()?["state"] == "offline").then_some(())
    })
    .await
    .unwrap();
    let late = Subscriber::start(1883).await.unwrap();
    wait_until(Duration::from_secs(10), "the retained status", || async {
        (on(&late, station, "status").last()?["state"] == "offline").then_some(())
    })
    .await
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_model_the_cloud_announces_is_pulled_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let cloud = Cloud::start_external_broker(&dir.path().join("cloud"), port, 1883)
        .await
        .unwrap();
    let station = station();
    let agent_dir = dir.path().join("agent");
    let http = free_port();
    // A refresh far away: only the announcement can bring the model in time.
    write_agent(
        &agent_dir,
        port,
        http,
        station,
        1883,
        "[edge]\nrefresh_secs = 3600",
    );
    let agent = Agent::start(&agent_dir, http).await.unwrap();
    let sub = Subscriber::start(1883).await.unwrap();
    wait_until(Duration::from_secs(20), "the agent online", || async {
        (on(&sub, station, "status").last()?["state"] == "online").then_some(())
    })
    .await
    .unwrap();
    assert!(!agent.process.log_text().contains("edge model in use"));
    cloud.calibrate(dir.path()).await.unwrap();
    wait_until(
        Duration::from_secs(15),
        "the announced model in use",
        || async {
            agent
                .process
                .log_text()
                .contains("edge model in use")
                .then_some(())
        },
    )
    .await
    .unwrap_or_else(|e| panic!("{e}\n{}", agent.process.log_text()));
    let (status, ack) = agent.trigger("cam", &serde_json::json!({})).await.unwrap();
    assert_eq!(status, 200, "{ack:?}");
}
