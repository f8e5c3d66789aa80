use std::time::Duration;

use wiko_e2e::{Agent, Camera, Cloud, free_port, wait_until};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_killed_mid_upload_loses_and_duplicates_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let cloud = Cloud::start(&dir.path().join("cloud"), free_port(), free_port())
        .await
        .unwrap();
    let agent_dir = dir.path().join("agent");
    let http = free_port();
    let cameras = |parts| {
        [Camera {
            name: "cam",
            station: "polish",
            sku: "WK-PR-090",
            seed: 5,
            parts,
            interval_ms: 10,
        }]
    };
    Agent::write_config(&agent_dir, cloud.port, http, &cameras(150)).unwrap();
    let mut agent = Agent::start(&agent_dir, http).await.unwrap();
    wait_until(Duration::from_secs(60), "uploads under way", || async {
        (cloud.analyses().await.ok()?.len() >= 20).then_some(())
    })
    .await
    .unwrap();
    agent.process.kill();
    let before = cloud.analyses().await.unwrap().len();
    assert!(
        before < 150,
        "the kill happened mid-run ({before} already in)"
    );

    // The restarted agent finds its buffer, uploads what is left, and captures 20 more parts.
    Agent::write_config(&agent_dir, cloud.port, http, &cameras(20)).unwrap();
    let agent = Agent::start(&agent_dir, http).await.unwrap();
    let analyses = wait_until(Duration::from_secs(120), "the buffer drained", || async {
        let h = agent.health().await?;
        let captured = agent.captured().await?;
        let all = cloud.analyses().await.ok()?;
        (captured >= 20 && h["buffer"]["frames"] == 0 && all.len() > before).then_some(all)
    })
    .await
    .unwrap_or_else(|e| panic!("{e}\n{}", agent.process.log_text()));
    super::assert_complete(&analyses, &agent).await;
    super::assert_contiguous(&analyses);
}
