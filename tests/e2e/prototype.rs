use std::process::Command;

use wiko_e2e::{Cloud, DEVICE_KEY, bin, free_port};

/// The prototype's own check, with curl, unchanged. See PRODUCT.md "Compatibility".
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_prototype_curl_check_works_unchanged() {
    let dir = tempfile::tempdir().unwrap();
    let cloud = Cloud::start(&dir.path().join("cloud"), free_port(), free_port())
        .await
        .unwrap();
    let images = dir.path().join("images");
    let status = Command::new(bin("wiko-agent"))
        .args(["synth", "--out", images.to_str().unwrap(), "--count", "1"])
        .status()
        .unwrap();
    assert!(status.success());
    let knife = images.join("images/WK-KN-200_00000.jpg");
    let url = cloud.url();
    let analyze = |extra: &[&str]| {
        let form = format!("image=@{}", knife.display());
        Command::new("curl")
            .args(["-sS", "-X", "POST", &format!("{url}/api/v1/analyze")])
            .args(extra)
            .args([
                "-F",
                &form,
                "-F",
                "product_sku=WK-KN-200",
                "-F",
                "facility=yangjiang",
            ])
            .output()
            .unwrap()
    };
    let out = analyze(&["-H", &format!("X-API-Key: {DEVICE_KEY}")]);
    let body: serde_json::Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stdout)));
    assert_eq!(body["facility"], "yangjiang");
    assert_eq!(body["product_sku"], "WK-KN-200");
    assert!(body["defect_id"].as_str().unwrap().starts_with("DEF-"));
    assert!(body["defect_detected"].is_boolean());
    assert!(body["id"].is_string());

    let out = Command::new("curl")
        .args(["-sS", &format!("{url}/health")])
        .output()
        .unwrap();
    let health: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(health["status"], "healthy");

    let out = analyze(&["-o", "/dev/null", "-w", "%{http_code}"]);
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "401",
        "no key, no analysis"
    );
}
