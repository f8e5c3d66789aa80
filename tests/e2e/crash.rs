use std::time::Duration;

use wiko_e2e::{Agent, Camera, Cloud, free_port, wait_until};

fn camera(parts: u64) -> [Camera; 1] {
    [Camera::synthetic(
        "cam",
        "polish",
        "WK-PR-090",
        5,
        parts,
        10,
    )]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_stopped_or_killed_mid_upload_loses_and_duplicates_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let cloud = Cloud::start(&dir.path().join("cloud"), free_port(), free_port())
        .await
        .unwrap();
    let agent_dir = dir.path().join("agent");
    let http = free_port();
    let in_cloud = |n: usize| {
        let cloud = &cloud;
        move || async move { (cloud.analyses().await.ok()?.len() >= n).then_some(()) }
    };

    // SIGTERM: in-flight writes finish and the process exits 0.
    Agent::write_config(&agent_dir, cloud.port, http, &camera(150)).unwrap();
    let mut agent = Agent::start(&agent_dir, http).await.unwrap();
    wait_until(Duration::from_secs(60), "uploads under way", in_cloud(10))
        .await
        .unwrap();
    let status = agent.process.terminate().unwrap();
    assert!(
        status.success(),
        "SIGTERM exit: {status}\n{}",
        agent.process.log_text()
    );
    assert!(agent.process.log_text().contains("agent stopped"));

    // SIGKILL: no chance to finish anything.
    let mut agent = Agent::start(&agent_dir, http).await.unwrap();
    let before = cloud.analyses().await.unwrap().len();
    wait_until(
        Duration::from_secs(60),
        "more uploads",
        in_cloud(before + 20),
    )
    .await
    .unwrap();
    agent.process.kill();

    // The restarted agent finds its buffer, uploads what is left, and captures 20 more parts.
    Agent::write_config(&agent_dir, cloud.port, http, &camera(20)).unwrap();
    let agent = Agent::start(&agent_dir, http).await.unwrap();
    let analyses = wait_until(Duration::from_secs(120), "the buffer drained", || async {
        let h = agent.health().await?;
        let captured = agent.captured().await?;
        let all = cloud.analyses().await.ok()?;
        (captured >= 20 && h.buffer.frames == 0).then_some(all)
    })
    .await;
    let analyses = match analyses {
        Ok(a) => a,
        Err(e) => panic!(
            "{e}: health {:?}, captured {:?}\n{}",
            agent.health().await,
            agent.captured().await,
            agent
                .process
                .log_text()
                .lines()
                .filter(|l| !l.contains("missed"))
                .collect::<Vec<_>>()
                .join("\n")
        ),
    };
    super::assert_complete(&analyses, &agent).await;
    super::assert_contiguous(&analyses);
}
