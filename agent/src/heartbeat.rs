//! Heartbeats: every `sync.heartbeat_secs` the agent tells the cloud how it is (`POST
//! /api/v1/heartbeats`: cameras, buffer backlog and age, free disk, dead letters, why it is
//! degraded) and carries
//! out the commands in the answer (requeue a dead letter). A command is reported done in the
//! next heartbeat that reaches the cloud; carrying one out twice is harmless.
//!
//! With `[mqtt]` each heartbeat is also published on `wiko/{facility}/{line}/{station}/heartbeat`.
//!
//! Heartbeats are best effort: a failed one is logged and counted, and the next is due one
//! interval later (the cloud calls a device silent only after several missed ones).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};
use wiko_wire::fleet::{DeviceAction, DeviceCommand, Heartbeat};
use wiko_wire::{HeartbeatAck, Topic};

use crate::buffer::Buffer;
use crate::http::buffer_health;
use crate::source::health::Registry;
use crate::sync::Client;
use crate::telemetry as names;

/// Who this agent is, as its heartbeats say.
#[derive(Debug, Clone)]
pub struct Identity {
    pub device_id: String,
    pub facility: String,
    /// Where the device stands: its first camera's line and station (`unassigned` without
    /// cameras).
    pub line: String,
    pub station: String,
}

pub struct Heartbeats {
    pub buffer: Arc<Buffer>,
    pub client: Client,
    pub identity: Identity,
    pub interval: Duration,
    /// Each camera's health, as `/healthz` shows it.
    pub cameras: Arc<Registry>,
    /// The buffer's directory, whose file system's free space is reported.
    pub data_dir: PathBuf,
    /// Woken after a requeue, so the frame goes up at once.
    pub wake: Arc<Notify>,
    /// Edge analysis, whose model versions are reported.
    pub edge: Option<Arc<crate::edge::Models>>,
    /// The MQTT connection: each heartbeat is also published on `…/heartbeat`.
    pub mqtt: Option<crate::mqtt::Outgoing>,
}

impl Heartbeats {
    pub async fn run(self, stop: CancellationToken) {
        let started = Instant::now();
        let mut done: Vec<i64> = Vec::new();
        let mut tick = tokio::time::interval(self.interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = stop.cancelled() => return,
            }
            let report = match self.report(started, &done).await {
                Ok(report) => report,
                Err(e) => {
                    warn!(error = %e, "the buffer cannot be read; heartbeat skipped");
                    continue;
                }
            };
            self.publish(&report);
            match self.client.heartbeat(&report).await {
                Ok(ack) => {
                    metrics::counter!(names::HEARTBEATS_TOTAL, "outcome" => "sent").increment(1);
                    debug!(commands = ack.commands.len(), "heartbeat sent");
                    done.retain(|id| !report.commands_done.contains(id));
                    done.extend(self.carry_out(ack).await);
                }
                Err(e) => {
                    metrics::counter!(names::HEARTBEATS_TOTAL, "outcome" => "failed").increment(1);
                    warn!(error = %e, "heartbeat not delivered");
                }
            }
        }
    }

    /// Hands the heartbeat to the MQTT connection (best effort, like the HTTP one).
    fn publish(&self, report: &Heartbeat) {
        let Some(out) = &self.mqtt else { return };
        let id = &self.identity;
        let message = serde_json::to_vec(report).map(|payload| crate::mqtt::Message {
            topic: Topic::Heartbeat.path(&id.facility, &id.line, &id.station),
            payload,
        });
        match message.map(|m| out.try_send(m)) {
            Ok(Ok(())) => {}
            Ok(Err(e)) => debug!(error = %e, "heartbeat not handed to the MQTT connection"),
            Err(e) => warn!(error = %e, "encoding the heartbeat failed"),
        }
    }

    async fn report(&self, started: Instant, done: &[i64]) -> anyhow::Result<Heartbeat> {
        let buffer = self.buffer.clone();
        let (stats, dead_letters, degraded) = tokio::task::spawn_blocking(move || {
            Ok::<_, crate::buffer::BufferError>((
                buffer.stats()?,
                buffer.dead_letters(Heartbeat::MAX_DEAD_LETTERS)?,
                buffer.degraded(),
            ))
        })
        .await??;
        let id = &self.identity;
        Ok(Heartbeat {
            schema_version: wiko_wire::SCHEMA_VERSION,
            device_id: id.device_id.clone(),
            facility: id.facility.clone(),
            line: id.line.clone(),
            station: id.station.clone(),
            version: env!("CARGO_PKG_VERSION").into(),
            sent_at: chrono::Utc::now(),
            uptime_seconds: started.elapsed().as_secs(),
            interval_seconds: u32::try_from(self.interval.as_secs()).unwrap_or(u32::MAX),
            cameras: self.cameras.snapshot(),
            buffer: buffer_health(stats),
            disk_free_bytes: fs4::available_space(&self.data_dir).ok(),
            models: self.edge.as_ref().map(|m| m.versions()).unwrap_or_default(),
            dead_letters,
            commands_done: done.iter().copied().take(Heartbeat::MAX_ENTRIES).collect(),
            degraded,
        })
    }

    /// Carries out the commands of `ack`; the ids of those done (or that found nothing to do).
    async fn carry_out(&self, ack: HeartbeatAck) -> Vec<i64> {
        let mut done = Vec::new();
        for DeviceCommand {
            id,
            action,
            created_by,
            ..
        } in ack.commands
        {
            match action {
                DeviceAction::Requeue { frame_id } => {
                    let buffer = self.buffer.clone();
                    let moved = tokio::task::spawn_blocking(move || buffer.requeue(frame_id))
                        .await
                        .map_err(|e| e.to_string())
                        .and_then(|r| r.map_err(|e| e.to_string()));
                    match moved {
                        Ok(moved) => {
                            info!(%frame_id, moved, by = %created_by, "dead letter requeued on the cloud's command");
                            self.wake.notify_one();
                            done.push(id);
                        }
                        Err(e) => {
                            warn!(%frame_id, error = %e, "requeueing a dead letter failed; retried with the next heartbeat")
                        }
                    }
                }
            }
        }
        done
    }
}
