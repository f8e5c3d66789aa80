//! The embedded broker as a plant meets it: results published around a restart of the cloud
//! reach a subscriber that reconnects (the cloud publishes again what it published just before
//! and after the start); a client without the right account can neither publish a forged alert
//! nor take the cloud's client id.

use std::collections::HashSet;
use std::time::Duration;

use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
use wiko_e2e::{Cloud, DEVICE_KEY, Setup, Subscriber, free_port, wait_until};

fn setup() -> Setup {
    Setup {
        mqtt_extra: "replay_grace_secs = 3\n".into(),
        ..Setup::default()
    }
}

/// Sends a part to the prototype's call (its SKU has no model: a `not_calibrated` result,
/// published on `…/result`); its result id.
pub(crate) async fn part(cloud: &Cloud, n: u32) -> String {
    let image = {
        let img = image::RgbImage::from_fn(64, 48, |x, y| {
            image::Rgb([(x * 3) as u8, (y * 5) as u8, n as u8])
        });
        let mut jpeg = Vec::new();
        image::codecs::jpeg::JpegEncoder::new(&mut jpeg)
            .encode_image(&img)
            .unwrap();
        jpeg
    };
    let form = reqwest::multipart::Form::new()
        .part(
            "image",
            reqwest::multipart::Part::bytes(image).file_name("p.jpg"),
        )
        .text("product_sku", "WK-KN-200")
        .text("facility", "yangjiang");
    let answer: serde_json::Value = reqwest::Client::new()
        .post(format!("{}/api/v1/analyze", cloud.url()))
        .header("x-api-key", DEVICE_KEY)
        .multipart(form)
        .send()
        .await
        .unwrap()
        .error_for_status()
        .unwrap()
        .json()
        .await
        .unwrap();
    answer["id"].as_str().unwrap().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn results_published_around_a_restart_reach_a_reconnecting_subscriber() {
    let dir = tempfile::tempdir().unwrap();
    let (port, mqtt) = (free_port(), free_port());
    let mut cloud = Cloud::start_with(dir.path(), port, mqtt, &setup())
        .await
        .unwrap();
    let login = cloud.mqtt_subscriber_login().unwrap();
    let sub = Subscriber::start_as(mqtt, Some(login), Some("line-display"))
        .await
        .unwrap();
    let mut ids = Vec::new();
    for n in 0..5 {
        ids.push(part(&cloud, n).await);
    }
    // The last ones were published just before the restart; the next ones just after it,
    // before the subscriber is back.
    assert!(cloud.process.terminate().unwrap().success());
    cloud = Cloud::start_with(dir.path(), port, mqtt, &setup())
        .await
        .unwrap();
    for n in 5..10 {
        ids.push(part(&cloud, n).await);
    }
    let wanted: HashSet<String> = ids.into_iter().collect();
    wait_until(
        Duration::from_secs(30),
        "every result at the subscriber",
        || async {
            let got: HashSet<String> = sub.by_leaf("result").into_keys().collect();
            wanted.is_subset(&got).then_some(())
        },
    )
    .await
    .unwrap_or_else(|e| panic!("{e}: got {:?}", sub.by_leaf("result").len()));
    let replayed = wait_until(Duration::from_secs(10), "the replay", || async {
        cloud
            .process
            .log_text()
            .contains("published again what was published before the start")
            .then_some(())
    })
    .await;
    assert!(replayed.is_ok(), "{}", cloud.process.log_text());
}

#[tokio::test]
async fn a_forged_publish_and_a_taken_client_id_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let (port, mqtt) = (free_port(), free_port());
    let cloud = Cloud::start_with(dir.path(), port, mqtt, &Setup::default())
        .await
        .unwrap();
    let sub = cloud.subscriber().await.unwrap();
    let (user, password) = cloud.mqtt_subscriber_login().unwrap();
    let connect = |id: &str, login: Option<(&str, &str)>| {
        let mut o = MqttOptions::new(id, "127.0.0.1", mqtt);
        if let Some((u, p)) = login {
            o.set_credentials(u, p);
        }
        AsyncClient::new(o, 16)
    };
    // The result of each connection attempt: whether it was accepted.
    async fn accepted(events: &mut rumqttc::EventLoop) -> bool {
        loop {
            match events.poll().await {
                Ok(Event::Incoming(Packet::ConnAck(a))) => {
                    return a.code == rumqttc::ConnectReturnCode::Success;
                }
                Ok(_) => {}
                Err(_) => return false,
            }
        }
    }
    let (_anon, mut events) = connect("anonymous", None);
    assert!(!accepted(&mut events).await, "anonymous");
    let (_takeover, mut events) = connect("wiko-cloud", Some((&user, &password)));
    assert!(!accepted(&mut events).await, "the cloud's client id");
    let (forger, mut events) = connect("forger", Some((&user, &password)));
    assert!(accepted(&mut events).await);
    forger
        .publish(
            "wiko/yangjiang/l1/s1/alert",
            QoS::AtLeastOnce,
            false,
            r#"{"result_id":"forged"}"#,
        )
        .await
        .unwrap();
    let cut_off = tokio::time::timeout(Duration::from_secs(5), async {
        while events.poll().await.is_ok() {}
    })
    .await;
    assert!(
        cut_off.is_ok(),
        "a subscriber that publishes is disconnected"
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(
        sub.by_leaf("alert").is_empty(),
        "no forged alert was delivered"
    );
    // The cloud is still connected and publishing.
    let id = part(&cloud, 1).await;
    wait_until(Duration::from_secs(10), "the cloud's result", || async {
        sub.by_leaf("result").contains_key(&id).then_some(())
    })
    .await
    .unwrap();
}
