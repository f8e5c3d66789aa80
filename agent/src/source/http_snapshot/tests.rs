//! Digest auth against a local camera that demands it: an axum server that checks each answer
//! with its own MD5 / SHA-256 hashes (RFC 7616, `qop=auth`), not with the client's crate.

#![allow(clippy::unwrap_used)]

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use md5::Md5;
use sha2::{Digest, Sha256};

use super::*;

const JPEG: [u8; 4] = [0xFF, 0xD8, 0xFF, 0xD9];
const REALM: &str = "IP Camera";
const USER: &str = "admin";
const PASSWORD: &str = "s3cret";

#[derive(Default)]
struct Camera {
    /// `MD5` or `SHA-256`.
    algorithm: &'static str,
    nonce: String,
    /// Every request's Authorization header, in order.
    seen: Vec<Option<String>>,
    /// Nonce counts of the accepted answers.
    accepted_nc: Vec<String>,
}

type Shared = Arc<Mutex<Camera>>;

fn hash(algorithm: &str, text: &str) -> String {
    match algorithm {
        "MD5" => hex::encode(Md5::digest(text.as_bytes())),
        _ => hex::encode(Sha256::digest(text.as_bytes())),
    }
}

/// `Digest a="b", c=d, …` as a map.
fn fields(header: &str) -> HashMap<String, String> {
    let rest = header.strip_prefix("Digest ").unwrap_or("");
    let mut map = HashMap::new();
    let (mut key, mut value, mut in_key, mut quoted) = (String::new(), String::new(), true, false);
    for c in rest.chars().chain([',']) {
        match c {
            '"' => quoted = !quoted,
            '=' if in_key => in_key = false,
            ',' if !quoted => {
                map.insert(key.trim().to_string(), value.trim().to_string());
                (key, value, in_key) = (String::new(), String::new(), true);
            }
            c if in_key => key.push(c),
            c => value.push(c),
        }
    }
    map
}

fn valid(camera: &Camera, header: &str) -> Option<String> {
    let f = fields(header);
    let get = |k: &str| f.get(k).map(String::as_str).unwrap_or_default();
    if get("username") != USER || get("realm") != REALM || get("nonce") != camera.nonce {
        return None;
    }
    let alg = camera.algorithm;
    let ha1 = hash(alg, &format!("{USER}:{REALM}:{PASSWORD}"));
    let ha2 = hash(alg, &format!("GET:{}", get("uri")));
    let expected = hash(
        alg,
        &format!(
            "{ha1}:{}:{}:{}:auth:{ha2}",
            camera.nonce,
            get("nc"),
            get("cnonce")
        ),
    );
    (get("qop") == "auth" && get("uri") == "/snap.jpg?ch=1" && get("response") == expected)
        .then(|| get("nc").to_string())
}

async fn snapshot(State(camera): State<Shared>, headers: HeaderMap) -> Response {
    let mut camera = camera.lock().unwrap();
    let auth = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    camera.seen.push(auth.clone());
    if let Some(nc) = auth.as_deref().and_then(|a| valid(&camera, a)) {
        camera.accepted_nc.push(nc);
        return ([(header::CONTENT_TYPE, "image/jpeg")], JPEG.to_vec()).into_response();
    }
    // A Basic challenge first, as cameras that offer both do: the digest one must be found.
    let challenge = format!(
        r#"Digest realm="{REALM}", qop="auth", algorithm={}, nonce="{}", opaque="0a1b""#,
        camera.algorithm, camera.nonce
    );
    (
        StatusCode::UNAUTHORIZED,
        [
            (
                header::WWW_AUTHENTICATE,
                format!(r#"Basic realm="{REALM}""#),
            ),
            (header::WWW_AUTHENTICATE, challenge),
        ],
    )
        .into_response()
}

async fn serve(algorithm: &'static str) -> (String, Shared) {
    let camera = Arc::new(Mutex::new(Camera {
        algorithm,
        nonce: "n-1".into(),
        ..Camera::default()
    }));
    let app = Router::new()
        .route("/snap.jpg", get(snapshot))
        .with_state(camera.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/snap.jpg?ch=1", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    (url, camera)
}

fn snapshot_camera(url: &str, password: &str, auth: &str) -> HttpSnapshot {
    let cam: CameraConfig = toml::from_str(&format!(
        r#"
name = "ipcam"
line = "l1"
station = "s1"
sku = "WK-KN-200"
source = {{ type = "http_snapshot", url = "{url}", username = "{USER}", password = "{password}", auth = "{auth}" }}
trigger = {{ type = "http" }}
"#
    ))
    .unwrap();
    HttpSnapshot::new(&cam)
}

#[tokio::test]
async fn digest_md5_and_sha256_answer_the_challenge_then_reuse_it_one_request_per_part() {
    // See: issue #20 (digest auth for http_snapshot).
    for algorithm in ["MD5", "SHA-256"] {
        let (url, camera) = serve(algorithm).await;
        let mut source = snapshot_camera(&url, PASSWORD, "digest");
        // Opening takes one snapshot: challenged, then answered.
        source.open().await.unwrap();
        for _ in 0..2 {
            assert_eq!(source.grab().await.unwrap().jpeg, JPEG);
        }
        let camera = camera.lock().unwrap();
        assert_eq!(camera.seen.len(), 4, "{algorithm}: {:?}", camera.seen);
        assert!(
            camera.seen[0].is_none(),
            "no credentials before the challenge"
        );
        assert_eq!(
            camera.accepted_nc,
            ["00000001", "00000002", "00000003"],
            "{algorithm}"
        );
        assert!(
            camera.seen[1]
                .as_deref()
                .unwrap()
                .contains(&format!("algorithm={algorithm}")),
            "{:?}",
            camera.seen[1]
        );
    }
}

#[tokio::test]
async fn a_new_nonce_is_answered_and_a_wrong_password_fails_the_camera() {
    let (url, camera) = serve("SHA-256").await;
    let mut source = snapshot_camera(&url, PASSWORD, "digest");
    source.open().await.unwrap();
    // The camera forgets its nonce: the kept answer is refused once, the new one taken.
    camera.lock().unwrap().nonce = "n-2".into();
    assert_eq!(source.grab().await.unwrap().jpeg, JPEG);
    assert_eq!(camera.lock().unwrap().accepted_nc, ["00000001", "00000001"]);

    let mut wrong = snapshot_camera(&url, "guess", "digest");
    let e = wrong.open().await.unwrap_err().to_string();
    assert!(e.contains("401"), "{e}");
    // Basic credentials are not what this camera takes either.
    let mut basic = snapshot_camera(&url, PASSWORD, "basic");
    let e = basic.open().await.unwrap_err().to_string();
    assert!(e.contains("401"), "{e}");
    assert!(!e.contains(PASSWORD), "{e}");
}
