//! `wiko-agent`: the edge daemon of the Wiko Defect Analyzer.
//!
//! A tour, in the order data flows:
//! - [`source`]: cameras (`synthetic`, `folder`) and their triggers; each capture becomes a
//!   frame record committed to the buffer.
//! - [`buffer`]: the SQLite (WAL) buffer, the source of truth; its module doc lists the invariants.
//! - [`sync`]: uploads buffered frames to the cloud at least once, with backoff and dead letters.
//! - [`heartbeat`]: reports the agent's state to the cloud (the fleet view) and carries out the
//!   cloud's commands.
//! - [`http`]: local `/healthz` and `/metrics`.
//! - [`config`]: the TOML + environment configuration, validated before anything starts.
//! - [`telemetry`]: tracing and the Prometheus registry, with every metric name.
//! - [`watchdog`]: the systemd watchdog, pinged while the agent makes progress.
//!
//! [`run`] starts everything in order (buffer, HTTP, sync, cameras) and stops it in reverse when
//! the `shutdown` future completes: cameras stop triggering, sync finishes the uploads in flight,
//! then the HTTP server closes.

pub mod buffer;
pub mod config;
pub(crate) mod heartbeat;
pub(crate) mod http;
pub(crate) mod source;
pub(crate) mod sync;
pub(crate) mod telemetry;
pub(crate) mod watchdog;

use std::future::Future;
use std::sync::Arc;

use anyhow::Context as _;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{error, info, warn};

use crate::buffer::{Buffer, Limits};
use crate::config::Config;

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

    let listener = tokio::net::TcpListener::bind(config.http.listen)
        .await
        .with_context(|| format!("binding http.listen {}", config.http.listen))?;
    info!(addr = %listener.local_addr()?, "health and metrics listening");
    let http_stop = stop.clone();
    let app = http::router(buffer.clone());
    let http_task = tokio::spawn(async move {
        let served = axum::serve(listener, app)
            .with_graceful_shutdown(async move { http_stop.cancelled().await })
            .await;
        if let Err(e) = served {
            error!(error = %e, "health server failed");
        }
    });

    let wake = Arc::new(Notify::new());
    let uploader = sync::Uploader::new(buffer.clone(), &config.sync, wake.clone())
        .context("building the HTTP client")?;
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
    let camera_reports: heartbeat::CameraReports = Arc::new(Vec::new);
    if let Some(interval) = config.sync.heartbeat {
        let first = config.cameras.first();
        let where_ = |f: fn(&config::CameraConfig) -> &String| {
            first.map_or_else(|| "unassigned".to_string(), |c| f(c).clone())
        };
        let heartbeats = heartbeat::Heartbeats {
            buffer: buffer.clone(),
            client: sync::Client::new(
                &config.sync.endpoint,
                &config.sync.api_key,
                config.sync.request_timeout,
            )
            .context("building the HTTP client")?,
            identity: heartbeat::Identity {
                device_id: config.device_id.clone(),
                facility: config.facility.clone(),
                line: where_(|c| &c.line),
                station: where_(|c| &c.station),
            },
            interval,
            cameras: camera_reports,
            data_dir: config.data_dir.clone(),
            wake: wake.clone(),
        };
        tracker.spawn(heartbeats.run(stop.child_token()));
    }

    let ctx = Arc::new(source::Context {
        buffer: buffer.clone(),
        wake,
        device_id: config.device_id.clone(),
        facility: config.facility.clone(),
    });
    for cam in config.cameras.clone() {
        tracker.spawn(source::run_camera(cam, ctx.clone(), stop.child_token()));
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
