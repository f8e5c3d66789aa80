//! The production backend (feature `production-tests`; `.ci/run` provides PostgreSQL, an S3
//! server and Mosquitto): several replicas on one PostgreSQL and one S3 server, replicas
//! killed, and the database and the object store cut off mid-run. In each, every frame ends up
//! stored and analysed once, and every part gets one result message and at most one alert.

use std::net::SocketAddr;
use std::time::Duration;

use serde_json::Value;
use wiko_e2e::proxy::Proxy;
use wiko_e2e::{Agent, Camera, Cloud, Production, Setup, Subscriber, free_port, wait_until};

const SKUS: [&str; 2] = ["WK-KN-200", "WK-PR-090"];

fn local(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

/// Waits until `cloud` serves a model for every synthetic SKU (another replica may have fitted
/// it: replicas pick up new models within seconds).
async fn calibrated(cloud: &Cloud) {
    let http = reqwest::Client::new();
    wait_until(
        Duration::from_secs(30),
        "models on every replica",
        || async {
            for sku in SKUS {
                let r = http
                    .get(format!("{}/api/v1/skus/{sku}/model", cloud.url()))
                    .header("X-API-Key", wiko_e2e::VIEWER_KEY)
                    .send()
                    .await
                    .ok()?;
                r.status().is_success().then_some(())?;
            }
            Some(())
        },
    )
    .await
    .unwrap();
}

fn cameras(parts: u64, interval_ms: u64) -> [Camera; 2] {
    [
        Camera::synthetic("grind", "grinding", SKUS[0], 31, parts, interval_ms),
        Camera::synthetic("polish", "polish", SKUS[1], 32, parts, interval_ms),
    ]
}

/// Waits for `n` analysed parts and a drained agent; checks each frame is stored once, none is
/// missing, all were judged by a model, and the broker carried one result per part and at most
/// one alert per part.
async fn assert_all_analysed_once(cloud: &Cloud, agent: &Agent, sub: &Subscriber, n: usize) {
    let analyses = wait_until(Duration::from_secs(180), "every part analysed", || async {
        let all = cloud.analyses().await.ok()?;
        let drained = agent.health().await?["buffer"]["frames"] == 0;
        (all.len() >= n && drained && all.iter().all(|a| a["status"] != "pending")).then_some(all)
    })
    .await
    .unwrap_or_else(|e| panic!("{e}\n{}", agent.process.log_text()));
    assert_eq!(super::assert_complete(&analyses, agent).await, n);
    super::assert_contiguous(&analyses);
    assert!(
        analyses.iter().all(|a| a["status"] == "final"),
        "every part judged by a model: {:?}",
        analyses.iter().map(|a| &a["status"]).collect::<Vec<_>>()
    );
    let ng = analyses
        .iter()
        .filter(|a| a["defect_detected"] == true)
        .count();
    assert!(ng > 0, "some parts carry a painted defect");
    let ours = |leaf: &str| -> Vec<(String, usize)> {
        sub.by_leaf(leaf)
            .into_iter()
            .filter(|(id, _)| {
                analyses
                    .iter()
                    .any(|a: &Value| a["id"].as_str() == Some(id))
            })
            .map(|(id, (count, _))| (id, count))
            .collect()
    };
    wait_until(Duration::from_secs(60), "every message", || async {
        (ours("result").len() == n && ours("alert").len() == ng).then_some(())
    })
    .await
    .unwrap_or_else(|e| {
        panic!(
            "{e}: {} results, {} alerts of {ng}",
            ours("result").len(),
            ours("alert").len()
        )
    });
    let twice: Vec<_> = ours("alert").into_iter().filter(|(_, c)| *c > 1).collect();
    assert!(twice.is_empty(), "alerted more than once: {twice:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_replicas_share_one_database_and_a_killed_replica_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let setup = Setup {
        external_broker: true,
        production: Some(Production::fresh().await.unwrap()),
        extra: "[analysis]\njob_lease_secs = 5\n".into(),
    };
    let ports = [free_port(), free_port(), free_port()];
    let mut replicas = Vec::new();
    for (i, port) in ports.iter().enumerate() {
        let cloud_dir = dir.path().join(format!("cloud{i}"));
        replicas.push(
            Cloud::start_with(&cloud_dir, *port, 1883, &setup)
                .await
                .unwrap(),
        );
    }
    replicas[0].calibrate(dir.path()).await.unwrap();
    for r in &replicas {
        calibrated(r).await;
    }
    let balancer = Proxy::start(ports.iter().map(|p| local(*p)).collect())
        .await
        .unwrap();
    let sub = Subscriber::start(1883).await.unwrap();
    let (agent_dir, http) = (dir.path().join("agent"), free_port());
    Agent::write_config(&agent_dir, balancer.port, http, &cameras(80, 50)).unwrap();
    let agent = Agent::start(&agent_dir, http).await.unwrap();

    wait_until(Duration::from_secs(60), "40 parts in", || async {
        (replicas[0].analyses().await.ok()?.len() >= 40).then_some(())
    })
    .await
    .unwrap();
    replicas[1].process.kill();
    assert_all_analysed_once(&replicas[0], &agent, &sub, 160).await;
    // The surviving replicas both took uploads and both analysed parts.
    for i in [0, 2] {
        let created = replicas[i].counter("wiko_cloud_ingest_total").await;
        let analysed = replicas[i].counter("wiko_cloud_analyses_total").await;
        assert!(
            created > 0.0 && analysed > 0.0,
            "replica {i}: {created} uploads, {analysed} analyses"
        );
    }
    drop(balancer);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_database_and_the_object_store_cut_off_mid_run_lose_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let production = Production::fresh().await.unwrap();
    let (db_port, s3_port) = production.ports();
    let db = Proxy::start(vec![local(db_port)]).await.unwrap();
    let s3 = Proxy::start(vec![local(s3_port)]).await.unwrap();
    let setup = Setup {
        external_broker: false,
        production: Some(production.via(db.port, s3.port)),
        extra: "[analysis]\njob_lease_secs = 5\n".into(),
    };
    let (port, mqtt) = (free_port(), free_port());
    let cloud = Cloud::start_with(&dir.path().join("cloud"), port, mqtt, &setup)
        .await
        .unwrap();
    cloud.calibrate(dir.path()).await.unwrap();
    let sub = Subscriber::start(mqtt).await.unwrap();
    let (agent_dir, http) = (dir.path().join("agent"), free_port());
    Agent::write_config(&agent_dir, port, http, &cameras(60, 40)).unwrap();
    let agent = Agent::start(&agent_dir, http).await.unwrap();
    let ready = format!("{}/ready", cloud.url());

    for (name, proxy, after) in [("database", &db, 20), ("object_store", &s3, 60)] {
        wait_until(Duration::from_secs(60), "parts in", || async {
            (cloud.analyses().await.ok()?.len() >= after).then_some(())
        })
        .await
        .unwrap();
        proxy.set_down(true);
        let check = wait_until(Duration::from_secs(15), "/ready to fail", || async {
            let r = reqwest::get(&ready).await.ok()?;
            let body: Value = r.json().await.ok()?;
            (body["checks"][name] == false).then_some(body)
        })
        .await
        .unwrap();
        assert_eq!(check["status"], "not_ready");
        tokio::time::sleep(Duration::from_secs(3)).await;
        proxy.set_down(false);
    }
    assert_all_analysed_once(&cloud, &agent, &sub, 120).await;
    assert!(
        agent.process.log_text().contains("backing off"),
        "the agent retried while the cloud answered 503"
    );
}
