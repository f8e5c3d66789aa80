//! The production backend (feature `production-tests`; `.ci/run` provides PostgreSQL, an S3
//! server and Mosquitto): several replicas on one PostgreSQL and one S3 server with one killed;
//! the database and the object store cut off mid-run (network), PostgreSQL restarted, an S3
//! server killed and restarted. In each, every frame ends up stored and analysed once, and every
//! part gets one result message and at most one alert.

use std::net::SocketAddr;
use std::time::Duration;

use serde_json::Value;
use wiko_e2e::proxy::Proxy;
use wiko_e2e::{
    ADMIN_KEY, Agent, Camera, Cloud, Process, Production, Setup, Subscriber, free_port, wait_until,
};

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
        let drained = agent.health().await?.buffer.frames == 0;
        (all.len() >= n && drained && all.iter().all(wiko_e2e::judged_by_cloud)).then_some(all)
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
        ..Setup::default()
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

/// One cloud (embedded broker) on `setup`, calibrated, and an agent sending 2 × 60 parts.
struct Run {
    _dir: tempfile::TempDir,
    cloud: Cloud,
    agent: Agent,
    sub: Subscriber,
}

impl Run {
    async fn start(dir: tempfile::TempDir, setup: Setup) -> Run {
        let (port, mqtt) = (free_port(), free_port());
        let cloud = Cloud::start_with(&dir.path().join("cloud"), port, mqtt, &setup)
            .await
            .unwrap();
        cloud.calibrate(dir.path()).await.unwrap();
        let sub = cloud.subscriber().await.unwrap();
        let (agent_dir, http) = (dir.path().join("agent"), free_port());
        Agent::write_config(&agent_dir, port, http, &cameras(60, 80)).unwrap();
        let agent = Agent::start(&agent_dir, http).await.unwrap();
        Run {
            _dir: dir,
            cloud,
            agent,
            sub,
        }
    }

    async fn parts_in(&self, n: usize) {
        wait_until(Duration::from_secs(60), "parts in", || async {
            (self.cloud.analyses().await.ok()?.len() >= n).then_some(())
        })
        .await
        .unwrap();
    }

    /// Waits until `/ready` reports `check` failing.
    async fn not_ready(&self, check: &str) {
        let ready = format!("{}/ready", self.cloud.url());
        let body = wait_until(Duration::from_secs(15), "/ready to fail", || async {
            let body: Value = reqwest::get(&ready).await.ok()?.json().await.ok()?;
            (body["checks"][check] == false).then_some(body)
        })
        .await
        .unwrap();
        assert_eq!(body["status"], "not_ready");
    }

    async fn assert_complete(&self) {
        assert_all_analysed_once(&self.cloud, &self.agent, &self.sub, 120).await;
    }
}

fn setup(production: Production) -> Setup {
    Setup {
        external_broker: false,
        production: Some(production),
        extra: "[analysis]\njob_lease_secs = 5\n".into(),
        ..Setup::default()
    }
}

/// Network partitions: every connection to the database, then to the object store, cut and
/// refused for 3 s (through proxies), while parts stream in.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_database_and_the_object_store_cut_off_mid_run_lose_nothing() {
    let production = Production::fresh().await.unwrap();
    let (db_port, s3_port) = production.ports();
    let db = Proxy::start(vec![local(db_port)]).await.unwrap();
    let s3 = Proxy::start(vec![local(s3_port)]).await.unwrap();
    let run = Run::start(
        tempfile::tempdir().unwrap(),
        setup(production.via(db.port, s3.port)),
    )
    .await;
    for (check, proxy, after) in [("database", &db, 20), ("object_store", &s3, 60)] {
        run.parts_in(after).await;
        proxy.set_down(true);
        run.not_ready(check).await;
        tokio::time::sleep(Duration::from_secs(3)).await;
        proxy.set_down(false);
    }
    run.assert_complete().await;
    assert!(
        run.agent.process.log_text().contains("backing off"),
        "the agent retried while the cloud answered 503"
    );
}

/// PostgreSQL itself restarted mid-run, with the command in `WIKOTEST_POSTGRES_RESTART` (it
/// disturbs every user of the server: `.ci/run` runs this test alone).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restarted_database_mid_run_loses_nothing() {
    let restart = std::env::var("WIKOTEST_POSTGRES_RESTART")
        .expect("WIKOTEST_POSTGRES_RESTART names the command that restarts PostgreSQL");
    let run = Run::start(
        tempfile::tempdir().unwrap(),
        setup(Production::fresh().await.unwrap()),
    )
    .await;
    let started_at = || {
        let out = std::process::Command::new("psql")
            .args(["-tAq", &std::env::var("WIKOTEST_DATABASE_URL").unwrap()])
            .args(["-c", "SELECT pg_postmaster_start_time()"])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    };
    let before = started_at();
    run.parts_in(20).await;
    let status = tokio::task::spawn_blocking(move || {
        std::process::Command::new("sh")
            .args(["-c", &restart])
            .status()
    })
    .await
    .unwrap()
    .unwrap();
    assert!(status.success(), "restarting PostgreSQL failed");
    assert!(
        run.cloud.analyses().await.unwrap().len() < 120,
        "the restart came mid-run"
    );
    run.assert_complete().await;
    assert_ne!(before, started_at(), "PostgreSQL was restarted");
}

/// An S3 server of the test's own (`s3s-fs`, from `WIKOTEST_S3S_FS` or the PATH) killed with
/// SIGKILL mid-run and started again on the same port and directory.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restarted_object_store_mid_run_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let program = std::env::var("WIKOTEST_S3S_FS").unwrap_or_else(|_| "s3s-fs".into());
    let root = dir.path().join("s3");
    std::fs::create_dir_all(root.join("frames")).unwrap();
    let port = free_port();
    let start_s3 = || {
        let key = std::env::var("AWS_ACCESS_KEY_ID").unwrap_or_default();
        let secret = std::env::var("AWS_SECRET_ACCESS_KEY").unwrap_or_default();
        let (port, root) = (port.to_string(), root.display().to_string());
        let args = [
            "--host",
            "127.0.0.1",
            "--port",
            &port,
            "--access-key",
            &key,
            "--secret-key",
            &secret,
            &root,
        ];
        Process::program(
            std::path::Path::new(&program),
            &args,
            dir.path().join("s3.log"),
        )
        .unwrap()
    };
    let mut s3 = start_s3();
    wait_until(Duration::from_secs(10), "s3s-fs listening", || async {
        tokio::net::TcpStream::connect(local(port))
            .await
            .ok()
            .map(|_| ())
    })
    .await
    .unwrap();
    let mut production = Production::fresh().await.unwrap();
    production.s3_endpoint = format!("http://127.0.0.1:{port}").parse().unwrap();
    production.bucket = "frames".into();
    let run = Run::start(tempfile::tempdir().unwrap(), setup(production)).await;
    run.parts_in(20).await;
    s3.kill();
    run.not_ready("object_store").await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    s3 = start_s3();
    run.assert_complete().await;
    drop(s3);
}

/// A new device key for `facility`, created through `cloud`'s admin API: (key, prefix).
async fn new_device_key(cloud: &Cloud, name: &str, facility: &str) -> (String, String) {
    let created: serde_json::Value = reqwest::Client::new()
        .post(format!("{}/api/v1/keys", cloud.url()))
        .header("x-api-key", ADMIN_KEY)
        .json(&serde_json::json!({"name": name, "scope": "device", "facility": facility}))
        .send()
        .await
        .unwrap()
        .error_for_status()
        .unwrap()
        .json()
        .await
        .unwrap();
    let key = created["key"].as_str().unwrap().to_string();
    let prefix = created["info"]["prefix"].as_str().unwrap().to_string();
    (key, prefix)
}

/// The status `cloud` answers a request made with `key`.
async fn status_with(cloud: &Cloud, key: &str) -> u16 {
    reqwest::Client::new()
        .get(format!("{}/api/v1/analyses?limit=1", cloud.url()))
        .header("x-api-key", key)
        .send()
        .await
        .map_or(0, |r| r.status().as_u16())
}

/// Keys from the database across three replicas: two agents move from an old key to a new one
/// while uploading, with no upload refused; the old key, revoked on one replica, is refused by
/// every replica within a second; a key of one facility cannot send parts of another.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn production_keys_rotate_with_no_upload_refused_and_revocation_reaches_every_replica() {
    let dir = tempfile::tempdir().unwrap();
    let setup = Setup {
        external_broker: true,
        production: Some(Production::fresh().await.unwrap()),
        ..Setup::default()
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
    let balancer = Proxy::start(ports.iter().map(|p| local(*p)).collect())
        .await
        .unwrap();
    let (old, old_prefix) = new_device_key(&replicas[0], "line1-2025", "yangjiang").await;
    let agents: Vec<(std::path::PathBuf, u16, &str)> = vec![
        (dir.path().join("agent-a"), free_port(), "pc-a"),
        (dir.path().join("agent-b"), free_port(), "pc-b"),
    ];
    let camera = |n: u64| {
        [Camera::synthetic(
            "cam",
            "grinding",
            "WK-KN-200",
            n,
            150,
            40,
        )]
    };
    let mut running = Vec::new();
    for (i, (agent_dir, http, device)) in agents.iter().enumerate() {
        Agent::write_config_as(
            agent_dir,
            balancer.port,
            *http,
            &camera(30 + i as u64),
            device,
            &old,
        )
        .unwrap();
        running.push(Agent::start(agent_dir, *http).await.unwrap());
    }
    wait_until(
        Duration::from_secs(60),
        "parts with the old key",
        || async { (replicas[0].analyses().await.ok()?.len() >= 40).then_some(()) },
    )
    .await
    .unwrap();

    // Rotation: the new key is in force before any agent uses it; each agent moves to it.
    let (new, _) = new_device_key(&replicas[1], "line1-2026", "yangjiang").await;
    for (agent, (agent_dir, http, device)) in running.iter_mut().zip(&agents) {
        Agent::write_config_as(agent_dir, balancer.port, *http, &camera(50), device, &new).unwrap();
        assert!(agent.process.terminate().unwrap().success());
        *agent = Agent::start(agent_dir, *http).await.unwrap();
    }
    wait_until(
        Duration::from_secs(60),
        "parts with the new key",
        || async { (replicas[0].analyses().await.ok()?.len() >= 100).then_some(()) },
    )
    .await
    .unwrap();
    let mut refused = 0.0;
    for r in &replicas {
        refused += r.counter("wiko_cloud_auth_failures_total").await;
    }
    assert_eq!(refused, 0.0, "no request was refused during the rotation");

    // Revocation on one replica reaches every replica within a second.
    for r in &replicas {
        assert_eq!(
            status_with(r, &old).await,
            403,
            "a device key may not read, but is known"
        );
    }
    let revoked = reqwest::Client::new()
        .delete(format!("{}/api/v1/keys/{old_prefix}", replicas[2].url()))
        .header("x-api-key", ADMIN_KEY)
        .send()
        .await
        .unwrap();
    assert!(revoked.status().is_success());
    let started = std::time::Instant::now();
    for r in &replicas {
        wait_until(Duration::from_secs(5), "the revocation", || async {
            (status_with(r, &old).await == 401).then_some(())
        })
        .await
        .unwrap();
    }
    let took = started.elapsed();
    eprintln!("revocation in force on every replica after {took:?}");
    assert!(took < Duration::from_millis(1500), "{took:?}");

    // A key of one facility cannot send parts of another.
    let image = {
        let mut jpeg = Vec::new();
        image::codecs::jpeg::JpegEncoder::new(&mut jpeg)
            .encode_image(&image::GrayImage::from_pixel(64, 48, image::Luma([100])))
            .unwrap();
        jpeg
    };
    let id = uuid::Uuid::now_v7();
    let meta = wiko_wire::FrameMeta {
        frame_id: id,
        device_id: "pc-a".into(),
        facility: "elsewhere".into(),
        line: "l1".into(),
        station: "grinding".into(),
        sku: "WK-KN-200".into(),
        part_id: None,
        lot: None,
        captured_at: chrono::Utc::now(),
        seq: 1,
        image_blake3: wiko_wire::frame::image_digest(&image),
        edge: None,
    };
    let form = reqwest::multipart::Form::new()
        .text("meta", serde_json::to_string(&meta).unwrap())
        .part(
            "image",
            reqwest::multipart::Part::bytes(image).file_name("f.jpg"),
        );
    let answer = reqwest::Client::new()
        .put(format!("{}/api/v1/frames/{id}", replicas[0].url()))
        .header("x-api-key", &new)
        .multipart(form)
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status().as_u16(), 403);

    // Every frame of both agents arrived once.
    for agent in &running {
        wait_until(Duration::from_secs(60), "the agent drained", || async {
            (agent.health().await?.buffer.frames == 0).then_some(())
        })
        .await
        .unwrap();
        let h = agent.health().await.unwrap();
        assert_eq!(h.buffer.dead_letters, 0, "{h:?}");
    }
    drop(balancer);
}
