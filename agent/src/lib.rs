//! `wiko-agent`: the edge daemon of the Wiko Defect Analyzer.
//!
//! A tour, in the order data flows:
//! - [`source`]: cameras (`synthetic`, `folder`, `genicam`, `v4l2`, `rtsp`, `http_snapshot`),
//!   one task each, with their health; each capture becomes a frame record committed to the
//!   buffer.
//! - [`edge`]: edge analysis: each frame judged with its SKU's model (pulled from the cloud,
//!   kept on disk) before it is buffered.
//! - [`trigger`]: what makes a part (`interval`, `cron`, `mqtt`, `http`, `plc`), through each
//!   camera's station.
//! - [`buffer`]: the SQLite (WAL) buffer, the source of truth; its module doc lists the invariants.
//! - [`sync`]: uploads buffered frames to the cloud at least once, with backoff and dead letters.
//! - [`mqtt`]: the agent's one MQTT connection: its status (retained, Last Will `offline`),
//!   its NG alerts from the buffer's outbox, `mqtt` triggers, heartbeats, model announcements.
//! - [`heartbeat`]: reports the agent's state to the cloud (the fleet view) and carries out the
//!   cloud's commands.
//! - [`http`]: local `/healthz`, `/metrics` and `POST /trigger/{camera}`.
//! - [`config`]: the TOML + environment configuration, validated before anything starts.
//! - [`telemetry`]: tracing and the Prometheus registry, with every metric name.
//! - [`watchdog`]: the systemd watchdog, pinged while the agent makes progress.
//!
//! [`run`] starts everything in order (buffer, HTTP, sync, cameras) and stops it in reverse when
//! the `shutdown` future completes: cameras stop triggering, sync finishes the uploads in flight,
//! then the HTTP server closes.

pub mod buffer;
pub mod config;
pub mod edge;
pub(crate) mod heartbeat;
pub(crate) mod http;
pub(crate) mod mqtt;
pub(crate) mod source;
pub(crate) mod sync;
pub(crate) mod telemetry;
pub(crate) mod trigger;
pub(crate) mod watchdog;

/// A camera frame's way to the JPEG the buffer stores, for `benches/frame.rs`: a V4L2 frame
/// (MJPEG passed through, raw pixels encoded) and the raw-pixel encoder GenICam frames take.
#[cfg(feature = "v4l2")]
pub mod frame {
    pub use crate::source::pixels::{Layout, encode};
    pub use crate::source::v4l2::{Pixels, RawFrame, to_jpeg};
}

use std::future::Future;
use std::sync::Arc;

use anyhow::Context as _;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{error, info, warn};

use crate::buffer::{Buffer, Limits};
use crate::config::{Config, TriggerConfig};
use crate::source::health::{Monitor, Registry};
use crate::trigger::Station;

/// The GenICam cameras Aravis can see, as `[device id, vendor, model, address]`; `None` when
/// this build lacks the `genicam` feature.
pub fn genicam_devices() -> Option<Vec<[String; 4]>> {
    #[cfg(feature = "genicam")]
    return Some(source::genicam::list());
    #[cfg(not(feature = "genicam"))]
    None
}

/// The V4L2 cameras this machine has, as `[device, name, /dev/videoN]` (the device by its
/// stable `/dev/v4l/by-id/…` link where it has one); `None` when this build lacks the `v4l2`
/// feature.
pub fn v4l2_devices() -> Option<Vec<[String; 3]>> {
    #[cfg(feature = "v4l2")]
    return Some(source::v4l2::list());
    #[cfg(not(feature = "v4l2"))]
    None
}

/// Runs the agent until `shutdown` completes.
pub async fn run(config: Config, shutdown: impl Future<Output = ()>) -> anyhow::Result<()> {
    // Install the metrics registry first: anything recorded before it would be lost.
    wiko_daemon::telemetry::prometheus();
    let path = config.data_dir.join("buffer.db");
    let limits = Limits {
        max_disk_bytes: config.buffer.max_disk_bytes,
        min_free_bytes: config.buffer.min_free_bytes,
        when_full: config.buffer.when_full,
        synchronous: config.buffer.synchronous,
    };
    let open_path = path.clone();
    let (buffer, quarantined) =
        tokio::task::spawn_blocking(move || Buffer::open(&open_path, limits))
            .await?
            .with_context(|| format!("opening the buffer at {}", path.display()))?;
    if let Some(aside) = quarantined {
        error!(moved_to = %aside.display(), "the buffer was corrupt: moved aside, started a fresh one");
        metrics::counter!(telemetry::BUFFER_QUARANTINED_TOTAL).increment(1);
    }
    let buffer = Arc::new(buffer);
    let stats = buffer.stats()?;
    info!(frames = stats.frames, bytes = stats.bytes, dead_letters = stats.dead_letters, path = %path.display(), "buffer open");

    let stop = CancellationToken::new();
    let tracker = TaskTracker::new();

    // Each camera's monitor and station exist before anything serves them.
    let mut registry = Registry::default();
    for cam in &config.cameras {
        registry.add(Monitor::new(&cam.name, cam.source_type()));
    }
    let health = Arc::new(registry);
    let mut stations = Vec::new();
    for cam in &config.cameras {
        let Some(monitor) = health.get(&cam.name).cloned() else {
            continue;
        };
        let (station, triggers) = Station::new(monitor);
        stations.push((cam.clone(), station, triggers));
    }
    let http_stations = stations
        .iter()
        .filter(|(cam, ..)| matches!(cam.trigger, Some(TriggerConfig::Http {})))
        .map(|(cam, station, _)| (cam.name.clone(), station.clone()))
        .collect();

    let listener = tokio::net::TcpListener::bind(config.http.listen)
        .await
        .with_context(|| format!("binding http.listen {}", config.http.listen))?;
    info!(addr = %listener.local_addr()?, "health and metrics listening");
    let http_stop = stop.clone();
    let app = http::router(http::AppState {
        buffer: buffer.clone(),
        health: health.clone(),
        stations: Arc::new(http_stations),
    });
    let http_task = tokio::spawn(async move {
        let served = axum::serve(listener, app)
            .with_graceful_shutdown(async move { http_stop.cancelled().await })
            .await;
        if let Err(e) = served {
            error!(error = %e, "health server failed");
        }
    });

    let wake = Arc::new(Notify::new());
    // One HTTP client (one connection pool) for uploads, heartbeats and model pulls.
    let client = sync::Client::new(
        &config.sync.endpoint,
        &config.sync.api_key,
        config.sync.request_timeout,
    )
    .context("building the HTTP client")?;
    let uploader =
        sync::Uploader::with_uplink(buffer.clone(), client.clone(), &config.sync, wake.clone());
    let sync_stop = CancellationToken::new();
    let sync_liveness = uploader.liveness();
    let sync_task = tokio::spawn(uploader.run(sync_stop.clone()));
    if let Some(timeout) = wiko_daemon::systemd::watchdog_timeout() {
        info!(?timeout, "systemd watchdog on");
        tracker.spawn(watchdog::run(
            buffer.clone(),
            sync_liveness,
            timeout,
            stop.child_token(),
        ));
    }
    // A model announced over MQTT is pulled at once.
    let (announced, announcements) = tokio::sync::mpsc::channel(16);
    let edge = match &config.edge {
        Some(edge) => Some(
            start_edge(
                &config,
                edge,
                client.clone(),
                announcements,
                &tracker,
                &stop,
            )
            .await?,
        ),
        None => None,
    };
    let first = config.cameras.first();
    let where_ = |f: fn(&config::CameraConfig) -> &String| {
        first.map_or_else(|| "unassigned".to_string(), |c| f(c).clone())
    };
    let identity = heartbeat::Identity {
        device_id: config.device_id.clone(),
        facility: config.facility.clone(),
        line: where_(|c| &c.line),
        station: where_(|c| &c.station),
    };
    let (to_broker, for_broker) = mqtt::outgoing();
    if let Some(interval) = config.sync.heartbeat {
        let heartbeats = heartbeat::Heartbeats {
            buffer: buffer.clone(),
            client,
            identity: identity.clone(),
            mqtt: config.mqtt.is_some().then(|| to_broker.clone()),
            interval,
            cameras: health.clone(),
            data_dir: config.data_dir.clone(),
            wake: wake.clone(),
            edge: edge.clone(),
        };
        tracker.spawn(heartbeats.run(stop.child_token()));
    }

    // NG frames queue their alert when the broker is the alerts' (`mqtt.alerts`) and there is
    // a verdict to make one.
    let alerts = config
        .mqtt
        .as_ref()
        .filter(|m| m.alerts && edge.is_some())
        .map(|m| mqtt::Alerts {
            outbox: Arc::new(buffer::AlertOutbox {
                image_base_url: m.image_base_url.clone(),
                limits: m.outbox,
            }),
            wake: Arc::new(Notify::new()),
        });
    if alerts.is_none() {
        // Alerts queued by a run that published them: nothing sends them now; dropped (their
        // frames unmarked), their parts are the cloud's to alert, and the outbox is empty.
        let buffer = buffer.clone();
        let dropped = tokio::task::spawn_blocking(move || buffer.abandon_alerts())
            .await?
            .context("dropping the alert outbox")?;
        if dropped.count > dropped.lost {
            warn!(
                dropped = dropped.count - dropped.lost,
                "alerts are off (mqtt.alerts): the alerts left in the outbox are dropped; the \
                 cloud alerts those parts"
            );
        }
    }
    let ctx = Arc::new(source::Context {
        buffer: buffer.clone(),
        wake: wake.clone(),
        device_id: config.device_id.clone(),
        facility: config.facility.clone(),
        health: health.clone(),
        edge: edge.clone(),
        alerts: alerts.clone(),
    });
    let mut mqtt_routes = Vec::new();
    for (cam, station, triggers) in stations {
        start_camera(
            &tracker,
            &stop,
            &ctx,
            cam,
            station,
            triggers,
            &mut mqtt_routes,
        );
    }
    if let Some(mqtt) = config.mqtt.clone() {
        let link = mqtt::Link {
            config: mqtt,
            identity,
            routes: mqtt_routes,
            buffer: buffer.clone(),
            alerts: alerts.map_or_else(|| Arc::new(Notify::new()), |a| a.wake),
            uploads: wake,
            models: edge.is_some().then(|| (skus(&config), announced)),
            outgoing: for_broker,
            answers: to_broker,
        };
        tracker.spawn(link.run(stop.child_token()));
    }
    tracker.close();
    info!(cameras = config.cameras.len(), device_id = %config.device_id, "agent running");
    wiko_daemon::systemd::ready(&format!(
        "{} cameras, {} frames buffered",
        config.cameras.len(),
        stats.frames
    ));

    shutdown.await;
    wiko_daemon::systemd::stopping();
    info!("shutting down: stopping cameras");
    stop.cancel();
    if tokio::time::timeout(std::time::Duration::from_secs(10), tracker.wait())
        .await
        .is_err()
    {
        warn!("a camera did not stop within 10 s");
    }
    sync_stop.cancel();
    let sync_deadline = config.sync.request_timeout + std::time::Duration::from_secs(5);
    if tokio::time::timeout(sync_deadline, sync_task)
        .await
        .is_err()
    {
        warn!("uploads in flight did not finish in time; their frames stay buffered");
    }
    let _ = http_task.await;
    info!("agent stopped");
    Ok(())
}

/// Loads the kept edge models and starts pulling the cameras' SKUs' models from the cloud.
async fn start_edge(
    config: &Config,
    edge: &config::EdgeConfig,
    client: sync::Client,
    announced: tokio::sync::mpsc::Receiver<String>,
    tracker: &TaskTracker,
    stop: &CancellationToken,
) -> anyhow::Result<Arc<edge::Models>> {
    let dir = edge.model_dir.clone();
    let models = tokio::task::spawn_blocking(move || edge::Models::open(&dir))
        .await?
        .with_context(|| format!("opening edge.model_dir {}", edge.model_dir.display()))?;
    let models = Arc::new(models);
    let skus = skus(config);
    info!(skus = skus.len(), dir = %edge.model_dir.display(), "edge analysis on");
    let first = edge::pull_all(&models, &client, &skus);
    if tokio::time::timeout(edge::FIRST_PULL_WAIT, first)
        .await
        .is_err()
    {
        warn!(
            "the cloud did not answer the first model pull in time; judging with the kept models"
        );
    }
    tracker.spawn(edge::run(
        models.clone(),
        client,
        skus,
        edge.refresh,
        announced,
        stop.child_token(),
    ));
    Ok(models)
}

/// The cameras' SKUs, each once.
fn skus(config: &Config) -> Vec<String> {
    let mut skus: Vec<String> = config.cameras.iter().map(|c| c.sku.clone()).collect();
    skus.sort();
    skus.dedup();
    skus
}

/// Starts one camera's task and its trigger; an MQTT-triggered station is added to `routes`.
fn start_camera(
    tracker: &TaskTracker,
    stop: &CancellationToken,
    ctx: &Arc<source::Context>,
    cam: config::CameraConfig,
    station: Arc<Station>,
    triggers: tokio::sync::mpsc::Receiver<trigger::Trigger>,
    routes: &mut Vec<trigger::mqtt::Route>,
) {
    let source = match source::build(&cam) {
        Ok(Some(source)) => source,
        Ok(None) => {
            // A folder: its files are its triggers.
            if let Some(monitor) = ctx.health.get(&cam.name) {
                monitor.set_status(wiko_wire::CameraStatus::Ok);
            }
            let (ctx, token) = (ctx.clone(), stop.child_token());
            tracker.spawn(async move { source::folder::run(&cam, &ctx, token).await });
            return;
        }
        Err(e) => {
            error!(camera = %cam.name, error = %e, "camera cannot be started");
            if let Some(monitor) = ctx.health.get(&cam.name) {
                monitor.error(wiko_wire::CameraStatus::Failed, &e.to_string());
            }
            return;
        }
    };
    match &cam.trigger {
        Some(TriggerConfig::Interval {
            interval_ms,
            max_parts,
        }) => {
            tracker.spawn(trigger::interval::run(
                station.clone(),
                std::time::Duration::from_millis(*interval_ms),
                *max_parts,
                stop.child_token(),
            ));
        }
        Some(TriggerConfig::Cron {
            schedule,
            timezone,
            sku,
            lot,
        }) => match trigger::cron::Schedule::parse(schedule, timezone) {
            Ok(schedule) => {
                let request = wiko_wire::TriggerRequest {
                    sku: sku.clone(),
                    lot: lot.clone(),
                    ..wiko_wire::TriggerRequest::default()
                };
                tracker.spawn(trigger::cron::run(
                    station.clone(),
                    schedule,
                    request,
                    chrono::Utc::now,
                    stop.child_token(),
                ));
            }
            // Validated with the configuration: cannot happen.
            Err(e) => error!(camera = %cam.name, error = %e, "the cron schedule is invalid"),
        },
        Some(TriggerConfig::Mqtt {}) => routes.push(trigger::mqtt::Route::new(
            &ctx.facility,
            &cam.line,
            &cam.station,
            station.clone(),
        )),
        Some(plc @ TriggerConfig::Plc { .. }) => match trigger::plc::Handshake::from_config(plc) {
            Some(Ok(handshake)) => {
                tracker.spawn(trigger::plc::run(
                    station.clone(),
                    handshake,
                    stop.child_token(),
                ));
            }
            // Validated with the configuration: cannot happen.
            _ => error!(camera = %cam.name, "the plc trigger's mapping is invalid"),
        },
        // Served by the HTTP module; a folder has no trigger.
        Some(TriggerConfig::Http {}) | None => {}
    }
    tracker.spawn(source::run_camera(
        cam,
        source,
        ctx.clone(),
        station,
        triggers,
        stop.child_token(),
    ));
}
