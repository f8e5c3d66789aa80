//! Cameras: where frames come from, and the task that turns each trigger into a buffered frame.
//!
//! Every camera kind but `folder` is a [`Source`]: opened, asked for one picture per trigger,
//! checked between triggers, closed after a failure. [`run_camera`] drives one source in its own
//! task, so a failing or slow camera never blocks another: every open and every picture has a
//! deadline (`stall_timeout_ms`); a failure marks the camera stalled, and it is reopened with
//! backoff until it works again, the daemon never restarted. A device call that outlives its
//! deadline and has still not returned when the camera is to be opened again
//! ([`Outstanding`]) makes the camera `hung` (counted in `wiko_agent_camera_hangs_total`)
//! until it returns. The camera's [`health::Monitor`] shows where it stands. Each capture is one `frame` span; its frame is in the buffer
//! (committed) before the station takes the next trigger.
//!
//! `folder` cameras are driven by their files instead ([`folder::run`]).

pub mod folder;
#[cfg(feature = "genicam")]
pub mod genicam;
pub mod health;
pub mod http_snapshot;
pub mod latest;
#[cfg(any(feature = "genicam", feature = "v4l2"))]
pub mod pixels;
pub mod rtsp;
pub mod synthetic;
#[cfg(feature = "v4l2")]
pub mod v4l2;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use chrono::Utc;
use tokio::sync::{Notify, mpsc, oneshot};
use tokio_util::sync::CancellationToken;
use tracing::{Instrument, error, info, info_span, warn};
use uuid::Uuid;
use wiko_wire::{CameraStatus, TriggerOutcome};

use crate::buffer::{Buffer, BufferError, NewFrame};

/// How often a full buffer is logged at most: at 20 frames/s a line per frame would flood the
/// journal (the metrics count every frame).
const FULL_LOG_EVERY: Duration = Duration::from_secs(10);

/// Frames evicted, frames refused (full, disk low), and frames refused for the NG frames
/// nobody has alerted yet, since the last line that said so: each its own line, so the
/// warnings of one never hide the error of the other.
static EVICTED: Throttled = Throttled::new();
static REFUSED: Throttled = Throttled::new();
static REFUSED_UNALERTED: Throttled = Throttled::new();

/// A count logged at most once per [`FULL_LOG_EVERY`], with what happened since its last line.
struct Throttled {
    since_line: AtomicU64,
    last_line: Mutex<Option<Instant>>,
}

impl Throttled {
    const fn new() -> Throttled {
        Throttled {
            since_line: AtomicU64::new(0),
            last_line: Mutex::new(None),
        }
    }

    /// Adds `n`; the count to log when a line is due.
    fn add(&self, n: u64, now: Instant) -> Option<u64> {
        self.since_line.fetch_add(n, Ordering::Relaxed);
        let mut last = self.last_line.lock().unwrap_or_else(|p| p.into_inner());
        if last.is_some_and(|t| now.saturating_duration_since(t) < FULL_LOG_EVERY) {
            return None;
        }
        *last = Some(now);
        Some(self.since_line.swap(0, Ordering::Relaxed))
    }
}
use crate::config::{CameraConfig, SourceConfig};
use crate::sync::Backoff;
use crate::telemetry as names;
use crate::trigger::{Station, Trigger};

/// What a camera delivers for one part.
#[derive(Debug, Clone)]
pub struct Capture {
    pub jpeg: Vec<u8>,
    pub part_id: Option<String>,
    pub lot: Option<String>,
    /// The part's SKU when the trigger named one; the camera's otherwise.
    pub sku: Option<String>,
    /// When the camera was asked and when its frame came, for sources that know (`genicam`).
    pub exposure: Option<Exposure>,
}

impl Capture {
    /// A picture with nothing known about the part yet.
    pub fn jpeg(jpeg: Vec<u8>) -> Capture {
        Capture {
            jpeg,
            part_id: None,
            lot: None,
            sku: None,
            exposure: None,
        }
    }
}

/// The camera's part of a picture. `asking` to `asked`: the agent asking the camera (its
/// first software trigger, sent and acknowledged; nothing for a free-running camera). The
/// rest of the grab until `arrived` (its frame whole, before the agent encoded it) is the
/// camera's: a buffer an earlier picture still owed, waited on before `asking`, and from
/// `asked` its exposure and transfer, a re-trigger's window included.
#[derive(Debug, Clone, Copy)]
pub struct Exposure {
    pub asking: Instant,
    pub asked: Instant,
    pub arrived: Instant,
}

/// Why a camera gave no picture.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    #[error("the camera is not open")]
    NotOpen,
    #[error("no frame within {0:?}")]
    Stalled(Duration),
    #[error("{0}")]
    Device(String),
    #[error("the capture thread panicked")]
    Panicked,
    /// The device's last call outlived its deadline and has not returned: the device is not
    /// opened again (no other thread started) until it does.
    #[error("a driver call has not returned (it hangs): not reopened until it does")]
    Hung,
}

/// One camera device. Calls may block for long: the camera task gives each a deadline.
#[async_trait]
pub trait Source: Send {
    /// Opens the device (again, after a failure: whatever was open is dropped first).
    async fn open(&mut self) -> Result<(), SourceError>;
    /// One picture of the part in front of the camera now.
    async fn grab(&mut self) -> Result<Capture, SourceError>;
    /// Called between triggers: an error means the device stopped delivering.
    async fn check(&mut self) -> Result<(), SourceError> {
        Ok(())
    }
    /// Closes the device after a failure.
    fn close(&mut self);
}

/// The device call of a camera that may outlive its deadline: a driver call that hangs keeps
/// its thread until it returns. A camera has at most one such call: the device is opened again
/// only once the last call ended ([`Outstanding::settle`]), so a driver that hangs at every
/// open costs one thread, however often the camera is reopened.
pub struct Outstanding {
    /// Resolves when the last call's [`Running`] is dropped.
    ended: Option<oneshot::Receiver<()>>,
    grace: Duration,
}

/// Carried by a device call while it runs; dropping it tells [`Outstanding`] the call ended.
/// Dropped after the device it used (declared first, or last in a tuple), so the device is
/// released before another open.
pub struct Running {
    _ended: oneshot::Sender<()>,
}

impl Outstanding {
    /// `grace`: how long an open waits for the last call to end before it fails.
    pub fn new(grace: Duration) -> Outstanding {
        Outstanding { ended: None, grace }
    }

    /// Waits, `grace` at most, for the last call to end: [`SourceError::Hung`] while it has not.
    pub async fn settle(&mut self) -> Result<(), SourceError> {
        if let Some(ended) = self.ended.as_mut() {
            if tokio::time::timeout(self.grace, ended).await.is_err() {
                return Err(SourceError::Hung);
            }
            self.ended = None;
        }
        Ok(())
    }

    /// A call starts (the last one has ended): what it carries while it runs.
    pub fn start(&mut self) -> Running {
        let (tx, rx) = oneshot::channel();
        self.ended = Some(rx);
        Running { _ended: tx }
    }
}

/// A device driven by blocking calls, run on the blocking pool. A call that outlives its
/// deadline keeps the device on its thread: the slot stays empty and the camera is opened
/// anew once that call has returned ([`Outstanding`]), so a hung driver call never blocks the
/// camera task nor piles up threads.
pub struct Blocking<T> {
    slot: Option<T>,
    outstanding: Outstanding,
}

impl<T: Send + 'static> Blocking<T> {
    /// `grace`: how long an open waits for a call that outlived its deadline.
    pub fn new(grace: Duration) -> Blocking<T> {
        Blocking {
            slot: None,
            outstanding: Outstanding::new(grace),
        }
    }

    /// Drops the device held, then opens a new one with `open` (once the last call ended).
    pub async fn open<F>(&mut self, open: F) -> Result<(), SourceError>
    where
        F: FnOnce() -> Result<T, SourceError> + Send + 'static,
    {
        self.slot = None;
        self.outstanding.settle().await?;
        let running = self.outstanding.start();
        // The token last in the answer: a device opened after the deadline is dropped first.
        let (device, _running) = tokio::task::spawn_blocking(move || (open(), running))
            .await
            .map_err(|_| SourceError::Panicked)?;
        self.slot = Some(device?);
        Ok(())
    }

    /// Runs `f` on the device, off the async threads.
    pub async fn call<R, F>(&mut self, f: F) -> Result<R, SourceError>
    where
        R: Send + 'static,
        F: FnOnce(&mut T) -> Result<R, SourceError> + Send + 'static,
    {
        let mut device = self.slot.take().ok_or(SourceError::NotOpen)?;
        let running = self.outstanding.start();
        // The token last in the answer: a device whose call outlived its deadline is dropped
        // (closed) before the token says the call ended.
        let (device, result, _running) = tokio::task::spawn_blocking(move || {
            let result = f(&mut device);
            (device, result, running)
        })
        .await
        .map_err(|_| SourceError::Panicked)?;
        self.slot = Some(device);
        result
    }

    pub fn close(&mut self) {
        self.slot = None;
    }
}

/// A URL without its credentials (`scheme://user:password@host/…` → `scheme://…@host/…`), for
/// logs and health.
pub fn redact(url: &str) -> String {
    match (url.find("://"), url.find('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            format!("{}://…@{}", &url[..scheme], &url[at + 1..])
        }
        _ => url.to_string(),
    }
}

/// How long a camera's open waits for its last device call to end: half its open deadline
/// (`stall_timeout_ms`), the rest left to the open itself.
pub fn reopen_grace(cam: &CameraConfig) -> Duration {
    Duration::from_millis(cam.stall_timeout_ms) / 2
}

/// The source a camera's configuration names; `None` for `folder`, which is no [`Source`].
pub fn build(cam: &CameraConfig) -> Result<Option<Box<dyn Source>>, SourceError> {
    Ok(Some(match &cam.source {
        SourceConfig::Folder { .. } => return Ok(None),
        SourceConfig::Synthetic { seed, defect_rate } => Box::new(
            synthetic::Synthetic::new(&cam.sku, &cam.name, *seed, *defect_rate, reopen_grace(cam))
                .ok_or_else(|| {
                    SourceError::Device(format!(
                        "the synthetic camera knows no knife of SKU {}",
                        cam.sku
                    ))
                })?,
        ),
        #[cfg(feature = "genicam")]
        SourceConfig::Genicam { .. } => Box::new(genicam::Genicam::new(cam)),
        #[cfg(not(feature = "genicam"))]
        SourceConfig::Genicam { .. } => {
            return Err(SourceError::Device(
                "built without GenICam support (cargo feature `genicam`)".into(),
            ));
        }
        #[cfg(feature = "v4l2")]
        SourceConfig::V4l2 { .. } => Box::new(v4l2::V4l2::new(cam)),
        #[cfg(not(feature = "v4l2"))]
        SourceConfig::V4l2 { .. } => {
            return Err(SourceError::Device(
                "built without V4L2 support (cargo feature `v4l2`)".into(),
            ));
        }
        SourceConfig::Rtsp { .. } => Box::new(rtsp::Rtsp::new(cam)),
        SourceConfig::HttpSnapshot { .. } => Box::new(http_snapshot::HttpSnapshot::new(cam)),
    }))
}

/// What every camera task shares.
pub struct Context {
    pub buffer: Arc<Buffer>,
    pub wake: Arc<Notify>,
    pub device_id: String,
    pub facility: String,
    pub health: Arc<health::Registry>,
    /// Edge analysis; `None` when it is off.
    pub edge: Option<Arc<crate::edge::Models>>,
    /// NG alerts from the agent; `None` without a broker or edge analysis.
    pub alerts: Option<crate::mqtt::Alerts>,
}

/// Serves `station`'s triggers with `source` until `shutdown`.
pub async fn run_camera(
    cam: CameraConfig,
    mut source: Box<dyn Source>,
    ctx: Arc<Context>,
    station: Arc<Station>,
    mut triggers: mpsc::Receiver<Trigger>,
    shutdown: CancellationToken,
) {
    let span = info_span!("camera", name = %cam.name, station = %cam.station);
    async move {
        let Some(monitor) = ctx.health.get(&cam.name).cloned() else {
            error!("camera has no health monitor; not started");
            return;
        };
        let deadline = Duration::from_millis(cam.stall_timeout_ms);
        let mut backoff = Backoff::new(
            Duration::from_millis(cam.reopen_initial_ms),
            Duration::from_secs(cam.reopen_max_secs),
        );
        let mut watchdog = tokio::time::interval(deadline);
        watchdog.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut open = false;
        let mut opened_before = false;
        loop {
            if !open {
                // A hung camera stays `hung` while its opens wait for the call to return.
                if opened_before && monitor.status() != CameraStatus::Hung {
                    monitor.set_status(CameraStatus::Reopening);
                }
                match with_deadline(deadline, source.open()).await {
                    Ok(()) => {
                        open = true;
                        if opened_before {
                            monitor.reopened();
                            info!("camera reopened");
                        } else {
                            info!(source = cam.source_type(), "camera open");
                        }
                        opened_before = true;
                        backoff.reset();
                        monitor.set_status(CameraStatus::Ok);
                    }
                    Err(e) => {
                        source.close();
                        match e {
                            SourceError::Hung => monitor.hung(&e.to_string()),
                            _ => monitor.error(CameraStatus::Failed, &e.to_string()),
                        }
                        let wait = backoff.fail(None, &mut rand::rng());
                        warn!(error = %e, retry_in_ms = wait.as_millis() as u64, "opening the camera failed");
                        // Triggers already handed over before the status changed are answered.
                        let sleep = tokio::time::sleep(wait);
                        tokio::pin!(sleep);
                        loop {
                            tokio::select! {
                                _ = &mut sleep => break,
                                _ = shutdown.cancelled() => return,
                                Some(t) = triggers.recv() => {
                                    station.finish(t, TriggerOutcome::CameraFailed, None, Some(e.to_string()));
                                }
                            }
                        }
                        continue;
                    }
                }
            }
            tokio::select! {
                _ = shutdown.cancelled() => break,
                trigger = triggers.recv() => {
                    let Some(trigger) = trigger else { break };
                    open = serve(&cam, &ctx, &mut *source, deadline, trigger, &station, &monitor).await;
                }
                _ = watchdog.tick() => {
                    if let Err(e) = with_deadline(deadline, source.check()).await {
                        warn!(error = %e, "the camera stalled; reopening");
                        monitor.error(CameraStatus::Stalled, &e.to_string());
                        source.close();
                        open = false;
                    }
                }
            }
        }
        source.close();
        info!("camera stopped");
    }
    .instrument(span)
    .await
}

async fn with_deadline<T>(
    deadline: Duration,
    f: impl Future<Output = Result<T, SourceError>>,
) -> Result<T, SourceError> {
    tokio::time::timeout(deadline, f)
        .await
        .unwrap_or(Err(SourceError::Stalled(deadline)))
}

/// Takes and buffers one part; answers the trigger. False when the camera failed and must be
/// reopened.
async fn serve(
    cam: &CameraConfig,
    ctx: &Arc<Context>,
    source: &mut dyn Source,
    deadline: Duration,
    trigger: Trigger,
    station: &Station,
    monitor: &health::Monitor,
) -> bool {
    let grab = Instant::now();
    match with_deadline(deadline, source.grab()).await {
        Ok(mut shot) => {
            let grabbed = Instant::now();
            let exposure = shot.exposure.take();
            let request = &trigger.request;
            if request.part_id.is_some() {
                shot.part_id.clone_from(&request.part_id);
            }
            shot.lot = request.lot.clone().or(shot.lot);
            shot.sku = request.sku.clone().or(shot.sku);
            match store(cam, ctx, shot).await {
                Ok(stored) => {
                    let committed = Instant::now();
                    metrics::histogram!(names::TRIGGER_TO_FRAME_SECONDS, "kind" => trigger.kind)
                        .record(committed.duration_since(trigger.received).as_secs_f64());
                    for (stage, took) in
                        stages(trigger.received, grab, exposure, grabbed, committed)
                    {
                        metrics::histogram!(names::TRIGGER_STAGE_SECONDS, "camera" => cam.name.clone(), "stage" => stage)
                            .record(took.as_secs_f64());
                    }
                    station.captured(trigger, stored.frame_id, stored.defect_detected);
                }
                Err(refused) => {
                    station.not_stored(trigger, refused.reason, refused.defect_detected)
                }
            }
            true
        }
        Err(e) => {
            warn!(error = %e, "capture failed; reopening the camera");
            monitor.error(CameraStatus::Stalled, &e.to_string());
            source.close();
            station.finish(
                trigger,
                TriggerOutcome::CameraFailed,
                None,
                Some(e.to_string()),
            );
            false
        }
    }
}

/// Where one part's trigger-to-frame time went, stage by stage
/// (`wiko_agent_trigger_stage_seconds{camera,stage}`): `queued` (the trigger handed to the
/// camera's task), then for a source that reports its [`Exposure`] `trigger` (the agent
/// asking the camera: its first trigger sent and acknowledged), `camera` (the rest of the
/// wait for the frame: a buffer an earlier picture still owed, the exposure and transfer, a
/// re-trigger's window) and `encode` (the frame to JPEG), else `grab` (all three), then
/// `store` (edge judgement and the buffer's commit). The stages add up to the
/// trigger-to-frame time.
fn stages(
    received: Instant,
    grab: Instant,
    exposure: Option<Exposure>,
    grabbed: Instant,
    committed: Instant,
) -> Vec<(&'static str, Duration)> {
    let span = |from: Instant, to: Instant| to.saturating_duration_since(from);
    let mut timed = vec![("queued", span(received, grab))];
    match exposure {
        Some(e) => {
            let trigger = span(e.asking, e.asked);
            timed.extend([
                ("trigger", trigger),
                ("camera", span(grab, e.arrived).saturating_sub(trigger)),
                ("encode", span(e.arrived, grabbed)),
            ]);
        }
        None => timed.push(("grab", span(grab, grabbed))),
    }
    timed.push(("store", span(grabbed, committed)));
    timed
}

/// A frame committed to the buffer.
#[derive(Debug, Clone, Copy)]
pub struct Stored {
    pub frame_id: Uuid,
    /// Its edge verdict (true: NG); `None` when it was not judged.
    pub defect_detected: Option<bool>,
}

/// A frame the buffer did not take.
#[derive(Debug, Clone)]
pub struct NotStored {
    /// Why, for the trigger's answer.
    pub reason: String,
    /// Its edge verdict all the same (true: NG), so the line can still reject the part;
    /// `None` when it was not judged.
    ///
    /// Its alert is not queued on its own: the alert links the frame's image, which the cloud
    /// never gets, and an alert without its frame in the buffer would be dropped by the
    /// outbox's bounds as "the cloud alerts the part", which the cloud cannot. The trigger's
    /// answer (`not_stored` with `defect_detected`) is the part's only NG signal.
    pub defect_detected: Option<bool>,
}

/// Judges one capture at the edge (when on and its SKU has a model), writes it to the buffer
/// as a new frame with its verdict, and wakes sync. Returns the frame once it is committed, or
/// why not (with the verdict: a refused frame was judged all the same).
pub async fn store(
    cam: &CameraConfig,
    ctx: &Arc<Context>,
    shot: Capture,
) -> Result<Stored, NotStored> {
    let frame_id = Uuid::now_v7();
    let sku = shot.sku.unwrap_or_else(|| cam.sku.clone());
    let span =
        info_span!("frame", %frame_id, %sku, part_id = shot.part_id.as_deref().unwrap_or(""));
    async {
        let started = Instant::now();
        let mut frame = NewFrame {
            frame_id,
            camera: cam.name.clone(),
            device_id: ctx.device_id.clone(),
            facility: ctx.facility.clone(),
            line: cam.line.clone(),
            station: cam.station.clone(),
            sku,
            part_id: shot.part_id,
            lot: shot.lot,
            captured_at: Utc::now(),
            jpeg: shot.jpeg,
            edge: None,
        };
        let (buffer, edge) = (ctx.buffer.clone(), ctx.edge.clone());
        let outbox = ctx.alerts.as_ref().map(|a| a.outbox.clone());
        // Both are blocking: judging is CPU work, the insert waits for the disk.
        let span = tracing::Span::current();
        let result = tokio::task::spawn_blocking(move || {
            frame.edge = edge.and_then(|models| {
                let _judging = info_span!(parent: &span, "edge_verdict").entered();
                models.judge(&frame.sku, &frame.jpeg)
            });
            let verdict = frame.edge.as_ref().map(|v| v.defect_detected);
            (buffer.insert_alerting(&frame, outbox.as_deref()), verdict)
        })
        .await;
        let label = cam.name.clone();
        let (result, defect_detected) = match result {
            Ok((result, verdict)) => (Ok(result), verdict),
            Err(e) => (Err(e), None),
        };
        let refused = |reason: &str| NotStored {
            reason: reason.into(),
            defect_detected,
        };
        match result {
            Ok(Ok(inserted)) => {
                metrics::counter!(names::FRAMES_CAPTURED_TOTAL, "camera" => label).increment(1);
                metrics::histogram!(names::CAPTURE_SECONDS).record(started.elapsed().as_secs_f64());
                if let Some(monitor) = ctx.health.get(&cam.name) {
                    monitor.frame();
                }
                if let (true, Some(alerts)) = (inserted.alerted, &ctx.alerts) {
                    metrics::counter!(names::ALERTS_TOTAL, "outcome" => "queued").increment(1);
                    alerts.wake.notify_one();
                }
                if inserted.evicted > 0 {
                    metrics::counter!(names::BUFFER_EVICTIONS_TOTAL).increment(inserted.evicted);
                    if let Some(evicted) = EVICTED.add(inserted.evicted, Instant::now()) {
                        warn!(
                            evicted,
                            disk_low = inserted.disk_low,
                            "buffer full: evicted the oldest unsynced frames (count since the last such line)"
                        );
                    }
                }
                ctx.wake.notify_one();
                Ok(Stored {
                    frame_id,
                    defect_detected,
                })
            }
            Ok(Err(BufferError::Full { needed, max })) => {
                metrics::counter!(names::BUFFER_REJECTED_TOTAL, "reason" => "full").increment(1);
                if let Some(refused) = REFUSED.add(1, Instant::now()) {
                    warn!(
                        needed,
                        max,
                        refused,
                        "buffer full: frames refused (when_full = reject_new; count since the last such line)"
                    );
                }
                Err(refused("the frame could not be buffered: the buffer is full"))
            }
            Ok(Err(e @ BufferError::DiskLow { .. })) => {
                metrics::counter!(names::BUFFER_REJECTED_TOTAL, "reason" => "disk_low").increment(1);
                if let Some(refused) = REFUSED.add(1, Instant::now()) {
                    warn!(error = %e, refused, "disk low: frames refused (count since the last such line)");
                }
                Err(refused("the frame could not be buffered: the disk is low"))
            }
            Ok(Err(e @ BufferError::NgUnalerted { .. })) => {
                metrics::counter!(names::BUFFER_REJECTED_TOTAL, "reason" => "ng_unalerted")
                    .increment(1);
                if let Some(refused) = REFUSED_UNALERTED.add(1, Instant::now()) {
                    error!(
                        error = %e,
                        refused,
                        "buffer full: new parts refused, none of the NG parts waiting for their alert or upload is evicted (count since the last such line)"
                    );
                }
                Err(refused(
                    "the frame could not be buffered: the buffer is full of NG parts nobody has alerted yet",
                ))
            }
            Ok(Err(e)) => {
                metrics::counter!(names::CAPTURE_ERRORS_TOTAL, "camera" => label).increment(1);
                error!(error = %e, "writing the frame to the buffer failed");
                Err(refused("the frame could not be buffered"))
            }
            Err(e) => {
                error!(error = %e, "buffer task panicked");
                Err(refused("the frame could not be buffered"))
            }
        }
    }
    .instrument(span)
    .await
}

#[cfg(test)]
mod tests;
