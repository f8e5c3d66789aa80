use std::time::Duration;

use wiko_e2e::{Agent, Camera, Cloud, free_port, wait_until};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn frames_captured_while_the_cloud_is_down_arrive_once_it_is_back() {
    let dir = tempfile::tempdir().unwrap();
    let (port, mqtt) = (free_port(), free_port());
    let cloud_dir = dir.path().join("cloud");
    let mut cloud = Cloud::start(&cloud_dir, port, mqtt).await.unwrap();
    let agent_dir = dir.path().join("agent");
    let cameras = [Camera::synthetic("cam", "grinding", "WK-KN-200", 3, 60, 50)];
    let http = free_port();
    Agent::write_config(&agent_dir, port, http, &cameras).unwrap();
    let agent = Agent::start(&agent_dir, http).await.unwrap();

    wait_until(
        Duration::from_secs(30),
        "some frames in the cloud",
        || async { (cloud.analyses().await.ok()?.len() >= 10).then_some(()) },
    )
    .await
    .unwrap();
    assert!(
        cloud.process.terminate().unwrap().success(),
        "the cloud exits cleanly on SIGTERM"
    );
    // The agent keeps capturing into its buffer while the uplink is down.
    let backlog = wait_until(
        Duration::from_secs(30),
        "a backlog in the agent",
        || async {
            let h = agent.health().await?;
            let frames = h.buffer.frames;
            (frames >= 10).then_some(frames)
        },
    )
    .await
    .unwrap();
    assert!(backlog >= 10);

    cloud = Cloud::start(&cloud_dir, port, mqtt).await.unwrap();
    let analyses = wait_until(Duration::from_secs(120), "all 60 frames", || async {
        let all = cloud.analyses().await.ok()?;
        let drained = agent.health().await?.buffer.frames == 0;
        (all.len() >= 60 && drained).then_some(all)
    })
    .await
    .unwrap_or_else(|e| panic!("{e}\n{}", agent.process.log_text()));
    assert_eq!(super::assert_complete(&analyses, &agent).await, 60);
    super::assert_contiguous(&analyses);
    assert!(
        agent.process.log_text().contains("backing off"),
        "the agent logged its retries"
    );
}
