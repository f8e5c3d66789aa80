//! The dashboard in Chromium (feature `browser-tests`: the system's `chromium` and
//! `playwright-core` from `tests/browser/`, both installed by `.ci/run`): a real `wiko-cloud`
//! with synthetic parts from an agent's path (frames of two SKUs from one device, judged by
//! golden models), then `tests/browser/dashboard.mjs` signs in and reads each page's numbers
//! from the DOM, which must be the API's. Screenshots of every page are left in
//! `target/dashboard-screenshots/`.

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

use serde_json::{Value, json};
use wiko_e2e::{
    ADMIN_KEY, Cloud, DEVICE_KEY, VIEWER_KEY, bin, free_port, manifest_rows, wait_until,
};
use wiko_wire::FrameMeta;

/// Where the screenshots go: beside the binaries' profile directory.
fn screenshots() -> PathBuf {
    let profile = bin("wiko-cloud")
        .parent()
        .and_then(|p| p.parent())
        .map(PathBuf::from)
        .unwrap();
    profile.join("dashboard-screenshots")
}

/// A frame of `line1-pc` for an image of the dataset in `dir`.
fn frame_meta(
    row: &std::collections::HashMap<String, String>,
    image: &[u8],
    seq: usize,
) -> FrameMeta {
    let sku = row["group_id"].clone();
    FrameMeta {
        frame_id: uuid::Uuid::now_v7(),
        device_id: "line1-pc".into(),
        facility: "yangjiang".into(),
        line: "l1".into(),
        station: if sku == "WK-KN-200" {
            "grinding"
        } else {
            "polish"
        }
        .into(),
        sku,
        part_id: Some(format!("P{seq:04}")),
        lot: Some("LOT-7".into()),
        captured_at: chrono::Utc::now(),
        seq: seq as u64 + 1,
        image_blake3: wiko_wire::frame::image_digest(image),
        edge: None,
    }
}

/// Sends the parts of a synthetic dataset as the agent `line1-pc` would, one station per SKU;
/// the last NG part is kept back (its meta and image file), for the Live page.
async fn send_parts(cloud: &Cloud, dir: &std::path::Path) -> (usize, Value) {
    let status = Command::new(bin("wiko-agent"))
        .args([
            "synth",
            "--count",
            "6",
            "--seed",
            "777",
            "--defect-rate",
            "0.5",
        ])
        .arg("--out")
        .arg(dir)
        .stdout(Stdio::null())
        .status()
        .unwrap();
    assert!(status.success());
    let http = reqwest::Client::new();
    let rows = manifest_rows(&dir.join("manifest.csv")).unwrap();
    let mut held_frame = None;
    let held = rows.iter().rposition(|r| r["label"] == "defect").unwrap();
    for (seq, row) in rows.iter().enumerate() {
        let image = std::fs::read(dir.join(&row["file"])).unwrap();
        let meta = frame_meta(row, &image, seq);
        if seq == held {
            let ng = json!({"meta": meta, "image": dir.join(&row["file"])});
            held_frame = Some(ng);
            continue;
        }
        let frame_id = meta.frame_id;
        let form = reqwest::multipart::Form::new()
            .part(
                "meta",
                reqwest::multipart::Part::bytes(serde_json::to_vec(&meta).unwrap())
                    .mime_str("application/json")
                    .unwrap(),
            )
            .part(
                "image",
                reqwest::multipart::Part::bytes(image)
                    .file_name("part.jpg")
                    .mime_str("image/jpeg")
                    .unwrap(),
            );
        let answer = http
            .put(format!("{}/api/v1/frames/{frame_id}", cloud.url()))
            .header("X-API-Key", DEVICE_KEY)
            .multipart(form)
            .send()
            .await
            .unwrap();
        assert!(answer.status().is_success(), "{}", answer.status());
    }
    (rows.len() - 1, held_frame.unwrap())
}

#[tokio::test]
async fn the_dashboard_shows_the_api_numbers_in_chromium() {
    let dir = tempfile::tempdir().unwrap();
    let (port, mqtt) = (free_port(), free_port());
    let cloud = Cloud::start(dir.path(), port, mqtt).await.unwrap();
    cloud.calibrate(dir.path()).await.unwrap();
    let (parts, ng_frame) = send_parts(&cloud, &dir.path().join("parts")).await;
    let analyses = wait_until(Duration::from_secs(60), "every part judged", || async {
        let all = cloud.analyses().await.ok()?;
        (all.len() == parts && all.iter().all(wiko_e2e::judged_by_cloud)).then_some(all)
    })
    .await
    .unwrap();
    let ng: Vec<&Value> = analyses
        .iter()
        .filter(|a| a["defect_detected"] == true)
        .collect();
    assert!(!ng.is_empty(), "the dataset has NG parts");
    assert!(ng.len() >= 2, "two NG parts: one confirmed, one a false NG");
    assert!(
        analyses.len() - ng.len() >= 3,
        "three OK parts, to review at once"
    );
    let first_ng = ng[0];
    let expect = json!({
        "parts": parts,
        "ng": ng.len(),
        "ng_id": first_ng["id"],
        "ng_boxes": first_ng["defects"].as_array().map_or(0, Vec::len),
        "ng_model_version": first_ng["model_version"],
        "defect_types": ng
            .iter()
            .flat_map(|a| a["defects"].as_array().unwrap().iter().map(|d| d["type"].to_string()))
            .collect::<std::collections::BTreeSet<_>>()
            .len(),
        "false_ng_id": ng[1]["id"],
        "false_ng_sku": ng[1]["product_sku"],
        "skus": {"WK-KN-200": 30, "WK-PR-090": 30},
        "devices": ["line1-pc"],
    });
    let shots = screenshots();
    std::fs::create_dir_all(&shots).unwrap();
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("browser");
    let out = Command::new("node")
        .arg("dashboard.mjs")
        .current_dir(&script)
        .env("WIKO_URL", cloud.url())
        .env("WIKO_KEY", VIEWER_KEY)
        .env("WIKO_EXPECT", expect.to_string())
        .env("WIKO_SHOTS", &shots)
        .env("WIKO_DEVICE_KEY", DEVICE_KEY)
        .env("WIKO_ADMIN_KEY", ADMIN_KEY)
        .env("WIKO_NG_FRAME", ng_frame.to_string())
        .output()
        .expect("node runs (tests/browser: npm ci)");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "{stdout}\n{stderr}\ncloud log:\n{}",
        cloud.process.log_text()
    );
    println!("{stdout}");
    // The review given in the browser counts in the SKU's capability.
    let sku = first_ng["product_sku"].as_str().unwrap();
    let capability: Value = reqwest::Client::new()
        .get(format!("{}/api/v1/capability?sku={sku}", cloud.url()))
        .header("X-API-Key", VIEWER_KEY)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(capability["true_positives"], 1, "{capability}");
    for page in [
        "signin",
        "overview",
        "live",
        "results",
        "detail",
        "golden",
        "golden-set",
        "results-reviewed",
        "capability",
        "golden-added",
        "fleet",
        "detail-tablet",
    ] {
        let shot = shots.join(format!("{page}.png"));
        assert!(shot.exists(), "{} is missing\n{stdout}", shot.display());
    }
}
