use std::collections::HashMap;
use std::time::Duration;

use wiko_e2e::{Agent, Camera, Cloud, free_port, wait_until};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hundred_parts_arrive_once_with_one_result_each_and_one_alert_per_ng_part() {
    let dir = tempfile::tempdir().unwrap();
    let cloud = Cloud::start(&dir.path().join("cloud"), free_port(), free_port())
        .await
        .unwrap();
    cloud.calibrate(dir.path()).await.unwrap();
    let sub = cloud.subscriber().await.unwrap();
    let agent_dir = dir.path().join("agent");
    let cameras = [
        Camera::synthetic("grind", "grinding", "WK-KN-200", 7, 100, 30),
        Camera::synthetic("polish", "polish", "WK-PR-090", 8, 100, 30),
    ];
    let http = free_port();
    Agent::write_config(&agent_dir, cloud.port, http, &cameras).unwrap();
    let agent = Agent::start(&agent_dir, http).await.unwrap();

    let analyses = wait_until(Duration::from_secs(180), "200 analysed parts", || async {
        let all = cloud.analyses().await.ok()?;
        (all.len() >= 200 && all.iter().all(wiko_e2e::judged_by_cloud)).then_some(all)
    })
    .await
    .unwrap_or_else(|e| {
        panic!(
            "{e}\n{}\n{}",
            agent.process.log_text(),
            cloud.process.log_text()
        )
    });
    assert_eq!(super::assert_complete(&analyses, &agent).await, 200);
    super::assert_contiguous(&analyses);

    let mut per_station: HashMap<(String, String), usize> = HashMap::new();
    for a in &analyses {
        assert_eq!(a["facility"], "yangjiang");
        assert_eq!(a["line"], "l1");
        assert_eq!(a["device_id"], "e2e-pc1");
        assert_eq!(
            (&a["status"], &a["model_version"]),
            (&"final".into(), &"v1".into()),
            "judged by the golden model: {a}"
        );
        let key = (
            a["station"].as_str().unwrap().to_string(),
            a["product_sku"].as_str().unwrap().to_string(),
        );
        *per_station.entry(key).or_default() += 1;
    }
    assert_eq!(
        per_station[&("grinding".to_string(), "WK-KN-200".to_string())],
        100
    );
    assert_eq!(
        per_station[&("polish".to_string(), "WK-PR-090".to_string())],
        100
    );

    let ng: Vec<&str> = analyses
        .iter()
        .filter(|a| a["defect_detected"] == true)
        .map(|a| a["id"].as_str().unwrap())
        .collect();
    assert!(
        !ng.is_empty(),
        "the synthetic stream has defects; some part must be NG"
    );
    wait_until(Duration::from_secs(30), "every MQTT message", || async {
        (sub.by_leaf("result").len() >= 200 && sub.by_leaf("alert").len() >= ng.len()).then_some(())
    })
    .await
    .unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await; // a duplicate would arrive by now
    let results = sub.by_leaf("result");
    let alerts = sub.by_leaf("alert");
    assert_eq!(results.len(), 200);
    assert!(
        results.values().all(|(n, _)| *n == 1),
        "a result was published twice"
    );
    for a in &analyses {
        let (_, msg) = &results[a["id"].as_str().unwrap()];
        assert_eq!(msg["schema_version"], 1);
        assert_eq!(msg["station"], a["station"]);
        assert!(msg["image_url"].as_str().unwrap().ends_with("/image"));
    }
    assert_eq!(alerts.len(), ng.len(), "one alert per NG part");
    assert!(
        alerts.values().all(|(n, _)| *n == 1),
        "an alert was published twice"
    );
    for id in &ng {
        assert!(alerts.contains_key(*id), "no alert for NG part {id}");
    }
}
