use std::process::Command;

use wiko_e2e::bin;

/// README's first command, shortened: the demo shows parts arriving and NG alerts going out.
#[test]
fn the_demo_shows_results_and_ng_alerts_within_thirty_seconds() {
    let out = Command::new(bin("wiko-demo"))
        .args([
            "--port",
            "0",
            "--interval-ms",
            "150",
            "--duration-secs",
            "25",
        ])
        .env("RUST_LOG", "warn")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("viewer key:"), "{stdout}");
    assert!(stdout.contains("mosquitto_sub -h 127.0.0.1 -p"), "{stdout}");
    let last = stdout
        .lines()
        .rfind(|l| l.starts_with("parts "))
        .expect("a summary line");
    let number_after = |label: &str| -> u64 {
        let rest = &last[last
            .find(label)
            .unwrap_or_else(|| panic!("{label} in {last}"))
            + label.len()..];
        rest.split_whitespace()
            .next()
            .and_then(|n| n.parse().ok())
            .unwrap_or(0)
    };
    // A newcomer's first screen: no warning from the cloud's own start-up, and every summary
    // line knows the agent's backlog.
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.contains("MQTT connection lost"), "{stderr}");
    for line in stdout.lines().filter(|l| l.starts_with("parts ")) {
        assert!(line.contains("backlog per camera {"), "{line}");
    }
    assert!(number_after("parts ") >= 60, "{last}");
    assert!(number_after("NG alerts ") >= 1, "{last}");
}
