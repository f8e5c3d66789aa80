#![allow(clippy::unwrap_used)]

use super::*;

const EXAMPLE: &str = include_str!("../../../config/cloud.example.toml");

fn parse(text: &str) -> Result<Config, ConfigError> {
    Config::try_from(toml::from_str::<RawConfig>(text).unwrap())
}

#[test]
fn the_example_config_parses_and_documents_every_key() {
    let raw: RawConfig = toml::from_str(EXAMPLE).unwrap();
    assert_eq!(raw.auth.keys.len(), 2);
    let schema = serde_json::to_value(schemars::schema_for!(RawConfig)).unwrap();
    let missing = wiko_daemon::config::documented::undocumented(&schema, EXAMPLE);
    assert!(
        missing.is_empty(),
        "config/cloud.example.toml does not document {missing:?}"
    );
}

#[test]
fn defaults_give_the_prototype_port_and_an_embedded_broker() {
    let cfg = parse("").unwrap();
    assert_eq!(cfg.listen.port(), 5001);
    let Broker::Embedded(embedded) = &cfg.broker else {
        panic!("an embedded broker expected: {:?}", cfg.broker);
    };
    assert_eq!(embedded.listen, "127.0.0.1:1883".parse().unwrap());
    assert!(embedded.credentials_file.ends_with("mqtt-credentials.json"));
    assert_eq!(cfg.public_url, "http://127.0.0.1:5001");
}

#[test]
fn an_external_broker_url_is_parsed() {
    let cfg = parse("[mqtt]\nurl = \"mqtt://10.0.0.5:1884\"\n").unwrap();
    assert!(
        matches!(&cfg.broker, Broker::External { host, port: 1884, login: None } if host == "10.0.0.5"),
        "{:?}",
        cfg.broker
    );
    let e = parse("[mqtt]\nurl = \"http://x\"\n")
        .unwrap_err()
        .to_string();
    assert!(e.contains("mqtt.url"), "{e}");
}

#[test]
fn keys_are_kept_as_hashes_and_errors_name_the_key() {
    let cfg =
        parse("[[auth.keys]]\nname = \"a\"\nscope = \"viewer\"\nkey = \"0123456789abcdef\"\n")
            .unwrap();
    assert_eq!(cfg.keys[0].sha256, crate::auth::hash("0123456789abcdef"));
    let e = parse("[[auth.keys]]\nname = \"a\"\nscope = \"viewer\"\nkey = \"short\"\n")
        .unwrap_err()
        .to_string();
    assert!(e.contains("auth.keys[0].key"), "{e}");
    let e = parse("[[auth.keys]]\nname = \"a\"\nscope = \"viewer\"\n")
        .unwrap_err()
        .to_string();
    assert!(e.contains("auth.keys[0]"), "{e}");
    assert!(
        toml::from_str::<RawConfig>(
            "[[auth.keys]]\nname = \"a\"\nscope = \"root\"\nkey = \"0123456789abcdef\"\n"
        )
        .is_err()
    );
}

#[test]
fn unknown_keys_are_refused() {
    assert!(toml::from_str::<RawConfig>("surprise = 1\n").is_err());
    assert!(toml::from_str::<RawConfig>("[analysis]\nworker = 3\n").is_err());
}

#[test]
fn environment_overrides_reach_nested_keys() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("cloud.toml");
    std::fs::write(&file, "").unwrap();
    let env = [("WIKO_CLOUD__ANALYSIS__WORKERS".to_string(), "7".to_string())]
        .into_iter()
        .collect();
    assert_eq!(
        Config::load_with_env(&file, Some(env))
            .unwrap()
            .analysis
            .workers,
        7
    );
}

#[test]
fn production_storage_is_chosen_by_config_with_clear_errors() {
    let cfg = parse("").unwrap();
    assert!(matches!(cfg.database, Database::Embedded) && cfg.s3.is_none());
    let cfg = parse(
        "[database]\nurl = \"postgres://wiko@db:5432/wiko\"\nmax_connections = 4\n\
         [images.s3]\nbucket = \"frames\"\nendpoint = \"http://127.0.0.1:8333\"\n\
         allow_http = true\npath_style = true\nprefix = \"site/\"\n",
    )
    .unwrap();
    let Database::Postgres {
        settings,
        migrate_on_start,
    } = &cfg.database
    else {
        panic!("postgres expected");
    };
    assert_eq!((settings.max_connections, *migrate_on_start), (4, true));
    let s3 = cfg.s3.unwrap();
    assert_eq!(
        (s3.bucket.as_str(), s3.prefix.as_str(), s3.path_style),
        ("frames", "site/", true)
    );

    let dir = tempfile::tempdir().unwrap();
    let url_file = dir.path().join("url");
    std::fs::write(&url_file, "postgres://wiko:secret@db/wiko\n").unwrap();
    let cfg = parse(&format!(
        "[database]\nurl_file = {:?}\n",
        url_file.display().to_string()
    ))
    .unwrap();
    assert!(
        matches!(cfg.database, Database::Postgres { settings, .. } if settings.url == "postgres://wiko:secret@db/wiko")
    );

    for (text, key) in [
        ("[database]\nurl = \"mysql://x\"\n", "database.url"),
        (
            "[database]\nurl = \"postgres://x\"\nurl_file = \"/f\"\n",
            "database.url",
        ),
        (
            "[database]\nurl = \"postgres://x\"\nmax_connections = 0\n",
            "database.max_connections",
        ),
        (
            "[images.s3]\nbucket = \"b\"\nendpoint = \"http://h\"\n",
            "images.s3.endpoint",
        ),
        (
            "[images.s3]\nbucket = \"b\"\nprefix = \"p\"\n",
            "images.s3.prefix",
        ),
        (
            "[images.s3]\nbucket = \"b\"\naccess_key_id = \"k\"\n",
            "images.s3.access_key_id",
        ),
        (
            "[analysis]\njob_lease_secs = 0\n",
            "analysis.job_lease_secs",
        ),
    ] {
        let err = parse(text).unwrap_err().to_string();
        assert!(err.contains(key), "{text}: {err}");
    }
}

#[test]
fn a_remote_model_is_configured_with_its_key_kept_out_of_logs() {
    let cfg = parse(
        "[remote]\nkind = \"azure_openai\"\nendpoint = \"https://x.openai.azure.com/\"\n\
         model = \"gpt-4o\"\napi_key = \"secret-azure-key-123\"\n",
    )
    .unwrap();
    let remote = cfg.remote.as_ref().unwrap();
    assert_eq!(remote.endpoint, "https://x.openai.azure.com");
    assert!(!format!("{cfg:?}").contains("secret-azure-key-123"));
    let e = parse("[remote]\nkind = \"azure_openai\"\nendpoint = \"https://x\"\nmodel = \"m\"\n")
        .unwrap_err()
        .to_string();
    assert!(e.contains("remote.api_key"), "{e}");
    let e = parse(
        "[remote]\nkind = \"openai_compatible\"\nendpoint = \"http://x/v1\"\nmodel = \"m\"\n\
         [[remote.skus]]\nsku = \"A\"\ntaxonomy = [\"dragon\"]\n",
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("remote.skus[0].taxonomy"), "{e}");
}

#[test]
fn the_deployment_budget_is_scaled_to_its_window() {
    use crate::analysis::remote::config::DeploymentBudget;
    let table =
        "[remote]\nkind = \"openai_compatible\"\nendpoint = \"http://x/v1\"\nmodel = \"m\"\n";
    assert_eq!(parse(table).unwrap().remote.unwrap().deployment, None);
    let cfg = parse(&format!(
        "{table}deployment_tokens_per_minute = 30000\ndeployment_requests_per_minute = 100\n\
         deployment_window_secs = 10\n"
    ))
    .unwrap();
    assert_eq!(
        cfg.remote.unwrap().deployment,
        Some(DeploymentBudget {
            window: std::time::Duration::from_secs(10),
            tokens: 5000,
            // 100 a minute is 16.7 per 10 s: 16, so six windows never allow more than 100.
            requests: 16,
        })
    );
    let cfg = parse(&format!("{table}deployment_requests_per_minute = 6\n")).unwrap();
    let budget = cfg.remote.unwrap().deployment.unwrap();
    assert_eq!((budget.tokens, budget.requests), (u64::MAX, 6));
    for (extra, key) in [
        (
            "deployment_window_secs = 0\n",
            "remote.deployment_window_secs",
        ),
        (
            "deployment_tokens_per_minute = 600\ndeployment_window_secs = 1\n",
            "remote.deployment_tokens_per_minute",
        ),
        (
            "deployment_requests_per_minute = 30\ndeployment_window_secs = 1\n",
            "remote.deployment_requests_per_minute",
        ),
    ] {
        let e = parse(&format!("{table}{extra}")).unwrap_err().to_string();
        assert!(e.contains(key), "{extra}: {e}");
    }
}

#[test]
fn deferrals_are_capped_and_the_image_mode_is_read() {
    use crate::analysis::remote::config::ImageMode;
    let table =
        "[remote]\nkind = \"openai_compatible\"\nendpoint = \"http://x/v1\"\nmodel = \"m\"\n";
    let remote = parse(table).unwrap().remote.unwrap();
    assert_eq!(remote.max_deferral, std::time::Duration::from_secs(3600));
    assert_eq!(remote.image, ImageMode::Frame);
    let remote = parse(&format!(
        "{table}max_deferral_secs = 0\nimage = \"regions\"\n"
    ))
    .unwrap()
    .remote
    .unwrap();
    assert_eq!(remote.max_deferral, std::time::Duration::ZERO);
    assert_eq!(remote.image, ImageMode::Regions);
    let e = parse(&format!("{table}max_deferral_secs = 604801\n"))
        .unwrap_err()
        .to_string();
    assert!(e.contains("remote.max_deferral_secs"), "{e}");
}

#[test]
fn confident_ng_parts_are_sent_unless_a_factor_of_1_or_more_is_set() {
    let table =
        "[remote]\nkind = \"openai_compatible\"\nendpoint = \"http://x/v1\"\nmodel = \"m\"\n";
    assert_eq!(
        parse(table).unwrap().remote.unwrap().confident_ng_above,
        None
    );
    let remote = parse(&format!("{table}confident_ng_above = 2.5\n"))
        .unwrap()
        .remote
        .unwrap();
    assert_eq!(remote.confident_ng_above, Some(2.5));
    for bad in ["0.5", "-1.0", "nan"] {
        let e = parse(&format!("{table}confident_ng_above = {bad}\n"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("remote.confident_ng_above"), "{bad}: {e}");
    }
}

#[test]
fn the_dashboard_secret_is_long_enough_and_may_come_from_a_file() {
    let cfg = parse("").unwrap();
    assert!(cfg.dashboard.session_secret.is_none(), "random per start");
    assert_eq!(cfg.dashboard.session_ttl_secs, 43_200);
    let e = parse("[dashboard]\nsession_secret = \"short\"\n")
        .unwrap_err()
        .to_string();
    assert!(e.contains("dashboard.session_secret"), "{e}");
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("secret");
    std::fs::write(&file, "0123456789abcdef0123456789abcdef\n").unwrap();
    let cfg = parse(&format!(
        "[dashboard]\nsession_secret_file = {:?}\nsecure_cookies = true\n",
        file.display().to_string()
    ))
    .unwrap();
    assert_eq!(
        cfg.dashboard.session_secret.as_deref(),
        Some(&b"0123456789abcdef0123456789abcdef"[..])
    );
    assert!(cfg.dashboard.secure_cookies);
    let e = parse("[dashboard]\nsession_ttl_secs = 5\n")
        .unwrap_err()
        .to_string();
    assert!(e.contains("dashboard.session_ttl_secs"), "{e}");
}

#[test]
fn the_plant_clock_is_checked_and_its_shifts_sorted() {
    let cfg =
        parse("[dashboard]\nutc_offset_minutes = 480\nshift_starts = [\"22:00\", \"06:00\"]\n")
            .unwrap();
    assert_eq!(cfg.dashboard.plant.utc_offset_minutes, 480);
    let starts: Vec<String> = cfg
        .dashboard
        .plant
        .shift_starts
        .iter()
        .map(|t| t.format("%H:%M").to_string())
        .collect();
    assert_eq!(starts, ["06:00", "22:00"]);
    for bad in [
        "utc_offset_minutes = 900",
        "shift_starts = [\"6h\"]",
        "shift_starts = []",
    ] {
        let e = parse(&format!("[dashboard]\n{bad}\n"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("dashboard."), "{bad}: {e}");
    }
}

#[test]
fn published_events_are_kept_from_a_day_to_a_hundred_years() {
    for days in ["0", "36501", "3000000"] {
        let e = parse(&format!("[mqtt]\npublished_events_days = {days}\n"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("mqtt.published_events_days"), "{days}: {e}");
    }
    for days in ["1", "36500"] {
        parse(&format!("[mqtt]\npublished_events_days = {days}\n")).unwrap();
    }
}
