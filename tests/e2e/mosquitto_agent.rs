//! The agent's own MQTT contract, through the machine's Mosquitto: it alerts an NG part the
//! moment it judged it, with the cloud down, once (across a broker outage and a restart with
//! alerts still in its outbox), and the cloud does not alert that part again; its status is
//! retained, `online` after each connect and `offline` (its Last Will) when it is killed; a
//! model the cloud announces is pulled at once.

use std::time::Duration;

use wiko_e2e::{Agent, Subscriber, wait_until};

use crate::mosquitto_rig::{Plan, Rig, fire, outbox_empty, queued, status};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_agent_alerts_an_ng_part_once_with_the_cloud_down_and_the_cloud_does_not_again() {
    let dir = tempfile::tempdir().unwrap();
    let mut rig = Rig::start(dir.path(), 1883, Plan::default()).await;
    let station = rig.station;

    // The cloud stops: the agent judges and alerts on its own.
    assert!(rig.cloud.process.terminate().unwrap().success());
    let mut triggered = fire(&rig.agent, 10).await;
    let ng = wait_until(Duration::from_secs(20), "the agent's alerts", || async {
        let queued = queued(&rig.agent).await;
        let got = rig.alerts();
        (queued > 0 && got.len() as u64 == queued).then_some(queued)
    })
    .await
    .unwrap_or_else(|e| panic!("{e}\n{}", rig.agent.process.log_text()));

    // The broker goes away: alerts wait in the outbox; the agent is killed with them there.
    rig.switch.set_down(true);
    triggered += fire(&rig.agent, 10).await;
    let queued = queued(&rig.agent).await;
    assert!(queued > ng, "the second batch has NG parts too");
    rig.agent.process.kill();
    assert_eq!(
        rig.alerts().len() as u64,
        ng,
        "nothing went out while the broker was away"
    );
    rig.switch.set_down(false);
    rig.agent = Agent::start(&rig.agent_dir, rig.http).await.unwrap();
    wait_until(
        Duration::from_secs(20),
        "the outbox's alerts after the restart",
        || async { (rig.alerts().len() as u64 == queued).then_some(()) },
    )
    .await
    .unwrap_or_else(|e| panic!("{e}\n{}", rig.agent.process.log_text()));
    // Every alert acknowledged before its frame goes up: each upload says `alerted`.
    outbox_empty(&rig.agent).await;

    // The cloud comes back: every part gets its final result, and no NG part a second alert.
    rig.cloud_back().await;
    let finals = wait_until(Duration::from_secs(60), "every part final", || async {
        let all = rig.cloud.analyses().await.ok()?;
        (all.len() == triggered && all.iter().all(|a| a["status"] == "final")).then_some(all)
    })
    .await
    .unwrap_or_else(|e| panic!("{e}\n{}", rig.agent.process.log_text()));
    wait_until(
        Duration::from_secs(30),
        "the cloud's result messages",
        || async {
            let results = rig.on("result");
            finals
                .iter()
                .all(|a| {
                    results
                        .iter()
                        .any(|r| r["result_id"] == a["id"] && r["status"] == "final")
                })
                .then_some(())
        },
    )
    .await
    .unwrap();
    let got = rig.alerts();
    assert_eq!(got.len() as u64, queued);
    assert!(
        got.values().all(|&n| n == 1),
        "an alert came twice: {got:?}"
    );
    for a in &finals {
        let id = a["id"].as_str().unwrap();
        let edge_ng = a["verdicts"]
            .as_array()
            .unwrap()
            .iter()
            .any(|v| v["source"] == "edge" && v["defect_detected"] == true);
        assert_eq!(
            got.contains_key(id),
            edge_ng,
            "alerted by the agent under the cloud's id: {a}"
        );
        if edge_ng {
            assert_eq!(a["id"], a["frame_id"]);
        }
    }

    // Killed: the broker publishes its Last Will, retained.
    rig.agent.process.kill();
    status(&rig.sub, station, "offline", &rig.agent).await;
    let late = Subscriber::start(1883).await.unwrap();
    wait_until(Duration::from_secs(10), "the retained status", || async {
        (crate::mosquitto_rig::on(&late, station, "status").last()?["state"] == "offline")
            .then_some(())
    })
    .await
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_model_the_cloud_announces_is_pulled_at_once() {
    let dir = tempfile::tempdir().unwrap();
    // A refresh far away: only the announcement can bring the model in time.
    let rig = Rig::start(
        dir.path(),
        1883,
        Plan {
            unfitted: true,
            agent_extra: "[edge]\nrefresh_secs = 3600".into(),
            ..Plan::default()
        },
    )
    .await;
    assert!(!rig.agent.process.log_text().contains("edge model in use"));
    rig.cloud.calibrate(dir.path()).await.unwrap();
    wait_until(
        Duration::from_secs(15),
        "the announced model in use",
        || async {
            rig.agent
                .process
                .log_text()
                .contains("edge model in use")
                .then_some(())
        },
    )
    .await
    .unwrap_or_else(|e| panic!("{e}\n{}", rig.agent.process.log_text()));
    let (status, ack) = rig
        .agent
        .trigger("cam", &serde_json::json!({}))
        .await
        .unwrap();
    assert_eq!(status, 200, "{ack:?}");
}
