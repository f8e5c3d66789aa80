use std::time::Duration;

use wiko_e2e::{Agent, Camera, Cloud, Subscriber, free_port, wait_until};

/// The machine's Mosquitto (127.0.0.1:1883) as the external broker: one result per part and one
/// alert per NG part arrive through it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn results_and_alerts_go_through_an_external_mosquitto() {
    let dir = tempfile::tempdir().unwrap();
    let cloud = Cloud::start_external_broker(&dir.path().join("cloud"), free_port(), 1883)
        .await
        .unwrap();
    cloud.calibrate(dir.path()).await.unwrap();
    let sub = Subscriber::start(1883).await.unwrap();
    let agent_dir = dir.path().join("agent");
    let http = free_port();
    // Others may publish on this broker too: only this run's result ids are counted.
    Agent::write_config(
        &agent_dir,
        cloud.port,
        http,
        &[Camera::synthetic(
            "cam",
            "grinding",
            "WK-KN-200",
            11,
            60,
            20,
        )],
    )
    .unwrap();
    let agent = Agent::start(&agent_dir, http).await.unwrap();
    let analyses = wait_until(Duration::from_secs(120), "60 analysed parts", || async {
        let all = cloud.analyses().await.ok()?;
        (all.len() >= 60 && all.iter().all(wiko_e2e::judged_by_cloud)).then_some(all)
    })
    .await
    .unwrap_or_else(|e| panic!("{e}\n{}", agent.process.log_text()));
    let ng = analyses
        .iter()
        .filter(|a| a["defect_detected"] == true)
        .count();
    assert!(ng > 0, "a fifth of the parts carry a painted defect");
    let ours = |leaf: &str| {
        sub.by_leaf(leaf)
            .into_iter()
            .filter(|(id, _)| {
                analyses
                    .iter()
                    .any(|a| a["id"].as_str() == Some(id.as_str()))
            })
            .count()
    };
    wait_until(
        Duration::from_secs(30),
        "every message through Mosquitto",
        || async { (ours("result") == 60 && ours("alert") == ng).then_some(()) },
    )
    .await
    .unwrap_or_else(|e| {
        panic!(
            "{e}: results {}, alerts {} of {ng}",
            ours("result"),
            ours("alert")
        )
    });
}

/// Mosquitto keeps a persistent subscriber's session: what the cloud published while the
/// subscriber was away, across a restart of the cloud too, reaches it when it comes back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_persistent_subscriber_gets_what_it_missed_across_a_cloud_restart() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let session = format!("e2e-persistent-{}", uuid::Uuid::new_v4().simple());
    let mut cloud = Cloud::start_external_broker(dir.path(), port, 1883)
        .await
        .unwrap();
    let sub = Subscriber::start_as(1883, None, Some(&session))
        .await
        .unwrap();
    drop(sub);
    let mut ids = Vec::new();
    for n in 0..3 {
        ids.push(super::mqtt::part(&cloud, n).await);
    }
    assert!(cloud.process.terminate().unwrap().success());
    cloud = Cloud::start_external_broker(dir.path(), port, 1883)
        .await
        .unwrap();
    for n in 3..6 {
        ids.push(super::mqtt::part(&cloud, n).await);
    }
    let sub = Subscriber::start_as(1883, None, Some(&session))
        .await
        .unwrap();
    wait_until(Duration::from_secs(30), "every result missed", || async {
        let got = sub.by_leaf("result");
        ids.iter().all(|id| got.contains_key(id)).then_some(())
    })
    .await
    .unwrap();
}
