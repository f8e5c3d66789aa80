//! What the benches that drive a whole `wiko-cloud` share (`live.rs`, `remote.rs`,
//! `remote_tokens.rs`): one started in this process as `wiko-cloud serve` starts it (MQTT off,
//! three keys, limits out of the way), synthetic knives, multipart forms and the chef's knife's
//! golden model.

use std::time::Duration;

use wiko_synth::SynthDefect;

pub const DEVICE: &str = "bench-device-key-000000001";
pub const ADMIN: &str = "bench-admin-key-0000000001";
pub const VIEWER: &str = "bench-viewer-key-000000001";

/// A `wiko-cloud` on a free port with its data in `dir`, three keys (device, admin, viewer)
/// and `tables` (TOML: a `[database]`, a `[remote]`, or nothing for the embedded store alone);
/// its URL, once it answers. It stops when `stop` is cancelled.
pub async fn serve_cloud(
    dir: &std::path::Path,
    tables: &str,
    stop: tokio_util::sync::CancellationToken,
) -> String {
    let toml = format!(
        "listen = \"127.0.0.1:0\"\ndata_dir = {:?}\n[mqtt]\ndisabled = true\n\
         [auth.limits]\nrequests_per_second_per_key = 1000000\nrequests_per_second_per_address = 1000000\n\
         [[auth.keys]]\nname = \"d\"\nscope = \"device\"\nkey = \"{DEVICE}\"\n\
         [[auth.keys]]\nname = \"a\"\nscope = \"admin\"\nkey = \"{ADMIN}\"\n\
         [[auth.keys]]\nname = \"v\"\nscope = \"viewer\"\nkey = \"{VIEWER}\"\n{tables}",
        dir.display().to_string(),
    );
    let config = wiko_cloud::config::Config::from_toml(&toml).expect("valid bench config");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let url = format!("http://{}", listener.local_addr().expect("address"));
    tokio::spawn(async move { wiko_cloud::serve(config, listener, stop.cancelled_owned()).await });
    for _ in 0..200 {
        if reqwest::get(format!("{url}/health")).await.is_ok() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    url
}

/// A multipart form of images (field `image`) and text fields.
pub fn form(images: &[&[u8]], fields: &[(&'static str, &str)]) -> reqwest::multipart::Form {
    let mut form = reqwest::multipart::Form::new();
    for image in images {
        let part = reqwest::multipart::Part::bytes(image.to_vec())
            .file_name("x.jpg")
            .mime_str("image/jpeg")
            .expect("a MIME type");
        form = form.part("image", part);
    }
    for (name, value) in fields {
        form = form.text(*name, value.to_string());
    }
    form
}

/// A synthetic chef's knife as the camera gives it, at `size` (scaled from 640×480).
pub fn knife(defect: Option<SynthDefect>, seed: u64, size: (u32, u32)) -> Vec<u8> {
    let part = wiko_synth::render(&wiko_synth::SHAPES[0], defect, seed);
    let jpeg = wiko_synth::part_jpeg(&part).expect("a JPEG");
    if size == (640, 480) {
        return jpeg;
    }
    let scaled = image::load_from_memory(&jpeg)
        .expect("the knife decodes")
        .resize_exact(size.0, size.1, image::imageops::FilterType::Triangle)
        .to_rgb8();
    wiko_synth::encode_jpeg(scaled.as_raw(), size.0, size.1).expect("a JPEG")
}

/// Fits the chef's knife's (WK-KN-200) golden model on 8 good knives of `size`.
pub async fn fit_golden(client: &reqwest::Client, url: &str, size: (u32, u32)) {
    let good: Vec<Vec<u8>> = (0..8).map(|i| knife(None, 40_000 + i, size)).collect();
    let good: Vec<&[u8]> = good.iter().map(Vec::as_slice).collect();
    let fitted = client
        .post(format!("{url}/api/v1/skus/WK-KN-200/golden"))
        .header("x-api-key", ADMIN)
        .multipart(form(&good, &[]))
        .send()
        .await
        .expect("golden upload");
    assert!(fitted.status().is_success(), "{}", fitted.status());
}

/// `POST /api/v1/analyze` of `form` with the device key: the result's JSON, or `None` when the
/// call or its answer failed.
pub async fn analyze(
    client: &reqwest::Client,
    url: &str,
    form: reqwest::multipart::Form,
) -> Option<serde_json::Value> {
    client
        .post(format!("{url}/api/v1/analyze"))
        .header("x-api-key", DEVICE)
        .multipart(form)
        .send()
        .await
        .ok()?
        .json()
        .await
        .ok()
}
