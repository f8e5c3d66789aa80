//! Cameras: where frames come from, and the loop that turns each trigger into a buffered frame.
//!
//! One task per camera: a failing or slow camera never blocks another. Each capture is one
//! `frame` span; its frame is in the buffer (committed) before the next trigger is served.

pub mod folder;
pub mod synthetic;

use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::Utc;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tracing::{Instrument, error, info, info_span, warn};
use uuid::Uuid;

use crate::buffer::{Buffer, BufferError, NewFrame};
use crate::config::{CameraConfig, SourceConfig, TriggerConfig};
use crate::telemetry as names;

/// What a camera delivers for one part.
#[derive(Debug, Clone)]
pub struct Capture {
    pub jpeg: Vec<u8>,
    pub part_id: Option<String>,
    pub lot: Option<String>,
}

/// What every camera task shares.
pub struct Context {
    pub buffer: Arc<Buffer>,
    pub wake: Arc<Notify>,
    pub device_id: String,
    pub facility: String,
}

/// Runs one camera until `shutdown` (or until its trigger's `max_parts`).
pub async fn run_camera(cam: CameraConfig, ctx: Arc<Context>, shutdown: CancellationToken) {
    let span = info_span!("camera", name = %cam.name, station = %cam.station);
    async move {
        match (&cam.source, &cam.trigger) {
            (SourceConfig::Synthetic { seed, defect_rate }, Some(TriggerConfig::Interval { interval_ms, max_parts })) => {
                let Some(mut camera) = synthetic::SyntheticCamera::new(&cam.sku, &cam.name, *seed, *defect_rate) else {
                    error!(sku = %cam.sku, "the synthetic camera knows no knife of this SKU; camera stopped");
                    return;
                };
                let interval = Duration::from_millis(*interval_ms);
                run_interval(&cam, &ctx, interval, *max_parts, shutdown, move || camera.capture()).await;
            }
            (SourceConfig::Folder { .. }, _) => folder::run(&cam, &ctx, shutdown).await,
            (SourceConfig::Synthetic { .. }, None) => {
                error!("a synthetic camera needs a trigger; camera stopped");
            }
        }
        info!("camera stopped");
    }
    .instrument(span)
    .await
}

/// Captures a part every `interval`, counting triggers missed while a capture ran long.
async fn run_interval<F>(
    cam: &CameraConfig,
    ctx: &Arc<Context>,
    interval: Duration,
    max_parts: Option<u64>,
    shutdown: CancellationToken,
    capture: F,
) where
    F: FnMut() -> Result<Capture, String> + Send + 'static,
{
    let capture = Arc::new(std::sync::Mutex::new(capture));
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let mut taken = 0u64;
    while max_parts.is_none_or(|max| taken < max) {
        tokio::select! {
            _ = ticker.tick() => {}
            _ = shutdown.cancelled() => return,
        }
        let started = Instant::now();
        let cap = capture.clone();
        let shot = tokio::task::spawn_blocking(move || {
            let mut f = cap.lock().unwrap_or_else(|p| p.into_inner());
            f()
        })
        .await;
        taken += 1;
        match shot {
            Ok(Ok(shot)) => {
                store(cam, ctx, shot).await;
            }
            Ok(Err(e)) => {
                metrics::counter!(names::CAPTURE_ERRORS_TOTAL, "camera" => cam.name.clone())
                    .increment(1);
                warn!(error = %e, "capture failed");
            }
            Err(e) => {
                metrics::counter!(names::CAPTURE_ERRORS_TOTAL, "camera" => cam.name.clone())
                    .increment(1);
                error!(error = %e, "capture task panicked");
            }
        }
        let missed = (started.elapsed().as_nanos() / interval.as_nanos().max(1)) as u64;
        if missed > 0 {
            metrics::counter!(names::TRIGGERS_MISSED_TOTAL, "camera" => cam.name.clone())
                .increment(missed);
            warn!(missed, "triggers missed while the camera was busy");
        }
    }
    info!(parts = taken, "max_parts reached");
}

/// Writes one capture to the buffer as a new frame and wakes sync. Returns the frame id once
/// it is committed.
pub async fn store(cam: &CameraConfig, ctx: &Arc<Context>, shot: Capture) -> Option<Uuid> {
    let frame_id = Uuid::now_v7();
    let span = info_span!("frame", %frame_id, sku = %cam.sku, part_id = shot.part_id.as_deref().unwrap_or(""));
    async {
        let started = Instant::now();
        let frame = NewFrame {
            frame_id,
            camera: cam.name.clone(),
            device_id: ctx.device_id.clone(),
            facility: ctx.facility.clone(),
            line: cam.line.clone(),
            station: cam.station.clone(),
            sku: cam.sku.clone(),
            part_id: shot.part_id,
            lot: shot.lot,
            captured_at: Utc::now(),
            jpeg: shot.jpeg,
            ng: None,
        };
        let buffer = ctx.buffer.clone();
        let result = tokio::task::spawn_blocking(move || buffer.insert(&frame)).await;
        let label = cam.name.clone();
        match result {
            Ok(Ok(inserted)) => {
                metrics::counter!(names::FRAMES_CAPTURED_TOTAL, "camera" => label).increment(1);
                metrics::histogram!(names::CAPTURE_SECONDS).record(started.elapsed().as_secs_f64());
                if inserted.evicted > 0 {
                    metrics::counter!(names::BUFFER_EVICTIONS_TOTAL).increment(inserted.evicted);
                    warn!(
                        evicted = inserted.evicted,
                        disk_low = inserted.disk_low,
                        "buffer full: evicted the oldest unsynced frames"
                    );
                }
                ctx.wake.notify_one();
                Some(frame_id)
            }
            Ok(Err(BufferError::Full { needed, max })) => {
                metrics::counter!(names::BUFFER_REJECTED_TOTAL).increment(1);
                warn!(
                    needed,
                    max, "buffer full: frame refused (when_full = reject_new)"
                );
                None
            }
            Ok(Err(e @ BufferError::DiskLow { .. })) => {
                metrics::counter!(names::BUFFER_REJECTED_TOTAL).increment(1);
                warn!(error = %e, "disk low: frame refused");
                None
            }
            Ok(Err(e)) => {
                metrics::counter!(names::CAPTURE_ERRORS_TOTAL, "camera" => label).increment(1);
                error!(error = %e, "writing the frame to the buffer failed");
                None
            }
            Err(e) => {
                error!(error = %e, "buffer task panicked");
                None
            }
        }
    }
    .instrument(span)
    .await
}
