use std::time::Duration;

use wiko_e2e::{Agent, Camera, Cloud, Setup, free_port, wait_until};

/// The agent pulls the model the cloud fitted from golden uploads and judges every frame with
/// it before buffering; the cloud shows that verdict as the provisional result at once (its
/// workers held back: an ingest-only cloud), and its own verdict makes each result final under
/// the same id: one result per part, edge and cloud agreeing (same model, same code).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_edge_verdict_is_provisional_and_the_clouds_makes_it_final_once_per_part() {
    let dir = tempfile::tempdir().unwrap();
    let (port, mqtt) = (free_port(), free_port());
    let cloud_dir = dir.path().join("cloud");
    let ingest_only = Setup {
        extra: "[analysis]\nworkers = 0\n".into(),
        ..Setup::default()
    };
    let mut cloud = Cloud::start_with(&cloud_dir, port, mqtt, &ingest_only)
        .await
        .unwrap();
    cloud.calibrate(dir.path()).await.unwrap();
    let agent_dir = dir.path().join("agent");
    let cameras = [Camera::synthetic(
        "cam",
        "grinding",
        "WK-KN-200",
        11,
        24,
        60,
    )];
    let http = free_port();
    Agent::write_config(&agent_dir, port, http, &cameras).unwrap();
    let agent = Agent::start(&agent_dir, http).await.unwrap();

    let provisional = wait_until(
        Duration::from_secs(60),
        "24 provisional results",
        || async {
            let all = cloud.analyses().await.ok()?;
            (all.len() >= 24).then_some(all)
        },
    )
    .await
    .unwrap_or_else(|e| panic!("{e}\n{}", agent.process.log_text()));
    assert_eq!(super::assert_complete(&provisional, &agent).await, 24);
    for a in &provisional {
        assert_eq!(
            (
                &a["status"],
                &a["verdicts"][0]["source"],
                &a["verdicts"][0]["model"]
            ),
            (&"provisional".into(), &"edge".into(), &"v1".into()),
            "judged at the edge with the cloud's model: {a}"
        );
        assert_eq!(a["verdicts"].as_array().unwrap().len(), 1);
    }
    let edge_ng = provisional
        .iter()
        .filter(|a| a["defect_detected"] == true)
        .count();
    assert!(edge_ng > 0, "the synthetic stream has defects");
    assert!(
        agent.process.log_text().contains("edge model in use"),
        "{}",
        agent.process.log_text()
    );

    // Measured for BENCHMARKS.md (the test profile's binary).
    eprintln!(
        "agent peak RSS with edge analysis on, one camera: {:?} bytes",
        agent.process.peak_rss()
    );

    // The cloud's workers come back: each result turns final under its id.
    assert!(cloud.process.terminate().unwrap().success());
    cloud = Cloud::start(&cloud_dir, port, mqtt).await.unwrap();
    let finals = wait_until(Duration::from_secs(60), "24 final results", || async {
        let all = cloud.analyses().await.ok()?;
        all.iter().all(|a| a["status"] == "final").then_some(all)
    })
    .await
    .unwrap();
    assert_eq!(finals.len(), 24, "one result per part");
    for a in &finals {
        let before = provisional.iter().find(|p| p["id"] == a["id"]).unwrap();
        let sources: Vec<&str> = a["verdicts"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v["source"].as_str().unwrap())
            .collect();
        assert_eq!(sources, ["edge", "cloud"], "{a}");
        // The same model and the same code on the same image: the same verdict.
        assert_eq!(a["disagreement"], false, "{a}");
        assert_eq!(a["defect_detected"], before["defect_detected"], "{a}");
    }
    assert_eq!(
        cloud.counter("wiko_cloud_edge_disagreements_total").await,
        0.0
    );
}
