//! Harness for end-to-end scenarios: starts the real `wiko-cloud` and `wiko-agent` binaries
//! on 127.0.0.1 with temporary directories and free ports, and subscribes to their MQTT
//! messages. The binaries are found next to the test executable (`target/<profile>/`), so the
//! test command builds them first: `cargo build --workspace --bins && cargo test --workspace`.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
use serde_json::Value;

pub mod mosquitto;
pub mod proxy;

pub const DEVICE_KEY: &str = "e2e-device-key-0000000001";
pub const VIEWER_KEY: &str = "e2e-viewer-key-0000000001";
pub const ADMIN_KEY: &str = "e2e-admin-key-00000000001";

/// A binary of this workspace, built by `cargo build --workspace --bins`.
pub fn bin(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("the test binary has a path");
    // target/<profile>/deps/e2e-<hash> -> target/<profile>/<name>
    let dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("target/<profile>/deps");
    let path = dir.join(name);
    assert!(
        path.exists(),
        "{} is missing: run `cargo build --workspace --bins` first",
        path.display()
    );
    path
}

/// Whether the cloud has judged a result (a JSON analysis): neither pending nor provisional
/// on the agent's own verdict alone (edge analysis).
pub fn judged_by_cloud(analysis: &Value) -> bool {
    match analysis["status"].as_str() {
        Some("pending") => false,
        Some("provisional") => analysis["verdicts"]
            .as_array()
            .is_some_and(|v| v.iter().any(|v| v["source"] != "edge")),
        _ => true,
    }
}

/// A benchmark's command line: the value after `flag` (`--parts 200`), if given.
pub fn flag_value(args: &[String], flag: &str) -> Option<String> {
    args.iter()
        .position(|a| a == flag)
        .and_then(|i| args.get(i + 1).cloned())
}

/// One chef's knife as the synthetic camera renders it (`wiko-agent synth`, seed 7), good or
/// with a painted defect, as JPEG: what a snapshot camera serves.
pub fn knife_jpeg(dir: &Path, defective: bool) -> anyhow::Result<Vec<u8>> {
    let out = dir.join(if defective { "synth-ng" } else { "synth-ok" });
    let status = Command::new(bin("wiko-agent"))
        .arg("synth")
        .arg("--out")
        .arg(&out)
        .args(["--count", "1", "--seed", "7", "--defect-rate"])
        .arg(if defective { "1" } else { "0" })
        .stdout(Stdio::null())
        .status()?;
    anyhow::ensure!(status.success(), "wiko-agent synth failed");
    Ok(std::fs::read(out.join("images/WK-KN-200_00000.jpg"))?)
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port on 127.0.0.1")
}

/// Polls `check` every 100 ms until it returns `Some` or `timeout` passes.
pub async fn wait_until<T, F, Fut>(timeout: Duration, what: &str, mut check: F) -> anyhow::Result<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let start = Instant::now();
    loop {
        if let Some(v) = check().await {
            return Ok(v);
        }
        if start.elapsed() > timeout {
            bail!("timed out after {timeout:?} waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The rows of a dataset manifest (`shared/datasets` format), each by column name.
pub fn manifest_rows(path: &Path) -> anyhow::Result<Vec<HashMap<String, String>>> {
    let mut reader =
        csv::Reader::from_path(path).with_context(|| format!("reading {}", path.display()))?;
    let headers = reader.headers()?.clone();
    reader
        .records()
        .map(|r| {
            Ok(headers
                .iter()
                .map(String::from)
                .zip(r?.iter().map(String::from))
                .collect())
        })
        .collect()
}

/// A child process killed when dropped; its output goes to a log file in its directory.
pub struct Process {
    child: Child,
    pub log: PathBuf,
}

impl Process {
    /// The process's peak resident memory so far (`VmHWM`), in bytes.
    pub fn peak_rss(&self) -> Option<u64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).ok()?;
        let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
        let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
        Some(kib * 1024)
    }

    /// The CPU time the process has used so far (user and system, all its threads), from
    /// `/proc/<pid>/stat` in clock ticks of 10 ms (Linux's `USER_HZ`).
    pub fn cpu_time(&self) -> Option<Duration> {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.child.id())).ok()?;
        // The fields after the command name, which ends with the last ')'.
        let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
        // utime and stime: fields 14 and 15 of the line, 12 and 13 after the name.
        let ticks: u64 =
            fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
        Some(Duration::from_millis(ticks * 10))
    }

    fn spawn(bin_name: &str, args: &[&str], log: PathBuf) -> anyhow::Result<Process> {
        Process::program(&bin(bin_name), args, log)
    }

    /// Any program (a server the test needs), its output appended to `log`.
    pub fn program(path: &Path, args: &[&str], log: PathBuf) -> anyhow::Result<Process> {
        let out = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)?;
        let child = Command::new(path)
            .args(args)
            .env("RUST_LOG", "info")
            .stdout(Stdio::from(out.try_clone()?))
            .stderr(Stdio::from(out))
            .spawn()
            .with_context(|| format!("starting {}", path.display()))?;
        Ok(Process { child, log })
    }

    /// SIGTERM, then wait for a clean exit.
    pub fn terminate(&mut self) -> anyhow::Result<std::process::ExitStatus> {
        let pid = self.child.id().to_string();
        Command::new("kill").args(["-TERM", &pid]).status()?;
        let start = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait()? {
                return Ok(status);
            }
            if start.elapsed() > Duration::from_secs(30) {
                bail!("process did not exit within 30 s of SIGTERM");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// SIGKILL: no chance to clean up.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Still running (not exited, nor reaped).
    pub fn alive(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A running `wiko-cloud` with its embedded store and broker.
pub struct Cloud {
    pub process: Process,
    pub port: u16,
    pub mqtt_port: u16,
    pub dir: PathBuf,
}

/// How a test cloud is set up.
#[derive(Clone, Default)]
pub struct Setup {
    /// Publish to the broker already listening on `mqtt_port` instead of starting one there.
    pub external_broker: bool,
    /// PostgreSQL and S3 instead of the embedded store.
    pub production: Option<Production>,
    /// More configuration, appended as is (e.g. an `[analysis]` table).
    pub extra: String,
    /// More keys of the `[mqtt]` table.
    pub mqtt_extra: String,
    /// More top-level keys (e.g. `max_image_pixels = 1000`).
    pub top: String,
}

/// A fresh schema in the test database and a fresh key prefix in the test bucket, from
/// `WIKOTEST_DATABASE_URL`, `WIKOTEST_S3_ENDPOINT` and `WIKOTEST_S3_BUCKET` (credentials:
/// `AWS_ACCESS_KEY_ID`/`AWS_SECRET_ACCESS_KEY`, inherited by the cloud).
#[derive(Clone)]
pub struct Production {
    pub database_url: reqwest::Url,
    pub s3_endpoint: reqwest::Url,
    pub bucket: String,
    pub schema: String,
}

impl Production {
    pub async fn fresh() -> anyhow::Result<Production> {
        let var = |name: &str| std::env::var(name).with_context(|| format!("{name} is not set"));
        let database_url: reqwest::Url = var("WIKOTEST_DATABASE_URL")?.parse()?;
        let schema = format!("wiko_e2e_{}", uuid::Uuid::new_v4().simple());
        let status = Command::new("psql")
            .args([
                "-q",
                database_url.as_str(),
                "-c",
                &format!("CREATE SCHEMA {schema}"),
            ])
            .status()
            .context("running psql")?;
        anyhow::ensure!(status.success(), "creating schema {schema} failed");
        Ok(Production {
            database_url,
            s3_endpoint: var("WIKOTEST_S3_ENDPOINT")?.parse()?,
            bucket: var("WIKOTEST_S3_BUCKET")?,
            schema,
        })
    }

    /// The same services, reached through other ports on 127.0.0.1 (proxies).
    pub fn via(&self, database_port: u16, s3_port: u16) -> Production {
        let mut p = self.clone();
        let _ = p.database_url.set_port(Some(database_port));
        let _ = p.s3_endpoint.set_port(Some(s3_port));
        p
    }

    /// The services' own ports.
    pub fn ports(&self) -> (u16, u16) {
        (
            self.database_url.port().unwrap_or(5432),
            self.s3_endpoint.port().unwrap_or(80),
        )
    }

    fn toml(&self) -> String {
        format!(
            "[database]\nurl = \"{db}?options[search_path]={schema}\"\nacquire_timeout_ms = 1000\n\
             outbox_lease_secs = 3\n\
             [images.s3]\nbucket = \"{bucket}\"\nendpoint = \"{s3}\"\nprefix = \"{schema}/\"\n\
             path_style = true\nallow_http = true\nrequest_timeout_ms = 5000\n",
            db = self.database_url,
            schema = self.schema,
            bucket = self.bucket,
            s3 = self.s3_endpoint.as_str().trim_end_matches('/'),
        )
    }
}

impl Cloud {
    /// A cloud with its embedded broker on `mqtt_port`.
    pub async fn start(dir: &Path, port: u16, mqtt_port: u16) -> anyhow::Result<Cloud> {
        Cloud::start_with(dir, port, mqtt_port, &Setup::default()).await
    }

    /// A cloud publishing to an external broker already listening on `mqtt_port`.
    pub async fn start_external_broker(
        dir: &Path,
        port: u16,
        mqtt_port: u16,
    ) -> anyhow::Result<Cloud> {
        let setup = Setup {
            external_broker: true,
            ..Setup::default()
        };
        Cloud::start_with(dir, port, mqtt_port, &setup).await
    }

    /// Writes `dir/cloud.toml` (data in `dir/data`).
    pub fn write_config(
        dir: &Path,
        port: u16,
        mqtt_port: u16,
        setup: &Setup,
    ) -> anyhow::Result<PathBuf> {
        std::fs::create_dir_all(dir)?;
        let broker = if setup.external_broker {
            format!("url = \"mqtt://127.0.0.1:{mqtt_port}\"\nclient_id = \"wiko-e2e-{port}\"")
        } else {
            format!("embedded_listen = \"127.0.0.1:{mqtt_port}\"")
        };
        let production = setup
            .production
            .as_ref()
            .map(Production::toml)
            .unwrap_or_default();
        let config = dir.join("cloud.toml");
        std::fs::write(
            &config,
            format!(
                r#"
listen = "127.0.0.1:{port}"
data_dir = {data:?}
{top}
[mqtt]
{broker}
{mqtt_extra}
[[auth.keys]]
name = "agent"
scope = "device"
key = "{DEVICE_KEY}"
[[auth.keys]]
name = "viewer"
scope = "viewer"
key = "{VIEWER_KEY}"
[[auth.keys]]
name = "quality"
scope = "admin"
key = "{ADMIN_KEY}"
{production}
{extra}
"#,
                data = dir.join("data").display().to_string(),
                extra = setup.extra,
                mqtt_extra = setup.mqtt_extra,
                top = setup.top,
            ),
        )?;
        Ok(config)
    }

    pub async fn start_with(
        dir: &Path,
        port: u16,
        mqtt_port: u16,
        setup: &Setup,
    ) -> anyhow::Result<Cloud> {
        let config = Cloud::write_config(dir, port, mqtt_port, setup)?;
        let config = config.display().to_string();
        let process = Process::spawn(
            "wiko-cloud",
            &["serve", "--config", &config],
            dir.join("cloud.log"),
        )?;
        let cloud = Cloud {
            process,
            port,
            mqtt_port,
            dir: dir.to_path_buf(),
        };
        let url = format!("{}/health", cloud.url());
        wait_until(Duration::from_secs(30), "the cloud's /health", || async {
            let r = reqwest::get(&url).await.ok()?;
            r.status().is_success().then_some(())
        })
        .await
        .with_context(|| cloud.process.log_text())?;
        Ok(cloud)
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// The embedded broker's subscriber account (user, password), from the data directory.
    pub fn mqtt_subscriber_login(&self) -> anyhow::Result<(String, String)> {
        let path = self.dir.join("data").join("mqtt-credentials.json");
        let text = std::fs::read_to_string(&path).with_context(|| path.display().to_string())?;
        let accounts: Value = serde_json::from_str(&text)?;
        let field = |k: &str| {
            accounts["subscriber"][k]
                .as_str()
                .unwrap_or_default()
                .to_string()
        };
        Ok((field("username"), field("password")))
    }

    /// A subscriber to this cloud's embedded broker.
    pub async fn subscriber(&self) -> anyhow::Result<Subscriber> {
        Subscriber::start_as(self.mqtt_port, Some(self.mqtt_subscriber_login()?), None).await
    }

    /// Calibrates both synthetic SKUs as a quality engineer would: `wiko-agent synth` makes 30
    /// good parts of each (seeds unlike any camera's), which are uploaded to the golden API.
    pub async fn calibrate(&self, work: &Path) -> anyhow::Result<()> {
        self.calibrate_with(work, Ok).await
    }

    /// [`Cloud::calibrate`] with each good part's JPEG passed through `prepare` before its
    /// upload (a benchmark's other frame size).
    pub async fn calibrate_with(
        &self,
        work: &Path,
        prepare: impl Fn(Vec<u8>) -> anyhow::Result<Vec<u8>>,
    ) -> anyhow::Result<()> {
        let out = work.join("golden");
        let status = Command::new(bin("wiko-agent"))
            .args([
                "synth",
                "--count",
                "30",
                "--seed",
                "424242",
                "--defect-rate",
                "0",
            ])
            .arg("--out")
            .arg(&out)
            .stdout(Stdio::null())
            .status()?;
        anyhow::ensure!(status.success(), "wiko-agent synth failed");
        let mut by_sku: HashMap<String, Vec<PathBuf>> = HashMap::new();
        for row in manifest_rows(&out.join("manifest.csv"))? {
            by_sku
                .entry(row["group_id"].clone())
                .or_default()
                .push(out.join(&row["file"]));
        }
        let http = reqwest::Client::new();
        for (sku, files) in by_sku {
            let mut form = reqwest::multipart::Form::new();
            for f in files {
                form = form.part(
                    "image",
                    reqwest::multipart::Part::bytes(prepare(std::fs::read(&f)?)?)
                        .file_name("good.jpg"),
                );
            }
            let answer: Value = http
                .post(format!("{}/api/v1/skus/{sku}/golden", self.url()))
                .header("X-API-Key", ADMIN_KEY)
                .multipart(form)
                .send()
                .await?
                .error_for_status()?
                .json()
                .await?;
            anyhow::ensure!(answer["model"]["version"] == "v1", "{sku}: {answer}");
        }
        Ok(())
    }

    /// The sum of a Prometheus counter over its labels, from `/metrics` (0 when absent).
    pub async fn counter(&self, name: &str) -> f64 {
        let text = async {
            reqwest::Client::new()
                .get(format!("{}/metrics", self.url()))
                .header("X-API-Key", VIEWER_KEY)
                .send()
                .await?
                .text()
                .await
        };
        sum_metric(&text.await.unwrap_or_default(), name, "")
    }

    /// Every analysis, paging through the API.
    pub async fn analyses(&self) -> anyhow::Result<Vec<Value>> {
        let http = reqwest::Client::new();
        let mut out = Vec::new();
        let mut cursor: Option<String> = None;
        loop {
            let mut url = format!("{}/api/v1/analyses?limit=500", self.url());
            if let Some(c) = &cursor {
                url.push_str(&format!("&cursor={c}"));
            }
            let page: Value = http
                .get(&url)
                .header("X-API-Key", VIEWER_KEY)
                .send()
                .await?
                .error_for_status()?
                .json()
                .await?;
            out.extend(page["items"].as_array().cloned().unwrap_or_default());
            match page["next_cursor"].as_str() {
                Some(c) => cursor = Some(c.to_string()),
                None => return Ok(out),
            }
        }
    }
}

/// The sum of Prometheus metric `name` over its lines of `text` that contain `label`.
fn sum_metric(text: &str, name: &str, label: &str) -> f64 {
    text.lines()
        .filter(|l| l.starts_with(name) && l.contains(label))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// One camera of an agent.
pub struct Camera {
    pub name: &'static str,
    pub station: &'static str,
    pub sku: &'static str,
    pub source: Source,
}

pub enum Source {
    /// `parts` synthetic parts, one every `interval_ms`.
    Synthetic {
        seed: u64,
        parts: u64,
        interval_ms: u64,
    },
    /// A hot folder.
    Folder(PathBuf),
    /// Any source and trigger, as the camera's TOML lines (`source = …`, `trigger = …`, …).
    Toml(String),
}

impl Camera {
    pub fn synthetic(
        name: &'static str,
        station: &'static str,
        sku: &'static str,
        seed: u64,
        parts: u64,
        interval_ms: u64,
    ) -> Camera {
        Camera {
            name,
            station,
            sku,
            source: Source::Synthetic {
                seed,
                parts,
                interval_ms,
            },
        }
    }

    fn toml(&self) -> String {
        let source = match &self.source {
            Source::Synthetic {
                seed,
                parts,
                interval_ms,
            } => format!(
                "source = {{ type = \"synthetic\", seed = {seed}, defect_rate = 0.25 }}\n\
                 trigger = {{ type = \"interval\", interval_ms = {interval_ms}, max_parts = {parts} }}"
            ),
            Source::Folder(path) => format!(
                "source = {{ type = \"folder\", path = {:?}, settle_ms = 200, poll_interval_ms = 50 }}",
                path.display().to_string()
            ),
            Source::Toml(lines) => lines.clone(),
        };
        format!(
            "\n[[camera]]\nname = \"{}\"\nline = \"l1\"\nstation = \"{}\"\nsku = \"{}\"\n{source}\n",
            self.name, self.station, self.sku
        )
    }
}

/// A running `wiko-agent`.
pub struct Agent {
    pub process: Process,
    pub http_port: u16,
    pub dir: PathBuf,
}

impl Agent {
    pub fn write_config(
        dir: &Path,
        cloud_port: u16,
        http_port: u16,
        cameras: &[Camera],
    ) -> anyhow::Result<PathBuf> {
        Agent::write_config_as(dir, cloud_port, http_port, cameras, "e2e-pc1", DEVICE_KEY)
    }

    /// As [`Agent::write_config`], for device `device_id` with API key `key`.
    pub fn write_config_as(
        dir: &Path,
        cloud_port: u16,
        http_port: u16,
        cameras: &[Camera],
        device_id: &str,
        key: &str,
    ) -> anyhow::Result<PathBuf> {
        std::fs::create_dir_all(dir)?;
        let mut text = format!(
            r#"
device_id = "{device_id}"
facility = "yangjiang"
data_dir = {data:?}
[buffer]
synchronous = "normal"
[sync]
endpoint = "http://127.0.0.1:{cloud_port}"
api_key = "{key}"
concurrency = 4
backoff_initial_ms = 100
backoff_max_secs = 1
poll_interval_ms = 200
request_timeout_secs = 10
heartbeat_secs = 1
[http]
listen = "127.0.0.1:{http_port}"
"#,
            data = dir.join("data").display().to_string()
        );
        for c in cameras {
            text.push_str(&c.toml());
        }
        let path = dir.join("agent.toml");
        std::fs::write(&path, text)?;
        Ok(path)
    }

    pub async fn start(dir: &Path, http_port: u16) -> anyhow::Result<Agent> {
        let config = dir.join("agent.toml").display().to_string();
        let process = Process::spawn(
            "wiko-agent",
            &["run", "--config", &config],
            dir.join("agent.log"),
        )?;
        let agent = Agent {
            process,
            http_port,
            dir: dir.to_path_buf(),
        };
        wait_until(Duration::from_secs(20), "the agent's /healthz", || {
            agent.health()
        })
        .await
        .with_context(|| agent.process.log_text())?;
        Ok(agent)
    }

    pub async fn health(&self) -> Option<wiko_wire::AgentHealth> {
        let r = reqwest::get(format!("http://127.0.0.1:{}/healthz", self.http_port))
            .await
            .ok()?;
        r.json().await.ok()
    }

    /// One camera's health, from `/healthz`.
    pub async fn camera(&self, name: &str) -> Option<wiko_wire::CameraHealth> {
        self.health()
            .await?
            .cameras
            .into_iter()
            .find(|c| c.name == name)
    }

    /// `POST /trigger/{camera}` with `body`: the status code and the answer.
    pub async fn trigger(
        &self,
        camera: &str,
        body: &Value,
    ) -> anyhow::Result<(u16, wiko_wire::TriggerAck)> {
        let r = reqwest::Client::new()
            .post(format!(
                "http://127.0.0.1:{}/trigger/{camera}",
                self.http_port
            ))
            .json(body)
            .send()
            .await?;
        let status = r.status().as_u16();
        Ok((status, r.json().await?))
    }

    /// Frames captured so far, from the agent's own metrics.
    pub async fn captured(&self) -> Option<u64> {
        Some(self.metric("wiko_agent_frames_captured_total", "").await? as u64)
    }

    /// The sum of one of the agent's metrics over its lines that contain `label`.
    pub async fn metric(&self, name: &str, label: &str) -> Option<f64> {
        let text = reqwest::get(format!("http://127.0.0.1:{}/metrics", self.http_port))
            .await
            .ok()?
            .text()
            .await
            .ok()?;
        Some(sum_metric(&text, name, label))
    }
}

/// An IP camera's snapshot URL on 127.0.0.1: `GET /snap.jpg` with HTTP basic auth
/// `wiko:secret` answers `jpeg`, or 503 while [`SnapshotServer::set_up`] is false; any other
/// credentials get 401.
pub struct SnapshotServer {
    pub port: u16,
    up: Arc<std::sync::atomic::AtomicBool>,
    pub requests: Arc<std::sync::atomic::AtomicU64>,
    task: tokio::task::JoinHandle<()>,
}

impl SnapshotServer {
    pub async fn start(jpeg: Vec<u8>) -> anyhow::Result<SnapshotServer> {
        use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let port = listener.local_addr()?.port();
        let up = Arc::new(AtomicBool::new(true));
        let requests = Arc::new(AtomicU64::new(0));
        let jpeg = Arc::new(jpeg);
        let (flag, count) = (up.clone(), requests.clone());
        let task = tokio::spawn(async move {
            while let Ok((mut conn, _)) = listener.accept().await {
                let (flag, count, jpeg) = (flag.clone(), count.clone(), jpeg.clone());
                tokio::spawn(async move {
                    let mut head = Vec::new();
                    let mut byte = [0u8; 1];
                    while !head.ends_with(b"\r\n\r\n") {
                        match conn.read(&mut byte).await {
                            Ok(1) => head.push(byte[0]),
                            _ => return,
                        }
                    }
                    count.fetch_add(1, Ordering::SeqCst);
                    let head = String::from_utf8_lossy(&head).into_owned();
                    // `wiko:secret` in base64.
                    let authorized = head.lines().any(|l| {
                        l.to_ascii_lowercase().starts_with("authorization:")
                            && l.trim_end().ends_with("Basic d2lrbzpzZWNyZXQ=")
                    });
                    let (status, body): (&str, &[u8]) = if !authorized {
                        ("401 Unauthorized", b"")
                    } else if !flag.load(Ordering::SeqCst) {
                        ("503 Service Unavailable", b"")
                    } else {
                        ("200 OK", &jpeg[..])
                    };
                    let reply = format!(
                        "HTTP/1.1 {status}\r\ncontent-type: image/jpeg\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
                        body.len()
                    );
                    let _ = conn.write_all(reply.as_bytes()).await;
                    let _ = conn.write_all(body).await;
                });
            }
        });
        Ok(SnapshotServer {
            port,
            up,
            requests,
            task,
        })
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}/snap.jpg", self.port)
    }

    /// Whether snapshots are served (true) or answered 503 (false).
    pub fn set_up(&self, up: bool) {
        self.up.store(up, std::sync::atomic::Ordering::SeqCst);
    }
}

impl Drop for SnapshotServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Collects every MQTT message under `wiko/#`.
pub struct Subscriber {
    pub messages: Arc<Mutex<Vec<(String, Value)>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Subscriber {
    /// A subscriber to the broker on `port` (anonymous: the machine's Mosquitto).
    pub async fn start(port: u16) -> anyhow::Result<Subscriber> {
        Subscriber::start_as(port, None, None).await
    }

    /// A subscriber logging in with `login` (user, password); with a `session` id, its
    /// session (subscriptions, messages it missed) stays on the broker while it is away.
    pub async fn start_as(
        port: u16,
        login: Option<(String, String)>,
        session: Option<&str>,
    ) -> anyhow::Result<Subscriber> {
        let id = session.map_or_else(
            || format!("e2e-{}", uuid::Uuid::new_v4().simple()),
            str::to_string,
        );
        let mut opts = MqttOptions::new(id, "127.0.0.1", port);
        opts.set_keep_alive(Duration::from_secs(30));
        opts.set_max_packet_size(256 * 1024, 256 * 1024);
        opts.set_clean_session(session.is_none());
        if let Some((user, password)) = login {
            opts.set_credentials(user, password);
        }
        let (client, mut events) = AsyncClient::new(opts, 64);
        let messages: Arc<Mutex<Vec<(String, Value)>>> = Arc::default();
        let subscribed = Arc::new(tokio::sync::Notify::new());
        let (sink, ready) = (messages.clone(), subscribed.clone());
        let task = tokio::spawn(async move {
            loop {
                match events.poll().await {
                    Ok(Event::Incoming(Packet::ConnAck(_))) => {
                        let _ = client.subscribe("wiko/#", QoS::AtLeastOnce).await;
                    }
                    Ok(Event::Incoming(Packet::SubAck(_))) => ready.notify_one(),
                    Ok(Event::Incoming(Packet::Publish(p))) => {
                        if let Ok(v) = serde_json::from_slice::<Value>(&p.payload) {
                            sink.lock()
                                .expect("not poisoned")
                                .push((p.topic.clone(), v));
                        }
                    }
                    Ok(_) => {}
                    Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
                }
            }
        });
        tokio::time::timeout(Duration::from_secs(20), subscribed.notified())
            .await
            .context("subscribing to the broker")?;
        Ok(Subscriber { messages, task })
    }

    /// Messages per topic leaf (`alert`, `result`) keyed by `result_id`, with counts.
    pub fn by_leaf(&self, leaf: &str) -> HashMap<String, (usize, Value)> {
        let mut out: HashMap<String, (usize, Value)> = HashMap::new();
        for (topic, v) in self.messages.lock().expect("not poisoned").iter() {
            if topic.ends_with(&format!("/{leaf}")) {
                let id = v["result_id"].as_str().unwrap_or_default().to_string();
                let entry = out.entry(id).or_insert((0, v.clone()));
                entry.0 += 1;
            }
        }
        out
    }
}

impl Drop for Subscriber {
    fn drop(&mut self) {
        self.task.abort();
    }
}
