//! Triggers: what makes a part. Each camera has a [`Station`], the one door its triggers go
//! through, whatever their kind: `interval` (a timer), `cron` (a schedule in the plant's local
//! time), `mqtt` (a message on the station's
//! trigger topic), `http` (`POST /trigger/{camera}`, served by the agent's HTTP module), `plc`
//! (a Modbus TCP handshake with the line PLC).
//!
//! A station serves one part at a time. A trigger that arrives while the previous part is
//! still being captured and buffered, or while the camera is not delivering, is answered at
//! once (`busy`, `camera_failed`) and counted as missed: never queued, never silent.

pub mod cron;
pub mod interval;
pub mod mqtt;
pub mod plc;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use tokio::sync::{mpsc, oneshot};
use tracing::{debug, warn};
use wiko_wire::{CameraStatus, TriggerAck, TriggerOutcome, TriggerRequest};

use crate::source::health::{Missed, Monitor};
use crate::telemetry as names;

/// How long an asker (MQTT, HTTP) waits for its answer before answering `camera_failed`
/// itself: longer than any capture, since the camera's own deadlines answer first.
pub const ANSWER_DEADLINE: std::time::Duration = std::time::Duration::from_secs(120);

/// One trigger on its way to a camera.
#[derive(Debug)]
pub struct Trigger {
    pub request: TriggerRequest,
    /// Where the answer goes; `None` for timers, which nobody waits for.
    pub reply: Option<oneshot::Sender<TriggerAck>>,
    /// When the trigger arrived (trigger-to-frame latency).
    pub received: Instant,
    /// The kind of trigger, as the metric label names it.
    pub kind: &'static str,
}

impl Trigger {
    pub fn new(
        kind: &'static str,
        request: TriggerRequest,
        reply: Option<oneshot::Sender<TriggerAck>>,
    ) -> Trigger {
        Trigger {
            request,
            reply,
            received: Instant::now(),
            kind,
        }
    }

    /// Sends the answer, if anyone waits for it.
    pub fn answer(
        self,
        camera: &str,
        outcome: TriggerOutcome,
        frame_id: Option<uuid::Uuid>,
        reason: Option<String>,
    ) {
        self.reply(TriggerAck {
            request_id: None,
            camera: camera.to_string(),
            outcome,
            frame_id,
            reason,
            defect_detected: None,
        });
    }

    /// Sends `ack` (its request id the trigger's), if anyone waits for it.
    fn reply(self, ack: TriggerAck) {
        if let Some(reply) = self.reply {
            // The asker may have given up (an HTTP client gone): nothing to do then.
            let _ = reply.send(TriggerAck {
                request_id: self.request.request_id,
                ..ack
            });
        }
    }
}

/// The door to one camera's task.
pub struct Station {
    monitor: Arc<Monitor>,
    busy: AtomicBool,
    tx: mpsc::Sender<Trigger>,
}

impl Station {
    /// A station and the receiving end its camera task serves.
    pub fn new(monitor: Arc<Monitor>) -> (Arc<Station>, mpsc::Receiver<Trigger>) {
        // One slot: the busy flag lets at most one trigger through until `done`.
        let (tx, rx) = mpsc::channel(1);
        (
            Arc::new(Station {
                monitor,
                busy: AtomicBool::new(false),
                tx,
            }),
            rx,
        )
    }

    pub fn camera(&self) -> &str {
        self.monitor.name()
    }

    /// Hands `trigger` to the camera, or answers it at once when the request is invalid, the
    /// station is busy or the camera is not delivering. True when the camera took it.
    pub fn fire(&self, trigger: Trigger) -> bool {
        metrics::counter!(names::TRIGGERS_TOTAL, "camera" => self.camera().to_string(), "kind" => trigger.kind)
            .increment(1);
        if let Err(e) = trigger.request.validate() {
            debug!(error = %e, "trigger refused");
            trigger.answer(
                self.camera(),
                TriggerOutcome::Invalid,
                None,
                Some(e.to_string()),
            );
            return false;
        }
        let status = self.monitor.status();
        if status != CameraStatus::Ok {
            self.monitor.missed(Missed::CameraFailed);
            warn!(
                camera = self.camera(),
                status = status.as_str(),
                "trigger missed: the camera is not delivering"
            );
            trigger.answer(
                self.camera(),
                TriggerOutcome::CameraFailed,
                None,
                Some(format!(
                    "the camera is not delivering ({})",
                    status.as_str()
                )),
            );
            return false;
        }
        if self.busy.swap(true, Ordering::AcqRel) {
            self.monitor.missed(Missed::Busy);
            warn!(
                camera = self.camera(),
                "trigger missed: the station is busy with the previous part"
            );
            trigger.answer(
                self.camera(),
                TriggerOutcome::Busy,
                None,
                Some("the previous part is still being captured".into()),
            );
            return false;
        }
        match self.tx.try_send(trigger) {
            Ok(()) => true,
            Err(e) => {
                // Closed (the camera task ended) or full (cannot be: the busy flag was clear).
                self.busy.store(false, Ordering::Release);
                self.monitor.missed(Missed::CameraFailed);
                let trigger = match e {
                    mpsc::error::TrySendError::Full(t) | mpsc::error::TrySendError::Closed(t) => t,
                };
                trigger.answer(
                    self.camera(),
                    TriggerOutcome::CameraFailed,
                    None,
                    Some("the camera has stopped".into()),
                );
                false
            }
        }
    }

    /// A part this station could not take that no trigger brought to [`Station::fire`] (a PLC
    /// part left waiting across a lost connection): counted as missed.
    pub fn missed(&self, why: Missed) {
        self.monitor.missed(why);
    }

    /// The camera finished with the trigger it took: the station is free for the next one,
    /// then the trigger is answered (so an asker that sends the next trigger on the answer
    /// never finds the station busy).
    pub fn finish(
        &self,
        trigger: Trigger,
        outcome: TriggerOutcome,
        frame_id: Option<uuid::Uuid>,
        reason: Option<String>,
    ) {
        self.busy.store(false, Ordering::Release);
        trigger.answer(self.camera(), outcome, frame_id, reason);
    }

    /// As [`Station::finish`] for a part whose frame the buffer refused (`not_stored`, with
    /// `reason`), with its edge verdict (`Some(true)`: NG) when it was judged all the same.
    pub fn not_stored(&self, trigger: Trigger, reason: String, defect_detected: Option<bool>) {
        self.busy.store(false, Ordering::Release);
        trigger.reply(TriggerAck {
            request_id: None,
            camera: self.camera().to_string(),
            outcome: TriggerOutcome::NotStored,
            frame_id: None,
            reason: Some(reason),
            defect_detected,
        });
    }

    /// As [`Station::finish`] for a part captured and buffered as `frame_id`, with its edge
    /// verdict (`Some(true)`: NG) when it was judged.
    pub fn captured(&self, trigger: Trigger, frame_id: uuid::Uuid, defect_detected: Option<bool>) {
        self.busy.store(false, Ordering::Release);
        trigger.reply(TriggerAck {
            request_id: None,
            camera: self.camera().to_string(),
            outcome: TriggerOutcome::Captured,
            frame_id: Some(frame_id),
            reason: None,
            defect_detected,
        });
    }
}

#[cfg(test)]
mod tests;
