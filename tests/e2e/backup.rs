use std::collections::HashMap;
use std::process::Command;
use std::time::Duration;

use serde_json::Value;
use wiko_e2e::{Agent, Camera, Cloud, Setup, VIEWER_KEY, bin, free_port, wait_until};

/// Runs `wiko-cloud`: success, and stdout followed by stderr.
fn cli(args: &[&str]) -> (bool, String) {
    let out = Command::new(bin("wiko-cloud")).args(args).output().unwrap();
    let text =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    (out.status.success(), text)
}

async fn images(cloud: &Cloud, analyses: &[Value]) -> HashMap<String, Vec<u8>> {
    let http = reqwest::Client::new();
    let mut out = HashMap::new();
    for a in analyses {
        let id = a["id"].as_str().unwrap().to_string();
        let bytes = http
            .get(format!("{}/api/v1/analyses/{id}/image", cloud.url()))
            .header("X-API-Key", VIEWER_KEY)
            .send()
            .await
            .unwrap()
            .error_for_status()
            .unwrap()
            .bytes()
            .await
            .unwrap();
        out.insert(id, bytes.to_vec());
    }
    out
}

/// A backup taken while parts stream in, restored into a new data directory: the restored cloud
/// holds every result of the snapshot with its image byte for byte, and the SKU models.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backup_taken_while_serving_restores_every_result_and_image() {
    let dir = tempfile::tempdir().unwrap();
    let cloud_dir = dir.path().join("cloud");
    let mut cloud = Cloud::start(&cloud_dir, free_port(), free_port())
        .await
        .unwrap();
    cloud.calibrate(dir.path()).await.unwrap();
    let (agent_dir, http) = (dir.path().join("agent"), free_port());
    let cameras = [Camera::synthetic("cam", "grinding", "WK-KN-200", 5, 40, 40)];
    Agent::write_config(&agent_dir, cloud.port, http, &cameras).unwrap();
    let agent = Agent::start(&agent_dir, http).await.unwrap();
    wait_until(Duration::from_secs(60), "15 parts in", || async {
        (cloud.analyses().await.ok()?.len() >= 15).then_some(())
    })
    .await
    .unwrap();

    let config = cloud_dir.join("cloud.toml").display().to_string();
    let backup = dir.path().join("backup").display().to_string();
    let (ok, out) = cli(&["backup", "--config", &config, "--out", &backup]);
    assert!(ok, "{out}");
    let summary: Value = out
        .lines()
        .find_map(|l| serde_json::from_str(l).ok())
        .unwrap_or_else(|| panic!("no JSON summary in {out}"));
    let backed_up = summary["analyses"].as_u64().unwrap() as usize;
    assert!(backed_up >= 15, "{summary}");
    let (ok, out) = cli(&["backup", "--config", &config, "--out", &backup]);
    assert!(
        !ok && out.contains("not empty"),
        "a backup never overwrites one: {out}"
    );

    let all = wait_until(Duration::from_secs(60), "all 40 parts", || async {
        let all = cloud.analyses().await.ok()?;
        let drained = agent.health().await?.buffer.frames == 0;
        (all.len() == 40 && drained).then_some(all)
    })
    .await
    .unwrap();
    let originals = images(&cloud, &all).await;
    assert!(cloud.process.terminate().unwrap().success());

    let restored_dir = dir.path().join("restored");
    let (port, mqtt) = (free_port(), free_port());
    let restored_config =
        Cloud::write_config(&restored_dir, port, mqtt, &Setup::default()).unwrap();
    let restored_config = restored_config.display().to_string();
    let (ok, out) = cli(&["restore", "--config", &restored_config, "--from", &backup]);
    assert!(ok, "{out}");
    let (ok, out) = cli(&["restore", "--config", &restored_config, "--from", &backup]);
    assert!(
        !ok && out.contains("not empty"),
        "a restore never overwrites a store: {out}"
    );

    cloud = Cloud::start(&restored_dir, port, mqtt).await.unwrap();
    let restored = cloud.analyses().await.unwrap();
    assert_eq!(restored.len(), backed_up);
    for (id, bytes) in images(&cloud, &restored).await {
        assert_eq!(originals.get(&id), Some(&bytes), "image of {id}");
    }
    // Parts still pending in the snapshot are analysed after the restore, by the same model.
    let done = wait_until(
        Duration::from_secs(60),
        "restored parts analysed",
        || async {
            let all = cloud.analyses().await.ok()?;
            all.iter().all(wiko_e2e::judged_by_cloud).then_some(all)
        },
    )
    .await
    .unwrap();
    assert!(
        done.iter().all(|a| a["model_version"] == "v1"),
        "models restored"
    );
}
