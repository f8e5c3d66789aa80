#![allow(clippy::unwrap_used)]

use super::*;

const EXAMPLE: &str = include_str!("../../../config/agent.example.toml");

fn raw(text: &str) -> RawConfig {
    toml::from_str(text).unwrap()
}

fn minimal() -> String {
    r#"
device_id = "d1"
facility = "yangjiang"
[sync]
endpoint = "http://127.0.0.1:1"
api_key = "k"
"#
    .to_string()
}

fn error_of(text: &str) -> String {
    Config::try_from(raw(text)).unwrap_err().to_string()
}

#[test]
fn the_example_config_parses_and_documents_every_key() {
    let raw: RawConfig = toml::from_str(EXAMPLE).unwrap();
    assert_eq!(raw.camera.len(), 4);
    let schema = serde_json::to_value(schemars::schema_for!(RawConfig)).unwrap();
    let missing = wiko_daemon::config::documented::undocumented(&schema, EXAMPLE);
    assert!(
        missing.is_empty(),
        "config/agent.example.toml does not document {missing:?}"
    );
}

#[test]
fn defaults_fill_what_is_left_out() {
    let cfg = Config::try_from(raw(&minimal())).unwrap();
    assert_eq!(cfg.sync.concurrency, 4);
    assert_eq!(cfg.buffer.when_full, WhenFull::DropOldest);
    assert_eq!(cfg.buffer.synchronous, Synchronous::Full);
    assert_eq!(cfg.http.listen.port(), 9464);
}

#[test]
fn edge_analysis_is_on_by_default_keeps_its_models_under_the_data_dir_and_can_be_off() {
    let cfg = Config::try_from(raw(&minimal())).unwrap();
    let edge = cfg.edge.unwrap();
    assert_eq!(edge.refresh, Duration::from_secs(300));
    assert_eq!(edge.model_dir, cfg.data_dir.join("models"));
    let off = Config::try_from(raw(&format!("{}[edge]\nenabled = false\n", minimal()))).unwrap();
    assert!(off.edge.is_none());
    let e = error_of(&format!("{}[edge]\nrefresh_secs = 0\n", minimal()));
    assert!(e.contains("edge.refresh_secs"), "{e}");
}

#[test]
fn errors_name_the_key() {
    let e = error_of(&minimal().replace("http://127.0.0.1:1", "ftp://x"));
    assert!(e.contains("sync.endpoint"), "{e}");
    let e = error_of(&minimal().replace("api_key = \"k\"", ""));
    assert!(e.contains("sync.api_key"), "{e}");
    let e = error_of(&minimal().replace("[sync]", "[buffer]\nmax_disk_bytes = 10\n[sync]"));
    assert!(e.contains("buffer.max_disk_bytes"), "{e}");
    let cam = r#"
[[camera]]
name = "c"
line = "l1"
station = "bad/station"
sku = "WK-KN-200"
source = { type = "synthetic" }
trigger = { type = "interval", interval_ms = 100 }
"#;
    let e = error_of(&format!("{}{cam}", minimal()));
    assert!(e.contains("camera[0].station"), "{e}");
    let folder_with_trigger = r#"
[[camera]]
name = "c"
line = "l1"
station = "s"
sku = "WK-KN-200"
source = { type = "folder", path = "/tmp/x" }
trigger = { type = "interval", interval_ms = 100 }
"#;
    let e = error_of(&format!("{}{folder_with_trigger}", minimal()));
    assert!(e.contains("camera[0].trigger"), "{e}");
}

#[test]
fn unknown_keys_are_refused() {
    let text = format!(
        "{}\nsurprise = 1\n",
        minimal().replace("[sync]", "bogus = 2\n[sync]")
    );
    assert!(toml::from_str::<RawConfig>(&text).is_err());
}

#[test]
fn the_api_key_can_come_from_a_file() {
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("key");
    std::fs::write(&key, "secret-key\n").unwrap();
    let text = minimal().replace(
        "api_key = \"k\"",
        &format!("api_key_file = {:?}", key.display().to_string()),
    );
    let cfg = Config::try_from(raw(&text)).unwrap();
    assert_eq!(cfg.sync.api_key, "secret-key");
    let missing = minimal().replace("api_key = \"k\"", "api_key_file = \"/nonexistent/key\"");
    assert!(error_of(&missing).contains("sync.api_key_file"));
}

#[test]
fn environment_overrides_reach_nested_keys() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("agent.toml");
    std::fs::write(&file, minimal()).unwrap();
    let env = [("WIKO_AGENT__SYNC__CONCURRENCY".to_string(), "9".to_string())]
        .into_iter()
        .collect();
    let cfg = Config::load_with_env(&file, Some(env)).unwrap();
    assert_eq!(cfg.sync.concurrency, 9);
}

fn camera_with(source: &str, trigger: &str) -> String {
    format!(
        "{}\n[[camera]]\nname = \"c\"\nline = \"l1\"\nstation = \"s\"\nsku = \"WK-KN-200\"\nsource = {source}\n{trigger}\n",
        minimal()
    )
}

#[test]
fn camera_sources_and_triggers_are_checked_by_key() {
    let http = "trigger = { type = \"http\" }";
    let e = error_of(&camera_with(
        r#"{ type = "rtsp", url = "http://cam/x" }"#,
        http,
    ));
    assert!(e.contains("camera[0].source.url"), "{e}");
    let e = error_of(&camera_with(
        r#"{ type = "http_snapshot", url = "rtsp://cam" }"#,
        http,
    ));
    assert!(e.contains("camera[0].source.url"), "{e}");
    let e = error_of(&camera_with(
        r#"{ type = "rtsp", url = "rtsp://cam/x" }"#,
        "",
    ));
    assert!(e.contains("camera[0].trigger") && e.contains("rtsp"), "{e}");
    let e = error_of(&camera_with(
        r#"{ type = "synthetic" }"#,
        "trigger = { type = \"mqtt\" }",
    ));
    assert!(
        e.contains("camera[0].trigger") && e.contains("[mqtt]"),
        "{e}"
    );
    let e = error_of(&camera_with(
        r#"{ type = "http_snapshot", url = "http://cam/snap.jpg", password = "p" }"#,
        http,
    ));
    assert!(e.contains("camera[0].source.username"), "{e}");
    let e = error_of(&camera_with(
        r#"{ type = "synthetic" }"#,
        "trigger = { type = \"http\" }\nstall_timeout_ms = 0",
    ));
    assert!(e.contains("camera[0].stall_timeout_ms"), "{e}");
    if !cfg!(feature = "genicam") {
        let e = error_of(&camera_with(r#"{ type = "genicam" }"#, http));
        assert!(
            e.contains("camera[0].source.type") && e.contains("genicam"),
            "{e}"
        );
    }
    let usb = r#"{ type = "v4l2", device = "/dev/v4l/by-id/usb-cam-video-index0" }"#;
    if cfg!(feature = "v4l2") {
        let e = error_of(&camera_with(
            r#"{ type = "v4l2", device = "0", fps = 0 }"#,
            http,
        ));
        assert!(e.contains("camera[0].source"), "{e}");
        let cfg = Config::try_from(raw(&camera_with(usb, http))).unwrap();
        assert!(matches!(
            cfg.cameras[0].source,
            SourceConfig::V4l2 {
                width: 1920,
                height: 1080,
                fps: 30,
                pixel_format: V4l2PixelFormat::Mjpeg,
                jpeg_quality: 90,
                ..
            }
        ));
    } else {
        let e = error_of(&camera_with(usb, http));
        assert!(
            e.contains("camera[0].source.type") && e.contains("v4l2"),
            "{e}"
        );
    }
}

#[test]
fn cron_and_plc_triggers_are_checked_by_key() {
    let synthetic = r#"{ type = "synthetic" }"#;
    let cron = |schedule: &str, zone: &str, extra: &str| {
        camera_with(
            synthetic,
            &format!(
                "trigger = {{ type = \"cron\", schedule = \"{schedule}\", timezone = \"{zone}\"{extra} }}"
            ),
        )
    };
    Config::try_from(raw(&cron(
        "0 6,14,22 * * *",
        "Europe/Berlin",
        ", sku = \"WK-REF-01\"",
    )))
    .unwrap();
    let e = error_of(&cron("0 25 * * *", "Europe/Berlin", ""));
    assert!(e.contains("camera[0].trigger.schedule"), "{e}");
    // Valid cron, but 30 February never comes.
    let e = error_of(&cron("0 0 30 2 *", "Europe/Berlin", ""));
    assert!(
        e.contains("camera[0].trigger.schedule") && e.contains("never"),
        "{e}"
    );
    let e = error_of(&cron("@daily", "Europe/Atlantis", ""));
    assert!(
        e.contains("camera[0].trigger.schedule") && e.contains("Europe/Atlantis"),
        "{e}"
    );
    let e = error_of(&cron("@daily", "UTC", ", lot = \"lot 7\""));
    assert!(e.contains("camera[0].trigger") && e.contains("lot"), "{e}");

    let plc = |coils: &str| {
        camera_with(
            synthetic,
            &format!(
                "trigger = {{ type = \"plc\", address = \"127.0.0.1:502\", trigger_coil = 0, busy_coil = 1, ready_coil = 2, error_coil = 3{coils} }}"
            ),
        )
    };
    Config::try_from(raw(&plc(", ok_coil = 4, ng_coil = 5"))).unwrap();
    let e = error_of(&plc(", ok_coil = 4, ng_coil = 4"));
    assert!(
        e.contains("camera[0].trigger") && e.contains("ng_coil"),
        "{e}"
    );
    let e = error_of(&plc(", ok_coil = 1"));
    assert!(e.contains("must differ"), "{e}");

    // Register mode: two holding registers, no coil.
    let registers = |keys: &str| {
        camera_with(
            synthetic,
            &format!("trigger = {{ type = \"plc\", address = \"127.0.0.1:502\"{keys} }}"),
        )
    };
    let cfg = Config::try_from(raw(&registers(
        ", trigger_register = 0, status_register = 1",
    )))
    .unwrap();
    let handshake =
        crate::trigger::plc::Handshake::from_config(cfg.cameras[0].trigger.as_ref().unwrap())
            .unwrap()
            .unwrap();
    assert_eq!(
        handshake.signals,
        crate::trigger::plc::Signals::Registers {
            trigger: 0,
            status: 1
        }
    );
    for (keys, bad_key, why) in [
        (
            ", trigger_register = 0",
            "trigger.status_register",
            "missing",
        ),
        (
            ", trigger_register = 3, status_register = 3",
            "trigger.status_register",
            "must differ",
        ),
        (
            ", trigger_register = 0, status_register = 1, busy_coil = 1",
            "trigger.trigger_register",
            "not both",
        ),
        ("", "trigger.trigger_coil", "missing"),
        (
            ", trigger_coil = 0, busy_coil = 1",
            "trigger.ready_coil",
            "missing",
        ),
    ] {
        let e = error_of(&registers(keys));
        assert!(
            e.contains(&format!("camera[0].{bad_key}")) && e.contains(why),
            "{keys}: {e}"
        );
    }
    let e = error_of(&registers(
        ", trigger_register = 0, status_register = 1, request_timeout_ms = 0",
    ));
    assert!(e.contains("camera[0].trigger.request_timeout_ms"), "{e}");
}

#[test]
fn two_plc_keys_on_one_coil_or_register_of_one_plc_are_refused_naming_both() {
    // See: issue #20 (two handshakes writing each other's signals).
    let camera = |name: &str, trigger: &str| {
        format!(
            "[[camera]]\nname = \"{name}\"\nline = \"l1\"\nstation = \"{name}\"\nsku = \"WK-KN-200\"\nsource = {{ type = \"synthetic\" }}\ntrigger = {{ type = \"plc\", {trigger} }}\n"
        )
    };
    let two = |first: &str, second: &str| {
        format!("{}{}{}", minimal(), camera("a", first), camera("b", second))
    };
    let coils = |address: &str, unit: u8, base: u16| {
        format!(
            "address = \"{address}\", unit_id = {unit}, trigger_coil = {}, busy_coil = {}, ready_coil = {}, error_coil = {}",
            base,
            base + 1,
            base + 2,
            base + 3
        )
    };
    let registers = |address: &str, trigger: u16, status: u16| {
        format!("address = \"{address}\", trigger_register = {trigger}, status_register = {status}")
    };
    let plc = "10.0.0.5:502";
    // Apart: other coils, another unit id, another PLC, or registers (another table).
    for (first, second) in [
        (coils(plc, 1, 0), coils(plc, 1, 4)),
        (coils(plc, 1, 0), coils(plc, 2, 0)),
        (coils(plc, 1, 0), coils("10.0.0.6:502", 1, 0)),
        (coils(plc, 1, 0), registers(plc, 0, 1)),
    ] {
        Config::try_from(raw(&two(&first, &second))).unwrap();
    }
    // The second camera's trigger coil is the first one's busy coil.
    let e = error_of(&two(&coils(plc, 1, 0), &coils(plc, 1, 1)));
    assert!(
        e.contains("camera[1].trigger.trigger_coil")
            && e.contains("camera[0].trigger.busy_coil")
            && e.contains("coil 1 of the PLC at 10.0.0.5:502 unit 1"),
        "{e}"
    );
    let e = error_of(&two(&registers(plc, 10, 11), &registers(plc, 12, 10)));
    assert!(
        e.contains("camera[1].trigger.status_register")
            && e.contains("camera[0].trigger.trigger_register")
            && e.contains("holding register 10"),
        "{e}"
    );
}

#[test]
fn a_snapshot_password_file_is_read_and_mqtt_defaults_fill_in() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("pw");
    std::fs::write(&file, "s3cret\n").unwrap();
    let text = camera_with(
        &format!(
            "{{ type = \"http_snapshot\", url = \"http://cam/snap.jpg\", username = \"u\", password_file = {:?} }}",
            file.display().to_string()
        ),
        "trigger = { type = \"mqtt\" }",
    )
    .replace("[sync]", "[mqtt]\nhost = \"broker\"\n[sync]");
    let cfg = Config::try_from(raw(&text)).unwrap();
    match &cfg.cameras[0].source {
        SourceConfig::HttpSnapshot { password, .. } => {
            assert_eq!(password.as_deref(), Some("s3cret"));
        }
        other => panic!("{other:?}"),
    }
    let mqtt = cfg.mqtt.unwrap();
    assert_eq!(
        (mqtt.port, mqtt.client_id.as_str()),
        (1883, "wiko-agent-d1")
    );
    assert_eq!(cfg.cameras[0].stall_timeout_ms, 5000);
}

#[test]
fn two_mqtt_cameras_may_not_share_a_station_topic() {
    let one = camera_with(r#"{ type = "synthetic" }"#, "trigger = { type = \"mqtt\" }")
        .replace("[sync]", "[mqtt]\nhost = \"broker\"\n[sync]");
    let two = format!(
        "{one}\n[[camera]]\nname = \"d\"\nline = \"l1\"\nstation = \"s\"\nsku = \"WK-KN-200\"\nsource = {{ type = \"synthetic\" }}\ntrigger = {{ type = \"mqtt\" }}\n"
    );
    let e = error_of(&two);
    assert!(e.contains("camera[1].trigger"), "{e}");
}

fn with_mqtt(lines: &str) -> String {
    minimal().replace(
        "[sync]",
        &format!("[mqtt]\nhost = \"localhost\"\n{lines}\n[sync]"),
    )
}

#[test]
fn mqtt_over_tls_reads_its_files_at_load_and_refuses_bad_ones() {
    let dir = tempfile::tempdir().unwrap();
    let pki = wiko_daemon::tls::testing::Pki::generate(dir.path()).unwrap();
    let path = |p: &std::path::Path| format!("{:?}", p.display().to_string());
    let files = format!(
        "tls = true\nca_file = {}\nclient_cert_file = {}\nclient_key_file = {}",
        path(&pki.ca),
        path(&pki.client_cert),
        path(&pki.client_key)
    );
    let mqtt = Config::try_from(raw(&with_mqtt(&files)))
        .unwrap()
        .mqtt
        .unwrap();
    assert!(mqtt.tls.is_some());
    assert_eq!(mqtt.port, 8883, "the MQTT-over-TLS port by default");
    let plain = Config::try_from(raw(&with_mqtt(""))).unwrap().mqtt.unwrap();
    assert!(plain.tls.is_none());
    assert_eq!(plain.port, 1883);

    let e = error_of(&with_mqtt(&format!("ca_file = {}", path(&pki.ca))));
    assert!(e.contains("mqtt.tls") && e.contains("tls = true"), "{e}");
    let missing = dir.path().join("nowhere.pem");
    let e = error_of(&with_mqtt(&format!(
        "tls = true\nca_file = {}",
        path(&missing)
    )));
    assert!(
        e.contains("mqtt.ca_file") && e.contains("nowhere.pem"),
        "{e}"
    );
    let e = error_of(&with_mqtt(&format!(
        "tls = true\nca_file = {}",
        path(&pki.client_key)
    )));
    assert!(
        e.contains("mqtt.ca_file") && e.contains("no certificate"),
        "{e}"
    );
    let e = error_of(&with_mqtt(&format!(
        "tls = true\nclient_cert_file = {}",
        path(&pki.client_cert)
    )));
    assert!(e.contains("mqtt.client_cert_file"), "{e}");
    let e = error_of(&with_mqtt(&format!(
        "tls = true\nca_file = {ca}\nclient_cert_file = {cert}\nclient_key_file = {cert}",
        ca = path(&pki.ca),
        cert = path(&pki.client_cert)
    )));
    assert!(
        e.contains("mqtt.client_key_file") && e.contains("no private key"),
        "{e}"
    );
}

#[test]
fn the_alert_image_link_and_the_outbox_bounds_have_defaults_and_are_checked() {
    let mqtt = Config::try_from(raw(&with_mqtt(""))).unwrap().mqtt.unwrap();
    assert_eq!(mqtt.image_base_url, "http://127.0.0.1:1", "sync.endpoint");
    assert_eq!(
        mqtt.outbox,
        OutboxLimits {
            max_alerts: 10_000,
            max_age: Duration::from_secs(86_400)
        }
    );
    let mqtt = Config::try_from(raw(&with_mqtt(
        "image_base_url = \"https://wiko.example.com/\"\noutbox_max_alerts = 5\noutbox_max_age_secs = 60",
    )))
    .unwrap()
    .mqtt
    .unwrap();
    assert_eq!(mqtt.image_base_url, "https://wiko.example.com");
    assert_eq!(mqtt.outbox.max_alerts, 5);
    let e = error_of(&with_mqtt("image_base_url = \"wiko.example.com\""));
    assert!(e.contains("mqtt.image_base_url"), "{e}");
    let e = error_of(&with_mqtt("outbox_max_alerts = 0"));
    assert!(e.contains("mqtt.outbox_max_alerts"), "{e}");
    let e = error_of(&with_mqtt("outbox_max_age_secs = 0"));
    assert!(e.contains("mqtt.outbox_max_age_secs"), "{e}");
}
