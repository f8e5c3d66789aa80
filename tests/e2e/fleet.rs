//! The fleet view: an agent's heartbeats reach the cloud, a frame the cloud refused shows up
//! there as a dead letter, an admin's requeue travels back with the next heartbeat's answer and
//! the frame goes up again once the cloud accepts it, and a stopped agent turns silent; of two
//! agents, the one whose camera stalls is `camera_failed`, the other `ok`.

use std::time::Duration;

use serde_json::Value;
use wiko_e2e::{
    ADMIN_KEY, Agent, Camera, Cloud, DEVICE_KEY, Setup, SnapshotServer, Source, VIEWER_KEY, bin,
    free_port, wait_until,
};

/// One synthetic WK-KN-200 part made by `wiko-agent synth` under `dir`: its path.
fn synth_image(dir: &std::path::Path) -> std::path::PathBuf {
    let out = dir.join("images");
    let status = std::process::Command::new(bin("wiko-agent"))
        .args(["synth", "--out", out.to_str().unwrap(), "--count", "1"])
        .status()
        .unwrap();
    assert!(status.success());
    out.join("images/WK-KN-200_00000.jpg")
}

async fn device(cloud: &Cloud) -> Option<Value> {
    device_named(cloud, "e2e-pc1").await
}

async fn device_named(cloud: &Cloud, id: &str) -> Option<Value> {
    let r = reqwest::Client::new()
        .get(format!("{}/api/v1/devices/{id}", cloud.url()))
        .header("X-API-Key", VIEWER_KEY)
        .send()
        .await
        .ok()?;
    r.status().is_success().then_some(())?;
    r.json().await.ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_letter_is_seen_in_the_fleet_view_and_requeued_from_the_cloud() {
    let dir = tempfile::tempdir().unwrap();
    let (port, mqtt) = (free_port(), free_port());
    let cloud_dir = dir.path().join("cloud");
    // First a cloud that refuses every image as too large: the frame is dead-lettered.
    let strict = Setup {
        top: "max_image_pixels = 1000".into(),
        ..Setup::default()
    };
    let mut cloud = Cloud::start_with(&cloud_dir, port, mqtt, &strict)
        .await
        .unwrap();

    let drop_dir = dir.path().join("drop");
    std::fs::create_dir_all(&drop_dir).unwrap();
    let images = synth_image(dir.path());
    let agent_dir = dir.path().join("agent");
    let http = free_port();
    let cam = Camera {
        name: "drop",
        station: "assembly",
        sku: "WK-KN-200",
        source: Source::Folder(drop_dir.clone()),
    };
    Agent::write_config(&agent_dir, cloud.port, http, &[cam]).unwrap();
    let mut agent = Agent::start(&agent_dir, http).await.unwrap();
    std::fs::copy(&images, drop_dir.join("part-1.jpg")).unwrap();

    let seen = wait_until(
        Duration::from_secs(30),
        "the dead letter in the fleet view",
        || async {
            let d = device(&cloud).await?;
            (d["heartbeat"]["buffer"]["dead_letters"] == 1).then_some(d)
        },
    )
    .await
    .unwrap_or_else(|e| panic!("{e}\n{}", agent.process.log_text()));
    assert_eq!(seen["state"], "ok", "{seen}");
    assert_eq!(seen["facility"], "yangjiang");
    assert_eq!(seen["station"], "assembly");
    assert_eq!(seen["heartbeat"]["interval_seconds"], 1);
    assert!(seen["heartbeat"]["disk_free_bytes"].as_u64().unwrap() > 0);
    let letter = &seen["heartbeat"]["dead_letters"][0];
    assert_eq!(letter["status"], 422, "{letter}");
    assert!(
        letter["reason"]
            .as_str()
            .unwrap()
            .contains("over the limit"),
        "{letter}"
    );
    let frame_id = letter["frame_id"].as_str().unwrap().to_string();
    assert!(cloud.analyses().await.unwrap().is_empty());

    // The operator raises the limit (a restart with the default), then requeues the frame.
    cloud.process.terminate().unwrap();
    let mut cloud = Cloud::start_with(&cloud_dir, port, mqtt, &Setup::default())
        .await
        .unwrap();
    let http_client = reqwest::Client::new();
    let requeue = format!(
        "{}/api/v1/devices/e2e-pc1/dead-letters/{frame_id}/requeue",
        cloud.url()
    );
    let refused = http_client
        .post(&requeue)
        .header("X-API-Key", VIEWER_KEY)
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 403, "only an admin requeues");
    let asked = http_client
        .post(&requeue)
        .header("X-API-Key", ADMIN_KEY)
        .send()
        .await
        .unwrap();
    assert_eq!(asked.status(), 202);

    let analyses = wait_until(
        Duration::from_secs(30),
        "the requeued part analysed",
        || async {
            let all = cloud.analyses().await.ok()?;
            (all.len() == 1).then_some(all)
        },
    )
    .await
    .unwrap_or_else(|e| panic!("{e}\n{}", agent.process.log_text()));
    assert_eq!(analyses[0]["frame_id"], frame_id.as_str());
    assert_eq!(analyses[0]["part_id"], "part-1");
    let settled = wait_until(
        Duration::from_secs(30),
        "the command reported done",
        || async {
            let d = device(&cloud).await?;
            let done = d["pending_commands"].as_array()?.is_empty()
                && d["heartbeat"]["buffer"]["dead_letters"] == 0
                && d["heartbeat"]["buffer"]["frames"] == 0;
            done.then_some(d)
        },
    )
    .await
    .unwrap();
    assert_eq!(settled["state"], "ok");

    // A stopped agent turns silent after three missed heartbeats.
    agent.process.terminate().unwrap();
    wait_until(Duration::from_secs(15), "the device silent", || async {
        (device(&cloud).await?["state"] == "silent").then_some(())
    })
    .await
    .unwrap();
    let list: Vec<Value> = http_client
        .get(format!("{}/api/v1/devices", cloud.url()))
        .header("X-API-Key", VIEWER_KEY)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(list.len(), 1);
    assert_eq!(list[0]["device_id"], "e2e-pc1");
    cloud.process.terminate().unwrap();
}

/// Two agents report; one's camera stalls (its snapshot server stops answering): the fleet view
/// shows that device `camera_failed` and the other `ok`, and the first `ok` again once its
/// camera is back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn of_two_agents_the_one_whose_camera_stalls_is_camera_failed_and_the_other_ok() {
    let dir = tempfile::tempdir().unwrap();
    let cloud = Cloud::start(&dir.path().join("cloud"), free_port(), free_port())
        .await
        .unwrap();
    let images = synth_image(dir.path());
    let snap = SnapshotServer::start(std::fs::read(&images).unwrap())
        .await
        .unwrap();
    let steady = Camera {
        name: "steady",
        station: "steady",
        sku: "WK-KN-200",
        source: Source::Toml(
            "source = { type = \"synthetic\", seed = 3 }\ntrigger = { type = \"interval\", interval_ms = 500 }".into(),
        ),
    };
    let snapshot = Camera {
        name: "snap",
        station: "snap",
        sku: "WK-KN-200",
        source: Source::Toml(format!(
            "source = {{ type = \"http_snapshot\", url = \"{}\", username = \"wiko\", password = \"secret\" }}\ntrigger = {{ type = \"http\" }}\nstall_timeout_ms = 1000\nreopen_initial_ms = 100\nreopen_max_secs = 1",
            snap.url()
        )),
    };
    let mut agents = Vec::new();
    for (id, cam) in [("e2e-pc1", steady), ("e2e-pc2", snapshot)] {
        let agent_dir = dir.path().join(id);
        let http = free_port();
        Agent::write_config_as(&agent_dir, cloud.port, http, &[cam], id, DEVICE_KEY).unwrap();
        agents.push(Agent::start(&agent_dir, http).await.unwrap());
    }
    let states = || async {
        Some((
            device_named(&cloud, "e2e-pc1").await?["state"].clone(),
            device_named(&cloud, "e2e-pc2").await?["state"].clone(),
        ))
    };
    wait_until(Duration::from_secs(30), "both devices ok", || async {
        (states().await? == ("ok".into(), "ok".into())).then_some(())
    })
    .await
    .unwrap_or_else(|e| panic!("{e}\n{}", agents[1].process.log_text()));

    snap.set_up(false);
    wait_until(
        Duration::from_secs(30),
        "pc2 camera_failed, pc1 ok",
        || async { (states().await? == ("ok".into(), "camera_failed".into())).then_some(()) },
    )
    .await
    .unwrap_or_else(|e| panic!("{e}\n{}", agents[1].process.log_text()));
    let failed = device_named(&cloud, "e2e-pc2").await.unwrap();
    let camera = &failed["heartbeat"]["cameras"][0];
    assert_eq!(camera["name"], "snap", "{failed}");
    assert!(
        camera["status"] == "stalled"
            || camera["status"] == "failed"
            || camera["status"] == "reopening",
        "{failed}"
    );

    snap.set_up(true);
    wait_until(Duration::from_secs(30), "pc2 ok again", || async {
        (states().await? == ("ok".into(), "ok".into())).then_some(())
    })
    .await
    .unwrap();
}
