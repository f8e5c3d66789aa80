//! Camera health: each camera's [`Monitor`] records its status, frames, errors, reopens and
//! missed triggers; the [`Registry`] of all of them answers `/healthz` and feeds `/metrics`.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use wiko_wire::{CameraHealth, CameraStatus};

use crate::telemetry as names;

/// The window `fps` is measured over.
const FPS_WINDOW: Duration = Duration::from_secs(60);
/// Frame times kept for `fps`: enough for 60 fps over the window.
const FPS_SAMPLES: usize = 3600;

/// One camera's health, written by its task, read by `/healthz` and `/metrics`.
pub struct Monitor {
    name: String,
    source: &'static str,
    inner: Mutex<Inner>,
}

struct Inner {
    status: CameraStatus,
    last_frame: Option<(DateTime<Utc>, Instant)>,
    recent: VecDeque<Instant>,
    frames_total: u64,
    errors_total: u64,
    reopens_total: u64,
    missed_total: u64,
    last_error: Option<String>,
}

/// Why a trigger was not served, as the `reason` label of the missed-trigger counter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Missed {
    Busy,
    CameraFailed,
    /// A PLC part the agent did not take, left waiting while the link to the PLC was down
    /// (longer than `take_pending_within_ms`, when it is set) or across the agent's restart:
    /// answered Error once connected again.
    Interrupted,
}

impl Monitor {
    pub fn new(name: &str, source: &'static str) -> Monitor {
        Monitor {
            name: name.to_string(),
            source,
            inner: Mutex::new(Inner {
                status: CameraStatus::Starting,
                last_frame: None,
                recent: VecDeque::new(),
                frames_total: 0,
                errors_total: 0,
                reopens_total: 0,
                missed_total: 0,
                last_error: None,
            }),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // The state stays consistent field by field, so a panic elsewhere does not poison it.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn status(&self) -> CameraStatus {
        self.lock().status
    }

    pub fn set_status(&self, status: CameraStatus) {
        self.lock().status = status;
    }

    /// The device was opened again after a failure.
    pub fn reopened(&self) {
        self.lock().reopens_total += 1;
        metrics::counter!(names::CAMERA_REOPENS_TOTAL, "camera" => self.name.clone()).increment(1);
    }

    /// A failure: the camera goes to `status` and the error is counted and kept.
    pub fn error(&self, status: CameraStatus, error: &str) {
        self.fail(status, error);
    }

    /// A device call outlived its deadline and has not returned (the open after it found it
    /// still running): the camera is `hung` until the call returns and an open succeeds. The
    /// hang is counted once, however many opens it refuses.
    pub fn hung(&self, error: &str) {
        if self.fail(CameraStatus::Hung, error) != CameraStatus::Hung {
            metrics::counter!(names::CAMERA_HANGS_TOTAL, "camera" => self.name.clone())
                .increment(1);
        }
    }

    /// As [`Monitor::error`]; the status it had before.
    fn fail(&self, status: CameraStatus, error: &str) -> CameraStatus {
        let mut inner = self.lock();
        let before = std::mem::replace(&mut inner.status, status);
        inner.errors_total += 1;
        inner.last_error = Some(error.to_string());
        drop(inner);
        metrics::counter!(names::CAPTURE_ERRORS_TOTAL, "camera" => self.name.clone()).increment(1);
        before
    }

    /// A frame was buffered.
    pub fn frame(&self) {
        let now = Instant::now();
        let mut inner = self.lock();
        inner.last_frame = Some((Utc::now(), now));
        inner.frames_total += 1;
        if inner.recent.len() == FPS_SAMPLES {
            inner.recent.pop_front();
        }
        inner.recent.push_back(now);
    }

    /// A trigger was not served.
    pub fn missed(&self, why: Missed) {
        self.lock().missed_total += 1;
        let reason = match why {
            Missed::Busy => "busy",
            Missed::CameraFailed => "camera_failed",
            Missed::Interrupted => "interrupted",
        };
        metrics::counter!(names::TRIGGERS_MISSED_TOTAL, "camera" => self.name.clone(), "reason" => reason)
            .increment(1);
    }

    pub fn snapshot(&self) -> CameraHealth {
        let now = Instant::now();
        let mut inner = self.lock();
        while inner
            .recent
            .front()
            .is_some_and(|t| now.duration_since(*t) > FPS_WINDOW)
        {
            inner.recent.pop_front();
        }
        CameraHealth {
            name: self.name.clone(),
            source: self.source.to_string(),
            status: inner.status,
            last_frame_at: inner.last_frame.map(|(at, _)| at),
            frame_age_seconds: inner
                .last_frame
                .map(|(_, t)| now.duration_since(t).as_secs_f64()),
            fps: inner.recent.len() as f64 / FPS_WINDOW.as_secs_f64(),
            frames_total: inner.frames_total,
            errors_total: inner.errors_total,
            reopens_total: inner.reopens_total,
            triggers_missed_total: inner.missed_total,
            last_error: inner.last_error.clone(),
        }
    }
}

/// Every camera's monitor, in configuration order.
#[derive(Default)]
pub struct Registry {
    monitors: Vec<Arc<Monitor>>,
}

impl Registry {
    pub fn add(&mut self, monitor: Monitor) -> Arc<Monitor> {
        let monitor = Arc::new(monitor);
        self.monitors.push(monitor.clone());
        monitor
    }

    pub fn get(&self, name: &str) -> Option<&Arc<Monitor>> {
        self.monitors.iter().find(|m| m.name == name)
    }

    pub fn snapshot(&self) -> Vec<CameraHealth> {
        self.monitors.iter().map(|m| m.snapshot()).collect()
    }

    /// Sets the per-camera gauges from a snapshot, before `/metrics` renders.
    pub fn export_gauges(&self) {
        for cam in self.snapshot() {
            for status in CameraStatus::ALL {
                metrics::gauge!(names::CAMERA_STATUS, "camera" => cam.name.clone(), "status" => status.as_str())
                    .set(if status == cam.status { 1.0 } else { 0.0 });
            }
            metrics::gauge!(names::CAMERA_FPS, "camera" => cam.name.clone()).set(cam.fps);
            if let Some(age) = cam.frame_age_seconds {
                metrics::gauge!(names::CAMERA_FRAME_AGE_SECONDS, "camera" => cam.name.clone())
                    .set(age);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_monitor_counts_frames_errors_reopens_and_missed_triggers() {
        let m = Monitor::new("c1", "genicam");
        assert_eq!(m.snapshot().status, CameraStatus::Starting);
        assert_eq!(m.snapshot().frame_age_seconds, None);
        m.set_status(CameraStatus::Ok);
        m.frame();
        m.frame();
        m.error(CameraStatus::Stalled, "no frame within 5000 ms");
        m.reopened();
        m.missed(Missed::Busy);
        m.missed(Missed::CameraFailed);
        let s = m.snapshot();
        assert_eq!(s.status, CameraStatus::Stalled);
        assert_eq!(s.frames_total, 2);
        assert_eq!(s.errors_total, 1);
        assert_eq!(s.reopens_total, 1);
        assert_eq!(s.triggers_missed_total, 2);
        assert_eq!(s.last_error.as_deref(), Some("no frame within 5000 ms"));
        assert!(s.frame_age_seconds.is_some());
        assert!((s.fps - 2.0 / 60.0).abs() < 1e-9);
    }

    #[test]
    fn a_hang_is_counted_once_however_many_opens_it_refuses() {
        // See: issue #20 (a hung device call visible in /metrics).
        let recorder = metrics_exporter_prometheus::PrometheusBuilder::new().build_recorder();
        let prometheus = recorder.handle();
        let m = Monitor::new("c1", "v4l2");
        metrics::with_local_recorder(&recorder, || {
            m.set_status(CameraStatus::Ok);
            m.error(CameraStatus::Stalled, "no frame within 300ms");
            for _ in 0..3 {
                m.hung("a driver call has not returned");
            }
            m.set_status(CameraStatus::Ok);
            m.hung("a driver call has not returned");
        });
        let s = m.snapshot();
        assert_eq!(s.status, CameraStatus::Hung);
        assert_eq!(s.errors_total, 5);
        let text = prometheus.render();
        assert!(
            text.contains(&format!("{}{{camera=\"c1\"}} 2", names::CAMERA_HANGS_TOTAL)),
            "{text}"
        );
    }
}
