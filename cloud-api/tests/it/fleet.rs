//! The fleet: heartbeats kept per device, devices listed with the state derived from them,
//! frames registering devices, and dead letters re-queued through the next heartbeat's answer.

use serde_json::{Value, json};
use uuid::Uuid;

use crate::harness::*;

fn heartbeat(device: &str, camera_state: &str) -> Value {
    json!({
        "schema_version": 1,
        "device_id": device,
        "facility": "yangjiang",
        "line": "l2",
        "station": "polish",
        "version": "0.1.0",
        "sent_at": chrono::Utc::now(),
        "uptime_seconds": 120,
        "interval_seconds": 60,
        "cameras": [
            {"name": "top", "source": "genicam", "status": "ok", "frame_age_seconds": 0.04,
             "fps": 19.5, "frames_total": 1200, "errors_total": 0, "reopens_total": 0,
             "triggers_missed_total": 0},
            {"name": "side", "source": "rtsp", "status": camera_state, "fps": 0.0,
             "frames_total": 0, "errors_total": 3, "reopens_total": 2, "triggers_missed_total": 1,
             "last_error": "connection refused"},
        ],
        "buffer": {"frames": 4, "bytes": 800000, "oldest_unsynced_seconds": 2.5,
                   "dead_letters": 1, "evicted_total": 0, "by_camera": {"top": 4}},
        "disk_free_bytes": 5000000000u64,
        "models": {"WK-KN-200": "v3"},
        "dead_letters": [{"frame_id": Uuid::nil(), "seq": 7, "camera_id": "top", "status": 409,
                          "reason": "frame_conflict", "bytes": 1000, "at": chrono::Utc::now()}],
    })
}

#[tokio::test]
async fn heartbeats_show_each_device_with_its_state() {
    let h = harness().await;
    let (status, ack) = post_json(&h, "/api/v1/heartbeats", DEVICE, heartbeat("pc7", "ok")).await;
    assert_eq!(status, 200, "{ack}");
    assert_eq!(ack["commands"], json!([]));
    let (status, _) = post_json(&h, "/api/v1/heartbeats", DEVICE, heartbeat("pc8", "failed")).await;
    assert_eq!(status, 200);
    // A device seen by its frames only.
    let image = jpeg();
    let id = Uuid::now_v7();
    let (status, _) = put_frame(
        &h,
        &id.to_string(),
        Some(DEVICE),
        frame_body(&meta(id, &image), &image),
    )
    .await;
    assert_eq!(status, 201);

    let (status, devices) = get_json(&h, "/api/v1/devices").await;
    assert_eq!(status, 200, "{devices}");
    let by_id = |id: &str| {
        devices
            .as_array()
            .unwrap()
            .iter()
            .find(|d| d["device_id"] == id)
            .cloned()
            .unwrap()
    };
    let pc7 = by_id("pc7");
    assert_eq!(pc7["state"], "ok");
    assert_eq!(
        (pc7["facility"].as_str(), pc7["line"].as_str()),
        (Some("yangjiang"), Some("l2"))
    );
    assert_eq!(pc7["heartbeat"]["models"]["WK-KN-200"], "v3");
    assert_eq!(
        pc7["heartbeat"]["dead_letters"][0]["reason"],
        "frame_conflict"
    );
    assert!(pc7["heartbeat_age_seconds"].as_f64().unwrap() < 5.0);
    assert!(pc7["clock_offset_seconds"].as_f64().unwrap().abs() < 5.0);
    assert_eq!(by_id("pc8")["state"], "camera_failed");
    let pc1 = by_id("pc1");
    assert_eq!(pc1["state"], "silent", "frames but never a heartbeat");
    assert!(pc1["last_frame_at"].is_string());
    assert!(pc1["heartbeat"].is_null());

    let (status, mut one) = get_json(&h, "/api/v1/devices/pc7").await;
    // The same device, read a moment later (only the heartbeat's age moved on).
    let mut pc7 = pc7;
    for d in [&mut one, &mut pc7] {
        d["heartbeat_age_seconds"] = serde_json::Value::Null;
    }
    assert_eq!((status.as_u16(), &one), (200, &pc7));
    let (status, body) = get_json(&h, "/api/v1/devices/nobody").await;
    assert_eq!((status.as_u16(), code(&body)), (404, "not_found"));

    // The next heartbeat replaces the last.
    let mut later = heartbeat("pc8", "ok");
    later["buffer"]["oldest_unsynced_seconds"] = json!(900.0);
    assert_eq!(
        post_json(&h, "/api/v1/heartbeats", DEVICE, later).await.0,
        200
    );
    assert_eq!(
        get_json(&h, "/api/v1/devices/pc8").await.1["state"],
        "behind"
    );
}

#[tokio::test]
async fn heartbeats_are_checked_and_keys_keep_to_their_scope() {
    let h = harness().await;
    let mut cases: Vec<(Value, &str)> = Vec::new();
    let mut v = heartbeat("pc7", "ok");
    v["schema_version"] = json!(99);
    cases.push((v, "schema_version"));
    let mut v = heartbeat("pc7", "ok");
    v["device_id"] = json!("../etc");
    cases.push((v, "device_id"));
    let mut v = heartbeat("pc7", "ok");
    v["interval_seconds"] = json!(0);
    cases.push((v, "interval_seconds"));
    let mut v = heartbeat("pc7", "ok");
    v["dead_letters"] = json!(vec![v["dead_letters"][0].clone(); 51]);
    cases.push((v, "dead_letters"));
    for (body, why) in cases {
        let (status, answer) = post_json(&h, "/api/v1/heartbeats", DEVICE, body).await;
        assert_eq!(
            (status.as_u16(), code(&answer)),
            (400, "invalid_body"),
            "{why}"
        );
        assert!(
            answer["error"]["message"].as_str().unwrap().contains(why),
            "{answer}"
        );
    }
    let (status, _) = post_json(&h, "/api/v1/heartbeats", VIEWER, heartbeat("pc7", "ok")).await;
    assert_eq!(status, 403);
    let (status, _) = call(&h, "GET", "/api/v1/devices", DEVICE).await;
    assert_eq!(status, 403);
    assert_eq!(
        get_json(&h, "/api/v1/devices").await.1,
        json!([]),
        "nothing refused was kept"
    );
    // A camera status of a later agent is read as `unknown` (the device counted
    // camera_failed), not a reason to refuse the whole heartbeat.
    let mut v = heartbeat("pc7", "ok");
    v["cameras"][0]["status"] = json!("exploded");
    let (status, answer) = post_json(&h, "/api/v1/heartbeats", DEVICE, v).await;
    assert_eq!(status.as_u16(), 200, "{answer}");
    let devices = get_json(&h, "/api/v1/devices").await.1;
    assert_eq!(devices[0]["heartbeat"]["cameras"][0]["status"], "unknown");
    assert_eq!(devices[0]["state"], "camera_failed");
}

#[tokio::test]
async fn a_dead_letter_is_requeued_through_the_next_heartbeat() {
    let h = harness().await;
    assert_eq!(
        post_json(&h, "/api/v1/heartbeats", DEVICE, heartbeat("pc7", "ok"))
            .await
            .0,
        200
    );
    let frame = Uuid::now_v7();
    let uri = format!("/api/v1/devices/pc7/dead-letters/{frame}/requeue");
    assert_eq!(call(&h, "POST", &uri, VIEWER).await.0, 403);
    let (status, command) = call(&h, "POST", &uri, ADMIN).await;
    assert_eq!(status, 202, "{command}");
    assert_eq!(
        (command["action"].as_str(), command["frame_id"].as_str()),
        (Some("requeue"), Some(frame.to_string().as_str()))
    );
    let (status, body) = call(
        &h,
        "POST",
        &format!("/api/v1/devices/nobody/dead-letters/{frame}/requeue"),
        ADMIN,
    )
    .await;
    assert_eq!((status.as_u16(), code(&body)), (404, "not_found"));
    let (status, body) = call(
        &h,
        "POST",
        "/api/v1/devices/pc7/dead-letters/not-a-uuid/requeue",
        ADMIN,
    )
    .await;
    assert_eq!((status.as_u16(), code(&body)), (400, "invalid_id"));

    // Handed over with every answer until the device reports it done.
    for _ in 0..2 {
        let (_, ack) = post_json(&h, "/api/v1/heartbeats", DEVICE, heartbeat("pc7", "ok")).await;
        assert_eq!(ack["commands"], json!([command.clone()]));
    }
    assert_eq!(
        get_json(&h, "/api/v1/devices/pc7").await.1["pending_commands"],
        json!([command.clone()])
    );
    let mut done = heartbeat("pc7", "ok");
    done["commands_done"] = json!([command["id"]]);
    let (_, ack) = post_json(&h, "/api/v1/heartbeats", DEVICE, done).await;
    assert_eq!(ack["commands"], json!([]));
    assert_eq!(
        get_json(&h, "/api/v1/devices/pc7").await.1["pending_commands"],
        json!([])
    );
    // Another device cannot mark it done.
    let (_, other) = call(&h, "POST", &uri, ADMIN).await;
    let mut foreign = heartbeat("pc8", "ok");
    foreign["commands_done"] = json!([other["id"]]);
    post_json(&h, "/api/v1/heartbeats", DEVICE, foreign).await;
    assert_eq!(
        get_json(&h, "/api/v1/devices/pc7").await.1["pending_commands"],
        json!([other])
    );
}
