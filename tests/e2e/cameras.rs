//! Real cameras behind the agent's `Source` boundary, each triggered as a line would trigger
//! it: an IP camera's snapshot URL (a local HTTP server with basic auth), an RTSP stream
//! (GStreamer's RTSP server, feature `camera-tests`), a GigE Vision camera (Aravis's fake
//! camera over the real protocol on loopback, feature `genicam-tests`) and MQTT triggers
//! (Mosquitto, feature `mosquitto-tests`). Each camera is taken away mid-run: the agent
//! reports it, keeps its other camera capturing, reopens it when it is back, and frames resume.

use std::collections::BTreeSet;
use std::time::Duration;

use serde_json::{Value, json};
use wiko_e2e::{Agent, Camera, Cloud, SnapshotServer, Source, free_port, knife_jpeg, wait_until};
use wiko_wire::{CameraStatus, TriggerOutcome};

/// A synthetic camera capturing every 200 ms throughout: the camera that must not be disturbed.
fn steady() -> Camera {
    Camera {
        name: "steady",
        station: "steady",
        sku: "WK-KN-200",
        source: Source::Toml(
            "source = { type = \"synthetic\", seed = 3 }\ntrigger = { type = \"interval\", interval_ms = 200 }"
                .into(),
        ),
    }
}

/// A camera of `source` (TOML inline table) with an HTTP trigger and short deadlines.
fn triggered(name: &'static str, source: String, stall_timeout_ms: u64) -> Camera {
    Camera {
        name,
        station: name,
        sku: "WK-KN-200",
        source: Source::Toml(format!(
            "source = {source}\ntrigger = {{ type = \"http\" }}\nstall_timeout_ms = {stall_timeout_ms}\nreopen_initial_ms = 100\nreopen_max_secs = 1"
        )),
    }
}

async fn status_of(agent: &Agent, camera: &str) -> Option<CameraStatus> {
    Some(agent.camera(camera).await?.status)
}

/// Triggers `part` on `camera` and expects it captured.
async fn capture(agent: &Agent, camera: &str, part: &str) {
    let (code, ack) = agent
        .trigger(
            camera,
            &json!({ "part_id": part, "lot": "L1", "request_id": part }),
        )
        .await
        .unwrap();
    assert_eq!(
        (code, ack.outcome),
        (200, TriggerOutcome::Captured),
        "{ack:?}\n{}",
        agent.process.log_text()
    );
    assert!(ack.frame_id.is_some());
    assert_eq!(ack.request_id.as_deref(), Some(part));
}

/// The camera is lost: reported (not ok, errors counted), triggers answered `camera_failed`,
/// while `steady` keeps capturing. Returns the errors counted so far.
async fn lost(agent: &Agent, camera: &str) -> u64 {
    let before = agent.camera("steady").await.unwrap().frames_total;
    let health = wait_until(
        Duration::from_secs(60),
        "the camera reported down",
        || async {
            let h = agent.camera(camera).await?;
            (h.status != CameraStatus::Ok && h.errors_total > 0).then_some(h)
        },
    )
    .await
    .unwrap_or_else(|e| panic!("{e}\n{}", agent.process.log_text()));
    assert!(health.last_error.is_some(), "{health:?}");
    let (code, ack) = agent.trigger(camera, &json!({})).await.unwrap();
    assert_eq!(
        (code, ack.outcome),
        (503, TriggerOutcome::CameraFailed),
        "{ack:?}"
    );
    wait_until(
        Duration::from_secs(30),
        "the other camera capturing meanwhile",
        || async { (agent.camera("steady").await?.frames_total >= before + 5).then_some(()) },
    )
    .await
    .unwrap();
    assert_eq!(agent.camera("steady").await.unwrap().errors_total, 0);
    health.errors_total
}

/// The camera is back: reopened (counted) and ok.
async fn back(agent: &Agent, camera: &str) {
    wait_until(Duration::from_secs(60), "the camera reopened", || async {
        let h = agent.camera(camera).await?;
        (h.status == CameraStatus::Ok && h.reopens_total >= 1).then_some(())
    })
    .await
    .unwrap_or_else(|e| panic!("{e}\n{}", agent.process.log_text()));
}

/// The cloud's analyses of `station`, once there are `n`: their part ids, and the size of
/// their images.
async fn arrived(
    cloud: &Cloud,
    station: &str,
    n: usize,
) -> (BTreeSet<String>, BTreeSet<(u64, u64)>) {
    let mine = wait_until(
        Duration::from_secs(90),
        "the frames in the cloud",
        || async {
            let mine: Vec<Value> = cloud
                .analyses()
                .await
                .ok()?
                .into_iter()
                .filter(|a| a["station"] == station)
                .collect();
            (mine.len() >= n).then_some(mine)
        },
    )
    .await
    .unwrap();
    assert_eq!(mine.len(), n, "one frame per trigger");
    assert!(mine.iter().all(|a| a["lot"] == "L1"));
    let parts = mine
        .iter()
        .filter_map(|a| a["part_id"].as_str().map(str::to_string))
        .collect();
    let sizes = mine
        .iter()
        .map(|a| {
            (
                a["image_width"].as_u64().unwrap_or(0),
                a["image_height"].as_u64().unwrap_or(0),
            )
        })
        .collect();
    (parts, sizes)
}

fn parts(names: &[&str]) -> BTreeSet<String> {
    names.iter().map(|s| s.to_string()).collect()
}

/// A knife photo as an IP camera would serve it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_http_snapshot_camera_serves_each_trigger_and_is_reopened_after_its_outage() {
    let dir = tempfile::tempdir().unwrap();
    let cloud = Cloud::start(&dir.path().join("cloud"), free_port(), free_port())
        .await
        .unwrap();
    let snap = SnapshotServer::start(knife_jpeg(dir.path(), false).unwrap())
        .await
        .unwrap();
    let agent_dir = dir.path().join("agent");
    let http = free_port();
    let source = format!(
        "{{ type = \"http_snapshot\", url = \"{}\", username = \"wiko\", password = \"secret\" }}",
        snap.url()
    );
    let cams = [triggered("snap", source, 2000), steady()];
    Agent::write_config(&agent_dir, cloud.port, http, &cams).unwrap();
    let agent = Agent::start(&agent_dir, http).await.unwrap();
    wait_until(
        Duration::from_secs(30),
        "the snapshot camera open",
        || async { (status_of(&agent, "snap").await? == CameraStatus::Ok).then_some(()) },
    )
    .await
    .unwrap();

    for part in ["P1", "P2", "P3"] {
        capture(&agent, "snap", part).await;
    }
    snap.set_up(false);
    lost(&agent, "snap").await;
    snap.set_up(true);
    back(&agent, "snap").await;
    capture(&agent, "snap", "P4").await;

    let (got, sizes) = arrived(&cloud, "snap", 4).await;
    assert_eq!(got, parts(&["P1", "P2", "P3", "P4"]));
    assert_eq!(sizes.len(), 1, "the same picture each time: {sizes:?}");
    let h = agent.camera("snap").await.unwrap();
    assert_eq!(h.frames_total, 4);
    assert_eq!(h.triggers_missed_total, 1, "{h:?}");
}

/// A wrong password is a failed camera, reported, not a crash.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_snapshot_camera_with_the_wrong_password_is_reported_failed() {
    let dir = tempfile::tempdir().unwrap();
    let cloud = Cloud::start(&dir.path().join("cloud"), free_port(), free_port())
        .await
        .unwrap();
    let snap = SnapshotServer::start(knife_jpeg(dir.path(), false).unwrap())
        .await
        .unwrap();
    let agent_dir = dir.path().join("agent");
    let http = free_port();
    let source = format!(
        "{{ type = \"http_snapshot\", url = \"{}\", username = \"wiko\", password = \"wrong\" }}",
        snap.url()
    );
    Agent::write_config(
        &agent_dir,
        cloud.port,
        http,
        &[triggered("snap", source, 2000)],
    )
    .unwrap();
    let agent = Agent::start(&agent_dir, http).await.unwrap();
    let h = wait_until(
        Duration::from_secs(30),
        "the camera reported failed",
        || async {
            let h = agent.camera("snap").await?;
            (h.status == CameraStatus::Failed && h.errors_total >= 2).then_some(h)
        },
    )
    .await
    .unwrap();
    assert!(h.last_error.unwrap().contains("401"));
    assert_eq!(h.frames_total, 0);
}

#[cfg(feature = "camera-tests")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_rtsp_camera_serves_each_trigger_and_is_reopened_after_its_server_restarts() {
    let dir = tempfile::tempdir().unwrap();
    let cloud = Cloud::start(&dir.path().join("cloud"), free_port(), free_port())
        .await
        .unwrap();
    let port = free_port();
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/rtsp_server.py");
    let python =
        std::env::var("WIKOTEST_RTSP_PYTHON").unwrap_or_else(|_| "/usr/bin/python3".into());
    let start_server = || {
        wiko_e2e::Process::program(
            std::path::Path::new(&python),
            &[script.to_str().unwrap(), &port.to_string()],
            dir.path().join("rtsp.log"),
        )
        .unwrap()
    };
    let mut server = start_server();
    let agent_dir = dir.path().join("agent");
    let http = free_port();
    let source = format!("{{ type = \"rtsp\", url = \"rtsp://127.0.0.1:{port}/cam\" }}");
    // Deadlines for a loaded 2-core machine: ffmpeg takes seconds to show the first frame.
    let cams = [triggered("gate", source, 10_000), steady()];
    Agent::write_config(&agent_dir, cloud.port, http, &cams).unwrap();
    let agent = Agent::start(&agent_dir, http).await.unwrap();
    wait_until(Duration::from_secs(60), "the RTSP camera open", || async {
        (status_of(&agent, "gate").await? == CameraStatus::Ok).then_some(())
    })
    .await
    .unwrap_or_else(|e| panic!("{e}\n{}", agent.process.log_text()));

    capture(&agent, "gate", "R1").await;
    capture(&agent, "gate", "R2").await;
    server.kill();
    lost(&agent, "gate").await;
    server = start_server();
    back(&agent, "gate").await;
    capture(&agent, "gate", "R3").await;

    let (got, sizes) = arrived(&cloud, "gate", 3).await;
    assert_eq!(got, parts(&["R1", "R2", "R3"]));
    assert_eq!(sizes, [(640, 480)].into_iter().collect());
    drop(server);
}

#[cfg(feature = "genicam-tests")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gige_vision_camera_serves_each_trigger_and_is_reopened_after_it_comes_back() {
    let dir = tempfile::tempdir().unwrap();
    let cloud = Cloud::start(&dir.path().join("cloud"), free_port(), free_port())
        .await
        .unwrap();
    // Aravis's fake GigE Vision camera: the real GVCP/GVSP protocol over UDP on loopback. Its
    // control port (3956) is fixed: one such test at a time on a machine.
    let address = "127.0.0.1";
    let fake = std::env::var("WIKOTEST_ARV_FAKE_GV_CAMERA")
        .unwrap_or_else(|_| "arv-fake-gv-camera-0.8".into());
    let camera_log = dir.path().join("camera.log");
    // Its control and device messages (not the per-packet ones), printed if the test fails.
    let _log = PrintedOnFailure("the fake camera", camera_log.clone());
    let start_camera = || {
        wiko_e2e::Process::program(
            std::path::Path::new(&fake),
            &["-i", address, "-d", "device:3,cp:3,stream:3,misc:3"],
            camera_log.clone(),
        )
        .unwrap()
    };
    let mut camera = start_camera();
    let agent_dir = dir.path().join("agent");
    let http = free_port();
    let source =
        format!("{{ type = \"genicam\", device = \"{address}\", pixel_format = \"Mono8\" }}");
    let cams = [triggered("gige", source, 3000), steady()];
    Agent::write_config(&agent_dir, cloud.port, http, &cams).unwrap();
    let agent = Agent::start(&agent_dir, http).await.unwrap();
    wait_until(
        Duration::from_secs(60),
        "the GigE Vision camera open",
        || async { (status_of(&agent, "gige").await? == CameraStatus::Ok).then_some(()) },
    )
    .await
    .unwrap_or_else(|e| panic!("{e}\n{}", agent.process.log_text()));

    capture(&agent, "gige", "G1").await;
    capture(&agent, "gige", "G2").await;
    camera.kill();
    lost(&agent, "gige").await;
    camera = start_camera();
    back(&agent, "gige").await;
    capture(&agent, "gige", "G3").await;

    let (got, sizes) = arrived(&cloud, "gige", 3).await;
    assert_eq!(got, parts(&["G1", "G2", "G3"]));
    assert_eq!(sizes.len(), 1, "{sizes:?}");
    drop(camera);
}

/// A log file printed when the test fails (dropped while its panic unwinds).
#[cfg(feature = "genicam-tests")]
struct PrintedOnFailure(&'static str, std::path::PathBuf);

#[cfg(feature = "genicam-tests")]
impl Drop for PrintedOnFailure {
    fn drop(&mut self) {
        if std::thread::panicking() {
            let text = std::fs::read_to_string(&self.1).unwrap_or_default();
            eprintln!("--- {} ({}) ---\n{text}", self.0, self.1.display());
        }
    }
}

/// MQTT triggers through Mosquitto: every trigger gets exactly one answer on `…/trigger/ack`;
/// each `captured` answer is one frame in the cloud with the trigger's part id, and the
/// `busy` answers are exactly the agent's missed triggers.
#[cfg(feature = "mosquitto-tests")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mqtt_triggers_are_each_answered_once_and_captured_parts_reach_the_cloud() {
    use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};

    let dir = tempfile::tempdir().unwrap();
    let cloud = Cloud::start(&dir.path().join("cloud"), free_port(), free_port())
        .await
        .unwrap();
    // A station of its own: the machine's Mosquitto is shared.
    let station: &'static str = Box::leak(
        format!("mq{}", &uuid::Uuid::new_v4().simple().to_string()[..8]).into_boxed_str(),
    );
    let agent_dir = dir.path().join("agent");
    let http = free_port();
    let cam = Camera {
        name: "mq",
        station,
        sku: "WK-KN-200",
        source: Source::Toml(
            "source = { type = \"synthetic\", seed = 5 }\ntrigger = { type = \"mqtt\" }".into(),
        ),
    };
    let config = Agent::write_config(&agent_dir, cloud.port, http, &[cam]).unwrap();
    let mut text = std::fs::read_to_string(&config).unwrap();
    text = text.replace(
        "[http]",
        "[mqtt]\nhost = \"127.0.0.1\"\nport = 1883\n[http]",
    );
    std::fs::write(&config, text).unwrap();
    let agent = Agent::start(&agent_dir, http).await.unwrap();

    let topic = format!("wiko/yangjiang/l1/{station}/trigger");
    let mut options = MqttOptions::new(format!("e2e-{station}"), "127.0.0.1", 1883);
    options.set_keep_alive(Duration::from_secs(10));
    let (client, mut events) = AsyncClient::new(options, 64);
    client
        .subscribe(format!("{topic}/ack"), QoS::AtLeastOnce)
        .await
        .unwrap();
    let (acks_tx, mut acks) = tokio::sync::mpsc::unbounded_channel();
    let pump = tokio::spawn(async move {
        while let Ok(event) = events.poll().await {
            if let Event::Incoming(Packet::Publish(p)) = event {
                let ack: wiko_wire::TriggerAck = serde_json::from_slice(&p.payload).unwrap();
                let _ = acks_tx.send(ack);
            }
        }
    });
    // The agent subscribes once the camera is open and the broker connected: probe until a
    // probe is answered, and count the probes it captured.
    let mut probes_captured = 0;
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while probes_captured == 0 {
        assert!(std::time::Instant::now() < deadline, "no answer to a probe");
        client
            .publish(&topic, QoS::AtLeastOnce, false, r#"{"request_id":"probe"}"#)
            .await
            .unwrap();
        if let Ok(Some(ack)) = tokio::time::timeout(Duration::from_millis(500), acks.recv()).await {
            probes_captured += usize::from(ack.outcome == TriggerOutcome::Captured);
        }
    }
    tokio::time::sleep(Duration::from_millis(1500)).await;
    while let Ok(ack) = acks.try_recv() {
        probes_captured += usize::from(ack.outcome == TriggerOutcome::Captured);
    }
    let missed_before = agent.camera("mq").await.unwrap().triggers_missed_total;

    // Ten triggers in two bursts of five: some find the station busy.
    let mut sent = Vec::new();
    for burst in 0..2 {
        for i in 0..5 {
            let id = format!("T{burst}{i}");
            let body = json!({ "request_id": id, "part_id": id, "lot": "L1" }).to_string();
            client
                .publish(&topic, QoS::AtLeastOnce, false, body)
                .await
                .unwrap();
            sent.push(id);
        }
        tokio::time::sleep(Duration::from_millis(1500)).await;
    }
    let mut answers = Vec::new();
    while answers.len() < sent.len() {
        let ack = tokio::time::timeout(Duration::from_secs(30), acks.recv())
            .await
            .expect("an answer to every trigger")
            .unwrap();
        answers.push(ack);
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(acks.try_recv().is_err(), "one answer per trigger");
    let answered: BTreeSet<String> = answers
        .iter()
        .filter_map(|a| a.request_id.clone())
        .collect();
    assert_eq!(answered, sent.iter().cloned().collect());
    let captured: BTreeSet<String> = answers
        .iter()
        .filter(|a| a.outcome == TriggerOutcome::Captured)
        .filter_map(|a| a.request_id.clone())
        .collect();
    let busy = answers
        .iter()
        .filter(|a| a.outcome == TriggerOutcome::Busy)
        .count();
    assert_eq!(captured.len() + busy, sent.len(), "{answers:?}");
    assert!(!captured.is_empty());
    let health = agent.camera("mq").await.unwrap();
    assert_eq!(health.triggers_missed_total - missed_before, busy as u64);
    // The probes captured are frames too, without a part id.
    let (got, _) = arrived_with_probe(&cloud, station, captured.len() + probes_captured).await;
    assert_eq!(got, captured);
    pump.abort();
}

/// As [`arrived`], for a station whose first frames (the probes) have no lot: the part ids
/// of the frames with one.
#[cfg(feature = "mosquitto-tests")]
async fn arrived_with_probe(cloud: &Cloud, station: &str, n: usize) -> (BTreeSet<String>, usize) {
    let mine = wait_until(
        Duration::from_secs(90),
        "the frames in the cloud",
        || async {
            let mine: Vec<Value> = cloud
                .analyses()
                .await
                .ok()?
                .into_iter()
                .filter(|a| a["station"] == station)
                .collect();
            (mine.len() >= n).then_some(mine)
        },
    )
    .await
    .unwrap();
    assert_eq!(mine.len(), n, "one frame per captured trigger");
    // The triggers' frames carry their lot; the probes' carry the synthetic camera's own ids.
    let parts = mine
        .iter()
        .filter(|a| a["lot"] == "L1")
        .filter_map(|a| a["part_id"].as_str().map(str::to_string))
        .collect();
    (parts, mine.len())
}
