//! The agent against a Mosquitto of the test's own (`wiko_e2e::mosquitto`), on its own ports:
//! its alerts over TLS, an agent trusting another CA refused and saying why, a broker that asks
//! for a client certificate taking the agent with one and refusing it without; the broker
//! restarted (the Last Will published when the agent's connection is lost, kept by the
//! broker's persistence, `online` again, subscriptions back, heartbeats again, every alert
//! queued meanwhile once); its heartbeats on the broker; its alert outbox bounded while the
//! broker is away, and the parts whose alert it dropped alerted by the cloud; with the cloud up
//! and the broker away, an NG part uploaded after the alert's grace and alerted by the cloud, then by the agent
//! too (one `result_id`).

use std::collections::HashMap;
use std::time::Duration;

use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
use serde_json::Value;
use wiko_e2e::mosquitto::{Mosquitto, Pki, Tls};
use wiko_e2e::{Agent, Camera, Source, Subscriber, free_port, wait_until};

use crate::mosquitto_rig::{
    Plan, Rig, alerts, camera, disconnected, fire_until_queued, on, outbox_empty, station, status,
    write_agent,
};

/// Publishes one message with QoS 1 on the broker at `port` and waits for its PUBACK.
async fn publish(port: u16, topic: &str, payload: &str) {
    let options = MqttOptions::new(
        format!("e2e-pub-{}", uuid::Uuid::new_v4().simple()),
        "127.0.0.1",
        port,
    );
    let (client, mut events) = AsyncClient::new(options, 8);
    client
        .publish(topic, QoS::AtLeastOnce, false, payload.as_bytes().to_vec())
        .await
        .unwrap();
    tokio::time::timeout(Duration::from_secs(10), async {
        while !matches!(events.poll().await, Ok(Event::Incoming(Packet::PubAck(_)))) {}
    })
    .await
    .expect("the broker's PUBACK");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_agent_alerts_over_tls_and_a_broker_asking_for_a_certificate_takes_only_its_own() {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::generate(&dir.path().join("pki")).unwrap();
    let path = |p: &std::path::Path| format!("{:?}", p.display().to_string());
    let broker = Mosquitto::start(
        &dir.path().join("broker"),
        Some(Tls {
            pki: &pki,
            require_certificate: false,
        }),
    )
    .await
    .unwrap();
    // The cloud's public URL is not the agent's way to it: the agent's alerts link the image
    // where the cloud's own messages do.
    let public = "https://wiko.example:8443";
    let rig = Rig::start(
        dir.path(),
        broker.port,
        Plan {
            agent_broker: broker.tls_port,
            cloud_top: format!("public_url = \"{public}\""),
            agent_extra: format!(
                "tls = true\nca_file = {}\nimage_base_url = \"{public}\"",
                path(&pki.ca)
            ),
            ..Plan::default()
        },
    )
    .await;
    let agent = &rig.agent;
    fire_until_queued(agent, 1).await;
    let alert = wait_until(Duration::from_secs(20), "an alert over TLS", || async {
        rig.on("alert").first().cloned()
    })
    .await
    .unwrap_or_else(|e| panic!("{e}\n{}", agent.process.log_text()));
    assert_eq!(alert["status"], "provisional", "the agent's: {alert}");
    let id = alert["result_id"].as_str().unwrap().to_string();
    let result = wait_until(
        Duration::from_secs(60),
        "the cloud's result for the part",
        || async {
            rig.on("result")
                .into_iter()
                .find(|r| r["result_id"] == id.as_str())
        },
    )
    .await
    .unwrap();
    assert_eq!(alert["image_url"], result["image_url"]);
    assert_eq!(
        alert["image_url"].as_str().unwrap(),
        format!("{public}/api/v1/analyses/{id}/image")
    );

    // An agent trusting another CA is refused by its own check, and its log says why (the
    // error is BadSignature here: both test CAs have the same name; UnknownIssuer otherwise).
    let other = Pki::generate(&dir.path().join("other-pki")).unwrap();
    let start = |name: &'static str, port: u16, tls: String| {
        let agent_dir = dir.path().join(name);
        let http = free_port();
        let station = station();
        write_agent(
            &agent_dir,
            rig.cloud.port,
            http,
            &[camera(station)],
            port,
            &tls,
        );
        async move { (Agent::start(&agent_dir, http).await.unwrap(), station) }
    };
    let (wrong_ca, _) = start(
        "wrong-ca",
        broker.tls_port.unwrap(),
        format!("tls = true\nca_file = {}", path(&other.ca)),
    )
    .await;
    wait_until(
        Duration::from_secs(30),
        "the agent of another CA told why it is refused",
        || async {
            let log = wrong_ca.process.log_text();
            (log.contains("MQTT connection lost")
                && log.contains("invalid peer certificate")
                && log.contains("not signed by a CA of mqtt.ca_file"))
            .then_some(())
        },
    )
    .await
    .unwrap_or_else(|e| panic!("{e}\n{}", wrong_ca.process.log_text()));

    // A broker that asks every client for a certificate of its CA: the agent with one is in,
    // the agent without is refused and says so.
    let strict = Mosquitto::start(
        &dir.path().join("strict"),
        Some(Tls {
            pki: &pki,
            require_certificate: true,
        }),
    )
    .await
    .unwrap();
    let strict_sub = Subscriber::start(strict.port).await.unwrap();
    let strict_tls =
        |identity: String| format!("tls = true\nca_file = {}\n{identity}", path(&pki.ca));
    let (with_cert, with_station) = start(
        "with-cert",
        strict.tls_port.unwrap(),
        strict_tls(format!(
            "client_cert_file = {}\nclient_key_file = {}",
            path(&pki.client_cert),
            path(&pki.client_key)
        )),
    )
    .await;
    let (without, without_station) = start(
        "without-cert",
        strict.tls_port.unwrap(),
        strict_tls(String::new()),
    )
    .await;
    status(&strict_sub, with_station, "online", &with_cert).await;
    wait_until(
        Duration::from_secs(30),
        "the agent without a certificate refused twice",
        || async {
            let log = without.process.log_text();
            (log.matches("MQTT connection lost").count() >= 2).then_some(())
        },
    )
    .await
    .unwrap_or_else(|e| panic!("{e}\n{}", without.process.log_text()));
    assert_eq!(
        without.metric("wiko_agent_mqtt_connected", "").await,
        Some(0.0)
    );
    assert!(
        on(&strict_sub, without_station, "status").is_empty(),
        "the refused agent never got its status out"
    );
    assert!(
        strict
            .log_text()
            .contains("peer did not return a certificate"),
        "{}",
        strict.log_text()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_its_broker_restarts_the_agent_is_back_and_loses_or_doubles_no_alert() {
    let dir = tempfile::tempdir().unwrap();
    let mut broker = Mosquitto::start(&dir.path().join("broker"), None)
        .await
        .unwrap();
    // The agent reaches the broker through the rig's switch: after the restart it is kept out
    // until the test has seen what the broker kept.
    let triggered_station = station();
    let mqtt_camera = Camera {
        name: "mq",
        station: triggered_station,
        sku: "WK-KN-200",
        source: Source::Toml(
            "source = { type = \"synthetic\", seed = 5, defect_rate = 0.0 }\ntrigger = { type = \"mqtt\" }"
                .into(),
        ),
    };
    let mut rig = Rig::start(
        dir.path(),
        broker.port,
        Plan {
            more_cameras: vec![mqtt_camera],
            ..Plan::default()
        },
    )
    .await;
    let (agent, station) = (&rig.agent, rig.station);
    // The cloud goes away: only the agent alerts (the cloud would alert what it finds NG and
    // the agent did not).
    assert!(rig.cloud.process.terminate().unwrap().success());
    let sent_before = fire_until_queued(agent, 2).await;
    let alerted_before: HashMap<String, usize> =
        wait_until(Duration::from_secs(20), "the first alerts", || async {
            let got = rig.alerts();
            (got.len() as u64 == sent_before).then_some(got)
        })
        .await
        .unwrap();
    // Every alert acknowledged, none in flight when the connection goes.
    outbox_empty(agent).await;

    // The agent loses the broker before the broker stops: the broker publishes its Last Will
    // (retained) for the lost connection, whatever it does for its clients at shutdown.
    rig.switch.set_down(true);
    status(&rig.sub, station, "offline", agent).await;
    disconnected(agent).await;
    // The broker stops (saving its retained messages) and parts come while it is away.
    broker.stop().unwrap();
    let queued_during = fire_until_queued(agent, sent_before + 3).await - sent_before;
    broker.start_again().await.unwrap();
    let after = Subscriber::start(broker.port).await.unwrap();
    status(&after, station, "offline", agent).await;

    // The agent comes back: `online`, its alerts queued meanwhile once each, its trigger
    // subscription answered, its heartbeats again.
    rig.switch.set_down(false);
    status(&after, station, "online", agent).await;
    wait_until(
        Duration::from_secs(30),
        "the alerts queued while the broker was away",
        || async { (alerts(&after, station).len() as u64 == queued_during).then_some(()) },
    )
    .await
    .unwrap_or_else(|e| panic!("{e}\n{}", agent.process.log_text()));
    publish(
        broker.port,
        &format!("wiko/yangjiang/l1/{triggered_station}/trigger"),
        r#"{"request_id":"after-restart"}"#,
    )
    .await;
    let ack = wait_until(Duration::from_secs(20), "the trigger's answer", || async {
        on(&after, triggered_station, "trigger/ack")
            .into_iter()
            .find(|a| a["request_id"] == "after-restart")
    })
    .await
    .unwrap_or_else(|e| panic!("{e}\n{}", agent.process.log_text()));
    assert_eq!(ack["outcome"], "captured", "{ack}");
    wait_until(
        Duration::from_secs(20),
        "a heartbeat after the restart",
        || async { (!on(&after, station, "heartbeat").is_empty()).then_some(()) },
    )
    .await
    .unwrap();
    // The outbox is empty (every alert acknowledged) and the messages that came with and after
    // the alerts on the one connection are in: each alert once, none of the first ones again.
    outbox_empty(agent).await;
    let alerted_after = alerts(&after, station);
    assert_eq!(alerted_after.len() as u64, queued_during);
    assert!(
        alerted_after.values().all(|&n| n == 1),
        "an alert came twice: {alerted_after:?}"
    );
    assert!(alerted_before.values().all(|&n| n == 1));
    assert!(
        alerted_before
            .keys()
            .all(|id| !alerted_after.contains_key(id)),
        "an alert acknowledged before the restart was sent again"
    );

    // Killed: the broker publishes the Last Will, and keeps it for whoever comes later.
    rig.agent.process.kill();
    let late = Subscriber::start(broker.port).await.unwrap();
    wait_until(
        Duration::from_secs(30),
        "the retained Last Will",
        || async { (on(&late, station, "status").last()?["state"] == "offline").then_some(()) },
    )
    .await
    .unwrap();
}

// See: issue #21 (a dropped alert's part is the cloud's to alert, and so is one whose alert
// was not acknowledged when its frame went up).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn heartbeats_reach_the_broker_and_the_cloud_alerts_the_parts_whose_alert_was_dropped_or_waited()
 {
    let dir = tempfile::tempdir().unwrap();
    let broker = Mosquitto::start(&dir.path().join("broker"), None)
        .await
        .unwrap();
    let mut rig = Rig::start(
        dir.path(),
        broker.port,
        Plan {
            agent_extra: "outbox_max_alerts = 2".into(),
            ..Plan::default()
        },
    )
    .await;
    let station = rig.station;
    // The cloud goes away, so every frame stays buffered.
    assert!(rig.cloud.process.terminate().unwrap().success());

    // The broker goes away too: past two alerts, the oldest are dropped.
    rig.switch.set_down(true);
    disconnected(&rig.agent).await;
    let queued = fire_until_queued(&rig.agent, 5).await;
    let frames = rig.agent.captured().await.unwrap();
    let dropped = queued - 2;
    let health = rig.agent.health().await.unwrap();
    assert_eq!(
        (
            health.buffer.alerts_queued,
            health.buffer.alerts_dropped_total
        ),
        (2, dropped)
    );
    assert_eq!(
        rig.agent.metric("wiko_agent_alerts_total", "dropped").await,
        Some(dropped as f64)
    );
    let log = rig.agent.process.log_text();
    assert_eq!(
        log.matches("alert outbox: dropping the oldest alerts")
            .count(),
        1,
        "logged once for the episode:\n{log}"
    );

    // Back: the two kept alerts arrive, and the next heartbeat says what the agent holds.
    rig.switch.set_down(false);
    wait_until(Duration::from_secs(30), "the two kept alerts", || async {
        (rig.alerts().len() == 2).then_some(())
    })
    .await
    .unwrap_or_else(|e| panic!("{e}\n{}", rig.agent.process.log_text()));
    let heartbeat: wiko_wire::Heartbeat = wait_until(
        Duration::from_secs(20),
        "a heartbeat with the outbox emptied",
        || async {
            rig.on("heartbeat")
                .into_iter()
                .filter_map(|v: Value| serde_json::from_value::<wiko_wire::Heartbeat>(v).ok())
                .find(|h| h.buffer.alerts_queued == 0 && h.buffer.frames == frames)
        },
    )
    .await
    .unwrap_or_else(|e| panic!("{e}\n{}", rig.agent.process.log_text()));
    heartbeat.validate().unwrap();
    assert_eq!(heartbeat.device_id, "e2e-pc1");
    assert_eq!(heartbeat.station, station);
    assert_eq!(heartbeat.buffer.alerts_dropped_total, dropped);
    assert_eq!(heartbeat.buffer.by_camera.get("cam"), Some(&frames));
    assert!(heartbeat.buffer.oldest_unsynced_seconds > 0.0);
    let cam = &heartbeat.cameras[0];
    assert_eq!(
        (cam.name.as_str(), cam.source.as_str()),
        ("cam", "synthetic")
    );
    assert_eq!(cam.status, wiko_wire::CameraStatus::Ok);
    assert_eq!(cam.frames_total, frames);
    assert_eq!(
        heartbeat.models.get("WK-KN-200").map(String::as_str),
        Some("v1")
    );

    // The cloud comes back: the frames whose alert was dropped go up without `alerted`, and
    // the cloud alerts those parts; the two the agent alerted (acknowledged before their
    // upload) it does not. Every NG part is alerted once, by one of them.
    let by_agent = rig.alerts();
    rig.cloud_back().await;
    let finals = wait_until(Duration::from_secs(60), "every part final", || async {
        let all = rig.cloud.analyses().await.ok()?;
        (all.len() as u64 == frames && all.iter().all(|a| a["status"] == "final")).then_some(all)
    })
    .await
    .unwrap_or_else(|e| panic!("{e}\n{}", rig.agent.process.log_text()));
    let ng: Vec<&str> = finals
        .iter()
        .filter(|a| a["defect_detected"] == true)
        .map(|a| a["id"].as_str().unwrap())
        .collect();
    assert_eq!(ng.len() as u64, queued, "the cloud agrees with the edge");
    let got = wait_until(Duration::from_secs(30), "an alert per NG part", || async {
        let got = rig.alerts();
        (got.len() == ng.len()).then_some(got)
    })
    .await
    .unwrap_or_else(|e| panic!("{e}\n{}", rig.cloud.process.log_text()));
    assert!(
        got.values().all(|&n| n == 1),
        "an alert came twice: {got:?}"
    );
    for id in &ng {
        let alert = rig
            .on("alert")
            .into_iter()
            .find(|a| a["result_id"] == *id)
            .unwrap();
        let expected = if by_agent.contains_key(*id) {
            "provisional"
        } else {
            "final"
        };
        assert_eq!(
            alert["status"], expected,
            "alerted by the agent if it kept the alert, by the cloud if it dropped it: {alert}"
        );
    }

    // The broker away again, the cloud up: an NG frame is held for its alert at most the
    // agent's grace (2 s). It then goes up without `alerted` (its alert waits), so the cloud alerts the part; the agent's
    // alert follows once the broker is back, under the same `result_id` (a duplicate the
    // subscribers dedupe, never a loss).
    rig.switch.set_down(true);
    disconnected(&rig.agent).await;
    let queued_now = fire_until_queued(&rig.agent, queued + 1).await;
    let waiting = queued_now - queued;
    let frames_now = rig.agent.captured().await.unwrap();
    let finals = match wait_until(
        Duration::from_secs(60),
        "the new parts final while their alerts wait",
        || async {
            let all = rig.cloud.analyses().await.ok()?;
            (all.len() as u64 == frames_now && all.iter().all(|a| a["status"] == "final"))
                .then_some(all)
        },
    )
    .await
    {
        Ok(all) => all,
        Err(e) => {
            let statuses: Vec<String> = rig
                .cloud
                .analyses()
                .await
                .unwrap_or_default()
                .iter()
                .map(|a| a["status"].to_string())
                .collect();
            panic!(
                "{e}: {frames_now} captured, in the cloud {statuses:?}\n{}\n{}",
                rig.agent.process.log_text(),
                rig.cloud.process.log_text()
            )
        }
    };
    assert_eq!(
        rig.agent.health().await.unwrap().buffer.alerts_queued,
        waiting,
        "uploaded before their alerts went out"
    );
    let new_ng: Vec<String> = finals
        .iter()
        .filter(|a| a["defect_detected"] == true && !ng.contains(&a["id"].as_str().unwrap()))
        .map(|a| a["id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(
        new_ng.len() as u64,
        waiting,
        "the cloud agrees with the edge"
    );
    let of = |id: &str, status: &str| {
        rig.on("alert")
            .iter()
            .filter(|a| a["result_id"] == id && a["status"] == status)
            .count()
    };
    wait_until(Duration::from_secs(30), "the cloud's alerts", || async {
        new_ng.iter().all(|id| of(id, "final") == 1).then_some(())
    })
    .await
    .unwrap_or_else(|e| panic!("{e}\n{}", rig.cloud.process.log_text()));
    assert!(new_ng.iter().all(|id| of(id, "provisional") == 0));
    rig.switch.set_down(false);
    wait_until(Duration::from_secs(30), "the agent's alerts", || async {
        new_ng
            .iter()
            .all(|id| of(id, "provisional") == 1)
            .then_some(())
    })
    .await
    .unwrap_or_else(|e| panic!("{e}\n{}", rig.agent.process.log_text()));
    outbox_empty(&rig.agent).await;
    let got = rig.alerts();
    assert!(
        new_ng.iter().all(|id| got.get(id) == Some(&2)),
        "alerted by the cloud and the agent: {got:?}"
    );
}
